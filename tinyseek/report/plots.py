"""The report's PNG plots: accuracy per stage, training losses, GRPO's held-out curve and reward, expert balance.

Each plot function returns False (and writes nothing) when the run has nothing for it to draw. matplotlib is
imported on first use, with the Agg backend, so a report without plots (or a machine without a display) never
needs it.
"""

from __future__ import annotations

import math
from pathlib import Path

from tinyseek.report.cells import label
from tinyseek.report.run import RL_KEYS, evals_by_model, metric_value, stage_of


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(plt, fig, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_accuracy(rep: dict, path: Path) -> bool:
    evals = [e for e in rep["evals"] if e["pass@1"] is not None]
    if not evals:
        return False
    plt = pyplot()
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
    ax.set_xticks(list(xs), [label(e["model_stage"], e["model_kind"]).replace(" (", "\n(") for e in evals], fontsize=8)
    ax.set_ylabel("% of held-out problems")
    ax.set_ylim(0, 105)
    ax.set_title(f"Accuracy per stage (n = {evals[0]['n']} held-out problems)")
    ax.legend(fontsize=8, loc="upper left")
    return save(plt, fig, path)


LOSS_KEYS = (  # what each curve of a training stage is, for the legend
    ("loss", "-", "loss (what the optimizer minimises)"),
    ("ce", "--", "ce (next-token cross-entropy)"),
    ("kd", ":", "kd (KL to the teacher's top-k)"),
    ("eval_loss", "o", "eval_loss (held-out documents)"),
)


def grid(plt, n: int, width: float = 4.2, height: float = 3.0, cols: int = 3):
    """n panels in rows of at most `cols` (not one long strip), the spare panels hidden."""
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.6), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def plot_losses(data: dict, path: Path) -> bool:
    """Each supervised stage's losses over its steps, one panel a stage: the objective, and its parts where it has
    several (SFT's loss is the cross-entropy; pretraining adds the MTP and balance terms; distillation the KL)."""
    stages = [s for s in data["stages"] if s["kind"] in ("pretrain", "sft", "distill") and s["metrics"]]
    if not stages:
        return False
    plt = pyplot()
    fig, axes = grid(plt, len(stages))
    for ax, s in zip(axes, stages):
        steps = [r["step"] for r in s["metrics"]]
        for key, style, name in LOSS_KEYS:
            ys = [r.get(key) for r in s["metrics"]]
            pts = [(x, y) for x, y in zip(steps, ys) if isinstance(y, (int, float))]
            if pts and (key != "ce" or any(r.get("ce") != r.get("loss") for r in s["metrics"])):
                ax.plot(*zip(*pts), style, label=name, markersize=3)
        start = next(
            (stage_of(s["fields"].get(k), data["run"]) for k in ("init", "teacher") if s["fields"].get(k)), None
        )
        ax.set_title(label(s["name"], s["kind"]) + (f", from {start}" if start else ""), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (log scale)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle("Training losses of the supervised stages (nats per token)", fontsize=10)
    return save(plt, fig, path)


def plot_rl(data: dict, path: Path) -> bool:
    """Held-out pass@1 at the evaluation protocol over GRPO steps (every GRPO stage, 95% band), beside the
    training reward and response length of the first GRPO stage: learning, not only reward."""
    grpo = [s for s in data["stages"] if s["kind"] == "grpo" and s["metrics"]]
    if not grpo:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    ax = axes[0]
    run = data["run"]
    eval_of_model = evals_by_model(data)
    for s in grpo:
        pts = [
            (r["step"], r["eval_pass1"], r.get("eval_pass1_lo"), r.get("eval_pass1_hi"))
            for r in s["metrics"]
            if isinstance(r.get("eval_pass1"), (int, float))
        ]
        start = eval_of_model.get(stage_of(s["fields"].get("model"), run))
        if start and isinstance(metric_value(start, "pass@1"), (int, float)):
            lo, hi = metric_value(start, "pass@1", "ci95") or (None, None)
            pts.insert(0, (0, metric_value(start, "pass@1"), lo, hi))
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
    for ax, signal in zip(axes[1:], ("reward", "response length")):
        k = next((k for k in RL_KEYS[signal] if k in s["metrics"][0]), None)
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
        ax.set_title(f"{s['name']}: training {signal} ({k or 'not logged'})", fontsize=9)
        ax.set_xlabel("GRPO step")
    fig.suptitle("Reinforcement learning: held-out accuracy, and reward on the training prompts", fontsize=10)
    return save(plt, fig, path)


def plot_expert_load(data: dict, path: Path) -> bool:
    """MaxVio (max expert load / mean load - 1, the loss-free balancing paper's measure) per MoE layer over each MoE
    training stage's own steps, one panel a stage: stages that branch from one checkpoint are not a sequence."""
    stages = [s for s in data["stages"] if s["metrics"] and any("moe_maxvio" in r for r in s["metrics"])]
    if not stages:
        return False
    plt = pyplot()
    fig, axes = grid(plt, len(stages), width=4.0, height=2.8)
    n_layers = max(len(r["moe_maxvio"]) for s in stages for r in s["metrics"] if "moe_maxvio" in r)
    colors = plt.cm.viridis([i / max(1, n_layers - 1) for i in range(n_layers)])
    for ax, s in zip(axes, stages):
        rows = [r for r in s["metrics"] if "moe_maxvio" in r]
        for layer in range(n_layers):
            pts = [
                (r["step"], r["moe_maxvio"][layer])
                for r in rows
                if layer < len(r["moe_maxvio"]) and r["moe_maxvio"][layer] is not None
            ]
            if pts:
                ax.plot(*zip(*pts), color=colors[layer], lw=1, label=f"MoE layer {layer + 1}")
        start = next((stage_of(s["fields"].get(k), data["run"]) for k in ("init", "model") if s["fields"].get(k)), None)
        ax.set_title(label(s["name"], s["kind"]) + (f", from {start}" if start else ""), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("MaxVio")
    axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle("Expert balance per MoE layer: MaxVio = max / mean expert load - 1 (0 = even)", fontsize=10)
    return save(plt, fig, path)
