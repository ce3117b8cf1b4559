"""Evaluation maths against hand-computed values, interval coverage by simulation, and an end-to-end run."""

import json
import math
import random
from itertools import combinations

import pytest

from tinyseek.errors import TinyseekError
from tinyseek.evaluate import (
    majority_vote,
    mean_ci,
    normalize_answer,
    paired_comparison,
    pass_at_k,
    sign_test,
    summarize,
    wilson,
)


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(10, 3, 4) == pytest.approx(1 - math.comb(7, 4) / math.comb(10, 4))
    assert pass_at_k(3, 2, 2) == 1.0  # n - c < k


def test_pass_at_k_is_the_mean_over_subsets():
    """Unbiased: it equals the share of k-subsets of the n samples that contain a correct one."""
    rng = random.Random(0)
    for _ in range(30):
        n = rng.randint(1, 8)
        flags = [rng.random() < 0.4 for _ in range(n)]
        for k in range(1, n + 1):
            subsets = list(combinations(flags, k))
            assert pass_at_k(n, sum(flags), k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_majority_vote_and_normalisation():
    assert normalize_answer(" 42.0 ") == normalize_answer("84/2") == normalize_answer("42")
    assert normalize_answer(None) is None and normalize_answer("  ") is None
    assert majority_vote(["3", "4", "4.0", None, "3"]) == 0  # 3 and 4 tie at two votes: 3 was seen first
    assert majority_vote(["3", "4", "4.0", None, "4/1"]) == 1  # 4 wins 3 to 1 (numbers compared exactly)
    assert majority_vote(["7", None, "8", "8"]) == 2
    assert majority_vote([None, None]) is None
    assert majority_vote(["a", "b"]) == 0  # tie: the answer seen first


def test_summarize_hand_computed():
    correct = [[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
    answers = [["5", "6", "5.0", "6"], ["1", "2", "1", None], ["9", "9", "9", "9"]]
    formats = [[1.0, 0.8, 1.0, 1.0], [0.0] * 4, [1.0] * 4]
    lengths = [[10, 20, 30, 40], [5, 5, 5, 5], [1, 2, 3, 4]]
    s = summarize(correct, answers, formats, lengths)
    assert s["pass@1"]["value"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert s["pass@2"]["value"] == pytest.approx(((1 - 1 / 6) + 0 + 1) / 3)
    assert s["pass@4"]["value"] == pytest.approx(2 / 3)
    assert s["cons@4"]["value"] == pytest.approx(2 / 3)  # problem 0: "5" ties "6", "5" first and right
    assert s["format"]["value"] == pytest.approx((0.75 + 0 + 1) / 3)
    assert s["mean_length"]["value"] == pytest.approx((25 + 5 + 2.5) / 3)
    for name in ("pass@1", "pass@2", "cons@4", "format"):
        lo, hi = s[name]["ci95"]
        assert 0 <= lo <= s[name]["value"] <= hi <= 1
    # an unscorable gold answer leaves the problem out of accuracy, not of format/length
    s2 = summarize(correct + [[None] * 4], answers + [["1"] * 4], formats + [[1.0] * 4], lengths + [[1] * 4])
    assert s2["n_unscored"] == 1 and s2["pass@1"]["value"] == s["pass@1"]["value"]


def test_wilson_hand_value():
    lo, hi = wilson(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    lo, hi = wilson(1.0, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-3)


def test_intervals_cover_the_true_values():
    """Simulated evaluations of a population of problems with known success rates: the 95% intervals of
    pass@1 (fractional, K = 4), cons@1-style binary scores and mean length cover the truth >= ~95% of the time."""
    rng = random.Random(1)
    reps, N, K = 400, 40, 4
    true_p = 0.35  # problems' success rates ~ Beta(0.7, 1.3): mean 0.35
    cover = {"pass@1": 0, "binary": 0, "length": 0}
    for _ in range(reps):
        correct, lengths = [], []
        for _ in range(N):
            p = rng.betavariate(0.7, 1.3)
            correct.append([1.0 if rng.random() < p else 0.0 for _ in range(K)])
            lengths.append([rng.expovariate(1 / 50) for _ in range(K)])
        s = summarize(correct, [[None] * K] * N, [[0.0] * K] * N, lengths)
        lo, hi = s["pass@1"]["ci95"]
        cover["pass@1"] += lo <= true_p <= hi
        first = [[c[0]] for c in correct]  # K = 1: binary per problem
        lo, hi = summarize(first, [[None]] * N, [[0.0]] * N, [[1]] * N)["pass@1"]["ci95"]
        cover["binary"] += lo <= true_p <= hi
        lo, hi = s["mean_length"]["ci95"]
        cover["length"] += lo <= 50 <= hi
    assert cover["pass@1"] / reps >= 0.94
    assert 0.92 <= cover["binary"] / reps <= 0.99
    assert 0.91 <= cover["length"] / reps <= 0.99


def test_mean_ci():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and hi - m == pytest.approx(1.959964 * 1.0 / math.sqrt(3), rel=1e-5)


# ----------------------------------------------------------------------------------------------
# paired comparison of two models on the same problems


def test_sign_test_exact_by_hand():
    assert sign_test(9, 0) == pytest.approx(2 / 2**9)  # 9 of 9 untied pairs for B: 2 * (1/2)^9
    assert sign_test(9, 1) == pytest.approx(2 * (1 + 10) / 2**10)  # P(<= 1 of 10) both tails
    assert sign_test(1, 9) == sign_test(9, 1)  # two-sided
    assert sign_test(0, 0) == 1.0 and sign_test(5, 5) == 1.0  # capped at 1
    assert sign_test(3, 1) == pytest.approx(2 * 5 / 16)
    with pytest.raises(ValueError):
        sign_test(-1, 2)


def test_paired_comparison_of_equal_arms_is_zero_with_p_one():
    a = [0.0, 0.25, 1.0, 0.5, 0.75] * 4
    r = paired_comparison(a, list(a))
    assert r["n"] == 20 and r["diff"] == 0.0 and r["ci95"] == [0.0, 0.0]
    assert r["sign_p"] == 1.0 and r["ties"] == 20 and r["b_better"] == r["a_better"] == 0


def test_paired_comparison_b_better_on_nine_of_ten():
    a = [0.0] * 9 + [0.5]
    b = [0.25, 0.5, 0.75, 1.0, 0.25, 0.5, 0.75, 1.0, 0.5] + [0.5]  # B better on 9, one tie
    r = paired_comparison(a, b)
    assert (r["b_better"], r["a_better"], r["ties"]) == (9, 0, 1)
    assert r["sign_p"] == pytest.approx(2 / 2**9)
    assert r["diff"] == pytest.approx(sum(b) / 10 - sum(a) / 10) and r["a"] < r["b"]
    lo, hi = r["ci95"]
    assert 0 < lo <= r["diff"] <= hi <= 1.0  # every resample's mean difference is >= 0, most > 0
    assert paired_comparison(a, b) == r  # seeded: the same interval every time
    s = paired_comparison(b, a)  # A and B swapped: the difference and its interval change sign
    assert s["diff"] == pytest.approx(-r["diff"]) and s["sign_p"] == r["sign_p"]
    assert s["ci95"] == pytest.approx([-hi, -lo], abs=1e-6)


def test_paired_comparison_pools_seeds_by_concatenation():
    rng = random.Random(3)
    seeds = [([rng.random() for _ in range(30)], [rng.random() for _ in range(30)]) for _ in range(3)]
    pooled = paired_comparison([x for a, _ in seeds for x in a], [y for _, b in seeds for y in b])
    parts = [paired_comparison(a, b) for a, b in seeds]
    assert pooled["n"] == 90 and pooled["b_better"] == sum(p["b_better"] for p in parts)
    assert pooled["diff"] == pytest.approx(sum(p["diff"] for p in parts) / 3)


def test_paired_comparison_bad_input_is_named():
    with pytest.raises(TinyseekError, match="3 scores for A but 2 for B"):
        paired_comparison([0, 1, 0], [1, 1])
    with pytest.raises(TinyseekError, match="no problems"):
        paired_comparison([], [])
    with pytest.raises(TinyseekError, match="finite"):
        paired_comparison([0.0], [math.nan])


def test_paired_interval_covers_the_true_difference():
    """Two models on the same problems, strongly correlated (a problem hard for one is hard for the other) with a
    true difference of 0.1: the paired 95% interval covers 0.1 about 95% of the time. An interval that ignored the
    pairing (A and B resampled apart) would be over twice as wide and cover nearly always; one too narrow, far less."""
    rng = random.Random(7)
    reps, n, cover, width = 200, 80, 0, 0.0
    for rep in range(reps):
        u = [rng.random() for _ in range(n)]
        a = [float(x < 0.5) for x in u]
        b = [float(x < 0.6) for x in u]  # B right wherever A is, and on a tenth more of the problems
        lo, hi = paired_comparison(a, b, resamples=400, seed=rep)["ci95"]
        cover += lo <= 0.1 <= hi
        width += (hi - lo) / reps
    assert 0.9 <= cover / reps <= 0.985
    assert width < 2 * 1.96 * math.sqrt(2 * 0.25 / n) / 2  # under half the width of the unpaired interval


class _OracleEngine:
    """An engine that answers each prompt from a table (right, wrong, or unformatted), K samples a prompt."""

    def __init__(self, replies):
        self.replies = replies
        self.tokenizer = None

    def encode_chat(self, messages):
        return [ord(ch) for ch in messages[-1]["content"]]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def generate(self, prompts, params, n=1):
        from tinyseek.inference.sequence import Completion

        out = []
        for p in prompts:
            texts = self.replies[self.decode(p)]
            assert len(texts) == n
            out.append([Completion([1] * len(t), None, "stop", t) for t in texts])
        return out


def test_evaluate_end_to_end_with_english_and_chinese_records(tmp_path):
    from tinyseek.evaluate import evaluate

    good = "<think>\n2+2=4\n</think>\n<answer>4</answer>"
    records = [
        {"id": "a", "prompt": "What is 2+2?", "answer": "4"},
        {"id": "b", "prompt": "三加四等于多少？", "answer": "7"},
    ]
    replies = {
        "What is 2+2?": [good, "<answer>5</answer>", good],
        "三加四等于多少？": ["<think>\n三加四\n</think>\n<answer>7</answer>", "答案是8", "<answer>8</answer>"],
    }
    res = evaluate(_OracleEngine(replies), records, samples=3)
    assert res["pass@1"]["value"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert res["cons@3"]["value"] == pytest.approx(0.5)  # problem b: "8" wins the vote 2 to 1
    assert res["pass@3"]["value"] == 1.0
    assert res["format"]["value"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert res["problems"][1]["answers"] == ["7", "8", "8"]
    # per problem, per sample: what a paired comparison of two evaluations pairs
    assert [p["correct"] for p in res["problems"]] == [[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    json.dumps(res)  # serialisable as eval.json


def test_cli_eval_writes_eval_json(tmp_path, capsys):
    import torch

    from tinyseek.checkpoint import save_checkpoint
    from tinyseek.config import ModelConfig
    from tinyseek.errors import TinyseekError
    from tinyseek.evaluate import cli_eval
    from tinyseek.model import Transformer
    from tinyseek.tokenizer import Tokenizer, task_texts

    tok = Tokenizer.train(task_texts(["arithmetic"], 50), 300)
    tok.save(tmp_path / "tok")
    torch.manual_seed(0)
    save_checkpoint(
        Transformer(ModelConfig.preset("nano", vocab_size=tok.vocab_size)),
        tmp_path / "ck",
        tokenizer_file=tmp_path / "tok" / "tokenizer.json",
    )
    out = tmp_path / "ev"
    assert (
        cli_eval(
            [
                str(tmp_path / "ck"),
                "--task",
                "arithmetic",
                "--n",
                "3",
                "--samples",
                "2",
                "--max-new-tokens",
                "6",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert res["n_problems"] == 3 and res["samples"] == 2 and len(res["problems"]) == 3
    assert {"pass@1", "pass@2", "cons@2", "format", "mean_length"} <= set(res)
    assert all(len(p["completions"]) == 2 for p in res["problems"])
    assert "pass@1" in capsys.readouterr().out
    with pytest.raises(TinyseekError, match="exactly one"):
        cli_eval([str(tmp_path / "ck")])
    # a user JSONL file, Chinese and English prompts
    data = tmp_path / "mine.jsonl"
    rows = [
        {"prompt": "What is 3+4?", "answer": "7"},
        {"prompt": "三加四等于多少？", "answer": "7"},
        {"prompt": "1+1?", "answer": "2"},
    ]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert (
        cli_eval(
            [
                str(tmp_path / "ck"),
                "--data",
                str(data),
                "--n",
                "2",
                "--samples",
                "1",
                "--temperature",
                "0",
                "--max-new-tokens",
                "4",
                "--greedy",
                "--out",
                str(tmp_path / "ev2"),
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "ev2" / "eval.json").read_text(encoding="utf-8"))
    assert [p["prompt"] for p in res["problems"]] == [rows[0]["prompt"], rows[1]["prompt"]] and res["task"] == "mine"
    assert res["greedy"]["samples"] == 1 and res["generated_tokens"] > 0  # --greedy: one greedy decode of each
    # by default R1's protocol: K = 4 samples at T = 0.6, top-p 0.95
    argv = [
        str(tmp_path / "ck"),
        "--data",
        str(data),
        "--n",
        "1",
        "--max-new-tokens",
        "2",
        "--out",
        str(tmp_path / "d"),
    ]
    assert cli_eval(argv) == 0
    res = json.loads((tmp_path / "d" / "eval.json").read_text(encoding="utf-8"))
    assert res["samples"] == 4 and (res["params"]["temperature"], res["params"]["top_p"]) == (0.6, 0.95)


def test_recipe_eval_stage_defaults_to_r1_protocol(tmp_path, r1_checkpoint):
    from tinyseek import recipe as R

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "What is 2 plus 3?", "answer": "5"}) + "\n")
    rec = tmp_path / "r.toml"
    rec.write_text(f'name = "e"\n[[stage]]\nkind = "eval"\nname = "ev"\nmodel = "{r1_checkpoint}"\ndata = "{data}"\n')
    R.run_recipe(R.load_recipe(rec, tmp_path / "run"), tmp_path / "run", log=lambda s: None)
    res = json.loads((tmp_path / "run" / "ev" / "eval.json").read_text())
    assert res["samples"] >= 4 and (res["params"]["temperature"], res["params"]["top_p"]) == (0.6, 0.95)
    # `tinyseek eval` with the same fields is the same evaluation: the same config, defaults and numbers
    from tinyseek.evaluate import cli_eval

    assert cli_eval([str(r1_checkpoint), "--data", str(data), "--out", str(tmp_path / "cli")]) == 0
    cli = json.loads((tmp_path / "cli" / "eval.json").read_text())
    drop = ("time_s", "tokens_per_s", "wall_s")
    assert {k: v for k, v in cli.items() if k not in drop} == {k: v for k, v in res.items() if k not in drop}


def test_eval_config_defaults_and_errors():
    """One set of defaults for `tinyseek eval` and a recipe's eval stage: R1's protocol (k samples at T = 0.6,
    top-p 0.95) with k = 4; bad fields fail before anything loads, naming the field."""
    from tinyseek.config import ConfigError, from_dict
    from tinyseek.evaluate import EvalConfig

    cfg = from_dict(EvalConfig, {"model": "ck", "task": "addition"})
    assert (cfg.samples, cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.n, cfg.greedy) == (
        4,
        0.6,
        0.95,
        256,
        100,
        False,
    )
    assert cfg.name == "addition" and from_dict(EvalConfig, {"model": "ck", "data": "d/test.jsonl"}).name == "test"
    for fields, needle in [
        ({"task": "addition"}, "model: the checkpoint"),
        ({"model": "ck"}, "task: give exactly one of task or data"),
        ({"model": "ck", "task": "addition", "data": "x.jsonl"}, "exactly one"),
        ({"model": "ck", "task": "nope"}, "task: unknown task 'nope'"),
        ({"model": "ck", "task": "addition", "n": 0}, "n: must be >= 1"),
        ({"model": "ck", "data": "x.jsonl", "n": -1}, "n: must be >= 0"),
        ({"model": "ck", "data": "x.jsonl", "samples": 0}, "samples: must be >= 1"),
        ({"model": "ck", "data": "x.jsonl", "batch": 0}, "batch: must be >= 1"),
        ({"model": "ck", "data": "x.jsonl", "sample": 8}, "unknown field 'sample'"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            from_dict(EvalConfig, fields)


def test_evaluate_a_real_checkpoint_that_answers(r1_checkpoint):
    """A nano model overfit on three R1 chats, through load_engine + evaluate + the real rewards: it must
    score full marks on what it learnt and zero on a question it never saw the answer to."""
    from tinyseek.evaluate import evaluate
    from tinyseek.inference.load import load_engine
    from tinyseek.inference.sampling import SamplingParams

    engine = load_engine(r1_checkpoint, max_batch=8)
    records = [
        {"id": "add", "prompt": "What is 2 plus 3?", "answer": "5"},
        {"id": "mul", "prompt": "What is 4 times 2?", "answer": "8"},
        {"id": "wrong", "prompt": "What is 2 plus 3?", "answer": "6"},
    ]
    res = evaluate(engine, records, samples=2, params=SamplingParams(temperature=0, max_new_tokens=40))
    assert [p["correct"] for p in res["problems"]] == [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]
    assert res["problems"][0]["completions"][0].startswith("<think>")
    assert res["format"]["value"] == 1.0 and res["pass@1"]["value"] == pytest.approx(2 / 3)
    assert res["cons@2"]["value"] == pytest.approx(2 / 3)
