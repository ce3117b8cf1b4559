"""What a model costs, computed from its `ModelConfig` alone: parameters, FLOPs, device peaks, MFU.

Nothing here allocates a tensor, so `deepseek-v3-671b` can be accounted for on a laptop.

Conventions (the ones DeepSeek's and most scaling-law papers' figures use):
- *Total parameters* are the trainable parameters of the main model (embedding, every layer, final norm,
  output head). The MTP modules are reported separately (`mtp_params`): they share the embedding and the
  head, so their own count is one transformer block + two norms + the projection per depth. (DeepSeek
  quotes "14B" of MTP weights because its checkpoint stores a private copy of the embedding and head,
  2 x 0.93B; tinyseek ties them, so it reports ~11.7B.) The auxiliary-loss-free correction bias is a
  buffer, not a parameter, and is not counted.
- *Active parameters* are those a single token's forward pass touches: everything except the routed
  experts it is not sent to, and except the embedding table (a lookup, not a matmul). For DeepSeek-V3
  this gives 36.6B, which the report rounds to "37B".
- *Training FLOPs per token* = 6 x (active matmul parameters) + attention's two sequence-length dependent
  matmuls (Q K^T and A V), causal, i.e. each query sees (T+1)/2 keys on average, times 3 for
  forward + backward. MTP modules are included when the config has them (they run in training).
- *Inference FLOPs per token* = 2 x (active matmul parameters) + the forward attention matmuls of one new
  token over a context. Counted for naive (up-projected) MLA; absorbed MLA trades the K/V up-projection
  for latent-space scores and is cheaper per cached token, which this count does not model.

The training loop reports MFU = achieved FLOP/s / peak FLOP/s with `train_flops_per_token` and
`device_peak_flops` (a datasheet figure); the benchmarks measure the peak instead (`measure_matmul_peak`).
A caller that has a checkpoint reads its config (`checkpoint.read_model_config`; `tinyseek cost` lives there).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tinyseek.config import ModelConfig
from tinyseek.errors import TinyseekError

# ----------------------------------------------------------------------------------------------
# parameter counts (mirrors tinyseek/model.py; tests/test_cost.py checks them against real models)


def attn_params(cfg: ModelConfig) -> int:
    """One MLA block's projections and its two inner norms (q_norm when queries are compressed, kv_norm)."""
    H = cfg.n_heads
    if cfg.q_lora_rank > 0:
        q = cfg.dim * cfg.q_lora_rank + cfg.q_lora_rank + cfg.q_lora_rank * H * cfg.qk_head_dim  # wq_a, q_norm, wq_b
    else:
        q = cfg.dim * H * cfg.qk_head_dim  # wq
    kv = cfg.dim * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) + cfg.kv_lora_rank  # wkv_a, kv_norm
    kv += cfg.kv_lora_rank * H * (cfg.qk_nope_head_dim + cfg.v_head_dim)  # wkv_b
    o = H * cfg.v_head_dim * cfg.dim  # wo
    return q + kv + o


def attn_norm_params(cfg: ModelConfig) -> int:
    """The norm weights inside attention (elementwise, so not matmul parameters)."""
    return cfg.kv_lora_rank + (cfg.q_lora_rank if cfg.q_lora_rank > 0 else 0)


def ffn_params(cfg: ModelConfig, moe: bool, active: bool) -> int:
    """A layer's feed-forward: dense SwiGLU, or router + shared experts + (all | the activated) routed experts."""
    if not moe:
        return 3 * cfg.dim * cfg.inter_dim
    expert = 3 * cfg.dim * cfg.moe_inter_dim
    n_routed = cfg.n_activated_experts if active else cfg.n_routed_experts
    return cfg.n_routed_experts * cfg.dim + cfg.n_shared_experts * expert + n_routed * expert


def block_params(cfg: ModelConfig, layer: int, active: bool = False) -> int:
    """One transformer block (layer index decides dense vs MoE): two norms, attention, feed-forward."""
    return 2 * cfg.dim + attn_params(cfg) + ffn_params(cfg, cfg.layer_is_moe(layer), active)


def _mtp_block_layer(cfg: ModelConfig, k: int) -> int:
    # an MTP module's block has the kind of the last main layer (MoE in an MoE model, as in DeepSeek-V3)
    return cfg.n_layers - 1


def mtp_params(cfg: ModelConfig, active: bool = False) -> int:
    """All MTP modules (embedding and head are shared with the main model, so not counted again)."""
    per = [
        3 * cfg.dim
        + 2 * cfg.dim * cfg.dim
        + block_params(cfg, _mtp_block_layer(cfg, k), active)  # enorm, hnorm, norm, eh_proj
        for k in range(cfg.mtp_depth)
    ]
    return sum(per)


def total_params(cfg: ModelConfig) -> int:
    """Parameters of the main model (MTP excluded; see `mtp_params`)."""
    layers = sum(block_params(cfg, i) for i in range(cfg.n_layers))
    return 2 * cfg.vocab_size * cfg.dim + layers + cfg.dim  # embed + head, layers, final norm


def active_params(cfg: ModelConfig) -> int:
    """Parameters one token's forward pass uses in the main model (embedding table excluded: a lookup)."""
    layers = sum(block_params(cfg, i, active=True) for i in range(cfg.n_layers))
    return cfg.vocab_size * cfg.dim + layers + cfg.dim  # head, layers, final norm


def _norm_params_per_block(cfg: ModelConfig) -> int:
    return 2 * cfg.dim + attn_norm_params(cfg)


def active_matmul_params(cfg: ModelConfig, include_mtp: bool = False) -> int:
    """Active parameters that multiply activations (norm weights dropped): the N in "6N FLOPs per token".

    With `include_mtp`, each MTP depth adds its projection, its block and one more pass through the head.
    """
    n = active_params(cfg) - cfg.n_layers * _norm_params_per_block(cfg) - cfg.dim
    if include_mtp:
        for k in range(cfg.mtp_depth):
            block = block_params(cfg, _mtp_block_layer(cfg, k), active=True) - _norm_params_per_block(cfg)
            n += 2 * cfg.dim * cfg.dim + block + cfg.vocab_size * cfg.dim
    return n


# ----------------------------------------------------------------------------------------------
# FLOPs


def attention_flops_per_token(cfg: ModelConfig, n_keys: float, n_blocks: int | None = None) -> float:
    """Forward FLOPs of Q K^T and A V for one query attending to `n_keys` keys, summed over `n_blocks` blocks."""
    n_blocks = cfg.n_layers if n_blocks is None else n_blocks
    return 2.0 * cfg.n_heads * (cfg.qk_head_dim + cfg.v_head_dim) * n_keys * n_blocks


def train_flops_per_token(cfg: ModelConfig, seq_len: int, include_mtp: bool = True) -> float:
    """Training FLOPs (forward + backward) per token at sequence length `seq_len`, causal attention.

    6 x active matmul parameters + 3 x the forward attention matmuls over (seq_len + 1) / 2 keys on average.
    MTP modules count when the config has them and `include_mtp` (each is one more block of attention).
    """
    if seq_len <= 0:
        raise TinyseekError(f"seq_len: must be positive (got {seq_len})")
    blocks = cfg.n_layers + (cfg.mtp_depth if include_mtp else 0)
    return 6.0 * active_matmul_params(cfg, include_mtp) + 3.0 * attention_flops_per_token(
        cfg, (seq_len + 1) / 2, blocks
    )


def inference_flops_per_token(cfg: ModelConfig, context_len: int) -> float:
    """Forward FLOPs to produce one token with `context_len` tokens already visible (main model, naive MLA count)."""
    if context_len < 0:
        raise TinyseekError(f"context_len: must be >= 0 (got {context_len})")
    return 2.0 * active_matmul_params(cfg) + attention_flops_per_token(cfg, context_len + 1)


# ----------------------------------------------------------------------------------------------
# MFU


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s divided by the hardware's peak FLOP/s (0..1)."""
    if peak_flops <= 0:
        raise ValueError("peak_flops must be positive")
    return tokens_per_s * flops_per_token / peak_flops


# dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, FLOP/s; matched by substring of
# torch.cuda.get_device_name(). A measured peak (measure_matmul_peak) is the honest denominator on a
# given machine; these exist so a training log can show an MFU without spending time measuring.
DATASHEET_BF16_PEAK = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; the PCIe card is 756e12
    "H800": 989e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "RTX 4090": 165e12,
}


def datasheet_peak(device_name: str) -> float | None:
    """The datasheet dense bf16 peak for a GPU name (None when unknown)."""
    for key, value in DATASHEET_BF16_PEAK.items():
        if key.lower() in device_name.lower():
            return value
    return None


def device_peak_flops(device, configured_tflops: float = 0.0) -> float:
    """Peak FLOP/s of one device, the MFU denominator of a training run: the configured figure when given; on a
    GPU its datasheet dense bf16 peak (H100's, 989 TFLOP/s, for a name not in the table); on a CPU 0.1 TFLOP/s
    per torch thread (AVX-512 FMA at ~3 GHz is ~0.1-0.2 fp32) — a guess, so CPU MFU figures only compare
    with each other."""
    import torch

    if configured_tflops > 0:
        return configured_tflops * 1e12
    if torch.device(device).type == "cuda":
        return datasheet_peak(torch.cuda.get_device_name(device)) or DATASHEET_BF16_PEAK["H100"]
    return 0.1e12 * torch.get_num_threads()


# ----------------------------------------------------------------------------------------------
# measured peaks and GPU-hours


def measure_matmul_peak(device: str = "cpu", dtype=None, n: int = 4096, seconds: float = 1.0) -> float:
    """Measured FLOP/s of a square n x n matmul in `dtype` on `device`: the practical ceiling MFU is taken against."""
    import torch

    dtype = dtype or torch.bfloat16
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def sync() -> None:
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up (kernel selection, clocks)
        a @ b
    sync()
    iters, start = 0, time.perf_counter()
    while True:
        a @ b
        iters += 1
        if iters % 4 == 0:
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
    return 2.0 * n**3 * iters / elapsed


def gpu_hours(total_flops: float, peak_flops: float, mfu_: float) -> float:
    """Device-hours to spend `total_flops` at utilisation `mfu_` of `peak_flops`."""
    return total_flops / (peak_flops * mfu_) / 3600.0


# ----------------------------------------------------------------------------------------------
# a summary (printed by `tinyseek cost`: checkpoint.cli_cost)


@dataclass
class CostSummary:
    total_params: int
    active_params: int
    mtp_params: int
    train_flops_per_token: float
    inference_flops_per_token: float
    seq_len: int


def summarize(cfg: ModelConfig, seq_len: int | None = None) -> CostSummary:
    """The figures `tinyseek cost` prints (and run summaries record); seq_len defaults to cfg.max_seq_len."""
    seq_len = cfg.max_seq_len if seq_len is None else seq_len
    return CostSummary(
        total_params(cfg),
        active_params(cfg),
        mtp_params(cfg),
        train_flops_per_token(cfg, seq_len),
        inference_flops_per_token(cfg, seq_len - 1),
        seq_len,
    )


def _human(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def format_table(name: str, cfg: ModelConfig, s: CostSummary) -> str:
    rows = [
        ("model", name),
        ("total parameters (main)", f"{_human(s.total_params)}  ({s.total_params:,})"),
        ("active parameters / token", f"{_human(s.active_params)}  ({s.active_params:,})"),
        (
            f"MTP parameters ({cfg.mtp_depth} module{'s' if cfg.mtp_depth != 1 else ''})",
            f"{_human(s.mtp_params)}  ({s.mtp_params:,})",
        ),
        (f"training FLOPs / token (T={s.seq_len})", f"{_human(s.train_flops_per_token)}"),
        (f"inference FLOPs / token (context {s.seq_len})", f"{_human(s.inference_flops_per_token)}"),
        ("training FLOPs / 1B tokens", f"{s.train_flops_per_token * 1e9:.3e}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
