"""Linear equations in one unknown with integer solutions; the trace does one algebra move per step.

    difficulty 1   x+7=12           x=12-7=5
                   4x=-12           x=-12/4=-3
    difficulty 2   3x+5=20          3x=20-5=15 x=15/3=5
    difficulty 3   5x+2=3x+10       5x-3x=10-2 2x=8 x=8/2=4
    difficulty 4   2(x+3)=5x-9      2x+6=5x-9 2x-5x=-9-6 -3x=-15 x=-15/-3=5

Difficulty = the number of moves. Solutions are -20..20, coefficients 1..9 (never zero after collecting
terms), constants chosen so the equation holds. The prompt is `Solve 3x+5=20.`; the answer is the integer.
"""

from __future__ import annotations

import random

from tinyseek.tasks.base import Task


def _term(c: int, first: bool = False) -> str:
    """c*x written the usual way: x, -x, 3x, -3x, and with an explicit + when not first."""
    body = "x" if abs(c) == 1 else f"{abs(c)}x"
    if c < 0:
        return "-" + body
    return body if first else "+" + body


def _const(k: int) -> str:
    """A constant after a term: +5, -5 (zero is never written)."""
    return f"+{k}" if k > 0 else f"-{-k}" if k < 0 else ""


def _sub(a: int, b: int) -> str:
    """`a-b` written without a double sign: 9-(-3) -> 9+3."""
    return f"{a}-{b}" if b >= 0 else f"{a}+{-b}"


def _div_step(coef: int, rhs: int, x: int) -> str:
    return f"x={rhs}/{coef}={x}"


def _collected(coef: int, rhs: int, x: int) -> str:
    """`coef x = rhs`, then the division (skipped when coef is 1: `x=8` is already the answer)."""
    return f"x={x}" if coef == 1 else f"{_term(coef, True)}={rhs} {_div_step(coef, rhs, x)}"


def _rand(rng: random.Random, lo: int, hi: int) -> int:
    return lo + int(rng.random() * (hi - lo + 1))


class Equations(Task):
    name = "equations"
    family = "equations"
    description = "linear equations in one unknown with integer solutions, solved one move at a time"
    difficulties = range(1, 5)
    default_difficulty = 2
    difficulty_meaning = "algebra moves to the solution"

    def draw(self, rng: random.Random, difficulty: int):
        x = _rand(rng, -20, 20)
        if difficulty == 1:
            if rng.random() < 0.5:
                b = _rand(rng, -20, 20) or 1
                eq = f"x{_const(b)}={x + b}"
                return eq, (eq, x, f"x={_sub(x + b, b)}={x}")
            a = _rand(rng, 2, 9) * (1 if rng.random() < 0.7 else -1)
            eq = f"{_term(a, True)}={a * x}"
            return eq, (eq, x, _div_step(a, a * x, x))
        if difficulty == 2:
            a = _rand(rng, 2, 9)
            b = _rand(rng, -20, 20) or 3
            c = a * x + b
            eq = f"{_term(a, True)}{_const(b)}={c}"
            return eq, (eq, x, f"{_term(a, True)}={_sub(c, b)}={a * x} {_div_step(a, a * x, x)}")
        if difficulty == 3:
            a, c = _rand(rng, 1, 9), _rand(rng, 1, 9)
            if a == c:
                c = a % 9 + 1
            b = _rand(rng, -20, 20)
            d = (a - c) * x + b
            eq = f"{_term(a, True)}{_const(b)}={_term(c, True)}{_const(d)}"
            steps = f"{_term(a, True)}{_term(-c)}={_sub(d, b)} {_collected(a - c, d - b, x)}"
            return eq, (eq, x, steps)
        # difficulty 4: a(x+b) = cx + d
        a, c = _rand(rng, 2, 9), _rand(rng, 1, 9)
        if a == c:
            c = a % 9 + 1
        b = _rand(rng, -9, 9) or 2
        d = a * (x + b) - c * x
        inner = f"x{_const(b)}"
        eq = f"{a}({inner})={_term(c, True)}{_const(d)}"
        ab = a * b
        steps = (
            f"{_term(a, True)}{_const(ab)}={_term(c, True)}{_const(d)} "
            f"{_term(a, True)}{_term(-c)}={_sub(d, ab)} {_collected(a - c, d - ab, x)}"
        )
        return eq, (eq, x, steps)

    def build(self, rng: random.Random, problem, difficulty: int) -> dict:
        eq, x, steps = problem
        return {"prompt": f"Solve {eq}.", "answer": str(x), "solution": steps}
