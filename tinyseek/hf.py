"""The mapping between tinyseek and transformers' native `DeepseekV3ForCausalLM`: configs and state dicts.

Pure functions on dicts and tensors (no remote code, nothing read or written), like torchtitan's state-dict
adapters; reading and writing the directories (`tinyseek export` / `import`) is tinyseek/checkpoint.py's.

An exported directory is what `DeepseekV3ForCausalLM.save_pretrained` itself writes: `config.json`
(model_type deepseek_v3) and one `model.safetensors` with the routed experts split per expert,
`model.layers.{i}.mlp.experts.{j}.{gate,up,down}_proj.weight` (DeepSeek's own checkpoint layout;
transformers fuses them into 3D `gate_up_proj` / `down_proj` while loading). Import accepts those names
and the fused in-memory ones.

The mapping, field by field (tinyseek -> transformers):

    q_lora_rank 0              -> q_lora_rank None (one `q_proj` instead of q_a_proj/q_a_layernorm/q_b_proj)
    RoPE on interleaved pairs  -> rope_interleave True (same weights, no permutation); importing a model with
                                  rope_interleave False permutes its RoPE rows into pairs (`_interleave_rope`)
    YaRN (max_seq_len > original_seq_len and rope_factor > 1, DeepSeek's condition)
                               -> rope_parameters {rope_type yarn, factor, original_max_position_embeddings,
                                  beta_fast, beta_slow, mscale = mscale_all_dim = mscale, attention_factor 1}
                                  (mscale_all_dim gives the softmax scale's mscale^2; cos/sin stay unscaled)
    n_expert_groups / n_limited_groups -> n_group / topk_group
    route_scale                -> routed_scaling_factor;   sigmoid weights normalised -> norm_topk_prob True
    n_dense_layers             -> first_k_dense_replace (n_layers for a dense model, n_routed_experts 0)
    ffn.gate.bias (selection only) -> mlp.gate.e_score_correction_bias
    head not tied              -> tie_word_embeddings False
    score_func softmax         -> not representable: transformers' router is sigmoid only (export refuses)

What transformers has no field for (mtp_depth, mtp_loss_weight, bias_update_speed, seq_aux_alpha, the
implementation switches, and any field the mapping above cannot carry, e.g. YaRN knobs of a model whose
context is not extended) is stored in config.json under the key `tinyseek`, so import gives back the
exact ModelConfig.

MTP modules travel in the same safetensors file. transformers silently drops checkpoint keys that match
`model\\.layers\\.61` (its `_keys_to_ignore_on_load_unexpected`: the MTP layer of DeepSeek-V3's own 61-layer
checkpoint) and warns about every other unknown key, so MTP depth k is written under
`model.layers.61.mtp.{k}.` with transformers' own sub-names (enorm, hnorm, eh_proj, shared_head.norm, and
the block's input_layernorm/self_attn/mlp/post_attention_layernorm). A stock load ignores them without a
warning; `tinyseek import` reads them back. Import also understands DeepSeek's layout
(`model.layers.{n_layers + k}.*`, with its redundant embed_tokens/shared_head.head copies dropped).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from tinyseek.config import ConfigError, ModelConfig, to_dict
from tinyseek.errors import TinyseekError

MTP_PREFIX = "model.layers.61.mtp"  # + ".{k}." ; see the module docstring

# fields transformers' config has no place for: always stored under config.json's "tinyseek" key
TINYSEEK_ONLY = ("mtp_depth", "mtp_loss_weight", "bias_update_speed", "seq_aux_alpha", "mla_impl", "moe_impl")

TOP_NAMES = {
    "embed.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "head.weight": "lm_head.weight",
}

# a block's tensors, tinyseek suffix -> transformers suffix (routed experts are handled apart: 3D <-> per expert)
BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn.wq.weight": "self_attn.q_proj.weight",
    "attn.wq_a.weight": "self_attn.q_a_proj.weight",
    "attn.q_norm.weight": "self_attn.q_a_layernorm.weight",
    "attn.wq_b.weight": "self_attn.q_b_proj.weight",
    "attn.wkv_a.weight": "self_attn.kv_a_proj_with_mqa.weight",
    "attn.kv_norm.weight": "self_attn.kv_a_layernorm.weight",
    "attn.wkv_b.weight": "self_attn.kv_b_proj.weight",
    "attn.wo.weight": "self_attn.o_proj.weight",
    "ffn.w1.weight": "mlp.gate_proj.weight",
    "ffn.w3.weight": "mlp.up_proj.weight",
    "ffn.w2.weight": "mlp.down_proj.weight",
    "ffn.gate.weight": "mlp.gate.weight",
    "ffn.gate.bias": "mlp.gate.e_score_correction_bias",
    "ffn.shared.w1.weight": "mlp.shared_experts.gate_proj.weight",
    "ffn.shared.w3.weight": "mlp.shared_experts.up_proj.weight",
    "ffn.shared.w2.weight": "mlp.shared_experts.down_proj.weight",
}
EXPERT_NAMES = {
    "w1": "gate_proj",
    "w3": "up_proj",
    "w2": "down_proj",
}  # ffn.experts.w1 [E, F, D] <-> mlp.experts.{j}.gate_proj.weight [F, D]
MTP_NAMES = {
    "enorm.weight": "enorm.weight",
    "hnorm.weight": "hnorm.weight",
    "eh_proj.weight": "eh_proj.weight",
    "norm.weight": "shared_head.norm.weight",
}

_HF_BLOCK = {v: k for k, v in BLOCK_NAMES.items()}
_HF_EXPERT = {v: k for k, v in EXPERT_NAMES.items()}
_HF_MTP = {v: k for k, v in MTP_NAMES.items()}
_HF_TOP = {v: k for k, v in TOP_NAMES.items()}


# ----------------------------------------------------------------------------------------------
# configs


def _yarn_on(cfg: ModelConfig) -> bool:
    return cfg.max_seq_len > cfg.original_seq_len and cfg.rope_factor > 1


def check_exportable(cfg: ModelConfig) -> None:
    """One-line error for what transformers' DeepseekV3 cannot express."""
    if cfg.is_moe and cfg.n_moe_layers > 0:
        if cfg.score_func != "sigmoid":
            raise ConfigError(
                f"score_func: transformers' DeepseekV3 router is sigmoid only, cannot export {cfg.score_func!r}"
            )
        if cfg.n_routed_experts // cfg.n_expert_groups < 2:
            raise ConfigError(
                f"n_expert_groups: transformers scores a group by its top-2 experts, so each group needs >= 2 experts "
                f"(got {cfg.n_routed_experts} experts in {cfg.n_expert_groups} groups)"
            )
        if cfg.n_shared_experts == 0:
            raise ConfigError(
                "n_shared_experts: transformers' DeepseekV3 MoE always has shared experts, cannot export 0"
            )


def _rope_to_hf(cfg: ModelConfig) -> dict:
    if not _yarn_on(cfg):
        return {"rope_type": "default", "rope_theta": cfg.rope_theta}
    return {
        "rope_type": "yarn",
        "rope_theta": cfg.rope_theta,
        "factor": cfg.rope_factor,
        "original_max_position_embeddings": cfg.original_seq_len,
        "beta_fast": cfg.beta_fast,
        "beta_slow": cfg.beta_slow,
        "mscale": cfg.mscale,
        "mscale_all_dim": cfg.mscale,
        "attention_factor": 1.0,
    }


def _hf_fields(cfg: ModelConfig) -> dict:
    """The DeepseekV3Config fields of `cfg` (without the `tinyseek` extras)."""
    return dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.inter_dim,
        moe_intermediate_size=cfg.moe_inter_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        n_shared_experts=cfg.n_shared_experts,
        n_routed_experts=cfg.n_routed_experts,
        routed_scaling_factor=cfg.route_scale,
        kv_lora_rank=cfg.kv_lora_rank,
        q_lora_rank=cfg.q_lora_rank or None,
        qk_rope_head_dim=cfg.qk_rope_head_dim,
        v_head_dim=cfg.v_head_dim,
        qk_nope_head_dim=cfg.qk_nope_head_dim,
        n_group=cfg.n_expert_groups,
        topk_group=cfg.n_limited_groups,
        num_experts_per_tok=cfg.n_activated_experts,
        first_k_dense_replace=cfg.n_dense_layers if cfg.is_moe else cfg.n_layers,
        norm_topk_prob=True,
        hidden_act="silu",
        max_position_embeddings=cfg.max_seq_len,
        initializer_range=cfg.init_std,
        rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=False,
        rope_parameters=_rope_to_hf(cfg),
        rope_interleave=True,
        attention_bias=False,
        num_mtp_layers=0,  # transformers' own MTP drafting looks for layer 61 only; ours are read by tinyseek import
    )


def _base_from_hf(h: dict, where: str) -> dict:
    """ModelConfig fields that transformers' config fields determine (a partial dict), with checks."""

    def get(name: str, default: Any = None) -> Any:
        return h.get(name, default)

    def bad(name: str, msg: str) -> TinyseekError:
        return ConfigError(f"{where}: {name}: {msg} (got {get(name)!r})")

    if get("model_type") != "deepseek_v3":
        raise bad("model_type", "not a transformers DeepseekV3 config")
    if get("hidden_act", "silu") != "silu":
        raise bad("hidden_act", "tinyseek's MLPs are SwiGLU (silu)")
    if get("attention_bias", False):
        raise bad("attention_bias", "tinyseek's MLA has no projection biases")
    H = get("num_attention_heads")
    kvh = get("num_key_value_heads") or H
    if not isinstance(kvh, int) or kvh <= 0 or H // kvh != 1:
        raise bad("num_key_value_heads", f"MLA has one key per head; must be num_attention_heads={H}")
    L = get("num_hidden_layers")
    k_dense = get("first_k_dense_replace")
    k_dense = L if k_dense is None else min(k_dense, L)
    moe = k_dense < L and (get("n_routed_experts") or 0) > 0
    if moe and not get("norm_topk_prob", False):
        raise bad("norm_topk_prob", "tinyseek normalises the sigmoid router's top-k weights")
    d = dict(
        vocab_size=get("vocab_size"),
        dim=get("hidden_size"),
        n_layers=L,
        n_heads=H,
        max_seq_len=get("max_position_embeddings"),
        norm_eps=get("rms_norm_eps"),
        init_std=get("initializer_range"),
        q_lora_rank=get("q_lora_rank") or 0,
        kv_lora_rank=get("kv_lora_rank"),
        qk_nope_head_dim=get("qk_nope_head_dim"),
        qk_rope_head_dim=get("qk_rope_head_dim"),
        v_head_dim=get("v_head_dim"),
        inter_dim=get("intermediate_size"),
        n_dense_layers=k_dense,
    )
    if moe:
        d.update(
            moe_inter_dim=get("moe_intermediate_size"),
            n_routed_experts=get("n_routed_experts"),
            n_shared_experts=get("n_shared_experts"),
            n_activated_experts=get("num_experts_per_tok"),
            n_expert_groups=get("n_group") or 1,
            n_limited_groups=get("topk_group") or 1,
            route_scale=get("routed_scaling_factor"),
            score_func="sigmoid",
        )
    else:
        d.update(n_routed_experts=0, n_shared_experts=0, n_activated_experts=0)
    rope = dict(get("rope_parameters") or get("rope_scaling") or {})
    rtype = rope.get("rope_type", rope.get("type", "default"))
    d["rope_theta"] = rope.get("rope_theta", get("rope_theta", 10000.0))
    if rtype == "yarn":
        orig = rope.get("original_max_position_embeddings") or d["max_seq_len"]
        factor = rope.get("factor") or d["max_seq_len"] / orig
        ms, ms_all = rope.get("mscale"), rope.get("mscale_all_dim")
        af = rope.get("attention_factor")
        if af is None:  # transformers' rule; tinyseek (as DeepSeek) never rescales cos/sin
            af = 1.0 if (ms and ms_all and ms == ms_all) or factor <= 1 else None
        if af != 1.0:
            raise ConfigError(
                f"{where}: rope_parameters.attention_factor: tinyseek needs mscale == mscale_all_dim (cos/sin "
                f"unscaled), got mscale={ms!r}, mscale_all_dim={ms_all!r}, "
                f"attention_factor={rope.get('attention_factor')!r}"
            )
        if not (d["max_seq_len"] > orig and factor > 1):
            raise ConfigError(
                f"{where}: rope_parameters: YaRN applies only when max_position_embeddings ({d['max_seq_len']}) > "
                f"original_max_position_embeddings ({orig}) and factor ({factor}) > 1"
            )
        d.update(
            rope_factor=factor,
            original_seq_len=orig,
            beta_fast=rope.get("beta_fast") or 32,
            beta_slow=rope.get("beta_slow") or 1,
            mscale=ms_all or 0.0,
        )
    elif rtype != "default":
        raise ConfigError(f"{where}: rope_parameters.rope_type: {rtype!r} not supported (default or yarn)")
    return d


def to_hf_config(
    cfg: ModelConfig,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    dtype: torch.dtype = torch.float32,
):
    """A `transformers.DeepseekV3Config` for `cfg`, with the tinyseek-only fields under `.tinyseek`."""
    from transformers import DeepseekV3Config

    cfg.validate()
    check_exportable(cfg)
    fields = _hf_fields(cfg)
    base = _base_from_hf({**fields, "model_type": "deepseek_v3"}, "config")
    defaults = to_dict(ModelConfig())
    extras = {k: v for k, v in to_dict(cfg).items() if k in TINYSEEK_ONLY or base.get(k, defaults[k]) != v}
    hf = DeepseekV3Config(
        **fields, bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id, tinyseek=extras
    )
    hf.architectures = ["DeepseekV3ForCausalLM"]
    hf.dtype = dtype
    return hf


def from_hf_config(hf, where: str = "config", mtp_depth: int | None = None) -> ModelConfig:
    """A ModelConfig from a transformers DeepseekV3 config (object or config.json dict).

    The `tinyseek` key, when present, restores the fields transformers has no place for; otherwise
    `mtp_depth` (the MTP modules found in the weights) and the defaults fill them in."""
    h = hf if isinstance(hf, dict) else hf.to_dict()
    d = _base_from_hf(h, where)
    extras = h.get("tinyseek") or {}
    if not isinstance(extras, dict):
        raise ConfigError(f"{where}: tinyseek: expected a table, got {extras!r}")
    if "mtp_depth" not in extras and mtp_depth is not None:
        d["mtp_depth"] = mtp_depth
    return ModelConfig.from_dict({**d, **extras}, where=where)


def hf_config_from_json(raw: Any, where: str = "config", weight_keys: list[str] | None = None) -> ModelConfig:
    """ModelConfig of a transformers DeepseekV3 config.json (parsed), with transformers' defaults for the
    fields it leaves out; `weight_keys` (the checkpoint's tensor names) give the MTP depth of a file
    without the `tinyseek` key."""
    if not isinstance(raw, dict) or raw.get("model_type") != "deepseek_v3":
        raise ConfigError(
            f"{where}: model_type: not a transformers DeepseekV3 config (got "
            f"{raw.get('model_type') if isinstance(raw, dict) else raw!r})"
        )
    # a field config.json leaves out means what transformers would build: its DeepseekV3Config default
    from transformers import DeepseekV3Config

    defaults = DeepseekV3Config().to_dict()
    if "rope_parameters" not in raw:  # old files say rope_scaling / rope_theta instead
        defaults.pop("rope_parameters", None)
    h = {**defaults, **raw}
    depth = None
    if weight_keys is not None and "tinyseek" not in h:  # count the MTP modules the weights hold
        keys, L = set(weight_keys), h.get("num_hidden_layers", 0)
        depth = 0
        while f"model.layers.{L + depth}.eh_proj.weight" in keys or f"{MTP_PREFIX}.{depth}.eh_proj.weight" in keys:
            depth += 1
    return from_hf_config(h, where=where, mtp_depth=depth)


# ----------------------------------------------------------------------------------------------
# state dicts


def to_hf_state_dict(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """tinyseek names -> transformers names; routed experts [E, ...] split into per-expert tensors (copies)."""
    out: dict[str, torch.Tensor] = {}

    def block(rest: str, prefix: str, v: torch.Tensor, key: str) -> None:
        if rest in BLOCK_NAMES:
            out[prefix + BLOCK_NAMES[rest]] = v
            return
        m = re.fullmatch(r"ffn\.experts\.(w[123])", rest)
        if m is None:
            raise TinyseekError(f"unexpected tensor {key!r}")
        proj = EXPERT_NAMES[m.group(1)]
        for j in range(v.shape[0]):
            out[f"{prefix}mlp.experts.{j}.{proj}.weight"] = v[
                j
            ].clone()  # own storage: safetensors refuses shared views

    for key, v in sd.items():
        if key in TOP_NAMES:
            out[TOP_NAMES[key]] = v
        elif m := re.fullmatch(r"layers\.(\d+)\.(.+)", key):
            block(m.group(2), f"model.layers.{m.group(1)}.", v, key)
        elif m := re.fullmatch(r"mtp\.(\d+)\.block\.(.+)", key):
            block(m.group(2), f"{MTP_PREFIX}.{m.group(1)}.", v, key)
        elif (m := re.fullmatch(r"mtp\.(\d+)\.(.+)", key)) and m.group(2) in MTP_NAMES:
            out[f"{MTP_PREFIX}.{m.group(1)}.{MTP_NAMES[m.group(2)]}"] = v
        else:
            raise TinyseekError(f"unexpected tensor {key!r}")
    return out


def _canonical_hf(sd: dict[str, torch.Tensor], cfg: ModelConfig, tied: bool = False) -> dict[str, torch.Tensor]:
    """Rename what transformers may hand us into the names `to_hf_state_dict` writes.

    Fused in-memory experts (`mlp.experts.gate_up_proj` [E, 2F, D], `mlp.experts.down_proj` [E, D, F]) are split
    per expert; DeepSeek-layout MTP (`model.layers.{n_layers + k}.*`) moves under MTP_PREFIX, its copies of the
    embedding and head dropped; stale `rotary_emb.inv_freq` buffers are dropped."""
    out: dict[str, torch.Tensor] = {}
    F_ = cfg.moe_inter_dim
    for key, v in sd.items():
        if key.endswith("rotary_emb.inv_freq"):
            continue
        if (m := re.fullmatch(r"model\.layers\.(\d+)\.(.+)", key)) and int(m.group(1)) >= cfg.n_layers:
            k = int(m.group(1)) - cfg.n_layers
            if m.group(2) in ("embed_tokens.weight", "shared_head.head.weight"):
                continue
            key = f"{MTP_PREFIX}.{k}.{m.group(2)}" if not m.group(2).startswith("mtp.") else key
        if m := re.fullmatch(r"(.+\.)mlp\.experts\.gate_up_proj", key):
            if v.dim() != 3 or v.shape[1] != 2 * F_:
                raise TinyseekError(
                    f"tensor {key!r} has shape {tuple(v.shape)}, the config expects [{cfg.n_routed_experts}, "
                    f"{2 * F_}, {cfg.dim}]"
                )
            for j in range(v.shape[0]):
                out[f"{m.group(1)}mlp.experts.{j}.gate_proj.weight"] = v[j, :F_]
                out[f"{m.group(1)}mlp.experts.{j}.up_proj.weight"] = v[j, F_:]
        elif m := re.fullmatch(r"(.+\.)mlp\.experts\.down_proj", key):
            for j in range(v.shape[0]):
                out[f"{m.group(1)}mlp.experts.{j}.down_proj.weight"] = v[j]
        else:
            out[key] = v
    if tied and "lm_head.weight" not in out and "model.embed_tokens.weight" in out:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out


def _interleave_rope(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Rows of the RoPE part of q (per head) and of the shared k_pe, from rotate-half order to pairs.

    With rope_interleave False, transformers rotates dims (i, i + d/2) by frequency i; tinyseek rotates
    (2i, 2i + 1). Moving row i to 2i and row i + d/2 to 2i + 1 makes tinyseek's rotation produce exactly
    transformers' output (tinyseek writes the rotated pair halves de-interleaved), for queries and keys."""
    dr, dn, H, r = cfg.qk_rope_head_dim, cfg.qk_nope_head_dim, cfg.n_heads, cfg.kv_lora_rank
    perm = torch.stack([torch.arange(dr // 2), torch.arange(dr // 2) + dr // 2], dim=1).flatten()
    out = dict(sd)
    for key, w in sd.items():
        if key.endswith(("self_attn.q_proj.weight", "self_attn.q_b_proj.weight")):
            w = w.view(H, dn + dr, -1)
            out[key] = torch.cat([w[:, :dn], w[:, dn:][:, perm]], dim=1).reshape(H * (dn + dr), -1)
        elif key.endswith("self_attn.kv_a_proj_with_mqa.weight"):
            out[key] = torch.cat([w[:r], w[r:][perm]], dim=0)
    return out


def from_hf_state_dict(
    sd: dict[str, torch.Tensor],
    cfg: ModelConfig,
    source: str = "state dict",
    tied: bool = False,
    rope_interleave: bool = True,
) -> dict[str, torch.Tensor]:
    """transformers names (per-expert or fused) -> tinyseek names, checked tensor by tensor against `cfg`.

    A missing, unexpected or misshaped tensor raises a one-line TinyseekError naming it (transformers' name)."""
    got = _canonical_hf(sd, cfg, tied)
    check_state_dict(expected_hf_shapes(cfg), got, source)
    if not rope_interleave:
        got = _interleave_rope(got, cfg)
    out: dict[str, torch.Tensor] = {}
    experts: dict[tuple[str, str], dict[int, torch.Tensor]] = {}

    def block(rest: str, prefix: str, v: torch.Tensor) -> None:
        if m := re.fullmatch(r"mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight", rest):
            experts.setdefault((prefix, _HF_EXPERT[m.group(2)]), {})[int(m.group(1))] = v
        else:
            out[prefix + _HF_BLOCK[rest]] = v

    for key, v in got.items():
        if key in _HF_TOP:
            out[_HF_TOP[key]] = v
        elif m := re.fullmatch(rf"{re.escape(MTP_PREFIX)}\.(\d+)\.(.+)", key):
            if m.group(2) in _HF_MTP:
                out[f"mtp.{m.group(1)}.{_HF_MTP[m.group(2)]}"] = v
            else:
                block(m.group(2), f"mtp.{m.group(1)}.block.", v)
        else:
            m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", key)
            block(m.group(2), f"layers.{m.group(1)}.", v)
    for (prefix, w), per in experts.items():
        out[f"{prefix}ffn.experts.{w}"] = torch.stack([per[j] for j in range(len(per))])
    return out


def check_state_dict(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor], source: str) -> None:
    """One-line error naming the first missing, unexpected or misshaped tensor."""
    missing = [k for k in expected if k not in got]
    if missing:
        raise TinyseekError(
            f"{source}: missing tensor {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    extra = [k for k in got if k not in expected]
    if extra:
        raise TinyseekError(
            f"{source}: unexpected tensor {extra[0]!r}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    for k, v in expected.items():
        if tuple(got[k].shape) != tuple(v.shape):
            raise TinyseekError(
                f"{source}: tensor {k!r} has shape {tuple(got[k].shape)}, the config expects {tuple(v.shape)}"
            )


def meta_model(cfg: ModelConfig):
    """The model on the meta device: its state dict gives names and shapes without allocating anything."""
    from tinyseek.model import Transformer

    # normal_ on meta tensors imports torch._dynamo (seconds) to fill values that do not exist: skip it
    normal_ = torch.nn.init.normal_
    torch.nn.init.normal_ = lambda t, *args, **kwargs: t
    try:
        with torch.device("meta"):
            return Transformer(cfg)
    finally:
        torch.nn.init.normal_ = normal_


def expected_hf_shapes(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """transformers name -> a meta tensor of the right shape, for every tensor an export of `cfg` holds."""
    return to_hf_state_dict(meta_model(cfg).state_dict(), cfg)
