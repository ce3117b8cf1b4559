"""tinyseek <-> transformers' DeepseekV3ForCausalLM: the same logits both ways, lossless round trips, clear errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import transformers  # a dependency: an import error fails, never skips
from safetensors.torch import load_file, save_file

from tinyseek.checkpoint import (
    cli_export,
    cli_import,
    cli_init,
    export_dir,
    import_dir,
    load_hf_as_tinyseek,
    read_config,
    read_weights,
    save_checkpoint,
)
from tinyseek.config import ConfigError, ModelConfig
from tinyseek.errors import TinyseekError
from tinyseek.hf import MTP_PREFIX, from_hf_state_dict, to_hf_config
from tinyseek.model import Transformer


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record):
        self.records.append(record.getMessage())


def hf_load(path):
    """Stock AutoModelForCausalLM.from_pretrained (eager attention), returning (model, warnings it logged)."""
    handler = _Collect()
    log = logging.getLogger("transformers")
    log.addHandler(handler)
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="eager")
    finally:
        log.removeHandler(handler)
    return model.eval(), handler.records


def random_model(seed=0, **over) -> Transformer:
    """A nano-sized model with non-zero correction biases (so their mapping is exercised too)."""
    torch.manual_seed(seed)
    model = Transformer(ModelConfig.preset("nano", **over)).eval()
    with torch.no_grad():
        for blk in model.moe_blocks:
            blk.gate.bias.copy_(torch.randn_like(blk.gate.bias) * 0.05)
    return model


CASES = {
    "q-compressed+groups+dense-first": {},  # nano: q_lora_rank 32, 2 expert groups (1 kept), 1 dense layer, MTP 1
    "no-q-compression": dict(q_lora_rank=0),
    "all-moe+4-groups+route-scale": dict(n_dense_layers=0, n_expert_groups=4, n_limited_groups=2, route_scale=2.5),
    "yarn": dict(max_seq_len=128, original_seq_len=32, rope_factor=4.0, mscale=0.7, beta_fast=16, beta_slow=2),
    "dense": dict(n_routed_experts=0, n_shared_experts=0, n_activated_experts=0, n_dense_layers=3, mtp_depth=0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_export_gives_transformers_the_same_logits(tmp_path, case):
    model = random_model(**CASES[case])
    export_dir(model.cfg, model.state_dict(), tmp_path / "hf")
    hf, warnings = hf_load(tmp_path / "hf")
    assert type(hf).__name__ == "DeepseekV3ForCausalLM"
    assert warnings == []  # no missing / unexpected weights: the MTP tensors load silently
    tokens = torch.randint(0, model.cfg.vocab_size, (2, 80))  # 80 > original_seq_len of the yarn case
    with torch.no_grad():
        ours, theirs = model(tokens).logits, hf(tokens).logits
    diff = (ours - theirs).abs().max().item()
    print(f"export {case}: max |tinyseek - transformers| logit difference {diff:.1e}")  # the README's figure (-s)
    assert diff < 1e-4
    # and tinyseek.load_model reads the exported directory back to the same model
    import tinyseek

    again = tinyseek.load_model(tmp_path / "hf")
    with torch.no_grad():
        assert torch.equal(again(tokens).logits, ours)


def test_hf_config_fields():
    cfg = ModelConfig.preset("nano", q_lora_rank=0, max_seq_len=128, original_seq_len=32, rope_factor=4.0, mscale=0.7)
    hf = to_hf_config(cfg)
    assert hf.q_lora_rank is None and hf.rope_interleave and not hf.tie_word_embeddings
    assert hf.n_group == 2 and hf.topk_group == 1 and hf.first_k_dense_replace == 1 and hf.norm_topk_prob
    assert hf.num_key_value_heads == cfg.n_heads
    assert hf.rope_parameters["rope_type"] == "yarn" and hf.rope_parameters["mscale_all_dim"] == 0.7
    assert hf.tinyseek["mtp_depth"] == 1
    dense = to_hf_config(ModelConfig.preset("tiny-dense"))
    assert dense.first_k_dense_replace == dense.num_hidden_layers == 4
    with pytest.raises(ConfigError, match="score_func"):
        to_hf_config(ModelConfig.preset("nano", score_func="softmax"))


def _random_hf_model(seed=0, **over):
    """A transformers DeepseekV3ForCausalLM built from transformers' own config class (not through tinyseek)."""
    torch.manual_seed(seed)
    cfg = transformers.DeepseekV3Config(
        vocab_size=200,
        hidden_size=48,
        intermediate_size=96,
        moe_intermediate_size=24,
        num_hidden_layers=3,
        num_attention_heads=3,
        num_key_value_heads=3,
        n_shared_experts=2,
        n_routed_experts=6,
        routed_scaling_factor=2.0,
        kv_lora_rank=24,
        q_lora_rank=16,
        qk_rope_head_dim=8,
        v_head_dim=12,
        qk_nope_head_dim=8,
        n_group=3,
        topk_group=2,
        num_experts_per_tok=3,
        first_k_dense_replace=1,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_parameters={
            "rope_type": "yarn",
            "rope_theta": 5000.0,
            "factor": 2.0,
            "original_max_position_embeddings": 64,
            "beta_fast": 32,
            "beta_slow": 1,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        },
        attn_implementation="eager",
        **over,
    )
    hf = transformers.DeepseekV3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, buf in hf.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buf.copy_(torch.randn_like(buf) * 0.05)
    return hf


@pytest.mark.parametrize("interleave", [True, False])
def test_import_of_a_random_transformers_model_gives_its_logits(tmp_path, interleave):
    hf = _random_hf_model(rope_interleave=interleave)
    hf.save_pretrained(tmp_path / "hf")
    ours = load_hf_as_tinyseek(tmp_path / "hf").eval()
    assert (
        ours.cfg.q_lora_rank == 16
        and ours.cfg.n_expert_groups == 3
        and ours.cfg.rope_factor == 2.0
        and ours.cfg.mtp_depth == 0
    )
    tokens = torch.randint(0, 200, (2, 80))  # 80 > original_max_position_embeddings
    with torch.no_grad():
        theirs = hf(tokens).logits
        diff = (ours(tokens).logits - theirs).abs().max().item()
        print(f"import (rope_interleave={interleave}): max |tinyseek - transformers| logit difference {diff:.1e}")
        assert diff < 1e-4
        # the in-memory state dict (experts fused as 3D tensors) converts to the same weights
        sd = from_hf_state_dict(hf.state_dict(), ours.cfg, rope_interleave=interleave)
        for k, v in ours.state_dict().items():
            assert torch.equal(sd[k], v), k


def test_export_import_export_is_lossless(tmp_path):
    model = random_model(seed=3)
    save_checkpoint(model, tmp_path / "ckpt")
    assert cli_export([str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf1")]) == 0
    assert cli_import([str(tmp_path / "hf1"), "--out", str(tmp_path / "ckpt2")]) == 0
    assert cli_export([str(tmp_path / "ckpt2"), "--out", str(tmp_path / "hf2")]) == 0
    assert read_config(tmp_path / "ckpt2") == model.cfg  # the tinyseek extras came back exactly
    a, b = load_file(str(tmp_path / "hf1/model.safetensors")), load_file(str(tmp_path / "hf2/model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        assert a[k].numpy().tobytes() == b[k].numpy().tobytes(), k
    assert json.loads((tmp_path / "hf1/config.json").read_text()) == json.loads(
        (tmp_path / "hf2/config.json").read_text()
    )
    # MTP survives: it sits in the export under the silent prefix and comes back bit for bit
    assert any(k.startswith(MTP_PREFIX + ".0.") for k in a)
    back = read_weights(tmp_path / "ckpt2")
    orig = model.state_dict()
    assert back.keys() == orig.keys() and any(k.startswith("mtp.0.") for k in back)
    for k in orig:
        assert torch.equal(back[k], orig[k]), k


def _no_leftovers(parent: Path, name: str) -> bool:
    return not any(p.name == name or p.name.startswith(f".{name}.") for p in parent.iterdir())


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("damage", ["missing", "misshaped"])
def test_mismatched_export_dir_fails_naming_the_tensor(tmp_path, damage):
    model = random_model()
    export_dir(model.cfg, model.state_dict(), tmp_path / "hf")
    f = tmp_path / "hf/model.safetensors"
    sd = load_file(str(f))
    victim = "model.layers.2.mlp.experts.5.up_proj.weight"
    if damage == "missing":
        del sd[victim]
    else:
        sd[victim] = torch.zeros(3, 3)
    save_file(sd, str(f))
    with pytest.raises(TinyseekError) as e:
        import_dir(tmp_path / "hf", tmp_path / "ckpt")
    assert victim in _one_line(e)
    assert _no_leftovers(tmp_path, "ckpt")


def test_mismatched_checkpoint_export_fails_and_leaves_nothing(tmp_path):
    model = random_model()
    save_checkpoint(model, tmp_path / "ckpt")
    f = tmp_path / "ckpt/model.safetensors"
    sd = load_file(str(f))
    sd["layers.0.attn.wkv_b.weight"] = sd["layers.0.attn.wkv_b.weight"][:, :-1].contiguous()
    save_file(sd, str(f))
    with pytest.raises(TinyseekError) as e:
        cli_export([str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")])
    assert "layers.0.attn.wkv_b.weight" in _one_line(e)
    assert _no_leftovers(tmp_path, "hf")


def test_bad_config_values_fail_naming_the_field(tmp_path):
    model = random_model()
    export_dir(model.cfg, model.state_dict(), tmp_path / "hf")
    cfg_file = tmp_path / "hf/config.json"
    good = json.loads(cfg_file.read_text())
    for field, value in [("hidden_act", "gelu"), ("norm_topk_prob", False), ("num_key_value_heads", 1)]:
        cfg_file.write_text(json.dumps({**good, field: value}))
        with pytest.raises(TinyseekError) as e:
            import_dir(tmp_path / "hf", tmp_path / "ckpt")
        assert field in _one_line(e) and _no_leftovers(tmp_path, "ckpt")
    cfg_file.write_text(json.dumps({**good, "tinyseek": {**good["tinyseek"], "mtp_depht": 1}}))
    with pytest.raises(TinyseekError, match="mtp_depht"):
        import_dir(tmp_path / "hf", tmp_path / "ckpt")
    with pytest.raises(TinyseekError, match="n_activated_experts"):
        cli_init(["--preset", "nano", "--out", str(tmp_path / "x"), "--n_activated_experts", "9"])
    assert _no_leftovers(tmp_path, "x")


def test_init_refuses_the_671b_preset(tmp_path):
    with pytest.raises(TinyseekError, match="never allocated"):
        cli_init(["--preset", "deepseek-v3-671b", "--out", str(tmp_path / "big")])
    assert _no_leftovers(tmp_path, "big")


def test_init_seed_and_overrides(tmp_path):
    cli_init(["--preset", "nano", "--out", str(tmp_path / "a"), "--seed", "1", "--n_layers", "2"])
    cli_init(["--preset", "nano", "--out", str(tmp_path / "b"), "--seed", "1", "--n_layers", "2"])
    cli_init(["--preset", "nano", "--out", str(tmp_path / "c"), "--seed", "2", "--n_layers", "2"])
    assert read_config(tmp_path / "a").n_layers == 2
    a, b, c = (read_weights(tmp_path / n)["layers.0.attn.wo.weight"] for n in "abc")
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_tokenizer_travels_with_the_export(tmp_path):
    from tinyseek import tokenizer as tok_mod

    texts = [f"{a} + {b} = {a + b}. <think>add</think><answer>{a + b}</answer>" for a in range(40) for b in range(10)]
    tok = tok_mod.Tokenizer.train(texts, 300)
    tok_file = tok.save(tmp_path / "tok")
    cli_init(["--preset", "nano", "--out", str(tmp_path / "ckpt"), "--vocab_size", "320", "--tokenizer", str(tok_file)])
    cli_export([str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")])
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    text = "12 + 30 = 42 <think>x</think>"
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    hf_cfg = json.loads((tmp_path / "hf/config.json").read_text())
    assert hf_cfg["eos_token_id"] == tok.eos_id and hf_cfg["bos_token_id"] == tok.bos_id


def test_import_reads_deepseek_layout_mtp(tmp_path):
    """DeepSeek's own checkpoints keep MTP depth k at model.layers.{n_layers + k}.* (with copies of the
    embedding and head); import finds it there too, and counts the depth from the weights."""
    model = random_model(seed=5)
    export_dir(model.cfg, model.state_dict(), tmp_path / "hf")
    f = tmp_path / "hf/model.safetensors"
    sd = load_file(str(f))
    L = model.cfg.n_layers
    moved = {
        (k.replace(f"{MTP_PREFIX}.0.", f"model.layers.{L}.") if k.startswith(MTP_PREFIX) else k): v
        for k, v in sd.items()
    }
    moved[f"model.layers.{L}.embed_tokens.weight"] = sd["model.embed_tokens.weight"].clone()
    moved[f"model.layers.{L}.shared_head.head.weight"] = sd["lm_head.weight"].clone()
    save_file(moved, str(f))
    cfg_file = tmp_path / "hf/config.json"
    hf_cfg = json.loads(cfg_file.read_text())
    del hf_cfg["tinyseek"]
    cfg_file.write_text(json.dumps(hf_cfg))
    back = load_hf_as_tinyseek(tmp_path / "hf")
    assert back.cfg.mtp_depth == 1
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_old_style_rope_scaling_and_missing_fields(tmp_path):
    """DeepSeek's released config.json spells YaRN as `rope_scaling` with a top-level `rope_theta`; fields a
    config.json leaves out take transformers' defaults (what from_pretrained would build)."""
    from tinyseek.checkpoint import read_hf_config

    cfg = ModelConfig.preset("nano", max_seq_len=128, original_seq_len=32, rope_factor=4.0, mscale=1.0, mtp_depth=0)
    d = to_hf_config(cfg).to_dict()
    rope = d.pop("rope_parameters")
    d.update(rope_theta=rope.pop("rope_theta"), rope_scaling={**rope, "type": rope.pop("rope_type")})
    del d["tinyseek"], d["rms_norm_eps"], d["rope_scaling"]["attention_factor"]  # rms_norm_eps default: 1e-6
    (tmp_path / "config.json").write_text(json.dumps(d))
    got = read_hf_config(tmp_path)
    assert (got.rope_factor, got.original_seq_len, got.mscale, got.norm_eps) == (4.0, 32, 1.0, 1e-6)
    (tmp_path / "config.json").write_text(json.dumps({**d, "model_type": "llama"}))
    with pytest.raises(TinyseekError, match="model_type"):
        read_hf_config(tmp_path)
