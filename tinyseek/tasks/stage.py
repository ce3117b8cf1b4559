"""The tasks stage: a run's problem files, every role its own problems (`TasksConfig`, `run`), and `tinyseek tasks`.

One hash of each problem decides its role: the held-out side (tinyseek.tasks.base), then one slice of the train
side per named split and one for the corpus, so the test set, the corpus and every split are disjoint sets of
problems, whatever the seed. A recipe's tasks stage and `tinyseek tasks write` build the same `TasksConfig`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyseek.config import CommandParser, ConfigError, from_dict, overlay, read_file
from tinyseek.errors import TinyseekError
from tinyseek.io import atomic_dir, write_json, write_jsonl
from tinyseek.r1 import LAYOUTS, completion_text
from tinyseek.tasks import documents, get, names, parse_style


@dataclass
class TasksConfig:
    """The fields of a run's problem files (`tinyseek tasks write`, a recipe's tasks stage). Counts are per task."""

    tasks: list[str] = field(default_factory=lambda: ["arithmetic"])  # task names
    seed: int = 0  # the training problems' seed (splits and corpus)
    difficulty: int | list[int] | None = None  # an int, or [lo, hi] for the levels lo..hi (default: the task's)
    splits: dict[str, int] = field(default_factory=dict)  # split name -> distinct training problems (per task)
    test: int = 200  # distinct held-out problems (per task)
    corpus: dict[str, int] = field(default_factory=dict)  # task -> worked problems as corpus.txt documents (repeats)
    corpus_difficulty: int | list[int] | None = None  # the corpus problems' difficulty (default: the task's)
    corpus_format: str = "plain"  # the corpus documents' layout: plain | chat | dialogue | r1-zero
    # {style: share}: each corpus document draws its style, LAYOUT[:COMPLETION] (completion worked | bare | checked),
    # e.g. {"dialogue" = 0.6, "r1-zero:bare" = 0.3, "r1-zero" = 0.07, "r1-zero:checked" = 0.03}; replaces corpus_format
    corpus_mix: dict[str, float] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)  # role -> its fraction of the train side (see role_parts)
    test_seed: int = 0  # the held-out draw's own seed: every run seed is measured on the same test set
    ood: int = 0  # distinct held-out problems at ood_difficulty, in ood.jsonl (an out-of-distribution test set)
    ood_difficulty: int | list[int] | None = None  # e.g. harder than anything the splits hold

    def validate(self) -> None:
        for n in [*self.tasks, *self.corpus]:
            get(n, field="tasks")
        if "test" in self.splits or "corpus" in self.splits:
            raise ConfigError("splits: 'test' and 'corpus' are reserved names")
        role_parts(self.splits, self.shares, bool(self.corpus))
        _difficulty(self.difficulty, "difficulty")
        _difficulty(self.corpus_difficulty, "corpus_difficulty")
        if self.corpus_format not in LAYOUTS:
            raise ConfigError(f"corpus_format must be one of {', '.join(LAYOUTS)} (got {self.corpus_format!r})")
        for style in self.corpus_mix:
            parse_style(style)
        if self.ood and self.ood_difficulty is None:
            raise ConfigError("ood_difficulty: an out-of-distribution test set (ood > 0) needs its difficulty")
        _difficulty(self.ood_difficulty, "ood_difficulty")


def _difficulty(value: Any, name: str) -> Any:
    """TOML has no tuples: [lo, hi] means the range lo..hi (tinyseek.tasks takes a tuple for that)."""
    if isinstance(value, list):
        if len(value) != 2 or not all(isinstance(v, int) for v in value):
            raise ConfigError(f"{name}: a difficulty range is [lo, hi] (got {value!r})")
        return tuple(value)
    return value


def role_parts(splits: dict[str, int], shares: dict[str, float], corpus: bool) -> dict[str, tuple]:
    """Each role's slice (lo, hi) of the train side: the named splits, and "corpus" when there is one.

    `shares` gives each role its fraction of the train side; by default the splits share it in proportion to
    their counts, after a fifth for the corpus. A problem's role is decided by its hash alone (see
    tinyseek.tasks.base), so the roles never share a problem, whatever the seed.
    """
    roles = [*splits, *(["corpus"] if corpus else [])]
    for k, n in splits.items():
        if n <= 0:
            raise ConfigError(f"splits.{k}: an empty split ({n} problems); give it a positive count or drop it")
    if shares:
        extra = sorted(set(shares) - set(roles))
        if extra:
            raise ConfigError(f"shares.{extra[0]}: no such split (splits: {', '.join(roles)})")
        missing = [k for k in roles if k not in shares]
        if missing:
            raise ConfigError(f"shares.{missing[0]}: every split needs a share when shares are given")
        frac = {k: float(shares[k]) for k in roles}
    else:
        corpus_share = 0.2 if corpus else 0.0
        total = sum(splits.values())
        frac = {k: (1 - corpus_share) * n / total for k, n in splits.items()} if total else {}
        if corpus:
            frac["corpus"] = corpus_share
    for k, v in frac.items():
        if not 0 < v <= 1:
            raise ConfigError(f"shares.{k}: must be in (0, 1] (got {v!r}); a role without problems is empty")
    if sum(frac.values()) > 1 + 1e-9:
        raise ConfigError(f"shares: the roles overlap (their shares add up to {sum(frac.values()):g} > 1)")
    parts, lo = {}, 0.0
    for k in roles:
        parts[k] = (lo, min(1.0, lo + frac[k]))
        lo = parts[k][1]
    return parts


def run(cfg: TasksConfig, out: Path, resume: bool = False) -> dict:
    """OUT/<split>.jsonl per named split, test.jsonl, corpus.txt (blank-line separated worked problems, drawn with
    repeats, for the tokenizer and pretraining) and roles.json (each role's slice and count, for the report).

    A split whose slice cannot supply its count raises, naming the split, before anything is written. Writing a
    few thousand problems takes seconds: `resume` changes nothing (they are written again). Returns roles.json.
    """
    parts = role_parts(cfg.splits, cfg.shares, bool(cfg.corpus))
    diff = _difficulty(cfg.difficulty, "difficulty")
    out_recs: dict[str, list[dict]] = {k: [] for k in cfg.splits}
    test: list[dict] = []
    ood: list[dict] = []
    for name in cfg.tasks:
        task = get(name)
        for k, n in cfg.splits.items():
            # distinct problems within a split, too: its interval counts problems, not repeats
            try:
                out_recs[k] += task.generate(
                    n, seed=cfg.seed, split="train", difficulty=diff, unique=True, part=parts[k]
                )
            except TinyseekError as e:
                raise ConfigError(f"splits.{k}: {e}; or give the split a larger share") from None
        # the held-out set has its own seed: runs with different seeds are measured on the same problems
        test += task.generate(cfg.test, seed=cfg.test_seed, split="test", difficulty=diff, unique=True)
        if cfg.ood:
            odiff = _difficulty(cfg.ood_difficulty, "ood_difficulty")
            ood += task.generate(cfg.ood, seed=cfg.test_seed, split="test", difficulty=odiff, unique=True)
    cdiff = _difficulty(cfg.corpus_difficulty, "corpus_difficulty")
    corpus = []
    if cfg.corpus:
        try:
            corpus = documents(
                cfg.corpus, cfg.seed, "train", cfg.corpus_format, cdiff, part=parts["corpus"], mix=cfg.corpus_mix
            )
        except TinyseekError as e:
            raise ConfigError(f"corpus: {e}") from None
        split = next((d for d in corpus if "\n\n" in d), None)  # corpus.txt separates documents by blank lines
        if split is not None:
            raise ConfigError(f"corpus: a document holds a blank line and would be read back as two: {split[:80]!r}")
    roles = {k: {"part": list(parts[k]), "problems": len(out_recs[k])} for k in cfg.splits}
    if corpus:
        roles["corpus"] = {"part": list(parts["corpus"]), "documents": len(corpus)}
    roles["test"] = {"part": "held-out side", "problems": len(test)}
    if ood:
        roles["ood"] = {"part": "held-out side", "problems": len(ood), "difficulty": cfg.ood_difficulty}
    with atomic_dir(out) as tmp:
        for k, recs in out_recs.items():
            write_jsonl(tmp / f"{k}.jsonl", recs)
        write_jsonl(tmp / "test.jsonl", test)
        if ood:
            write_jsonl(tmp / "ood.jsonl", ood)
        write_json(tmp / "roles.json", roles)
        if corpus:
            (tmp / "corpus.txt").write_text("\n\n".join(corpus) + "\n", encoding="utf-8")
    return roles


# ----------------------------------------------------------------------------------------------
# the command


def cli_write(argv: list[str]) -> int:
    d = TasksConfig()
    ap = CommandParser(
        prog="tinyseek tasks write",
        description="Write a run's problem files (a recipe's tasks stage): OUT/<split>.jsonl per split, test.jsonl, "
        "corpus.txt and roles.json, every role its own problems. Counts are per task.",
    )
    ap.add_argument("--config", help="a TOML/JSON file of the fields below (a recipe's tasks stage); flags override it")
    ap.add_argument("--tasks", help=f"comma-separated task names ({', '.join(names())}; default {','.join(d.tasks)})")
    ap.add_argument(
        "--splits", help="NAME=COUNT,...: distinct training problems per named split, e.g. sft=1800,rl=1800"
    )
    ap.add_argument("--test", help=f"distinct held-out problems (default {d.test})")
    ap.add_argument("--seed", help=f"the training problems' seed (default {d.seed})")
    ap.add_argument("--difficulty", help="an int, or LO-HI for the levels LO..HI (default: the task's)")
    ap.add_argument("--corpus", help="TASK=COUNT,...: worked problems, drawn with repeats, as documents in corpus.txt")
    ap.add_argument(
        "--corpus-difficulty", help="the corpus problems' difficulty: an int or LO-HI (default: the task's)"
    )
    ap.add_argument(
        "--corpus-format",
        help=f"the corpus documents' layout: {' | '.join(LAYOUTS)} (default {d.corpus_format})",
    )
    ap.add_argument(
        "--corpus-mix",
        help="STYLE=SHARE,...: each corpus document draws its style, LAYOUT[:COMPLETION] with COMPLETION worked, bare "
        "or checked (e.g. dialogue=0.6,r1-zero:bare=0.4); replaces --corpus-format",
    )
    ap.add_argument(
        "--shares",
        help="ROLE=FRACTION,...: each split's (and the corpus') slice of the train side (default: the splits share it "
        "in proportion to their counts, after a fifth for the corpus)",
    )
    ap.add_argument("--test-seed", help=f"the held-out draw's own seed (default {d.test_seed})")
    ap.add_argument("--ood", help="distinct held-out problems at --ood-difficulty, written to ood.jsonl (default 0)")
    ap.add_argument("--ood-difficulty", help="the out-of-distribution problems' difficulty: an int or LO-HI")
    ap.add_argument("--out", required=True, help="the directory to write (replaced as a whole)")
    a = ap.parse_args(argv)
    flags = {k: v for k, v in vars(a).items() if v is not None and k not in ("config", "out")}
    for k in (
        "difficulty",
        "corpus_difficulty",
        "ood_difficulty",
    ):  # LO-HI, as `tinyseek tasks NAME --difficulty` takes it
        if k in flags:
            flags[k] = flags[k].replace("-", ",")
    data = read_file(a.config) if a.config else {}
    cfg = from_dict(TasksConfig, overlay(TasksConfig, data, flags), where=a.config or "")
    roles = run(cfg, Path(a.out))
    counts = ", ".join(f"{k} {v.get('problems', v.get('documents'))}" for k, v in roles.items())
    print(f"tasks: {counts} -> {a.out}", file=sys.stderr)
    return 0


def cli_tasks(argv: list[str]) -> int:
    if argv[:1] == ["write"]:
        return cli_write(argv[1:])
    parser = CommandParser(
        prog="tinyseek tasks",
        description="list the verifiable tasks, or print sample problems",
        epilog="tinyseek tasks write --out DIR ...: a run's problem files (tinyseek tasks write --help)",
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
