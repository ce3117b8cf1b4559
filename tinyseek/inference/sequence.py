"""What both engines share about one sequence: its state, the stop rules, its text, and `Completion`.

A sequence ends with finish reason "stop" when it samples an end-of-sequence token (unless `ignore_eos`)
or one of `stop_token_ids`, or when its text comes to contain a stop string; "length" when it used its token
budget. The rule is applied as each token is appended (`Seq.add`), so a stopped sequence never decodes
another step.

`Completion.token_ids` include the token that ended the sequence: a stop token is part of what the model
said (RL must learn to stop on it, and on the one it actually sampled); the text leaves it out, and is cut
before the first stop string (the ids keep the token that completed it).

Text is decoded as tokens arrive only where it is needed (streaming, stop strings), incrementally: each
new token re-decodes a short window (vLLM's scheme: the text of out[prefix:] minus that of
out[prefix:read]), and a tail that ends inside a UTF-8 character waits for the next token. The final text
(`output_text`) is one whole decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tinyseek.inference.sampling import SamplingParams


@dataclass
class Completion:
    """One finished sequence: its sampled token ids (ending with the stop token, if it stopped on one), their
    log-probs (when asked for; see sampling.py for what they are), why it ended, and its text (None without a
    tokenizer)."""

    token_ids: list[int]
    logprobs: list[float] | None
    finish_reason: str  # "stop" | "length" | "abort"
    text: str | None = None
    prompt_tokens: int = 0


@dataclass
class PromptRows:
    """A prompt's first n token ids and their KV-cache rows, one tensor per KVCache tensor, each [n, ...]."""

    token_ids: tuple[int, ...]
    tensors: list[torch.Tensor]

    @property
    def n(self) -> int:
        return len(self.token_ids)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)


@dataclass
class Seq:
    """One sequence inside an engine: prompt, parameters, what it has sampled, and its text so far."""

    rid: int
    prompt: list[int]
    params: SamplingParams
    seed: int
    stream: bool = True  # keep the text up to date for streaming (`delta`)
    prefix: PromptRows | None = None
    capture: bool = False
    group: int = 0  # sequences of one group share a prefill
    row: int = -1
    out: list[int] = field(default_factory=list)
    lps: list[float] = field(default_factory=list)
    pending: int | None = None  # last sampled token, not yet in the cache
    draft: list[int] = field(default_factory=list)  # speculative: the MTP's guesses for the tokens after `pending`
    finish: str | None = None
    budget: int = 0  # max new tokens after capping at the cache length
    prompt_cache: PromptRows | None = None
    text: str = ""  # the output text so far, whole characters only (kept while streaming or matching stop strings)
    sent: int = 0  # characters of text already streamed
    _prefix: int = 0  # incremental decoding: out[_prefix:_read] is the window decoded last
    _read: int = 0

    def add(self, t: int, logprob: float | None, eos_ids: set[int], tokenizer) -> str | None:
        """Append sampled token `t` (and its log-prob), apply the stop rules; returns the finish reason (also set
        as `self.finish`) or None."""
        self.out.append(t)
        if self.params.logprobs:
            self.lps.append(logprob)
        self.finish = self._finish_after(t, eos_ids, tokenizer)
        return self.finish

    def _finish_after(self, t: int, eos_ids: set[int], tokenizer) -> str | None:
        p = self.params
        if (t in eos_ids and not p.ignore_eos) or t in p.stop_token_ids:
            return "stop"  # a stop token never enters the text
        if tokenizer is not None and (self.stream or p.stop_strings):
            start = len(self.text)
            self._decode(tokenizer)
            if p.stop_strings:
                window = self.text[max(0, start - max(len(x) for x in p.stop_strings) + 1) :]
                if any(x in window for x in p.stop_strings):
                    return "stop"
        if len(self.out) >= self.budget:
            return "length"
        return None

    def _decode(self, tokenizer) -> None:
        prefix_text = tokenizer.decode(self.out[self._prefix : self._read])
        new_text = tokenizer.decode(self.out[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.text += new_text[len(prefix_text) :]
            self._prefix, self._read = self._read, len(self.out)

    def output_text(self, eos_ids: set[int], tokenizer) -> str:
        """The whole output text: a final stop token dropped, cut before the first stop string."""
        ids, p = self.out, self.params
        if ids and self.finish == "stop" and ((ids[-1] in eos_ids and not p.ignore_eos) or ids[-1] in p.stop_token_ids):
            ids = ids[:-1]
        text = tokenizer.decode(ids)
        cuts = [text.find(x) for x in p.stop_strings if x in text]
        return text[: min(cuts)] if cuts else text

    def delta(self, eos_ids: set[int], tokenizer) -> str:
        """The text to stream since the last call: while running, whole characters only and never what could still
        turn out to be the start of a stop string; once finished, the rest of `output_text`, less the U+FFFD
        characters at its end (bytes that never became a character, e.g. a multi-byte character whose last bytes
        were never sampled: `output_text` keeps them, what rewards and evaluation read)."""
        if self.finish is None:
            hold = max((len(x) - 1 for x in self.params.stop_strings), default=0)
            text = self.text[: max(self.sent, len(self.text) - hold)]
        else:  # the bytes of a character the budget or the end token cut short never were text: not streamed
            text = self.output_text(eos_ids, tokenizer).rstrip("\ufffd")
        delta = text[self.sent :]
        self.sent = max(self.sent, len(text))
        return delta
