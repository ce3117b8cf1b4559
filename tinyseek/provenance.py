"""What a checkpoint was trained on (its task, difficulty levels and prompt template), read from the run that made it.

A model trained on 2-digit additions scores 0% on the task's default 4-digit ones, and one trained in R1-Zero's
template answers noise in the chat template: `eval`, `chat`, `generate` and `serve` need to know what the
checkpoint saw to default to it. Nothing new is stored for that: a training stage already writes its resolved
config (`RUN/STAGE/config.toml`) beside `final/` and `checkpoints/step-N/`, a recipe its stages
(`RUN/recipe.json`), and task records carry their `task` and `difficulty`. `trained_on` reads, for a checkpoint:

1. `trained_on.json` in the checkpoint itself (an export carries one, since it leaves its run behind);
2. its stage's config: `prompt_template`, the records of its `data` (their `task` and `difficulty` fields), else
   its `task` / `tasks` and `difficulty`;
3. the run's recipe: a stage that reads this checkpoint with a `prompt_template` (how the recipe prompts a base
   model), and the `tasks` stage (the run's one task and its levels);
4. the checkpoint it started from (`init`, `model`, `teacher`), for whatever is still unknown.

The first answer found for a field wins. A checkpoint outside any run gives an empty `TrainedOn`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from tinyseek.config import ConfigError, read_file
from tinyseek.errors import TinyseekError
from tinyseek.io import read_rows, write_json

FILE = "trained_on.json"  # in an exported directory: what the model was trained on, as `trained_on` found it
TEMPLATES = ("chat", "r1-zero")  # the prompt templates a person's commands can render
_ROWS = 500  # records read from a data file (the first ones say its task and levels)


@dataclass
class TrainedOn:
    task: str = ""  # "" = unknown
    levels: list[int] = field(default_factory=list)  # the difficulty levels it saw ([] = unknown)
    prompt_template: str = ""  # chat | r1-zero ("" = unknown: the chat template)
    sources: list[str] = field(default_factory=list)  # the files it was read from, for messages

    @property
    def difficulty(self) -> int | list[int] | None:
        """The levels as a task's `difficulty` argument: one int, a list of levels, or None (the task's own)."""
        if not self.levels:
            return None
        return self.levels[0] if len(self.levels) == 1 else list(self.levels)

    @property
    def template(self) -> str:
        return self.prompt_template or "chat"

    def describe(self) -> str:
        """`addition problems at difficulty 2, in the chat template` (what is known of it)."""
        parts = [f"{self.task} problems"] if self.task else []
        if self.levels:
            parts.append(f"at difficulty {levels_text(self.levels)}")
        text = " ".join(parts)
        return f"{text}, in the {self.template} template" if text else f"the {self.template} template"

    def example(self) -> str:
        """A held-out problem of its task and levels, for a person to try ("" when the task is not known)."""
        if not self.task:
            return ""
        from tinyseek import tasks

        try:
            return tasks.get(self.task).generate(1, seed=0, split="test", difficulty=self.difficulty)[0]["prompt"]
        except TinyseekError:  # a task name this version does not know
            return ""

    def to_dict(self) -> dict:
        return {"task": self.task, "levels": self.levels, "prompt_template": self.template}


def levels_text(levels: list[int]) -> str:
    return ", ".join(str(x) for x in levels) if len(levels) < 3 else f"{min(levels)}-{max(levels)}"


def trained_on(path: str | Path) -> TrainedOn:
    """What the checkpoint at `path` was trained on, as far as its run says (see the module docstring)."""
    out = TrainedOn()
    seen: set[Path] = set()
    todo = [Path(str(path).rstrip("/"))]
    while todo and len(seen) < 16:  # a chain of stages; the bound only guards against a loop of links
        ckpt = todo.pop(0)
        key = ckpt.resolve() if ckpt.exists() else ckpt
        if key in seen or not ckpt.is_dir():
            continue
        seen.add(key)
        todo += _read_checkpoint(ckpt, out)
        if out.task and out.levels and out.prompt_template:
            break
    return out


def _read_checkpoint(ckpt: Path, out: TrainedOn) -> list[Path]:
    """Fill what `out` lacks from this checkpoint's own files, its stage and its run; returns its parents."""
    own = ckpt / FILE
    if own.is_file():
        try:
            data = json.loads(own.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            data = {}
        _fill(out, data.get("task", ""), data.get("levels", []), data.get("prompt_template", ""), own)
        return []
    stage = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    cfg = _read_config(stage / "config.toml")
    if cfg is None:
        return []
    _from_config(cfg, stage / "config.toml", out)
    _from_recipe(ckpt, stage, out)
    return [Path(cfg[k]) for k in ("init", "model", "teacher") if isinstance(cfg.get(k), str) and cfg[k]]


def _read_config(path: Path) -> dict | None:
    try:
        return read_file(path) if path.is_file() else None
    except ConfigError:
        return None


def _fill(out: TrainedOn, task, levels, template, source: Path) -> None:
    used = False
    if not out.task and isinstance(task, str) and task:
        out.task, used = task, True
    if not out.levels and levels:
        out.levels, used = sorted({int(x) for x in levels}), True
    if not out.prompt_template and template in TEMPLATES:
        out.prompt_template, used = template, True
    if used and str(source) not in out.sources:
        out.sources.append(str(source))


def _as_levels(value) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list) and value and all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        return list(value)
    return []


def _from_config(cfg: dict, where: Path, out: TrainedOn) -> None:
    """A stage's resolved config: its template, and its task from its data records or its own fields."""
    _fill(out, "", [], cfg.get("prompt_template", ""), where)
    data = cfg.get("data")
    files = [data] if isinstance(data, str) and data else [d for d in data or [] if isinstance(d, str)]
    for f in files:
        task, levels = _from_records(Path(f))
        if task or levels:
            _fill(out, task, levels, "", Path(f))
            return
    if files:
        return  # records without a task: the stage's `task` default is not what it trained on
    tasks = cfg.get("task") or cfg.get("tasks")
    names = [tasks] if isinstance(tasks, str) else list(tasks or [])
    if len(names) == 1 and "," not in names[0]:
        _fill(out, names[0], _as_levels(cfg.get("difficulty")), "", where)


def _from_records(path: Path) -> tuple[str, list[int]]:
    """The one task and the levels of a data file's first records ("" and [] where they do not say)."""
    if not path.exists():
        return "", []
    try:
        rows = [row for _, row in itertools.islice(read_rows(path), _ROWS)]
    except (TinyseekError, OSError, ValueError):
        return "", []
    tasks = {r.get("task") for r in rows if isinstance(r, dict)}
    levels = {r.get("difficulty") for r in rows if isinstance(r, dict)}
    task = tasks.pop() if len(tasks) == 1 and isinstance(next(iter(tasks)), str) else ""
    levels.discard(None)
    return task, (sorted(levels) if all(isinstance(x, int) for x in levels) else [])


def _from_recipe(ckpt: Path, stage: Path, out: TrainedOn) -> None:
    """The run's recipe: how its other stages prompt this checkpoint, and the run's tasks stage."""
    f = stage.parent / "recipe.json"
    try:
        recipe = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return
    stages = recipe.get("stages") or []
    me = ckpt.resolve()
    for s in stages:
        fields_ = s.get("fields") or {}
        model = fields_.get("model")
        if isinstance(model, str) and model and Path(model).resolve() == me and "prompt_template" in fields_:
            _fill(out, "", [], fields_["prompt_template"], f)
            break
    for s in stages:
        fields_ = s.get("fields") or {}
        names = fields_.get("tasks")
        if s.get("kind") == "tasks" and isinstance(names, list) and len(names) == 1:
            levels = _as_levels(fields_.get("difficulty"))  # the tasks stage's [lo, hi] means the levels lo..hi
            _fill(out, names[0], list(range(levels[0], levels[-1] + 1)) if levels else [], "", f)


def write(path: str | Path, info: TrainedOn) -> None:
    """`trained_on.json` into a directory (an export), so the model keeps what it was trained on."""
    write_json(Path(path) / FILE, info.to_dict())
