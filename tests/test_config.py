"""ModelConfig: presets, JSON/TOML round trips, one-line validation errors, --field value overrides."""

from __future__ import annotations

import dataclasses

import pytest

from tinyseek.config import PRESETS, ConfigError, ModelConfig, load_file, parse_overrides


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_every_preset_round_trips(tmp_path, name, suffix):
    cfg = ModelConfig.preset(name)
    path = tmp_path / f"model{suffix}"
    cfg.save(path)
    back = ModelConfig.load(path)
    assert back == cfg
    assert all(type(getattr(back, f.name)) is type(getattr(cfg, f.name)) for f in dataclasses.fields(cfg))


def test_presets_are_distinct_and_valid():
    cfgs = {name: ModelConfig.preset(name) for name in PRESETS}
    assert len({repr(c) for c in cfgs.values()}) == len(cfgs)
    assert (
        cfgs["tiny-dense"].is_moe is False and cfgs["nano"].n_expert_groups > 1 and cfgs["tiny-dense"].q_lora_rank == 0
    )


def _err(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    "over, field",
    [
        (dict(n_activated_experts=9), "n_activated_experts"),  # nano has 8 routed experts
        (dict(n_expert_groups=3), "n_expert_groups"),  # 3 does not divide 8
        (dict(n_limited_groups=3), "n_limited_groups"),  # more than the 2 groups
        (dict(qk_rope_head_dim=7), "qk_rope_head_dim"),
        (dict(n_dense_layers=5), "n_dense_layers"),
        (dict(score_func="relu"), "score_func"),
        (dict(mla_impl="fast"), "mla_impl"),
        (dict(dim="wide"), "dim"),  # wrong type
        (dict(rope_theta=[1]), "rope_theta"),
        (dict(dim=True), "dim"),  # a bool is not an integer
    ],
)
def test_bad_values_name_the_field(over, field):
    msg = _err(ModelConfig.preset, "nano", **over)
    assert msg.startswith(f"preset nano: {field}")


def test_unknown_field_and_preset():
    assert "unknown field 'n_experts'" in _err(ModelConfig.from_dict, {"n_experts": 4})
    assert "preset" in _err(ModelConfig.preset, "huge")


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("dim = 64\nn_layers = \n")
    msg = _err(ModelConfig.load, bad)
    assert str(bad) in msg and "line 2" in msg
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"dim": 64, "n_routed_experts": 8, "n_activated_experts": 12}')
    msg = _err(ModelConfig.load, wrong)
    assert str(wrong) in msg and "n_activated_experts" in msg
    assert "no such config file" in _err(ModelConfig.load, tmp_path / "missing.toml")


def test_overrides_parse_and_coerce(tmp_path):
    ov = parse_overrides(["--dim", "32", "--mla-impl=naive", "--rope_factor", "2.5", "--n_layers", "1_0"])
    assert ov == {"dim": "32", "mla_impl": "naive", "rope_factor": "2.5", "n_layers": "1_0"}
    cfg = ModelConfig.preset("nano", **ov)
    assert (cfg.dim, cfg.mla_impl, cfg.rope_factor, cfg.n_layers) == (32, "naive", 2.5, 10)
    assert parse_overrides(["--flag"]) == {"flag": "true"}
    assert "unexpected argument" in _err(parse_overrides, ["dim", "32"])
    path = tmp_path / "m.toml"
    ModelConfig.preset("nano").save(path)
    assert load_file(ModelConfig, path, {"dim": "128"}).dim == 128


def test_derived_fields():
    cfg = ModelConfig.preset("deepseek-v3-671b")
    assert cfg.qk_head_dim == 192 and cfg.latent_cache_dim == 576
    assert cfg.n_moe_layers == 58 and not cfg.layer_is_moe(2) and cfg.layer_is_moe(3)
    # YaRN's mscale^2 enters the softmax scale only when the context is extended (DeepSeek's rule)
    m = 0.1 * 1.0 * __import__("math").log(40.0) + 1.0
    assert cfg.softmax_scale == pytest.approx(192**-0.5 * m * m)
    assert ModelConfig.preset("deepseek-v3-671b", max_seq_len=4096).softmax_scale == pytest.approx(192**-0.5)
