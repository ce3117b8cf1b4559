"""Verifiable reasoning tasks: problems a rule can check, in sizes a laptop model can learn.

    from tinyseek import r1, tasks
    tasks.names()                                   # the registered task names
    recs = tasks.get("arithmetic").generate(1000, seed=0, split="train", difficulty=2)
    r1.completion_text(recs[0])                     # "<think>\n...\n</think>\n<answer>...</answer>"
    tasks.load_records("my.jsonl")                  # user data: JSONL, Parquet or a datasets dir

A record is {id, task, prompt, answer (str), solution (a trace ending in the answer), difficulty, ...}
(countdown adds numbers and target). Train and test sides are decided by a hash of the problem (see base.py),
so they never share a problem whatever the seed. `difficulty` may be an int, a (lo, hi) range or a list
(a uniform mix, for curricula). The command `tinyseek tasks [NAME]` lists the tasks or prints samples.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tinyseek.config import ConfigError
from tinyseek.errors import TinyseekError
from tinyseek.io import write_jsonl
from tinyseek.r1 import completion_text, training_text
from tinyseek.tasks.arithmetic import Arithmetic
from tinyseek.tasks.base import Task
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
        raise ConfigError(f"{field}: unknown task {name!r} (known: {', '.join(_REGISTRY)})")
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


def documents(
    counts: dict[str, int],
    seed: int = 0,
    split: str = "train",
    fmt: str = "plain",
    difficulty=None,
    field: str = "tasks",
    part=None,
) -> list[str]:
    """Worked problems as training text (`r1.training_text`): the task corpus of the tokenizer, pretraining and
    recipes."""
    return [training_text(rec, fmt) for rec in records(counts, seed, split, difficulty, field, part)]


def load_records(path) -> list[dict]:
    """User data (JSONL, Parquet, or a `datasets` directory) as records; see tinyseek.tasks.userdata."""
    from tinyseek.tasks.userdata import load_records as _load

    return _load(path)


def cli_tasks(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tinyseek tasks", description="list the verifiable tasks, or print sample problems"
    )
    parser.add_argument("name", nargs="?", help="a task name; without one, list the tasks")
    parser.add_argument("--n", type=int, default=5, help="how many problems to generate (default 5)")
    parser.add_argument("--split", default="train", choices=["train", "test"], help="which side of the split")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same problems)")
    parser.add_argument(
        "--difficulty", type=str, default=None, help="an int, or LO-HI for a uniform mix (default: the task's)"
    )
    parser.add_argument("--unique", action="store_true", help="n distinct problems (error if the split has fewer)")
    parser.add_argument("--out", default=None, help="write JSONL here (atomically) instead of printing")
    parser.add_argument("--completion", action="store_true", help="add a `completion` field (R1 format) to each record")
    parser.add_argument("--text", action="store_true", help="print prompt / trace / answer as plain text, not JSONL")
    args = parser.parse_args(argv)

    if args.name is None:
        for name in names():
            task = get(name)
            print(f"{name:<16} {task.info()}")
        return 0
    difficulty = None
    if args.difficulty is not None:
        try:
            lo, _, hi = args.difficulty.partition("-")
            difficulty = (int(lo), int(hi)) if hi else int(lo)
        except ValueError:
            raise TinyseekError(f"--difficulty: expected an int or LO-HI, got {args.difficulty!r}") from None
    t0 = time.perf_counter()
    records = get(args.name).generate(
        args.n, seed=args.seed, split=args.split, difficulty=difficulty, unique=args.unique
    )
    seconds = time.perf_counter() - t0
    if args.out:
        write_jsonl(args.out, ({**r, "completion": completion_text(r)} if args.completion else r for r in records))
        print(
            f"wrote {len(records)} {args.name} problems ({args.split}) to {args.out} in {seconds:.2f} s",
            file=sys.stderr,
        )
    elif args.text:
        for rec in records:
            print(f"# {rec['id']} (difficulty {rec['difficulty']})\n{rec['prompt']}\n{completion_text(rec)}\n")
    else:
        for rec in records:
            if args.completion:
                rec = {**rec, "completion": completion_text(rec)}
            print(json.dumps(rec, ensure_ascii=False))
    return 0
