"""Countdown (the TinyZero task): reach a target from 3-6 numbers with + - * /, each number at most once.

Every generated problem is solvable by construction: the generator combines the numbers pairwise (the
Countdown way: take two, write down their sum, difference, product or exact quotient, put the result back)
until one value is left, and that value is the target. The trace shows a short search: zero to two random
combinations that miss, each ending in `no`, then the one that hits, ending in `yes`, then the equation:

    Use 7 3 9 to make 30 with + - * /, each number at most once.
    9-7=2 2*3=6 no
    3*7=21 21+9=30 yes
    3*7+9

Difficulty d uses d+2 numbers (1: three, 2: four, 3: five, 4: six), each 1..25; targets are 1..999.

`check_equation` is the verifier the accuracy reward uses: a small recursive-descent parser over integers,
+ - * / and parentheses (no names, no calls, no `eval`), exact Fraction arithmetic, a length and nesting cap,
only the given numbers, each at most as often as it is given; division by zero fails the check.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction

from tinyseek.tasks.base import Task, problem_digest

MAX_NUMBER = 25
MAX_TARGET = 999
MAX_EXPR_CHARS = 200  # longer "equations" are rejected before parsing
MAX_DEPTH = 24  # parenthesis nesting
MAX_LITERAL_DIGITS = 12

_TOKEN = re.compile(r"\s*(\d+|[-+*/()×÷·−])")
_OPS = {"×": "*", "·": "*", "÷": "/", "−": "-"}


def _tokenize(text: str) -> list[str] | None:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            return None  # any other character: not an equation over numbers
        tok = _OPS.get(m.group(1), m.group(1))
        if tok.isdigit() and len(tok) > MAX_LITERAL_DIGITS:
            return None
        tokens.append(tok)
        pos = m.end()
    return tokens


def evaluate_expression(text: str) -> tuple[Fraction, list[int]] | None:
    """(exact value, integer literals used) of an expression over + - * / ( ), or None if not one.

    No unary operators (Countdown combines given numbers; it does not negate them), no decimals.
    Division by zero, too long, too deep, or any other character -> None.
    """
    if not isinstance(text, str) or len(text) > MAX_EXPR_CHARS:
        return None
    tokens = _tokenize(text)
    if not tokens:
        return None
    literals: list[int] = []
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def expr(depth):
        nonlocal pos
        value = term(depth)
        while value is not None and peek() in ("+", "-"):
            op = tokens[pos]
            pos += 1
            rhs = term(depth)
            if rhs is None:
                return None
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(depth):
        nonlocal pos
        value = factor(depth)
        while value is not None and peek() in ("*", "/"):
            op = tokens[pos]
            pos += 1
            rhs = factor(depth)
            if rhs is None or (op == "/" and rhs == 0):
                return None
            value = value * rhs if op == "*" else value / rhs
        return value

    def factor(depth):
        nonlocal pos
        tok = peek()
        if tok is None:
            return None
        if tok.isdigit():
            pos += 1
            literals.append(int(tok))
            return Fraction(int(tok))
        if tok == "(" and depth < MAX_DEPTH:
            pos += 1
            value = expr(depth + 1)
            if value is None or peek() != ")":
                return None
            pos += 1
            return value
        return None

    value = expr(0)
    if value is None or pos != len(tokens):
        return None
    return value, literals


def check_equation(text: str, numbers, target) -> bool:
    """True iff `text` is an expression using only `numbers` (each at most once) whose value is `target`.

    Accepts `expr`, `expr = target` and `target = expr`; the Countdown rules above apply. Never evaluates
    Python: input like `__import__('os')` is simply not an expression over numbers.
    """
    if not isinstance(text, str):
        return False
    sides = [s.strip() for s in text.split("=")]
    if len(sides) > 2:
        return False
    if len(sides) == 2:  # one side is the target, the other the expression
        if sides[1].isdigit() and len(sides[1]) <= MAX_LITERAL_DIGITS and int(sides[1]) == target:
            text = sides[0]
        elif sides[0].isdigit() and len(sides[0]) <= MAX_LITERAL_DIGITS and int(sides[0]) == target:
            text = sides[1]
        else:
            return False
    result = evaluate_expression(text)
    if result is None:
        return False
    value, literals = result
    if Counter(literals) - Counter(numbers):
        return False  # a number not given, or a given one used too often
    return value == target


def _combine(rng: random.Random, pool: list[tuple[int, str, int]], steps: list[str]):
    """Combine two random entries of pool [(value, expression, precedence)] in place; records the step.

    Precedence: 3 number, 2 product/quotient, 1 sum/difference; parentheses only where needed.
    Only positive integer results are allowed, so every step is a legal Countdown move.
    """
    r, n = rng.random, len(pool)
    i = int(r() * n)
    j = int(r() * (n - 1))
    j += j >= i  # two distinct indices (cheaper than rng.sample)
    (a, ea, pa), (b, eb, pb) = pool[i], pool[j]
    ops = ["+", "*"]
    if a > b:
        ops.append("-")
    if b > 1 and a % b == 0:
        ops.append("/")
    op = ops[int(r() * len(ops))]
    if op == "+":
        v, e, p = a + b, f"{ea}+{eb}", 1
    elif op == "-":
        v, e, p = a - b, f"{ea}-" + (f"({eb})" if pb == 1 else eb), 1
    elif op == "*":
        v, e, p = a * b, (f"({ea})" if pa == 1 else ea) + "*" + (f"({eb})" if pb == 1 else eb), 2
    else:
        v, e, p = a // b, (f"({ea})" if pa == 1 else ea) + "/" + (f"({eb})" if pb < 3 else eb), 2
    steps.append(f"{a}{op}{b}={v}")
    for k in sorted((i, j), reverse=True):
        pool.pop(k)
    pool.append((v, e, p))


def solve_by_construction(rng: random.Random, numbers: list[int]) -> tuple[int, str, list[str]]:
    """Combine all numbers in random order: (final value, its expression, the steps)."""
    pool = [(x, str(x), 3) for x in numbers]
    steps: list[str] = []
    while len(pool) > 1:
        _combine(rng, pool, steps)
    return pool[0][0], pool[0][1], steps


class Countdown(Task):
    name = "countdown"
    family = "countdown"
    description = "reach a target from given numbers with + - * /, each number at most once (TinyZero)"
    difficulties = range(1, 5)
    default_difficulty = 1
    difficulty_meaning = "difficulty + 2 numbers"

    def draw(self, rng: random.Random, difficulty: int):
        # The split key is the multiset of numbers (the target is drawn later, in build): a stricter split
        # than (numbers, target) -- no held-out set of numbers is ever seen in training, with any target --
        # and ten times cheaper for the held-out side, which rejects nine draws in ten.
        numbers = [1 + int(rng.random() * MAX_NUMBER) for _ in range(difficulty + 2)]
        return ",".join(map(str, sorted(numbers))), numbers

    def checked_solution(self, rec: dict, rng: random.Random) -> str:
        return rec["solution"]  # the search already judges every try (`no`, then `yes`)

    def build(self, rng: random.Random, numbers, difficulty: int) -> dict:
        while True:  # some constructions leave the target range (big products); rebuild those
            target, expr, steps = solve_by_construction(rng, numbers)
            if 1 <= target <= MAX_TARGET:
                break
        lines = []
        for _ in range(int(rng.random() * (min(difficulty, 2) + 1))):  # 0..2 failed tries: the search
            value, _, miss = solve_by_construction(rng, numbers)
            if value != target:
                lines.append(" ".join(miss) + " no")
        lines.append(" ".join(steps) + " yes")
        lines.append(expr)
        shown = " ".join(map(str, numbers))
        key = ",".join(map(str, sorted(numbers))) + f">{target}"
        return {
            "id": f"countdown-{problem_digest(self.family, key).hex()}",
            "prompt": f"Use {shown} to make {target} with + - * /, each number at most once.",
            "answer": expr,
            "solution": "\n".join(lines),
            "numbers": list(numbers),
            "target": target,
        }
