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
    """An arm's held-out pass@1 over steps and FLOPs (the PRM's labelling and training counted from step 0),
    from the evaluation of the checkpoint it started from on; `at_budget` marks the evaluation where the arms'
    common budget was reached (eval_at_flops), and a PRM arm's points carry the PRM's verdict on the same
    samples (`prm`: its score, its score of the wrong ones, the share of wrong ones it liked, with intervals)."""
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
            "at_budget": bool(r.get("at_eval_flops")),
            **({"prm": _prm_verdict(r)} if isinstance(r.get("eval_prm_score"), (int, float)) else {}),
        }
        for r in ms
        if isinstance(r.get("eval_pass1"), (int, float))
    ]
    return curve


PRM_VERDICT = ("prm_score", "prm_score_right", "prm_score_wrong", "prm_liked_wrong")


def _prm_verdict(r: dict) -> dict:
    """The PRM's verdict on one held-out evaluation's samples (train/process_reward.heldout_metrics)."""
    out = {}
    for k in PRM_VERDICT:
        v = r.get(f"eval_{k}")
        ok = isinstance(v, (int, float)) and math.isfinite(v)
        out[k] = v if ok else None
        lo, hi = r.get(f"eval_{k}_lo"), r.get(f"eval_{k}_hi")
        # scores and shares lie in [0, 1]: so does their interval (the logged one is a normal approximation)
        out[f"{k}_ci95"] = [max(0.0, lo), min(1.0, hi)] if ok and None not in (lo, hi) else None
    return out


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


def _budget_step(ms: list[dict]) -> int:
    """The step an arm is compared at: where it reached the common budget (eval_at_flops), else its last."""
    return next((r["step"] for r in ms if r.get("at_eval_flops")), ms[-1]["step"])


def _arm(s: dict, run: Path, eval_of_model: dict) -> dict:
    """One GRPO arm at the common budget: its compute (rollouts, updates, the PRM's labelling, training and
    scoring) up to the step it was compared at, and its held-out curve (beyond that step too, for an arm that
    ran past the budget)."""
    f, all_ms = s["fields"], s["metrics"]
    at = _budget_step(all_ms)
    ms = [r for r in all_ms if r["step"] <= at]
    prm_train = sum(r.get("prm_train_flops", 0.0) for r in ms)
    scoring = sum(r.get("prm_flops", 0.0) for r in ms)
    rollouts = sum(r.get("rollout_flops", 0.0) for r in ms) - scoring
    own = ms[-1].get("total_flops")  # the stage's cost meter; the PRM's training is the prm stage's
    total = None if own is None else own + prm_train
    curve = _curve(all_ms, prm_train, eval_of_model.get(stage_of(f.get("model"), run)))
    pr = f.get("process_reward") or None
    prm_stage = None
    if isinstance(pr, str) and pr.startswith("prm:"):
        prm_stage = stage_of(pr[4:], run)  # the PRM stage of this run it scores with (None: a PRM from elsewhere)
        pr = "prm:" + short_path(pr[4:], run)
    arm = {
        "stage": s["name"],
        "advantage": f.get("advantage", "outcome"),
        "process_reward": pr,
        "prm_stage": prm_stage,
        "steps": at,
        "steps_run": all_ms[-1]["step"],
        "max_flops": f.get("max_flops"),
        "eval_at_flops": f.get("eval_at_flops") or None,
        "flops": total,
        "flops_rollouts": rollouts,
        "flops_updates": None if own is None else own - rollouts - scoring,
        "flops_prm_train": prm_train,
        "flops_prm_scoring": scoring,
        "flops_prm": prm_train + scoring,
        "wall_s": (s["marker"] or {}).get("wall_s"),
        "curve": curve,
        "final": next((p for p in curve if p["step"] == at), curve[-1] if curve else None),
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
    eval.json and from each arm's evaluation at the common budget (its last, for an arm that stopped there)."""
    grpo = [s for s in data["stages"] if s["kind"] == "grpo" and s["metrics"]]
    finals = {}
    for s in grpo:
        at = _budget_step(s["metrics"])
        steps = [r["step"] for r in s["metrics"] if isinstance(r.get("eval_pass1"), (int, float)) and r["step"] <= at]
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
            out.append((a, b, [pa[k] for k in keys], [pb[k] for k in keys], keys))
    return out


def _compare(a: str, b: str, xs: list[float], ys: list[float]) -> dict:
    return {"a_stage": a, "b_stage": b, **paired_comparison(xs, ys, PAIRED_RESAMPLES)}


def pooled_paired(datas: list[dict]) -> list[dict]:
    """The paired comparisons of several runs of the experiment (its seeds) pooled by problem: each problem's
    score under A and under B averaged over the runs that evaluated it (`runs` says how many runs have the pair),
    then compared as pairs over problems. The seeds share their held-out problems, so a problem is one pair
    however many runs saw it: the bootstrap resamples problems, not (run, problem) rows, which would count one
    problem's difficulty several times as independent evidence."""
    pooled: dict = {}
    for d in datas:
        if not _has_process_arm(d):
            raise TinyseekError(f"{d['run']}: not an outcome-vs-process run (no GRPO stage with advantage = process)")
        for a, b, xs, ys, keys in _paired_scores(d):
            per, runs = pooled.setdefault((a, b), ({}, []))
            for k, x, y in zip(keys, xs, ys):
                per.setdefault(k, []).append((x, y))
            runs.append(d["run"])
    out = []
    for (a, b), (per, runs) in pooled.items():
        xs = [sum(x for x, _ in v) / len(v) for v in per.values()]
        ys = [sum(y for _, y in v) / len(v) for v in per.values()]
        out.append({**_compare(a, b, xs, ys), "runs": len(runs)})
    return out


def _prm_stages(data: dict) -> list[dict]:
    """Each PRM stage's training steps, FLOPs and held-out step accuracy (from its summary.json)."""
    prm = []
    for s in data["stages"]:
        if s["kind"] == "prm" and s["summary"]:
            ev = s["summary"].get("eval") or {}
            meta = s["dir"] / "final" / "prm.json"
            meta = json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}
            prm.append(
                {
                    "stage": s["name"],
                    "labels": s["fields"].get("labels", "corruption"),
                    "label_stats": meta.get("label_stats") or {},
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
    prm = _prm_stages(data)
    labelling = {p["stage"]: (p.get("label_stats") or {}).get("flops") for p in prm}
    for a in arms:  # what labelling the arm's PRM cost (a part of flops_prm_train)
        a["flops_prm_labelling"] = labelling.get(a["prm_stage"])
    out = {"arms": arms, "prm": prm, "paired": [_compare(a, b, xs, ys) for a, b, xs, ys, _ in _paired_scores(data)]}
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
        [
            a["stage"],
            f"{p['step']}" + (" (budget)" if p.get("at_budget") else ""),
            human(p["flops"]),
            pct(p["pass@1"]),
            interval(p["ci95"]),
        ]
        for a in ovp["arms"]
        for p in a["curve"]
    ]
    return ["### Held-out pass@1 over training", ""] + table(
        ["arm", "step", "FLOPs so far", "pass@1 %", "95% CI"], curve
    )


def _overoptimisation_lines(a: dict) -> list[str]:
    """A PRM arm's held-out evaluations: the PRM's score of the samples next to their true accuracy, and its
    score of the wrong ones (Gao et al. 2022's over-optimisation curve, with intervals over problems)."""
    pts = [p for p in a["curve"] if p.get("prm")]
    if not pts:
        return []
    rows = [
        [
            f"{p['step']}" + (" (budget)" if p.get("at_budget") else ""),
            human(p["flops"]),
            pct(p["pass@1"]) + " " + interval(p["ci95"]),
            _with_ci(p["prm"], "prm_score"),
            _with_ci(p["prm"], "prm_score_right"),
            _with_ci(p["prm"], "prm_score_wrong"),
            _with_ci(p["prm"], "prm_liked_wrong"),
        ]
        for p in pts
    ]
    out = [f"### Over-optimisation: the PRM's verdict vs the truth on held-out samples ({a['stage']})", ""]
    out += table(
        [
            "step",
            "FLOPs so far",
            "true pass@1 % [95% CI]",
            "PRM score %",
            "of right samples %",
            "of wrong samples %",
            "wrong samples it liked %",
        ],
        rows,
    )
    out += [
        "",
        "Every held-out evaluation's samples (400 problems x 4) scored by the arm's PRM (the minimum over a "
        "sample's steps), 95% intervals over problems. The PRM is frozen (its features are the SFT checkpoint's, "
        "not the policy's), so the same completion gets the same score at every step: a rising score on *wrong* "
        "samples, or a rising share of wrong samples it likes, is the policy finding wrong answers the PRM "
        "prefers (exploitation); a rising overall score with flat within-class scores is the accuracy changing.",
        "",
    ]
    return out


def _with_ci(d: dict, k: str) -> str:
    return "—" if d.get(k) is None else f"{pct(d[k])} {interval(d.get(k + '_ci95'))}"


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
            "arm's evaluation at the common budget), with a paired bootstrap 95% interval "
            f"({PAIRED_RESAMPLES:,} resamples of the problems, seed 0) and an exact two-sided sign test over the "
            "problems where they differ. Pairing takes the "
            "problems' own difficulty out of the comparison: an interval excluding 0 resolves the order even where "
            "the two arms' own intervals overlap. One run: the spread between seeds is not in it.",
            "",
        ]
    if ovp.get("paired_pooled"):
        out += ["### Paired differences pooled over runs (seeds)", ""] + _paired_table(ovp["paired_pooled"], True)
        out += [
            "",
            "The same comparisons over the runs together (this run and `--pool`'s: "
            + ", ".join(f"`{r}`" for r in ovp["pooled_runs"])
            + "): each problem's pass@1 under A and under B averaged over the runs, then paired over problems (the "
            "runs share their held-out problems: a problem is one pair, so the interval is not narrowed by "
            "counting a problem once per run).",
            "",
        ]
    return out


def _compute_table(ovp: dict) -> list[str]:
    comp = [
        [
            a["stage"],
            human(a["flops_rollouts"]),
            human(a["flops_updates"]),
            human(a["flops_prm_labelling"]) if a.get("flops_prm_labelling") else "—",
            human(a["flops_prm_train"]) if a["flops_prm_train"] else "—",
            human(a["flops_prm_scoring"]) if a["flops_prm_scoring"] else "—",
            num(a["wall_s"]),
        ]
        for a in ovp["arms"]
    ]
    return ["### Compute per arm, up to the common budget", ""] + table(
        [
            "arm",
            "rollouts",
            "updates",
            "of which PRM labelling",
            "PRM labelling + training",
            "PRM scoring",
            "wall s (whole stage)",
        ],
        comp,
    )


def _prm_lines(ovp: dict) -> list[str]:
    out = []
    for p in ovp["prm"]:
        ls = p.get("label_stats") or {}
        if p.get("labels") == "completion" and ls:
            out += [
                f"`{p['stage']}`'s completion labels: the SFT policy's completions of {ls.get('traces')} problems "
                f"({pct(ls.get('right'))}% right), {ls.get('continuations'):,} continuations from their steps, "
                f"{pct(ls.get('good_steps'))}% of steps labelled good; {human(ls.get('flops'))} FLOPs of sampling, "
                "counted in the PRM's compute.",
                "",
            ]
        out += [
            f"The PRM (`{p['stage']}`, {p.get('labels', 'corruption')} labels, {p.get('train_steps')} steps, "
            f"{human(p.get('flops'))} FLOPs), on held-out "
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
    out = [f"### The PRM's verdict on its arm's training rollouts ({a['stage']})", ""]
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
        "On the rollouts it scored for training, means over windows of steps of one run, without intervals "
        "(the held-out table above has them). The share of wrong answers scored above 0.5 is how often the PRM "
        "was fooled.",
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
        "Each arm starts from the same checkpoint and is read where its cost meter reaches the common compute "
        "budget: rollouts, updates, and for a learned PRM its labelling, its training and its scoring of every "
        "rollout (an arm that ran on, to show over-optimisation, is read at its evaluation at the budget). pass@1 "
        "is on the held-out problems at the evaluation protocol, with 95% intervals over problems.",
        "",
    ]
    out += _paired_lines(ovp)
    out += _curve_table(ovp) + [""]
    for a in ovp["arms"]:
        out += _overoptimisation_lines(a)
    out += _compute_table(ovp) + [""]
    out += _prm_lines(ovp)
    for a in ovp["arms"]:
        if a.get("hacking"):
            out += _hacking_lines(a)
    return out


# ----------------------------------------------------------------------------------------------
# the plot


def _band(ax, xs, pts, label, style="o-"):
    """A line of (value, [lo, hi]) points in % with its 95% band."""
    line = ax.plot(xs, [100 * v for v, _ in pts], style, markersize=3, lw=1, label=label)[0]
    if all(ci and None not in ci for _, ci in pts):
        ax.fill_between(
            xs, [100 * ci[0] for _, ci in pts], [100 * ci[1] for _, ci in pts], alpha=0.15, color=line.get_color()
        )


def plot_outcome_vs_process(ovp: dict | None, path: Path) -> bool:
    """Held-out pass@1 of every arm against FLOPs spent (95% bands), and per PRM arm the over-optimisation
    curve: the PRM's score of the held-out samples next to their true accuracy, and its score of the wrong ones."""
    if not ovp:
        return False
    plt = pyplot()
    over = [a for a in ovp["arms"] if any(p.get("prm") for p in a["curve"])]
    fig, axes = plt.subplots(1, 1 + len(over), figsize=(6 + 5 * len(over), 3.8), squeeze=False)
    ax = axes[0][0]
    budget = None
    for a in ovp["arms"]:
        pts = [p for p in a["curve"] if p["flops"] is not None]
        if pts:
            _band(ax, [p["flops"] for p in pts], [(p["pass@1"], p["ci95"]) for p in pts], a["stage"])
        budget = budget or next((p["flops"] for p in pts if p.get("at_budget")), None)
    if budget:
        ax.axvline(budget, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("FLOPs spent (PRM labelling, training and scoring included)")
    ax.set_title("held-out pass@1 % (95% CI); dashed: the common budget", fontsize=9)
    ax.legend(fontsize=7)
    for k, a in enumerate(over, start=1):
        ax = axes[0][k]
        pts = [p for p in a["curve"] if p.get("prm") and p["flops"] is not None]
        xs = [p["flops"] for p in pts]
        _band(ax, xs, [(p["pass@1"], p["ci95"]) for p in pts], "true pass@1")
        for key, label in (
            ("prm_score", "PRM score"),
            ("prm_score_wrong", "PRM score of wrong samples"),
            ("prm_liked_wrong", "wrong samples the PRM liked"),
        ):
            ok = [(x, p["prm"]) for x, p in zip(xs, pts) if p["prm"].get(key) is not None]
            if ok:
                _band(ax, [x for x, _ in ok], [(v[key], v[key + "_ci95"]) for _, v in ok], label, ".-")
        at = next((p["flops"] for p in pts if p.get("at_budget")), None)
        if at:
            ax.axvline(at, color="grey", lw=0.8, ls="--")
        ax.set_ylim(0, 100)
        ax.set_xlabel("FLOPs spent")
        ax.set_title(f"{a['stage']}: the PRM's verdict vs the truth, held-out (%, 95% CI)", fontsize=9)
        ax.legend(fontsize=7)
    return save(plt, fig, path)
