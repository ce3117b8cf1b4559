"""Verifiable reasoning tasks: problems a rule can check, in sizes a laptop model can learn.

    from tinyseek import r1, tasks
    tasks.names()                                   # the registered task names
    recs = tasks.get("arithmetic").generate(1000, seed=0, split="train", difficulty=2)
    r1.completion_text(recs[0])                     # "<think>\n...\n</think>\n<answer>...</answer>"
    tasks.load_records("my.jsonl")                  # user data: JSONL, Parquet or a datasets dir

A record is {id, task, prompt, answer (str), solution (a trace ending in the answer), difficulty, ...}
(countdown adds numbers and target). Train and test sides are decided by a hash of the problem (see base.py),
so they never share a problem whatever the seed. `difficulty` may be an int, a (lo, hi) range or a list
(a uniform mix, for curricula). The command `tinyseek tasks` (tasks/stage.py) lists the tasks, prints samples
or writes a run's problem files.
"""

from __future__ import annotations

import random

from tinyseek.config import ConfigError
from tinyseek.errors import unknown
from tinyseek.r1 import LAYOUTS, training_text
from tinyseek.tasks.arithmetic import Arithmetic
from tinyseek.tasks.base import Task, stream_seed
from tinyseek.tasks.countdown import Countdown
from tinyseek.tasks.equations import Equations
from tinyseek.tasks.wordproblems import WordProblems

# name -> factory; variants of a family share its split (addition problems are arithmetic problems,
# a Chinese word problem is the same problem as its English twin)
_REGISTRY = {
    "arithmetic": lambda: Arithmetic("arithmetic", ops="+-*()"),
    "addition": lambda: Arithmetic("addition", ops="+", default_difficulty=4),
    "countdown": Countdown,
    "equations": Equations,
    "wordproblems": lambda: WordProblems("wordproblems", lang="en"),
    "wordproblems_zh": lambda: WordProblems("wordproblems_zh", lang="zh"),
}


def names() -> list[str]:
    """The registered task names."""
    return list(_REGISTRY)


def get(name: str, field: str = "task") -> Task:
    """The task called `name` (see names()); an unknown name is a one-line error naming `field`."""
    if name not in _REGISTRY:
        raise ConfigError(f"{field}: {unknown('task', name, _REGISTRY)}")
    return _REGISTRY[name]()


def records(
    counts: dict[str, int], seed: int = 0, split: str = "train", difficulty=None, field: str = "tasks", part=None
) -> list[dict]:
    """`counts[name]` generated problems of each named task, task after task (every name is checked first);
    `part` restricts the train side to one role's slice (see tinyseek.tasks.base)."""
    chosen = [(get(name, field), int(n)) for name, n in counts.items()]
    return [
        rec for task, n in chosen for rec in task.generate(n, seed=seed, split=split, difficulty=difficulty, part=part)
    ]


COMPLETIONS = ("worked", "bare", "checked")  # the task's trace; no reasoning; the trace with its steps judged


def parse_style(style: str) -> tuple[str, str]:
    """ "LAYOUT" or "LAYOUT:COMPLETION" (e.g. "r1-zero:bare") -> (layout, completion); a bad one is a one-line
    error naming the known ones."""
    layout, _, completion = style.partition(":")
    completion = completion or "worked"
    if layout not in LAYOUTS or completion not in COMPLETIONS:
        raise ConfigError(
            f"corpus style {style!r}: expected LAYOUT[:COMPLETION], layouts {', '.join(LAYOUTS)}, completions "
            f"{', '.join(COMPLETIONS)}"
        )
    return layout, completion


def documents(
    counts: dict[str, int],
    seed: int = 0,
    split: str = "train",
    fmt: str = "plain",
    difficulty=None,
    field: str = "tasks",
    part=None,
    mix: dict[str, float] | None = None,
) -> list[str]:
    """Solved problems as training text (`r1.training_text`): the task corpus of the tokenizer, pretraining and
    recipes. Every document is laid out as `fmt`, or, with a `mix` ({style: share}, shares summing to 1), each
    draws its style from the mix: a layout and what the completion shows (the worked trace, a bare answer, or the
    trace checking its steps), so one corpus holds problems written the several ways a real base model's data
    would. The draw is seeded: the same arguments give the same corpus."""
    recs = records(counts, seed, split, difficulty, field, part)
    if not mix:
        return [training_text(rec, fmt) for rec in recs]
    styles = [(parse_style(k), float(v)) for k, v in mix.items()]
    if any(v < 0 for _, v in styles) or abs(sum(v for _, v in styles) - 1) > 1e-6:
        raise ConfigError(f"corpus mix: the shares must be >= 0 and sum to 1 (got {dict(mix)})")
    rng = random.Random(stream_seed("corpus-mix", seed, split))
    out = []
    for rec in recs:
        u, acc = rng.random(), 0.0
        (layout, completion), _ = styles[-1]
        for (lay, comp), share in styles:
            acc += share
            if u < acc:
                layout, completion = lay, comp
                break
        if completion == "bare":
            rec = {**rec, "solution": ""}
        elif completion == "checked":
            rec = {**rec, "solution": get(rec["task"]).checked_solution(rec, rng)}
        out.append(training_text(rec, layout))
    return out


def load_records(path) -> list[dict]:
    """User data (JSONL, Parquet, or a `datasets` directory) as records; see tinyseek.tasks.userdata."""
    from tinyseek.tasks.userdata import load_records as _load

    return _load(path)
