"""The report card: every figure comes from the run's files, comparisons follow the stages' parents."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tinyseek.config import ModelConfig
from tinyseek.errors import TinyseekError
from tinyseek.report.card import build_report, write_report
from tinyseek.report.run import read_metrics


def _stage(run: Path, name: str, kind: str, wall: float, metrics=None, summary=None, ev=None, ckpt_cfg=None):
    d = run / name
    d.mkdir(parents=True)
    (d / "stage.json").write_text(json.dumps({"name": name, "kind": kind, "wall_s": wall}))
    if metrics is not None:
        (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    if ev is not None:
        (d / "eval.json").write_text(json.dumps(ev))
    if ckpt_cfg is not None:
        (d / "final").mkdir()
        ckpt_cfg.save(d / "final" / "config.json")


def _summary(steps, tokens, flops, elapsed):
    return {
        "steps": steps,
        "tokens": tokens,
        "tokens_per_s": tokens / elapsed,
        "mfu": 0.01,
        "cost": {"flops": flops, "elapsed_s": elapsed, "device": "cpu", "n_devices": 1, "price_per_device_hour": 0.05},
    }


def _eval(run, stage, p1, ci, n=100):
    """An eval.json as the recipe's eval stage writes it (tinyseek.evaluate's result + model, greedy)."""
    m = lambda v, lo, hi: {"value": v, "ci95": [lo, hi]}  # noqa: E731
    return {
        "model": str(run / stage / "final"),
        "n": n,
        "n_problems": n,
        "samples": 4,
        "params": {"temperature": 1.0},
        "pass@1": m(p1, *ci),
        "pass@2": m(p1 + 0.1, 0, 1),
        "pass@4": m(min(1, p1 + 0.2), 0, 1),
        "cons@4": m(p1 + 0.01, 0, 1),
        "format": m(0.9, 0.8, 1.0),
        "mean_length": m(40.0, 39.0, 41.0),
        "generated_tokens": 1000,
        "greedy": {"n_problems": n, "samples": 1, "pass@1": m(p1 + 0.02, 0, 1)},
    }


@pytest.fixture
def run(tmp_path):
    run = tmp_path / "run"
    teacher = ModelConfig.preset("nano")
    student = ModelConfig.preset("nano", n_routed_experts=0, n_dense_layers=3, mtp_depth=0, dim=32, inter_dim=64)
    stages = [
        ("sft", "sft", {"init": "x"}),
        ("grpo", "grpo", {"init": str(run / "sft" / "final")}),
        ("distill", "distill", {"teacher": str(run / "grpo" / "final")}),
        ("eval-sft", "eval", {"model": str(run / "sft" / "final")}),
        ("eval-grpo", "eval", {"model": str(run / "grpo" / "final")}),
        ("eval-distill", "eval", {"model": str(run / "distill" / "final")}),
    ]
    run.mkdir()
    (run / "recipe.json").write_text(
        json.dumps({"name": "t", "stages": [{"name": n, "kind": k, "fields": f} for n, k, f in stages]})
    )
    load = lambda i: {"moe_maxvio": [0.5 / i, 0.7 / i], "moe_cv": [0.1, 0.2]}  # noqa: E731
    _stage(
        run,
        "sft",
        "sft",
        10.0,
        [{"step": i, "loss": 3.0 / i, **load(i)} for i in range(1, 21)],
        _summary(20, 4000, 1e12, 9.0),
        ckpt_cfg=teacher,
    )
    _stage(
        run,
        "grpo",
        "grpo",
        30.0,
        [
            {"step": i, "loss": 0.1, "reward": i / 30, "accuracy": i / 30, "completion_len": 40 - i, **load(i)}
            for i in range(1, 31)
        ],
        _summary(30, 9000, 3e12, 28.0),
        ckpt_cfg=teacher,
    )
    _stage(
        run,
        "distill",
        "distill",
        5.0,
        [{"step": i, "loss": 2.0 / i, "ce": 1.5 / i, "kd": 0.5 / i} for i in range(1, 11)],
        _summary(10, 2000, 1e11, 4.5),
        ckpt_cfg=student,
    )
    _stage(run, "eval-sft", "eval", 2.0, ev=_eval(run, "sft", 0.20, [0.15, 0.25]))
    _stage(run, "eval-grpo", "eval", 2.0, ev=_eval(run, "grpo", 0.45, [0.40, 0.50]))
    _stage(run, "eval-distill", "eval", 2.0, ev=_eval(run, "distill", 0.42, [0.37, 0.47]))
    # a metrics line torn by a kill at the end of a file must not break the report
    with open(run / "distill" / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 11, "lo')
    return run


def test_numbers_come_from_the_files(run):
    rep = build_report(run)
    ev = {e["stage"]: e for e in rep["evals"]}
    for name in ("eval-sft", "eval-grpo", "eval-distill"):
        src = json.loads((run / name / "eval.json").read_text())
        assert ev[name]["pass@1"] == src["pass@1"]["value"]
        assert ev[name]["pass@1_ci95"] == src["pass@1"]["ci95"]
        assert ev[name]["cons@k"] == src["cons@4"]["value"]
        assert ev[name]["pass@k"] == src["pass@4"]["value"]
        assert ev[name]["greedy"] == src["greedy"]["pass@1"]["value"]
        assert (ev[name]["n"], ev[name]["samples"]) == (src["n_problems"], src["samples"])
    st = {r["name"]: r for r in rep["stages"]}
    for name in ("sft", "grpo", "distill"):
        metrics = read_metrics(run / name / "metrics.jsonl")
        summ = json.loads((run / name / "summary.json").read_text())
        assert st[name]["final_loss"] == metrics[-1]["loss"]
        assert st[name]["flops"] == summ["cost"]["flops"]
        assert st[name]["tokens"] == summ["tokens"]
    assert rep["totals"]["wall_s"] == pytest.approx(10 + 30 + 5 + 6)
    assert rep["totals"]["flops"] == pytest.approx(1e12 + 3e12 + 1e11)
    assert rep["rl"]["reward"] == {"key": "reward", "first": 1 / 30, "last": 1.0}


def test_each_stage_is_compared_with_its_parent(run):
    comps = {c["stage"]: c for c in build_report(run)["comparisons"]}
    assert set(comps) == {"grpo", "distill"}  # sft's parent is not a stage of this run
    g = comps["grpo"]
    assert (g["parent"], g["relation"]) == ("sft", "init")
    assert g["delta_points"] == pytest.approx(25.0)
    assert g["ci_disjoint"] is True
    d = comps["distill"]
    assert (d["parent"], d["relation"]) == ("grpo", "teacher")
    assert d["ratio"] == pytest.approx(0.42 / 0.45)
    assert d["ci_disjoint"] is False
    from tinyseek import cost

    t = ModelConfig.preset("nano")
    s = ModelConfig.preset("nano", n_routed_experts=0, n_dense_layers=3, mtp_depth=0, dim=32, inter_dim=64)
    assert d["active_params_ratio"] == pytest.approx(cost.active_params(s) / cost.active_params(t))


def test_write_report_files_and_plots(run):
    rep = write_report(run)
    d = run / "report"
    assert json.loads((d / "report.json").read_text())["evals"] == json.loads(json.dumps(rep["evals"]))
    md = (d / "report.md").read_text()
    assert "| eval-grpo | grpo |" in md and "45.0" in md and "| 2,788,000 | 5,576,000 |" in md
    for png in ("accuracy.png", "losses.png", "rl.png", "expert_load.png"):
        assert (d / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "DeepSeek-V3 (published)" in rep["console"] and "5,576,000" in rep["console"]


def test_not_a_run_and_bad_lines_are_named(tmp_path, run):
    with pytest.raises(TinyseekError, match="no recipe.json"):
        build_report(tmp_path)
    p = run / "sft" / "metrics.jsonl"
    p.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(TinyseekError, match=r"metrics.jsonl:2: invalid JSON"):
        build_report(run)


@pytest.mark.parametrize("ood", [False, True])
def test_rl_curve_and_same_start_comparisons(tmp_path, ood):
    """The held-out curve of a GRPO stage starts at its parent's evaluation and follows metrics.jsonl; stages
    that start from the same checkpoint are set side by side with their compute. With every model evaluated on a
    second, out-of-distribution set too (after the test set), comparisons pair evaluations of the same data and the
    curve still starts at the test set's."""
    run = tmp_path / "run"
    cfg = ModelConfig.preset("nano")
    stages = [
        ("sft", "sft", {"init": "x"}),
        ("grpo", "grpo", {"model": str(run / "sft" / "final"), "eval_temperature": 0.6}),
        ("sft-control", "sft", {"init": str(run / "sft" / "final")}),
        ("eval-sft", "eval", {"model": str(run / "sft" / "final")}),
        ("eval-grpo", "eval", {"model": str(run / "grpo" / "final")}),
        ("eval-sft-control", "eval", {"model": str(run / "sft-control" / "final")}),
    ]
    run.mkdir()
    (run / "recipe.json").write_text(
        json.dumps({"name": "t", "stages": [{"name": n, "kind": k, "fields": f} for n, k, f in stages]})
    )
    _stage(run, "sft", "sft", 1.0, [{"step": 1, "loss": 1.0}], _summary(1, 10, 1e9, 1.0), ckpt_cfg=cfg)
    curve = {10: (0.3, 0.25, 0.35), 20: (0.4, 0.35, 0.45)}
    metrics = [
        {"step": i, "loss": 0.1, "reward": 0.1 * i}
        | (
            {"eval_pass1": curve[i][0], "eval_pass1_lo": curve[i][1], "eval_pass1_hi": curve[i][2]}
            if i in curve
            else {}
        )
        for i in range(1, 21)
    ]
    _stage(run, "grpo", "grpo", 5.0, metrics, _summary(20, 100, 7e9, 4.0), ckpt_cfg=cfg)
    _stage(run, "sft-control", "sft", 1.0, [{"step": 1, "loss": 0.5}], _summary(20, 100, 2e9, 1.0), ckpt_cfg=cfg)
    _stage(run, "eval-sft", "eval", 1.0, ev=_eval(run, "sft", 0.2, [0.15, 0.25]))
    _stage(run, "eval-grpo", "eval", 1.0, ev=_eval(run, "grpo", 0.41, [0.36, 0.46]))
    _stage(run, "eval-sft-control", "eval", 1.0, ev=_eval(run, "sft-control", 0.6, [0.55, 0.65]))
    if ood:  # the evaluations above were of test.jsonl; each model also evaluated on ood.jsonl, after them
        rec = json.loads((run / "recipe.json").read_text())
        for name, p1 in (("sft", 0.01), ("grpo", 0.05), ("sft-control", 0.02)):
            ev = json.loads((run / f"eval-{name}" / "eval.json").read_text())
            (run / f"eval-{name}" / "eval.json").write_text(json.dumps({**ev, "data": str(run / "tasks/test.jsonl")}))
            _stage(
                run, f"eval-{name}-ood", "eval", 1.0, ev={**_eval(run, name, p1, [0, 0.1]), "data": "tasks/ood.jsonl"}
            )
            rec["stages"].append({"name": f"eval-{name}-ood", "kind": "eval", "fields": {"model": ev["model"]}})
        (run / "recipe.json").write_text(json.dumps(rec))
    rep = write_report(run, plots=True)
    if ood:
        pairs = {(c["stage"], c["data"]): (c["pass@1"], c["parent_pass@1"]) for c in rep["comparisons"]}
        assert pairs[("grpo", "test")] == (0.41, 0.2) and pairs[("grpo", "ood")] == (0.05, 0.01)
        (sib_ood,) = [s for s in rep["siblings"] if s["data"] == "ood"]
        assert {sib_ood["a_pass@1"], sib_ood["b_pass@1"]} == {0.05, 0.02}
        rep["siblings"] = [s for s in rep["siblings"] if s["data"] == "test"]
        assert "on ood" in (run / "report" / "report.md").read_text()
    (c,) = rep["rl_curves"]
    assert c["stage"] == "grpo" and c["parent"] == "sft"
    assert [p["step"] for p in c["heldout"]] == [0, 10, 20]
    assert c["heldout"][0]["pass@1"] == 0.2 and c["heldout"][0]["from"] == "eval-sft"
    assert [p["pass@1"] for p in c["heldout"][1:]] == [0.3, 0.4]
    assert c["heldout"][2]["ci95"] == [0.35, 0.45]
    (sib,) = rep["siblings"]
    assert {sib["a"], sib["b"]} == {"grpo", "sft-control"} and sib["parent"] == "sft"
    flops = {sib["a"]: sib["a_flops"], sib["b"]: sib["b_flops"]}
    assert flops == {"grpo": 7e9, "sft-control": 2e9}
    sign = 1 if sib["a"] == "grpo" else -1
    assert sib["delta_points"] == pytest.approx(sign * (41 - 60)) and sib["ci_disjoint"] is True
    md = (run / "report" / "report.md").read_text()
    assert "held-out problems" in md and "| grpo | 20 | 40.0 | [35.0, 45.0] |" in md
    assert (run / "report" / "rl.png").is_file()
    assert check_md_against_json(md, json.loads((run / "report" / "report.json").read_text())) > 30 + 20 * ood


def _ovp_run(run: Path) -> None:
    """A fabricated outcome-vs-process run: an SFT start evaluated on 21 problems and three GRPO arms, each with
    its per-problem verdicts at its last evaluation (see the test below for what each arm got right)."""
    cfg = ModelConfig.preset("nano")
    sft = str(run / "sft" / "final")
    arms = {
        "grpo-outcome": {"advantage": "outcome"},
        "grpo-oracle": {"advantage": "process", "process_reward": "oracle"},
        "grpo-prm": {"advantage": "process", "process_reward": f"prm:{run / 'prm' / 'final'}"},
    }
    stages = [("sft", "sft", {"init": "x"}), ("eval-sft", "eval", {"model": sft})]
    stages += [(name, "grpo", {"model": sft, "max_flops": 3e12, **f}) for name, f in arms.items()]
    run.mkdir()
    (run / "recipe.json").write_text(
        json.dumps({"name": "ovp", "stages": [{"name": n, "kind": k, "fields": f} for n, k, f in stages]})
    )
    _stage(run, "sft", "sft", 1.0, [{"step": 1, "loss": 1.0}], _summary(1, 10, 1e9, 1.0), ckpt_cfg=cfg)
    # 21 problems, 4 samples each: the start gets 0-9 wrong and 10-19 right; problem 20 has an unscored sample
    start = [[0.0] * 4] * 10 + [[1.0] * 4] * 10 + [[None, 1.0, 1.0, 1.0]]
    prompt = lambda i: f"{i}+{i}="  # noqa: E731
    ev = _eval(run, "sft", 0.5, [0.3, 0.7], n=21)
    ev["problems"] = [{"prompt": prompt(i), "answer": str(2 * i), "correct": c} for i, c in enumerate(start)]
    _stage(run, "eval-sft", "eval", 1.0, ev=ev)
    right = [[1.0] * 4] * 11
    finals = {  # each arm's per-problem verdicts at its last evaluation
        "grpo-outcome": [[1.0, 1.0, 0.0, 0.0]] * 5 + [[0.0] * 4] * 5 + right,  # half right on 0-4
        "grpo-oracle": [[1.0] * 4] * 9 + [[0.0] * 4] + right,  # all right on 0-8
        "grpo-prm": [[0.0] * 4] * 11 + [[1.0] * 4] * 10,  # problem 10 now wrong
    }
    for name, correct in finals.items():
        last = 30
        ms = [{"step": i, "loss": 0.1, "total_flops": 1e11 * i, "rollout_flops": 5e10} for i in range(1, last + 1)]
        p1 = sum(sum(c) / 4 for c in correct) / 21
        ms[-1].update(eval_pass1=p1, eval_pass1_lo=p1 - 0.2, eval_pass1_hi=p1 + 0.2)
        _stage(run, name, "grpo", 3.0, ms, _summary(last, 100, 3e12, 3.0), ckpt_cfg=cfg)
        rows = [{"step": last, "prompt": prompt(i), "answer": str(2 * i), "correct": c} for i, c in enumerate(correct)]
        if name == "grpo-oracle":
            rows.reverse()  # pairing goes by the problem, not the line
        (run / name / "heldout").mkdir()
        (run / name / "heldout" / f"step-{last}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / name / "heldout" / "step-15.jsonl").write_text("")  # an earlier evaluation: not the one paired


def test_outcome_vs_process_pairs_the_arms_on_the_same_problems(tmp_path):
    """The outcome-vs-process section pairs each arm with its start and each pair of arms on the same held-out
    problems: per-problem pass@1 from the start's eval.json and from each arm's last heldout/step-N.jsonl, matched
    by prompt (not by position), problems with an unscored sample left out; B - A, its paired interval and the
    sign test's exact p, as JSON and as a table."""
    from tinyseek.evaluate import sign_test

    run = tmp_path / "run"
    _ovp_run(run)
    rep = write_report(run)
    got = {(r["a_stage"], r["b_stage"]): r for r in rep["outcome_vs_process"]["paired"]}
    want = {  # (A, B): (problems, B - A, B better, A better, ties)
        ("sft (start)", "grpo-outcome"): (20, 5 * 0.5 / 20, 5, 0, 15),
        ("sft (start)", "grpo-oracle"): (20, 9 / 20, 9, 0, 11),
        ("sft (start)", "grpo-prm"): (20, -1 / 20, 0, 1, 19),
        ("grpo-outcome", "grpo-oracle"): (21, (5 * 0.5 + 4) / 21, 9, 0, 12),
        ("grpo-outcome", "grpo-prm"): (21, (-5 * 0.5 - 1) / 21, 0, 6, 15),
        ("grpo-oracle", "grpo-prm"): (21, (-9 - 1) / 21, 0, 10, 11),
    }
    assert list(got) == list(want)
    for pair, (n, diff, wins, losses, ties) in want.items():
        r = got[pair]
        assert (r["n"], r["b_better"], r["a_better"], r["ties"]) == (n, wins, losses, ties), pair
        assert r["diff"] == pytest.approx(diff) and r["ci95"][0] <= r["diff"] <= r["ci95"][1], pair
        assert r["sign_p"] == pytest.approx(sign_test(wins, losses)), pair
    assert got[("sft (start)", "grpo-oracle")]["sign_p"] == pytest.approx(2 / 2**9)  # 9 of 9 untied: by hand
    assert got[("sft (start)", "grpo-oracle")]["ci95"][0] > 0  # resolved, though the arms' own intervals overlap
    md = (run / "report" / "report.md").read_text()
    assert "### Paired differences on the same held-out problems" in md
    assert "| sft (start) | grpo-oracle | 20 | +45.0 |" in md and "| 9 / 0 / 11 | 0.0039 |" in md
    assert check_md_against_json(md, rep) > 40


def test_outcome_vs_process_pools_the_pairs_of_several_runs(tmp_path, run):
    """`tinyseek report RUN --pool RUN2`: each problem's scores averaged over the runs, then paired over problems
    (a second seed identical to the first: the same pairs, not twice as many; a third whose PRM arm got every
    problem right: the pooled difference is the mean of the runs'); a run that is not the experiment is refused."""
    from tinyseek.evaluate import sign_test
    from tinyseek.report.card import cli_report

    a, b = tmp_path / "ovp-s0", tmp_path / "ovp-s1"
    _ovp_run(a)
    _ovp_run(b)
    assert cli_report([str(a), "--pool", str(b), "--no-plots"]) == 0
    rep = json.loads((a / "report" / "report.json").read_text())
    ovp = rep["outcome_vs_process"]
    one = {(r["a_stage"], r["b_stage"]): r for r in ovp["paired"]}
    both = {(r["a_stage"], r["b_stage"]): r for r in ovp["paired_pooled"]}
    assert list(both) == list(one) and ovp["pooled_runs"] == ["ovp-s0", "ovp-s1"]
    for k, r in both.items():
        assert r["runs"] == 2 and r["n"] == one[k]["n"] and r["diff"] == pytest.approx(one[k]["diff"])
        assert (r["b_better"], r["a_better"], r["sign_p"]) == (one[k]["b_better"], one[k]["a_better"], one[k]["sign_p"])
    md = (a / "report" / "report.md").read_text()
    assert "### Paired differences pooled over runs (seeds)" in md and "| 2 | sft (start) | grpo-oracle | 20 |" in md
    assert check_md_against_json(md, rep) > 80
    c = tmp_path / "ovp-s2"
    _ovp_run(c)
    f = c / "grpo-prm" / "heldout" / "step-30.jsonl"
    rows = [json.loads(x) for x in f.read_text().splitlines()]
    f.write_text("".join(json.dumps({**r, "correct": [1, 1, 1, 1]}) + "\n" for r in rows))
    three = {
        (r["a_stage"], r["b_stage"]): r for r in build_report(a, pool=(b, c))["outcome_vs_process"]["paired_pooled"]
    }
    alone = {(r["a_stage"], r["b_stage"]): r for r in build_report(c)["outcome_vs_process"]["paired"]}
    k = ("grpo-outcome", "grpo-prm")
    assert three[k]["runs"] == 3 and three[k]["n"] == one[k]["n"] == alone[k]["n"]
    assert three[k]["diff"] == pytest.approx((2 * one[k]["diff"] + alone[k]["diff"]) / 3)
    assert three[k]["sign_p"] == pytest.approx(sign_test(three[k]["b_better"], three[k]["a_better"]))
    with pytest.raises(TinyseekError, match="not an outcome-vs-process run"):
        build_report(a, pool=(run,))  # the fixture's run: a GRPO stage, but no process arm
    with pytest.raises(TinyseekError, match="has no such arms"):
        build_report(run, pool=(a,))
    with pytest.raises(TinyseekError, match="given twice"):
        build_report(a, pool=(b, a))


# ----------------------------------------------------------------------------------------------
# report.md against report.json: every number in the Markdown tables is a number of its row in the JSON


NUM = re.compile(r"\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?")
LABEL_COLUMNS = {"stage", "model", "kind", "vs", "", "from", "other stage", "GRPO stage", "arm", "advantage"}
LABEL_COLUMNS |= {"set", "behaviour", "problem", "completion", "right"}  # R1-Zero's section (report/r1_zero.py)
LABEL_COLUMNS |= {"A", "B"}  # the outcome-vs-process section's paired differences
UNITS = (1.0, 100.0, 1e-6, 1 / 3600)  # as is, percent, millions (params), hours (wall time)


def _json_numbers(obj):
    if isinstance(obj, bool) or obj is None:
        return
    if isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _json_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _json_numbers(v)


def shows(text: str, x: float) -> bool:
    """`text`, a number as printed (1,234 / 0.0583 / 3.35e+15 / 20.2), is x (in one of UNITS) to its precision."""
    mant, _, exp = text.replace(",", "").partition("e")
    decimals = len(mant.partition(".")[2])
    tol = 0.5 * 10 ** ((int(exp) if exp else 0) - decimals) * (1 + 1e-9)
    v = float(text.replace(",", ""))
    return any(abs(abs(x) * u - v) <= tol for u in UNITS)


def md_tables(md: str):
    """(header, rows) of every table in the Markdown."""
    block: list[list[str]] = []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif block:
            yield block[0], block[2:]
            block = []


def check_md_against_json(md: str, rep: dict) -> int:
    """Assert that each Markdown table has one row per JSON row and that every number in a non-label cell is a
    number of that JSON row, as printed. Returns how many numbers were checked."""
    sources = {  # a table's first two column names -> the JSON rows it shows
        ("stage", "model"): rep["evals"],
        ("stage", "vs"): rep["comparisons"],
        ("from", "stage"): rep.get("siblings", []),
        ("GRPO stage", "step"): [p for c in rep.get("rl_curves", []) for p in c["heldout"]],
        ("stage", "kind"): rep["stages"],
        ("", "FLOPs"): rep["cost"],
    }
    ovp = rep.get("outcome_vs_process")  # recipes/outcome-vs-process.toml's section
    if ovp:
        sources[("arm", "advantage")] = ovp["arms"]
        sources[("arm", "step")] = [p for a in ovp["arms"] for p in a["curve"]]
        sources[("arm", "rollouts")] = ovp["arms"]
        sources[("A", "B")] = ovp.get("paired", [])
        sources[("runs", "A")] = ovp.get("paired_pooled", [])
        # one table per PRM arm, in the arms' order: an iterator of their rows
        sources[("steps", "PRM score (min over steps)")] = iter(
            [a["hacking"]["windows"] for a in ovp["arms"] if a.get("hacking")]
        )
        sources[("step", "FLOPs so far")] = iter(
            [[p for p in a["curve"] if p.get("prm")] for a in ovp["arms"] if any(p.get("prm") for p in a["curve"])]
        )
    zero = rep.get("r1_zero")  # recipes/r1-zero.toml's section
    if zero:
        sources[("set", "model")] = zero["evals"]
        sources[("behaviour", "first tenth")] = zero["tenth_rows"]
        sources[("step", "pass@1 %")] = zero["curve_table"]
        sources[("problem", "step")] = zero["aha"]
    checked = 0
    for head, rows in md_tables(md):
        assert tuple(head[:2]) in sources, f"a table this check does not know yet: {head}"
        src = sources[tuple(head[:2])]
        if not isinstance(src, list):  # a table repeated per arm: the next arm's rows
            src = next(src)
        assert len(rows) == len(src), head
        for row, obj in zip(rows, src):
            pool = list(_json_numbers(obj))
            for col, cell in zip(head, row):
                if col in LABEL_COLUMNS:
                    continue
                for num in NUM.findall(cell):
                    assert any(shows(num, x) for x in pool), f"{head[0] or head[1]} row {row[0]!r}: {col} {num}"
                    checked += 1
    total = re.search(r"Total wall time of the stages: (\S+) s", md).group(1)
    assert shows(total, rep["totals"]["wall_s"])
    return checked


def test_report_md_holds_only_numbers_from_report_json(run):
    write_report(run)
    d = run / "report"
    rep = json.loads((d / "report.json").read_text())
    assert check_md_against_json((d / "report.md").read_text(), rep) > 50
    # and the check can fail: a number the JSON does not hold
    md = (d / "report.md").read_text().replace("| 2,788,000 |", "| 2,788,001 |")
    with pytest.raises(AssertionError, match="2,788,001"):
        check_md_against_json(md, rep)


def test_h200_projection_prices_generated_tokens_at_the_generation_rate(run):
    """GRPO's rollouts and rejection sampling are generation, not training: at 1,390 generated tokens/s they
    dominate a RL run's projected time (the bug was pricing them at the 108,000 training tokens/s)."""
    from tinyseek.report import sections as R

    metrics = [json.loads(x) for x in (run / "grpo" / "metrics.jsonl").read_text().splitlines()]
    for i, m in enumerate(metrics):
        m.update(rollout_tok_s=500.0 + i, rollout_s=2.0)  # 1,000 + 2i tokens a step
    (run / "grpo" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    recipe = json.loads((run / "recipe.json").read_text())
    recipe["stages"].append({"name": "sample", "kind": "sample", "fields": {}})
    (run / "recipe.json").write_text(json.dumps(recipe))
    _stage(run, "sample", "sample", 3.0)
    (run / "sample" / "stats.json").write_text(json.dumps({"generated_tokens": 7000}))
    rep = build_report(run)
    rollouts = sum(1000 + 2 * i for i in range(30))
    t = rep["totals"]
    assert (t["rollout_tokens"], t["generated_tokens_sample"], t["generated_tokens_eval"]) == (rollouts, 7000, 3000)
    (proj,) = [c for c in rep["cost"] if "H200" in c["what"]]
    train = 4000 + 9000 + 2000  # sft, GRPO's updates, distill
    gen = rollouts + 7000 + 3000
    assert proj["wall_s"] == pytest.approx(train / R.H200_TRAIN_TOKENS_PER_S + gen / R.H200_GENERATE_TOKENS_PER_S)
    assert f"{gen:,} generated tokens" in proj["basis"] and f"GRPO rollouts {rollouts:,}" in proj["basis"]


@pytest.mark.parametrize("card", ["demo-report.md", "outcome-vs-process-report.md", "r1-zero-report.md"])
def test_shipped_report_card_names_no_machine_directory(card):
    """docs/demo-report.md is read on other machines: no temporary or home directory of the one it ran on."""
    text = (Path(__file__).resolve().parents[1] / "docs" / card).read_text()
    assert not re.search(r"(?<![\w.])/(tmp|work|home|root|Users)/", text)


def test_given_says_where_a_cold_start_stopped_and_names_gold_traces_a_student_saw(tmp_path):
    """The card's "what each stage was given": a stopping rule is stated with the step it fired at, and a
    distillation file no sample stage wrote (gold traces here) is named as not the teacher's samples."""
    from tinyseek.report.given import given

    run = tmp_path / "run"
    for name, rows in (("tasks/sft.jsonl", 3), ("sample/sft.jsonl", 2)):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("{}\n" * rows)
    (run / "sample" / "stage.json").write_text(json.dumps({"name": "sample", "kind": "sample"}))
    (run / "tasks" / "stage.json").write_text(json.dumps({"name": "tasks", "kind": "tasks"}))
    sft = run / "sft"
    sft.mkdir()
    (sft / "summary.json").write_text(json.dumps({"steps": 180, "stopped_early": True}))
    fields = {"data": [str(run / "tasks/sft.jsonl")], "max_steps": 400, "batch_size": 64}
    stop = {**fields, "stop_accuracy": 0.5, "stop_data": str(run / "tasks/val.jsonl")}
    text = given({"kind": "sft", "fields": stop, "dir": sft}, run)
    assert "up to 400 steps" in text and "greedy accuracy 0.5 on tasks/val.jsonl" in text and "step 180" in text
    assert "step 180" not in given({"kind": "sft", "fields": fields, "dir": sft}, run)

    both = {"data": [str(run / "sample/sft.jsonl"), str(run / "tasks/sft.jsonl")], "teacher": str(run / "grpo/final")}
    text = given({"kind": "distill", "fields": both, "dir": run / "distill"}, run)
    assert (
        "teacher's verified samples sample/sft.jsonl (2 rows)" in text
        and "NOT the teacher's samples: tasks/sft.jsonl (3 rows)" in text
    )
    only = given({"kind": "distill", "fields": {**both, "data": both["data"][:1]}, "dir": run / "distill"}, run)
    assert "NOT" not in only


def test_the_card_opens_in_plain_words_and_plots_each_stage_apart(run, monkeypatch):
    """A summary a newcomer can read first (its numbers the report's own), no `sft (sft)` labels, no two sections
    of one name, the losses as a grid of explained panels (before: a 2200x352 strip of bare loss/ce/kd), and the
    expert balance of each stage on its own steps (before: stages that branch from one start laid end to end)."""
    from tinyseek.report import plots

    figs = {}
    real = plots.save
    monkeypatch.setattr(plots, "save", lambda plt, fig, path: figs.setdefault(path.stem, fig) and real(plt, fig, path))
    write_report(run)
    md = (run / "report" / "report.md").read_text()
    rep = json.loads((run / "report" / "report.json").read_text())
    head, _, rest = md.partition("In short:\n\n")
    assert head.startswith("# Report card") and head.count("\n") <= 3  # the summary comes first
    said = rest.split("\n\n")[0].splitlines()
    grpo = (
        "took sft from 20.0% to 45.0% of the held-out problems right (+25.0 points; the 95% intervals do not overlap)"
    )
    assert said[0] == f"- **grpo** {grpo}."
    assert said[1].startswith("- **distill**, distilled from grpo at 0.") and "42.0% of the held-out" in said[1]
    assert "93% of its teacher's 45.0%" in said[1]
    pool = list(_json_numbers(rep))
    for n in (n for line in said for n in NUM.findall(line.replace("95% intervals", ""))):
        assert any(shows(n, x) for x in pool), n
    assert not re.search(r"\b([\w-]+) \(\1\)", md)  # `grpo`, not `grpo (grpo)`
    titles = re.findall(r"^## (.+)$", md, re.M)
    assert len(titles) == len(set(titles)) and not any(a != b and b.startswith(a) for a in titles for b in titles)
    losses = [ax for ax in figs["losses"].axes if ax.get_visible()]
    assert [ax.get_title() for ax in losses] == ["sft", "distill, from grpo"]
    assert any("KL to the teacher" in t.get_text() for t in losses[1].get_legend().get_texts())
    w, h = figs["losses"].get_size_inches()
    assert w / h < 4  # not a strip
    balance = [ax for ax in figs["expert_load"].axes if ax.get_visible()]
    assert [ax.get_title() for ax in balance] == ["sft", "grpo, from sft"]
    assert all(min(line.get_xdata()) == 1 for ax in balance for line in ax.get_lines())  # each on its own steps


def test_the_machine_line_names_the_threads_the_run_used(tmp_path, run):
    """A run made with --threads 1 says 1 thread, whatever the process writing its report uses (recipe.json's
    threads; 0, the machine default, falls back to this process's)."""
    import torch

    rec, n = json.loads((run / "recipe.json").read_text()), torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        for threads, want in ((1, 1), (0, 3)):
            (run / "recipe.json").write_text(json.dumps({**rec, "threads": threads}))
            assert f"({want} threads)" in build_report(run)["machine"]
    finally:
        torch.set_num_threads(n)
        (run / "recipe.json").write_text(json.dumps(rec))
