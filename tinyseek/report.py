"""The report card of a run: what every stage achieved and what it cost, as JSON, Markdown and PNG plots.

Every figure is read from the files the stages wrote (`RUN/recipe.json`, and in each stage directory
`stage.json`, `summary.json`, `metrics.jsonl`, `eval.json`); nothing is typed in by hand. The only
constants are labelled assumptions: prices per device-hour, the H200 throughputs measured on a lent H200
(transformers' DeepseekV3 of the `gpu-500m` shape; `H200_SOURCE` says how), and
DeepSeek-V3's published budget (2.788M H800-hours, $5.576M, 14.8T tokens; report 2412.19437 §1).

    tinyseek report RUN            # writes RUN/report/{report.json, report.md, *.png}, prints the tables

Stages compare against their parent: an evaluated stage whose config starts from another evaluated
stage's checkpoint (`init`; GRPO's `model`; `teacher` for distillation) gets a delta row. That is how the report says
"GRPO vs the SFT it started from" and "student vs teacher" without knowing the recipe's names.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

from tinyseek.errors import TinyseekError

REPORT_DIR = "report"

# labelled assumptions (not measurements of this run)
#
# The H200 rates: measured 2026-11-28 on one lent NVIDIA H200 (torch 2.11.0+cu130, transformers 5.17) with
# transformers' own DeepseekV3ForCausalLM of the gpu-500m shape (673M total / 138M active: vocab 32768, dim 1024,
# 12 layers with the first dense, 16 heads, 64 routed experts top-6 + 1 shared, moe_inter 256, q_lora 384,
# kv_lora 256), bf16 weights, SDPA attention, experts_implementation="grouped_mm". Training: AdamW at batch
# 16 x 1024, 108k tokens/s (14.1% MFU; 13.6k with the eager expert loop). Generation: `generate` at batch
# 64 x 256 new tokens, 1,390 new tokens/s (204 eager). dev/LOG.md (2026-11-28, H200) has the whole table.
H200_TRAIN_TOKENS_PER_S = 108_000.0
H200_GENERATE_TOKENS_PER_S = 1_390.0
H200_SOURCE = (
    "measured 2026-11-28 on a lent H200 (torch 2.11, transformers 5.17) with transformers' DeepseekV3 of the "
    "gpu-500m shape: training bf16 with grouped_mm at batch 16 x 1024, generation at batch 64 x 256 new tokens"
)
V3_H800_HOURS = 2.788e6
V3_COST_USD = 5.576e6
V3_TOKENS = 14.8e12
V3_SOURCE = (
    "DeepSeek-V3 technical report (2412.19437), Table 1: 2.788M H800 GPU-hours at $2/hour, 14.8T pretraining tokens"
)

RL_KEYS = {  # first key present wins; the GRPO stage's metrics.jsonl names
    "reward": ("reward", "reward_mean", "rewards/mean"),
    "accuracy": ("accuracy", "acc", "reward_accuracy", "accuracy_reward"),
    "response length": (
        "len_mean",
        "completion_len",
        "response_len",
        "completion_length",
        "mean_completion_len",
        "length",
    ),
}


# ----------------------------------------------------------------------------------------------
# reading a run


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TinyseekError(f"{path}: invalid JSON ({e})") from None


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl as a list of dicts; a torn last line (a killed writer) is ignored, another bad line is an error."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines):
                break
            raise TinyseekError(f"{path}:{i}: invalid JSON line") from None
    return out


def _stage_of(path: Any, run: Path) -> str | None:
    """Which stage of the run a checkpoint path belongs to (RUN/<stage>/...), or None."""
    if not isinstance(path, str) or not path:
        return None
    try:
        rel = Path(path).resolve().relative_to(run.resolve())
    except ValueError:
        return None
    return rel.parts[0] if rel.parts else None


def _model_params(ckpt: Path) -> dict | None:
    from tinyseek import cost
    from tinyseek.checkpoint import read_config

    try:
        cfg = read_config(ckpt)
    except TinyseekError:
        return None
    return {
        "total": cost.total_params(cfg),
        "active": cost.active_params(cfg),
        "moe": cfg.is_moe,
        "dim": cfg.dim,
        "n_layers": cfg.n_layers,
        "vocab_size": cfg.vocab_size,
        "n_routed_experts": cfg.n_routed_experts,
        "n_activated_experts": cfg.n_activated_experts,
        "mtp_depth": cfg.mtp_depth,
    }


def load_run(run: str | Path) -> dict:
    """Everything the report needs, read from disk: the stage list and each stage's files."""
    run = Path(run)
    recipe = _read_json(run / "recipe.json")
    if recipe is None:
        raise TinyseekError(f"{run}: not a recipe run directory (no recipe.json; run `tinyseek run` first)")
    stages = []
    for s in recipe["stages"]:
        d = run / s["name"]
        stages.append(
            {
                "name": s["name"],
                "kind": s["kind"],
                "fields": s.get("fields", {}),
                "dir": d,
                "marker": _read_json(d / "stage.json"),
                "summary": _read_json(d / "summary.json"),
                "metrics": read_metrics(d / "metrics.jsonl"),
                "eval": _read_json(d / "eval.json"),
            }
        )
    return {"run": run, "recipe": recipe, "stages": stages}


# ----------------------------------------------------------------------------------------------
# the report


def _count_lines(path: Any) -> int | None:
    """Rows of a JSONL file, or documents (blank-line separated paragraphs) of a .txt file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, TypeError, UnicodeDecodeError):
        return None
    if Path(path).suffix == ".txt":
        return sum(1 for para in text.split("\n\n") if para.strip())
    return sum(1 for line in text.splitlines() if line.strip())


def _short(path: Any, run: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(run.resolve()))
    except (ValueError, TypeError):
        return str(path)


def given(stage: dict, run: Path) -> str:
    """What a stage was given to learn from, in words, read from its resolved fields and the files they name.

    Why: a demo where RL "wins" must say that RL saw answers only, while SFT and distillation saw whole
    worked traces; otherwise the comparison reads as stronger than it is.
    """
    f, kind = stage["fields"], stage["kind"]
    files = lambda key: f.get(key) if isinstance(f.get(key), list) else ([f[key]] if f.get(key) else [])  # noqa: E731

    def counted(key: str) -> str:
        return ", ".join(
            f"{_short(p, run)} ({_count_lines(p) if _count_lines(p) is not None else '?'} rows)" for p in files(key)
        )

    if kind == "tasks":
        roles = _read_json(stage["dir"] / "roles.json")
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
    if kind == "tokenizer":
        return f"BPE on {f.get('corpus') or f.get('tasks')}, vocab_size {f.get('vocab_size')}"
    if kind == "pretrain":
        src = counted("text_files") or ""
        steps = f"{f.get('max_steps')} steps x {f.get('batch_size')} x {f.get('seq_len')} tokens"
        return f"next-token + MTP on {src or f.get('tasks')}, {steps}"
    if kind == "sft":
        done = _read_json(stage["dir"] / "summary.json") or {}
        steps = f"{f.get('max_steps')} steps x {f.get('batch_size')}"
        if f.get("stop_accuracy") is not None:  # a cold start that ends at an accuracy, not at a step count
            rule = f"greedy accuracy {f['stop_accuracy']:g} on {_short(f.get('stop_data'), run)}"
            steps = f"up to {steps}, stopping at {rule}"
            if done.get("stopped_early"):
                steps += f" (reached at step {done.get('steps')})"
        return f"worked traces {counted('data')}, {steps}"
    if kind == "prm":
        return (
            f"traces {counted('data') or f.get('task')} from {_short(f.get('init'), run)}, one step of each corrupted "
            f"(labels good before it, bad from it on); {f.get('max_steps')} steps x {f.get('batch_size')}"
        )
    if kind == "grpo":
        src = counted("data") if f.get("data") else f"task {f.get('task')}"
        budget = f", until {f['max_flops']:.3g} FLOPs" if f.get("max_flops") else ""
        if f.get("advantage") == "process":  # process supervision: what judged the steps is what it was given
            pr = str(f.get("process_reward", ""))
            judge = (
                "each step checked against the worked solution by the step rule (the policy never trains on a trace)"
                if pr == "oracle"
                else f"each step scored by the PRM {_short(pr[4:], run)}"
            )
            return (
                f"prompts and answers from {src}; {judge}; up to {f.get('max_steps')} steps x {f.get('batch_size')} "
                f"prompts x {f.get('group_size')} samples{budget}"
            )
        return (
            f"prompts and answers only (no traces) from {src}; rewards {f.get('rewards')}; "
            f"{f.get('max_steps')} steps x {f.get('batch_size')} prompts x {f.get('group_size')} samples{budget}"
        )
    if kind == "sample":
        st = _read_json(stage["dir"] / "stats.json") or {}
        kept = _count_lines(stage["dir"] / "sft.jsonl")
        return (
            f"{f.get('n')} problems of {_short(f.get('data') or f.get('task'), run)} x {f.get('samples')} samples from "
            f"{_short(f.get('model'), run)}; kept {kept} "
            + ("completions, UNVERIFIED (accept = any)" if f.get("accept") == "any" else "verified traces")
            + (f" ({st['acceptance']:.0%} of all samples verified)" if isinstance(st.get("acceptance"), float) else "")
        )
    if kind == "distill":
        # the teacher's own samples are what a sample stage wrote; any other file (gold traces of the tasks stage,
        # a user's traces) is something a student "taught by its teacher" must not have seen, and is named so
        def sampled(p: Any) -> bool:
            return (_read_json(Path(p).parent / "stage.json") or {}).get("kind") == "sample"

        sources = ", ".join(
            ("the teacher's verified samples " if sampled(p) else "NOT the teacher's samples: ")
            + f"{_short(p, run)} ({_count_lines(p) if _count_lines(p) is not None else '?'} rows)"
            for p in files("data")
        )
        return f"{f.get('mode', 'blackbox')} from {_short(f.get('teacher'), run)}: {sources}" + (
            f", KL {f.get('kd', 'forward')} on the teacher's top-{f.get('kd_top_k', 20)}"
            if f.get("mode") == "whitebox"
            else ""
        )
    if kind == "eval":
        model, data = _short(f.get("model"), run), _short(f.get("data"), run)
        return f"{model} on {data}: {f.get('samples', 8)} samples at T={f.get('temperature', 1.0)} + greedy"
    return ""


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}"


def _value(result: dict, metric: str, part: str = "value") -> Any:
    """A metric of tinyseek.evaluate's result ({"pass@1": {"value": .., "ci95": [lo, hi]}, ...}), or None."""
    m = result.get(metric)
    return m.get(part) if isinstance(m, dict) else None


def _ci_disjoint(a: list[float] | None, b: list[float] | None) -> bool | None:
    if not a or not b:
        return None
    return a[0] > b[1] or b[0] > a[1]


def rollout_tokens(metrics: list[dict]) -> int:
    """Tokens a GRPO stage generated in its rollouts, from its metrics.jsonl: `rollout_tokens` where a step logs it,
    otherwise its rollout rate times its rollout time (the two numbers the step computed from that count)."""
    n = 0.0
    for m in metrics:
        if m.get("rollout_tokens") is not None:
            n += m["rollout_tokens"]
        elif m.get("rollout_tok_s") is not None and m.get("rollout_s") is not None:
            n += m["rollout_tok_s"] * m["rollout_s"]
    return round(n)


def build_report(run: str | Path, cpu_hour_price: float | None = None, gpu_hour_price: float | None = None) -> dict:
    """The report as a JSON-able dict (also the source of the Markdown and the console tables)."""
    from tinyseek import cost
    from tinyseek.config import ModelConfig
    from tinyseek.train.loop import TrainConfig

    data = load_run(run)
    run = data["run"]
    defaults = TrainConfig()
    cpu_price = defaults.cpu_hour_price if cpu_hour_price is None else cpu_hour_price
    gpu_price = defaults.gpu_hour_price if gpu_hour_price is None else gpu_hour_price
    by_name = {s["name"]: s for s in data["stages"]}

    # -- stages and costs
    stage_rows = []
    for s in data["stages"]:
        m, summ = s["marker"] or {}, s["summary"] or {}
        c = summ.get("cost", {})
        wall = m.get("wall_s")
        row = {
            "name": s["name"],
            "kind": s["kind"],
            "given": given(s, run),
            "complete": s["marker"] is not None,
            "resumed": bool(m.get("resumed")),
            "wall_s": wall,
            "steps": summ.get("steps"),
            "tokens": summ.get("tokens"),
            "tokens_per_s": summ.get("tokens_per_s"),
            "train_s": c.get("elapsed_s"),
            "flops": c.get("flops"),
            "mfu": summ.get("mfu"),
        }
        device = c.get("device", "cpu")
        price = c.get("price_per_device_hour", gpu_price if device == "cuda" else cpu_price)
        hours = (wall or 0.0) / 3600 * c.get("n_devices", 1)  # the whole stage's wall time, not only its train steps
        row.update(device=device, device_hours=hours, cost_usd=hours * price)
        if s["metrics"]:
            last = s["metrics"][-1]
            row["final_loss"] = last.get("loss")
            row["final_step"] = last.get("step")
        if s["eval"]:
            row["generated_tokens"] = s["eval"].get("generated_tokens")
        if s["kind"] == "sample":
            row["generated_tokens"] = (_read_json(s["dir"] / "stats.json") or {}).get("generated_tokens")
        if s["kind"] == "grpo":
            row["rollout_tokens"] = rollout_tokens(s["metrics"])
        stage_rows.append(row)

    # -- evaluations
    evals = []
    for s in data["stages"]:
        e = s["eval"]
        if not e:
            continue
        model_stage = _stage_of(e.get("model") or s["fields"].get("model"), run)
        ms = by_name.get(model_stage)
        params = (
            _model_params(Path(e.get("model") or s["fields"].get("model", "")))
            if (e.get("model") or s["fields"].get("model"))
            else None
        )
        K = e.get("samples")
        g = e.get("greedy") or {}
        evals.append(
            {
                "stage": s["name"],
                "model_stage": model_stage,
                "model_kind": ms["kind"] if ms else None,
                "n": e.get("n_problems"),
                "samples": K,
                "temperature": (e.get("params") or {}).get("temperature"),
                "pass@1": _value(e, "pass@1"),
                "pass@1_ci95": _value(e, "pass@1", "ci95"),
                "pass@k": _value(e, f"pass@{K}"),
                "cons@k": _value(e, f"cons@{K}"),
                "greedy": _value(g, "pass@1"),
                "greedy_ci95": _value(g, "pass@1", "ci95"),
                "format": _value(e, "format"),
                "mean_response_tokens": _value(e, "mean_length"),
                "params": params,
            }
        )

    # -- each evaluated stage against the evaluated stage it started from
    eval_of = {e["model_stage"]: e for e in evals if e["model_stage"]}
    comparisons = []
    for e in evals:
        st = by_name.get(e["model_stage"])
        if st is None:
            continue
        for rel in ("init", "model", "teacher"):  # sft/pretrain/distill start from init, grpo from model
            parent = _stage_of(st["fields"].get(rel), run)
            pe = eval_of.get(parent)
            if parent is None or pe is None or pe is e or e["pass@1"] is None or pe["pass@1"] is None:
                continue
            comp = {
                "stage": e["model_stage"],
                "kind": st["kind"],
                "parent": parent,
                "relation": rel,
                "pass@1": e["pass@1"],
                "parent_pass@1": pe["pass@1"],
                "delta_points": 100 * (e["pass@1"] - pe["pass@1"]),
                "ratio": e["pass@1"] / pe["pass@1"] if pe["pass@1"] else None,
                "ci_disjoint": _ci_disjoint(e["pass@1_ci95"], pe["pass@1_ci95"]),
            }
            if e["params"] and pe["params"]:
                comp["active_params_ratio"] = e["params"]["active"] / pe["params"]["active"]
            comparisons.append(comp)

    # -- totals and projections
    tot_wall = sum(r["wall_s"] or 0 for r in stage_rows)
    tot_flops = sum(r["flops"] or 0 for r in stage_rows)
    tot_tokens = sum(r["tokens"] or 0 for r in stage_rows if r["kind"] in ("pretrain", "sft", "distill"))
    eval_tokens = sum(r.get("generated_tokens") or 0 for r in stage_rows if r["kind"] != "sample")
    sample_tokens = sum(r.get("generated_tokens") or 0 for r in stage_rows if r["kind"] == "sample")
    rollout = sum(r.get("rollout_tokens") or 0 for r in stage_rows)
    gen_tokens = eval_tokens + sample_tokens + rollout  # every token a model generated, at the generation rate
    rl_tokens = sum(r["tokens"] or 0 for r in stage_rows if r["kind"] == "grpo")  # GRPO's update tokens: training
    tot_hours = sum(r["device_hours"] for r in stage_rows)
    tot_cost = sum(r["cost_usd"] for r in stage_rows)
    g = ModelConfig.preset("gpu-500m")
    seq = 1024
    proj_train_s = (tot_tokens + rl_tokens) / H200_TRAIN_TOKENS_PER_S
    proj_gen_s = gen_tokens / H200_GENERATE_TOKENS_PER_S
    proj_hours = (proj_train_s + proj_gen_s) / 3600
    v3 = ModelConfig.preset("deepseek-v3-671b")
    v3_flops = V3_TOKENS * cost.train_flops_per_token(v3, 4096)
    cost_rows = [
        {
            "what": "this run (measured)",
            "flops": tot_flops,
            "wall_s": tot_wall,
            "device_hours": tot_hours,
            "cost_usd": tot_cost,
            "basis": f"stage wall times; ${cpu_price}/CPU-machine-hour, ${gpu_price}/GPU-hour (configurable)",
        },
        {
            "what": "same token counts, gpu-500m on one H200 (projected)",
            "flops": (tot_tokens + rl_tokens) * cost.train_flops_per_token(g, seq)
            + gen_tokens * cost.inference_flops_per_token(g, seq // 2),
            "wall_s": proj_hours * 3600,
            "device_hours": proj_hours,
            "cost_usd": proj_hours * gpu_price,
            "train_tokens": tot_tokens + rl_tokens,
            "generated_tokens": gen_tokens,
            "train_s": proj_train_s,
            "generate_s": proj_gen_s,
            "basis": (
                f"{tot_tokens + rl_tokens:,} training tokens (GRPO's updates included) at "
                f"{H200_TRAIN_TOKENS_PER_S:,.0f}/s = {proj_train_s:,.0f} s, and {gen_tokens:,} generated tokens "
                f"(GRPO rollouts {rollout:,}, rejection sampling {sample_tokens:,}, evaluations {eval_tokens:,}; "
                f"GRPO's in-training evaluations not counted) at {H200_GENERATE_TOKENS_PER_S:,.0f}/s = "
                f"{proj_gen_s:,.0f} s; {H200_SOURCE}; ${gpu_price}/GPU-hour"
            ),
        },
        {
            "what": "DeepSeek-V3 (published)",
            "flops": v3_flops,
            "wall_s": None,
            "device_hours": V3_H800_HOURS,
            "cost_usd": V3_COST_USD,
            "basis": f"{V3_SOURCE}; FLOPs computed here from the config (6N + attention, 14.8T tokens at 4K)",
        },
    ]

    # -- evaluated stages that start from the same checkpoint: what each kind of training bought, at what compute
    flops_of = {r["name"]: r["flops"] for r in stage_rows}
    parent_of = {}
    for e in evals:
        st = by_name.get(e["model_stage"])
        if st is not None:
            parent_of[e["model_stage"]] = next(
                (p for rel in ("init", "model") if (p := _stage_of(st["fields"].get(rel), run)) in eval_of), None
            )
    siblings = []
    names = [e["model_stage"] for e in evals if parent_of.get(e["model_stage"])]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ea, eb = eval_of[a], eval_of[b]
            if parent_of[a] != parent_of[b] or ea["pass@1"] is None or eb["pass@1"] is None:
                continue
            siblings.append(
                {
                    "parent": parent_of[a],
                    "a": a,
                    "a_kind": by_name[a]["kind"],
                    "b": b,
                    "b_kind": by_name[b]["kind"],
                    "a_pass@1": ea["pass@1"],
                    "b_pass@1": eb["pass@1"],
                    "delta_points": 100 * (ea["pass@1"] - eb["pass@1"]),
                    "ci_disjoint": _ci_disjoint(ea["pass@1_ci95"], eb["pass@1_ci95"]),
                    "a_flops": flops_of.get(a),
                    "b_flops": flops_of.get(b),
                }
            )

    # -- the held-out curve of every GRPO stage, at the evaluation protocol, from its parent's evaluation on
    curves = []
    for s in data["stages"]:
        if s["kind"] != "grpo" or not s["metrics"]:
            continue
        pts = [
            {"step": r["step"], "pass@1": r["eval_pass1"], "ci95": [r.get("eval_pass1_lo"), r.get("eval_pass1_hi")]}
            for r in s["metrics"]
            if isinstance(r.get("eval_pass1"), (int, float))
        ]
        parent = _stage_of(s["fields"].get("model"), run)
        pe = eval_of.get(parent)
        if pts and pe is not None and pe["pass@1"] is not None:
            pts.insert(0, {"step": 0, "pass@1": pe["pass@1"], "ci95": pe["pass@1_ci95"], "from": pe["stage"]})
        rewards = [(r["step"], r.get("reward")) for r in s["metrics"] if isinstance(r.get("reward"), (int, float))]
        curves.append(
            {
                "stage": s["name"],
                "parent": parent,
                "eval_temperature": s["fields"].get("eval_temperature"),
                "heldout": pts,
                "reward_first": rewards[0][1] if rewards else None,
                "reward_last": rewards[-1][1] if rewards else None,
            }
        )

    # -- RL curves (first GRPO stage) and expert balance
    rl = {}
    for s in data["stages"]:
        if s["kind"] == "grpo" and s["metrics"]:
            rl = {"stage": s["name"], "steps": len(s["metrics"])}
            for label, keys in RL_KEYS.items():
                k = next((k for k in keys if k in s["metrics"][0]), None)
                if k:
                    vals = [r.get(k) for r in s["metrics"]]
                    rl[label] = {"key": k, "first": vals[0], "last": vals[-1]}
            break

    rep = {
        "run": str(run),
        "recipe": data["recipe"].get("name"),
        "machine": _machine(),
        "stages": stage_rows,
        "evals": evals,
        "comparisons": comparisons,
        "siblings": siblings,
        "cost": cost_rows,
        "rl": rl,
        "rl_curves": curves,
        "totals": {
            "wall_s": tot_wall,
            "flops": tot_flops,
            "train_tokens": tot_tokens,
            "rl_tokens": rl_tokens,
            "generated_tokens_eval": eval_tokens,
            "generated_tokens_sample": sample_tokens,
            "rollout_tokens": rollout,
            "generated_tokens": gen_tokens,
            "device_hours": tot_hours,
            "cost_usd": tot_cost,
        },
        "prices": {"cpu_hour_usd": cpu_price, "gpu_hour_usd": gpu_price},
        "plots": [],
    }
    ovp = outcome_vs_process(data)
    if ovp is not None:
        rep["outcome_vs_process"] = ovp
    return rep


# ----------------------------------------------------------------------------------------------
# text


def _f(x: Any, fmt: str = "{:.1f}", none: str = "—") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return none
    return fmt.format(x)


def _pct(x: Any) -> str:
    return _f(None if x is None else 100 * x, "{:.1f}")


def _ci(ci: Any) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "—"


def _human(x: Any) -> str:
    return "—" if x is None else f"{x:.3g}"


def _money(x: Any) -> str:
    """Hours or dollars: whole numbers with separators when large, 3 significant digits when small."""
    if x is None:
        return "—"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def accuracy_rows(rep: dict) -> tuple[list[str], list[list[str]]]:
    head = [
        "stage",
        "model",
        "params (active / total)",
        "pass@1 %",
        "95% CI",
        "cons@k %",
        "pass@k %",
        "greedy %",
        "k",
        "n",
    ]
    rows = []
    for e in rep["evals"]:
        p = e["params"]
        rows.append(
            [
                e["stage"],
                f"{e['model_stage']} ({e['model_kind']})",
                f"{p['active'] / 1e6:.2f}M / {p['total'] / 1e6:.2f}M" if p else "—",
                _pct(e["pass@1"]),
                _ci(e["pass@1_ci95"]),
                _pct(e["cons@k"]),
                _pct(e["pass@k"]),
                _pct(e["greedy"]),
                _f(e["samples"], "{}"),
                _f(e["n"], "{}"),
            ]
        )
    return head, rows


def comparison_rows(rep: dict) -> tuple[list[str], list[list[str]]]:
    head = ["stage", "vs", "pass@1 %", "vs %", "delta (points)", "ratio", "95% CIs disjoint", "active params ratio"]
    rows = [
        [
            c["stage"],
            f"{c['parent']} ({c['relation']})",
            _pct(c["pass@1"]),
            _pct(c["parent_pass@1"]),
            _f(c["delta_points"], "{:+.1f}"),
            _f(c["ratio"], "{:.2f}"),
            {True: "yes", False: "no", None: "—"}[c["ci_disjoint"]],
            _f(c.get("active_params_ratio"), "{:.2f}"),
        ]
        for c in rep["comparisons"]
    ]
    return head, rows


def sibling_rows(rep: dict) -> tuple[list[str], list[list[str]]]:
    head = [
        "from",
        "stage",
        "pass@1 %",
        "other stage",
        "pass@1 %",
        "delta (points)",
        "95% CIs disjoint",
        "FLOPs",
        "other FLOPs",
    ]
    rows = [
        [
            c["parent"],
            f"{c['a']} ({c['a_kind']})",
            _pct(c["a_pass@1"]),
            f"{c['b']} ({c['b_kind']})",
            _pct(c["b_pass@1"]),
            _f(c["delta_points"], "{:+.1f}"),
            {True: "yes", False: "no", None: "—"}[c["ci_disjoint"]],
            _human(c["a_flops"]),
            _human(c["b_flops"]),
        ]
        for c in rep["siblings"]
    ]
    return head, rows


def curve_rows(rep: dict) -> tuple[list[str], list[list[str]]]:
    head = ["GRPO stage", "step", "held-out pass@1 %", "95% CI"]
    rows = [
        [c["stage"], f"{p['step']}" + (f" ({p['from']})" if p.get("from") else ""), _pct(p["pass@1"]), _ci(p["ci95"])]
        for c in rep["rl_curves"]
        for p in c["heldout"]
    ]
    return head, rows


def stage_rows(rep: dict) -> tuple[list[str], list[list[str]]]:
    head = ["stage", "kind", "wall s", "train s", "steps", "tokens", "tokens/s", "FLOPs", "final loss", "device-h", "$"]
    rows = [
        [
            r["name"] + (" (resumed)" if r.get("resumed") else ""),
            r["kind"],
            _f(r["wall_s"]),
            _f(r["train_s"]),
            _f(r["steps"], "{}"),
            _f(r["tokens"], "{:,}"),
            _f(r["tokens_per_s"], "{:,.0f}"),
            _human(r["flops"]),
            _f(r.get("final_loss"), "{:.3f}"),
            _f(r["device_hours"], "{:.4f}"),
            _f(r["cost_usd"], "{:.4f}"),
        ]
        for r in rep["stages"]
    ]
    return head, rows


def cost_rows(rep: dict) -> tuple[list[str], list[list[str]]]:
    head = ["", "FLOPs", "wall time", "device-hours", "cost $"]
    rows = []
    for c in rep["cost"]:
        wall = c["wall_s"]
        w = "—" if wall is None else f"{wall:.0f} s" if wall < 3600 else f"{wall / 3600:.1f} h"
        rows.append([c["what"], _human(c["flops"]), w, _money(c["device_hours"]), _money(c["cost_usd"])])
    return head, rows


def render_markdown(rep: dict) -> str:
    out = [f"# Report card: {rep['recipe']} ({rep['run']})", "", f"Machine: {rep['machine']}.", ""]
    t = rep["totals"]
    out += [
        f"Total wall time of the stages: {t['wall_s']:.0f} s. Every figure below is read from this run's files "
        "(stage.json, summary.json, metrics.jsonl, eval.json); the projections' assumptions are stated beside them.",
        "",
    ]
    out += ["## Accuracy on the held-out problems", ""] + _table(*accuracy_rows(rep)) + [""]
    out += [
        "pass@1 is the mean over k samples per problem; the 95% interval is over problems. cons@k is majority vote "
        "over the k samples, pass@k any of them; greedy is temperature 0.",
        "",
    ]
    if rep["comparisons"]:
        out += ["## Each stage against the one it started from", ""] + _table(*comparison_rows(rep)) + [""]
    if rep.get("siblings"):
        out += ["## Stages that started from the same checkpoint", ""] + _table(*sibling_rows(rep)) + [""]
        out += [
            "Two ways of training the same start: FLOPs are each stage's compute (a GRPO stage's include its "
            "rollouts), so a reader can see what each point of accuracy cost.",
            "",
        ]
    if any(c["heldout"] for c in rep.get("rl_curves", [])):
        out += ["## Reinforcement learning, measured on the held-out problems", ""] + _table(*curve_rows(rep)) + [""]
        out += [
            "Held-out pass@1 during GRPO at the evaluation protocol (the stage's eval_samples samples at "
            "eval_temperature), step 0 being the evaluation of the checkpoint it started from.",
            "",
        ]
    if rep["rl"]:
        r = rep["rl"]
        bits = [
            f"{k} {_f(v['first'], '{:.3g}')} -> {_f(v['last'], '{:.3g}')}" for k, v in r.items() if isinstance(v, dict)
        ]
        out += ["## Reinforcement learning", "", f"{r['stage']}: {r['steps']} steps; " + "; ".join(bits) + ".", ""]
    if rep.get("outcome_vs_process"):
        out += render_outcome_vs_process(rep["outcome_vs_process"])
    out += (
        ["## Stages", "", "What each stage was given:", ""]
        + [f"- **{r['name']}** ({r['kind']}): {r['given']}" for r in rep["stages"]]
        + [""]
    )
    out += _table(*stage_rows(rep)) + [""]
    if any(r.get("resumed") for r in rep["stages"]):
        out += [
            "A resumed stage's wall time is its last attempt's only; train s (the loop's own clock) covers every "
            "attempt.",
            "",
        ]
    out += ["## Cost", ""] + _table(*cost_rows(rep)) + [""]
    out += [f"- {c['what']}: {c['basis']}." for c in rep["cost"]] + [""]
    if rep["plots"]:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in rep["plots"]] + [""]
    return "\n".join(out)


def render_console(rep: dict) -> str:
    def fmt(head, rows):
        w = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
        line = lambda r: "  ".join(str(x).ljust(n) for x, n in zip(r, w))  # noqa: E731
        return "\n".join([line(head), line(["-" * n for n in w])] + [line(r) for r in rows])

    parts = [f"report card: {rep['run']}   ({rep['machine']})", "", fmt(*accuracy_rows(rep))]
    if rep["comparisons"]:
        parts += ["", fmt(*comparison_rows(rep))]
    if rep.get("outcome_vs_process"):
        parts += ["", fmt(*ovp_arm_rows(rep["outcome_vs_process"]))]
    parts += [
        "",
        fmt(*stage_rows(rep)),
        "",
        fmt(*cost_rows(rep)),
        "",
        f"written: {Path(rep['run']) / REPORT_DIR / 'report.md'}",
    ]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(rep: dict, path: Path) -> bool:
    evals = [e for e in rep["evals"] if e["pass@1"] is not None]
    if not evals:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(evals) + 2), 4))
    xs = range(len(evals))
    p1 = [100 * e["pass@1"] for e in evals]
    lo = [100 * (e["pass@1"] - e["pass@1_ci95"][0]) if e["pass@1_ci95"] else 0 for e in evals]
    hi = [100 * (e["pass@1_ci95"][1] - e["pass@1"]) if e["pass@1_ci95"] else 0 for e in evals]
    ax.bar(xs, p1, yerr=[lo, hi], capsize=4, color="#4c72b0", label="pass@1 (95% CI)")
    for key, marker, color in (("cons@k", "D", "#dd8452"), ("greedy", "o", "#55a868")):
        ys = [100 * e[key] if e[key] is not None else math.nan for e in evals]
        if any(not math.isnan(y) for y in ys):
            ax.scatter(
                xs,
                ys,
                marker=marker,
                color=color,
                zorder=3,
                label=key if key != "cons@k" else f"cons@{evals[0]['samples']}",
            )
    for x, y, h in zip(xs, p1, hi):
        ax.text(x, y + h + 1.5, f"{y:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), [f"{e['model_stage']}\n({e['model_kind']})" for e in evals], fontsize=8)
    ax.set_ylabel("% of held-out problems")
    ax.set_ylim(0, 105)
    ax.set_title(f"Accuracy per stage (n = {evals[0]['n']} held-out problems)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_losses(data: dict, path: Path) -> bool:
    stages = [s for s in data["stages"] if s["kind"] in ("pretrain", "sft", "distill") and s["metrics"]]
    if not stages:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(stages), figsize=(4 * len(stages), 3.2), squeeze=False)
    for ax, s in zip(axes[0], stages):
        steps = [r["step"] for r in s["metrics"]]
        for key, style in (("loss", "-"), ("ce", "--"), ("kd", ":"), ("eval_loss", "o")):
            ys = [r.get(key) for r in s["metrics"]]
            pts = [(x, y) for x, y in zip(steps, ys) if isinstance(y, (int, float))]
            if pts and (key != "ce" or any(r.get("ce") != r.get("loss") for r in s["metrics"])):
                ax.plot(*zip(*pts), style, label=key, markersize=3)
        ax.set_title(f"{s['name']} ({s['kind']})", fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_rl(data: dict, path: Path) -> bool:
    """Held-out pass@1 at the evaluation protocol over GRPO steps (every GRPO stage, 95% band), beside the
    training reward and response length of the first GRPO stage: learning, not only reward."""
    grpo = [s for s in data["stages"] if s["kind"] == "grpo" and s["metrics"]]
    if not grpo:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    ax = axes[0]
    run = data["run"]
    evals = {s["name"]: s["eval"] for s in data["stages"] if s["eval"]}
    eval_of_model = {_stage_of(e.get("model"), run): e for e in evals.values()}
    for s in grpo:
        pts = [
            (r["step"], r["eval_pass1"], r.get("eval_pass1_lo"), r.get("eval_pass1_hi"))
            for r in s["metrics"]
            if isinstance(r.get("eval_pass1"), (int, float))
        ]
        start = eval_of_model.get(_stage_of(s["fields"].get("model"), run))
        if start and isinstance(_value(start, "pass@1"), (int, float)):
            lo, hi = _value(start, "pass@1", "ci95") or (None, None)
            pts.insert(0, (0, _value(start, "pass@1"), lo, hi))
        if not pts:
            continue
        xs = [p[0] for p in pts]
        line = ax.plot(xs, [100 * p[1] for p in pts], "o-", markersize=3, label=s["name"])[0]
        if all(p[2] is not None and p[3] is not None for p in pts):
            ax.fill_between(xs, [100 * p[2] for p in pts], [100 * p[3] for p in pts], alpha=0.2, color=line.get_color())
    ax.set_title("held-out pass@1 % (evaluation protocol, 95% CI)", fontsize=9)
    ax.set_xlabel("GRPO step")
    if ax.lines:
        ax.legend(fontsize=7)
    s = grpo[0]
    steps = [r["step"] for r in s["metrics"]]
    for ax, label in zip(axes[1:], ("reward", "response length")):
        k = next((k for k in RL_KEYS[label] if k in s["metrics"][0]), None)
        if k is not None:
            ys = [r.get(k) for r in s["metrics"]]
            pts = [(x, y) for x, y in zip(steps, ys) if isinstance(y, (int, float))]
            ax.plot(*zip(*pts), ".", markersize=3, alpha=0.4)
            w = max(1, len(pts) // 10)  # running mean over a tenth of the run
            sm = [
                sum(y for _, y in pts[max(0, i - w + 1) : i + 1]) / len(pts[max(0, i - w + 1) : i + 1])
                for i in range(len(pts))
            ]
            ax.plot([x for x, _ in pts], sm, "-", color="#c44e52")
        ax.set_title(f"{s['name']}: training {label} ({k or 'not logged'})", fontsize=9)
        ax.set_xlabel("GRPO step")
    fig.suptitle("Reinforcement learning: held-out accuracy, and reward on the training prompts", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_expert_load(data: dict, path: Path) -> bool:
    """MaxVio (max expert load / mean load - 1, the loss-free balancing paper's measure) per MoE layer,
    over the steps of every MoE training stage laid end to end."""
    stages = [s for s in data["stages"] if s["metrics"] and any("moe_maxvio" in r for r in s["metrics"])]
    if not stages:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    offset = 0
    n_layers = max(len(r["moe_maxvio"]) for s in stages for r in s["metrics"] if "moe_maxvio" in r)
    colors = plt.cm.viridis([i / max(1, n_layers - 1) for i in range(n_layers)])
    for si, s in enumerate(stages):
        rows = [r for r in s["metrics"] if "moe_maxvio" in r]
        for layer in range(n_layers):
            pts = [
                (offset + r["step"], r["moe_maxvio"][layer])
                for r in rows
                if layer < len(r["moe_maxvio"]) and r["moe_maxvio"][layer] is not None
            ]
            if pts:
                ax.plot(*zip(*pts), color=colors[layer], lw=1, label=f"MoE layer {layer + 1}" if si == 0 else None)
        end = offset + max(r["step"] for r in rows)
        ax.axvline(end, color="gray", lw=0.5, ls="--")
        ax.text(
            (offset + end) / 2, 1.0, s["name"], transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8
        )
        offset = end
    ax.set_xlabel("step (stages laid end to end)")
    ax.set_ylabel("MaxVio (max/mean load - 1)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------------------------
# outcome vs process rewards (recipes/outcome-vs-process.toml): its own section, read from the same files


def _windows(rows: list[dict], keys: tuple[str, ...], n: int = 5) -> list[dict]:
    """Means of `keys` over n consecutive windows of steps (rows without a key are skipped for that key)."""
    out = []
    size = max(1, -(-len(rows) // n))
    for s in range(0, len(rows), size):
        part = rows[s : s + size]
        w = {"steps": [part[0]["step"], part[-1]["step"]]}
        for k in keys:
            v = [r[k] for r in part if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
            w[k] = sum(v) / len(v) if v else None
        out.append(w)
    return out


def outcome_vs_process(data: dict) -> dict | None:
    """The GRPO arms of a run that has a process-supervised one (advantage = process): each arm's held-out pass@1
    over steps and FLOPs with 95% intervals, its compute (rollouts, updates, the PRM's training and scoring),
    the PRM's held-out step accuracy, and the PRM arm's reward hacking (the PRM's score against the truth on the
    policy's own samples, and samples it liked that were wrong). None for a run without a process arm."""
    grpo = [s for s in data["stages"] if s["kind"] == "grpo" and s["metrics"]]
    if not any(s["fields"].get("advantage") == "process" for s in grpo):
        return None
    run = data["run"]
    eval_of_model = {_stage_of(s["eval"].get("model"), run): s["eval"] for s in data["stages"] if s["eval"]}
    arms = []
    for s in grpo:
        f, ms = s["fields"], s["metrics"]
        prm_train = sum(r.get("prm_train_flops", 0.0) for r in ms)
        scoring = sum(r.get("prm_flops", 0.0) for r in ms)
        rollouts = sum(r.get("rollout_flops", 0.0) for r in ms) - scoring
        own = ms[-1].get("total_flops")  # the stage's cost meter; the PRM's training is the prm stage's
        total = None if own is None else own + prm_train
        curve = []
        start = eval_of_model.get(_stage_of(f.get("model"), run))
        if start and _value(start, "pass@1") is not None:
            curve.append(
                {
                    "step": 0,
                    "flops": prm_train,
                    "pass@1": _value(start, "pass@1"),
                    "ci95": _value(start, "pass@1", "ci95"),
                }
            )
        curve += [
            {
                "step": r["step"],
                "flops": None if r.get("total_flops") is None else r["total_flops"] + prm_train,
                "pass@1": r["eval_pass1"],
                "ci95": [r.get("eval_pass1_lo"), r.get("eval_pass1_hi")],
            }
            for r in ms
            if isinstance(r.get("eval_pass1"), (int, float))
        ]
        pr = f.get("process_reward") or None
        if isinstance(pr, str) and pr.startswith("prm:"):
            pr = "prm:" + _short(pr[4:], run)
        arm = {
            "stage": s["name"],
            "advantage": f.get("advantage", "outcome"),
            "process_reward": pr,
            "steps": ms[-1]["step"],
            "max_flops": f.get("max_flops"),
            "flops": total,
            "flops_rollouts": rollouts,
            "flops_updates": None if own is None else own - rollouts - scoring,
            "flops_prm_train": prm_train,
            "flops_prm_scoring": scoring,
            "flops_prm": prm_train + scoring,
            "wall_s": (s["marker"] or {}).get("wall_s"),
            "curve": curve,
            "final": curve[-1] if curve else None,
            "train_accuracy": _windows(ms, ("accuracy",), 1)[0]["accuracy"] if ms else None,
        }
        if any("step_correct" in r for r in ms):
            arm["step_correct"] = [ms[0].get("step_correct"), ms[-1].get("step_correct")]
        if any("prm_score" in r for r in ms):
            keys = ("prm_score", "accuracy", "prm_liked_wrong", "prm_step_acc", "prm_score_right", "prm_score_wrong")
            arm["hacking"] = {
                "series": [{"step": r["step"], **{k: r.get(k) for k in keys}} for r in ms],
                "windows": _windows(ms, keys),
            }
            liked = s["dir"] / "prm_liked_wrong.jsonl"
            if liked.is_file():
                rows = [json.loads(x) for x in liked.read_text(encoding="utf-8").splitlines() if x.strip()]
                arm["liked_wrong_examples"] = sorted(rows, key=lambda r: (-r["step"], -r["prm_min_score"]))[:3]
                arm["liked_wrong_logged"] = len(rows)
        arms.append(arm)
    base = next((a for a in arms if a["advantage"] == "outcome"), None)
    for a in arms:
        if base is not None and a is not base and a["final"] and base["final"]:
            a["vs_outcome_points"] = 100 * (a["final"]["pass@1"] - base["final"]["pass@1"])
            a["vs_outcome_ci_disjoint"] = _ci_disjoint(a["final"]["ci95"], base["final"]["ci95"])
    prm = []
    for s in data["stages"]:
        if s["kind"] == "prm" and s["summary"]:
            ev = s["summary"].get("eval") or {}
            prm.append(
                {
                    "stage": s["name"],
                    "train_steps": s["summary"].get("steps"),
                    "flops": (s["summary"].get("cost") or {}).get("flops"),
                    **{k[5:]: v for k, v in ev.items() if k.startswith("eval_")},
                }
            )
    return {"arms": arms, "prm": prm}


def ovp_arm_rows(ovp: dict) -> tuple[list[str], list[list[str]]]:
    head = ["arm", "advantage", "steps", "FLOPs", "PRM train + scoring", "held-out pass@1 %", "95% CI", "vs outcome"]
    rows = []
    for a in ovp["arms"]:
        fin = a["final"] or {}
        vs = a.get("vs_outcome_points")
        rows.append(
            [
                a["stage"],
                a["advantage"] + (f" ({a['process_reward']})" if a["process_reward"] else ""),
                _f(a["steps"], "{}"),
                _human(a["flops"]),
                _human(a["flops_prm"]) if a["flops_prm"] else "—",
                _pct(fin.get("pass@1")),
                _ci(fin.get("ci95")),
                "—"
                if vs is None
                else f"{vs:+.1f}" + (" (CIs disjoint)" if a.get("vs_outcome_ci_disjoint") else " (CIs overlap)"),
            ]
        )
    return head, rows


def render_outcome_vs_process(ovp: dict) -> list[str]:
    out = ["## Outcome rewards vs process rewards", ""] + _table(*ovp_arm_rows(ovp)) + [""]
    out += [
        "Each arm starts from the same checkpoint and stops when its cost meter reaches the common compute budget "
        "(max_flops): rollouts, updates, and for a learned PRM its training and its scoring of every rollout. "
        "pass@1 is on the held-out problems at the evaluation protocol, with 95% intervals over problems.",
        "",
    ]
    curve = [
        [a["stage"], f"{p['step']}", _human(p["flops"]), _pct(p["pass@1"]), _ci(p["ci95"])]
        for a in ovp["arms"]
        for p in a["curve"]
    ]
    out += ["### Held-out pass@1 over training", ""] + _table(
        ["arm", "step", "FLOPs so far", "pass@1 %", "95% CI"], curve
    )
    out += [""]
    comp = [
        [
            a["stage"],
            _human(a["flops_rollouts"]),
            _human(a["flops_updates"]),
            _human(a["flops_prm_train"]) if a["flops_prm_train"] else "—",
            _human(a["flops_prm_scoring"]) if a["flops_prm_scoring"] else "—",
            _f(a["wall_s"]),
        ]
        for a in ovp["arms"]
    ]
    out += ["### Compute per arm", ""] + _table(
        ["arm", "rollouts", "updates", "PRM training", "PRM scoring", "wall s"], comp
    )
    out += [""]
    for p in ovp["prm"]:
        out += [
            f"The PRM (`{p['stage']}`, {p.get('train_steps')} steps, {_human(p.get('flops'))} FLOPs), on held-out "
            f"traces and one corruption of each: step accuracy {_pct(p.get('step_acc'))}% (good steps "
            f"{_pct(p.get('good_step_acc'))}%, bad steps {_pct(p.get('bad_step_acc'))}%); the corrupted step scored "
            f"below its gold version in {_pct(p.get('pair_acc'))}% of {p.get('pairs')} pairs.",
            "",
        ]
    for a in ovp["arms"]:
        h = a.get("hacking")
        if not h:
            continue
        rows = [
            [
                f"{w['steps'][0]}-{w['steps'][1]}",
                _f(w["prm_score"], "{:.3f}"),
                _pct(w["accuracy"]),
                _pct(w["prm_score_right"]),
                _pct(w["prm_score_wrong"]),
                _pct(w["prm_liked_wrong"]),
                _pct(w["prm_step_acc"]),
            ]
            for w in h["windows"]
        ]
        out += [f"### Reward hacking: what the PRM said vs what was true ({a['stage']})", ""]
        out += _table(
            [
                "steps",
                "PRM score (min over steps)",
                "true accuracy %",
                "PRM score of right answers %",
                "of wrong answers %",
                "wrong answers it liked %",
                "PRM step accuracy vs the rule %",
            ],
            rows,
        )
        out += [
            "",
            "On the policy's own rollouts at each step: a PRM score that rises while the accuracy does not, a "
            "shrinking gap between its scores of right and wrong answers, or a growing share of wrong answers scored "
            "above 0.5 is the policy learning what the PRM likes rather than what is right.",
            "",
        ]
        for ex in a.get("liked_wrong_examples", []):
            out.append(
                f"- step {ex['step']}, `{ex['prompt']}` (answer {ex['answer']}), PRM min score "
                f"{ex['prm_min_score']:.2f}, step rule {ex.get('oracle_steps')}: `{' '.join(ex['completion'].split())}`"
            )
        if a.get("liked_wrong_examples"):
            out += [
                "",
                f"(wrong samples the PRM liked most, {a.get('liked_wrong_logged')} logged in {a['stage']}/"
                "prm_liked_wrong.jsonl)",
                "",
            ]
    return out


def plot_outcome_vs_process(ovp: dict | None, path: Path) -> bool:
    """Held-out pass@1 of every arm against FLOPs spent (95% bands), and the PRM arm's score vs true accuracy."""
    if not ovp:
        return False
    plt = _plt()
    hack = [a for a in ovp["arms"] if a.get("hacking")]
    fig, axes = plt.subplots(1, 1 + bool(hack), figsize=(6 + 5 * bool(hack), 3.6), squeeze=False)
    ax = axes[0][0]
    for a in ovp["arms"]:
        pts = [p for p in a["curve"] if p["flops"] is not None]
        if not pts:
            continue
        xs = [p["flops"] for p in pts]
        line = ax.plot(xs, [100 * p["pass@1"] for p in pts], "o-", markersize=3, label=a["stage"])[0]
        if all(p["ci95"] and None not in p["ci95"] for p in pts):
            ax.fill_between(
                xs,
                [100 * p["ci95"][0] for p in pts],
                [100 * p["ci95"][1] for p in pts],
                alpha=0.15,
                color=line.get_color(),
            )
    ax.set_xlabel("FLOPs spent (PRM training and scoring included)")
    ax.set_title("held-out pass@1 % (95% CI)", fontsize=9)
    ax.legend(fontsize=7)
    if hack:
        ax = axes[0][1]
        a = hack[0]
        ser = a["hacking"]["series"]
        for k, label in (
            ("prm_score", "PRM score (min over steps)"),
            ("accuracy", "true accuracy"),
            ("prm_liked_wrong", "wrong answers the PRM liked"),
        ):
            pts = [(r["step"], r[k]) for r in ser if isinstance(r.get(k), (int, float))]
            if pts:
                ax.plot(*zip(*pts), ".-", markersize=2, lw=0.8, label=label)
        ax.set_ylim(0, 1)
        ax.set_xlabel("GRPO step")
        ax.set_title(f"{a['stage']}: the PRM's verdict vs the truth on its own rollouts", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------------------------
# writing


def write_report(
    run: str | Path, cpu_hour_price: float | None = None, gpu_hour_price: float | None = None, plots: bool = True
) -> dict:
    """Build the report and write RUN/report/ (atomically); returns the report with a "console" string added."""
    from tinyseek.io import atomic_dir

    run = Path(run)
    rep = build_report(run, cpu_hour_price, gpu_hour_price)
    data = load_run(run) if plots else None
    with atomic_dir(run / REPORT_DIR) as tmp:
        if plots:
            for name, fn, arg in (
                ("accuracy.png", plot_accuracy, rep),
                ("losses.png", plot_losses, data),
                ("rl.png", plot_rl, data),
                ("expert_load.png", plot_expert_load, data),
                ("outcome_vs_process.png", plot_outcome_vs_process, rep.get("outcome_vs_process")),
            ):
                if fn(arg, tmp / name):
                    rep["plots"].append(str(run / REPORT_DIR / name))
        (tmp / "report.json").write_text(json.dumps(rep, indent=2, default=str) + "\n", encoding="utf-8")
        (tmp / "report.md").write_text(render_markdown(rep), encoding="utf-8")
    rep["console"] = render_console(rep)
    return rep


def cli_report(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="tinyseek report",
        description="Write the report card of a recipe run: "
        "RUN/report/report.json, report.md and PNG plots; prints the tables.",
    )
    p.add_argument("run", help="a run directory written by `tinyseek run` / `tinyseek demo`")
    p.add_argument(
        "--cpu-hour-price", type=float, default=None, help="$ per CPU-machine-hour (default: the training loop's)"
    )
    p.add_argument(
        "--gpu-hour-price",
        type=float,
        default=None,
        help="$ per GPU-hour (default: the training loop's, $2 as DeepSeek-V3's report)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    a = p.parse_args(argv)
    rep = write_report(a.run, a.cpu_hour_price, a.gpu_hour_price, plots=not a.no_plots)
    print(rep["console"])
    return 0
