"""R1-Zero's part of the report card: R1's Figures 2 and 3 measured, the acceptance figures, and the "aha" table.

A run holds it when a GRPO stage trains with R1-Zero's template (`prompt_template = "r1-zero"`, recipes/r1-zero.toml).
Everything is read from that stage's files: metrics.jsonl (per step: the rollouts' accuracy, the lengths of right and
wrong completions, truncation and the behaviour shares, `evaluate.reasoning_stats`; every `eval_every` steps the
held-out pass@1 at R1's protocol), heldout/step-N.jsonl (the same held-out problems at every evaluation) and
hacks/step-N.jsonl (rewarded completions flagged by `rewards.reward_hacks`), and from the eval stages of the model
RL started from and of the model it ended with (the test set, and the out-of-distribution set when there is one).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tinyseek.report.cells import interval, num, pct, table
from tinyseek.report.plots import pyplot, save
from tinyseek.report.run import eval_data, metric_value, stage_of
from tinyseek.report.sections import ci_disjoint

CURVE_KEYS = (
    "accuracy",
    "len_mean",
    "len_right",
    "len_wrong",
    "clipped_frac",
    "share_reasons",
    "share_verifies",
    "share_backtracks",
    "rewarded_hacks",
)
EVAL_KEYS = ("eval_pass1", "eval_pass1_lo", "eval_pass1_hi", "eval_len_right", "eval_len_wrong", "eval_truncated")


# ----------------------------------------------------------------------------------------------
# the section


def _mean(rows: list[dict], key: str) -> float | None:
    v = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return sum(v) / len(v) if v else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or a == 0 else b / a


def _tenths(ms: list[dict]) -> dict:
    """Means over the first and the last tenth of RL's steps (at least one step each), and last / first."""
    n = max(1, len(ms) // 10)
    first, last = ms[:n], ms[-n:]
    out: dict = {"steps": [[first[0]["step"], first[-1]["step"]], [last[0]["step"], last[-1]["step"]]]}
    for k in CURVE_KEYS:
        a, b = _mean(first, k), _mean(last, k)
        out[k] = {"first": a, "last": b, "ratio": _ratio(a, b)}
    return out


def _eval_of(ev: dict | None) -> dict | None:
    if not ev:
        return None
    ks = sorted(int(k[5:]) for k in ev if k.startswith("pass@") and k != "pass@1")
    k = ks[-1] if ks else 1
    return {
        "pass@1": metric_value(ev, "pass@1"),
        "ci95": metric_value(ev, "pass@1", "ci95"),
        "k": k,
        "pass@k": metric_value(ev, f"pass@{k}"),
        "n": ev.get("n_problems"),
        "reasoning": ev.get("reasoning"),
    }


def _raw_evals(data: dict, stage: str | None) -> dict:
    """The eval.json files of `stage`'s checkpoint, by the records they used: "test", "ood" (the data file's stem)."""
    run = data["run"]
    return {
        eval_data(s["eval"]): s["eval"]
        for s in data["stages"]
        if s["eval"] and stage_of(s["eval"].get("model"), run) == stage
    }


def _aha(stage_dir: Path, base: dict | None, problems: int = 4) -> list[dict]:
    """The first logged held-out problems before RL (the base's evaluation, step 0) and at the middle and last
    evaluation during RL: the first sample of each."""
    files = sorted((stage_dir / "heldout").glob("step-*.jsonl"), key=lambda p: int(p.stem.split("-")[1]))
    if not files:
        return []
    logged = {}
    for f in (files[len(files) // 2], files[-1]):
        logged[int(f.stem.split("-")[1])] = [
            json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()
        ][:problems]
    first = next(iter(logged.values()))
    by_prompt = {p["prompt"]: p for p in (base or {}).get("problems", []) if p.get("completions")}
    if all(r["prompt"] in by_prompt for r in first):
        logged = {0: [by_prompt[r["prompt"]] for r in first], **logged}
    return [
        {
            "problem": j,
            "step": step,
            "prompt": r["prompt"],
            "answer": r["answer"],
            "completion": r["completions"][0],
            "correct": r["correct"][0],
        }
        for j in range(len(first))
        for step, recs in sorted(logged.items())
        for r in recs[j : j + 1]
    ]


def _hacks(stage_dir: Path) -> dict:
    counts: dict[str, int] = {}
    example = None
    for f in sorted((stage_dir / "hacks").glob("step-*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                for flag in r["flags"]:
                    counts[flag] = counts.get(flag, 0) + 1
                example = example or r
    return {"counts": counts, "example": example}


def _acceptance(sec: dict) -> dict:
    base, final, t = sec["base"].get("test"), sec["final"].get("test"), sec["tenths"]
    out: dict = {}
    if base and final and base["pass@1"] is not None and final["pass@1"] is not None:
        out["gain_points"] = 100 * (final["pass@1"] - base["pass@1"])
        out["disjoint"] = ci_disjoint(base["ci95"], final["ci95"])
        out["final_above_base_pass@k"] = final["pass@1"] > (base["pass@k"] or 0)
    out["len_right_ratio"] = t["len_right"]["ratio"]
    out["truncation_last_tenth"] = t["clipped_frac"]["last"]
    out["verifies_ratio"] = t["share_verifies"]["ratio"]
    return out


def r1_zero(data: dict) -> dict | None:
    """The section, or None when no GRPO stage of the run trains with R1-Zero's template."""
    grpo = next(
        (
            s
            for s in data["stages"]
            if s["kind"] == "grpo" and s["fields"].get("prompt_template") == "r1-zero" and s["metrics"]
        ),
        None,
    )
    if grpo is None:
        return None
    ms = [r for r in grpo["metrics"] if "step" in r]
    start = stage_of(grpo["fields"].get("model"), data["run"])
    base = _raw_evals(data, start)
    sec = {
        "stage": grpo["name"],
        "start": start,
        "steps": len(ms),
        "curve": [{k: r.get(k) for k in ("step", *CURVE_KEYS, *EVAL_KEYS) if k in r} for r in ms],
        "tenths": _tenths(ms),
        "base": {k: _eval_of(v) for k, v in base.items()},
        "final": {k: _eval_of(v) for k, v in _raw_evals(data, grpo["name"]).items()},
        "aha": _aha(grpo["dir"], base.get("test")),
        "hacks": _hacks(grpo["dir"]),
    }
    sec["evals"] = _eval_rows(sec["base"], sec["final"])
    sec["tenth_rows"] = [
        {"behaviour": label, "share": share, **sec["tenths"][k]} for k, (label, share) in TENTH_ROWS.items()
    ]
    sec["curve_table"] = _curve_table(sec["curve"])
    sec["acceptance"] = _acceptance(sec)
    return sec


# ----------------------------------------------------------------------------------------------
# Markdown


def _eval_rows(base: dict, final: dict) -> list[dict]:
    """The section's table of evaluations: base and RL model on each held-out set."""
    rows = []
    for split in ("test", "ood"):
        for who, ev in (("base (before RL)", base.get(split)), ("after RL", final.get(split))):
            if ev:
                r = ev.get("reasoning") or {}
                rows.append(
                    {
                        "set": split,
                        "model": who,
                        **{k: ev[k] for k in ("pass@1", "ci95", "pass@k", "k")},
                        **{k: r.get(k) for k in ("share_reasons", "share_verifies", "len_right")},
                    }
                )
    return rows


TENTH_ROWS = {  # the first-vs-last-tenth table: key -> (label, is a share)
    "len_right": ("length of right completions that stopped (tokens)", False),
    "len_wrong": ("length of wrong completions (tokens)", False),
    "clipped_frac": ("cut at the token limit %", True),
    "share_reasons": ("reason (a worked step) %", True),
    "share_verifies": ("verify (a step judged yes/no) %", True),
    "share_backtracks": ("backtrack (a step judged no, redone) %", True),
    "accuracy": ("rollout accuracy %", True),
    "rewarded_hacks": ("rewarded and flagged (no reasoning, no tags, work in the answer) %", True),
}


def _curve_table(curve: list[dict], n: int = 10) -> list[dict]:
    """About n of the evaluated steps (all of them when there are few), the last included."""
    evals = [r for r in curve if r.get("eval_pass1") is not None]
    return evals if len(evals) <= 2 * n else evals[:: max(1, len(evals) // n)] + evals[-1:]


def _one_line(text: str, width: int = 110) -> str:
    s = " ".join(str(text).split()).replace("|", "\\|")
    return s if len(s) <= width else s[: width - 1] + "…"


def render_r1_zero(sec: dict) -> list[str]:
    a, t = sec["acceptance"], sec["tenths"]
    out = [
        f"## R1-Zero: reasoning from the reward alone ({sec['stage']}, from {sec['start']}, {sec['steps']} steps)",
        "",
    ]
    out += table(
        ["set", "model", "pass@1 %", "95% CI", "pass@k %", "k", "reasons %", "verifies %", "right length"],
        [
            [
                r["set"],
                r["model"],
                pct(r["pass@1"]),
                interval(r["ci95"]),
                pct(r["pass@k"]),
                str(r["k"]),
                pct(r["share_reasons"]),
                pct(r["share_verifies"]),
                num(r["len_right"]),
            ]
            for r in sec["evals"]
        ],
    )
    if "gain_points" in a:
        out += [
            "",
            f"Held-out pass@1 {a['gain_points']:+.1f} points over the base (intervals "
            f"{'disjoint' if a['disjoint'] else 'overlapping'}); the final pass@1 is "
            f"{'above' if a['final_above_base_pass@k'] else 'not above'} the base's pass@k.",
        ]
    out += [
        "",
        f"The rollouts of the first tenth of RL (steps {t['steps'][0][0]}-{t['steps'][0][1]}) against the "
        f"last tenth (steps {t['steps'][1][0]}-{t['steps'][1][1]}):",
        "",
    ]
    out += table(
        ["behaviour", "first tenth", "last tenth", "last / first"],
        [
            [
                r["behaviour"],
                (pct if r["share"] else num)(r["first"]),
                (pct if r["share"] else num)(r["last"]),
                num(r["ratio"], "{:.2f}x"),
            ]
            for r in sec["tenth_rows"]
        ],
    )
    out += [
        "",
        "Held-out pass@1 during RL (R1's protocol; lengths of the held-out samples; shares of the rollouts):",
        "",
    ]
    out += table(
        ["step", "pass@1 %", "95% CI", "right length", "wrong length", "rollout acc %", "reasons %", "verifies %"],
        [
            [
                str(r["step"]),
                pct(r["eval_pass1"]),
                interval([r.get("eval_pass1_lo"), r.get("eval_pass1_hi")]),
                num(r.get("eval_len_right")),
                num(r.get("eval_len_wrong")),
                pct(r.get("accuracy")),
                pct(r.get("share_reasons")),
                pct(r.get("share_verifies")),
            ]
            for r in sec["curve_table"]
        ],
    )
    if sec["aha"]:
        out += [
            "",
            "The same held-out problems before RL (step 0, the base), halfway and at the end (the first sample of "
            "each):",
            "",
        ]
        out += table(
            ["problem", "step", "completion", "right"],
            [
                [
                    f"`{r['prompt']}` ({r['answer']})",
                    str(r["step"]),
                    f"`{_one_line(r['completion'])}`",
                    "yes" if r["correct"] == 1.0 else "no",
                ]
                for r in sec["aha"]
            ],
        )
    h = sec["hacks"]
    if h["counts"]:
        flags = ", ".join(f"{k} {v}" for k, v in sorted(h["counts"].items()))
        out += ["", f"Rewarded completions flagged as possible hacks (grpo/hacks/step-N.jsonl): {flags}."]
    out.append("")
    return out


# ----------------------------------------------------------------------------------------------
# the plot: R1's Figures 2 and 3, and the behaviours


def plot_r1_zero(sec: dict | None, path: Path) -> bool:
    if not sec:
        return False
    plt = pyplot()
    curve = sec["curve"]
    steps = [r["step"] for r in curve]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    ev = [r for r in curve if r.get("eval_pass1") is not None]
    base = sec["base"].get("test")
    pts = ([(0, base["pass@1"], *base["ci95"])] if base else []) + [
        (r["step"], r["eval_pass1"], r.get("eval_pass1_lo"), r.get("eval_pass1_hi")) for r in ev
    ]
    if pts:
        x, y, lo, hi = zip(*pts)
        ax.plot(x, [100 * v for v in y], "o-", label="held-out pass@1 (T 0.6)")
        ax.fill_between(x, [100 * (v or 0) for v in lo], [100 * (v or 0) for v in hi], alpha=0.2)
    ax.plot(steps, [100 * (r.get("accuracy") or 0) for r in curve], alpha=0.6, label="rollout accuracy (T of RL)")
    ax.set(xlabel="RL step", ylabel="%", title="accuracy (R1 Fig. 2)", ylim=(0, 100))
    ax.legend(fontsize=8)
    ax = axes[1]
    for k, label in (("len_right", "right, stopped"), ("len_wrong", "wrong"), ("len_mean", "all")):
        ax.plot(steps, [r.get(k) for r in curve], label=label)
    ax.set(xlabel="RL step", ylabel="tokens", title="response length (R1 Fig. 3)")
    ax.legend(fontsize=8)
    ax = axes[2]
    for k, label in (
        ("share_reasons", "reasons"),
        ("share_verifies", "verifies"),
        ("share_backtracks", "backtracks"),
        ("clipped_frac", "truncated"),
    ):
        ax.plot(steps, [100 * (r.get(k) or 0) for r in curve], label=label)
    ax.set(xlabel="RL step", ylabel="% of rollouts", title="behaviours (the traces' own markers)", ylim=(0, 100))
    ax.legend(fontsize=8)
    return save(plt, fig, path)
