"""GRPO's maths: group-relative advantages, the clipped surrogate with a k3 KL penalty, per-token log-probs.

Pure functions on tensors (no data; a model enters only as the policy `sequence_logprobs` is given), so each
is checked against hand-computed values in tests/test_grpo.py. The conventions follow TRL 1.16's GRPOTrainer
(`_compute_loss`), so figures compare:

- loss_type grpo:    per-sequence token mean, then mean over sequences (the GRPO paper's 1/|o_i|; biased
                     towards short correct and long wrong answers, as Dr. GRPO 2503.20783 points out).
- loss_type dr_grpo: sum over all tokens / (batch * max_completion_len): a constant instead of the length.
                     Dr. GRPO also drops the std in the advantage: set `scale_rewards = "none"` with it.
- loss_type dapo:    token-level mean over every completion token of the batch (DAPO 2503.14476). TRL divides
                     by the tokens of the whole generation batch; with one update per batch that is this mean.
- std: unbiased (Bessel) like TRL's `nanstd`, and A = (r - mean) / (std + 1e-4) like TRL.

With dynamic sampling (grpo.py: the zero-advantage groups are left out of the update) the normalisers are:
- grpo and dr_grpo: the *generated* batch's sequence count, as TRL, whose zero-advantage sequences stay in the
  batch and in the mean: a dropped group's sequences count in the denominator and add nothing to the sum, so
  dr_grpo's normaliser (generated sequences * max_completion_len) is the constant Dr. GRPO asks for, and both
  equal TRL's loss on the whole batch whenever beta = 0 (with beta > 0 the dropped sequences' KL terms are not
  computed: set dynamic_sampling = false for TRL's loss exactly).
- dapo: the tokens of the *kept* sequences, DAPO's token mean over the batch that survives its dynamic-sampling
  filter (TRL, which keeps every sequence, divides by the whole batch's tokens instead).

What differs from TRL, on purpose: a group whose reward std is below `std_threshold` gets advantage
exactly 0 (TRL only logs it). A group of equal rewards has a std that is float noise; ~1e-5 advantages
went through, Adam scaled them up to full-size random steps and the policy collapsed (dev/LOG.md).

Process supervision (`process_advantages`, DeepSeekMath §4.1.3): rewards per reasoning step instead of one per
completion, normalised over every step of the group, and a token's advantage is the sum of the normalised
rewards of its step and the steps after it, so `grpo_loss` then takes a [B, T] advantage instead of [B].

Log-probabilities come from the final hidden states through the output head in chunks, each chunk under
activation checkpointing, so the [B, T, vocab] logits never exist in full and nothing vocab-sized is kept
for the backward pass. `token_logprobs(..., impl="full")` is the plain reference path (full logits,
log_softmax, gather); tests check the two agree in value and gradient. The update feeds it micro-batches
(`build_micro_batches`): prompt + completion rows, right-padded, with the scored positions listed, so only the
completions' hidden states go through the head (`sequence_logprobs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.checkpoint import checkpoint

from tinyseek.config import ConfigError

LOSS_TYPES = ("grpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
STD_EPS = 1e-4  # added to the std before dividing, as TRL


# ----------------------------------------------------------------------------------------------
# advantages


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale_rewards: str = "group", std_threshold: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group-relative advantages for rewards laid out group after group.

    rewards: [P * G] float, the G completions of prompt p at rows p*G ... p*G + G - 1.
    Returns (advantages [P*G], group_std [P], informative [P] bool). A group is informative when its
    reward std exceeds `std_threshold`; the advantages of the other groups are exactly zero.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ConfigError(
            f"rewards: expected a flat tensor of groups of {group_size}, got shape {tuple(rewards.shape)}"
        )
    if scale_rewards not in SCALE_REWARDS:
        raise ConfigError(f"scale_rewards: must be one of {', '.join(SCALE_REWARDS)} (got {scale_rewards!r})")
    r = rewards.float().view(-1, group_size)  # [P, G]
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True, correction=1) if group_size > 1 else torch.zeros_like(mean)  # [P, 1]
    informative = std.squeeze(1) > std_threshold  # [P]
    adv = r - mean
    if scale_rewards == "group":
        adv = adv / (std + STD_EPS)
    elif scale_rewards == "batch":
        bstd = rewards.float().std(correction=1) if rewards.numel() > 1 else torch.zeros(())
        adv = adv / (bstd + STD_EPS)
    adv = torch.where(informative.unsqueeze(1), adv, torch.zeros_like(adv))
    return adv.reshape(-1), std.squeeze(1), informative


def process_advantages(
    step_rewards: list[list[float]],
    step_ends: list[list[int]],
    lengths: list[int],
    group_size: int,
    scale_rewards: str = "group",
    std_threshold: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Process-supervised advantages (DeepSeekMath §4.1.3): per-token, from per-step rewards.

    step_rewards[i]: the rewards of completion i's steps, in order; step_ends[i]: the index of each step's last
    token (non-decreasing); lengths[i]: completion i's tokens. Completions are laid out group after group as in
    `group_advantages`. Every step reward of a group is normalised by the mean and std of all the group's step
    rewards, r~ = (r - mean) / (std + 1e-4), and token t's advantage is the sum of the normalised rewards of the
    steps that end at or after t (its own step and every later one). A token after the last step end gets 0.
    Returns (advantages [N, max(lengths)], zero-padded; group_std [P]; informative [P]): a group whose step
    rewards' std is at most `std_threshold` gets advantage 0, as in `group_advantages`.
    `scale_rewards`: group (divide by the group's std), batch (by the std of every step reward), none.
    """
    n = len(step_rewards)
    if n % group_size or len(step_ends) != n or len(lengths) != n:
        raise ConfigError(
            f"step rewards: expected groups of {group_size} with one step list and one length per completion, got "
            f"{n} rewards, {len(step_ends)} step lists, {len(lengths)} lengths"
        )
    if scale_rewards not in SCALE_REWARDS:
        raise ConfigError(f"scale_rewards: must be one of {', '.join(SCALE_REWARDS)} (got {scale_rewards!r})")
    for i in range(n):
        if len(step_rewards[i]) != len(step_ends[i]):
            raise ConfigError(
                f"step rewards: completion {i} has {len(step_rewards[i])} rewards for {len(step_ends[i])} steps"
            )
    P = n // group_size
    flat = [torch.tensor(r, dtype=torch.float32) for r in step_rewards]
    every = torch.cat(flat) if flat else torch.zeros(0)
    bstd = every.std(correction=1) if every.numel() > 1 else torch.zeros(())
    adv = torch.zeros(n, max(lengths, default=0) or 1)
    stds, informative = torch.zeros(P), torch.zeros(P, dtype=torch.bool)
    for p in range(P):
        idx = range(p * group_size, (p + 1) * group_size)
        r = torch.cat([flat[i] for i in idx])
        if r.numel() < 2:
            continue
        mean, std = r.mean(), r.std(correction=1)
        stds[p] = std
        informative[p] = bool(std > std_threshold)
        if not informative[p]:
            continue
        scale = {"group": std + STD_EPS, "batch": bstd + STD_EPS, "none": torch.ones(())}[scale_rewards]
        for i in idx:
            if not len(flat[i]):
                continue
            norm = (flat[i] - mean) / scale  # [S]
            togo = norm.flip(0).cumsum(0).flip(0)  # [S]: the sum over this step and every later one
            prev = -1
            for s, end in enumerate(step_ends[i]):
                end = min(int(end), lengths[i] - 1)
                if end > prev:
                    adv[i, prev + 1 : end + 1] = togo[s]
                    prev = end
    return adv, stds, informative


# ----------------------------------------------------------------------------------------------
# the loss


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi_theta || pi_ref) estimate k3 = exp(ref - logp) - (ref - logp) - 1 (>= 0, unbiased)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


@dataclass
class LossOut:
    loss: torch.Tensor  # scalar, the thing to backpropagate
    stats: dict[str, float] = field(default_factory=dict)


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: str = "grpo",
    max_completion_len: int | None = None,
) -> LossOut:
    """The clipped surrogate with a k3 KL penalty, aggregated by `loss_type` (see the module docstring).

    logp, old_logp, ref_logp, mask: [B, T] over completion tokens (mask 1 = a real, unmasked token).
    advantages: [B] one value per sequence (outcome supervision), or [B, T] one per token (process supervision,
    `process_advantages`). `epsilon_high` None means symmetric clipping.
    """
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f"loss_type: must be one of {', '.join(LOSS_TYPES)} (got {loss_type!r})")
    eps_hi = epsilon if epsilon_high is None else epsilon_high
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype)
    adv = adv.unsqueeze(1) if adv.dim() == 1 else adv  # [B, 1] or [B, T]
    ratio = torch.exp(logp - old_logp)  # [B, T]
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + eps_hi)
    per_token = -torch.minimum(ratio * adv, clipped * adv)
    kl = None
    if beta != 0.0:
        if ref_logp is None:
            raise ConfigError("beta: a KL penalty needs reference log-probs (ref_logp is None)")
        kl = kl_k3(logp, ref_logp)
        per_token = per_token + beta * kl
    n_tok = mask.sum().clamp(min=1.0)
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "dr_grpo":
        if not max_completion_len:
            raise ConfigError("max_completion_len: dr_grpo divides by batch * max_completion_len; give it")
        loss = (per_token * mask).sum() / (per_token.size(0) * max_completion_len)
    else:  # dapo
        loss = (per_token * mask).sum() / n_tok
    with torch.no_grad():
        low = ((ratio < 1 - epsilon) & (adv < 0)).to(mask.dtype)
        high = ((ratio > 1 + eps_hi) & (adv > 0)).to(mask.dtype)
        stats = {
            "clip_low": float((low * mask).sum() / n_tok),
            "clip_high": float((high * mask).sum() / n_tok),
            "ratio_mean": float((ratio * mask).sum() / n_tok),
            "kl": float((kl * mask).sum() / n_tok) if kl is not None else 0.0,
        }
    return LossOut(loss, stats)


# ----------------------------------------------------------------------------------------------
# log-probabilities of chosen tokens


def selective_log_softmax(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[ids] without materialising the [.., vocab] log-softmax: logit - logsumexp.

    logits [N, V] (any float dtype; computed in fp32), ids [N] -> [N] fp32.
    """
    logits = logits.float()
    return logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _chunk_logp(
    hidden: torch.Tensor, ids: torch.Tensor, head_weight: torch.Tensor, head, temperature: float, want_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(hidden).float()  # [n, V]: lives only inside this chunk
    if temperature != 1.0:
        logits = logits / temperature
    logp = selective_log_softmax(logits, ids)
    if want_entropy:
        with torch.no_grad():
            p = torch.softmax(logits, dim=-1)
            ent = -(p * torch.log_softmax(logits, dim=-1)).sum(-1)
    else:
        ent = torch.zeros_like(logp)
    return logp, ent


def token_logprobs(
    hidden: torch.Tensor,
    ids: torch.Tensor,
    head: torch.nn.Module,
    temperature: float = 1.0,
    chunk_tokens: int = 1024,
    impl: str = "chunked",
    want_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(ids | context) for N positions, given the hidden states that predict them.

    hidden [N, D] (the final-norm output at the position *before* each token), ids [N] -> (logp [N] fp32,
    entropy [N] fp32, detached; zeros unless want_entropy).
    impl "chunked": the head runs on `chunk_tokens` rows at a time inside activation checkpointing, so the
    backward pass keeps only `hidden`, never [N, V] logits (recomputed chunk by chunk instead).
    impl "full": the plain reference path, one [N, V] logits tensor.
    """
    if impl == "full":
        logits = head(hidden).float()
        if temperature != 1.0:
            logits = logits / temperature
        logp = torch.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            ent = (
                -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
                if want_entropy
                else torch.zeros_like(logp)
            )
        return logp, ent
    if impl != "chunked":
        raise ConfigError(f"logprob_impl: must be chunked or full (got {impl!r})")
    weight = getattr(head, "weight", None)
    outs, ents = [], []
    for s in range(0, hidden.size(0), chunk_tokens):
        h, t = hidden[s : s + chunk_tokens], ids[s : s + chunk_tokens]
        if torch.is_grad_enabled() and h.requires_grad:
            lp, en = checkpoint(_chunk_logp, h, t, weight, head, temperature, want_entropy, use_reentrant=False)
        else:
            lp, en = _chunk_logp(h, t, weight, head, temperature, want_entropy)
        outs.append(lp)
        ents.append(en.detach())
    if not outs:
        z = hidden.new_zeros(0, dtype=torch.float32)
        return z, z
    return torch.cat(outs), torch.cat(ents)


# ----------------------------------------------------------------------------------------------
# a rollout's sequences as micro-batches, and their per-token log-probs


@dataclass
class MicroBatch:
    ids: torch.Tensor  # [b, T] prompt + scored completion, right-padded
    rows: torch.Tensor  # [n] which row each scored token is in
    pos: torch.Tensor  # [n] the position whose hidden state predicts it (one before the token)
    slot: torch.Tensor  # [n] its index within the completion
    tgt: torch.Tensor  # [n] the token
    mask: torch.Tensor  # [b, L] 1 = the token counts in the loss (L = longest completion here)
    adv: torch.Tensor  # [b], or [b, L] per-token (process supervision)
    tokens: int  # real (unpadded) tokens in the batch, for throughput
    real: torch.Tensor | None = None  # [b, T] bool, True at real (unpadded) positions: MoE statistics skip padding
    index: list[int] = field(default_factory=list)  # [b] which input sequence each row holds
    old: torch.Tensor | None = None  # [b, L] log-probs before this batch's first update (num_iterations > 1)
    ref: torch.Tensor | None = None  # [b, L] reference log-probs (beta > 0)


def build_micro_batches(
    prompts: list[list[int]],
    completions: list[list[int]],
    adv: torch.Tensor,
    loss_mask: list[bool],
    micro_batch: int,
    pad_id: int,
) -> list[MicroBatch]:
    """Sequences (prompt_i + completion_i) cut into micro-batches of `micro_batch` rows. `adv` is [N] (one
    advantage per sequence) or [N, max completion length] (one per token).

    Rows are sorted by length first so a micro-batch pads little. `loss_mask[i]` False masks a whole
    completion (a truncated one under mask_truncated_completions); its tokens are still counted nowhere.
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(completions[i]))
    out = []
    for s in range(0, len(order), micro_batch):
        idx = order[s : s + micro_batch]
        T = max(len(prompts[i]) + len(completions[i]) for i in idx)
        L = max(1, max(len(completions[i]) for i in idx))
        ids = torch.full((len(idx), T), pad_id, dtype=torch.long)
        real = torch.zeros((len(idx), T), dtype=torch.bool)
        mask = torch.zeros(len(idx), L)
        rows, pos, slot, tgt = [], [], [], []
        for b, i in enumerate(idx):
            p, c = prompts[i], completions[i]
            ids[b, : len(p) + len(c)] = torch.tensor(p + c, dtype=torch.long)
            real[b, : len(p) + len(c)] = True
            rows += [b] * len(c)
            pos += range(len(p) - 1, len(p) - 1 + len(c))
            slot += range(len(c))
            tgt += c
            if loss_mask[i]:
                mask[b, : len(c)] = 1.0
        out.append(
            MicroBatch(
                ids,
                torch.tensor(rows, dtype=torch.long),
                torch.tensor(pos, dtype=torch.long),
                torch.tensor(slot, dtype=torch.long),
                torch.tensor(tgt, dtype=torch.long),
                mask,
                adv[idx, :L].clone() if adv.dim() == 2 else adv[idx].clone(),
                sum(len(prompts[i]) + len(completions[i]) for i in idx),
                real,
                index=list(idx),
            )
        )
    return out


def padding_micro_batch(pad_id: int) -> MicroBatch:
    """A micro-batch that trains nothing (no scored token, no real token, weight 0): a rank with fewer sequences
    than another runs it so that every rank makes the same number of forward and backward passes."""
    z = torch.zeros(1, dtype=torch.long)
    return MicroBatch(
        torch.full((1, 2), pad_id, dtype=torch.long),
        z,
        z,
        z,
        torch.full((1,), pad_id, dtype=torch.long),
        torch.zeros(1, 1),
        torch.zeros(1),
        0,
        torch.zeros(1, 2, dtype=torch.bool),
    )


def sequence_logprobs(
    policy,
    module: torch.nn.Module,
    mb: MicroBatch,
    temperature: float,
    impl: str,
    chunk: int,
    want_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs [b, L] of the completions in `mb` (zeros at padding), the entropies [b, L]
    (detached; zeros unless asked) and the MoE expert load of the forward (or None). `policy` is a
    train/policy.Policy: its `hidden` runs `module`'s forward, its `head` gives the output head."""
    hidden, load = policy.hidden(module, mb.ids, mb.real)  # [b, T, D]
    h = hidden[mb.rows, mb.pos]  # [n, D]: only completion positions go through the head
    lp, ent = token_logprobs(h, mb.tgt, policy.head(module), temperature, chunk, impl, want_entropy)
    b, L = mb.mask.shape
    grid = torch.zeros(b, L, dtype=torch.float32, device=lp.device).index_put((mb.rows, mb.slot), lp)
    ent_grid = torch.zeros(b, L, dtype=torch.float32, device=lp.device).index_put((mb.rows, mb.slot), ent)
    return grid, ent_grid, load
