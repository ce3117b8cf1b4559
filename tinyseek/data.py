"""Corpora and datasets: the pretraining stream (packed documents) and SFT examples (loss on assistant tokens).

Pretraining. A document is `BOS text EOS`: a task trace (`prompt` + `r1.completion_text`) or a
plain-text document (a `.txt` file's paragraphs, separated by blank lines, or the `text` field of each
JSONL line). Documents are tokenised once, shuffled per epoch with the seed, concatenated and cut into
rows of `seq_len + 1` tokens: inputs `row[:-1]`, targets `row[1:]`. Wherever the input token is EOS the
target (the next document's first token) is -100: nothing in document k predicts document k+1. (The
attention itself still sees the earlier document in the row; the model has no document mask, so the
only guarantee is on the loss — what a packed run trains, not what it attends to.)
The stream's position is `(epoch, index, buffer)`: small, picklable, and enough to continue bitwise.

SFT. Each example is a conversation; the prompt is rendered with the R1 chat template up to the last
`<｜Assistant｜>`, the completion is the last assistant message + EOS. Targets are -100 on every prompt
token and on padding, so the loss covers exactly the assistant's tokens. Accepted rows (JSONL,
Parquet, or a `datasets.save_to_disk` directory): `{"messages": [...]}` (last message from the
assistant), `{"prompt": str | messages, "completion": str | [assistant message]}`, or task records
(`prompt` + `solution`/`answer`, completed with `r1.completion_text`). Bad rows raise a
TinyseekError naming the file and line (row).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from tinyseek.errors import TinyseekError
from tinyseek.r1 import R1_ZERO_TEMPLATE, completion_text, render_chat
from tinyseek.tokenizer import Tokenizer

IGNORE = -100


def task_documents(task_counts: dict[str, int], seed: int, split: str, fmt: str = "plain") -> list[str]:
    """The pretraining documents of generated problems (tasks.documents), task by task in name order."""
    from tinyseek import tasks

    return tasks.documents(dict(sorted(task_counts.items())), seed, split, fmt)


# ----------------------------------------------------------------------------------------------
# pretraining: packed documents


def tokenize_documents(tok: Tokenizer, docs: list[str]) -> list[list[int]]:
    """BOS + tokens + EOS per document."""
    return [[tok.bos_id, *ids, tok.eos_id] for ids in tok.encode_batch(docs)]


def document_examples(docs: list[list[int]], seq_len: int) -> list[tuple[list[int], list[int]]]:
    """Tokenised documents as (ids, labels) rows of their own, cut to seq_len + 1 tokens: the loss is on every
    token, and nothing but the document itself is in view (`collate` pads a batch of them)."""
    return [(d[: seq_len + 1], d[: seq_len + 1]) for d in docs]


class PackedStream:
    """Documents concatenated and cut into rows of seq_len + 1 tokens, in a seeded order per epoch.

    `next_rows(n)` returns inputs [n, seq_len] and targets [n, seq_len] (targets -100 where the input is
    EOS: no loss across a document boundary). `state_dict()` / `load_state_dict()` save the position.
    """

    def __init__(self, docs: list[list[int]], seq_len: int, eos_id: int, seed: int = 0):
        if not docs:
            raise TinyseekError("data: the pretraining corpus is empty (no task problems and no text documents)")
        self.docs = docs
        self.seq_len = seq_len
        self.eos_id = eos_id
        self.seed = seed
        self.epoch = 0
        self.index = 0
        self.buffer: list[int] = []
        self._order = self._perm(0)

    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.docs))

    def _fill(self, n: int) -> None:
        while len(self.buffer) < n:
            if self.index >= len(self.docs):
                self.epoch += 1
                self.index = 0
                self._order = self._perm(self.epoch)
            self.buffer.extend(self.docs[self._order[self.index]])
            self.index += 1

    def next_rows(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        L = self.seq_len + 1
        self._fill(n * L)
        rows = torch.tensor(self.buffer[: n * L], dtype=torch.long).view(n, L)
        del self.buffer[: n * L]
        x, y = rows[:, :-1], rows[:, 1:].clone()
        y[x == self.eos_id] = IGNORE
        return x.contiguous(), y

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "index": self.index,
            "buffer": list(self.buffer),
            "seed": self.seed,
            "n_docs": len(self.docs),
        }

    def load_state_dict(self, s: dict) -> None:
        if s["n_docs"] != len(self.docs) or s["seed"] != self.seed:
            raise TinyseekError(
                f"--resume: the corpus changed since the checkpoint ({s['n_docs']} documents, seed {s['seed']} then; "
                f"{len(self.docs)}, seed {self.seed} now)"
            )
        self.epoch, self.index, self.buffer = s["epoch"], s["index"], list(s["buffer"])
        self._order = self._perm(self.epoch)


# ----------------------------------------------------------------------------------------------
# SFT: chat examples with the loss on the assistant's tokens


def _as_messages(x: Any, where: str, field: str) -> list[dict]:
    if isinstance(x, str):
        return [{"role": "user", "content": x}]
    if isinstance(x, list) and all(isinstance(m, dict) for m in x):
        return [dict(role=m.get("role"), content=m.get("content")) for m in x]
    raise TinyseekError(f"{where}: field {field!r} must be a string or a list of messages")


def row_to_messages(row: Any, where: str) -> list[dict]:
    """One data row -> a conversation whose last message is the assistant's (the training target)."""
    if not isinstance(row, dict):
        raise TinyseekError(f"{where}: expected an object, got {type(row).__name__}")
    if "messages" in row:
        if not isinstance(row["messages"], list) or not row["messages"]:
            raise TinyseekError(f"{where}: field 'messages' must be a non-empty list of messages")
        msgs = _as_messages(row["messages"], where, "messages")
    elif "prompt" in row and "completion" in row:
        msgs = _as_messages(row["prompt"], where, "prompt")
        c = row["completion"]
        if isinstance(c, str):
            msgs.append({"role": "assistant", "content": c})
        elif isinstance(c, list) and len(c) == 1 and isinstance(c[0], dict) and c[0].get("role") == "assistant":
            msgs.append({"role": "assistant", "content": c[0].get("content")})
        else:
            raise TinyseekError(f"{where}: field 'completion' must be a string or [one assistant message]")
    elif "prompt" in row and ("solution" in row or "answer" in row):
        msgs = _as_messages(row["prompt"], where, "prompt")
        try:
            msgs.append({"role": "assistant", "content": completion_text(row)})
        except (KeyError, TypeError) as e:
            raise TinyseekError(f"{where}: a task record needs 'solution' and 'answer' ({e})") from None
    else:
        raise TinyseekError(
            f"{where}: a row needs 'messages', 'prompt'+'completion', or a task record ('prompt'+'solution'+'answer')"
        )
    for i, m in enumerate(msgs):
        if m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise TinyseekError(f"{where}: message {i} needs role system|user|assistant and a string content")
    if msgs[-1]["role"] != "assistant":
        raise TinyseekError(f"{where}: the last message must be the assistant's (the training target)")
    return msgs


def sft_example(tok: Tokenizer, messages: list[dict], template: str = "chat") -> tuple[list[int], list[int]]:
    """(ids, labels) of one conversation: labels are -100 except on the last assistant turn + EOS.

    Only the last assistant turn is trained (with its reasoning); earlier assistant turns are context,
    rendered without reasoning exactly as the chat template shows them at inference. The prompt ends with
    the special token `<｜Assistant｜>`, at which BPE never merges, so encoding the two parts separately
    gives the same ids as encoding the whole text. `template = "r1-zero"`: the one user turn in R1-Zero's
    template (BOS first, as a generation prompt gets it) and the completion after a space, as the template's
    documents read; the prompt ends in `:` and the completion's space is a piece of its own, so the ids are again
    those of the whole text.
    """
    if template == "r1-zero":
        users = [m["content"] for m in messages[:-1] if m["role"] == "user"]
        if len(users) != 1 or len(messages) != 2:
            raise TinyseekError("prompt_template r1-zero: an example must be one user turn and the answer")
        p_ids = tok.encode(R1_ZERO_TEMPLATE.format(prompt=users[0]), add_special=True)
        c_ids = tok.encode(" " + messages[-1]["content"]) + [tok.eos_id]
    else:
        p_ids = tok.encode(render_chat(messages[:-1], add_generation_prompt=True))
        c_ids = tok.encode(messages[-1]["content"]) + [tok.eos_id]
    return p_ids + c_ids, [IGNORE] * len(p_ids) + c_ids


def sft_examples_from_rows(
    tok: Tokenizer, rows: Iterable[tuple[str, Any]], max_len: int, template: str = "chat", answers_only: bool = False
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Tokenised examples cut to max_len + 1 tokens; examples with no assistant token left are dropped.
    `answers_only`: task records are trained on their answer alone (an empty think block), which is all an outcome
    reward tells RL. Returns (examples, number dropped)."""
    out, dropped = [], 0
    for where, row in rows:
        if answers_only:
            if not isinstance(row, dict) or "answer" not in row or "prompt" not in row:
                raise TinyseekError(f"{where}: completion = answer needs task records (prompt and answer)")
            row = {"prompt": row["prompt"], "answer": row["answer"], "solution": ""}
        ids, labels = sft_example(tok, row_to_messages(row, where), template)
        ids, labels = ids[: max_len + 1], labels[: max_len + 1]
        if all(lab == IGNORE for lab in labels[1:]):
            dropped += 1
            continue
        out.append((ids, labels))
    return out, dropped


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """Right-padded batch: tokens [b, L] (ids[:-1]), targets [b, L] (labels[1:], -100 on padding), and
    real_mask [b, L] (True at real tokens: the model's MoE statistics skip the padding)."""
    L = max(len(ids) for ids, _ in examples) - 1
    tokens = torch.full((len(examples), L), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), L), IGNORE, dtype=torch.long)
    real = torch.zeros((len(examples), L), dtype=torch.bool)
    for i, (ids, labels) in enumerate(examples):
        n = len(ids) - 1
        tokens[i, :n] = torch.tensor(ids[:-1])
        targets[i, :n] = torch.tensor(labels[1:])
        real[i, :n] = True
    return {"tokens": tokens, "targets": targets, "real_mask": real}


class ExampleStream:
    """Examples in a seeded order per epoch; `next(n)` returns the next n; position saved like PackedStream's."""

    def __init__(self, examples: list, seed: int = 0):
        if not examples:
            raise TinyseekError("data: the SFT dataset is empty")
        self.examples = examples
        self.seed = seed
        self.epoch = 0
        self.index = 0
        self._order = self._perm(0)

    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))

    def next(self, n: int) -> list:
        out = []
        while len(out) < n:
            if self.index >= len(self.examples):
                self.epoch += 1
                self.index = 0
                self._order = self._perm(self.epoch)
            out.append(self.examples[self._order[self.index]])
            self.index += 1
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "n": len(self.examples)}

    def load_state_dict(self, s: dict) -> None:
        if s["n"] != len(self.examples) or s["seed"] != self.seed:
            raise TinyseekError(
                f"--resume: the dataset changed since the checkpoint ({s['n']} examples then, {len(self.examples)} now)"
            )
        self.epoch, self.index = s["epoch"], s["index"]
        self._order = self._perm(self.epoch)
