"""What both engines share about one sequence: its state, the stop rules, the output text, `Completion`.

A sequence ends with finish reason "stop" when it samples an end-of-sequence token (unless `ignore_eos`)
or one of `stop_token_ids`, or when its text contains a stop string; "length" when it used its token
budget. `Completion.token_ids` include the token that ended the sequence (RL must learn to stop on it),
the text does not: a final stop token is dropped and the text is cut before the first stop string.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tinyseek.inference.sampling import SamplingParams


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[float] | None
    finish_reason: str  # "stop" | "length" | "abort"
    text: str | None = None
    prompt_tokens: int = 0


@dataclass
class PromptCache:
    """The cached state of the first n tokens of a prompt, one tensor per KVCache tensor, each [n, ...]."""

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
    rid: int
    prompt: list[int]
    params: SamplingParams
    seed: int
    stream: bool = True
    prefix: PromptCache | None = None
    capture: bool = False
    group: int = 0  # sequences of one group share a prefill
    row: int = -1
    out: list[int] = field(default_factory=list)
    lps: list[float] = field(default_factory=list)
    pending: int | None = None  # last sampled token, not yet in the cache
    draft: list[int] = field(default_factory=list)  # speculative: the MTP's guesses for the tokens after `pending`
    finish: str | None = None
    budget: int = 0  # max new tokens after capping at the cache length
    sent: int = 0  # characters of text already streamed
    text: str = ""
    prompt_cache: PromptCache | None = None


def finish_rule(s: Seq, t: int, eos_ids: set[int], tokenizer) -> str | None:
    """Why sequence `s` ends after its newest token `t` (already appended to s.out), or None."""
    p = s.params
    if (t in eos_ids and not p.ignore_eos) or t in p.stop_token_ids:
        return "stop"
    if p.stop_strings and tokenizer is not None:
        window = max(len(x.encode()) for x in p.stop_strings) + 1  # a token is at least one byte
        tail = tokenizer.decode(s.out[-window:])
        if any(x in tail for x in p.stop_strings):
            return "stop"
    if len(s.out) >= s.budget:
        return "length"
    return None


def output_text(s: Seq, eos_ids: set[int], tokenizer) -> str:
    """The output text: a final stop token dropped, cut before the first stop string."""
    ids = s.out
    if ids and s.finish == "stop" and ((ids[-1] in eos_ids and not s.params.ignore_eos) or ids[-1] in s.params.stop_token_ids):
        ids = ids[:-1]
    text = tokenizer.decode(ids)
    cuts = [text.find(x) for x in s.params.stop_strings if x in text]
    return text[: min(cuts)] if cuts else text
