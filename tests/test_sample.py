"""Rejection sampling keeps only verified, well-formed, finished completions, and writes an SFT dataset."""

import json

import pytest

from tinyseek.config import ConfigError
from tinyseek.inference.sequence import Completion
from tinyseek.train import rejection as S

REC = {"id": "a-1", "task": "arithmetic", "prompt": "12+30=", "answer": "42"}
GOOD = "<think>\n2+0+0=02 1+3+0=04 so 42\n</think>\n<answer>42</answer>"
GOOD_SHORT = "<think>\n12+30=42\n</think>\n<answer>42</answer>"


def test_select_keeps_only_verified_well_formed_finished():
    comps = [
        [
            (GOOD, 20, "stop"),
            ("<think>\nguess\n</think>\n<answer>41</answer>", 10, "stop"),  # wrong answer
            ("the answer is 42", 5, "stop"),  # right number, not the R1 layout
            ("<think>\nx\n</think><answer>42</answer> and more", 12, "stop"),  # text after the answer block
            (GOOD_SHORT, 12, "length"),  # cut at the token limit
            (GOOD_SHORT, 12, "stop"),
        ]
    ]
    rows, stats = S.select([REC], comps)
    assert [r["completion"] for r in rows] == [GOOD, GOOD_SHORT]
    assert rows[0]["prompt"] == REC["prompt"] and rows[0]["answer"] == "42"
    assert stats["verified"] == 2 and stats["completions"] == 6 and stats["problems_kept"] == 1
    # accept="any" (a pipeline's smoke test) keeps every completion; the statistics still count the verified
    rows, stats = S.select([REC], comps, accept="any")
    assert [r["completion"] for r in rows] == [c[0] for c in comps[0]] and stats["verified"] == 2


def test_select_shortest_and_dedup():
    comps = [
        [
            (GOOD, 20, "stop"),
            (GOOD_SHORT, 12, "stop"),
            (GOOD_SHORT.replace("\n", "\n "), 13, "stop"),
            (GOOD, 20, "stop"),
        ]
    ]
    rows, _ = S.select([REC], comps, dedup=True)
    assert [r["completion"] for r in rows] == [GOOD, GOOD_SHORT]  # whitespace variants count as repeats
    rows, _ = S.select([REC], comps, shortest=True)
    assert [r["completion"] for r in rows] == [GOOD_SHORT]
    rows, stats = S.select([REC], [[("<answer>7</answer>", 3, "stop")]], shortest=True)
    assert rows == [] and stats["problems_kept"] == 0


def test_cli_writes_sft_rows_that_sft_reads(tmp_path, monkeypatch):
    """The command end to end, with the model's sampling replaced by fixed completions (one right per problem)."""
    from tinyseek import tasks
    from tinyseek.data import row_to_messages

    recs = tasks.get("arithmetic").generate(3, seed=0, split="train")

    class FakePolicy:
        @classmethod
        def load(cls, path, tokenizer=""):
            return cls()

        def render(self, prompt, template, system=""):
            return [len(prompt)]

        def generate(self, prompts, n, *a, **k):
            out = []
            for r in recs[: len(prompts)]:
                right = f"<think>\n{r['solution']}\n</think>\n<answer>{r['answer']}</answer>"
                out += [
                    Completion([1] * 9, None, "stop", right),
                    Completion([1] * 5, None, "stop", "<answer>0</answer>"),
                ][:n]
            return out

    monkeypatch.setattr("tinyseek.train.policy.Policy", FakePolicy)
    out = tmp_path / "rs.jsonl"
    assert S.cli_sample(["ckpt", "--task", "arithmetic", "--n", "3", "--samples", "2", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 3 and [r["answer"] for r in rows] == [r["answer"] for r in recs]
    for r in rows:
        msgs = row_to_messages(r, "row")
        assert msgs[-1]["role"] == "assistant" and msgs[-1]["content"].endswith(f"<answer>{r['answer']}</answer>")
    # the recipe runner's form: --config + a directory
    cfg = tmp_path / "stage.toml"
    cfg.write_text('model = "ckpt"\ntask = "arithmetic"\nn = 3\nsamples = 2\nshortest = true\n')
    assert S.cli_sample(["--config", str(cfg), "--out", str(tmp_path / "stage")]) == 0
    assert len((tmp_path / "stage" / "sft.jsonl").read_text().splitlines()) == 3
    assert json.loads((tmp_path / "stage" / "stats.json").read_text())["problems_kept"] == 3


def _toml(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('model = "ckpt"\ntask = "arithmetic"\naccept = "some"\n')
    return p


def test_bad_config_is_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="task"):
        S.cli_sample(["ckpt", "--out", str(tmp_path / "x.jsonl")])
    with pytest.raises(ConfigError, match="accept"):
        S.cli_sample(["--config", str(_toml(tmp_path)), "--out", str(tmp_path / "x.jsonl")])
    with pytest.raises(ConfigError, match="samples"):
        S.cli_sample(["ckpt", "--task", "arithmetic", "--samples", "0", "--out", str(tmp_path / "x.jsonl")])
    assert not (tmp_path / "x.jsonl").exists()


def test_real_checkpoint_keeps_right_answers_and_drops_wrong_ones(tmp_path, r1_checkpoint):
    """Through the real engine: a nano model that learned R1_CHATS by heart answers "What is 2 plus 3?" with 5 in
    R1's layout. top-p 0.1 keeps only its most likely token at every step here, so the samples are its learned
    answers on any CPU. Right gold answers keep rows; the same prompt with a wrong gold answer keeps none."""
    from tinyseek import rewards as R

    recs = [
        {"id": "plus", "prompt": "What is 2 plus 3?", "answer": "5"},
        {"id": "times", "prompt": "What is 4 times 2?", "answer": "8"},
        {"id": "wrong-gold", "prompt": "What is 2 plus 3?", "answer": "6"},
    ]
    data = tmp_path / "recs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "rs"
    argv = [str(r1_checkpoint), "--data", str(data), "--n", "3", "--samples", "2", "--top-p", "0.1"]
    assert S.cli_sample([*argv, "--max-new-tokens", "40", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in (out / "sft.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["plus", "plus", "times", "times"]
    for r in rows:
        assert R.accuracy_reward([r["prompt"]], [r["completion"]], answer=[r["answer"]]) == [1.0]
        assert R.format_reward([r["prompt"]], [r["completion"]]) == [1.0]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["problems_kept"] == 2 and stats["verified"] == 4 and stats["completions"] == 6
    assert stats["generated_tokens"] >= sum(r["tokens"] for r in rows) > 0
