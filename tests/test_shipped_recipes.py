"""Every shipped recipe runs, in its quick form (`[stage.quick]` tables), to the end: R1 and R1-Zero through
`tinyseek run --quick` (each report.md held to its report.json), the two stage configs through their commands
with a few steps. (demo.toml runs in tests/test_demo.py and tests/test_wheel.py; smollm2-grpo.toml in
tests/test_grpo.py.) Each takes about 10 s on one core."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_report import check_md_against_json

from tinyseek.recipe import load_recipe, recipes_dir

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _tinyseek(args, cwd):
    r = subprocess.run(
        [sys.executable, "-m", "tinyseek.cli", *args], env=ENV, cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
@pytest.mark.parametrize("name", ["r1", "r1-zero"])
def test_recipe_runs_quick_to_the_report(name, tmp_path):
    out = tmp_path / name
    _tinyseek(["run", name, "--quick", "--out", str(out)], tmp_path)
    recipe = load_recipe(recipes_dir() / f"{name}.toml", out, quick=True)
    for stage in recipe.stages:
        assert json.loads((out / stage.name / "stage.json").read_text())["name"] == stage.name
    kinds = {s.kind: s.name for s in recipe.stages}
    grpo_stage = next(s for s in recipe.stages if s.kind == "grpo")
    grpo = [json.loads(x) for x in (out / kinds["grpo"] / "metrics.jsonl").read_text().splitlines()]
    assert len(grpo) == grpo_stage.fields["max_steps"] and all(m["rollout_tok_s"] > 0 for m in grpo)
    assert (out / kinds["grpo"] / "final" / "model.safetensors").is_file()
    rep = json.loads((out / "report" / "report.json").read_text())
    assert rep["totals"]["rollout_tokens"] > 0
    assert check_md_against_json((out / "report" / "report.md").read_text(), rep) > 20
    if name == "r1":  # rejection sampling, SFT on its output, and the R1-protocol evaluation
        assert json.loads((out / "sample" / "stats.json").read_text())["completions"] == 8 * 2
        ev = json.loads((out / "eval" / "eval.json").read_text())
        assert ev["params"]["temperature"] == 0.6 and ev["params"]["top_p"] == 0.95
        assert ev["pass@1"]["value"] is not None and rep["evals"][0]["pass@1"] == ev["pass@1"]["value"]
    if name == "r1-zero":  # RL straight from the base: no SFT stage, the accuracy reward alone, R1's figures reported
        assert "sft" not in kinds and grpo_stage.fields["rewards"] == ["accuracy"]
        assert grpo_stage.fields["prompt_template"] == "r1-zero"
        zero = rep["r1_zero"]
        assert [p["step"] for p in zero["curve"]] == [m["step"] for m in grpo]
        assert {"len_right", "len_wrong", "share_reasons", "share_verifies"} <= set(grpo[-1])
        assert {e["set"] for e in zero["evals"]} == {"test", "ood"} and zero["aha"][0]["step"] == 0
        assert (out / "report" / "r1_zero.png").is_file()


@pytest.mark.slow
def test_stage_configs_run_shrunk(tmp_path):
    """recipes/pretrain-tiny.toml, then recipes/sft-tiny.toml from its checkpoint, each cut to 2 steps."""
    small = ["--max-steps", "2", "--batch-size", "4", "--seq-len", "64", "--eval-every", "0", "--ckpt-every", "0"]
    pre = tmp_path / "pretrain-tiny"
    _tinyseek(
        ["pretrain", "--config", "recipes/pretrain-tiny.toml", *small, "--tasks", "addition=100", "--out", str(pre)],
        ROOT,
    )
    sft = ["sft", "--config", "recipes/sft-tiny.toml", *small, "--init", str(pre / "final")]
    _tinyseek([*sft, "--tasks", "addition=50", "--eval-tasks", "addition=8", "--out", str(tmp_path / "sft")], ROOT)
    assert (tmp_path / "sft" / "final" / "model.safetensors").is_file()
