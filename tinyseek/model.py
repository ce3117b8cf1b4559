"""The DeepSeek-V3 transformer (report 2412.19437 §2): RMSNorm, RoPE/YaRN, MLA, DeepSeekMoE, MTP.

One file, single device, plain PyTorch; precision, `torch.compile` and parallelism are applied from
outside. Semantics follow DeepSeek's public inference code and, where the two could differ, transformers'
`DeepseekV3ForCausalLM` (so that `tinyseek/hf.py` exports give the same logits to 1e-4):

- RMSNorm is computed in float32 and cast back before the weight multiply. `q_norm` and `kv_norm` use a
  fixed eps of 1e-6 (as both references do); the other norms use `cfg.norm_eps`.
- RoPE touches only the `qk_rope_head_dim` part. The checkpoint layout is DeepSeek's interleaved pairs
  `(x0, x1), (x2, x3), ...`; like transformers' `rope_interleave=True` we rotate the even/odd slices and
  write the result de-interleaved (`[rotated evens, rotated odds]`). Queries and keys get the same
  permutation, so every dot product (and the output) equals the complex-multiply form.
- YaRN is on when `max_seq_len > original_seq_len and rope_factor > 1` (DeepSeek's condition): the inverse
  frequencies are blended with a linear ramp between the `beta_fast`/`beta_slow` correction dims
  (floor/ceil, as both references), and `cfg.softmax_scale` carries `mscale^2`. In transformers terms this
  is `rope_type="yarn"` with `mscale == mscale_all_dim == cfg.mscale` (so cos/sin are not rescaled).
- MLA: `wq` (q_lora_rank 0) or `wq_a -> q_norm -> wq_b`; `wkv_a -> [latent | k_pe]`, `kv_norm` on the
  latent, `wkv_b -> per-head [k_nope | v]`; output `wo`. Two paths behind `cfg.mla_impl`:
  `naive` up-projects K and V (and caches them), `absorbed` folds W_UK into the query and W_UV after the
  attention, so it attends over the cached latent + rotated k_pe (`cfg.latent_cache_dim` values per token).
  Without a cache (training) `absorbed` computes like `naive` (cheaper scores, nothing to cache; SGLang and
  vLLM prefill the same way); `MLA.latent_without_cache = True` forces the latent form (tests).
- MoE gate (V3): sigmoid (or softmax) scores in float32; the correction bias `gate.bias` only picks the
  experts; with groups, a group's score is the sum of its top-2 biased scores and only `n_limited_groups`
  groups are kept; weights are the unbiased scores of the chosen experts, normalised to sum 1 for sigmoid,
  times `route_scale`. Shared experts (one MLP of `n_shared_experts * moe_inter_dim`) are always added.
  Dispatch `loop` (reference), `sorted` (`torch._grouped_mm` over rows sorted by expert, each expert's
  group padded to 16 rows so matrix shapes repeat; a padded-bmm fallback where grouped_mm is missing; under
  torch.compile in fp32 the same kernel as an opaque custom op with its backward) or `dense` (every expert on
  every token, unchosen ones weighted 0: three large matmuls, the decode path that `sorted` takes by itself
  for a few rows per expert when compiled or multi-threaded, `use_dense`).
- `decode(tokens, cache, rows, length)`: the cached forward of a decode step without host syncs (the caller
  passes the attended length) and without checks or statistics; the engine compiles it.
- The loss is float32 cross-entropy (`cross_entropy`, chunked, = F.cross_entropy on float32 logits).

Speed notes (dev/LOG.md has the figures): on CPU, PyTorch's fused attention needs one head size for q, k
and v, so v is zero-padded (naive) or the whole key doubles as the value (absorbed); bf16 matmuls use
AMX through oneDNN, which builds a kernel per new shape, hence the row padding in the MoE and the cached
length rounded up to a multiple of 64.

Additions to docs/design.md's contract (names there are kept):

- `out.residual` [B, T, dim]: the last layer's output *before* the final norm. MTP depth 1 starts from
  it (as DeepSeek's MTP consumes the main model's pre-norm hidden state).
- MTP runs inside `forward` only when `targets` are given. Depth k (1-based) at position i combines
  `h^{k-1}_i` with the embedding of token i+k and predicts token i+k+1, so `out.mtp_logits[k-1]` is
  `[B, T-k, vocab]` (the positions that have a target). The MTP input is
  `eh_proj(cat[enorm(embed(t_{i+k})), hnorm(h^{k-1}_i)])`: embedding first, as DeepSeek's released
  checkpoint (layer 61) and vLLM/SGLang use it (the paper writes the two the other way round).
- `out.expert_load` has one row per MoE block that exists: the main MoE layers first
  (`cfg.n_moe_layers` rows), then the MoE blocks of the MTP modules (rows of zeros when MTP did not run).
  `update_expert_bias` accepts either all rows or only the main ones. `out.aux_loss` is the mean over the
  MoE blocks that ran of the sequence-wise balance loss (eqs. 17-20, without alpha).
- `forward(..., real_mask=None)`: [B, T] bool, True at real tokens. Right-padded batches (SFT, distillation,
  GRPO updates) pass it so that padding is not counted as routed tokens: the expert load that moves the
  balancing biases and the balance loss count real tokens only. The outputs do not depend on it.
- `model.mtp_step(k, hidden_prev, tokens, cache=None, rows=None, start=None) -> (hidden_k, logits_k)`:
  one MTP depth for speculative drafting. `hidden_prev` [B, T, dim] is `out.residual` (k=1) or the
  previous depth's `hidden_k`, at positions `start .. start+T-1` (default `cache.pos[rows] - T`: the
  tokens a main forward has just cached); `tokens` [B, T] are the tokens one step ahead. With a cache,
  depth k's block uses cache layer `n_layers + k - 1` (`KVCache` allocates `n_layers + mtp_depth`
  layers); it writes those positions and does not move `cache.pos` (the main forward owns it).
- A forward with a cache reads `cache.pos` to the host once (the attended length); nothing else syncs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tinyseek.config import ModelConfig
from tinyseek.errors import TinyseekError

LATENT_NORM_EPS = 1e-6  # q_norm / kv_norm eps in both references (not cfg.norm_eps)


# ----------------------------------------------------------------------------------------------
# outputs and cache


@dataclass
class ModelOutput:
    logits: torch.Tensor | None = None  # [B, T, vocab]
    hidden: torch.Tensor | None = None  # [B, T, dim] after the final norm
    residual: torch.Tensor | None = None  # [B, T, dim] before the final norm (MTP input)
    loss: torch.Tensor | None = None
    ce_loss: torch.Tensor | None = None
    mtp_loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    expert_load: torch.Tensor | None = None  # [n_moe_blocks, n_routed_experts]
    mtp_logits: list[torch.Tensor] = field(default_factory=list)  # depth k: [B, T-k, vocab]


class KVCache:
    """Preallocated per-layer cache with a per-row fill level `pos` [B].

    absorbed MLA: `kv[l]` [B, S, kv_lora_rank] (normalised latent) and `pe[l]` [B, S, qk_rope_head_dim]
    (rotated RoPE key). naive MLA: `k[l]` [B, S, H, qk_head_dim] and `v[l]` [B, S, H, v_head_dim].
    Layers `n_layers .. n_layers + mtp_depth - 1` belong to the MTP blocks.
    """

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device=None, dtype=None, impl: str | None = None):
        if batch_size < 1 or max_len < 1:
            raise TinyseekError(f"KVCache: batch_size and max_len must be positive (got {batch_size}, {max_len})")
        self.impl = impl or cfg.mla_impl
        self.batch_size, self.max_len = batch_size, max_len
        self.n_layers = cfg.n_layers + cfg.mtp_depth
        dtype = dtype or torch.get_default_dtype()
        B, S, H = batch_size, max_len, cfg.n_heads
        if self.impl == "absorbed":
            # one buffer per layer, [latent | k_pe], so attention reads the key with one gather and no cat
            self.latent = [torch.zeros(B, S, cfg.latent_cache_dim, device=device, dtype=dtype) for _ in range(self.n_layers)]
            self.kv = [t[..., : cfg.kv_lora_rank] for t in self.latent]  # views
            self.pe = [t[..., cfg.kv_lora_rank :] for t in self.latent]
        else:
            self.k = [torch.zeros(B, S, H, cfg.qk_head_dim, device=device, dtype=dtype) for _ in range(self.n_layers)]
            self.v = [torch.zeros(B, S, H, cfg.v_head_dim, device=device, dtype=dtype) for _ in range(self.n_layers)]
        self.pos = torch.zeros(B, dtype=torch.long, device=device)

    def _tensors(self) -> list[torch.Tensor]:
        return self.latent if self.impl == "absorbed" else self.k + self.v

    @property
    def values_per_token(self) -> int:
        """Cached values per token per layer (absorbed: kv_lora_rank + qk_rope_head_dim)."""
        t = self._tensors()
        return sum(x[0, 0].numel() for x in t) // self.n_layers

    def copy_rows(self, src, dst) -> None:
        """Copy rows `src` (cache and pos) into rows `dst`: G samples sharing one prompt prefill."""
        src = torch.as_tensor(src, device=self.pos.device).view(-1)
        dst = torch.as_tensor(dst, device=self.pos.device).view(-1)
        if src.numel() == 1:
            src = src.expand(dst.numel())
        for x in self._tensors():
            x[dst] = x[src]
        self.pos[dst] = self.pos[src]

    def reset(self, rows=None) -> None:
        """Free rows (all by default): their fill level goes back to 0; stale values are masked out."""
        if rows is None:
            self.pos.zero_()
        else:
            self.pos[torch.as_tensor(rows, device=self.pos.device).view(-1)] = 0


@dataclass
class _Step:
    """What every layer of one forward needs: RoPE angles, and with a cache the rows/positions/mask."""

    cos: torch.Tensor  # [T, rope/2] or [B, T, rope/2]
    sin: torch.Tensor
    cache: KVCache | None = None
    rows: torch.Tensor | None = None  # [B]
    positions: torch.Tensor | None = None  # [B, T] absolute positions of the new tokens
    length: int = 0  # keys attended: cache slots 0 .. length-1
    mask: torch.Tensor | None = None  # [B, 1, T, length] bool, True = attend
    want_aux: bool = False
    want_stats: bool = True  # the MoE's expert counts (out.expert_load); decode steps skip them
    real: torch.Tensor | None = None  # [B, T] bool, the positions routing statistics count (None = all)
    loads: list = field(default_factory=list)  # per MoE block: [E] token counts
    auxes: list = field(default_factory=list)  # per MoE block: scalar


# ----------------------------------------------------------------------------------------------
# norms, RoPE


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 statistics, cast back, then the weight (transformers' order; matters in bf16)
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype) * self.weight


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """[rope/2] float32 inverse frequencies, YaRN-corrected when the context is extended."""
    d, base = cfg.qk_rope_head_dim, cfg.rope_theta
    inv = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float, device="cpu") / d))
    if cfg.max_seq_len > cfg.original_seq_len and cfg.rope_factor > 1:

        def corr_dim(rot: float) -> float:  # the dim whose wavelength fits `rot` times in original_seq_len
            return d * math.log(cfg.original_seq_len / (rot * 2 * math.pi)) / (2 * math.log(base))

        low = max(math.floor(corr_dim(cfg.beta_fast)), 0)
        high = min(math.ceil(corr_dim(cfg.beta_slow)), d - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(d // 2, dtype=torch.float, device="cpu") - low) / (high - low)).clamp(0, 1)
        inv = (inv / cfg.rope_factor) * ramp + inv * (1 - ramp)
    return inv


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x [..., T, (heads,) rope]; cos/sin broadcast as [..., T, (1,) rope/2].

    Output is de-interleaved ([rotated evens | rotated odds]), as transformers' `rope_interleave`."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


# ----------------------------------------------------------------------------------------------
# attention (MLA)


class MLA(nn.Module):
    def __init__(self, cfg: ModelConfig, cache_layer: int):
        super().__init__()
        self.cfg, self.cache_layer = cfg, cache_layer
        H, dn, dr, dv, r = cfg.n_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
        self.H, self.dn, self.dr, self.dv, self.r = H, dn, dr, dv, r
        if cfg.q_lora_rank == 0:
            self.wq = nn.Linear(cfg.dim, H * (dn + dr), bias=False)
        else:
            self.wq_a = nn.Linear(cfg.dim, cfg.q_lora_rank, bias=False)
            self.q_norm = RMSNorm(cfg.q_lora_rank, LATENT_NORM_EPS)
            self.wq_b = nn.Linear(cfg.q_lora_rank, H * (dn + dr), bias=False)
        self.wkv_a = nn.Linear(cfg.dim, r + dr, bias=False)
        self.kv_norm = RMSNorm(r, LATENT_NORM_EPS)
        self.wkv_b = nn.Linear(r, H * (dn + dv), bias=False)
        self.wo = nn.Linear(H * dv, cfg.dim, bias=False)
        self.scale = cfg.softmax_scale
        # absorbed MLA without a cache (training) up-projects K and V like `naive`: a score then costs
        # qk_head_dim + v_head_dim MACs instead of 2 * (kv_lora_rank + qk_rope_head_dim), and nothing is
        # cached, so the latent form buys nothing (SGLang/vLLM prefill the same way). True forces the latent
        # form anyway (tests; the reference for whole-sequence agreement).
        self.latent_without_cache = False

    def forward(self, x: torch.Tensor, st: _Step) -> torch.Tensor:
        B, T, _ = x.shape
        H, dn, dr, dv, r = self.H, self.dn, self.dr, self.dv, self.r
        q = self.wq(x) if self.cfg.q_lora_rank == 0 else self.wq_b(self.q_norm(self.wq_a(x)))
        q = q.view(B, T, H, dn + dr)
        q_nope, q_pe = q.split([dn, dr], dim=-1)
        cos, sin = st.cos.unsqueeze(-2), st.sin.unsqueeze(-2)  # [(B,) T, 1, dr/2]
        q_pe = apply_rope(q_pe, cos, sin)  # [B, T, H, dr]
        kv, k_pe = self.wkv_a(x).split([r, dr], dim=-1)
        kv = self.kv_norm(kv)  # [B, T, r]
        k_pe = apply_rope(k_pe.unsqueeze(2), cos, sin).squeeze(2)  # [B, T, dr]
        if st.cache is not None:
            latent = st.cache.impl == "absorbed"
        else:
            latent = self.cfg.mla_impl == "absorbed" and self.latent_without_cache
        if not latent:
            o = self._naive(q_nope, q_pe, kv, k_pe, st)
        else:
            o = self._absorbed(q_nope, q_pe, kv, k_pe, st)
        return self.wo(o.reshape(B, T, H * dv))

    def _naive(self, q_nope, q_pe, kv, k_pe, st: _Step) -> torch.Tensor:
        B, T, H, _ = q_nope.shape
        k_nope, v = self.wkv_b(kv).view(B, T, H, self.dn + self.dv).split([self.dn, self.dv], dim=-1)
        q = torch.cat([q_nope, q_pe], dim=-1)  # [B, T, H, dqk]
        k = torch.cat([k_nope, k_pe.unsqueeze(2).expand(B, T, H, self.dr)], dim=-1)
        if st.cache is not None:
            ck, cv = st.cache.k[self.cache_layer], st.cache.v[self.cache_layer]
            rows_bt = st.rows[:, None].expand(B, T)
            ck[rows_bt, st.positions] = k.to(ck.dtype)
            cv[rows_bt, st.positions] = v.to(cv.dtype)
            k, v = ck[st.rows, : st.length].to(q.dtype), cv[st.rows, : st.length].to(q.dtype)  # [B, L, H, d]
        # PyTorch's fused CPU attention wants one head size for q, k and v: zero-pad the smaller side
        # (zeros add nothing to q.k, and padded value columns are sliced off)
        d = max(self.dn + self.dr, self.dv)
        q, k, v = (F.pad(t, (0, d - t.shape[-1])) if t.shape[-1] < d else t for t in (q, k, v))
        o = _attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), st, self.scale)
        return o.transpose(1, 2)[..., : self.dv]  # [B, T, H, dv]

    def _absorbed(self, q_nope, q_pe, kv, k_pe, st: _Step) -> torch.Tensor:
        B, T, H, _ = q_nope.shape
        w = self.wkv_b.weight.view(H, self.dn + self.dv, self.r)
        w_uk, w_uv = w[:, : self.dn], w[:, self.dn :]  # [H, dn, r], [H, dv, r]
        q_lat = torch.einsum("bthd,hdc->bthc", q_nope, w_uk)  # [B, T, H, r]: W_UK folded into the query
        q = torch.cat([q_lat, q_pe], dim=-1).transpose(1, 2)  # [B, H, T, r + dr]
        k = torch.cat([kv, k_pe], dim=-1)  # [B, T, r + dr]: one key shared by every head
        # the value is the latent; passing the whole key as value (latent + k_pe) keeps the fused kernel's
        # equal head sizes for free: the k_pe columns of the output are dropped, so they get no gradient
        if st.cache is None:
            o = _attention(q, k.unsqueeze(1), k.unsqueeze(1), st, self.scale)[..., : self.r]  # [B, H, T, r]
            return torch.einsum("bhtc,hdc->bthd", o, w_uv)  # [B, T, H, dv]: W_UV after the attention
        buf = st.cache.latent[self.cache_layer]  # [B_cache, S, r + dr]
        buf[st.rows[:, None].expand(B, T), st.positions] = k.to(buf.dtype)
        k = buf[st.rows, : st.length].to(q.dtype).unsqueeze(1)  # [B, 1, L, r + dr]
        # every head reads the same key, so fold the heads into the query axis (t-major) and attend with
        # one head: no per-head copy of the cache, one [T*H, L] score matrix per row
        q = q.transpose(1, 2).reshape(B, 1, T * H, self.r + self.dr)
        mask = st.mask if T == 1 else st.mask.repeat_interleave(H, dim=2)  # [B, 1, T*H or 1, L]
        o = F.scaled_dot_product_attention(q, k, k, attn_mask=mask, scale=self.scale)[..., : self.r]
        return torch.einsum("bthc,hdc->bthd", o.view(B, T, H, self.r), w_uv)


def _attention(q, k, v, st: _Step, scale: float) -> torch.Tensor:
    """SDPA: causal without a cache, else the per-row mask [B, 1, T, L]; k/v may have one head (MQA)."""
    gqa = k.shape[1] != q.shape[1]
    if st.cache is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=st.mask, scale=scale, enable_gqa=gqa)


# ----------------------------------------------------------------------------------------------
# feed-forward: dense SwiGLU and DeepSeekMoE


class MLP(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x); w1 = gate, w3 = up, w2 = down."""

    def __init__(self, dim: int, inter: int):
        super().__init__()
        self.w1 = nn.Linear(dim, inter, bias=False)
        self.w2 = nn.Linear(inter, dim, bias=False)
        self.w3 = nn.Linear(dim, inter, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Gate(nn.Module):
    """V3 router. `bias` (float32 buffer, saved) only chooses experts; it is moved by `update_expert_bias`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.dim))
        self.register_buffer("bias", torch.zeros(cfg.n_routed_experts, dtype=torch.float32))

    def _apply(self, fn, recurse=True):
        # model.to(bf16) must not round the correction bias: keep it float32 (transformers does the same)
        old = self.bias
        super()._apply(fn, recurse)
        if self.bias.dtype != torch.float32:
            self.bias = old.to(device=self.bias.device, dtype=torch.float32)
        return self

    def forward(self, x_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> weights_TK (float32), experts_TK (long), scores_TE (float32, unbiased)."""
        cfg = self.cfg
        logits_TE = F.linear(x_TD.float(), self.weight.float())
        scores_TE = logits_TE.sigmoid() if cfg.score_func == "sigmoid" else logits_TE.softmax(dim=-1)
        choice_TE = scores_TE + self.bias
        G = cfg.n_expert_groups
        if G > 1:
            T, E = choice_TE.shape
            grouped = choice_TE.view(T, G, E // G)
            group_TG = grouped.topk(min(2, E // G), dim=-1).values.sum(dim=-1)
            keep_TG = torch.zeros_like(group_TG, dtype=torch.bool)
            keep_TG.scatter_(1, group_TG.topk(cfg.n_limited_groups, dim=-1).indices, True)
            choice_TE = grouped.masked_fill(~keep_TG.unsqueeze(-1), float("-inf")).view(T, E)
        experts_TK = choice_TE.topk(cfg.n_activated_experts, dim=-1).indices
        weights_TK = scores_TE.gather(1, experts_TK)
        if cfg.score_func == "sigmoid":
            weights_TK = weights_TK / (weights_TK.sum(dim=-1, keepdim=True) + 1e-20)
        return weights_TK * cfg.route_scale, experts_TK, scores_TE


_GROUPED_MM_OK: dict = {}


@torch.compiler.disable
def grouped_mm_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Probe once per (device type, dtype) whether this build runs torch._grouped_mm (fwd and bwd)."""
    key = (device.type, dtype)
    if key not in _GROUPED_MM_OK:
        try:
            with torch.inference_mode(False), torch.enable_grad():  # the probe needs autograd; the engine runs under inference_mode
                x = torch.randn(4, 8, device=device, dtype=dtype, requires_grad=True)
                w = torch.randn(2, 8, 16, device=device, dtype=dtype, requires_grad=True)
                offs = torch.tensor([1, 4], device=device, dtype=torch.int32)
                torch._grouped_mm(x, w, offs=offs).backward(torch.ones(4, 16, device=device, dtype=dtype))
            _GROUPED_MM_OK[key] = True
        except Exception:
            _GROUPED_MM_OK[key] = False
    return _GROUPED_MM_OK[key]


def probe_kernels(module: nn.Module) -> None:
    """Run the probes the forward chooses its kernels by (`grouped_mm_works`), for the module's device and
    dtype and for bf16 autocast, before torch.compile traces it. A probe met inside the trace is a graph
    break, and one inside the layer loop makes dynamo give up on the whole forward: every layer is then
    compiled apart and called from Python (17 graphs a decode step instead of 1, measured)."""
    p = next(module.parameters())
    for dtype in {p.dtype, torch.bfloat16}:
        grouped_mm_works(p.device, dtype)


@torch.library.custom_op("tinyseek::grouped_mm", mutates_args=())
def _grouped_mm_opaque(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """torch._grouped_mm (x [P, D], w [E, D, F] -> [P, F]) as an op torch.compile does not trace into: its shape
    rule accepts only bf16 while the eager CPU kernel runs fp32 too. The backward is two more opaque grouped
    matmuls (the input gradient, and the weight gradient grouped along the rows: `_grouped_mm_wgrad`)."""
    return torch._grouped_mm(x, w, offs=offs)


@_grouped_mm_opaque.register_fake
def _(x, w, offs):
    return x.new_empty(x.shape[0], w.shape[-1])


@torch.library.custom_op("tinyseek::grouped_mm_wgrad", mutates_args=())
def _grouped_mm_wgrad(x: torch.Tensor, g: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """Per group e: x_e^T @ g_e -> [E, D, F], the weight gradient of `_grouped_mm_opaque`."""
    return torch._grouped_mm(x.t(), g, offs=offs)


@_grouped_mm_wgrad.register_fake
def _(x, g, offs):
    return x.new_empty(offs.shape[0], x.shape[1], g.shape[1])


def _grouped_mm_setup(ctx, inputs, output):
    x, w, offs = inputs
    ctx.save_for_backward(x, w, offs)


def _grouped_mm_backward(ctx, g):
    x, w, offs = ctx.saved_tensors
    gx = _grouped_mm_opaque(g, w.transpose(-2, -1), offs) if ctx.needs_input_grad[0] else None
    gw = _grouped_mm_wgrad(x, g, offs) if ctx.needs_input_grad[1] else None
    return gx, gw, None


_grouped_mm_opaque.register_autograd(_grouped_mm_backward, setup_context=_grouped_mm_setup)


class Experts(nn.Module):
    """Routed experts as 3D weights: w1/w3 [E, F, D] (gate/up), w2 [E, D, F] (down).

    Shape suffixes: T tokens, K experts per token, N = T*K routed rows, E experts, D dim, F moe_inter_dim."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, D, Fi = cfg.n_routed_experts, cfg.dim, cfg.moe_inter_dim
        self.w1 = nn.Parameter(torch.empty(E, Fi, D))
        self.w3 = nn.Parameter(torch.empty(E, Fi, D))
        self.w2 = nn.Parameter(torch.empty(E, D, Fi))

    def loop(self, x_TD, weights_TK, experts_TK) -> torch.Tensor:
        """Reference: one plain SwiGLU per expert over the tokens that chose it."""
        out_TD = torch.zeros_like(x_TD)
        for e in range(self.w1.shape[0]):
            tok, k = torch.where(experts_TK == e)
            h = x_TD[tok]
            y = (F.silu(h @ self.w1[e].t()) * (h @ self.w3[e].t())) @ self.w2[e].t()
            out_TD.index_add_(0, tok, y * weights_TK[tok, k, None].to(y.dtype))
        return out_TD

    def dense(self, x_TD, weights_TK, experts_TK) -> torch.Tensor:
        """Decode path: every expert on every token, with the routing weights as a dense [T, E] matrix (zero
        where a token did not choose the expert). E/K times the arithmetic of the routed paths, but three
        large matmuls instead of a small one per expert and projection, no sort and no data-dependent
        shape (so it compiles whole): the faster path when experts hold a few tokens each (`use_dense`)."""
        T, D = x_TD.shape
        E, Fi, _ = self.w1.shape
        w_TE = torch.zeros(T, E, device=x_TD.device, dtype=x_TD.dtype).scatter(1, experts_TK, weights_TK.to(x_TD.dtype))
        g_TEF = F.linear(x_TD, self.w1.reshape(E * Fi, D)).view(T, E, Fi)
        u_TEF = F.linear(x_TD, self.w3.reshape(E * Fi, D)).view(T, E, Fi)
        h_ETF = (F.silu(g_TEF) * u_TEF * w_TE.unsqueeze(-1)).transpose(0, 1)  # unchosen experts: rows of zeros
        return torch.bmm(h_ETF, self.w2.transpose(1, 2)).sum(0)  # [E, T, D] -> [T, D]

    def sorted(self, x_TD, weights_TK, experts_TK, counts_E) -> torch.Tensor:
        """Fast path: rows sorted by expert into one buffer, one grouped matmul per projection, no host sync.

        Each expert's group is padded with zero rows to a multiple of `_group_align` (bf16 on CPU: oneDNN
        builds a kernel per new matrix shape, ~20x the cost of the product, so group sizes must repeat;
        CUDA's grouped_mm wants 16-row alignment). The buffer has the static size N + E*(align-1); rows
        past the last group are left undefined by grouped_mm and are never read."""
        T, K = experts_TK.shape
        N, E, D = T * K, counts_E.shape[0], x_TD.shape[1]
        align = _group_align(x_TD.device, x_TD.dtype, N, E)
        flat_N = experts_TK.view(-1)
        order_N = flat_N.argsort(stable=True)  # sorted position -> flat (t, k) index
        padded_E = (counts_E + align - 1) // align * align
        pend_E = padded_E.cumsum(0)
        rank_N = torch.arange(N, device=x_TD.device) - (counts_E.cumsum(0) - counts_E)[flat_N[order_N]]
        slot_N = torch.empty_like(order_N)
        slot_N[order_N] = (pend_E - padded_E)[flat_N[order_N]] + rank_N  # flat (t, k) -> buffer row
        P = N + E * (align - 1)
        src_P = torch.full((P,), T, device=x_TD.device, dtype=torch.long)  # row T of x_ext is zeros
        src_P[slot_N] = torch.arange(N, device=x_TD.device) // K
        x_PD = torch.cat([x_TD, x_TD.new_zeros(1, D)]).index_select(0, src_P)  # backward: index_add, not a sort
        # torch.compile's shape rule for grouped_mm accepts only bf16 (eager CPU runs fp32 too)
        traced_fp32 = torch.compiler.is_compiling() and x_TD.dtype != torch.bfloat16
        works = _GROUPED_MM_OK.get((x_TD.device.type, x_TD.dtype))  # read, not probed, under compile: no graph break
        if works is None:
            works = grouped_mm_works(x_TD.device, x_TD.dtype)
        if works:
            offs_E = pend_E.to(torch.int32)
            # fp32 under compile: the same kernel as an opaque op (see _grouped_mm_opaque)
            mm = _grouped_mm_opaque if traced_fp32 else torch._grouped_mm
            # two products rather than one on cat([w1, w3]): the cat copied every expert's weights on every
            # call (2.4x slower at decode sizes on CPU, identical results; dev/LOG.md, engine entry)
            g_PF = mm(x_PD, self.w1.transpose(1, 2), offs=offs_E)
            u_PF = mm(x_PD, self.w3.transpose(1, 2), offs=offs_E)
            y_PD = mm(F.silu(g_PF) * u_PF, self.w2.transpose(1, 2), offs=offs_E)
        else:
            y_PD = self._padded(x_PD, padded_E, pend_E, align)
        y_TKD = y_PD.index_select(0, slot_N).view(T, K, D)
        return torch.bmm(weights_TK.to(y_TKD.dtype).unsqueeze(1), y_TKD).squeeze(1)

    def _padded(self, x_PD, padded_E, pend_E, align) -> torch.Tensor:
        """Fallback without grouped_mm: each expert's rows padded to the largest group, one bmm per projection.

        One host sync (the capacity); only used where torch._grouped_mm is missing."""
        E, D = padded_E.shape[0], x_PD.shape[1]
        cap = int(padded_E.max())
        row_EC = (pend_E - padded_E)[:, None] + torch.arange(cap, device=x_PD.device)  # [E, cap]
        valid_EC = torch.arange(cap, device=x_PD.device) < padded_E[:, None]
        row_EC = torch.where(valid_EC, row_EC, x_PD.shape[0] - 1)
        xp = x_PD[row_EC] * valid_EC.unsqueeze(-1).to(x_PD.dtype)  # [E, cap, D]
        h = F.silu(torch.bmm(xp, self.w1.transpose(1, 2))) * torch.bmm(xp, self.w3.transpose(1, 2))
        y_ECD = torch.bmm(h, self.w2.transpose(1, 2))
        return x_PD.new_zeros(x_PD.shape[0], D).index_copy(0, row_EC[valid_EC], y_ECD[valid_EC])


# `moe_impl = "sorted"` runs every expert densely (Experts.dense) while the routed rows per expert,
# tokens * K / E, stay at or below this (decoding, not prefill or training), in a compiled graph or with more
# than one torch thread. Measured on `tiny` (dev/LOG.md): eager on one thread the grouped matmul's small
# products win at every size (dense 410-912 us vs sorted 344-789 us a layer for 1-16 tokens); compiled at batch
# 16 dense wins (a 4.8 vs 6.0 ms step), and with two threads each small product is an OpenMP region (the
# issue's profile: 176 of them at ~50 us in a 20.7 ms step), which the dense path's three matmuls avoid.
DENSE_MAX_ROWS_PER_EXPERT = 4


def use_dense(n_tokens: int, k: int, n_experts: int) -> bool:
    """Whether `moe_impl = "sorted"` takes the dense path for a forward of `n_tokens` tokens (see above)."""
    if n_tokens * k > DENSE_MAX_ROWS_PER_EXPERT * n_experts:
        return False
    return torch.compiler.is_compiling() or torch.get_num_threads() > 1


def _group_align(device: torch.device, dtype: torch.dtype, n_rows: int, n_experts: int) -> int:
    """Rows per expert group are padded to this multiple (see Experts.sorted). 16 suits both CPU bf16
    (measured: as fast as 64, 1.7x faster than no padding) and CUDA's grouped_mm alignment; on CPU a
    small batch (decoding: a few rows per expert) is not padded, as padding would multiply its work."""
    if device.type == "cpu" and n_rows < 32 * n_experts:
        return 1
    return 16


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.gate = Gate(cfg)
        self.experts = Experts(cfg)
        self.shared = MLP(cfg.dim, cfg.n_shared_experts * cfg.moe_inter_dim) if cfg.n_shared_experts > 0 else None

    def forward(self, x: torch.Tensor, st: _Step) -> torch.Tensor:
        B, T, D = x.shape
        E, K = self.cfg.n_routed_experts, self.cfg.n_activated_experts
        x_TD = x.reshape(B * T, D)
        weights_TK, experts_TK, scores_TE = self.gate(x_TD)
        dense = self.cfg.moe_impl == "dense" or (self.cfg.moe_impl == "sorted" and use_dense(B * T, K, E))
        if not st.want_stats and (dense or self.cfg.moe_impl == "loop"):  # a decode step: nothing needs the counts
            y_TD = self.experts.dense(x_TD, weights_TK, experts_TK) if dense else self.experts.loop(x_TD, weights_TK, experts_TK)
            return (y_TD + self.shared(x_TD) if self.shared is not None else y_TD).view(B, T, D)
        with torch.no_grad():
            counts_BE = torch.zeros(B, E, device=x.device, dtype=torch.long)
            counts_BE.scatter_add_(1, experts_TK.view(B, T * K), torch.ones_like(experts_TK).view(B, T * K))
            counts_E = counts_BE.sum(0)  # every position is computed (dispatch needs them all)
            if st.real is not None:  # padding is not a token: it moves no balancing bias and is not in the loss
                real_BTK = st.real.unsqueeze(-1).expand(B, T, K).reshape(B, T * K).long()
                counts_BE = torch.zeros_like(counts_BE).scatter_add_(1, experts_TK.view(B, T * K), real_BTK)
        if self.cfg.moe_impl == "loop":
            y_TD = self.experts.loop(x_TD, weights_TK, experts_TK)
        elif dense:
            y_TD = self.experts.dense(x_TD, weights_TK, experts_TK)
        else:
            y_TD = self.experts.sorted(x_TD, weights_TK, experts_TK, counts_E)
        if self.shared is not None:
            y_TD = y_TD + self.shared(x_TD)
        st.loads.append(counts_BE.sum(0).float() if st.real is not None else counts_E.float())
        if st.want_aux:
            st.auxes.append(seq_balance_loss(scores_TE.view(B, T, E), counts_BE, K, self.cfg.score_func, st.real))
        return y_TD.view(B, T, D)


def seq_balance_loss(scores_BTE: torch.Tensor, counts_BE: torch.Tensor, k: int, score_func: str,
                     real_BT: torch.Tensor | None = None) -> torch.Tensor:
    """Complementary sequence-wise balance loss (V3 eqs. 17-20), averaged over sequences, without alpha.

    f_i = E / (K T) * (tokens of the sequence routed to i), P_i = mean_t s'_{i,t}, with s' the scores
    normalised over experts; L = sum_i f_i P_i. f carries no gradient (a count). With `real_BT`, T is each
    sequence's count of real (unpadded) tokens and P_i averages over those; `counts_BE` must count only them."""
    B, T, E = scores_BTE.shape
    s = scores_BTE / scores_BTE.sum(dim=-1, keepdim=True) if score_func == "sigmoid" else scores_BTE
    if real_BT is None:
        n_B1 = s.new_full((B, 1), float(T))
        p_BE = s.mean(dim=1)
    else:
        w_BT1 = real_BT.to(s.dtype).unsqueeze(-1)
        n_B1 = w_BT1.sum(dim=1).clamp(min=1.0)
        p_BE = (s * w_BT1).sum(dim=1) / n_B1
    f_BE = counts_BE.to(s.dtype) * (E / k) / n_B1
    return (f_BE * p_BE).sum(dim=-1).mean()


def cross_entropy(logits_NV: torch.Tensor, targets_N: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Mean next-token cross-entropy over targets != -100, in float32, = F.cross_entropy(logits.float(), ...).

    Computed in row chunks, with the gradient (softmax - onehot) / n written during the forward in the
    logits' dtype: for bf16 logits this skips the full float32 copy, the log-softmax output, and the zero-fill
    and cast in the backward (CE fwd+bwd 81 -> 34 ms for 2048 x 4096 on one CPU core; fp32: same speed)."""
    return _ChunkedCrossEntropy.apply(logits_NV, targets_N, chunk)


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits_NV, targets_N, chunk):
        valid_N1 = (targets_N != -100).unsqueeze(1)
        tgt_N1 = targets_N.clamp(min=0).unsqueeze(1)
        n = valid_N1.sum().clamp(min=1).float()
        grad = torch.empty_like(logits_NV) if ctx.needs_input_grad[0] else None
        total = logits_NV.new_zeros((), dtype=torch.float32)
        for s in range(0, logits_NV.shape[0], chunk):
            lg = logits_NV[s : s + chunk].float()
            lse = torch.logsumexp(lg, dim=-1, keepdim=True)
            v = valid_N1[s : s + chunk]
            total += ((lse - lg.gather(1, tgt_N1[s : s + chunk])) * v).sum()
            if grad is not None:
                p = (lg - lse).exp_()  # softmax (lg may alias fp32 logits: never in place)
                p.scatter_add_(1, tgt_N1[s : s + chunk], torch.full_like(lse, -1.0))
                grad[s : s + chunk] = p.mul_(v / n)
        ctx.save_for_backward(grad)
        return total / n

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        if g.device.type == "cpu" and float(g) == 1.0:  # the usual case; skips a pass over [N, V] (not a sync on CPU)
            return grad, None, None
        return grad * g.to(grad.dtype), None, None


# ----------------------------------------------------------------------------------------------
# blocks, MTP, the model


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, moe: bool, cache_layer: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = MLA(cfg, cache_layer)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = MoE(cfg) if moe else MLP(cfg.dim, cfg.inter_dim)
        self.is_moe = moe

    def forward(self, x: torch.Tensor, st: _Step) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), st)
        h = self.ffn_norm(x)
        return x + (self.ffn(h, st) if self.is_moe else self.ffn(h))


class MTPModule(nn.Module):
    """One MTP depth: eh_proj(cat[enorm(embed(next token)), hnorm(h_prev)]) -> block -> (own) norm."""

    def __init__(self, cfg: ModelConfig, depth: int):
        super().__init__()
        self.enorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.hnorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.eh_proj = nn.Linear(2 * cfg.dim, cfg.dim, bias=False)
        self.block = Block(cfg, cfg.layer_is_moe(cfg.n_layers - 1), cfg.n_layers + depth)
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, h_prev: torch.Tensor, emb: torch.Tensor, st: _Step) -> torch.Tensor:
        return self.block(self.eh_proj(torch.cat([self.enorm(emb), self.hnorm(h_prev)], dim=-1)), st)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, cfg.layer_is_moe(i), i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.mtp = nn.ModuleList(MTPModule(cfg, k) for k in range(cfg.mtp_depth))
        # float32 on the CPU on purpose: not a buffer, so .to(bf16) cannot round it (and a meta-device
        # init cannot lose it); copied once per device
        self._inv_freq = {torch.device("cpu"): rope_inv_freq(cfg)}
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, init_std) for every matrix (as transformers' DeepseekV3 init), ones for norms, zero bias."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, std)
            else:
                nn.init.ones_(p)
        for m in self.modules():
            if isinstance(m, Gate):
                m.bias.zero_()

    @property
    def moe_blocks(self) -> list[MoE]:
        blocks = [layer.ffn for layer in self.layers if layer.is_moe]
        return blocks + [m.block.ffn for m in self.mtp if m.block.is_moe]

    # -- helpers the engine and trainers use ------------------------------------------------
    def _rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        inv = self._inv_freq.get(positions.device)
        if inv is None:
            inv = self._inv_freq[positions.device] = self._inv_freq[torch.device("cpu")].to(positions.device)
        ang = positions.float().unsqueeze(-1) * inv
        return ang.cos().to(dtype), ang.sin().to(dtype)

    def _step(self, B: int, T: int, device, dtype, cache, rows, start=None, want_aux=False, real=None,
              length: int | None = None) -> _Step:
        if cache is None:
            cos, sin = self._rope(torch.arange(T, device=device), dtype)
            return _Step(cos, sin, want_aux=want_aux, real=real)
        if rows is None:
            if B > cache.batch_size:
                raise TinyseekError(f"cache: batch of {B} rows does not fit a cache of {cache.batch_size} rows")
            rows = torch.arange(B, device=device)
        rows = torch.as_tensor(rows, device=device).view(-1)
        if rows.numel() != B:
            raise TinyseekError(f"rows: expected {B} row ids, got {rows.numel()}")
        start = cache.pos[rows] if start is None else start
        positions = start[:, None] + torch.arange(T, device=device)  # [B, T]
        if length is None:
            length = int(positions[:, -1].max()) + 1  # the one host sync of a cached forward
        if length > cache.max_len:
            raise TinyseekError(f"cache: {length} positions needed, cache max_len is {cache.max_len}")
        # attend over a length rounded up to a multiple of 64 (masked): decoding then reuses a few matrix
        # shapes instead of a new one per token (oneDNN builds a kernel per shape in bf16; compile recompiles)
        length = min(cache.max_len, -(-length // 64) * 64)
        mask = (torch.arange(length, device=device) <= positions[:, :, None]).unsqueeze(1)  # [B, 1, T, L]
        cos, sin = self._rope(positions, dtype)
        return _Step(cos, sin, cache=cache, rows=rows, positions=positions, length=length, mask=mask, want_aux=want_aux,
                     real=real)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                rows: torch.Tensor | None = None, compute_logits: bool = True,
                real_mask: torch.Tensor | None = None) -> ModelOutput:
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype != torch.long:
            raise TinyseekError(f"tokens: expected a LongTensor [B, T], got {getattr(tokens, 'dtype', type(tokens))} {tuple(getattr(tokens, 'shape', ()))}")
        B, T = tokens.shape
        if (tokens.device.type == "cpu" and not torch.compiler.is_compiling() and tokens.numel()
                and not 0 <= int(tokens.min()) <= int(tokens.max()) < self.cfg.vocab_size):
            # (checked on the CPU only and not in a compiled graph: a GPU or a graph would pay a host sync)
            raise TinyseekError(f"tokens: ids must lie in [0, {self.cfg.vocab_size}), got {int(tokens.min())} .. {int(tokens.max())}")
        if targets is not None and targets.shape != tokens.shape:
            raise TinyseekError(f"targets: expected shape {tuple(tokens.shape)}, got {tuple(targets.shape)}")
        if cache is not None and cache.impl != self.cfg.mla_impl:
            raise TinyseekError(f"cache: built for mla_impl={cache.impl!r}, model uses {self.cfg.mla_impl!r}")
        if real_mask is not None and (real_mask.shape != tokens.shape or real_mask.dtype != torch.bool):
            raise TinyseekError(f"real_mask: expected a bool tensor of shape {tuple(tokens.shape)}, got {real_mask.dtype} {tuple(real_mask.shape)}")
        h = self.embed(tokens)
        st = self._step(B, T, tokens.device, h.dtype, cache, rows, want_aux=targets is not None, real=real_mask)
        for layer in self.layers:
            h = layer(h, st)
        if cache is not None:
            cache.pos[st.rows] = st.positions[:, -1] + 1
        out = ModelOutput(residual=h, hidden=self.norm(h))
        if compute_logits or targets is not None:
            out.logits = self.head(out.hidden)
        if targets is not None:
            out.ce_loss = cross_entropy(out.logits.flatten(0, 1), targets.flatten())
            out.loss = out.ce_loss
            if self.mtp:
                out.mtp_logits, out.mtp_loss = self._mtp_train(h, tokens, targets, st)
                out.loss = out.loss + self.cfg.mtp_loss_weight * out.mtp_loss
            if st.auxes:
                out.aux_loss = torch.stack(st.auxes).mean()
                out.loss = out.loss + self.cfg.seq_aux_alpha * out.aux_loss
        n_blocks, E = len(self.moe_blocks), self.cfg.n_routed_experts
        missing = [torch.zeros(E, device=h.device)] * (n_blocks - len(st.loads))  # MTP blocks that did not run
        out.expert_load = torch.stack(st.loads + missing) if n_blocks else torch.zeros(0, E, device=h.device)
        if not compute_logits:
            out.logits = None
        return out

    def decode(self, tokens: torch.Tensor, cache: KVCache, rows: torch.Tensor, length: int,
               residual: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The cached forward of a decode step with nothing read to the host, for the engine's compiled step.

        tokens [B, T] go to cache rows `rows` [B] at positions cache.pos[rows] ...; `length` must be at least
        every row's fill level after this step (the engine counts its tokens, so it knows). Returns logits
        [B, T, vocab] (and with `residual` the last layer's output [B, T, dim], MTP's input) and advances
        cache.pos[rows] by T, as `forward(tokens, cache=cache, rows=rows)` does (the reference this is tested
        against); no checks, no losses, no expert statistics."""
        B, T = tokens.shape
        h = self.embed(tokens)
        st = self._step(B, T, tokens.device, h.dtype, cache, rows, length=length)
        st.want_stats = False
        for layer in self.layers:
            h = layer(h, st)
        cache.pos[rows] = st.positions[:, -1] + 1
        logits = self.head(self.norm(h))
        return (logits, h) if residual else logits

    def _mtp_train(self, h, tokens, targets, st: _Step):
        """Depth k (1..D): position i < T-k sees h^{k-1}_i and token i+k and predicts token i+k+1."""
        B, T = tokens.shape
        logits, losses = [], []
        for k, mod in enumerate(self.mtp, start=1):
            if T - k < 1:
                break
            real = None if st.real is None else st.real[:, k:]  # position i carries token i+k
            sub = _Step(st.cos[..., : T - k, :], st.sin[..., : T - k, :], want_aux=st.want_aux, real=real, loads=st.loads,
                        auxes=st.auxes)
            h = mod(h[:, : T - k], self.embed(tokens[:, k:]), sub)
            lg = self.head(mod.norm(h))
            logits.append(lg)
            losses.append(cross_entropy(lg.flatten(0, 1), targets[:, k:].flatten()))
        loss = torch.stack(losses).mean() if losses else h.new_zeros(())
        return logits, loss

    def mtp_step(self, k: int, hidden_prev: torch.Tensor, tokens: torch.Tensor, cache: KVCache | None = None,
                 rows: torch.Tensor | None = None, start: torch.Tensor | None = None, length: int | None = None):
        """Run MTP depth k (1-based) for drafting -> (hidden_k [B, T, dim] pre-norm, logits_k [B, T, vocab]).

        `hidden_prev` sits at positions start..start+T-1 (default: the T tokens the main forward has just
        cached, `cache.pos[rows] - T`); `tokens` are the tokens one position ahead. See the module docstring.
        `length` (an upper bound of the last position + 1, as for `decode`) spares the read of the positions."""
        if not 1 <= k <= len(self.mtp):
            raise TinyseekError(f"mtp_step: depth k={k} outside 1..{len(self.mtp)}")
        B, T = tokens.shape
        if cache is not None and start is None:
            r = torch.arange(B, device=tokens.device) if rows is None else torch.as_tensor(rows, device=tokens.device).view(-1)
            start = cache.pos[r] - T
        st = self._step(B, T, tokens.device, hidden_prev.dtype, cache, rows, start=start, length=length)
        st.want_stats = cache is None
        mod = self.mtp[k - 1]
        h = mod(hidden_prev, self.embed(tokens), st)
        return h, self.head(mod.norm(h))

    @torch.no_grad()
    def update_expert_bias(self, load: torch.Tensor, speed: float | None = None) -> None:
        """Auxiliary-loss-free balancing: bias_e += gamma * sign(mean load - load_e), per MoE block.

        `load` [n_blocks or n_moe_layers, E]: token counts (e.g. out.expert_load summed over a step).
        `speed` is gamma (default `cfg.bias_update_speed`); 0 leaves the biases alone."""
        gamma = self.cfg.bias_update_speed if speed is None else speed
        if gamma == 0:
            return
        blocks = self.moe_blocks
        if load.dim() != 2 or load.shape[0] not in (len(blocks), self.cfg.n_moe_layers) or load.shape[1] != self.cfg.n_routed_experts:
            raise TinyseekError(f"load: expected [{len(blocks)} or {self.cfg.n_moe_layers}, {self.cfg.n_routed_experts}], got {tuple(load.shape)}")
        for moe, l_E in zip(blocks, load):
            l_E = l_E.to(moe.gate.bias.device, torch.float32)
            ran = (l_E.sum() > 0).float()  # an MTP block that did not run keeps its bias (no host sync)
            moe.gate.bias += gamma * ran * torch.sign(l_E.mean() - l_E)
