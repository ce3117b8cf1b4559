"""Task generators: determinism, the hash split, traces that end in (and verify to) their answers, user data."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from tinyseek import rewards, tasks
from tinyseek.errors import TinyseekError
from tinyseek.r1 import completion_text
from tinyseek.tasks.base import TEST_BUCKETS, side_of
from tinyseek.tasks.countdown import check_equation
from tinyseek.tasks.stage import cli_tasks
from tinyseek.tasks.wordproblems import WordProblems

ALL = tasks.names()
CJK = re.compile(r"[\u4e00-\u9fff]")
STEP = re.compile(r"(?<![\w)])(-?\d+(?:[-+*/]-?\d+)+)=(-?\d+)(?![\d(])")  # a written step like 7+5+1=13


def _columns(recs):
    return {k: [r.get(k) for r in recs] for k in recs[0]}


def _levels(task):
    return list(task.difficulties)[:5]


def test_registry():
    assert {"arithmetic", "countdown", "equations", "wordproblems", "wordproblems_zh"} <= set(ALL)
    with pytest.raises(TinyseekError, match="unknown task 'nope'"):
        tasks.get("nope")


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_records_different_seed_different(name):
    task = tasks.get(name)
    a = task.generate(300, seed=0)
    assert a == task.generate(300, seed=0)
    b = task.generate(300, seed=1)
    assert [r["prompt"] for r in a] != [r["prompt"] for r in b]
    assert len({r["prompt"] for r in a}) > 100  # not one problem repeated
    t = task.generate(300, seed=0, split="test")
    assert t == task.generate(300, seed=0, split="test")


@pytest.mark.parametrize("name", ALL)
def test_traces_end_in_answer_verify_and_corruptions_fail(name):
    task = tasks.get(name)
    for d in _levels(task):
        recs = task.generate(60, seed=d, difficulty=d) + task.generate(20, seed=d, split="test", difficulty=d)
        comps = [completion_text(r) for r in recs]
        assert all(r["solution"].endswith(r["answer"]) for r in recs)
        if d <= 2 and name != "countdown":  # short enough for a tiny model (countdown: see its own test)
            assert max(len(r["solution"]) for r in recs) <= 60
        assert all(r["difficulty"] == d and r["task"] == name and isinstance(r["answer"], str) for r in recs)
        assert rewards.accuracy_reward([r["prompt"] for r in recs], comps, **_columns(recs)) == [1.0] * len(recs)
        assert rewards.format_reward([r["prompt"] for r in recs], comps) == [1.0] * len(recs)
        bad = []
        for r in recs:
            if name == "countdown":  # a wrong total: all numbers added (or multiplied) instead
                wrong = "+".join(map(str, r["numbers"]))
                if sum(r["numbers"]) == r["target"]:
                    wrong = "*".join(map(str, r["numbers"]))
                bad.append(completion_text({**r, "answer": wrong}))
            else:
                bad.append(completion_text({**r, "answer": str(int(r["answer"]) + 1)}))
        assert rewards.accuracy_reward([r["prompt"] for r in recs], bad, **_columns(recs)) == [0.0] * len(recs)
        # every written calculation (7+5+0=12, 3374+14460=17834, -48/3=-16) in a trace is correct
        for r in recs:
            for lhs, rhs in STEP.findall(r["solution"]):
                assert eval(lhs.replace("--", "+")) == int(rhs), (r["solution"], lhs, rhs)  # digits only: our own


def test_arithmetic_answers_are_right_and_short_at_low_difficulty():
    for name in ("arithmetic", "addition"):
        for d in (1, 2, 3, 5):
            for r in tasks.get(name).generate(200, seed=3, difficulty=d):
                expr = r["prompt"].rstrip("=")
                assert re.fullmatch(r"[\d+\-*()]+", expr)
                assert eval(expr) == int(r["answer"])  # our own generated digits, an independent reference
                if d <= 2:
                    assert len(r["solution"]) <= 60, r["solution"]
    add = tasks.get("addition").generate(1, seed=0, difficulty=4)[0]
    a, b = map(int, add["prompt"].rstrip("=").split("+"))
    # the digit-by-digit trace: one x+y+carry=sum per digit, from the right
    assert add["solution"].count("+") == 2 * 4 and add["solution"].startswith(f"{a % 10}+{b % 10}+0=")


def test_equations_solutions_satisfy_the_equation():
    import sympy

    x = sympy.Symbol("x")
    for d in range(1, 5):
        for r in tasks.get("equations").generate(50, seed=d, difficulty=d):
            eq = r["prompt"][len("Solve ") : -1]
            lhs, rhs = (re.sub(r"(\d)(x|\()", r"\1*\2", side) for side in eq.split("="))
            sol = sympy.solve(sympy.sympify(lhs) - sympy.sympify(rhs), x)
            assert sol == [int(r["answer"])], (eq, r["answer"])
            if d <= 2:
                assert len(r["solution"]) <= 60


def test_countdown_problems_are_solvable_with_the_given_numbers():
    cd = tasks.get("countdown")
    for d in range(1, 5):
        for r in cd.generate(100, seed=d, difficulty=d):
            assert len(r["numbers"]) == d + 2
            assert check_equation(r["answer"], r["numbers"], r["target"])
            assert f"make {r['target']}" in r["prompt"]
            lines = r["solution"].split("\n")
            assert lines[-2].endswith(" yes") and all(line.endswith(" no") for line in lines[:-2])
    assert max(len(r["solution"]) for r in cd.generate(200, seed=0, difficulty=1)) <= 70


def test_chinese_word_problems_are_chinese_and_verify():
    recs = tasks.get("wordproblems_zh").generate(200, seed=0, difficulty=(1, 5))
    for r in recs:
        assert len(CJK.findall(r["prompt"])) > 10 and not re.search(r"[A-Za-z]", r["prompt"])
        assert CJK.search(r["solution"]) and not re.search(r"[A-Za-z]", r["solution"])
    comps = [completion_text(r) for r in recs]
    prompts = [r["prompt"] for r in recs]
    assert rewards.accuracy_reward(prompts, comps, **_columns(recs)) == [1.0] * len(recs)
    assert min(rewards.language_reward(prompts, comps)) > 0.5
    en = tasks.get("wordproblems").generate(50, seed=0)
    assert all(not CJK.search(r["prompt"] + r["solution"]) for r in en)
    # an English problem and its Chinese twin are the same canonical problem (same side of the split)
    for s in range(20):
        assert (
            WordProblems(lang="en").draw(random.Random(s), 3)[0] == WordProblems(lang="zh").draw(random.Random(s), 3)[0]
        )


def _disjoint(name, n_train, n_test):
    task = tasks.get(name)
    train = task.generate(n_train, seed=11, split="train")
    test = task.generate(n_test, seed=12, split="test")
    assert len(train) == n_train and len(test) == n_test
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    assert not {json.dumps(r["prompt"]) for r in train} & {json.dumps(r["prompt"]) for r in test}
    if name == "countdown":  # countdown splits on the number multiset (stricter than number set + target)
        ms = lambda recs: {tuple(sorted(r["numbers"])) for r in recs}  # noqa: E731
        assert not ms(train) & ms(test)
    return train, test


@pytest.mark.parametrize("name", ALL)
def test_train_and_test_never_share_a_problem(name):
    _disjoint(name, 3000, 1000)


@pytest.mark.slow
def test_train_and_test_never_share_a_problem_100k():
    """100k training problems against 10k held-out ones, per task (~10 s of CPU; minutes on a busy machine)."""
    for name in ALL:
        _disjoint(name, 100_000, 10_000)


def test_split_is_a_real_hash_not_a_function_of_last_digits():
    """The linear-hash pitfall: a held-out set of 'unseen unit-digit pairs'. A real hash covers them all."""
    test = tasks.get("addition").generate(3000, seed=0, split="test", difficulty=4)
    pairs = {tuple(int(v) % 10 for v in r["prompt"].rstrip("=").split("+")) for r in test}
    assert len(pairs) >= 95
    # generate's inlined hash is side_of's; the family, not the task name, is hashed
    assert all(side_of("arithmetic", r["prompt"].rstrip("=")) == "test" for r in test)
    train = tasks.get("arithmetic").generate(500, seed=0, split="train", difficulty=3)
    assert all(side_of("arithmetic", r["prompt"].rstrip("=")) == "train" for r in train)
    keys = [f"{a}+{b}" for a, b in zip(range(10_000, 30_000), range(50_000, 70_000))]
    share = sum(side_of("arithmetic", k) == "test" for k in keys) / len(keys)
    assert abs(share - TEST_BUCKETS / 65536) < 0.01


def test_small_problem_spaces_repeat_or_fail_clearly():
    add = tasks.get("addition")
    many = add.generate(500, seed=0, split="test", difficulty=1)  # ~10 held-out 1-digit sums, repeated
    assert len(many) == 500 and len({r["prompt"] for r in many}) < 30
    few = add.generate(5, seed=0, split="test", difficulty=1, unique=True)
    assert len({r["prompt"] for r in few}) == 5
    with pytest.raises(TinyseekError, match="supplied only .* distinct problems of 50"):
        add.generate(50, seed=0, split="test", difficulty=1, unique=True)


def test_an_empty_side_fails_instead_of_looping():
    from tinyseek.tasks.base import Task

    key = next(k for k in map(str, range(100)) if side_of("one", k) == "train")

    class OneProblem(Task):
        name = family = "one"

        def draw(self, rng, difficulty):
            return key, None

        def build(self, rng, problem, difficulty):
            return {"prompt": key, "answer": key, "solution": key}

    assert len(OneProblem().generate(3, split="train")) == 3
    with pytest.raises(TinyseekError, match="test split .* supplied only 0 problems of 2"):
        OneProblem().generate(2, split="test")


def test_bad_arguments_raise():
    with pytest.raises(TinyseekError, match="split"):
        tasks.get("equations").generate(3, split="valid")
    with pytest.raises(TinyseekError, match="difficulty 9 out of range 1..4"):
        tasks.get("countdown").generate(3, difficulty=9)


def test_difficulty_mix_for_curricula():
    recs = tasks.get("equations").generate(400, seed=0, difficulty=(1, 3))
    assert Counter(r["difficulty"] for r in recs).keys() == {1, 2, 3}


def test_cli_lists_and_writes(tmp_path, capsys):
    assert cli_tasks([]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ALL)
    assert cli_tasks(["countdown", "--n", "3", "--seed", "2", "--completion"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(x)["id"] for x in lines] == [r["id"] for r in tasks.get("countdown").generate(3, seed=2)]
    assert json.loads(lines[0])["completion"].startswith("<think>\n")
    out = tmp_path / "eq.jsonl"
    assert cli_tasks(["equations", "--n", "20", "--split", "test", "--difficulty", "1-2", "--out", str(out)]) == 0
    assert len(tasks.load_records(out)) == 20
    assert not list(tmp_path.glob("*.tmp-*"))


def test_tasks_write_gives_every_role_its_own_problems(tmp_path, capsys):
    """`tinyseek tasks write` (a recipe's tasks stage): a file per split, the held-out set and the corpus, disjoint
    sets of problems; flags override a --config file."""
    out = tmp_path / "tasks"
    flags = ["--tasks", "addition", "--difficulty", "2", "--splits", "sft=40,rl=30", "--test", "20"]
    flags += ["--corpus", "addition=50", "--corpus-format", "chat", "--shares", "sft=0.3,rl=0.3,corpus=0.2"]
    assert cli_tasks(["write", *flags, "--out", str(out)]) == 0
    assert "sft 40, rl 30, corpus 50, test 20" in capsys.readouterr().err
    sets = {k: {r["prompt"] for r in tasks.load_records(out / f"{k}.jsonl")} for k in ("sft", "rl", "test")}
    assert [len(sets[k]) for k in ("sft", "rl", "test")] == [40, 30, 20]  # distinct problems
    assert not (sets["sft"] & sets["rl"] or sets["sft"] & sets["test"] or sets["rl"] & sets["test"])
    corpus = (out / "corpus.txt").read_text(encoding="utf-8").split("\n\n")
    assert len(corpus) == 50 and all("<｜Assistant｜>" in d for d in corpus)  # the chat layout
    assert not any(p in d for d in corpus for p in sets["test"])
    roles = json.loads((out / "roles.json").read_text())
    assert roles["sft"]["part"] == [0.0, 0.3] and roles["corpus"]["documents"] == 50
    cfg = tmp_path / "t.toml"
    cfg.write_text('tasks = ["countdown"]\ndifficulty = [1, 2]\nsplits = { sft = 5 }\ntest = 3\n')
    assert cli_tasks(["write", "--config", str(cfg), "--tasks", "addition", "--out", str(tmp_path / "t2")]) == 0
    recs = tasks.load_records(tmp_path / "t2" / "sft.jsonl")  # the file's fields, --tasks over them
    assert len(recs) == 5 and {r["task"] for r in recs} == {"addition"} and {r["difficulty"] for r in recs} <= {1, 2}


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--tasks", "nope"], "tasks: unknown task 'nope'"),
        (["--splits", "test=5"], "splits: 'test' and 'corpus' are reserved names"),
        (["--splits", "sft=0"], "splits.sft: an empty split"),
        (["--splits", "sft=5", "--shares", "sft=1.5"], r"shares.sft: must be in \(0, 1\]"),
        (["--difficulty", "1-2-3"], r"difficulty: a difficulty range is \[lo, hi\]"),
        (
            ["--corpus", "addition=5", "--corpus-format", "html"],
            "corpus_format must be one of plain, chat, dialogue, r1-zero",
        ),
        (["--tasks", "addition", "--difficulty", "1", "--splits", "sft=5000"], "splits.sft: task addition"),
    ],
)
def test_tasks_write_errors_name_the_field_and_write_nothing(tmp_path, flags, needle):
    with pytest.raises(TinyseekError, match=needle):
        cli_tasks(["write", *flags, "--out", str(tmp_path / "t")])
    assert not (tmp_path / "t").exists()


# ----------------------------------------------------------------------------------------------- user data


def test_jsonl_with_a_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "big.jsonl"
    rows = [json.dumps({"question": f"{i}+1=", "answer": str(i + 1)}) for i in range(10_000)]
    rows[6789] = '{"question": "7+1=", "answer": '  # line 6790, truncated
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(TinyseekError, match=r"big\.jsonl:6790"):
        tasks.load_records(path)
    rows[6789] = json.dumps({"question": "7+1="})
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(TinyseekError, match=r"big\.jsonl:6790: missing or non-scalar field 'answer'"):
        tasks.load_records(path)


def test_gsm8k_answers_parse_to_the_final_value(tmp_path):
    path = tmp_path / "gsm.jsonl"
    row = {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
        "altogether in April and May.\n#### 72",
    }
    path.write_text(json.dumps(row) + "\n" + json.dumps({"prompt": "2+2=", "answer": 4}) + "\n")
    gsm, plain = tasks.load_records(path)
    assert gsm["answer"] == "72" and gsm["prompt"] == row["question"] and gsm["task"] == "user"
    assert "<<" not in gsm["solution"] and gsm["solution"].endswith("72")
    assert plain["answer"] == "4"
    comp = completion_text(gsm)
    assert rewards.accuracy_reward([gsm["prompt"]], [comp], answer=[gsm["answer"]]) == [1.0]
    assert rewards.accuracy_reward([gsm["prompt"]], [comp], answer=[row["answer"]]) == [1.0]  # raw #### gold too


def test_parquet_and_datasets_dir_load_the_same_rows(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": f"q{i}", "question": f"What is {i}*3?", "answer": f"{i} times 3 #### {3 * i}"} for i in range(50)]
    rows += [
        {
            "id": "cd",
            "question": "Use 2 3 4 to make 14.",
            "answer": "2+3*4",
            "task": "countdown",
            "numbers": [2, 3, 4],
            "target": 14,
        }
    ]
    full = [{"task": None, "numbers": None, "target": None, **r} for r in rows]
    pq.write_table(pa.Table.from_pylist(full), tmp_path / "data.parquet")
    datasets.Dataset.from_list(full).save_to_disk(str(tmp_path / "ds"))
    a = tasks.load_records(tmp_path / "data.parquet")
    b = tasks.load_records(tmp_path / "ds")
    assert a == b and len(a) == 51
    assert a[7]["answer"] == "21" and a[-1]["task"] == "countdown"
    comps = [completion_text(r) for r in a]
    cols = {k: [r[k] for r in a] for k in ("answer", "task", "numbers", "target")}
    assert rewards.accuracy_reward([r["prompt"] for r in a], comps, **cols) == [1.0] * 51


def test_missing_file_and_missing_prompt(tmp_path):
    with pytest.raises(TinyseekError, match="nothere.jsonl"):
        tasks.load_records(tmp_path / "nothere.jsonl")
    p = tmp_path / "x.jsonl"
    p.write_text('{"answer": "3"}\n')
    with pytest.raises(TinyseekError, match=r"x\.jsonl:1: missing field 'prompt'"):
        tasks.load_records(p)
