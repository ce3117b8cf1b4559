"""Reasoning steps: where a completion's steps end, the rule that judges each step, and one-step corruptions.

Process supervision needs a definition of "a step". Here it is the task traces' own: the reasoning inside
`<think>...</think>` cut at a separator (a space for the arithmetic traces: `5+3+0=08 6+7+0=13 so 138`), a
piece without a digit joined to the next one (`so 138`, `swap 5-3-0=2` are one step each), and everything
after the reasoning (`</think>`, the answer block, the end-of-sequence token) one last step, the *answer step*:

    <think>\\n5+3+0=08 | 6+7+0=13 | so 138 | \\n</think>\\n<answer>138</answer>
      step 1          step 2     step 3   answer step

A step is *good* when it and every step before it are right (prefix semantics: once a trace has gone wrong,
nothing after the error is good): *first-error labels*, the exact step rule's, and what the oracle below
computes. They are not Math-Shepherd's completion labels ("can a completion from this step still reach the
right answer"): a step whose operand or carry is wrong but whose result is right (`5+4+0=08` for `5+3+0=08`)
is bad here, while a continuation from it can still reach the right answer, so Math-Shepherd would call it
good (train/prm_labels.py makes those, from the policy's continuations). `corrupt` changes any digit of a step
(operands and carries included), so its labels are first-error labels of synthetic corruptions, not reachability:

    oracle_step_rewards   a step is right when it equals the task's worked solution's step at the same place;
                          the answer step when, besides, the final answer is right (the accuracy reward's
                          verdict) and the trace had exactly the solution's number of steps
    corrupt               one digit of one step of a trace changed: labels 1 before it, 0 from it on

Steps are character spans of the text; `token_step_ends` turns them into the index of each step's last token
(the answer step always ends at the completion's last token, its end-of-sequence token if it sampled one).
"""

from __future__ import annotations

import random

from tinyseek.errors import TinyseekError
from tinyseek.r1 import ANSWER, THINK, THINK_END
from tinyseek.rewards import extract_answer, score_answer

SEPARATOR = " "  # the arithmetic traces' step separator


def _region(text: str) -> tuple[int, int]:
    """The reasoning's character range: after <think> (else the start) up to </think> (else <answer>, else the end)."""
    start = text.find(THINK)
    start = 0 if start < 0 else start + len(THINK)
    end = text.find(THINK_END, start)
    if end < 0:
        end = text.find(ANSWER, start)
    return start, len(text) if end < 0 else end


def step_spans(text: str, sep: str = SEPARATOR) -> list[tuple[int, int]]:
    """Character spans (start, end) of the steps of `text`, the answer step last; together they cover the text.

    Each reasoning step's span ends at its last non-space character, so its last token is the step's own
    (the next step's separator and leading spaces belong to the next step). A text with no reasoning is one
    answer step.
    """
    if not sep:
        raise TinyseekError("step_separator: must be a non-empty string")
    lo, hi = _region(text)
    pieces: list[tuple[int, int]] = []
    pos = lo
    for part in text[lo:hi].split(sep):
        a, b = pos, pos + len(part)
        pos = b + len(sep)
        stripped = part.strip()
        if not stripped:
            continue
        b = a + len(part.rstrip())
        if pieces and pieces[-1][2]:  # the previous piece had no digit: this one completes it
            pieces[-1] = (pieces[-1][0], b, not any(c.isdigit() for c in stripped))
        else:
            pieces.append((a, b, not any(c.isdigit() for c in stripped)))
    spans, prev = [], 0
    for _, b, _ in pieces:
        spans.append((prev, b))
        prev = b
    spans.append((prev, len(text)))  # the answer step
    return spans


def steps_of(text: str, sep: str = SEPARATOR) -> list[str]:
    """The steps' texts, stripped (the answer step last)."""
    return [text[a:b].strip() for a, b in step_spans(text, sep)]


def check_separator(text: str, sep: str, where: str) -> None:
    """A reference trace must have at least two reasoning steps, or the separator is not the trace's."""
    lo, hi = _region(text)
    if sep not in text[lo:hi].strip():
        raise TinyseekError(
            f"{where}: no step separator {sep!r} in the trace's reasoning {text[lo:hi].strip()[:60]!r} "
            "(set step_separator to what separates its steps)"
        )


def oracle_step_rewards(text: str, solution_text: str, answer, sep: str = SEPARATOR, **gold) -> list[float]:
    """Exact step rewards (1 good, 0 not; prefix semantics) of a completion against the worked solution.

    `solution_text` is the reference completion (`r1.completion_text(record)`); `answer` the gold answer,
    `gold` any further columns the accuracy rule reads (task, numbers, target). One reward per step of
    `text`, the answer step last.
    """
    mine, ref = steps_of(text, sep), steps_of(solution_text, sep)
    out, ok = [], True
    for k, step in enumerate(mine[:-1]):
        ok = ok and k < len(ref) - 1 and step == ref[k]
        out.append(1.0 if ok else 0.0)
    right = score_answer(extract_answer(text), answer, **gold) == 1.0
    out.append(1.0 if ok and len(mine) == len(ref) and right else 0.0)
    return out


def corrupt(text: str, rng: random.Random, sep: str = SEPARATOR) -> tuple[str, int]:
    """`text` with one digit of one step changed to another digit, and that step's index (-1: no digit to change).

    The step is drawn uniformly among the steps holding a digit (the answer step included: a wrong answer
    after a right trace), the digit uniformly within it.
    """
    spans = step_spans(text, sep)
    cands = [k for k, (a, b) in enumerate(spans) if any(c.isdigit() for c in text[a:b])]
    if not cands:
        return text, -1
    k = cands[int(rng.random() * len(cands))]
    a, b = spans[k]
    digits = [i for i in range(a, b) if text[i].isdigit()]
    i = digits[int(rng.random() * len(digits))]
    new = str((int(text[i]) + 1 + int(rng.random() * 9)) % 10)  # any of the nine other digits
    return text[:i] + new + text[i + 1 :], k


def labels_after(n_steps: int, bad: int) -> list[float]:
    """Prefix-semantics labels of a trace whose step `bad` is wrong (-1: none is): 1 before it, 0 from it on."""
    return [1.0 if bad < 0 or k < bad else 0.0 for k in range(n_steps)]


def token_step_ends(spans: list[tuple[int, int]], char_ends: list[int]) -> list[int]:
    """The index of each step's last token, given each token's end offset in the text (`char_ends`, one per
    completion token, non-decreasing). A reasoning step ends at the first token reaching its end; the answer
    step at the last token (the stop token, when the completion has one)."""
    n = len(char_ends)
    if n == 0:
        return [0] * len(spans)
    out, t = [], 0
    for _, b in spans[:-1]:
        while t < n - 1 and char_ends[t] < b:
            t += 1
        out.append(t)
    out.append(n - 1)
    return out


def token_char_ends(decode, ids: list[int], cache: dict | None = None) -> list[int]:
    """Each token's end offset in decode(ids): per-token decodes added up (cached by id), checked against the
    whole decode; where they disagree (a character split across tokens) the exact prefix decodes instead."""
    cache = {} if cache is None else cache
    ends, n = [], 0
    for t in ids:
        if t not in cache:
            cache[t] = len(decode([t]))
        n += cache[t]
        ends.append(n)
    if ends and ends[-1] != len(decode(ids)):
        ends = [len(decode(ids[: i + 1])) for i in range(len(ids))]
    return ends
