"""Multi-digit arithmetic with traces that show the work, in a form a tiny character-level model can learn.

Prompts are bare expressions (`4821+3967=`). Traces (measured learnable by a 0.8M-parameter model) go
digit by digit from the right:

    addition     4821+3967=   1+7+0=08 2+6+0=08 8+9+0=17 4+3+1=08 so 8788      (x+y+carry=two-digit sum)
    checked      47+85=       7+5+0=11 no 7+5+0=12 yes 4+8+1=13 yes so 132      (each column judged; a slip redone)
    subtraction  4821-3967=   11-7-0=4 12-6-1=5 18-9-1=8 4-3-1=0 so 854         (a leading 1 marks a borrow)
    negative     39-48=       swap 18-9-0=9 4-3-1=0 so -9                       (48-39, then the sign)
    product      482*37=      482*7=3374 482*30=14460 3374+14460=17834 so 17834 (partial products)
    mixed        (47+85)*6=   47+85=132 132*6=792 so 792                        (one step per operation)

Difficulty = digits per operand (the second factor of a product has ceil(d/2) digits so traces stay short;
mixed expressions use three d-digit numbers). Difficulty 1-2 traces stay under ~60 characters.

The checked form (`checked_solution`, addition only) is for corpora that should hold a few traces which check
their work: every column is judged `yes`, and in about half of them one column is first written wrong, judged
`no` and redone.
"""

from __future__ import annotations

import random
import re

from tinyseek.errors import TinyseekError
from tinyseek.tasks.base import Task

MIXED_SHAPES = ("({a}+{b})*{c}", "({a}-{b})*{c}", "{a}*({b}+{c})", "{a}+{b}*{c}", "{a}*{b}-{c}")


def _operand(rng: random.Random, digits: int) -> int:
    """A number with exactly `digits` digits (0-9 for one digit). rng.random() is ~6x cheaper than randrange
    and exact enough below 2**50; longer operands take the exact path."""
    lo = 10 ** (digits - 1) if digits > 1 else 0
    span = 10**digits - lo
    return lo + int(rng.random() * span) if digits <= 15 else rng.randrange(lo, lo + span)


def add_trace(a: int, b: int) -> str:
    ra, rb = str(a)[::-1], str(b)[::-1]
    carry, parts = 0, []
    for i in range(max(len(ra), len(rb))):
        x = int(ra[i]) if i < len(ra) else 0
        y = int(rb[i]) if i < len(rb) else 0
        s = x + y + carry
        parts.append(f"{x}+{y}+{carry}={s:02d}")
        carry = s // 10
    return " ".join(parts) + f" so {a + b}"


def add_trace_checked(a: int, b: int, rng: random.Random, slip: float = 0.5) -> str:
    """add_trace with every column judged `yes`; with probability `slip` one column is first written wrong (its
    sum off by one or by ten), judged `no`, and redone."""
    ra, rb = str(a)[::-1], str(b)[::-1]
    n = max(len(ra), len(rb))
    wrong_at = int(rng.random() * n) if rng.random() < slip else -1
    carry, parts = 0, []
    for i in range(n):
        x = int(ra[i]) if i < len(ra) else 0
        y = int(rb[i]) if i < len(rb) else 0
        s = x + y + carry
        if i == wrong_at:
            w = [v for v in (s - 1, s + 1, s - 10, s + 10) if 0 <= v <= 19][int(rng.random() * 2)]
            parts.append(f"{x}+{y}+{carry}={w:02d} no")
        parts.append(f"{x}+{y}+{carry}={s:02d} yes")
        carry = s // 10
    return " ".join(parts) + f" so {a + b}"


def sub_trace(a: int, b: int) -> str:
    if a < b:
        return "swap " + sub_trace(b, a)[: -len(str(b - a))] + f"-{b - a}"
    ra, rb = str(a)[::-1], str(b)[::-1]
    borrow, parts = 0, []
    for i in range(len(ra)):
        x = int(ra[i])
        y = int(rb[i]) if i < len(rb) else 0
        v = x - y - borrow
        if v < 0:
            parts.append(f"1{x}-{y}-{borrow}={v + 10}")
            borrow = 1
        else:
            parts.append(f"{x}-{y}-{borrow}={v}")
            borrow = 0
    return " ".join(parts) + f" so {a - b}"


def mul_trace(a: int, b: int) -> str:
    rb = str(b)[::-1]
    if len(rb) == 1:
        return f"{a}*{b}={a * b} so {a * b}"
    multipliers = [int(y) * 10**i for i, y in enumerate(rb) if y != "0"] or [0]  # 37 -> [7, 30]
    parts = [f"{a}*{m}={a * m}" for m in multipliers]
    if len(multipliers) > 1:
        parts.append("+".join(str(a * m) for m in multipliers) + f"={a * b}")
    return " ".join(parts) + f" so {a * b}"


def _apply(x: int, op: str, y: int) -> int:
    return x + y if op == "+" else x - y if op == "-" else x * y


def mixed_value_and_trace(shape: str, a: int, b: int, c: int) -> tuple[int, str]:
    """Evaluate one of MIXED_SHAPES in the order a person would, one written step per operation."""
    if shape.startswith("("):  # (a op b) op2 c
        op, op2 = shape[len("({a}")], shape[-len("*{c}")]
        s = _apply(a, op, b)
        r = _apply(s, op2, c)
        steps = [f"{a}{op}{b}={s}", f"{s}{op2}{c}={r}"]
    elif "(" in shape:  # a op2 (b op c)
        op2, op = shape[len("{a}")], shape[len("{a}*({b}")]
        s = _apply(b, op, c)
        r = _apply(a, op2, s)
        steps = [f"{b}{op}{c}={s}", f"{a}{op2}{s}={r}"]
    elif shape == "{a}+{b}*{c}":
        s = b * c
        r = a + s
        steps = [f"{b}*{c}={s}", f"{a}+{s}={r}"]
    else:  # {a}*{b}-{c}
        s = a * b
        r = s - c
        steps = [f"{a}*{b}={s}", f"{s}-{c}={r}"]
    return r, " ".join(steps) + f" so {r}"


class Arithmetic(Task):
    family = "arithmetic"
    difficulties = range(1, 19)
    difficulty_meaning = "digits per operand"

    def __init__(self, name: str = "arithmetic", ops: str = "+-*()", default_difficulty: int = 2):
        self.name = name
        self.ops = [op for op in ("+", "-", "*", "()") if op in ops or (op == "()" and "(" in ops)]
        self.default_difficulty = default_difficulty
        kinds = {"+": "addition", "-": "subtraction", "*": "multiplication", "()": "mixed expressions"}
        self.description = "multi-digit " + ", ".join(kinds[o] for o in self.ops) + " with digit-by-digit traces"

    def draw(self, rng: random.Random, difficulty: int):
        op = self.ops[int(rng.random() * len(self.ops))] if len(self.ops) > 1 else self.ops[0]
        if op == "()":
            shape = MIXED_SHAPES[int(rng.random() * len(MIXED_SHAPES))]
            a, b, c = (_operand(rng, difficulty) for _ in range(3))
            return shape.format(a=a, b=b, c=c), (shape, a, b, c)
        a = _operand(rng, difficulty)
        b = _operand(rng, (difficulty + 1) // 2 if op == "*" else difficulty)
        return f"{a}{op}{b}", (op, a, b)

    def build(self, rng: random.Random, problem, difficulty: int) -> dict:
        if len(problem) == 4:
            shape, a, b, c = problem
            value, solution = mixed_value_and_trace(shape, a, b, c)
            expr = shape.format(a=a, b=b, c=c)
        else:
            op, a, b = problem
            expr = f"{a}{op}{b}"
            if op == "+":
                value, solution = a + b, add_trace(a, b)
            elif op == "-":
                value, solution = a - b, sub_trace(a, b)
            else:
                value, solution = a * b, mul_trace(a, b)
        return {"prompt": f"{expr}=", "answer": str(value), "solution": solution}

    def checked_solution(self, rec: dict, rng: random.Random) -> str:
        m = re.fullmatch(r"(\d+)\+(\d+)=", rec["prompt"])
        if m is None:
            raise TinyseekError(f"task {self.name}: checked traces exist for additions only (got {rec['prompt']!r})")
        return add_trace_checked(int(m.group(1)), int(m.group(2)), rng)
