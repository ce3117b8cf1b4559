"""The process reward model: trained on corrupt-one-step labels it scores a corrupted step below the same step of
the gold trace on held-out traces; its command, its errors, and its use as GRPO's process reward."""

import json
import random

import pytest
import torch

from tinyseek import tasks
from tinyseek.errors import TinyseekError
from tinyseek.io import write_jsonl
from tinyseek.r1 import completion_text

# slow: a policy trained from scratch, then its PRM (~45 s of CPU); tiny ops on one torch thread (conftest)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
    """A `nano` checkpoint that writes 1-digit addition traces (`3+4+0=07 so 7`): the policy a PRM is made from.
    Its data files: train.jsonl (the train side) and test.jsonl (held-out problems it never saw)."""
    from tinyseek.checkpoint import save_checkpoint
    from tinyseek.config import ModelConfig
    from tinyseek.model import Transformer
    from tinyseek.tokenizer import Tokenizer

    out = tmp_path_factory.mktemp("prm")
    add = tasks.get("addition")
    train = add.generate(400, seed=0, split="train", difficulty=1)
    test = add.generate(40, seed=0, split="test", difficulty=1)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "test.jsonl", test)
    tok = Tokenizer.train([r["prompt"] + completion_text(r) for r in train], 300)
    tok_file = tok.save(out / "tok")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = Transformer(ModelConfig.preset("nano", vocab_size=tok.vocab_size, n_dense_layers=3))
        seqs = [(tok.encode(tok.prompt(r["prompt"])), tok.encode(completion_text(r)) + [tok.eos_id]) for r in train]
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        rng = random.Random(0)
        for _ in range(150):
            batch = rng.sample(seqs, 32)
            L = max(len(p) + len(c) for p, c in batch)
            x = torch.full((len(batch), L), tok.pad_id)
            y = torch.full((len(batch), L), -100)
            for i, (p, c) in enumerate(batch):
                x[i, : len(p) + len(c)] = torch.tensor(p + c)
                y[i, len(p) - 1 : len(p) + len(c) - 1] = torch.tensor(c)
            loss = model(x, targets=y).ce_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(n)
    return save_checkpoint(model.eval(), out / "ckpt", tokenizer_file=tok_file), out


@pytest.fixture(scope="module")
def prm_run(trunk):
    from tinyseek.train.prm import PrmConfig, run

    ckpt, d = trunk
    cfg = PrmConfig(
        init=str(ckpt),
        data=[str(d / "train.jsonl")],
        eval_data=[str(d / "test.jsonl")],
        eval_n=40,
        max_steps=60,
        batch_size=32,
        seq_len=64,
        progress=False,
    )
    cfg.validate()
    summary = run(cfg, d / "prm")
    return d / "prm" / "final", summary, d


def test_prm_scores_a_corrupted_step_below_its_gold_version_on_held_out_traces(prm_run):
    from tinyseek.io import read_rows
    from tinyseek.train.prm import heldout_pairs, load_prm, score_examples, step_metrics

    path, summary, d = prm_run
    model, tok, meta = load_prm(path)
    assert meta["step_separator"] == " " and meta["train_flops"] > 0
    pairs = heldout_pairs(tok, list(read_rows(d / "test.jsonl")), " ", seed=1)  # other corruptions than training's
    scores = score_examples(model, pairs, tok.pad_id)
    gaps = [scores[i - 1][pairs[i].bad] - scores[i][pairs[i].bad] for i in range(1, len(pairs), 2)]
    m = step_metrics(pairs, scores)
    wins, mean_gap = sum(g > 0 for g in gaps) / len(gaps), sum(gaps) / len(gaps)
    assert wins >= 0.7, (wins, mean_gap, m)  # the corrupted step scores lower in most pairs (measured 0.875)
    assert mean_gap > 0.1, (wins, mean_gap, m)  # and by a margin on average (measured 0.48)
    assert m["pairs"] == 40 and m["step_acc"] > 0.6, m
    # the run's own held-out evaluation says the same
    assert summary["eval"]["eval_pair_acc"] >= 0.7


def test_prm_score_command_and_bad_inputs(prm_run, tmp_path, capsys):
    from tinyseek.cli import main

    path, _, d = prm_run
    out = tmp_path / "scores.jsonl"
    assert main(["prm", "score", str(path), "--data", str(d / "test.jsonl"), "--corrupt", "--out", str(out)]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["traces"] == 80 and res["pair_acc"] >= 0.7
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 80 and len(rows[0]["scores"]) == len(rows[0]["steps"]) == len(rows[0]["labels"])
    # a trace without the step separator: a one-line error naming the file and row
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"prompt": "1+2=", "solution": "1+2+0=03", "answer": "3"}])
    assert main(["prm", "score", str(path), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1" in err and "no step separator" in err and len(err.strip().splitlines()) == 1
    assert main(["prm", "train", "--out", str(tmp_path / "p"), "--init", str(d / "ckpt"), "--data", str(bad)]) == 2
    assert f"{bad}:1" in capsys.readouterr().err
    # not a PRM
    assert main(["prm", "score", str(d / "ckpt"), "--data", str(d / "test.jsonl")]) == 2
    assert "not a process reward model" in capsys.readouterr().err


def test_prm_with_another_tokenizer_is_refused(prm_run, r1_checkpoint):
    from tinyseek.train.policy import Policy
    from tinyseek.train.prm import StepScorer

    path, _, d = prm_run
    pol = Policy.load(str(r1_checkpoint))  # another vocabulary
    with pytest.raises(TinyseekError, match=r"prm/final/tokenizer\.json: the PRM's tokenizer is not the policy's"):
        StepScorer(path, pol.tok, pol.module.cfg.vocab_size, str(r1_checkpoint))
    same = Policy.load(str(d / "ckpt"))
    with pytest.raises(TinyseekError, match=r"config\.json: the PRM's vocab_size"):
        StepScorer(path, same.tok, same.module.cfg.vocab_size + 1, "policy")
    assert StepScorer(path, same.tok, same.module.cfg.vocab_size, "policy").sep == " "


def test_completion_labels_are_paid_for_by_the_arm_that_scores_with_the_prm(trunk, tmp_path):
    """labels = "completion": the policy's own completions are labelled by its continuations; the sampling's FLOPs
    are on the PRM stage's meter beside its training, prm.json carries both, and a GRPO arm scoring with that PRM
    counts them against its budget (one step then spends a budget set just above them)."""
    from tinyseek.train.grpo import GrpoConfig, build_stage
    from tinyseek.train.prm import PrmConfig, run

    ckpt, d = trunk
    cfg = PrmConfig(
        init=str(ckpt),
        data=[str(d / "train.jsonl")],
        eval_data=[str(d / "test.jsonl")],
        eval_n=8,
        max_steps=3,
        batch_size=8,
        seq_len=64,
        labels="completion",
        label_n=12,
        label_continuations=2,
        label_max_new_tokens=24,
        progress=False,
    )
    cfg.validate()
    summary = run(cfg, tmp_path / "prm")
    meta = json.loads((tmp_path / "prm" / "final" / "prm.json").read_text())
    ls = meta["label_stats"]
    assert ls["traces"] == 12 and ls["examples"] <= 12 and ls["flops"] > 0
    assert ls["continuations"] % 2 == 0 and ls["continuations"] >= 2 * 12  # >= one reasoning step a trace
    assert "completion labels (Math-Shepherd)" in meta["labels"]
    training = summary["tokens"] * summary["flops_per_token"]
    assert meta["train_flops"] == pytest.approx(summary["cost"]["flops"]) == pytest.approx(ls["flops"] + training)

    grpo = GrpoConfig(
        model=str(ckpt),
        data=str(d / "train.jsonl"),
        advantage="process",
        process_reward=f"prm:{tmp_path / 'prm' / 'final'}",
        batch_size=2,
        group_size=2,
        max_new_tokens=24,
        max_steps=5,
        max_flops=meta["train_flops"] * 1.0001,
        eval_every=0,
        eval_data=str(d / "test.jsonl"),
        eval_n=2,
        eval_samples=1,
        progress=False,
        sample_every=0,
    )
    grpo.validate()
    loop, stage = build_stage(grpo, tmp_path / "grpo")
    assert loop.prior_flops == pytest.approx(ls["flops"] + training)
    assert loop.run(stage)["steps"] == 1
