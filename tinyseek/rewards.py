"""Rule-based rewards (DeepSeek-R1: reward outcomes a rule can check), with TRL's reward-function signature.

Every reward is `f(prompts, completions, **columns) -> list[float | None]`: `columns` are dataset columns as
lists (`answer=[...]`, `task=[...]`, `numbers=[...]`, `target=[...]`, TRL's `completion_ids=[...]`); unknown
ones are ignored. Prompts and completions are strings or chat lists `[{"role": ..., "content": ...}]`.
`None` means "this reward does not apply to this sample" (TRL then ignores it); it is never a silent 1.0.

    accuracy_reward   {0, 1} or None   the final answer is right (numbers exactly, expressions via math-verify,
                                       countdown equations by a safe parser)
    format_reward     [0, 1]           <think>...</think> then <answer>...</answer>, partial credit per tag
    language_reward   [0, 1] or None   the completion is written in the prompt's language (share of CJK)
    length_reward     [-1, 0]          DAPO's soft overlong penalty near the length limit
    combine(...)                       weighted sum for GRPO, with each function's values kept for logging

The rewards never raise on model output: arbitrary text, unclosed or nested tags, numbers with a million
digits or a huge exponent (these are capped and count as unparsable, so nothing hangs).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Sequence
from fractions import Fraction
from numbers import Integral

from tinyseek.config import ConfigError
from tinyseek.errors import TinyseekError
from tinyseek.tasks.countdown import check_equation

MAX_NUMBER_CHARS = 400  # a "number" longer than this is not parsed (Fraction of 10**10**9 would hang)
MAX_EXPONENT = 400
MAX_VERIFY_CHARS = 300  # math-verify (sympy) only sees short strings

RewardFn = Callable[..., list]

# ---------------------------------------------------------------------------------------------- text access


def _content(x) -> str:
    """The text of a completion or prompt: a string, or the last message of a chat list (or one message)."""
    if isinstance(x, str):
        return x
    if isinstance(x, dict):
        c = x.get("content")
        return c if isinstance(c, str) else ""
    if isinstance(x, (list, tuple)) and x:
        return _content(x[-1])
    return ""


def _prompt_text(x) -> str:
    """All user/system text of a prompt (the language of the question may sit in any turn)."""
    if isinstance(x, (list, tuple)):
        return "\n".join(_content(m) for m in x)
    return _content(x)


def _column(columns: dict, name: str, i: int):
    col = columns.get(name)
    if col is None:
        return None
    try:
        return col[i]
    except (IndexError, TypeError, KeyError):
        return None


# ----------------------------------------------------------------------------------------- answer extraction

_NUMBER_RE = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")


def _last_boxed(text: str) -> str | None:
    r"""Content of the last \boxed{...} with balanced braces, or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        ch = text[j]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None


def extract_answer(text) -> str | None:
    r"""The final answer of a completion: the last closed <answer>...</answer>, else the last \boxed{}, else
    the last number in the text; None if there is none. Accepts a string or a chat list."""
    text = _content(text)
    # string search from the right, not a regex: a non-greedy <answer>(.*?)</answer> over thousands of
    # unclosed tags is quadratic
    end = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, end) if end >= 0 else -1
    if start >= 0:
        inner = text[start + len("<answer>") : end]
        return inner.split("</answer>", 1)[0].strip()  # nested tags: the innermost content
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


def gold_answer(answer) -> str | None:
    """The gold answer as a string; GSM8K-style `reasoning #### 42` keeps only what follows the last ####."""
    if answer is None or isinstance(answer, bool):
        return None
    if isinstance(answer, (int, float, Fraction)):
        return str(answer)
    if not isinstance(answer, str):
        return None
    if "####" in answer:
        answer = answer.rsplit("####", 1)[1]
    return answer.strip()


_DECIMAL_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?")
_FRACTION_RE = re.compile(r"([+-]?\d+)/(\d+)")
_LATEX_FRAC_RE = re.compile(r"([+-]?)\\d?frac\{(\d+)\}\{(\d+)\}")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_VAR_PREFIX_RE = re.compile(r"^[a-zA-Z]\s*=\s*")


def parse_number(text) -> Fraction | None:
    """An exact Fraction for '42', '42.0', '4.2e1', '84/2', '\\frac{84}{2}', '1,234', '$5', 'x = 5', '50%';
    None for anything else, and for numbers past the caps (too many digits, |exponent| > 400)."""
    if not isinstance(text, str):
        return None
    s = text.strip()
    if not s or len(s) > MAX_NUMBER_CHARS:
        return None
    s = _VAR_PREFIX_RE.sub("", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").rstrip("%").rstrip(".").strip()
    s = _THOUSANDS_RE.sub("", s).replace(" ", "").replace("−", "-")
    if s.startswith("\\("):
        s = s[2:]
    if s.endswith("\\)"):
        s = s[:-2]
    m = _DECIMAL_RE.fullmatch(s)
    if m:
        if m.group(1) is not None and abs(int(m.group(1))) > MAX_EXPONENT:
            return None
        return Fraction(s)
    m = _FRACTION_RE.fullmatch(s)
    if m:
        num, den = int(m.group(1)), int(m.group(2))
        return Fraction(num, den) if den else None
    m = _LATEX_FRAC_RE.fullmatch(s)
    if m:
        num, den = int(m.group(2)), int(m.group(3))
        if not den:
            return None
        return Fraction(-num if m.group(1) == "-" else num, den)
    return None


_LATEX_CMD_RE = re.compile(r"\\[A-Za-z]+|\b(?:sin|cos|tan|log|ln|exp|sqrt|pi|inf|infty)\b")
_WORD_RE = re.compile(r"[A-Za-z]{3,}")


def _as_math(text: str) -> str:
    """Wrap a bare expression in $...$: math-verify reads an unwrapped `1+x^2` as its first number, 1."""
    return text if ("$" in text or "\\boxed" in text or "\\(" in text) else f"${text}$"


def _math_verify(gold: str, pred: str) -> bool | None:
    """math-verify's judgement of pred against gold; None if gold is not mathematics (words, too long)."""
    if len(gold) > MAX_VERIFY_CHARS or _WORD_RE.search(_LATEX_CMD_RE.sub(" ", gold)):
        return None  # "hello there" would parse as the product of its letters
    try:
        from math_verify import parse, verify

        # math-verify times out with SIGALRM, which only the main thread may set
        timeout = 3 if threading.current_thread() is threading.main_thread() else None
        g = parse(_as_math(gold), parsing_timeout=timeout)
        if not g:
            return None
        if not pred or len(pred) > MAX_VERIFY_CHARS:
            return False
        p = parse(_as_math(pred), parsing_timeout=timeout)
        if not p:
            return False
        return bool(verify(g, p, timeout_seconds=timeout))
    except Exception:  # a third-party parser on model output: any failure is "not verified", never a crash
        return None


def _is_countdown(task, numbers, target) -> bool:
    return task == "countdown" or (task is None and numbers is not None and target is not None)


def _valid_countdown_gold(numbers, target) -> bool:
    """Numbers: a non-empty list of integers (numpy integers too); target: an integer (or integral float)."""
    if not isinstance(numbers, (list, tuple)) or not numbers or isinstance(target, bool):
        return False
    if not all(isinstance(x, Integral) and not isinstance(x, bool) for x in numbers):
        return False
    if isinstance(target, Integral):
        return True
    return isinstance(target, float) and target.is_integer() and abs(target) < 1e15


def score_answer(pred: str | None, gold, task=None, numbers=None, target=None) -> float | None:
    """1.0 / 0.0 for one extracted answer against one gold answer; None if the gold cannot be parsed."""
    if _is_countdown(task, numbers, target):
        if hasattr(numbers, "tolist"):  # numpy arrays from a datasets/pandas column
            numbers = numbers.tolist()
        if not _valid_countdown_gold(numbers, target):
            return None
        return 1.0 if pred is not None and check_equation(pred, [int(x) for x in numbers], int(target)) else 0.0
    gold_s = gold_answer(gold)
    if not gold_s:
        return None
    g = parse_number(gold_s)
    if g is None and _NUMBER_RE.fullmatch(gold_s.replace(" ", "")):
        return None  # a number past the caps (1e99999999999): no verdict rather than a slow or wrong one
    if g is not None:
        if pred is None:
            return 0.0
        p = parse_number(pred)
        if p is None and len(pred) <= MAX_NUMBER_CHARS:
            found = _NUMBER_RE.findall(pred)
            if len(found) == 1:  # "19 apples", "答案是19": one number and words; a list of guesses gets nothing
                p = parse_number(found[0])
        if p is not None:
            return 1.0 if p == g else 0.0
        if "\\" in pred or "/" in pred or "^" in pred:  # a LaTeX or symbolic form of a number
            return 1.0 if _math_verify(gold_s, pred) else 0.0
        return 0.0
    verdict = _math_verify(gold_s, pred if pred is not None else "")
    if verdict is None:
        return None
    return 1.0 if pred is not None and verdict else 0.0


def accuracy_reward(prompts, completions, **columns) -> list[float | None]:
    r"""1.0 when the completion's final answer is right, else 0.0; None where the gold answer cannot be parsed.

    Range {0.0, 1.0} or None. The answer is taken from the last <answer>...</answer>, else \boxed{}, else the
    last number. Numbers compare exactly as fractions (42 == 42.0 == 4.2e1 == 84/2; an answer of words and a
    single number, "19 apples", counts as that number, 0.333 is not 1/3); non-numeric golds go
    through math-verify; countdown rows (task == "countdown", or `numbers` and `target` columns without a
    task) are checked with the safe equation parser of tinyseek.tasks.countdown against those columns.
    """
    out: list[float | None] = []
    for i, completion in enumerate(completions):
        pred = extract_answer(completion)
        out.append(
            score_answer(
                pred,
                _column(columns, "answer", i),
                task=_column(columns, "task", i),
                numbers=_column(columns, "numbers", i),
                target=_column(columns, "target", i),
            )
        )
    return out


# --------------------------------------------------------------------------------------------------- hacks


def reward_hacks(completion) -> list[str]:
    """What makes a completion suspect when it earns a reward (Logic-RL lists such format hacks): `no_reasoning`
    (its think block holds no worked step, by the tasks' markers), `no_answer_tags` (the accuracy reward fell back
    to the last number), `work_in_answer` (a worked step inside <answer>). [] for a clean one. A bare right answer
    is not cheating, but RL that rewards it is not rewarding reasoning: the log makes that visible."""
    from tinyseek.tasks.base import STEP_RE, behaviours

    text = _content(completion)
    flags = [] if behaviours(text)["reasons"] else ["no_reasoning"]
    end = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, end) if end >= 0 else -1
    if start < 0:
        flags.append("no_answer_tags")
    elif STEP_RE.search(text[start:end]):
        flags.append("work_in_answer")
    return flags


# --------------------------------------------------------------------------------------------------- format

_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
# end-of-sequence and other chat markers a decoder may leave at the end (<｜end▁of▁sentence｜>, <|im_end|>, </s>)
_TRAILING_SPECIAL_RE = re.compile(r"(?:<\|[^|<>\s]{1,40}\|>|<｜[^｜<>]{1,40}｜>|</s>)$")


def _strip_trailing_specials(text: str) -> str:
    """Drop end-of-sequence markers from the end, one at a time (looking only at the tail: no quadratic scan)."""
    while True:
        text = text.rstrip()
        m = _TRAILING_SPECIAL_RE.search(text[-48:])
        if m is None:
            return text
        text = text[: len(text) - (min(len(text), 48) - m.start())]


_STRICT_RE = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.S)
_THINK_OPEN_END_RE = re.compile(r"<think>\s*$")


def format_reward(prompts, completions, **columns) -> list[float]:
    """Partial credit for R1's layout `<think>...</think><answer>...</answer>`. Range [0, 1].

    0.2 for each of the four tags that appears exactly once, and 0.2 more when the whole completion is a
    think block then a non-empty answer block with nothing but whitespace around them. Partial credit gives
    a tiny model a gradient towards the layout before it is ever right. If the prompt already ends in
    `<think>` (a template that opens the thought for the model), the completion is read as if it began so.
    """
    out = []
    for i, completion in enumerate(completions):
        text = _strip_trailing_specials(_content(completion))
        prompt = _prompt_text(prompts[i]) if prompts is not None and i < len(prompts) else ""
        if _THINK_OPEN_END_RE.search(prompt[-64:]) and "<think>" not in text:
            text = "<think>" + text
        once = sum(text.count(tag) == 1 for tag in _TAGS)
        m = _STRICT_RE.fullmatch(text) if once == 4 else None  # one of each tag: the match is linear
        out.append(1.0 if m and m.group(2).strip() else round(0.2 * once, 6))
    return out


# ------------------------------------------------------------------------------------------------- language

_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_RE = re.compile(r"[A-Za-z]")
_TAG_RE = re.compile(r"</?(?:think|answer)>|<｜[^｜]{0,40}｜>|<\|[^|<>\s]{1,40}\|>")


def cjk_share(text: str) -> float | None:
    """Share of CJK ideographs among letters (CJK + Latin); None when the text has no letters at all."""
    text = _TAG_RE.sub("", text)
    cjk = len(_CJK_RE.findall(text))
    latin = len(_LATIN_RE.findall(text))
    return cjk / (cjk + latin) if cjk + latin else None


def language_reward(prompts, completions, **columns) -> list[float | None]:
    """R1's language-consistency reward: how much of the completion is in the prompt's language. Range [0, 1].

    The prompt is Chinese when at least half its letters are CJK ideographs; the reward is then the
    completion's CJK share, otherwise one minus it. None when the prompt has no letters (`4821+3967=` has no
    language); 1.0 when the completion has none (digits only: nothing in the wrong language).
    """
    out: list[float | None] = []
    for i, completion in enumerate(completions):
        prompt = _prompt_text(prompts[i]) if prompts is not None and i < len(prompts) else ""
        p_share = cjk_share(prompt)
        if p_share is None:
            out.append(None)
            continue
        c_share = cjk_share(_content(completion))
        if c_share is None:
            out.append(1.0)
        else:
            out.append(c_share if p_share >= 0.5 else 1.0 - c_share)
    return out


# --------------------------------------------------------------------------------------------------- length


def overlong_penalty(max_length: int, cache_length: int) -> RewardFn:
    """DAPO's soft overlong punishment as a reward function. Range [-1, 0].

    0 up to max_length - cache_length, then falling linearly to -1 at max_length, -1 beyond. Length counts
    tokens when TRL passes `completion_ids`, else characters.
    """
    if not (0 < cache_length <= max_length):
        raise ValueError(f"overlong_penalty needs 0 < cache_length <= max_length, got {cache_length}, {max_length}")
    soft = max_length - cache_length

    def length_reward(prompts, completions, **columns) -> list[float]:
        ids = columns.get("completion_ids")
        out = []
        for i, completion in enumerate(completions):
            n = len(ids[i]) if ids is not None and i < len(ids) and ids[i] is not None else len(_content(completion))
            if n <= soft:
                out.append(0.0)
            elif n <= max_length:
                out.append((soft - n) / cache_length)
            else:
                out.append(-1.0)
        return out

    length_reward.max_length, length_reward.cache_length = max_length, cache_length
    return length_reward


length_reward = overlong_penalty(max_length=1024, cache_length=256)
length_reward.__doc__ = "DAPO overlong penalty with max_length=1024, cache_length=256 (tokens or chars). Range [-1, 0]."

# -------------------------------------------------------------------------------------------------- combine

REWARDS: dict[str, RewardFn] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "language": language_reward,
    "length": length_reward,
}


def get(name: str) -> RewardFn:
    """A reward function by its short name (accuracy, format, language, length)."""
    if name not in REWARDS:
        raise TinyseekError(f"unknown reward {name!r}; choose from {', '.join(REWARDS)}")
    return REWARDS[name]


def resolve(name: str) -> RewardFn:
    """A reward function named in a config: a short name (see `get`) or an import path `pkg.mod:func` to any
    function with TRL's signature f(prompts, completions, **columns). Errors name the `rewards` field."""
    import importlib

    if ":" in name:
        mod, fn = name.split(":", 1)
        try:
            f = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"rewards: cannot import {name!r} ({e})") from None
        if not callable(f):
            raise ConfigError(f"rewards: {name!r} is not callable")
        return f
    try:
        return get(name)
    except TinyseekError as e:
        raise ConfigError(f"rewards: {e}") from None


class Combined:
    """Weighted sum of reward functions that keeps each function's values (GRPO logs them separately).

    `combined(prompts, completions, **columns) -> (total, parts)`: total is a list[float] of
    sum(weight * value) over the values that are not None (None counts as 0, as TRL's nansum does);
    parts maps each function's name to its own list[float | None].
    `combined.total(...)` returns only the total, with TRL's reward-function signature.
    """

    def __init__(self, funcs: Sequence[RewardFn | str], weights: Sequence[float] | None = None):
        self.funcs = [get(f) if isinstance(f, str) else f for f in funcs]
        self.weights = [1.0] * len(self.funcs) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.funcs):
            raise ValueError(f"combine: {len(self.funcs)} reward functions but {len(self.weights)} weights")
        names = [getattr(f, "__name__", f"reward_{k}") for k, f in enumerate(self.funcs)]
        self.names = [n if names.count(n) == 1 else f"{n}_{k}" for k, n in enumerate(names)]
        self.__name__ = "combined_reward"

    def __call__(self, prompts, completions, **columns) -> tuple[list[float], dict[str, list[float | None]]]:
        parts = {name: f(prompts, completions, **columns) for name, f in zip(self.names, self.funcs)}
        total = [
            float(sum(w * v for w, v in zip(self.weights, values) if v is not None))
            for values in zip(*(parts[name] for name in self.names))
        ]
        return total, parts

    def total(self, prompts, completions, **columns) -> list[float]:
        return self(prompts, completions, **columns)[0]


def combine(funcs: Sequence[RewardFn | str], weights: Sequence[float] | None = None) -> Combined:
    """Rewards (functions or short names) with weights (default all 1.0); see `Combined`."""
    return Combined(funcs, weights)


# ------------------------------------------------------------------------------------- statistics


def mean_ignoring_none(vals) -> float:
    """The mean of the values a reward gave, its Nones (does not apply) left out; NaN when none applied."""
    v = [float(x) for x in vals if x is not None]
    return sum(v) / len(v) if v else float("nan")


def std_ignoring_none(vals) -> float:
    """The sample std of the values a reward gave, its Nones left out; 0 for fewer than two."""
    v = [float(x) for x in vals if x is not None]
    if len(v) < 2:
        return 0.0
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
