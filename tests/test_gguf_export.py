"""`tinyseek export --format gguf`: the file read back with the gguf package's own reader (no llama.cpp here).

Every tensor is compared with the model's after the layout changes llama.cpp's deepseek2 loader expects, written
out by hand below from llama.cpp's loader (names and ggml shapes), not taken from the exporter; the metadata,
the tokenizer, the dtypes, the Ollama Modelfile and the errors are checked the same way. Whether llama.cpp then
computes what tinyseek computes is `make interop` (tests/test_gguf_interop.py), which needs llama.cpp.
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch

from tinyseek.checkpoint import read_config, read_weights, save_checkpoint
from tinyseek.cli import main
from tinyseek.config import ModelConfig
from tinyseek.errors import TinyseekError
from tinyseek.gguf_export import write_gguf
from tinyseek.model import Transformer
from tinyseek.r1 import BOS, EOS, SPECIAL_TOKENS, render_chat
from tinyseek.tokenizer import Tokenizer

TEXTS = [f"{a}+{b}={a + b} <think>add {a} and {b}</think><answer>{a + b}</answer>" for a in range(30) for b in range(9)]

CASES = {
    "moe+groups+q-lora": {},  # nano: q_lora_rank 32, 2 expert groups (1 kept), 1 dense layer, MTP 1
    "dense+no-q-lora": dict(
        q_lora_rank=0, n_routed_experts=0, n_shared_experts=0, n_activated_experts=0, n_dense_layers=1, mtp_depth=0
    ),
    "yarn+softmax+all-groups-kept": dict(
        max_seq_len=128,
        original_seq_len=32,
        rope_factor=4.0,
        mscale=0.7,
        beta_fast=16,
        beta_slow=2,
        score_func="softmax",
        n_limited_groups=2,
        route_scale=2.5,
    ),
}


@pytest.fixture(scope="module")
def tok_file(tmp_path_factory):
    return Tokenizer.train(TEXTS, 300).save(tmp_path_factory.mktemp("tok"))


def make_ckpt(path, tok_file, vocab_size=320, seed=0, **over):
    """A random nano checkpoint (vocab_size past the tokenizer's 300, so padding rows are exported too) with
    non-zero router biases, so their place in the file is checked too."""
    torch.manual_seed(seed)
    model = Transformer(ModelConfig.preset("nano", vocab_size=vocab_size, **over)).eval()
    with torch.no_grad():
        for blk in model.moe_blocks:
            blk.gate.bias.copy_(torch.randn_like(blk.gate.bias) * 0.05)
    return save_checkpoint(model, path, tokenizer_file=tok_file)


def read_gguf(path):
    """(metadata {key: value}, tensors {name: (ggml type name, ggml shape ne, float32 array)})."""
    r = gguf.GGUFReader(path)
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = {
        t.name: (t.tensor_type.name, [int(n) for n in t.shape], gguf.quants.dequantize(t.data, t.tensor_type))
        for t in r.tensors
    }
    return meta, tensors


def llama_cpp_view(cfg: ModelConfig, sd: dict) -> dict:
    """name -> (ggml shape ne, tensor) that llama.cpp's deepseek2 loader (src/models/deepseek2.cpp) creates, from
    tinyseek's tensors. ne lists the fastest dimension first: a torch [rows, cols] matrix is ne [cols, rows]."""
    D, H, V = cfg.dim, cfg.n_heads, cfg.vocab_size
    dn, dr, dv, r, qr = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank, cfg.q_lora_rank
    F, Fe, E, S = cfg.inter_dim, cfg.moe_inter_dim, cfg.n_routed_experts, cfg.n_shared_experts
    out = {
        "token_embd.weight": ([D, V], sd["embed.weight"]),
        "output_norm.weight": ([D], sd["norm.weight"]),
        "output.weight": ([D, V], sd["head.weight"]),
    }
    for i in range(cfg.n_layers):
        L, b = f"layers.{i}.", f"blk.{i}."
        kv_b = sd[L + "attn.wkv_b.weight"].view(H, dn + dv, r)
        out |= {
            b + "attn_norm.weight": ([D], sd[L + "attn_norm.weight"]),
            b + "ffn_norm.weight": ([D], sd[L + "ffn_norm.weight"]),
            b + "attn_kv_a_mqa.weight": ([D, r + dr], sd[L + "attn.wkv_a.weight"]),
            b + "attn_kv_a_norm.weight": ([r], sd[L + "attn.kv_norm.weight"]),
            b + "attn_k_b.weight": ([dn, r, H], kv_b[:, :dn].transpose(1, 2)),  # absorbed: q_nope @ k_b
            b + "attn_v_b.weight": ([r, dv, H], kv_b[:, dn:]),
            b + "attn_output.weight": ([H * dv, D], sd[L + "attn.wo.weight"]),
        }
        if qr:
            out |= {
                b + "attn_q_a.weight": ([D, qr], sd[L + "attn.wq_a.weight"]),
                b + "attn_q_a_norm.weight": ([qr], sd[L + "attn.q_norm.weight"]),
                b + "attn_q_b.weight": ([qr, H * (dn + dr)], sd[L + "attn.wq_b.weight"]),
            }
        else:
            out[b + "attn_q.weight"] = ([D, H * (dn + dr)], sd[L + "attn.wq.weight"])
        if not cfg.layer_is_moe(i):
            out |= {
                b + "ffn_gate.weight": ([D, F], sd[L + "ffn.w1.weight"]),
                b + "ffn_up.weight": ([D, F], sd[L + "ffn.w3.weight"]),
                b + "ffn_down.weight": ([F, D], sd[L + "ffn.w2.weight"]),
            }
            continue
        out |= {
            b + "ffn_gate_inp.weight": ([D, E], sd[L + "ffn.gate.weight"]),
            b + "exp_probs_b.bias": ([E], sd[L + "ffn.gate.bias"]),
            b + "ffn_gate_exps.weight": ([D, Fe, E], sd[L + "ffn.experts.w1"]),
            b + "ffn_up_exps.weight": ([D, Fe, E], sd[L + "ffn.experts.w3"]),
            b + "ffn_down_exps.weight": ([Fe, D, E], sd[L + "ffn.experts.w2"]),
            b + "ffn_gate_shexp.weight": ([D, Fe * S], sd[L + "ffn.shared.w1.weight"]),
            b + "ffn_up_shexp.weight": ([D, Fe * S], sd[L + "ffn.shared.w3.weight"]),
            b + "ffn_down_shexp.weight": ([Fe * S, D], sd[L + "ffn.shared.w2.weight"]),
        }
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_every_tensor_reads_back_equal_in_llama_cpp_layout(tmp_path, tok_file, case):
    ckpt = make_ckpt(tmp_path / "ckpt", tok_file, **CASES[case])
    assert main(["export", str(ckpt), "--format", "gguf", "--out", str(tmp_path / "m.gguf")]) == 0
    cfg, sd = read_config(ckpt), read_weights(ckpt)
    meta, got = read_gguf(tmp_path / "m.gguf")
    want = llama_cpp_view(cfg, sd)
    # llama.cpp gives the first leading_dense_block_count blocks a dense FFN and the rest experts
    n_dense = sum(f"blk.{i}.ffn_gate.weight" in want for i in range(cfg.n_layers))
    assert meta["deepseek2.leading_dense_block_count"] == n_dense and meta["deepseek2.block_count"] == cfg.n_layers
    assert sorted(got) == sorted(want)  # nothing missing, nothing extra: the MTP module is left out
    for name, (ne, t) in want.items():
        qtype, got_ne, a = got[name]
        assert (qtype, got_ne) == ("F32", ne), name
        np.testing.assert_array_equal(a, t.float().numpy(), err_msg=name)


def test_metadata_is_what_llama_cpp_reads(tmp_path, tok_file):
    ckpt = make_ckpt(tmp_path / "ckpt", tok_file)
    write_gguf(read_config(ckpt), read_weights(ckpt), ckpt / "tokenizer.json", tmp_path / "m.gguf")
    meta, _ = read_gguf(tmp_path / "m.gguf")
    cfg = read_config(ckpt)
    want = {
        "general.architecture": "deepseek2",
        "general.file_type": 0,  # all f32
        "deepseek2.context_length": cfg.max_seq_len,
        "deepseek2.embedding_length": 64,
        "deepseek2.block_count": 3,  # the MTP layer is not a block of the file
        "deepseek2.feed_forward_length": 192,
        "deepseek2.vocab_size": 320,
        "deepseek2.attention.head_count": 4,
        "deepseek2.attention.head_count_kv": 1,  # absorbed MLA: one latent "head" shared by all
        "deepseek2.attention.q_lora_rank": 32,
        "deepseek2.attention.kv_lora_rank": 32,
        "deepseek2.attention.key_length": 32 + 8,  # latent + RoPE key
        "deepseek2.attention.value_length": 32,
        "deepseek2.attention.key_length_mla": 16 + 8,
        "deepseek2.attention.value_length_mla": 16,
        "deepseek2.leading_dense_block_count": 1,
        "deepseek2.expert_count": 8,
        "deepseek2.expert_used_count": 2,
        "deepseek2.expert_shared_count": 1,
        "deepseek2.expert_feed_forward_length": 32,
        "deepseek2.expert_group_count": 2,
        "deepseek2.expert_group_used_count": 1,
        "deepseek2.expert_weights_norm": True,
        "deepseek2.expert_weights_scale": 1.0,
        "deepseek2.expert_gating_func": 2,  # sigmoid
        "deepseek2.rope.dimension_count": 8,
        "deepseek2.rope.freq_base": 10000.0,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "smollm",
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
    }
    assert {k: meta.get(k) for k in want} == want
    assert meta["deepseek2.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg.norm_eps)
    assert not any(k.startswith("deepseek2.rope.scaling") for k in meta)  # no YaRN in this config

    # the chat template renders every conversation as tinyseek does; BOS and EOS are spelled out, so llama.cpp's
    # built-in matching (without a jinja engine) recognises DeepSeek-V3's format by its tokens
    import jinja2

    template = meta["tokenizer.chat_template"]
    assert BOS in template and EOS in template and "bos_token" not in template and "eos_token" not in template
    chats = [
        [{"role": "user", "content": "12+30="}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "<think>\ngreet\n</think>\n<answer>Hello</answer>"},
            {"role": "user", "content": "2+2?"},
        ],
    ]
    for msgs in chats:
        for gen in (True, False):
            got = jinja2.Environment().from_string(template).render(messages=msgs, add_generation_prompt=gen)
            assert got == render_chat(msgs, gen)


def test_yarn_and_softmax_metadata(tmp_path, tok_file):
    ckpt = make_ckpt(tmp_path / "ckpt", tok_file, **CASES["yarn+softmax+all-groups-kept"])
    write_gguf(read_config(ckpt), read_weights(ckpt), ckpt / "tokenizer.json", tmp_path / "m.gguf")
    meta, _ = read_gguf(tmp_path / "m.gguf")
    got = {k.removeprefix("deepseek2."): v for k, v in meta.items() if k.startswith("deepseek2.")}
    assert got["rope.scaling.type"] == "yarn" and got["rope.scaling.factor"] == 4.0
    assert got["rope.scaling.original_context_length"] == 32
    assert (got["rope.scaling.yarn_beta_fast"], got["rope.scaling.yarn_beta_slow"]) == (16, 2)
    assert got["rope.scaling.yarn_log_multiplier"] == pytest.approx(0.07)  # 0.1 * mscale, as llama.cpp reads it
    assert got["rope.scaling.yarn_attn_factor"] == 1.0
    assert got["expert_gating_func"] == 1 and got["expert_weights_norm"] is False  # softmax weights as they are
    assert got["expert_weights_scale"] == 2.5
    # both groups kept is no group limit: llama.cpp needs kept < groups, so it is written as one group
    assert (got["expert_group_count"], got["expert_group_used_count"]) == (1, 1)


def test_tokenizer_tokens_merges_and_special_ids(tmp_path, tok_file):
    ckpt = make_ckpt(tmp_path / "ckpt", tok_file)
    write_gguf(read_config(ckpt), read_weights(ckpt), ckpt / "tokenizer.json", tmp_path / "m.gguf")
    meta, _ = read_gguf(tmp_path / "m.gguf")
    raw = json.loads(tok_file.read_text(encoding="utf-8"))
    tok = Tokenizer.load(tok_file)
    vocab = tok.hf.get_vocab(with_added_tokens=True)
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    n = tok.vocab_size
    assert len(tokens) == len(types) == 320  # the model's vocab_size: ids from the tokenizer's size on are placeholders
    assert {t: i for i, t in enumerate(tokens[:n])} == vocab
    assert tokens[n:] == [f"[PAD{i}]" for i in range(n, 320)] and set(types[n:]) == {5}  # unused
    assert [types[vocab[t]] for t in SPECIAL_TOKENS] == [3] * len(SPECIAL_TOKENS)  # control tokens
    assert set(types[:n]) == {1, 3}  # everything else a normal token
    assert meta["tokenizer.ggml.merges"] == [" ".join(m) for m in raw["model"]["merges"]]
    assert meta["tokenizer.ggml.bos_token_id"] == vocab[BOS] and meta["tokenizer.ggml.eos_token_id"] == vocab[EOS]
    assert meta["tokenizer.ggml.padding_token_id"] == tok.pad_id


@pytest.mark.parametrize("dtype", ["f16", "bf16", "q8_0"])
def test_smaller_dtypes_round_matrices_and_keep_norms_and_router_f32(tmp_path, tok_file, dtype):
    ckpt = make_ckpt(tmp_path / "ckpt", tok_file)
    cfg, sd = read_config(ckpt), read_weights(ckpt)
    write_gguf(cfg, sd, ckpt / "tokenizer.json", tmp_path / "m.gguf", dtype=dtype)
    meta, got = read_gguf(tmp_path / "m.gguf")
    assert meta["general.file_type"] == {"f16": 1, "bf16": 32, "q8_0": 7}[dtype]
    matrix_type = {"f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}[dtype]
    rtol = {"f16": 1e-3, "bf16": 8e-3}.get(dtype)
    for name, (_, t) in llama_cpp_view(cfg, sd).items():
        qtype, _, a = got[name]
        want = t.float().numpy()
        if want.ndim == 1 or ".ffn_gate_inp." in name:
            assert qtype == "F32", name
            np.testing.assert_array_equal(a, want, err_msg=name)
        elif dtype == "q8_0" and want.shape[-1] % 32:  # q8_0 quantises rows in blocks of 32: this one is f16
            assert qtype == "F16", name
        else:
            assert qtype == matrix_type, name
            if dtype == "q8_0":  # blocks of 32 scaled by max/127 (an f16 scale): at most about half a step off
                step = np.abs(want).reshape(-1, 32).max(axis=1, keepdims=True) / 127
                assert (np.abs(a - want).reshape(-1, 32) <= 0.6 * step + 1e-7).all(), name
            else:
                assert (np.abs(a - want) <= rtol * np.abs(want) + 1e-6).all(), name
            assert not np.array_equal(a, want), name  # really rounded: not the f32 values written under another type


def test_modelfile_beside_the_gguf(tmp_path, tok_file):
    ckpt = make_ckpt(tmp_path / "ckpt", tok_file)
    out = tmp_path / "out" / "tiny.gguf"
    assert main(["export", str(ckpt), "--format", "gguf", "--out", str(out), "--modelfile"]) == 0
    text = (tmp_path / "out" / "tiny.Modelfile").read_text(encoding="utf-8")
    assert text.startswith("FROM ./tiny.gguf\n")
    for line in (
        "PARAMETER temperature 0.6",
        "PARAMETER top_p 0.95",
        f"PARAMETER num_ctx {read_config(ckpt).max_seq_len}",
    ):
        assert line in text.splitlines()
    for t in (EOS, "<｜User｜>", "<｜Assistant｜>"):
        assert f'PARAMETER stop "{t}"' in text
    assert '{{- if eq .Role "user" }}<｜User｜>{{ .Content }}' in text


def _one_line_error(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    return err


def test_bad_input_is_one_line_and_leaves_the_old_file(tmp_path, tok_file, capsys):
    ckpt = make_ckpt(tmp_path / "ckpt", tok_file)
    out = tmp_path / "m.gguf"
    out.write_bytes(b"an earlier export")
    base = ["export", str(ckpt), "--format", "gguf", "--out", str(out)]

    assert "'q4_0' is not a GGUF export type" in _one_line_error(capsys, base + ["--dtype", "q4_0"])
    assert "'onnx' is not an export format" in _one_line_error(capsys, base[:3] + ["onnx", "--out", str(out)])
    assert "--format gguf" in _one_line_error(
        capsys, ["export", str(ckpt), "--out", str(tmp_path / "hf"), "--dtype", "f16"]
    )
    assert "is a directory" in _one_line_error(capsys, base[:4] + ["--out", str(tmp_path)])

    (ckpt / "tokenizer.json").rename(tmp_path / "tokenizer.json")
    err = _one_line_error(capsys, base)
    assert "tokenizer.json: no tokenizer" in err and str(ckpt) in err

    # a tokenizer split another way: no llama.cpp pre-tokenizer name is known to split as it does
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import pre_tokenizers

    other = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    other.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    other.save(str(ckpt / "tokenizer.json"))
    assert "pre_tokenizer is" in _one_line_error(capsys, base)

    assert out.read_bytes() == b"an earlier export"  # every failure left the earlier file as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "m.gguf", "tokenizer.json"]  # no temporary files


def test_configs_llama_cpp_cannot_run_are_refused(tmp_path, tok_file):
    cfg = ModelConfig.preset("nano", vocab_size=320, n_shared_experts=0)
    with pytest.raises(TinyseekError, match="n_shared_experts: llama.cpp's deepseek2 always has shared experts"):
        write_gguf(cfg, {}, tok_file, tmp_path / "m.gguf")
    cfg = ModelConfig.preset("nano", vocab_size=320, n_expert_groups=8, n_limited_groups=4)
    with pytest.raises(TinyseekError, match="each group needs >= 2 experts"):
        write_gguf(cfg, {}, tok_file, tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def test_a_write_that_fails_midway_leaves_the_old_file(tmp_path, tok_file, capsys, monkeypatch):
    ckpt = make_ckpt(tmp_path / "ckpt", tok_file)
    out = tmp_path / "m.gguf"
    out.write_bytes(b"an earlier export")

    def full_disk(self, *args, **kwargs):
        self.fout[0].write(b"half a tensor")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", full_disk)
    rc = main(["export", str(ckpt), "--format", "gguf", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "No space left on device" in err, err
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "m.gguf"]


def test_the_default_dtype_is_the_checkpoints_own(tmp_path, tok_file):
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("nano", vocab_size=320)).eval().to(torch.bfloat16)
    ckpt = save_checkpoint(model, tmp_path / "ckpt", tokenizer_file=tok_file)
    assert main(["export", str(ckpt), "--format", "gguf", "--out", str(tmp_path / "m.gguf")]) == 0
    meta, got = read_gguf(tmp_path / "m.gguf")
    assert meta["general.file_type"] == 32 and got["blk.1.ffn_gate_exps.weight"][0] == "BF16"  # bf16 kept bf16
    assert got["blk.1.exp_probs_b.bias"][0] == "F32"
