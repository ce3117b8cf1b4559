"""GGUF export: a tinyseek checkpoint as the one file llama.cpp (and Ollama, LM Studio) runs as DeepSeek-V3.

Written with the `gguf` package (pure Python and numpy: exporting needs no llama.cpp) in the layout that
llama.cpp's own converter (convert_hf_to_gguf.py, `DeepseekV2Model`) gives DeepSeek-V3, so llama.cpp runs it
with the code it runs DeepSeek-V3 with:

- architecture `deepseek2`. MLA is stored the way llama.cpp computes it, absorbed (as MQA over the latent):
  `wkv_b` [H * (nope + v), kv_lora_rank] is split per head into `attn_k_b` [H, kv_lora_rank, nope] (transposed)
  and `attn_v_b` [H, v, kv_lora_rank]; `head_count_kv` is 1, `key_length` kv_lora_rank + rope dim and
  `value_length` kv_lora_rank, and the per-head sizes go in `key_length_mla` / `value_length_mla`.
- the routed experts stacked [E, ...] as tinyseek keeps them; the router's selection bias as `exp_probs_b`;
  sigmoid (or softmax) gating, the top-k weights normalised for sigmoid (as tinyseek and DeepSeek-V3),
  `route_scale`, and expert groups (`expert_group_count` / `expert_group_used_count`, each group scored by its
  top two experts, as tinyseek's router does).
- RoPE on interleaved pairs, which is llama.cpp's "norm" RoPE for deepseek2: no permutation. YaRN is written as
  llama.cpp's converter writes DeepSeek-V3's (`yarn_log_multiplier` = 0.1 * mscale).
- The MTP modules are dropped: llama.cpp runs a deepseek2 file without them (its converter drops DeepSeek-V3's
  too), so the file has the main model only and llama.cpp does no MTP speculation.
- Norms, the router and its bias stay float32 in every dtype (llama.cpp's converter keeps them so: 1-D tensors
  must be f32, and expert choice is decided by small score differences). q8_0 quantises rows in blocks of 32
  (gguf.quants, pure numpy); a matrix whose rows are not a multiple of 32 is written f16, as llama.cpp's
  converter does.

The tokenizer goes in as llama.cpp's byte-level BPE ("gpt2" model): tinyseek's tokens in id order (byte-level text;
the special tokens as control tokens), its merges, BOS/EOS/pad, and the R1 chat template (tinyseek/r1.py, with its
BOS and EOS written out, so that llama.cpp's built-in template matching also recognises it as DeepSeek-V3's).

llama.cpp names a pre-tokenizer (how text is split before BPE) rather than reading it from the file. tinyseek's is
`Digits(individual_digits=True)` then GPT-2's `ByteLevel` regex, and the name written is "smollm": for it llama.cpp
splits with two regexes in turn, every `\\p{N}` on its own and then GPT-2's pattern, which is the same split
(SmolLM's tokenizer is built the same way). The names a user would guess split differently wherever tinyseek has a
merge across their piece boundaries: "gpt-2" has no digit pass, so a whitespace run before a digit is cut before
its last space ("x  1" is "x", " ", " 1" there and "x", "  ", "1" here); "qwen2" keeps newline runs whole and
digits apart but cuts whitespace the same way; "deepseek-v3" has its own rules for letters and punctuation.
`make interop` tokenizes 316 varied and random texts with llama.cpp under each name: 0 differ under "smollm",
65 to 93 under the others (dev/LOG.md). A tokenizer.json with any other pre-tokenizer, normaliser or model is
refused: no name is known to split it as it does. BOS is added to plain text (`add_bos_token`), as tinyseek
prefixes a text prompt with it; llama.cpp drops the chat template's own leading BOS when it adds one.

`modelfile` writes an Ollama Modelfile for the file: the R1 template in Ollama's Go syntax, R1's recommended
sampling (temperature 0.6, top-p 0.95), the special tokens as stops and the model's context length.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from tinyseek.config import ModelConfig
from tinyseek.errors import TinyseekError
from tinyseek.hf import check_state_dict, meta_model
from tinyseek.io import atomic_file, write_atomic
from tinyseek.r1 import ASSISTANT, BOS, CHAT_TEMPLATE, EOS, USER
from tinyseek.tokenizer import Tokenizer

ARCH = "deepseek2"
PRE_TOKENIZER = "smollm"  # see the module docstring: digits one by one, then GPT-2's regex
DTYPES = ("f32", "f16", "bf16", "q8_0")
R1_SAMPLING = {"temperature": 0.6, "top_p": 0.95}  # DeepSeek-R1's recommended sampling (its model card)
# The R1 chat template with BOS and EOS written out rather than named: the same text under jinja, and llama.cpp's
# built-in template matching (what it falls back to without a jinja engine) recognises DeepSeek-V3's format by
# these tokens (it then puts "\n\n" after a system prompt, which this template does not).
GGUF_CHAT_TEMPLATE = CHAT_TEMPLATE.replace("{{ bos_token }}", BOS).replace("eos_token", repr(EOS))

# tinyseek name within a block -> the gguf package's tensor kind (the name llama.cpp loads)
_BLOCK = {
    "attn_norm.weight": "ATTN_NORM",
    "ffn_norm.weight": "FFN_NORM",
    "attn.wq.weight": "ATTN_Q",
    "attn.wq_a.weight": "ATTN_Q_A",
    "attn.q_norm.weight": "ATTN_Q_A_NORM",
    "attn.wq_b.weight": "ATTN_Q_B",
    "attn.wkv_a.weight": "ATTN_KV_A_MQA",
    "attn.kv_norm.weight": "ATTN_KV_A_NORM",
    "attn.wo.weight": "ATTN_OUT",
    "ffn.w1.weight": "FFN_GATE",
    "ffn.w3.weight": "FFN_UP",
    "ffn.w2.weight": "FFN_DOWN",
    "ffn.gate.weight": "FFN_GATE_INP",
    "ffn.gate.bias": "FFN_EXP_PROBS_B",
    "ffn.experts.w1": "FFN_GATE_EXP",
    "ffn.experts.w3": "FFN_UP_EXP",
    "ffn.experts.w2": "FFN_DOWN_EXP",
    "ffn.shared.w1.weight": "FFN_GATE_SHEXP",
    "ffn.shared.w3.weight": "FFN_UP_SHEXP",
    "ffn.shared.w2.weight": "FFN_DOWN_SHEXP",
}
_TOP = {"embed.weight": "TOKEN_EMBD", "norm.weight": "OUTPUT_NORM", "head.weight": "OUTPUT"}
_KEEP_F32 = ("FFN_GATE_INP",)  # besides every 1-D tensor


# ----------------------------------------------------------------------------------------------
# the model


def check_gguf_exportable(cfg: ModelConfig) -> None:
    """One-line error for a config llama.cpp's deepseek2 cannot run as tinyseek runs it."""
    if cfg.is_moe and cfg.n_moe_layers > 0:
        if cfg.score_func not in ("sigmoid", "softmax"):
            raise TinyseekError(f"score_func: llama.cpp gates experts by sigmoid or softmax, not {cfg.score_func!r}")
        if cfg.n_shared_experts == 0:
            raise TinyseekError("n_shared_experts: llama.cpp's deepseek2 always has shared experts, cannot export 0")
        if _groups(cfg)[0] > 1 and cfg.n_routed_experts // cfg.n_expert_groups < 2:
            raise TinyseekError(
                f"n_expert_groups: llama.cpp scores a group by its top-2 experts, so each group needs >= 2 experts "
                f"(got {cfg.n_routed_experts} experts in {cfg.n_expert_groups} groups)"
            )
    if cfg.n_layers in (26, 27) and cfg.q_lora_rank > 0:
        raise TinyseekError(
            f"n_layers: llama.cpp takes a {cfg.n_layers}-layer deepseek2 for DeepSeek-V2-Lite and ignores "
            f"q_lora_rank={cfg.q_lora_rank}; cannot export this combination"
        )


def _groups(cfg: ModelConfig) -> tuple[int, int]:
    """(groups, groups kept) as llama.cpp needs them: keeping every group is no grouping at all, which llama.cpp
    can only express as one group (it requires kept < groups)."""
    if cfg.n_expert_groups > 1 and cfg.n_limited_groups < cfg.n_expert_groups:
        return cfg.n_expert_groups, cfg.n_limited_groups
    return 1, 1


def gguf_tensors(cfg: ModelConfig, sd: dict[str, torch.Tensor]) -> Iterator[tuple[str, str, np.ndarray]]:
    """(llama.cpp name, the gguf package's tensor kind, float32 array in llama.cpp's layout) for every tensor of
    `sd` (tinyseek names) but the MTP modules'."""
    import gguf

    H, dn, dv, r = cfg.n_heads, cfg.qk_nope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank

    def named(kind: str, a: np.ndarray, bid: str | None = None) -> tuple[str, str, np.ndarray]:
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR[kind]].format(bid=bid)
        return name + (".bias" if kind == "FFN_EXP_PROBS_B" else ".weight"), kind, a

    for key, t in sd.items():
        if key.startswith("mtp."):
            continue
        a = t.detach().to("cpu", torch.float32).numpy()
        if key in _TOP:
            yield named(_TOP[key], a)
            continue
        _, bid, rest = key.split(".", 2)
        if rest == "attn.wkv_b.weight":  # [H * (nope + v), r] -> k_b [H, r, nope] (transposed), v_b [H, v, r]
            kv = a.reshape(H, dn + dv, r)
            yield named("ATTN_K_B", np.ascontiguousarray(kv[:, :dn].transpose(0, 2, 1)), bid)
            yield named("ATTN_V_B", np.ascontiguousarray(kv[:, dn:]), bid)
        else:
            yield named(_BLOCK[rest], a, bid)


def _encode(kind: str, a: np.ndarray, dtype: str):
    """(data, ggml type) of one tensor in the file's dtype; see the module docstring for what stays f32."""
    import gguf

    T = gguf.GGMLQuantizationType
    qtype = {"f32": T.F32, "f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0}[dtype]
    if a.ndim <= 1 or kind in _KEEP_F32:
        qtype = T.F32
    elif qtype == T.Q8_0 and a.shape[-1] % 32:
        qtype = T.F16
    return gguf.quants.quantize(a, qtype), qtype


def _model_metadata(w, cfg: ModelConfig) -> None:
    """The deepseek2 hyperparameters llama.cpp reads (llama-model.cpp, `llama_model_deepseek2`)."""
    import gguf

    moe = cfg.is_moe and cfg.n_moe_layers > 0
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.dim)
    w.add_block_count(cfg.n_layers)
    w.add_feed_forward_length(cfg.inter_dim)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(1)  # absorbed MLA is MQA over the latent
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_leading_dense_block_count(cfg.n_dense_layers if moe else cfg.n_layers)
    w.add_q_lora_rank(cfg.q_lora_rank)  # 0: one wq (llama.cpp reads the key for every deepseek2 but the Lite sizes)
    w.add_kv_lora_rank(cfg.kv_lora_rank)
    w.add_key_length(cfg.kv_lora_rank + cfg.qk_rope_head_dim)
    w.add_value_length(cfg.kv_lora_rank)
    w.add_key_length_mla(cfg.qk_head_dim)
    w.add_value_length_mla(cfg.v_head_dim)
    w.add_expert_feed_forward_length(cfg.moe_inter_dim)
    w.add_expert_shared_count(cfg.n_shared_experts if moe else 0)
    if moe:
        groups, kept = _groups(cfg)
        w.add_expert_count(cfg.n_routed_experts)
        w.add_expert_used_count(cfg.n_activated_experts)
        w.add_expert_group_count(groups)
        w.add_expert_group_used_count(kept)
        w.add_expert_weights_scale(cfg.route_scale)
        w.add_expert_weights_norm(cfg.score_func == "sigmoid")
        w.add_expert_gating_func(gguf.ExpertGatingFuncType[cfg.score_func.upper()])
    w.add_rope_dimension_count(cfg.qk_rope_head_dim)
    w.add_rope_freq_base(cfg.rope_theta)
    if cfg.max_seq_len > cfg.original_seq_len and cfg.rope_factor > 1:  # YaRN, DeepSeek's condition
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(cfg.rope_factor)
        w.add_rope_scaling_orig_ctx_len(cfg.original_seq_len)
        w.add_rope_scaling_yarn_attn_factor(1.0)  # cos/sin unscaled: mscale^2 is in the softmax scale
        w.add_rope_scaling_yarn_beta_fast(cfg.beta_fast)
        w.add_rope_scaling_yarn_beta_slow(cfg.beta_slow)
        w.add_rope_scaling_yarn_log_mul(0.1 * cfg.mscale)  # llama.cpp divides by 0.1 again when loading


# ----------------------------------------------------------------------------------------------
# the tokenizer


def _check_tokenizer_json(raw: dict, where: Path) -> None:
    """tinyseek's construction exactly (see the module docstring), or a one-line error naming what differs."""
    model = raw.get("model") or {}
    want_pre = [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
    ]
    pre = raw.get("pre_tokenizer") or {}
    got_pre = [
        {k: p.get(k) for k in want} for p, want in zip(pre.get("pretokenizers") or [], want_pre) if isinstance(p, dict)
    ]
    problems = [
        ("model.type", model.get("type"), model.get("type") == "BPE"),
        ("model.byte_fallback", model.get("byte_fallback"), not model.get("byte_fallback")),
        (
            "model.continuing_subword_prefix",
            model.get("continuing_subword_prefix"),
            not model.get("continuing_subword_prefix"),
        ),
        ("model.end_of_word_suffix", model.get("end_of_word_suffix"), not model.get("end_of_word_suffix")),
        ("normalizer", raw.get("normalizer"), raw.get("normalizer") is None),
        (
            "pre_tokenizer",
            json.dumps(pre, ensure_ascii=False),
            pre.get("type") == "Sequence" and len(pre.get("pretokenizers") or []) == 2 and got_pre == want_pre,
        ),
    ]
    for field, value, ok in problems:
        if not ok:
            raise TinyseekError(
                f"{where}: {field} is {value}; GGUF export needs tinyseek's byte-level BPE (Digits one by one, then "
                "GPT-2's ByteLevel regex), the split llama.cpp's pre-tokenizer 'smollm' makes"
            )


def _vocab(tok: Tokenizer, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens by id, their types, merges) for llama.cpp; ids past the tokenizer's up to the model's vocab_size
    (an embedding row nothing encodes to) are unused placeholders."""
    import gguf

    raw = json.loads(Path(tok.path).read_text(encoding="utf-8"))
    _check_tokenizer_json(raw, Path(tok.path))
    by_id = {i: t for t, i in tok.hf.get_vocab(with_added_tokens=True).items()}
    special = {a["id"] for a in raw.get("added_tokens", []) if a.get("special")}
    added = {a["id"] for a in raw.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in by_id:
            tokens.append(by_id[i])
            kind = "CONTROL" if i in special else "USER_DEFINED" if i in added else "NORMAL"
        else:
            tokens.append(f"[PAD{i}]")
            kind = "UNUSED"
        types.append(int(gguf.TokenType[kind]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in raw["model"].get("merges", [])]
    return tokens, types, merges


def _tokenizer_metadata(w, tok: Tokenizer, vocab_size: int) -> None:
    tokens, types, merges = _vocab(tok, vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(PRE_TOKENIZER)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.bos_id)
    w.add_eos_token_id(tok.eos_id)
    w.add_pad_token_id(tok.pad_id)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(GGUF_CHAT_TEMPLATE)


# ----------------------------------------------------------------------------------------------
# the file


def write_gguf(
    cfg: ModelConfig,
    sd: dict[str, torch.Tensor],
    tokenizer_file: str | Path,
    out: str | Path,
    dtype: str = "f32",
    name: str = "tinyseek",
    source: str = "checkpoint",
) -> Path:
    """Write `sd` (tinyseek names, checked against `cfg`) and its tokenizer as one GGUF file, atomically: a bad
    input or a failed write leaves `out` as it was."""
    import gguf

    if dtype not in DTYPES:
        raise TinyseekError(f"dtype: {dtype!r} is not a GGUF export type (one of {', '.join(DTYPES)})")
    out = Path(out)
    if out.is_dir():
        raise TinyseekError(f"{out}: is a directory; give the GGUF file's path (e.g. {out / 'model.gguf'})")
    tokenizer_file = Path(tokenizer_file)
    if not tokenizer_file.is_file():
        raise TinyseekError(f"{tokenizer_file}: no tokenizer; a GGUF file carries its tokenizer, export needs one")
    cfg.validate()
    check_gguf_exportable(cfg)
    check_state_dict(meta_model(cfg).state_dict(), sd, source)
    tok = Tokenizer.load(tokenizer_file)
    if tok.vocab_size > cfg.vocab_size:
        raise TinyseekError(
            f"{tokenizer_file}: {tok.vocab_size} tokens, more than the model's vocab_size={cfg.vocab_size}"
        )
    with atomic_file(out) as tmp:
        w = gguf.GGUFWriter(tmp, arch=ARCH)
        w.add_name(name)
        w.add_file_type(_file_types()[dtype])
        if dtype == "q8_0":
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _model_metadata(w, cfg)
        _tokenizer_metadata(w, tok, cfg.vocab_size)
        for tname, kind, a in gguf_tensors(cfg, sd):
            data, qtype = _encode(kind, a, dtype)
            w.add_tensor(tname, data, raw_dtype=qtype)
        try:
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
        finally:
            w.close()
    return out


def _file_types() -> dict[str, int]:
    import gguf

    F = gguf.LlamaFileType
    return {"f32": F.ALL_F32, "f16": F.MOSTLY_F16, "bf16": F.MOSTLY_BF16, "q8_0": F.MOSTLY_Q8_0}


# ----------------------------------------------------------------------------------------------
# Ollama


def modelfile(gguf_file: str | Path, cfg: ModelConfig) -> str:
    """An Ollama Modelfile for `gguf_file`: the R1 chat format (tinyseek/r1.py) as an Ollama template, R1's
    sampling, the special tokens as stops, the model's context. Ollama adds BOS itself (the file's add_bos_token)."""
    template = (
        "{{- if .System }}{{ .System }}{{ end }}\n"
        "{{- range $i, $_ := .Messages }}\n"
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
        f'{{{{- if eq .Role "user" }}}}{USER}{{{{ .Content }}}}\n'
        f'{{{{- else if eq .Role "assistant" }}}}{ASSISTANT}{{{{ .Content }}}}'
        f"{{{{- if not $last }}}}{EOS}{{{{- end }}}}\n"
        "{{- end }}\n"
        f'{{{{- if and $last (ne .Role "assistant") }}}}{ASSISTANT}{{{{- end }}}}\n'
        "{{- end }}"
    )
    lines = [
        f"FROM ./{Path(gguf_file).name}",
        f'TEMPLATE """{template}"""',
        *(f"PARAMETER {k} {v}" for k, v in R1_SAMPLING.items()),
        f"PARAMETER num_ctx {cfg.max_seq_len}",
        *(f'PARAMETER stop "{t}"' for t in (EOS, USER, ASSISTANT, BOS)),
    ]
    return "\n".join(lines) + "\n"


def write_modelfile(gguf_file: str | Path, cfg: ModelConfig) -> Path:
    """`modelfile` written beside the GGUF file as NAME.Modelfile (`ollama create NAME -f NAME.Modelfile`)."""
    f = Path(gguf_file).with_suffix(".Modelfile")
    return write_atomic(f, modelfile(gguf_file, cfg))
