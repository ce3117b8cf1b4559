"""Parameter and FLOP counts from a config, checked against DeepSeek's published figures and real models."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tinyseek import cost
from tinyseek.checkpoint import cli_cost
from tinyseek.config import ModelConfig
from tinyseek.model import Transformer


def test_deepseek_v3_671b_totals():
    cfg = ModelConfig.preset("deepseek-v3-671b")
    total, active, mtp = cost.total_params(cfg), cost.active_params(cfg), cost.mtp_params(cfg)
    assert abs(total - 671e9) / 671e9 < 0.01
    # DeepSeek's "37B activated" is 36.6B rounded: we count 36.63B (the embedding table, a lookup, excluded;
    # counting it would give 37.55B, which would round to 38B). So: the same rounding, and within 1.5%.
    assert round(active / 1e9) == 37 and abs(active - 37e9) / 37e9 < 0.015
    # the download is "685B" = main + MTP, where DeepSeek's MTP layer carries its own embedding and head copies
    assert abs(total + mtp + 2 * cfg.vocab_size * cfg.dim - 685e9) / 685e9 < 0.01


def test_gpu_500m_matches_the_transformers_anchor():
    cfg = ModelConfig.preset("gpu-500m")
    assert abs(cost.total_params(cfg) - 673e6) / 673e6 < 0.01
    assert abs(cost.active_params(cfg) - 138e6) / 138e6 < 0.01


@pytest.mark.parametrize("preset", ["nano", "tiny", "tiny-dense"])
def test_counts_equal_instantiated_models(preset):
    cfg = ModelConfig.preset(preset)
    model = Transformer(cfg)
    main = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("mtp."))
    mtp = sum(p.numel() for n, p in model.named_parameters() if n.startswith("mtp."))
    assert cost.total_params(cfg) == main
    assert cost.mtp_params(cfg) == mtp


@pytest.mark.parametrize("over", [{}, dict(q_lora_rank=0, n_dense_layers=0, n_shared_experts=2, n_activated_experts=3)])
def test_active_params_are_what_one_token_touches(over):
    """Backprop one token: every parameter with a non-zero gradient was used (per expert for the 3D tensors).

    The token is the second of its sequence (the first is cached without grad): alone, its softmax over one
    key would be constant and the query projections would get no gradient although they were used."""
    from tinyseek.model import KVCache

    torch.manual_seed(0)
    cfg = ModelConfig.preset("nano", mtp_depth=0, **over)
    model = Transformer(cfg)
    cache = KVCache(cfg, 1, 4)
    with torch.no_grad():
        model(torch.tensor([[3]]), cache=cache)
    model(torch.tensor([[7]]), cache=cache).logits.square().sum().backward()
    used = 0
    for name, p in model.named_parameters():
        if name == "embed.weight" or p.grad is None:
            continue
        if ".experts." in name:  # [E, ...]: count the experts this token went to
            used += int((p.grad.flatten(1).abs().sum(1) > 0).sum()) * p[0].numel()
        elif p.grad.abs().sum() > 0:
            used += p.numel()
    assert used == cost.active_params(cfg)


def test_train_flops_match_a_flop_counter():
    """torch's FlopCounterMode on a training step (naive MLA, loop dispatch): its plain matmuls (every
    projection, router, expert and the head, forward and backward) add up to exactly 6 x active matmul
    parameters per token. (Attention goes through SDPA, whose fused CPU kernel the counter does not see;
    the attention term is checked against its closed form in test_flops_grow_with_sequence_length.)"""
    torch.manual_seed(0)
    cfg = ModelConfig.preset("nano", mtp_depth=0, mla_impl="naive", moe_impl="loop")
    model = Transformer(cfg)
    B, T = 2, 24
    tokens = torch.randint(0, cfg.vocab_size, (B, T))
    with FlopCounterMode(display=False) as counter:
        model(tokens, targets=tokens).loss.backward()
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    matmul = sum(n for op, n in by_op.items() if op in ("aten.mm", "aten.addmm"))
    assert matmul / (B * T) == 6 * cost.active_matmul_params(cfg)
    assert cost.train_flops_per_token(cfg, T, include_mtp=False) == 6 * cost.active_matmul_params(
        cfg
    ) + 3 * cost.attention_flops_per_token(cfg, (T + 1) / 2)


def test_flops_grow_with_sequence_length():
    cfg = ModelConfig.preset("tiny")
    f = {T: cost.train_flops_per_token(cfg, T) for T in (1, 256, 512, 1024)}
    slope = 3 * 2 * cfg.n_heads * (cfg.qk_head_dim + cfg.v_head_dim) / 2 * (cfg.n_layers + cfg.mtp_depth)
    assert f[256] < f[512] < f[1024]
    assert f[1024] - f[512] == pytest.approx(512 * slope) and f[512] - f[256] == pytest.approx(256 * slope)
    assert f[1] == pytest.approx(6 * cost.active_matmul_params(cfg, include_mtp=True) + 2 * slope)
    assert cost.train_flops_per_token(cfg, 256, include_mtp=False) < f[256]
    dense = ModelConfig.preset("tiny-dense")
    assert cost.train_flops_per_token(dense, 256, include_mtp=False) == cost.train_flops_per_token(dense, 256)
    assert cost.inference_flops_per_token(cfg, 1000) > cost.inference_flops_per_token(cfg, 10)


def test_mfu_and_cli(capsys):
    assert cost.mfu(1000.0, 1e9, 1e13) == pytest.approx(0.1)
    assert cost.datasheet_peak("NVIDIA H200") == 989e12 and cost.datasheet_peak("mystery") is None
    assert cli_cost(["--preset", "deepseek-v3-671b", "--seq-len", "4096"]) == 0
    out = capsys.readouterr().out
    assert "671.03B" in out and "36.63B" in out


def test_cli_on_a_checkpoint(tmp_path, capsys):
    from tinyseek.checkpoint import save_checkpoint
    from tinyseek.errors import TinyseekError

    cfg = ModelConfig.preset("nano")
    save_checkpoint(Transformer(cfg), tmp_path / "ckpt")
    assert cli_cost([str(tmp_path / "ckpt"), "--seq-len", "64"]) == 0
    out = capsys.readouterr().out
    assert f"{cost.total_params(cfg):,}" in out and "T=64" in out
    with pytest.raises(TinyseekError):
        cli_cost([str(tmp_path / "ckpt"), "--preset", "nano"])
