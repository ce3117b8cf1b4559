"""Rule-based rewards: exact answers, the countdown checker (which never runs input), ranges under fuzzing."""

from __future__ import annotations

import builtins
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyseek import rewards
from tinyseek.rewards import accuracy_reward, combine, extract_answer, format_reward, language_reward, length_reward
from tinyseek.tasks.countdown import check_equation, evaluate_expression


def acc(completion, answer, **cols):
    return accuracy_reward(["q"], [completion], answer=[answer], **{k: [v] for k, v in cols.items()})[0]


def fmt(completion, prompt="q"):
    return format_reward([prompt], [completion])[0]


# ------------------------------------------------------------------------------------------------ accuracy


@pytest.mark.parametrize(
    "pred",
    [
        "42",
        "42.0",
        "4.2e1",
        "84/2",
        "\\frac{84}{2}",
        "+42",
        "$42",
        "42.",
        "x = 42",
        "42 apples",
        "答案是42",
        "\\boxed{42}",
    ],
)
def test_numbers_agree_exactly(pred):
    assert acc(f"<think>t</think><answer>{pred}</answer>", "42") == 1.0
    assert acc(f"<answer>{pred}</answer>", "#### 42") == 1.0  # a GSM8K-style gold


@pytest.mark.parametrize("pred", ["41", "42.0001", "4.2e2", "85/2", "1 2 42", "forty-two", "", "-42"])
def test_wrong_numbers_score_zero(pred):
    assert acc(f"<answer>{pred}</answer>", "42") == 0.0


def test_thousands_fractions_and_negatives():
    assert acc("<answer>1,234</answer>", "1234") == 1.0
    assert acc("<answer>0.5</answer>", "1/2") == 1.0
    assert acc("<answer>0.333</answer>", "1/3") == 0.0
    assert acc("<answer>-17</answer>", "-17") == 1.0 and acc("<answer>17</answer>", "-17") == 0.0


def test_extraction_order_answer_then_boxed_then_last_number():
    assert extract_answer("<think>so 5</think><answer> 7 </answer>") == "7"
    assert extract_answer("<answer>1</answer> then <answer>2</answer>") == "2"
    assert extract_answer("<answer><answer>3</answer></answer>") == "3"
    assert extract_answer("the result is \\boxed{\\frac{1}{2}} and 9") == "\\frac{1}{2}"
    assert extract_answer("7+5=12 so 13 then 14") == "14"
    assert extract_answer("<answer>9 unclosed") == "9"
    assert extract_answer("no digits") is None
    assert extract_answer([{"role": "assistant", "content": "<answer>4</answer>"}]) == "4"


def test_symbolic_answers_go_through_math_verify():
    assert acc("<answer>1+x^2</answer>", "x^2+1") == 1.0
    assert acc("<answer>x^2+2</answer>", "x^2+1") == 0.0
    assert acc("<answer>\\pi/2</answer>", "\\frac{\\pi}{2}") == 1.0


@pytest.mark.parametrize("gold", [None, "", "   ", "#### ", "hello there", "1e99999999999", "9" * 5000, ["1"]])
def test_unparsable_gold_is_none_not_a_free_one(gold):
    assert accuracy_reward(["q"], ["<answer>1</answer>"], answer=[gold]) == [None]


def test_chat_completions_and_unknown_columns():
    comp = [{"role": "assistant", "content": "<think>2+2</think><answer>4</answer>"}]
    out = accuracy_reward([[{"role": "user", "content": "2+2?"}]], [comp], answer=["4"], foo=["x"], trainer_state=None)
    assert out == [1.0]
    assert format_reward(None, [comp]) == [1.0]


def test_trl_call_convention():
    """TRL calls reward functions with keywords only, adding completion_ids, trainer_state and log hooks."""
    kw = dict(
        prompts=["2+2="],
        completions=["<think>4</think><answer>4</answer>"],
        completion_ids=[[5, 6, 7]],
        trainer_state=None,
        log_extra=None,
        log_metric=None,
        answer=["4"],
        task=["arithmetic"],
    )
    assert accuracy_reward(**kw) == [1.0] and format_reward(**kw) == [1.0]
    assert language_reward(**kw) == [None] and length_reward(**kw) == [0.0]
    assert combine(["accuracy", "format"]).total(**kw) == [2.0]


def test_huge_numbers_do_not_hang():
    t0 = time.perf_counter()
    out = accuracy_reward(
        None,
        [
            "<answer>1e999999999</answer>",
            "9" * 200_000,
            "<answer>" + "1" * 5000 + "</answer>",
            "<answer>1e-999999999</answer>",
        ],
        answer=["5"] * 4,
    )
    assert out == [0.0] * 4
    assert time.perf_counter() - t0 < 2.0


def test_adversarial_tags_stay_linear():
    t0 = time.perf_counter()
    for text in [
        "<answer>" * 20_000 + "1",
        "</think><think>" * 20_000,
        "<answer>1" + "</answer>" * 20_000,
        "\\boxed{" * 20_000,
        "<think>" + "小" * 100_000 + "</think><answer>" + "9," * 50_000 + "</answer>",
    ]:
        for f in (accuracy_reward, format_reward, language_reward, length_reward):
            f(["问题 question"], [text], answer=["1"])
    assert time.perf_counter() - t0 < 5.0


# ----------------------------------------------------------------------------------------------- countdown

NUMS, TARGET = [3, 7, 25, 50], 181


def cd(expr, numbers=NUMS, target=TARGET):
    return accuracy_reward(
        ["q"],
        [f"<think>x</think><answer>{expr}</answer>"],
        task=["countdown"],
        numbers=[numbers],
        target=[target],
        answer=["(25+50)*3-7"],
    )[0]


def test_countdown_correct_in_any_order_scores_one():
    target = 50 * 3 + 25 + 7  # 182 from 3 7 25 50; the gold string "(25+50)*3-7" is not what is checked
    for expr in [
        "50*3+25+7",
        "7+25+3*50",
        "(25+7)+50*3",
        "3*50+(7+25)",
        "50×3+25+7",
        "50*3+25+7 = 182",
        "182=7+25+50*3",
    ]:
        assert cd(expr, target=target) == 1.0, expr
    assert cd("50*3+25", target=175) == 1.0  # a number may go unused
    assert cd("(50-25)/(7-3)*3", target=18) == 0.0  # 75/4 is not 18: exact fractions, no rounding
    assert cd("(50+25)/3*7", target=175) == 1.0  # an exact quotient on the way


@pytest.mark.parametrize(
    "expr,why",
    [
        ("50*3+25+7+7", "7 used twice"),
        ("50*3+25+8", "8 not given"),
        ("50/(7-7)+25*3", "division by zero"),
        ("50*3+25+7-3", "wrong total"),
        ("50*3+25+7=181", "wrong total claimed"),
        ("-50+3*25*7", "unary minus"),
        ("50.0*3+25+7", "a decimal"),
        ("", "empty"),
        ("(50*3+25+7", "unbalanced"),
    ],
)
def test_countdown_violations_score_zero(expr, why):
    assert cd(expr, target=182) == 0.0, why


def test_countdown_checker_never_executes_input(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    calls = []
    monkeypatch.setattr(builtins, "eval", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(builtins, "exec", lambda *a, **k: calls.append(a))
    attacks = [
        f"__import__('os').system('touch {marker}')",
        f"3*7+(__import__('pathlib').Path('{marker}').touch() or 0)",
        "().__class__.__bases__[0].__subclasses__()",
        "exec('1')",
        "lambda: 1",
        "3 if 1 else 7",
        "2**10**10",
    ]
    for a in attacks:
        assert cd(a) == 0.0
        assert not check_equation(a, NUMS, TARGET)
    assert not marker.exists() and calls == []
    assert evaluate_expression("2**10") is None  # no power operator: ** is two * tokens, a parse error


def test_countdown_nesting_and_length_caps():
    assert evaluate_expression("(" * 20 + "3" + ")" * 20)[0] == 3
    assert evaluate_expression("(" * 500 + "3" + ")" * 500) is None  # too long / deep, not a RecursionError
    assert accuracy_reward(["q"], ["<answer>3</answer>"], task=["countdown"], numbers=[None], target=[None]) == [None]
    import numpy as np  # columns that came through numpy / pandas

    assert cd("50*3+25+7", numbers=np.array(NUMS), target=np.int64(182)) == 1.0


# -------------------------------------------------------------------------------------------------- format


def test_format_partial_credit():
    assert fmt("<think>a</think><answer>1</answer>") == 1.0
    assert fmt("  <think>\na\n</think>\n<answer>1</answer>\n") == 1.0
    assert fmt("<think>a</think><answer>1</answer><｜end▁of▁sentence｜>") == 1.0
    assert fmt("<think>a</think><answer></answer>") == 0.8  # empty answer
    assert fmt("<think>a</think>") == 0.4
    assert fmt("<think>a") == 0.2
    assert fmt("no tags") == 0.0
    assert fmt("<think>a</think><answer>1</answer> trailing words") == 0.8
    assert fmt("<answer>1</answer><think>a</think>") == 0.8  # wrong order
    assert fmt("<think><think>a</think><answer>1</answer>") == 0.6  # a tag twice earns nothing for it
    # a template that opens the thought for the model
    assert fmt("a</think><answer>1</answer>", prompt="<｜Assistant｜><think>\n") == 1.0
    assert fmt("a</think><answer>1</answer>") == 0.6


# ------------------------------------------------------------------------------------------------ language


def test_language_consistency():
    zh, en = "小明有5个苹果，他又买了3个。现在有多少个？", "Tom has 5 apples and buys 3 more. How many now?"
    assert language_reward([zh], ["<think>5+3=8，答案是8</think><answer>8</answer>"]) == [1.0]
    assert language_reward([zh], ["<think>five plus three</think><answer>8</answer>"]) == [0.0]
    assert language_reward([en], ["<think>five plus three</think><answer>8</answer>"]) == [1.0]
    mixed = language_reward([en], ["<think>five 加 three</think>"])[0]
    assert 0.0 < mixed < 1.0
    assert language_reward(["4821+3967="], ["anything"]) == [None]  # a prompt without a language
    assert language_reward([zh], ["<think>5+3=8</think><answer>8</answer>"]) == [1.0]  # digits only


# -------------------------------------------------------------------------------------------------- length


def test_overlong_penalty():
    f = rewards.overlong_penalty(max_length=100, cache_length=20)
    out = f(None, ["a" * 80, "a" * 90, "a" * 100, "a" * 150])
    assert out == [0.0, -0.5, -1.0, -1.0]
    assert f(None, ["x", "y"], completion_ids=[list(range(90)), list(range(10))]) == [-0.5, 0.0]  # tokens win
    assert length_reward(None, ["short"]) == [0.0]
    with pytest.raises(ValueError):
        rewards.overlong_penalty(10, 20)


# ------------------------------------------------------------------------------------------------- combine


def test_combine_weights_names_and_none():
    comb = combine([accuracy_reward, format_reward, "language"], [1.0, 0.5, 2.0])
    prompts = ["2+2=", "2+2="]
    comps = ["<think>4</think><answer>4</answer>", "<answer>5</answer>"]
    total, parts = comb(prompts, comps, answer=["4", "4"])
    assert list(parts) == ["accuracy_reward", "format_reward", "language_reward"] == comb.names
    assert parts["accuracy_reward"] == [1.0, 0.0] and parts["language_reward"] == [None, None]
    assert total == pytest.approx([1.0 + 0.5 * 1.0, 0.0 + 0.5 * 0.4])  # None counts as 0, as TRL's nansum
    assert comb.total(prompts, comps, answer=["4", "4"]) == total
    with pytest.raises(ValueError):
        combine([accuracy_reward], [1.0, 2.0])
    with pytest.raises(Exception, match="unknown reward"):
        combine(["nope"])


# ---------------------------------------------------------------------------------------- property tests

FRAGMENTS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "\\boxed{",
    "}",
    "{",
    "42",
    "-7",
    "1e999999999",
    "9" * 3000,
    "84/2",
    "/0",
    "1/0",
    "(",
    ")",
    "*",
    "+",
    "=",
    "小明",
    "答案",
    " ",
    "\n",
    "$",
    "\\frac{1}{0}",
    "x^2",
    "__import__('os')",
    "<｜end▁of▁sentence｜>",
    "e",
    ".",
    ",",
    "%",
    "NaN",
    "inf",
    "∞",
    "\x00",
]
texts = st.one_of(
    st.text(max_size=300), st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=8), max_size=40).map("".join)
)
completions = texts | texts.map(lambda t: [{"role": "assistant", "content": t}])
golds = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=True), texts, st.sampled_from(["42", "#### 7", "x^2+1", "1e99999"])
)

RANGES = {
    "accuracy_reward": (0.0, 1.0),
    "format_reward": (0.0, 1.0),
    "language_reward": (0.0, 1.0),
    "length_reward": (-1.0, 0.0),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prompt=texts,
    completion=completions,
    gold=golds,
    numbers=st.none() | st.lists(st.integers(-5, 10**30), max_size=6),
    target=st.none() | st.integers(-5, 10**30) | st.floats(allow_nan=True),
    task=st.sampled_from([None, "countdown", "arithmetic"]),
)
def test_every_reward_in_range_or_none_and_never_raises(prompt, completion, gold, numbers, target, task):
    cols = dict(answer=[gold], numbers=[numbers], target=[target], task=[task])
    for f in (accuracy_reward, format_reward, language_reward, length_reward):
        (v,) = f([prompt], [completion], **cols)
        lo, hi = RANGES[f.__name__]
        assert v is None or (isinstance(v, float) and lo <= v <= hi), (f.__name__, v)
    total, parts = combine(list(rewards.REWARDS.values()))([prompt], [completion], **cols)
    assert len(total) == 1 and math.isfinite(total[0])
    assert total[0] == pytest.approx(sum(v[0] for v in parts.values() if v[0] is not None))  # None counts 0


@settings(max_examples=300, deadline=None)
@given(expr=texts, numbers=st.lists(st.integers(1, 100), min_size=1, max_size=6), target=st.integers(-(10**6), 10**6))
def test_countdown_checker_is_total(expr, numbers, target):
    assert check_equation(expr, numbers, target) in (True, False)
