"""What every task generator shares: the seeded draw loop and the hash-based train/held-out split.

A task draws a *problem* (a small tuple of numbers and choices) cheaply, names it by a canonical key, and
only then builds the prompt and the reasoning trace. Which side of the split a problem falls on is decided by
a real hash (blake2b) of `family|canonical key`, never by the seed or by a formula over the numbers: the same
problem is on the same side whatever the seed, whatever the task variant (`addition` and `arithmetic` share
their sums; English and Chinese word problems share their numbers), and the held-out set is not "the problems
whose last digits look like X", the pitfall of a linear hash of the numbers.

The train side is cut once more by the same digest (its next two bytes, independent of the first two): a
`part` (lo, hi) of [0, 1) selects the train problems whose role value falls in it. A recipe gives each role
(pretraining corpus, SFT traces, RL prompts, distillation prompts) its own part, so the problems of the roles
are disjoint by construction, for every seed: one hash decides every problem's role.

Generation draws problems i.i.d. from the requested side (rejection on the hash), so a split may repeat a
problem when the problem space is small; `unique=True` asks for n distinct problems and raises a
TinyseekError when the side cannot supply them. Every loop has a draw budget, so a side that holds few or no
problems (1-digit sums have 100 problems, about 10 of them held out) fails with a clear message instead of
spinning forever.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

from tinyseek.errors import TinyseekError

SPLITS = ("train", "test")

# The vocabulary the tasks' traces share, read back exactly: a worked step is `operand op operand = number`
# (`7+9+0=16`, `482*30=14460`, `9-7=2`); a step the trace judges is followed by `yes` or `no`; `no` retracts it,
# and the trace goes on with another try (Countdown's search, a redone column of a checked addition).
STEP_RE = re.compile(r"\d\s*[-+*/]\s*\d+(?:\s*[-+*/]\s*\d+)*\s*=\s*-?\d+")
VERDICT_RE = re.compile(r"=\s*-?\d+\s+(yes|no)\b")
BEHAVIOURS = ("reasons", "verifies", "backtracks")


def think_block(completion: str) -> str:
    """The reasoning of a completion: what lies between `<think>` and `</think>` (to the answer, or the end, when a
    tag is missing)."""
    start = completion.find("<think>")
    text = completion[start + len("<think>") :] if start >= 0 else completion
    end = text.find("</think>")
    if end < 0:
        end = text.find("<answer>")
    return text if end < 0 else text[:end]


def behaviours(completion: str) -> dict[str, bool]:
    """What a completion's reasoning does, by the traces' own markers (exact, not keyword guesses): `reasons` (its
    think block holds a worked step), `verifies` (a step judged `yes` or `no`), `backtracks` (a step judged `no`,
    and the reasoning goes on)."""
    think = think_block(completion)
    verdicts = VERDICT_RE.findall(think)
    return {
        "reasons": STEP_RE.search(think) is not None,
        "verifies": bool(verdicts),
        "backtracks": "no" in verdicts,
    }


TEST_BUCKETS = 6554  # of 65536: the first two digest bytes below this mark a held-out problem (10.0%)


def problem_digest(family: str, key: str) -> bytes:
    """8-byte blake2b digest of the canonical problem; decides the split and names the record."""
    return hashlib.blake2b(f"{family}|{key}".encode(), digest_size=8).digest()


def is_test_digest(digest: bytes) -> bool:
    return (digest[0] << 8 | digest[1]) < TEST_BUCKETS


def role_value(digest: bytes) -> float:
    """Where a train-side problem falls in [0, 1) for `part` (digest bytes 2-3; bytes 0-1 decide the side)."""
    return (digest[2] << 8 | digest[3]) / 65536


def side_of(family: str, key: str) -> str:
    """'test' for the ~10% of problems whose hash falls in the held-out buckets, else 'train'."""
    return "test" if is_test_digest(problem_digest(family, key)) else "train"


def stream_seed(*parts: Any) -> int:
    """A deterministic integer seed from (task, seed, split, ...): Python's hash() is salted per process."""
    text = "|".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Task:
    """A verifiable task. Subclasses set the class attributes and implement `draw` and `build`.

    draw(rng, difficulty) -> (key, problem): a random problem and its canonical key (a short string that
        is the same for the same problem however it is phrased). Called ~10x per held-out record, so cheap.
    build(rng, problem, difficulty) -> dict with at least prompt, answer (str), solution (str ending in
        answer) plus task-specific keys (countdown: numbers, target); called only for kept problems, with the
        same stream, so it may draw the expensive parts (names, a search trace). It may set its own "id".
    """

    name: str = ""
    family: str = ""  # the split is shared by every variant of a family
    description: str = ""
    difficulties: range = range(1, 2)  # valid difficulty levels
    default_difficulty: int = 1
    difficulty_meaning: str = ""

    def draw(self, rng: random.Random, difficulty: int) -> tuple[str, Any]:
        raise NotImplementedError

    def build(self, rng: random.Random, problem: Any, difficulty: int) -> dict:
        raise NotImplementedError

    def checked_solution(self, rec: dict, rng: random.Random) -> str:
        """The record's trace with its steps judged `yes`/`no` (and a wrong step retracted and redone), for a
        corpus's documents that check their work. Tasks without such traces say so."""
        raise TinyseekError(f"task {self.name}: has no checked traces (a corpus style ':checked' needs them)")

    def _levels(self, difficulty) -> list[int]:
        """None -> the default; an int -> that level; a tuple (lo, hi) -> levels lo..hi; a list -> exactly
        those levels (TOML has no tuples: [1, 3] means levels 1 and 3). A mix draws a level per problem."""
        if difficulty is None:
            levels = [self.default_difficulty]
        elif isinstance(difficulty, int) and not isinstance(difficulty, bool):
            levels = [difficulty]
        elif isinstance(difficulty, tuple) and len(difficulty) == 2:
            levels = list(range(int(difficulty[0]), int(difficulty[1]) + 1))
        elif isinstance(difficulty, list) and difficulty:
            levels = [int(d) for d in difficulty]
        else:
            raise TinyseekError(f"task {self.name}: difficulty must be an int, (lo, hi) or a list, got {difficulty!r}")
        lo, hi = self.difficulties.start, self.difficulties.stop - 1
        for d in levels:
            if d not in self.difficulties:
                raise TinyseekError(
                    f"task {self.name}: difficulty {d} out of range {lo}..{hi} ({self.difficulty_meaning})"
                )
        return levels

    def generate(
        self,
        n: int,
        seed: int = 0,
        split: str = "train",
        difficulty: int | tuple[int, int] | list[int] | None = None,
        unique: bool = False,
        part: tuple[float, float] | None = None,
    ) -> list[dict]:
        """n records from one side of the split; the same arguments always give the same records.

        Problems are drawn i.i.d. from `split`'s side, so small problem spaces repeat problems;
        unique=True returns n distinct problems or raises TinyseekError if the side has fewer.
        `part` (lo, hi), train side only: only problems whose `role_value` lies in [lo, hi).
        """
        if split not in SPLITS:
            raise TinyseekError(f"task {self.name}: split must be 'train' or 'test', got {split!r}")
        if part is not None and (split != "train" or not 0 <= part[0] < part[1] <= 1):
            raise TinyseekError(
                f"task {self.name}: part must be (lo, hi) with 0 <= lo < hi <= 1 on the train side, got {part!r}"
            )
        lo16, hi16 = (0, 65536) if part is None else (round(part[0] * 65536), round(part[1] * 65536))
        if not isinstance(n, int):
            raise TinyseekError(f"task {self.name}: n: expected an integer (got {n!r})")
        if n < 0:
            raise TinyseekError(f"task {self.name}: n: must be >= 0 (got {n})")
        levels = self._levels(difficulty)
        rng = random.Random(stream_seed(self.name, seed, split, levels, *(() if part is None else (part,))))
        want_test = split == "test"
        prefix = f"{self.family or self.name}|".encode()
        blake2b = hashlib.blake2b
        records: list[dict] = []
        seen: set[str] = set()
        budget = int(
            (200 * n + 10_000) * 65536 / max(1, hi16 - lo16)
        )  # expected: n / 0.9 (train), n / 0.1 (test), / part
        draws = 0
        while len(records) < n:
            if draws >= budget:
                have = len(seen) if unique else len(records)
                shown = difficulty if difficulty is not None else self.default_difficulty
                where = f"the {split} split" if part is None else f"part [{part[0]:g}, {part[1]:g}) of the train split"
                raise TinyseekError(
                    f"task {self.name}: {where} at difficulty {shown} supplied only {have} "
                    f"{'distinct ' if unique else ''}problems of {n} after {draws} draws; ask for fewer, "
                    f"raise the difficulty{', or pass unique=False' if unique else ''}"
                )
            draws += 1
            level = levels[0] if len(levels) == 1 else levels[int(rng.random() * len(levels))]
            key, problem = self.draw(rng, level)
            dg = blake2b(prefix + key.encode(), digest_size=8).digest()  # = problem_digest(family, key)
            if ((dg[0] << 8 | dg[1]) < TEST_BUCKETS) != want_test or not lo16 <= (dg[2] << 8 | dg[3]) < hi16:
                continue
            if unique:
                if key in seen:
                    continue
                seen.add(key)
            rec = {"id": f"{self.name}-{dg.hex()}", "task": self.name}
            rec.update(self.build(rng, problem, level))
            rec["difficulty"] = level
            records.append(rec)
        return records

    def info(self) -> str:
        lo, hi = self.difficulties.start, self.difficulties.stop - 1
        return (
            f"{self.description} (difficulty {lo}..{hi}: {self.difficulty_meaning}; default {self.default_difficulty})"
        )
