"""The outcome-vs-process experiment's part of the report card: its section, its Markdown and its plot.

The experiment is recipes/outcome-vs-process.toml; its figures are read from the same run files as the rest of
the card. Arms are compared pairwise on the same held-out problems (tinyseek.evaluate.paired_comparison) from the
per-problem results each arm's evaluations log (RUN/<arm>/heldout/step-N.jsonl; the recipe logs every problem).

It lives in report/, not beside the experiment's training code (train/grpo.py's process advantages,
train/prm.py), because it is built on the report's readers, cells and plots, and report/ sits above train/ in
the import order.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from tinyseek.errors import TinyseekError
from tinyseek.evaluate import paired_comparison
from tinyseek.report.cells import human, interval, num, pct, table
from tinyseek.report.plots import pyplot, save
from tinyseek.report.run import evals_by_model, metric_value, short_path, stage_of
from tinyseek.report.sections import ci_disjoint

PAIRED_RESAMPLES = 2000  # the paired bootstrap's resamples of the problems (seed 0: the same card from the same files)

# ----------------------------------------------------------------------------------------------
# the section


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


def _curve(ms: list[dict], prm_train: float, start: dict | None) -> list[dict]:
    """An arm's held-out pass@1 over steps and FLOPs (the PRM's training counted from step 0), from the
    evaluation of the checkpoint it started from on."""
    curve = []
    if start and metric_value(start, "pass@1") is not None:
        curve.append(
            {
                "step": 0,
                "flops": prm_train,
                "pass@1": metric_value(start, "pass@1"),
                "ci95": metric_value(start, "pass@1", "ci95"),
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
    return curve


def _process_signals(s: dict) -> dict:
    """What a process arm logged beyond the outcome arm: the step rule's verdicts, and for a PRM arm its score
    against the truth on the policy's own samples (the hacking series) and the wrong samples it liked most."""
    ms, out = s["metrics"], {}
    if any("step_correct" in r for r in ms):
        out["step_correct"] = [ms[0].get("step_correct"), ms[-1].get("step_correct")]
    if any("prm_score" in r for r in ms):
        keys = ("prm_score", "accuracy", "prm_liked_wrong", "prm_step_acc", "prm_score_right", "prm_score_wrong")
        out["hacking"] = {
            "series": [{"step": r["step"], **{k: r.get(k) for k in keys}} for r in ms],
            "windows": _windows(ms, keys),
        }
        liked = s["dir"] / "prm_liked_wrong.jsonl"
        if liked.is_file():
            rows = [json.loads(x) for x in liked.read_text(encoding="utf-8").splitlines() if x.strip()]
            out["liked_wrong_examples"] = sorted(rows, key=lambda r: (-r["step"], -r["prm_min_score"]))[:3]
            out["liked_wrong_logged"] = len(rows)
    return out


def _arm(s: dict, run: Path, eval_of_model: dict) -> dict:
    """One GRPO arm: its compute (rollouts, updates, the PRM's training and scoring) and its held-out curve."""
    f, ms = s["fields"], s["metrics"]
    prm_train = sum(r.get("prm_train_flops", 0.0) for r in ms)
    scoring = sum(r.get("prm_flops", 0.0) for r in ms)
    rollouts = sum(r.get("rollout_flops", 0.0) for r in ms) - scoring
    own = ms[-1].get("total_flops")  # the stage's cost meter; the PRM's training is the prm stage's
    total = None if own is None else own + prm_train
    curve = _curve(ms, prm_train, eval_of_model.get(stage_of(f.get("model"), run)))
    pr = f.get("process_reward") or None
    if isinstance(pr, str) and pr.startswith("prm:"):
        pr = "prm:" + short_path(pr[4:], run)
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
    arm.update(_process_signals(s))
    return arm


def _per_problem(problems: list[dict]) -> dict:
    """Each problem's pass@1 (the share of its samples that are right), keyed by its prompt and the how-many-th
    time that prompt is asked; a problem with an unscored sample is left out, as the evaluator's metrics do."""
    out, seen = {}, Counter()
    for p in problems:
        key = (p["prompt"], seen[p["prompt"]])
        seen[p["prompt"]] += 1
        c = p.get("correct")
        if c and all(isinstance(x, (int, float)) for x in c):
            out[key] = sum(c) / len(c)
    return out


def _final_problems(s: dict, step: int) -> dict | None:
    """An arm's per-problem results at its last held-out evaluation (RUN/<arm>/heldout/step-N.jsonl: the first
    `heldout_logged` held-out problems), or None when that evaluation logged none."""
    f = s["dir"] / "heldout" / f"step-{step}.jsonl"
    if not f.is_file():
        return None
    return _per_problem([json.loads(x) for x in f.read_text(encoding="utf-8").splitlines() if x.strip()])


def _paired_scores(data: dict) -> list[tuple[str, str, list[float], list[float]]]:
    """(A, B, A's scores, B's scores) on the problems both were evaluated on: each GRPO arm against the checkpoint
    it started from (its gain), then each pair of arms in the recipe's order; per-problem pass@1 from the start's
    eval.json and from each arm's last evaluation."""
    grpo = [s for s in data["stages"] if s["kind"] == "grpo" and s["metrics"]]
    finals = {}
    for s in grpo:
        steps = [r["step"] for r in s["metrics"] if isinstance(r.get("eval_pass1"), (int, float))]
        if steps and (pp := _final_problems(s, steps[-1])):
            finals[s["name"]] = pp
    named = []
    eval_of_model = evals_by_model(data)
    for s in grpo:
        start = stage_of(s["fields"].get("model"), data["run"])
        ev = eval_of_model.get(start)
        if s["name"] in finals and ev and ev.get("problems"):
            named.append((f"{start} (start)", _per_problem(ev["problems"]), s["name"], finals[s["name"]]))
    names = list(finals)
    named += [(a, finals[a], b, finals[b]) for i, a in enumerate(names) for b in names[i + 1 :]]
    out = []
    for a, pa, b, pb in named:
        keys = [k for k in pa if k in pb]
        if keys:
            out.append((a, b, [pa[k] for k in keys], [pb[k] for k in keys]))
    return out


def _compare(a: str, b: str, xs: list[float], ys: list[float]) -> dict:
    return {"a_stage": a, "b_stage": b, **paired_comparison(xs, ys, PAIRED_RESAMPLES)}


def pooled_paired(datas: list[dict]) -> list[dict]:
    """The paired comparisons of several runs of the experiment (its seeds) pooled: each pair's per-problem scores
    concatenated over the runs that have it (`runs` says how many), then compared as one sample of pairs."""
    pooled: dict = {}
    for d in datas:
        if not _has_process_arm(d):
            raise TinyseekError(f"{d['run']}: not an outcome-vs-process run (no GRPO stage with advantage = process)")
        for a, b, xs, ys in _paired_scores(d):
            p = pooled.setdefault((a, b), ([], [], []))
            p[0].extend(xs)
            p[1].extend(ys)
            p[2].append(d["run"])
    return [{**_compare(a, b, xs, ys), "runs": len(runs)} for (a, b), (xs, ys, runs) in pooled.items()]


def _prm_stages(data: dict) -> list[dict]:
    """Each PRM stage's training steps, FLOPs and held-out step accuracy (from its summary.json)."""
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
    return prm


def _has_process_arm(data: dict) -> bool:
    return any(
        s["kind"] == "grpo" and s["metrics"] and s["fields"].get("advantage") == "process" for s in data["stages"]
    )


def outcome_vs_process(data: dict, pool: list[dict] | tuple = ()) -> dict | None:
    """The GRPO arms of a run that has a process-supervised one (advantage = process): each arm's held-out pass@1
    over steps and FLOPs with 95% intervals, its compute (rollouts, updates, the PRM's training and scoring),
    the PRM's held-out step accuracy, the PRM arm's score against the truth on the policy's own samples (and
    samples it liked that were wrong), and paired differences on the same held-out problems (each arm against its
    start, each pair of arms), also pooled with the runs in `pool` (other seeds; `load_run`'s dicts) when given.
    None for a run without a process arm."""
    if not _has_process_arm(data):
        return None
    grpo = [s for s in data["stages"] if s["kind"] == "grpo" and s["metrics"]]
    run = data["run"]
    eval_of_model = evals_by_model(data)
    arms = [_arm(s, run, eval_of_model) for s in grpo]
    base = next((a for a in arms if a["advantage"] == "outcome"), None)
    for a in arms:
        if base is not None and a is not base and a["final"] and base["final"]:
            a["vs_outcome_points"] = 100 * (a["final"]["pass@1"] - base["final"]["pass@1"])
            a["vs_outcome_ci_disjoint"] = ci_disjoint(a["final"]["ci95"], base["final"]["ci95"])
    out = {"arms": arms, "prm": _prm_stages(data), "paired": [_compare(*x) for x in _paired_scores(data)]}
    if pool:
        out["paired_pooled"] = pooled_paired([data, *pool])
        out["pooled_runs"] = [Path(d["run"]).name for d in (data, *pool)]  # names: no machine's directories
    return out


# ----------------------------------------------------------------------------------------------
# text


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
                num(a["steps"], "{}"),
                human(a["flops"]),
                human(a["flops_prm"]) if a["flops_prm"] else "—",
                pct(fin.get("pass@1")),
                interval(fin.get("ci95")),
                "—"
                if vs is None
                else f"{vs:+.1f}" + (" (CIs disjoint)" if a.get("vs_outcome_ci_disjoint") else " (CIs overlap)"),
            ]
        )
    return head, rows


def _curve_table(ovp: dict) -> list[str]:
    curve = [
        [a["stage"], f"{p['step']}", human(p["flops"]), pct(p["pass@1"]), interval(p["ci95"])]
        for a in ovp["arms"]
        for p in a["curve"]
    ]
    return ["### Held-out pass@1 over training", ""] + table(
        ["arm", "step", "FLOPs so far", "pass@1 %", "95% CI"], curve
    )


def _paired_table(rows: list[dict], pooled: bool) -> list[str]:
    """The paired differences as a table; pooled ones open with how many runs each pools."""
    cells = [
        ([f"{r['runs']}"] if pooled else [])
        + [
            r["a_stage"],
            r["b_stage"],
            f"{r['n']}",
            f"{100 * r['diff']:+.1f}",
            interval(r["ci95"]),
            f"{r['b_better']} / {r['a_better']} / {r['ties']}",
            f"{r['sign_p']:.2g}",
        ]
        for r in rows
    ]
    head = ["A", "B", "problems", "B - A, points", "95% CI", "B better / A better / tied", "sign test p"]
    return table((["runs"] if pooled else []) + head, cells)


def _paired_lines(ovp: dict) -> list[str]:
    out = []
    if ovp.get("paired"):
        out += ["### Paired differences on the same held-out problems", ""] + _paired_table(ovp["paired"], False)
        out += [
            "",
            "Per-problem pass@1 of B minus A over the problems both were evaluated on (the start's evaluation, each "
            f"arm's last one), with a paired bootstrap 95% interval ({PAIRED_RESAMPLES:,} resamples of the problems, "
            "seed 0) and an exact two-sided sign test over the problems where they differ. Pairing takes the "
            "problems' own difficulty out of the comparison: an interval excluding 0 resolves the order even where "
            "the two arms' own intervals overlap. One run: the spread between seeds is not in it.",
            "",
        ]
    if ovp.get("paired_pooled"):
        out += ["### Paired differences pooled over runs (seeds)", ""] + _paired_table(ovp["paired_pooled"], True)
        out += [
            "",
            "The same comparisons with the pairs of every run concatenated (this run and `--pool`'s: "
            + ", ".join(f"`{r}`" for r in ovp["pooled_runs"])
            + "); a problem evaluated in several runs is several pairs.",
            "",
        ]
    return out


def _compute_table(ovp: dict) -> list[str]:
    comp = [
        [
            a["stage"],
            human(a["flops_rollouts"]),
            human(a["flops_updates"]),
            human(a["flops_prm_train"]) if a["flops_prm_train"] else "—",
            human(a["flops_prm_scoring"]) if a["flops_prm_scoring"] else "—",
            num(a["wall_s"]),
        ]
        for a in ovp["arms"]
    ]
    return ["### Compute per arm", ""] + table(
        ["arm", "rollouts", "updates", "PRM training", "PRM scoring", "wall s"], comp
    )


def _prm_lines(ovp: dict) -> list[str]:
    out = []
    for p in ovp["prm"]:
        out += [
            f"The PRM (`{p['stage']}`, {p.get('train_steps')} steps, {human(p.get('flops'))} FLOPs), on held-out "
            f"traces and one corruption of each: step accuracy {pct(p.get('step_acc'))}% (good steps "
            f"{pct(p.get('good_step_acc'))}%, bad steps {pct(p.get('bad_step_acc'))}%); the corrupted step scored "
            f"below its gold version in {pct(p.get('pair_acc'))}% of {p.get('pairs')} pairs.",
            "",
        ]
    return out


def _hacking_lines(a: dict) -> list[str]:
    """A PRM arm's score against the truth over windows of steps, and the wrong samples it liked most."""
    rows = [
        [
            f"{w['steps'][0]}-{w['steps'][1]}",
            num(w["prm_score"], "{:.3f}"),
            pct(w["accuracy"]),
            pct(w["prm_score_right"]),
            pct(w["prm_score_wrong"]),
            pct(w["prm_liked_wrong"]),
            pct(w["prm_step_acc"]),
        ]
        for w in a["hacking"]["windows"]
    ]
    out = [f"### Reward hacking, not measured here: what the PRM said vs what was true ({a['stage']})", ""]
    out += table(
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
        "On the policy's own rollouts, means over windows of steps of one run, without intervals. The share of "
        "wrong answers scored above 0.5 is how often the PRM was fooled. A PRM score that rises while the accuracy "
        "does not is what reward hacking would look like, but not only that: the PRM reads the frozen SFT model's "
        "log-probabilities, so a policy that merely grew sharper raises its score too. This table does not tell "
        "the two apart.",
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


def render_outcome_vs_process(ovp: dict) -> list[str]:
    out = ["## Outcome rewards vs process rewards", ""] + table(*ovp_arm_rows(ovp)) + [""]
    out += [
        "Each arm starts from the same checkpoint and stops when its cost meter reaches the common compute budget "
        "(max_flops): rollouts, updates, and for a learned PRM its training and its scoring of every rollout. "
        "pass@1 is on the held-out problems at the evaluation protocol, with 95% intervals over problems.",
        "",
    ]
    out += _paired_lines(ovp)
    out += _curve_table(ovp) + [""]
    out += _compute_table(ovp) + [""]
    out += _prm_lines(ovp)
    for a in ovp["arms"]:
        if a.get("hacking"):
            out += _hacking_lines(a)
    return out


# ----------------------------------------------------------------------------------------------
# the plot


def plot_outcome_vs_process(ovp: dict | None, path: Path) -> bool:
    """Held-out pass@1 of every arm against FLOPs spent (95% bands), and the PRM arm's score vs true accuracy."""
    if not ovp:
        return False
    plt = pyplot()
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
    return save(plt, fig, path)
