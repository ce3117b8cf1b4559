"""`tinyseek demo --quick`: every stage runs and writes its outputs, the report agrees with the stages' files,
and a demo killed mid-stage resumes to exactly the numbers of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinyseek.report.run import read_metrics

STAGE_OUTPUTS = {  # stage -> files it must leave
    "tasks": ["sft.jsonl", "rl.jsonl", "distill.jsonl", "test.jsonl", "corpus.txt"],
    "tokenizer": ["tokenizer.json"],
    "pretrain": ["final/model.safetensors", "final/tokenizer.json", "metrics.jsonl", "summary.json", "config.toml"],
    "sft": ["final/model.safetensors", "metrics.jsonl", "summary.json"],
    "eval-sft": ["eval.json"],
    "grpo": ["final/model.safetensors", "metrics.jsonl", "summary.json"],
    "eval-grpo": ["eval.json"],
    "sft-control": ["final/model.safetensors", "metrics.jsonl", "summary.json"],
    "eval-sft-control": ["eval.json"],
    "grpo-after-control": ["final/model.safetensors", "metrics.jsonl", "summary.json"],
    "eval-grpo-after-control": ["eval.json"],
    "sft-more": ["final/model.safetensors", "metrics.jsonl", "summary.json"],
    "eval-sft-more": ["eval.json"],
    "sample": ["sft.jsonl"],
    "distill": ["final/model.safetensors", "metrics.jsonl", "summary.json", "teacher_topk.safetensors"],
    "eval-student": ["eval.json"],
}


def _demo(out: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tinyseek.cli", "demo", "--quick", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        **popen,
    )


def _finish(p: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-3000:]
    return out


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("demo") / "run"
    return run, _finish(_demo(run))


def test_every_stage_writes_its_outputs_and_the_card_is_printed(demo_run):
    run, console = demo_run
    for stage, files in STAGE_OUTPUTS.items():
        assert (run / stage / "stage.json").is_file(), stage
        for f in files:
            assert (run / stage / f).is_file(), f"{stage}/{f}"
    for f in ("report.json", "report.md", "accuracy.png", "losses.png", "rl.png", "expert_load.png"):
        assert (run / "report" / f).is_file(), f
    assert "report card:" in console and "DeepSeek-V3 (published)" in console


def test_report_numbers_agree_with_metrics_and_eval_files(demo_run):
    run, _ = demo_run
    rep = json.loads((run / "report" / "report.json").read_text())
    ev = {e["stage"]: e for e in rep["evals"]}
    assert set(ev) == {f"eval-{s}" for s in ("sft", "grpo", "sft-control", "grpo-after-control", "sft-more", "student")}
    for name, e in ev.items():
        src = json.loads((run / name / "eval.json").read_text())
        K = src["samples"]
        assert e["pass@1"] == src["pass@1"]["value"] and e["pass@1_ci95"] == src["pass@1"]["ci95"]
        assert e["cons@k"] == src[f"cons@{K}"]["value"]
        assert e["greedy"] == src["greedy"]["pass@1"]["value"]
        assert e["n"] == src["n_problems"] == len((run / "tasks" / "test.jsonl").read_text().splitlines())
        # pass@1 is the mean of the per-problem correctness the eval recorded
        per = [sum(c or 0 for c in p["correct"]) / K for p in src["problems"]]
        assert e["pass@1"] == pytest.approx(sum(per) / len(per))
    st = {r["name"]: r for r in rep["stages"]}
    for name in ("pretrain", "sft", "grpo", "sft-control", "grpo-after-control", "sft-more", "distill"):
        metrics = read_metrics(run / name / "metrics.jsonl")
        summary = json.loads((run / name / "summary.json").read_text())
        assert st[name]["final_loss"] == metrics[-1]["loss"]
        assert st[name]["steps"] == summary["steps"] == metrics[-1]["step"]
        assert st[name]["tokens"] == summary["tokens"] == sum(m["tokens"] for m in metrics)
    grpo = read_metrics(run / "grpo" / "metrics.jsonl")
    assert rep["rl"]["reward"]["last"] == grpo[-1]["reward"]
    comp = {c["stage"]: c for c in rep["comparisons"]}
    assert (
        comp["grpo"]["parent"] == "sft"
        and comp["distill"]["parent"] == "grpo"
        and comp["sft-control"]["parent"] == "sft"
        and comp["grpo-after-control"]["parent"] == "sft-control"
        and comp["sft-more"]["parent"] == "sft-control"
    )
    # R1's order is read against more SFT from the same start, at (about) the same compute
    sib = {(x["a"], x["b"]) for x in rep["siblings"]}
    assert ("grpo-after-control", "sft-more") in sib or ("sft-more", "grpo-after-control") in sib
    # the held-out RL curve of both GRPO stages, step 0 being the start's evaluation
    assert {c["stage"] for c in rep["rl_curves"]} == {"grpo", "grpo-after-control"}
    assert comp["distill"]["active_params_ratio"] <= 1 / 3


def _comparable(run: Path) -> dict:
    """The report's numbers with the wall-clock ones (which no two runs share) left out."""
    rep = json.loads((run / "report" / "report.json").read_text())
    stages = [
        {k: r.get(k) for k in ("name", "steps", "tokens", "flops", "final_loss", "final_step")} for r in rep["stages"]
    ]
    return {"evals": rep["evals"], "comparisons": rep["comparisons"], "rl": rep["rl"], "stages": stages}


def _kill_when(p: subprocess.Popen, path: Path, timeout: float = 300) -> None:
    t0 = time.time()
    while not path.exists():
        assert p.poll() is None, f"the demo ended before {path} appeared:\n{p.communicate()[0][-3000:]}"
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # the whole process group: nothing of the run survives the kill
    p.wait()


@pytest.mark.slow
def test_a_killed_demo_resumes_to_the_same_numbers(demo_run, tmp_path):
    run, _ = demo_run
    other = tmp_path / "run"
    # killed mid-pretrain (after its first checkpoint), then mid-GRPO, then left to finish
    _kill_when(_demo(other, start_new_session=True), other / "pretrain" / "checkpoints" / "step-3")
    assert not (other / "pretrain" / "stage.json").exists()
    _kill_when(_demo(other, start_new_session=True), other / "grpo" / "checkpoints" / "step-2")
    assert not (other / "grpo" / "stage.json").exists()
    console = _finish(_demo(other))
    assert "complete, skipped" in console and "resuming" in console
    assert _comparable(other) == _comparable(run)
