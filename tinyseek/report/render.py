"""The report as text: report.md, and the tables printed on the console.

report.md holds every section, each table with the sentences that say how to read it; the console shows the
main tables and where the card was written.
"""

from __future__ import annotations

from pathlib import Path

from tinyseek.report.cells import human, interval, label, money, num, pct, table
from tinyseek.report.outcome_vs_process import ovp_arm_rows, render_outcome_vs_process
from tinyseek.report.r1_zero import render_r1_zero
from tinyseek.report.run import REPORT_DIR


def on_data(rep: dict, row: dict) -> str:
    """ " on ood" where a run evaluates on several data sets (test and out-of-distribution), else nothing."""
    many = len({e.get("data") for e in rep["evals"]}) > 1
    return f" on {row['data']}" if many and row.get("data") else ""


def summary(rep: dict) -> list[str]:
    """The card's opening, in plain words: what each trained stage did to held-out accuracy against the model it
    started from, what two stages from one start did at their costs, and what the whole run took."""
    out = []
    for c in rep["comparisons"]:
        if c["pass@1"] is None or c["parent_pass@1"] is None:
            continue
        now, then = 100 * c["pass@1"], 100 * c["parent_pass@1"]
        sure = "the 95% intervals do not overlap" if c["ci_disjoint"] else "within the noise: the 95% intervals overlap"
        if c["relation"] == "teacher":
            size = c.get("active_params_ratio")
            rel = f"{100 * c['ratio']:.0f}% of its teacher's {then:.1f}%" if c["ratio"] else f"its teacher: {then:.1f}%"
            out.append(
                f"- **{c['stage']}**, distilled from {c['parent']}"
                + (f" at {size:.2f} of its active parameters" if size else "")
                + f": {now:.1f}% of the held-out problems right ({rel})."
            )
        else:
            out.append(
                f"- **{c['stage']}** took {c['parent']} from {then:.1f}% to {now:.1f}% of the held-out problems "
                f"right{on_data(rep, c)} ({c['delta_points']:+.1f} points; {sure})."
            )
    for s in rep.get("siblings") or []:
        if s["a_pass@1"] is None or s["b_pass@1"] is None:
            continue
        out.append(
            f"- From the same start ({s['parent']}){on_data(rep, s)}: {s['a']} reached {100 * s['a_pass@1']:.1f}% for "
            f"{human(s['a_flops'])} FLOPs, {s['b']} {100 * s['b_pass@1']:.1f}% for {human(s['b_flops'])}."
        )
    t = rep["totals"]
    out.append(
        f"- The whole run: {t['wall_s']:.0f} s of stage wall time, {human(t['flops'])} FLOPs, "
        f"${t['cost_usd']:.4f} at the prices below."
    )
    return out


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
                label(e["model_stage"], e["model_kind"]),
                f"{p['active'] / 1e6:.2f}M / {p['total'] / 1e6:.2f}M" if p else "—",
                pct(e["pass@1"]),
                interval(e["pass@1_ci95"]),
                pct(e["cons@k"]),
                pct(e["pass@k"]),
                pct(e["greedy"]),
                num(e["samples"], "{}"),
                num(e["n"], "{}"),
            ]
        )
    return head, rows


def comparison_rows(rep: dict) -> tuple[list[str], list[list[str]]]:
    head = ["stage", "vs", "pass@1 %", "vs %", "delta (points)", "ratio", "95% CIs disjoint", "active params ratio"]
    rows = [
        [
            c["stage"] + on_data(rep, c),
            f"{c['parent']} ({c['relation']})",
            pct(c["pass@1"]),
            pct(c["parent_pass@1"]),
            num(c["delta_points"], "{:+.1f}"),
            num(c["ratio"], "{:.2f}"),
            {True: "yes", False: "no", None: "—"}[c["ci_disjoint"]],
            num(c.get("active_params_ratio"), "{:.2f}"),
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
            c["parent"] + on_data(rep, c),
            label(c["a"], c["a_kind"]),
            pct(c["a_pass@1"]),
            label(c["b"], c["b_kind"]),
            pct(c["b_pass@1"]),
            num(c["delta_points"], "{:+.1f}"),
            {True: "yes", False: "no", None: "—"}[c["ci_disjoint"]],
            human(c["a_flops"]),
            human(c["b_flops"]),
        ]
        for c in rep["siblings"]
    ]
    return head, rows


def curve_rows(rep: dict) -> tuple[list[str], list[list[str]]]:
    head = ["GRPO stage", "step", "held-out pass@1 %", "95% CI"]
    rows = [
        [
            c["stage"],
            f"{p['step']}" + (f" ({p['from']})" if p.get("from") else ""),
            pct(p["pass@1"]),
            interval(p["ci95"]),
        ]
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
            num(r["wall_s"]),
            num(r["train_s"]),
            num(r["steps"], "{}"),
            num(r["tokens"], "{:,}"),
            num(r["tokens_per_s"], "{:,.0f}"),
            human(r["flops"]),
            num(r.get("final_loss"), "{:.3f}"),
            num(r["device_hours"], "{:.4f}"),
            num(r["cost_usd"], "{:.4f}"),
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
        rows.append([c["what"], human(c["flops"]), w, money(c["device_hours"]), money(c["cost_usd"])])
    return head, rows


def render_markdown(rep: dict) -> str:
    out = [f"# Report card: {rep['recipe']} ({rep['run']})", "", "In short:", "", *summary(rep), ""]
    out += [f"Machine: {rep['machine']}.", ""]
    t = rep["totals"]
    out += [
        f"Total wall time of the stages: {t['wall_s']:.0f} s. Every figure below is read from this run's files "
        "(stage.json, summary.json, metrics.jsonl, eval.json); the projections' assumptions are stated beside them.",
        "",
    ]
    out += ["## Accuracy on the held-out problems", ""] + table(*accuracy_rows(rep)) + [""]
    out += [
        "pass@1 is the mean over k samples per problem; the 95% interval is over problems. cons@k is majority vote "
        "over the k samples, pass@k any of them; greedy is temperature 0.",
        "",
    ]
    if rep["comparisons"]:
        out += ["## Each stage against the one it started from", ""] + table(*comparison_rows(rep)) + [""]
    if rep.get("siblings"):
        out += ["## Stages that started from the same checkpoint", ""] + table(*sibling_rows(rep)) + [""]
        out += [
            "Two ways of training the same start: FLOPs are each stage's compute (a GRPO stage's include its "
            "rollouts), so a reader can see what each point of accuracy cost.",
            "",
        ]
    if any(c["heldout"] for c in rep.get("rl_curves", [])):
        out += ["## Held-out accuracy during GRPO", ""] + table(*curve_rows(rep)) + [""]
        out += [
            "Held-out pass@1 during GRPO at the evaluation protocol (the stage's eval_samples samples at "
            "eval_temperature), step 0 being the evaluation of the checkpoint it started from.",
            "",
        ]
    if rep["rl"]:
        r = rep["rl"]
        bits = [
            f"{k} {num(v['first'], '{:.3g}')} -> {num(v['last'], '{:.3g}')}"
            for k, v in r.items()
            if isinstance(v, dict)
        ]
        out += [
            "## GRPO's own signals, on its training prompts",
            "",
            f"{r['stage']}: {r['steps']} steps; " + "; ".join(bits) + " (first step -> last step; the reward is what "
            "GRPO maximises, on prompts it trains on: the held-out table above is the measure of learning).",
            "",
        ]
    if rep.get("outcome_vs_process"):
        out += render_outcome_vs_process(rep["outcome_vs_process"])
    if rep.get("r1_zero"):
        out += render_r1_zero(rep["r1_zero"])
    out += (
        ["## Stages", "", "What each stage was given:", ""]
        + [f"- **{label(r['name'], r['kind'])}**: {r['given']}" for r in rep["stages"]]
        + [""]
    )
    out += table(*stage_rows(rep)) + [""]
    if any(r.get("resumed") for r in rep["stages"]):
        out += [
            "A resumed stage's wall time is its last attempt's only; train s (the loop's own clock) covers every "
            "attempt.",
            "",
        ]
    out += ["## Cost", ""] + table(*cost_rows(rep)) + [""]
    out += [f"- {c['what']}: {c['basis']}." for c in rep["cost"]] + [""]
    if rep["plots"]:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in rep["plots"]] + [""]
    return "\n".join(out)


def render_console(rep: dict) -> str:
    def fmt(head, rows):
        w = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
        line = lambda r: "  ".join(str(x).ljust(n) for x, n in zip(r, w))  # noqa: E731
        return "\n".join([line(head), line(["-" * n for n in w])] + [line(r) for r in rows])

    said = [line.replace("**", "") for line in summary(rep)]
    parts = [f"report card: {rep['run']}   ({rep['machine']})", "", *said, "", fmt(*accuracy_rows(rep))]
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
