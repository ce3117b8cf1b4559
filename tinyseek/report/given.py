"""What each stage was given to learn from, in words, read from its resolved fields and the files they name.

Why: a demo where RL "wins" must say that RL saw answers only, while SFT and distillation saw whole worked
traces; otherwise the comparison reads as stronger than it is. One function a stage kind, each taking the
stage's fields, the stage (its dict from `run.load_run`) and the run directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tinyseek.report.run import count_lines, read_json, short_path


def _files(f: dict, key: str) -> list:
    return f.get(key) if isinstance(f.get(key), list) else ([f[key]] if f.get(key) else [])


def _rows(p: Any, run: Path) -> str:
    return f"{short_path(p, run)} ({count_lines(p) if count_lines(p) is not None else '?'} rows)"


def _counted(f: dict, key: str, run: Path) -> str:
    return ", ".join(_rows(p, run) for p in _files(f, key))


def _tasks(f: dict, stage: dict, run: Path) -> str:
    roles = read_json(stage["dir"] / "roles.json")
    if roles:  # each role's own slice of the problems (one hash decides every problem's role)
        parts = []
        for k, r in roles.items():
            n = r.get("problems", r.get("documents"))
            what = "documents" if "documents" in r else "problems"
            where = r["part"] if isinstance(r["part"], str) else f"slice [{r['part'][0]:.2f}, {r['part'][1]:.2f})"
            parts.append(f"{k} {n} {what} ({where})")
        return f"tasks {f.get('tasks')}, disjoint problem sets: " + "; ".join(parts)
    sp = ", ".join(f"{k} {v}" for k, v in (f.get("splits") or {}).items())
    return f"tasks {f.get('tasks')}: train splits {sp}; {f.get('test')} held-out; corpus {f.get('corpus') or {}}"


def _tokenizer(f: dict, stage: dict, run: Path) -> str:
    return f"BPE on {f.get('corpus') or f.get('tasks')}, vocab_size {f.get('vocab_size')}"


def _pretrain(f: dict, stage: dict, run: Path) -> str:
    src = _counted(f, "text_files", run) or ""
    steps = f"{f.get('max_steps')} steps x {f.get('batch_size')} x {f.get('seq_len')} tokens"
    return f"next-token + MTP on {src or f.get('tasks')}, {steps}"


def _sft(f: dict, stage: dict, run: Path) -> str:
    done = read_json(stage["dir"] / "summary.json") or {}
    steps = f"{f.get('max_steps')} steps x {f.get('batch_size')}"
    if f.get("stop_accuracy") is not None:  # a cold start that ends at an accuracy, not at a step count
        rule = f"greedy accuracy {f['stop_accuracy']:g} on {short_path(f.get('stop_data'), run)}"
        steps = f"up to {steps}, stopping at {rule}"
        if done.get("stopped_early"):
            steps += f" (reached at step {done.get('steps')})"
    return f"worked traces {_counted(f, 'data', run)}, {steps}"


def _prm(f: dict, stage: dict, run: Path) -> str:
    return (
        f"traces {_counted(f, 'data', run) or f.get('task')} from {short_path(f.get('init'), run)}, one step of "
        f"each corrupted (labels good before it, bad from it on); {f.get('max_steps')} steps x {f.get('batch_size')}"
    )


def _grpo(f: dict, stage: dict, run: Path) -> str:
    src = _counted(f, "data", run) if f.get("data") else f"task {f.get('task')}"
    budget = f", until {f['max_flops']:.3g} FLOPs" if f.get("max_flops") else ""
    if f.get("advantage") == "process":  # process supervision: what judged the steps is what it was given
        pr = str(f.get("process_reward", ""))
        judge = (
            "each step checked against the worked solution by the step rule (the policy never trains on a trace)"
            if pr == "oracle"
            else f"each step scored by the PRM {short_path(pr[4:], run)}"
        )
        return (
            f"prompts and answers from {src}; {judge}; up to {f.get('max_steps')} steps x {f.get('batch_size')} "
            f"prompts x {f.get('group_size')} samples{budget}"
        )
    return (
        f"prompts and answers only (no traces) from {src}; rewards {f.get('rewards')}; "
        f"{f.get('max_steps')} steps x {f.get('batch_size')} prompts x {f.get('group_size')} samples{budget}"
    )


def _sample(f: dict, stage: dict, run: Path) -> str:
    st = read_json(stage["dir"] / "stats.json") or {}
    kept = count_lines(stage["dir"] / "sft.jsonl")
    return (
        f"{f.get('n')} problems of {short_path(f.get('data') or f.get('task'), run)} x {f.get('samples')} samples "
        f"from {short_path(f.get('model'), run)}; kept {kept} "
        + ("completions, UNVERIFIED (accept = any)" if f.get("accept") == "any" else "verified traces")
        + (f" ({st['acceptance']:.0%} of all samples verified)" if isinstance(st.get("acceptance"), float) else "")
    )


def _defaults(cls: type, f: dict) -> dict:
    """A stage's fields over its config's defaults: recipe.json keeps only what the recipe wrote."""
    out = {x.name: x.default for x in dataclasses.fields(cls) if x.default is not dataclasses.MISSING}
    return {**out, **f}


def _distill(f: dict, stage: dict, run: Path) -> str:
    from tinyseek.train.distill import DistillConfig

    f = _defaults(DistillConfig, f)

    # the teacher's own samples are what a sample stage wrote; any other file (gold traces of the tasks stage,
    # a user's traces) is something a student "taught by its teacher" must not have seen, and is named so
    def sampled(p: Any) -> bool:
        return (read_json(Path(p).parent / "stage.json") or {}).get("kind") == "sample"

    sources = ", ".join(
        ("the teacher's verified samples " if sampled(p) else "NOT the teacher's samples: ") + _rows(p, run)
        for p in _files(f, "data")
    )
    return f"{f['mode']} from {short_path(f.get('teacher'), run)}: {sources}" + (
        f", KL {f['kd']} on the teacher's top-{f['kd_top_k']}" if f.get("mode") == "whitebox" else ""
    )


def _eval(f: dict, stage: dict, run: Path) -> str:
    from tinyseek.evaluate import EvalConfig

    f = _defaults(EvalConfig, f)
    model, data = short_path(f.get("model"), run), short_path(f.get("data") or f.get("task"), run)
    return f"{model} on {data}: {f['samples']} samples at T={f['temperature']}" + (" + greedy" if f["greedy"] else "")


GIVEN = {
    "tasks": _tasks,
    "tokenizer": _tokenizer,
    "pretrain": _pretrain,
    "sft": _sft,
    "prm": _prm,
    "grpo": _grpo,
    "sample": _sample,
    "distill": _distill,
    "eval": _eval,
}


def given(stage: dict, run: Path) -> str:
    """What a stage was given to learn from, in words ("" for a kind the report does not describe)."""
    f, describe = stage["fields"], GIVEN.get(stage["kind"])
    return describe(f, stage, run) if describe else ""
