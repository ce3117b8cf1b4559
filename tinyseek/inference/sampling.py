"""Sampling: `SamplingParams`, logits processors, and counter-based sampling with per-sequence seeds.

Every row of a batch carries its own parameters, so one decode step samples a mixed batch (greedy rows
next to top-p rows) without a Python loop over rows and without a host sync.

Reproducibility. A row's randomness is a pure function of (its seed, the index of the token it is
sampling): the uniform draw for token j of a sequence is a hash of (seed, j) — counter-based,
like Philox — so a sequence produces the same tokens whatever else is in the batch, whichever row it
lands in, and after the batch is compacted. Sampling itself is inverse-CDF with one uniform per row:
exact, one hash per row rather than per vocabulary entry (a Gumbel-max draw over 64 x 4096 logits cost
4 ms of hashing a step here), and a masked-out token (probability 0) can never be drawn.

Order of processing (as vLLM): penalties on the raw logits -> / temperature -> top-k -> top-p (over the
top-k survivors, renormalised, as transformers and vLLM) -> min-p -> sample. Temperature 0 means greedy:
argmax of the penalised logits.

Log-probabilities. `logprobs=True` returns, for each sampled token, log softmax(raw_logits / T)[token]:
the model's own log-probability at the sampling temperature T (T = 1 for greedy rows), before penalties
and before top-k/top-p/min-p truncation. That is the number GRPO/PPO recompute from the policy
(`log_softmax(logits / T)`), so the old/new ratio starts at exactly 1; it is not the log-probability under
the truncated distribution the token was actually drawn from (that one is -inf outside the kept set and
renormalised inside it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from tinyseek.errors import TinyseekError

_MASK32 = 0xFFFFFFFF


@dataclass
class SamplingParams:
    """How to sample one sequence. Defaults are plain sampling at temperature 1 with no truncation."""

    max_new_tokens: int = 256
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off; keep tokens with p >= min_p * max p
    repetition_penalty: float = 1.0  # CTRL-style, on tokens of the prompt and the output (as transformers)
    presence_penalty: float = 0.0  # OpenAI-style, on tokens of the output
    frequency_penalty: float = 0.0  # OpenAI-style, times the token's count in the output
    stop_token_ids: tuple[int, ...] = ()  # besides the model's end-of-sequence token
    stop_strings: tuple[str, ...] = ()  # the text is cut before the stop string (it is not returned)
    seed: int | None = None
    logprobs: bool = False
    ignore_eos: bool = False  # benchmarks: generate exactly max_new_tokens

    def __post_init__(self) -> None:
        self.stop_token_ids = tuple(int(t) for t in self.stop_token_ids)
        if isinstance(self.stop_strings, str):
            self.stop_strings = (self.stop_strings,)
        self.stop_strings = tuple(self.stop_strings)
        self.validate()

    def validate(self) -> None:
        def bad(name: str, msg: str) -> TinyseekError:
            return TinyseekError(f"sampling parameter {name}: {msg} (got {getattr(self, name)!r})")

        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise bad("max_new_tokens", "must be a positive integer")
        if not self.temperature >= 0:
            raise bad("temperature", "must be >= 0")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise bad("top_k", "must be an integer >= 0")
        if not 0 < self.top_p <= 1:
            raise bad("top_p", "must be in (0, 1]")
        if not 0 <= self.min_p <= 1:
            raise bad("min_p", "must be in [0, 1]")
        if not self.repetition_penalty > 0:
            raise bad("repetition_penalty", "must be > 0")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise bad(name, "must be in [-2, 2]")
        if any(not s for s in self.stop_strings):
            raise bad("stop_strings", "must not contain an empty string")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise bad("seed", "must be a non-negative integer")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def uses_penalties(self) -> bool:
        return self.repetition_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0

    def replace(self, **changes) -> SamplingParams:
        return SamplingParams(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


def derive_seed(seed: int, index: int) -> int:
    """Seed of sample `index` of a group seeded with `seed` (distinct per sample, reproducible)."""
    x = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & ((1 << 63) - 1)
    x ^= x >> 31
    return x & ((1 << 62) - 1)


# ----------------------------------------------------------------------------------------------
# counter-based uniform noise


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32) on int64 tensors holding values in [0, 2^32).

    Products can exceed 2^63 and wrap; wrapping multiplication keeps the low 32 bits exact, which is all we keep.
    """
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    x = x ^ (x >> 16)
    return x


def uniform(seeds: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """One U(0, 1) draw per row [B], a pure function of (seeds[b], counters[b]).

    seeds, counters: LongTensor [B]. Float64 in the open interval (0, 1): 32 random bits, offset by half a step.
    """
    lo = seeds & _MASK32
    hi = (seeds >> 32) & _MASK32
    h = _mix32(_mix32(lo ^ _mix32((hi + 0x3C6EF372) & _MASK32)) ^ (counters & _MASK32))
    h = _mix32((h + 0x9E3779B9) & _MASK32)  # [B]
    return (h.to(torch.float64) + 0.5) * (1.0 / (1 << 32))


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Draw from each row of `probs` [B, V] (unnormalised, >= 0) with one uniform `u` [B]: index of the first
    cumulative mass above u * total. A zero-probability token is never drawn (its cumulative mass equals its
    predecessor's); float rounding at the very top falls back to the most likely token."""
    cdf = probs.double().cumsum(-1)  # [B, V]
    x = (u * cdf[:, -1])[:, None]
    idx = torch.searchsorted(cdf, x, right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)
    ok = probs.gather(-1, idx[:, None]).squeeze(-1) > 0
    return torch.where(ok, idx, probs.max(-1).indices)  # (argmax's index, at a third of its CPU time)


# ----------------------------------------------------------------------------------------------
# a batch's parameters as tensors


@dataclass
class BatchParams:
    """Per-row sampling parameters as device tensors, built once each time the batch's rows change."""

    temperature: torch.Tensor  # [B] float (0 for greedy rows)
    top_k: torch.Tensor  # [B] long (0 = off)
    top_p: torch.Tensor  # [B] float
    min_p: torch.Tensor  # [B] float
    repetition_penalty: torch.Tensor  # [B] float
    presence_penalty: torch.Tensor  # [B] float
    frequency_penalty: torch.Tensor  # [B] float
    seeds: torch.Tensor  # [B] long
    any_greedy: bool = False
    any_sampled: bool = False
    any_top_k: bool = False
    any_top_p: bool = False
    any_min_p: bool = False
    any_repetition: bool = False
    any_presence_frequency: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def build(cls, params: list[SamplingParams], seeds: list[int], device: torch.device | str = "cpu") -> BatchParams:
        def t(vals, dtype=torch.float32):
            return torch.tensor(vals, dtype=dtype, device=device)

        return cls(
            temperature=t([p.temperature for p in params]),
            top_k=t([p.top_k for p in params], torch.int64),
            top_p=t([p.top_p for p in params]),
            min_p=t([p.min_p for p in params]),
            repetition_penalty=t([p.repetition_penalty for p in params]),
            presence_penalty=t([p.presence_penalty for p in params]),
            frequency_penalty=t([p.frequency_penalty for p in params]),
            seeds=t(seeds, torch.int64),
            any_greedy=any(p.greedy for p in params),
            any_sampled=any(not p.greedy for p in params),
            any_top_k=any(p.top_k > 0 and not p.greedy for p in params),
            any_top_p=any(p.top_p < 1 and not p.greedy for p in params),
            any_min_p=any(p.min_p > 0 and not p.greedy for p in params),
            any_repetition=any(p.repetition_penalty != 1 for p in params),
            any_presence_frequency=any(p.presence_penalty != 0 or p.frequency_penalty != 0 for p in params),
        )


# ----------------------------------------------------------------------------------------------
# logits processors (all [B, V] -> [B, V], per-row parameters)


def apply_penalties(
    logits: torch.Tensor, bp: BatchParams, seen: torch.Tensor | None, counts: torch.Tensor | None
) -> torch.Tensor:
    """Repetition penalty on tokens in `seen` [B, V] bool (prompt + output); presence and frequency penalties on
    `counts` [B, V] (output)."""
    if bp.any_repetition and seen is not None:
        r = bp.repetition_penalty[:, None]
        penalised = torch.where(logits > 0, logits / r, logits * r)
        logits = torch.where(seen, penalised, logits)
    if bp.any_presence_frequency and counts is not None:
        c = counts.to(logits.dtype)
        logits = logits - bp.frequency_penalty[:, None] * c - bp.presence_penalty[:, None] * (c > 0).to(logits.dtype)
    return logits


def truncation_mask(logprobs: torch.Tensor, bp: BatchParams) -> torch.Tensor:
    """Bool [B, V]: tokens that top-k, top-p and min-p keep (each only on rows that use it).

    logprobs: [B, V] log-softmax of the tempered, penalised logits. The most likely token is always kept.
    """
    keep = torch.ones_like(logprobs, dtype=torch.bool)
    if bp.any_top_k or bp.any_top_p:
        sorted_lp, order = torch.sort(logprobs, dim=-1, descending=True)  # [B, V]
        rank_keep = torch.ones_like(sorted_lp, dtype=torch.bool)
        if bp.any_top_k:
            ranks = torch.arange(logprobs.shape[-1], device=logprobs.device)
            k = torch.where(bp.top_k > 0, bp.top_k, logprobs.shape[-1])
            rank_keep &= ranks[None, :] < k[:, None]
        if bp.any_top_p:
            # top-p on what top-k left, renormalised (as transformers' warpers and vLLM): top-k then top-p keeps
            # the same set here as in the plain rollout (train/rollout.PlainRollout)
            probs = torch.where(rank_keep, sorted_lp.exp(), 0.0)
            probs = probs / probs.sum(-1, keepdim=True)
            mass_before = probs.cumsum(-1) - probs  # probability of the strictly more likely tokens
            rank_keep &= mass_before < bp.top_p[:, None]
        rank_keep[:, 0] = True
        keep = torch.empty_like(rank_keep).scatter_(-1, order, rank_keep)
    if bp.any_min_p:
        top = logprobs.max(dim=-1, keepdim=True).values
        thresh = top + torch.log(bp.min_p.clamp_min(1e-30))[:, None]
        keep &= (logprobs >= thresh) | (bp.min_p[:, None] == 0)
    return keep


def sample(
    logits: torch.Tensor,
    bp: BatchParams,
    counters: torch.Tensor,
    seen: torch.Tensor | None = None,
    counts: torch.Tensor | None = None,
    want_logprobs: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Next tokens [B] (long) and their log-probabilities [B] (see the module docstring for which).

    logits: [B, V] raw model logits (any float dtype; processed in float32). counters: [B] long, the index of
    the token being sampled in each sequence (the counter of the noise).
    """
    raw = logits.float()
    x = apply_penalties(raw, bp, seen, counts)
    temp = bp.temperature
    # max(...).indices, not argmax: the same index (the first maximum) at a third of argmax's time on a CPU
    greedy_tok = x.max(dim=-1).indices if bp.any_greedy else None
    tokens = greedy_tok
    if bp.any_sampled:
        safe_t = torch.where(temp > 0, temp, torch.ones_like(temp))[:, None]
        lp = torch.log_softmax(x / safe_t, dim=-1)
        keep = truncation_mask(lp, bp)
        probs = torch.where(keep, lp.exp(), 0.0)
        sampled = inverse_cdf(probs, uniform(bp.seeds, counters))
        tokens = sampled if greedy_tok is None else torch.where(temp > 0, sampled, greedy_tok)
    out_lp = None
    if want_logprobs:
        t_lp = torch.where(temp > 0, temp, torch.ones_like(temp))[:, None]
        out_lp = torch.log_softmax(raw / t_lp, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
    return tokens, out_lp


def sample_reference(
    logits: torch.Tensor,
    params: list[SamplingParams],
    seeds: list[int],
    counters: list[int],
    seen: torch.Tensor | None = None,
    counts: torch.Tensor | None = None,
) -> tuple[list[int], list[float]]:
    """The plain path: one row at a time, written out with sort and loops; `sample` must agree with it."""
    toks, lps = [], []
    V = logits.shape[-1]
    for b, p in enumerate(params):
        raw = logits[b].float()
        x = raw.clone()
        if p.repetition_penalty != 1 and seen is not None:
            for v in seen[b].nonzero().flatten().tolist():
                x[v] = x[v] / p.repetition_penalty if x[v] > 0 else x[v] * p.repetition_penalty
        if counts is not None:
            for v in counts[b].nonzero().flatten().tolist():
                c = float(counts[b, v])
                x[v] = x[v] - p.frequency_penalty * c - p.presence_penalty
        if p.greedy:
            tok = int(x.argmax())
            t = 1.0
        else:
            t = p.temperature
            lp = torch.log_softmax(x / t, dim=-1)
            order = sorted(range(V), key=lambda v: -float(lp[v]))
            kept = set(range(V))
            if p.top_k > 0:
                kept &= set(order[: p.top_k])
            if p.top_p < 1:  # on the top-k survivors, renormalised
                total = sum(float(lp[v].exp()) for v in order if v in kept)
                mass, keep_p = 0.0, set()
                for v in (v for v in order if v in kept):
                    if mass >= p.top_p and keep_p:
                        break
                    keep_p.add(v)
                    mass += float(lp[v].exp()) / total
                kept &= keep_p
            if p.min_p > 0:
                top = float(lp.max())
                kept &= {v for v in range(V) if float(lp[v]) >= top + float(torch.log(torch.tensor(p.min_p)))}
            kept.add(order[0])
            probs = [float(lp[v].exp()) if v in kept else 0.0 for v in range(V)]
            x = float(uniform(torch.tensor([seeds[b]]), torch.tensor([counters[b]]))[0]) * sum(probs)
            tok, acc = order[0], 0.0
            for v in range(V):  # first token whose cumulative mass passes x
                acc += probs[v]
                if acc > x and probs[v] > 0:
                    tok = v
                    break
        toks.append(tok)
        lps.append(float(torch.log_softmax(raw / t, dim=-1)[tok]))
    return toks, lps
