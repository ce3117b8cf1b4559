"""White-box distillation losses, and the teacher's top-k log-probs on disk.

The teacher's full distribution is vocab-sized at every position; keeping only its top-k log-probs (plus
the mass of everything else) is what lets the log-probs be computed once, cached to disk, and the
teacher dropped from memory while the student trains. The losses therefore compare the two models on
k + 1 "buckets": the teacher's k most likely tokens, and one bucket for the rest of the vocabulary. That
is a proper KL divergence (>= 0, zero exactly when the two agree on the buckets), and with k = vocab it
is the ordinary full-vocabulary KL; `kd_loss_full` is that plain reference, and the tests check they agree.

- forward KL(teacher || student): mode-covering; the student spreads mass over everything the teacher
  considers plausible (the classic Hinton et al. loss).
- reverse KL(student || teacher): mode-seeking; the student may drop teacher modes but is punished for
  mass where the teacher has little (MiniLLM, 2306.08543).
- mix: mix * forward + (1 - mix) * reverse.

Both models' logits are divided by the temperature before the softmax and the loss is multiplied by
temperature^2, so its gradient scale does not change with the temperature (Hinton et al. 2015).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from tinyseek.errors import TinyseekError
from tinyseek.io import atomic_file

KD_KINDS = ("forward", "reverse", "mix")
_MIN_MASS = 1e-12  # the rest bucket's mass is clamped here: log(0) would be -inf


def teacher_topk(logits: torch.Tensor, k: int, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, V] -> (log-probs [N, k] float32 at `temperature`, token ids [N, k] int64), most likely first."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    vals, idx = logp.topk(min(k, logp.shape[-1]), dim=-1)
    return vals, idx


def _rest(logp_k: torch.Tensor) -> torch.Tensor:
    """log of the mass outside the k tokens: [N, k] -> [N, 1]. The same formula for teacher and student,
    so that equal models give bitwise-equal buckets (and a loss of exactly zero)."""
    mass = 1.0 - logp_k.exp().sum(dim=-1, keepdim=True)
    return mass.clamp_min(_MIN_MASS).log()


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """sum_b p_b (log p_b - log q_b) over the last dim, with 0 * anything = 0. [N, K] -> [N]."""
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum(dim=-1)


def kd_loss(
    student_logits: torch.Tensor,
    t_logp: torch.Tensor,
    t_idx: torch.Tensor,
    kind: str = "forward",
    temperature: float = 1.0,
    mix: float = 0.5,
) -> torch.Tensor:
    """Mean per-position KD loss over the k + 1 buckets.

    student_logits [N, V] (the positions that are trained: completion tokens), t_logp [N, k] the teacher's
    top-k log-probs at `temperature`, t_idx [N, k] their token ids. Returns a scalar (0 when N = 0).
    """
    if kind not in KD_KINDS:
        raise TinyseekError(f"kd: must be one of {', '.join(KD_KINDS)} (got {kind!r})")
    if t_logp.shape != t_idx.shape or t_logp.shape[0] != student_logits.shape[0]:
        raise TinyseekError(
            f"teacher log-probs {tuple(t_logp.shape)} / ids {tuple(t_idx.shape)} do not match "
            f"the student's {student_logits.shape[0]} positions"
        )
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    s_logp = F.log_softmax(student_logits.float() / temperature, dim=-1).gather(-1, t_idx)  # [N, k]
    t = torch.cat([t_logp.float(), _rest(t_logp.float())], dim=-1)  # [N, k + 1]
    s = torch.cat([s_logp, _rest(s_logp)], dim=-1)  # [N, k + 1]
    fwd = _kl(t, s) if kind in ("forward", "mix") else 0.0
    rev = _kl(s, t) if kind in ("reverse", "mix") else 0.0
    per_pos = fwd if kind == "forward" else rev if kind == "reverse" else mix * fwd + (1 - mix) * rev
    return per_pos.mean() * temperature**2


def kd_loss_full(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: str = "forward",
    temperature: float = 1.0,
    mix: float = 0.5,
) -> torch.Tensor:
    """The plain reference: full-vocabulary KL between [N, V] logits (what kd_loss is with k = V)."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    fwd = (t.exp() * (t - s)).sum(-1)
    rev = (s.exp() * (s - t)).sum(-1)
    per_pos = fwd if kind == "forward" else rev if kind == "reverse" else mix * fwd + (1 - mix) * rev
    return per_pos.mean() * temperature**2


# ----------------------------------------------------------------------------------------------
# the cache: the teacher's top-k log-probs at every trained position of every example


class TeacherCache:
    """Top-k teacher log-probs for a fixed list of examples, in memory or in one safetensors file.

    Rows are the trained positions (targets != -100) of example 0, then example 1, ...; `offsets[i]`
    is where example i starts. `rows(example_ids)` returns them in the order a batch lays out its
    masked positions (example by example, position by position), which is the order
    `logits[targets != -100]` has, so a batch's cached and on-the-fly log-probs line up.
    """

    def __init__(self, logp: torch.Tensor, idx: torch.Tensor, offsets: torch.Tensor, meta: dict):
        self.logp, self.idx, self.offsets, self.meta = logp, idx, offsets, meta  # [R, k] f32, [R, k] i32, [N+1] i64

    @property
    def n_examples(self) -> int:
        return self.offsets.numel() - 1

    def rows(self, example_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [torch.arange(int(self.offsets[i]), int(self.offsets[i + 1])) for i in example_ids]
        r = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        return self.logp[r], self.idx[r].long()

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        with atomic_file(path) as tmp:
            save_file(
                {"logp": self.logp.contiguous(), "idx": self.idx.contiguous(), "offsets": self.offsets.contiguous()},
                str(tmp),
                metadata={"tinyseek": json.dumps(self.meta)},
            )

    @classmethod
    def load(cls, path: str | Path, expect: dict | None = None) -> TeacherCache:
        """Read a cache; every key of `expect` (k, temperature, data hash, ...) must match what it was built with."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise TinyseekError(f"{path}: no such teacher cache")
        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = json.loads((fh.metadata() or {}).get("tinyseek", "{}"))
                t = {k: fh.get_tensor(k) for k in ("logp", "idx", "offsets")}
        except Exception as e:  # a truncated or foreign file
            raise TinyseekError(f"{path}: unreadable teacher cache ({e})") from None
        for k, v in (expect or {}).items():
            if meta.get(k) != v:
                raise TinyseekError(
                    f"{path}: built with {k}={meta.get(k)!r}, this run needs {v!r} (delete it to rebuild)"
                )
        return cls(t["logp"], t["idx"], t["offsets"], meta)


def data_hash(examples: list[tuple[list[int], list[int]]]) -> str:
    """A fingerprint of tokenised examples (ids, labels): a cache is only valid for the data it was built on."""
    h = hashlib.sha256()
    for ids, labels in examples:
        h.update(json.dumps([ids, labels]).encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def build_teacher_cache(
    teacher: torch.nn.Module,
    examples: list[tuple[list[int], list[int]]],
    k: int,
    temperature: float,
    batch_size: int = 16,
    pad_id: int = 0,
    meta: dict | None = None,
) -> TeacherCache:
    """Run the teacher over SFT `examples` ((ids, labels) as tinyseek.data makes them) and keep its top-k.

    Examples go through the teacher one `tinyseek.data.collate` batch at a time; padding is on the right
    and attention is causal, so a position's log-probs do not depend on what else is in the batch.
    """
    from tinyseek.data import collate

    was_training = teacher.training
    teacher.eval()
    logps, idxs, counts = [], [], []
    for b in range(0, len(examples), batch_size):
        mb = collate(examples[b : b + batch_size], pad_id)
        mask = mb["targets"] != -100  # [B, T]
        lp, ix = teacher_topk(teacher(mb["tokens"]).logits[mask], k, temperature)
        logps.append(lp)
        idxs.append(ix.to(torch.int32))
        counts += mask.sum(dim=1).tolist()
    teacher.train(was_training)
    offsets = torch.zeros(len(examples) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(counts, dtype=torch.int64).cumsum(0)
    logp = torch.cat(logps) if logps else torch.zeros(0, k)
    idx = torch.cat(idxs) if idxs else torch.zeros(0, k, dtype=torch.int32)
    info = {"k": k, "temperature": temperature, "data": data_hash(examples), **(meta or {})}
    return TeacherCache(logp, idx, offsets, info)
