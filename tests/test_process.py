"""Process supervision: steps of a trace, the oracle step rule, corruptions, and the process-supervised advantages
(DeepSeekMath §4.1.3) against a hand-computed example."""

import random

import pytest
import torch

from tinyseek import steps, tasks
from tinyseek.config import ConfigError
from tinyseek.errors import TinyseekError
from tinyseek.r1 import completion_text
from tinyseek.train.grpo_loss import grpo_loss, process_advantages

GOLD = "<think>\n5+3+0=08 6+7+0=13 so 138\n</think>\n<answer>138</answer>"


def test_steps_of_an_arithmetic_trace():
    assert steps.steps_of(GOLD) == ["<think>\n5+3+0=08", "6+7+0=13", "so 138", "</think>\n<answer>138</answer>"]
    spans = steps.step_spans(GOLD)
    assert spans[0][0] == 0 and spans[-1][1] == len(GOLD)  # the steps cover the text
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert GOLD[spans[0][1] - 1] == "8"  # a reasoning step ends at its own last character
    # a piece without a digit joins the next one
    assert steps.steps_of("<think>\nswap 5-3-0=2 so -12\n</think>\n<answer>-12</answer>")[:2] == [
        "<think>\nswap 5-3-0=2",
        "so -12",
    ]
    assert steps.steps_of("no digits at all") == ["no digits at all", ""]  # one step, and an empty answer step


def test_oracle_step_rule_has_prefix_semantics():
    right = steps.oracle_step_rewards(GOLD, GOLD, "138")
    assert right == [1.0, 1.0, 1.0, 1.0]
    carry = GOLD.replace("6+7+0=13 so 138", "6+7+1=14 so 148").replace(">138<", ">148<")
    assert steps.oracle_step_rewards(carry, GOLD, "138") == [1.0, 0.0, 0.0, 0.0]
    answer_only = GOLD.replace(">138<", ">139<")
    assert steps.oracle_step_rewards(answer_only, GOLD, "138") == [1.0, 1.0, 1.0, 0.0]
    short = "<think>\n5+3+0=08 so 138\n</think>\n<answer>138</answer>"  # a skipped step: right answer, bad trace
    assert steps.oracle_step_rewards(short, GOLD, "138") == [1.0, 0.0, 0.0]


def test_corruption_changes_one_digit_of_one_step_and_the_oracle_agrees():
    rng = random.Random(0)
    for rec in tasks.get("arithmetic").generate(200, seed=3, difficulty=2):
        gold = completion_text(rec)
        bad, k = steps.corrupt(gold, rng)
        assert k >= 0 and len(bad) == len(gold)
        assert sum(a != b for a, b in zip(bad, gold)) == 1
        n = len(steps.step_spans(gold))
        labels = steps.labels_after(n, k)
        assert labels == steps.oracle_step_rewards(bad, gold, rec["answer"], task=rec["task"])


def test_token_step_ends():
    # tokens "<think>\n", "5", "+", ..., one character each after the first
    text = "<think>\n1+2=3 so 3\n</think>\n<answer>3</answer>"
    toks = ["<think>\n"] + list(text[len("<think>\n") :]) + ["<eos>"]
    ends = steps.token_step_ends(steps.step_spans(text), [sum(map(len, toks[: i + 1])) for i in range(len(toks))])
    assert toks[ends[0]] == "3" and toks[ends[1]] == "3" and ends[-1] == len(toks) - 1
    assert ends == sorted(ends)


def test_no_separator_is_a_one_line_error_naming_the_file():
    with pytest.raises(TinyseekError, match=r"traces\.jsonl:3: no step separator '\|'"):
        steps.check_separator(GOLD, "|", "traces.jsonl:3")


# ----------------------------------------------------------------------------------------------
# the advantages


def test_process_advantages_hand_computed():
    # one group of two completions:
    #   A: 3 tokens, steps end at tokens 0 and 2, rewards [1, 0]
    #   B: 4 tokens, steps end at tokens 1 and 3, rewards [1, 1]
    # the group's step rewards [1, 0, 1, 1]: mean 0.75, unbiased std sqrt((3 * 0.25^2 + 0.75^2) / 3) = 0.5
    # normalised: A [0.5, -1.5], B [0.5, 0.5] (divided by 0.5 + 1e-4, i.e. x / 0.5001 * 0.5 ...)
    # a token's advantage: its step's and every later step's normalised reward
    #   A: token 0 -> 0.5 - 1.5 = -1.0; tokens 1, 2 -> -1.5      B: tokens 0, 1 -> 1.0; tokens 2, 3 -> 0.5
    adv, std, informative = process_advantages([[1.0, 0.0], [1.0, 1.0]], [[0, 2], [1, 3]], [3, 4], group_size=2)
    k = 0.5 / (0.5 + 1e-4)
    expected = torch.tensor([[-1.0, -1.5, -1.5, 0.0], [1.0, 1.0, 0.5, 0.5]]) * k
    assert adv.shape == (2, 4)
    assert torch.allclose(adv, expected, atol=1e-6)
    assert std.tolist() == pytest.approx([0.5]) and informative.tolist() == [True]


def test_process_advantages_equal_steps_and_modes():
    # the second group's step rewards are all equal: zero advantage, not informative
    adv, _, inf = process_advantages(
        [[1.0, 0.0], [1.0, 1.0], [0.5], [0.5, 0.5]], [[0, 1], [0, 1], [1], [0, 1]], [2, 2, 2, 2], group_size=2
    )
    assert inf.tolist() == [True, False] and torch.equal(adv[2:], torch.zeros(2, 2))
    adv, _, _ = process_advantages([[1.0, 0.0], [1.0, 1.0]], [[0, 1], [0, 1]], [2, 2], 2, scale_rewards="none")
    assert torch.allclose(adv, torch.tensor([[0.25 - 0.75, -0.75], [0.5, 0.25]]))
    with pytest.raises(ConfigError, match="step rewards"):
        process_advantages([[1.0]], [[0, 1]], [2], 1)


def test_one_step_per_completion_is_outcome_supervision():
    """With the whole completion as one step, the process advantage is the outcome advantage on every token."""
    from tinyseek.train.grpo_loss import group_advantages

    r = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    lens = [3, 2, 4, 1, 2, 3]
    adv, _, _ = process_advantages([[x] for x in r], [[n - 1] for n in lens], lens, 3)
    out, _, _ = group_advantages(torch.tensor(r), 3)
    for i, n in enumerate(lens):
        assert torch.allclose(adv[i, :n], out[i].expand(n))
        assert torch.equal(adv[i, n:], torch.zeros(adv.size(1) - n))


def test_loss_takes_per_token_advantages():
    logp = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.25]])).requires_grad_(True)
    mask = torch.ones(2, 2)
    per_seq = grpo_loss(logp, logp.detach(), torch.tensor([1.0, -1.0]), mask, loss_type="dapo").loss
    per_tok = grpo_loss(logp, logp.detach(), torch.tensor([[1.0, 1.0], [-1.0, -1.0]]), mask, loss_type="dapo").loss
    assert per_seq.item() == pytest.approx(per_tok.item())
    (g,) = torch.autograd.grad(
        grpo_loss(logp, logp.detach(), torch.tensor([[2.0, 0.0], [0.0, -1.0]]), mask, loss_type="dapo").loss, logp
    )
    assert torch.allclose(g, torch.tensor([[-2.0, 0.0], [0.0, 1.0]]) / 4)  # -A / tokens at ratio 1


# ----------------------------------------------------------------------------------------------
# the recipe, quick: every arm runs and the report card shows the arms, their compute and the hacking curve


@pytest.mark.slow
def test_outcome_vs_process_quick_recipe_and_its_report(tmp_path):
    import json
    import os
    import subprocess
    import sys

    run = tmp_path / "ovp"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinyseek.cli",
            "run",
            "outcome-vs-process",
            "--quick",
            "--out",
            str(run),
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    assert "grpo-prm" in p.stdout and "process (oracle)" in p.stdout  # the console shows the arms
    rep = json.loads((run / "report" / "report.json").read_text())
    ovp = rep["outcome_vs_process"]
    arms = {a["stage"]: a for a in ovp["arms"]}
    assert set(arms) == {"grpo-outcome", "grpo-oracle", "grpo-prm", "grpo-prm-completion"}
    assert arms["grpo-outcome"]["advantage"] == "outcome" and arms["grpo-oracle"]["process_reward"] == "oracle"
    for a in arms.values():
        assert a["flops"] > 0 and a["curve"] and a["curve"][0]["step"] == 0  # from the SFT evaluation on
    prm_arm = arms["grpo-prm"]
    prm_meta = json.loads((run / "prm" / "final" / "prm.json").read_text())
    assert prm_arm["flops_prm_train"] == pytest.approx(prm_meta["train_flops"]) and prm_arm["flops_prm_scoring"] > 0
    assert prm_arm["flops"] == pytest.approx(
        prm_arm["flops_rollouts"] + prm_arm["flops_updates"] + prm_arm["flops_prm_train"] + prm_arm["flops_prm_scoring"]
    )
    series = prm_arm["hacking"]["series"]
    assert len(series) == prm_arm["steps"] and all(0 <= r["prm_score"] <= 1 for r in series)
    assert ovp["prm"] and 0 <= ovp["prm"][0]["step_acc"] <= 1
    # the completion-label PRM: its labelling's sampling is in its training FLOPs, which its arm pays
    mc = next(p for p in ovp["prm"] if p["stage"] == "prm-completion")
    mc_meta = json.loads((run / "prm-completion" / "final" / "prm.json").read_text())
    assert mc["labels"] == "completion" and 0 < mc["label_stats"]["flops"] < mc_meta["train_flops"]
    assert arms["grpo-prm-completion"]["flops_prm_train"] == pytest.approx(mc_meta["train_flops"])
    # held-out evaluations of a PRM arm carry the PRM's verdict on the same samples, with intervals
    for name in ("grpo-prm", "grpo-prm-completion"):
        verdicts = [p["prm"] for p in arms[name]["curve"] if p["step"]]
        assert verdicts and all(p and 0 <= p["prm_score"] <= 1 for p in verdicts)
        assert all(v["prm_score_ci95"][0] <= v["prm_score"] <= v["prm_score_ci95"][1] for v in verdicts)
    # the arms paired on the same held-out problems: each with the SFT start, then each pair (8 quick problems)
    pairs = [(r["a_stage"], r["b_stage"], r["n"]) for r in ovp["paired"]]
    names = list(arms)
    assert pairs == [("sft (start)", a, 8) for a in names] + [
        (a, b, 8) for i, a in enumerate(names) for b in names[i + 1 :]
    ]
    md = (run / "report" / "report.md").read_text()
    assert "## Outcome rewards vs process rewards" in md and "### Over-optimisation" in md
    from test_report import check_md_against_json

    assert check_md_against_json(md, rep) > 50  # every number of every table is one of report.json's
    assert (run / "report" / "outcome_vs_process.png").is_file()
    # the whole run's FLOPs count the PRM's training once (in the prm stage, not again in the PRM arm)
    stages = {s["name"]: s for s in rep["stages"]}
    assert stages["grpo-prm"]["flops"] == pytest.approx(prm_arm["flops"] - prm_arm["flops_prm_train"])


def test_grpo_oracle_needs_worked_solutions_with_a_separator(tmp_path):
    from tinyseek.io import write_jsonl
    from tinyseek.train.grpo import GrpoConfig, PromptSource
    from tinyseek.train.process_reward import ProcessReward

    data = tmp_path / "rl.jsonl"
    write_jsonl(data, [{"prompt": "1+2=", "answer": "3"}])
    cfg = GrpoConfig(model="x", data=str(data), advantage="process", process_reward="oracle")
    cfg.validate()

    # user rows without a worked solution get the answer as their "solution": one step, no separator
    with pytest.raises(TinyseekError, match=rf"{data} record 1: no step separator ' '"):
        ProcessReward(cfg, None, PromptSource(cfg), tmp_path)  # the check alone, without a policy
    write_jsonl(data, [{"prompt": "1+2=", "answer": "3", "solution": "1+2+0=03 so 3"}])
    ProcessReward(cfg, None, PromptSource(cfg), tmp_path)  # a worked solution with steps: fine
    with pytest.raises(ConfigError, match="process_reward"):
        GrpoConfig(model="x", advantage="process").validate()


def test_an_arm_that_ran_past_the_common_budget_is_read_at_its_budget_evaluation(tmp_path):
    """The report compares an arm at the evaluation where it reached the common budget (eval_at_flops), its
    compute summed up to that step; the evaluations after it stay on its curve (the over-optimisation part)."""
    from tinyseek.report.outcome_vs_process import _arm

    def row(step, **kw):
        return {"step": step, "total_flops": 10.0 * step, "rollout_flops": 4.0, "prm_flops": 1.0, **kw}

    ms = [row(1, prm_train_flops=5.0)] + [row(k) for k in range(2, 7)]
    ms[2].update(eval_pass1=0.5, eval_pass1_lo=0.4, eval_pass1_hi=0.6)  # step 3
    ms[3].update(eval_pass1=0.7, eval_pass1_lo=0.6, eval_pass1_hi=0.8, at_eval_flops=True)  # step 4: the budget
    ms[5].update(eval_pass1=0.2, eval_pass1_lo=0.1, eval_pass1_hi=0.3, eval_prm_score=0.9)  # step 6: past it
    stage = {"name": "grpo-prm", "fields": {"advantage": "process"}, "metrics": ms, "dir": tmp_path, "marker": None}
    arm = _arm(stage, tmp_path, {})
    assert arm["steps"] == 4 and arm["steps_run"] == 6
    assert arm["final"]["pass@1"] == 0.7 and arm["final"]["at_budget"]
    assert arm["flops"] == 40.0 + 5.0 and arm["flops_prm_scoring"] == 4.0 and arm["flops_rollouts"] == 12.0
    assert [p["step"] for p in arm["curve"]] == [3, 4, 6] and arm["curve"][-1]["prm"]["prm_score"] == 0.9
    # an arm that stopped at the budget is read at its last evaluation
    for r in ms:
        r.pop("at_eval_flops", None)
    assert _arm(stage, tmp_path, {})["final"]["pass@1"] == 0.2
