"""The report's sections, built from what `run.load_run` read: stages and costs, evaluations, comparisons, RL curves.

Every figure comes from the stages' files; the only constants are labelled assumptions: prices per device-hour
(the caller's), the H200 throughputs measured on a lent H200 (transformers' DeepseekV3 of the `gpu-500m` shape;
`H200_SOURCE` says how), and DeepSeek-V3's published budget (2.788M H800-hours, $5.576M, 14.8T tokens; report
2412.19437 §1).

Stages compare against their parent: an evaluated stage whose config starts from another evaluated stage's
checkpoint (`init`; GRPO's `model`; `teacher` for distillation) gets a delta row. That is how the report says
"GRPO vs the SFT it started from" and "student vs teacher" without knowing the recipe's names.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from tinyseek.report.given import given
from tinyseek.report.run import RL_KEYS, eval_data, metric_value, model_params, read_json, stage_of

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


def machine(threads: int | None = None) -> str:
    """The machine the report is written on; `threads`: the torch threads the run used (its recipe.json's), else
    this process's."""
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
    threads = threads or torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} ({threads} threads){gpu}"


def ci_disjoint(a: list[float] | None, b: list[float] | None) -> bool | None:
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


def stage_entry(s: dict, run: Path, cpu_price: float, gpu_price: float) -> dict:
    """A stage's row: what it was given, its time, tokens, FLOPs and cost, and what it generated."""
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
        row["generated_tokens"] = (read_json(s["dir"] / "stats.json") or {}).get("generated_tokens")
    if s["kind"] == "grpo":
        row["rollout_tokens"] = rollout_tokens(s["metrics"])
    return row


def eval_entry(s: dict, by_name: dict, run: Path) -> dict:
    """An evaluation stage's accuracies (from its eval.json) and the model it evaluated."""
    e = s["eval"]
    model = e.get("model") or s["fields"].get("model")
    model_stage = stage_of(model, run)
    ms = by_name.get(model_stage)
    params = model_params(Path(model)) if model else None
    K = e.get("samples")
    g = e.get("greedy") or {}
    return {
        "stage": s["name"],
        "model_stage": model_stage,
        "model_kind": ms["kind"] if ms else None,
        "data": eval_data(e),
        "n": e.get("n_problems"),
        "samples": K,
        "temperature": (e.get("params") or {}).get("temperature"),
        "pass@1": metric_value(e, "pass@1"),
        "pass@1_ci95": metric_value(e, "pass@1", "ci95"),
        "pass@k": metric_value(e, f"pass@{K}"),
        "cons@k": metric_value(e, f"cons@{K}"),
        "greedy": metric_value(g, "pass@1"),
        "greedy_ci95": metric_value(g, "pass@1", "ci95"),
        "format": metric_value(e, "format"),
        "mean_response_tokens": metric_value(e, "mean_length"),
        "params": params,
    }


def comparisons(evals: list[dict], by_name: dict, eval_of: dict, run: Path) -> list[dict]:
    """Each evaluated stage against the evaluated stage it started from, on the same data."""
    out = []
    for e in evals:
        st = by_name.get(e["model_stage"])
        if st is None:
            continue
        for rel in ("init", "model", "teacher"):  # sft/pretrain/distill start from init, grpo from model
            parent = stage_of(st["fields"].get(rel), run)
            pe = eval_of.get((parent, e["data"]))
            if parent is None or pe is None or pe is e or e["pass@1"] is None or pe["pass@1"] is None:
                continue
            comp = {
                "stage": e["model_stage"],
                "kind": st["kind"],
                "parent": parent,
                "relation": rel,
                "data": e["data"],
                "pass@1": e["pass@1"],
                "parent_pass@1": pe["pass@1"],
                "delta_points": 100 * (e["pass@1"] - pe["pass@1"]),
                "ratio": e["pass@1"] / pe["pass@1"] if pe["pass@1"] else None,
                "ci_disjoint": ci_disjoint(e["pass@1_ci95"], pe["pass@1_ci95"]),
            }
            if e["params"] and pe["params"]:
                comp["active_params_ratio"] = e["params"]["active"] / pe["params"]["active"]
            out.append(comp)
    return out


def totals(stage_rows: list[dict]) -> dict:
    """The run's wall time, FLOPs, cost, and its tokens: trained on, and generated (evaluations, rejection
    sampling, GRPO's rollouts)."""
    eval_tokens = sum(r.get("generated_tokens") or 0 for r in stage_rows if r["kind"] != "sample")
    sample_tokens = sum(r.get("generated_tokens") or 0 for r in stage_rows if r["kind"] == "sample")
    rollout = sum(r.get("rollout_tokens") or 0 for r in stage_rows)
    return {
        "wall_s": sum(r["wall_s"] or 0 for r in stage_rows),
        "flops": sum(r["flops"] or 0 for r in stage_rows),
        "train_tokens": sum(r["tokens"] or 0 for r in stage_rows if r["kind"] in ("pretrain", "sft", "distill")),
        "rl_tokens": sum(r["tokens"] or 0 for r in stage_rows if r["kind"] == "grpo"),  # GRPO's update tokens
        "generated_tokens_eval": eval_tokens,
        "generated_tokens_sample": sample_tokens,
        "rollout_tokens": rollout,
        "generated_tokens": eval_tokens + sample_tokens + rollout,  # every token a model generated
        "device_hours": sum(r["device_hours"] for r in stage_rows),
        "cost_usd": sum(r["cost_usd"] for r in stage_rows),
    }


def costs(t: dict, cpu_price: float, gpu_price: float) -> list[dict]:
    """This run measured, the same token counts projected onto one H200 (training tokens at the training rate,
    generated tokens at the generation rate), and DeepSeek-V3's published budget."""
    from tinyseek import cost
    from tinyseek.config import ModelConfig

    train_tokens, gen_tokens = t["train_tokens"] + t["rl_tokens"], t["generated_tokens"]
    g = ModelConfig.preset("gpu-500m")
    seq = 1024
    proj_train_s = train_tokens / H200_TRAIN_TOKENS_PER_S
    proj_gen_s = gen_tokens / H200_GENERATE_TOKENS_PER_S
    proj_hours = (proj_train_s + proj_gen_s) / 3600
    v3 = ModelConfig.preset("deepseek-v3-671b")
    v3_flops = V3_TOKENS * cost.train_flops_per_token(v3, 4096)
    return [
        {
            "what": "this run (measured)",
            "flops": t["flops"],
            "wall_s": t["wall_s"],
            "device_hours": t["device_hours"],
            "cost_usd": t["cost_usd"],
            "basis": f"stage wall times; ${cpu_price}/CPU-machine-hour, ${gpu_price}/GPU-hour (configurable)",
        },
        {
            "what": "same token counts, gpu-500m on one H200 (projected)",
            "flops": train_tokens * cost.train_flops_per_token(g, seq)
            + gen_tokens * cost.inference_flops_per_token(g, seq // 2),
            "wall_s": proj_hours * 3600,
            "device_hours": proj_hours,
            "cost_usd": proj_hours * gpu_price,
            "train_tokens": train_tokens,
            "generated_tokens": gen_tokens,
            "train_s": proj_train_s,
            "generate_s": proj_gen_s,
            "basis": (
                f"{train_tokens:,} training tokens (GRPO's updates included) at "
                f"{H200_TRAIN_TOKENS_PER_S:,.0f}/s = {proj_train_s:,.0f} s, and {gen_tokens:,} generated tokens "
                f"(GRPO rollouts {t['rollout_tokens']:,}, rejection sampling {t['generated_tokens_sample']:,}, "
                f"evaluations {t['generated_tokens_eval']:,}; GRPO's in-training evaluations not counted) at "
                f"{H200_GENERATE_TOKENS_PER_S:,.0f}/s = {proj_gen_s:,.0f} s; {H200_SOURCE}; ${gpu_price}/GPU-hour"
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


def siblings(evals: list[dict], stage_rows: list[dict], by_name: dict, run: Path) -> list[dict]:
    """Evaluated stages that start from the same checkpoint, on the same data: what each kind of training bought,
    at what compute."""
    flops_of = {r["name"]: r["flops"] for r in stage_rows}
    starts = {e["model_stage"] for e in evals}
    parent_of = {}
    for name in starts:
        st = by_name.get(name)
        if st is not None:
            parent_of[name] = next(
                (p for rel in ("init", "model") if (p := stage_of(st["fields"].get(rel), run)) in starts), None
            )
    out = []
    paired = [e for e in evals if parent_of.get(e["model_stage"]) and e["pass@1"] is not None]
    for i, ea in enumerate(paired):
        for eb in paired[i + 1 :]:
            a, b = ea["model_stage"], eb["model_stage"]
            if a == b or parent_of[a] != parent_of[b] or ea["data"] != eb["data"]:
                continue
            out.append(
                {
                    "parent": parent_of[a],
                    "data": ea["data"],
                    "a": a,
                    "a_kind": by_name[a]["kind"],
                    "b": b,
                    "b_kind": by_name[b]["kind"],
                    "a_pass@1": ea["pass@1"],
                    "b_pass@1": eb["pass@1"],
                    "delta_points": 100 * (ea["pass@1"] - eb["pass@1"]),
                    "ci_disjoint": ci_disjoint(ea["pass@1_ci95"], eb["pass@1_ci95"]),
                    "a_flops": flops_of.get(a),
                    "b_flops": flops_of.get(b),
                }
            )
    return out


def rl_curves(data: dict, eval_of: dict, first_eval: dict) -> list[dict]:
    """The held-out curve of every GRPO stage, at the evaluation protocol, from its parent's evaluation on (on the
    stage's held-out records, else the parent's first evaluation)."""
    run = data["run"]
    curves = []
    for s in data["stages"]:
        if s["kind"] != "grpo" or not s["metrics"]:
            continue
        pts = [
            {"step": r["step"], "pass@1": r["eval_pass1"], "ci95": [r.get("eval_pass1_lo"), r.get("eval_pass1_hi")]}
            for r in s["metrics"]
            if isinstance(r.get("eval_pass1"), (int, float))
        ]
        parent = stage_of(s["fields"].get("model"), run)
        held = Path(s["fields"]["eval_data"]).stem if s["fields"].get("eval_data") else None
        pe = eval_of.get((parent, held)) or first_eval.get(parent)
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
    return curves


def rl_summary(data: dict) -> dict:
    """The first GRPO stage's training reward, accuracy and response length, first step and last."""
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
    return rl


def build_sections(data: dict, cpu_price: float, gpu_price: float) -> dict:
    """The report as a JSON-able dict, every section but an experiment's own (also the source of the Markdown and
    the console tables)."""
    run = data["run"]
    by_name = {s["name"]: s for s in data["stages"]}
    stage_rows = [stage_entry(s, run, cpu_price, gpu_price) for s in data["stages"]]
    evals = [eval_entry(s, by_name, run) for s in data["stages"] if s["eval"]]
    eval_of = {(e["model_stage"], e["data"]): e for e in evals if e["model_stage"]}
    first_eval: dict = {}
    for e in evals:
        first_eval.setdefault(e["model_stage"], e)
    t = totals(stage_rows)
    return {
        "run": str(run),
        "recipe": data["recipe"].get("name"),
        "machine": machine(data["recipe"].get("threads")),
        "stages": stage_rows,
        "evals": evals,
        "comparisons": comparisons(evals, by_name, eval_of, run),
        "siblings": siblings(evals, stage_rows, by_name, run),
        "cost": costs(t, cpu_price, gpu_price),
        "rl": rl_summary(data),
        "rl_curves": rl_curves(data, eval_of, first_eval),
        "totals": t,
        "prices": {"cpu_hour_usd": cpu_price, "gpu_hour_usd": gpu_price},
        "plots": [],
    }
