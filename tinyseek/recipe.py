"""Recipes: a TOML list of stages, run in order into one run directory, resumable at any point.

A recipe file looks like

    name = "demo"
    [[stage]]
    kind = "pretrain"            # tasks | tokenizer | pretrain | sft | prm | grpo | sample | distill | eval
    name = "pretrain"            # its directory: RUN/pretrain/
    config = "pretrain.toml"     # optional: a config file (relative to the recipe), overlaid by the fields below
    steps = 300                  # any field of the stage's own config
    data = "{run}/tasks/sft.jsonl"
    [stage.quick]                # optional: fields overridden under --quick (same stages, smaller)
    steps = 20

`{run}` in a string value is the run directory and `{recipe}` the recipe file's directory, so a stage
names what an earlier one wrote (`init = "{run}/sft/final"`).

Why the runner looks the way it does:
- A stage is complete when its marker `RUN/<name>/stage.json` exists; it is written last, after the
  stage's own outputs, and holds a hash of the stage's resolved config. A complete stage with the same
  config is skipped; a changed config re-runs that stage and every later one.
- A stage directory without a marker was interrupted. Training stages get their own `--resume` (they
  continue from their last checkpoint with optimizer, RNG and data position restored); the others are
  cheap and atomic and simply run again.
- Stages run in this process (one torch import, not nine). Each starts from the same global RNG state
  (seeded from its name), so a stage resumed in a fresh process sees exactly what it would have seen in
  an uninterrupted run: resumed runs end with the same numbers.
- Every kind runs through the one entry of the module that owns it, `run(config, out, resume)`, with its
  config dataclass built by `config.from_dict` from the stage's fields, as `tinyseek KIND` builds it from a
  file and flags (`stage_kind` lists them): a recipe can do nothing a user cannot, and it has the same defaults.
- A recipe is checked whole when it is loaded, before any stage runs: every stage's config is built (a typo in
  the last stage's field fails at once, not minutes into the run), and an error names the file and line the
  field came from (the recipe, an included recipe, a stage's `config` file, or the `--set` flag), with the
  closest known field name for an unknown one.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import re
import shutil
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tinyseek.config import (
    CommandParser,
    ConfigError,
    ModelConfig,
    check_flags,
    from_dict,
    overlay,
    parse_overrides,
    parse_value,
    read_file,
)
from tinyseek.errors import TinyseekError, unknown
from tinyseek.io import write_json

MARKER = "stage.json"  # written last into RUN/<name>/: the stage is complete
RECIPE_COPY = "recipe.json"  # the resolved recipe, written into RUN/ (the report reads the stage list from it)
KINDS = ("tasks", "tokenizer", "pretrain", "sft", "prm", "grpo", "sample", "distill", "eval")
TRAINING_KINDS = ("pretrain", "sft", "prm", "grpo", "distill")  # have --resume
_RESERVED = ("kind", "name", "config", "quick")
_TOP = ("name", "description", "threads", "include", "stage")  # a recipe file's top-level fields


@dataclass
class Stage:
    kind: str
    name: str
    fields: dict[str, Any]  # the stage config: config file overlaid by the inline fields, {run} substituted
    where: str  # "recipe.toml:40: stage 3 (sft)", for error messages
    origins: dict[str, str] = field(default_factory=dict)  # field (or "table.field") -> "file:line" or "--set ..."

    @property
    def config_hash(self) -> str:
        blob = json.dumps({"kind": self.kind, "fields": self.fields}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Recipe:
    name: str
    path: Path
    threads: int = 0  # torch CPU threads for the whole run (0 = torch's default: the machine's cores)
    stages: list[Stage] = field(default_factory=list)
    seed: int | None = None  # the seed of every stage (None: each stage's own)


# ----------------------------------------------------------------------------------------------
# finding and reading recipes


def recipes_dir() -> Path:
    """The directory holding the shipped recipes: `tinyseek/recipes/`, package data, so a wheel installed anywhere
    has them (the repository's `recipes/` is a link to it, for the paths the docs use). TINYSEEK_RECIPES, when
    set, is tried first. The first that holds `demo.toml` wins.
    """
    pkg = Path(__file__).resolve().parent
    candidates = [pkg / "recipes"]
    env = os.environ.get("TINYSEEK_RECIPES")
    if env:
        candidates.insert(0, Path(env))
    for c in candidates:
        if (c / "demo.toml").is_file():
            return c
    raise TinyseekError(f"recipes: no directory with demo.toml among {', '.join(str(c) for c in candidates)}")


def find_recipe(name_or_path: str) -> Path:
    """A path to a TOML file, or the name of a shipped recipe (`demo` -> recipes/demo.toml)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = sorted(f.stem for f in recipes_dir().glob("*.toml") if "stage" in read_file(f))
    if p.suffix != ".toml" and os.sep not in name_or_path:
        if name_or_path in shipped:
            return recipes_dir() / f"{name_or_path}.toml"
    close = difflib.get_close_matches(name_or_path, shipped, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"the shipped recipes: {', '.join(shipped)}"
    raise TinyseekError(f"{name_or_path}: no such recipe file or shipped recipe ({hint})")


def _substitute(value: Any, run: Path, recipe_dir: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{run}", str(run)).replace("{recipe}", str(recipe_dir))
    if isinstance(value, list):
        return [_substitute(v, run, recipe_dir) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, run, recipe_dir) for k, v in value.items()}
    return value


def parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """`--set STAGE.FIELD=VALUE` flags -> {stage: {field: value}}, VALUE read as in a recipe file (`parse_value`);
    `--set pretrain.model.dim=64` sets one key of the stage's [model] table."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, eq, text = item.partition("=")
        stage, dot, name = key.partition(".")
        if not eq or not dot or not stage or not name:
            raise ConfigError(f"--set {item}: expected STAGE.FIELD=VALUE (e.g. grpo.loss_type=dr_grpo)")
        out.setdefault(stage, {})[name] = parse_value(text)
    return out


def load_recipe(
    path: str | Path,
    run: str | Path,
    quick: bool = False,
    seed: int | None = None,
    threads: int | None = None,
    sets: dict[str, dict[str, str]] | None = None,
) -> Recipe:
    """Parse and check a recipe; every error names the file and the stage. `seed` replaces every stage's
    seed (the held-out test set stays the same: its draw has its own `test_seed`); `threads` the recipe's;
    `sets` ({stage name: {field: value}}, from `--set`) goes over the named stages' fields, after --quick.
    A recipe may `include` another (a shipped name or a path beside it): its stages come first, so a recipe that
    extends an experiment runs into the same directory and finds the shared stages complete."""
    path = Path(path)
    data = read_file(path)
    unknown_top = sorted(set(data) - set(_TOP))
    if unknown_top:
        line = _toml_lines(path).get((0, (unknown_top[0],)), 1)
        raise ConfigError(f"{path}:{line}: {unknown('top-level field', unknown_top[0], _TOP)}")
    file_threads = data.get("threads", 0)
    if not isinstance(file_threads, int) or file_threads < 0:
        raise ConfigError(f"{path}: threads must be an integer >= 0 (got {file_threads!r})")
    if threads is not None and threads < 0:
        raise ConfigError(f"--threads: must be an integer >= 0 (got {threads})")
    if seed is not None and seed < 0:
        raise ConfigError(f"--seed: must be an integer >= 0 (got {seed})")
    recipe = Recipe(
        name=str(data.get("name", path.stem)),
        path=path,
        threads=file_threads if threads is None else threads,
        seed=seed,
    )
    recipe.stages = _stages(path, data, Path(run), quick, seed, sets or {}, chain=[path.resolve()])
    seen = [s.name for s in recipe.stages]
    missing = sorted(set(sets or {}) - set(seen))
    if missing:
        raise ConfigError(f"--set {missing[0]}.…: {unknown('stage', missing[0], seen, of='in the recipe')}")
    for stage in recipe.stages:  # the whole recipe, before any stage runs
        check_stage(stage)
    return recipe


def _stages(path: Path, data: dict, run: Path, quick: bool, seed, sets: dict, chain: list[Path]) -> list[Stage]:
    """A recipe file's stages, after those of the recipe it includes."""
    stages: list[Stage] = []
    if "include" in data:
        beside = path.parent / str(data["include"])
        inc = beside if beside.is_file() else find_recipe(str(data["include"]))
        if inc.resolve() in chain:
            raise ConfigError(f"{path}: include {data['include']!r} includes itself")
        stages = _stages(inc, read_file(inc), run, quick, seed, sets, [*chain, inc.resolve()])
    stages_raw = data.get("stage")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError(f"{path}: no [[stage]] tables")
    lines = _toml_lines(path)
    seen = {s.name for s in stages}
    for i, raw in enumerate(stages_raw, 1):
        where = f"{path}:{lines.get((i, ()), '?')}: stage {i}"
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        name = raw.get("name", kind)
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ConfigError(f"{where}: name {name!r} must be a plain directory name")
        if name in seen:
            raise ConfigError(f"{where}: name {name!r} is used by an earlier stage")
        seen.add(name)
        stage = Stage(kind=kind, name=name, fields={}, where=f"{where} ({name})")
        _stage_fields(stage, raw, path, lines, i, quick, sets.get(name, {}))
        if seed is not None:
            stage.fields["seed"] = seed
            stage.origins["seed"] = "--seed"
        stage.fields = _substitute(stage.fields, run, path.parent.resolve())
        stages.append(stage)
    return stages


def _stage_fields(stage: Stage, raw: dict, path: Path, lines: dict, i: int, quick: bool, sets: dict) -> None:
    """The stage's fields, each with where it was written: its config file, then the recipe's inline fields, then
    its [stage.quick] table (with --quick), then --set flags."""

    def note(values: dict, at: Callable[[tuple[str, ...]], str]) -> None:
        for k, v in values.items():
            stage.origins[k] = at((k,))
            for sub in v if isinstance(v, dict) else ():
                stage.origins[f"{k}.{sub}"] = at((k, sub))

    if "config" in raw:
        cfg_path = Path(raw["config"])
        if not cfg_path.is_absolute():
            cfg_path = path.parent / cfg_path
        from_file = read_file(cfg_path)
        cfg_lines = _toml_lines(cfg_path) if cfg_path.suffix == ".toml" else {}
        stage.fields.update(from_file)
        note(from_file, lambda key: f"{cfg_path}:{cfg_lines.get((0, key), cfg_lines.get((0, key[:1]), '?'))}")
    inline = {k: v for k, v in raw.items() if k not in _RESERVED}
    stage.fields.update(inline)
    note(inline, lambda key: f"{path}:{lines.get((i, key), lines.get((i, key[:1]), '?'))}")
    q = raw.get("quick", {})
    if not isinstance(q, dict):
        raise ConfigError(f"{stage.where}: quick must be a table of overrides")
    if quick:
        stage.fields.update(q)
        at = (i, ("quick",))
        note(q, lambda key: f"{path}:{lines.get((i, ('quick', *key)), lines.get(at, '?'))}")
    if sets:
        stage.fields = overlay(stage_kind(stage.kind)[0], stage.fields, sets)
        for k, v in sets.items():
            stage.origins[k] = stage.origins[k.split(".", 1)[0]] = f"--set {stage.name}.{k}={v}"


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+(?:\s*\.\s*[A-Za-z0-9_\-]+)*|\"[^\"]*\")\s*=")


def _toml_lines(path: Path) -> dict[tuple[int, tuple[str, ...]], int]:
    """Where a TOML file writes each key: (stage number (0 before the first [[stage]]), key path) -> line. Keys of
    [stage.quick] or [stage.model] tables come as ("quick", key); a stage's [[stage]] header as (i, ())."""
    out: dict[tuple[int, tuple[str, ...]], int] = {}
    stage, table = 0, ()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        head = _HEADER.match(line)
        if head:
            name = tuple(p.strip().strip('"') for p in head.group(2).split("."))
            if head.group(1) == "[[" and name == ("stage",):
                stage, table = stage + 1, ()
                out[(stage, ())] = n
            else:
                table = name[1:] if name[0] == "stage" and stage else name
            continue
        key = _KEY.match(line)
        if key:
            out.setdefault((stage, (*table, *(p.strip().strip('"') for p in key.group(1).split(".")))), n)
    return out


def check_stage(stage: Stage) -> Any:
    """Build the stage's config as its command would (every field known and valid) and return it; an error names
    the file and line the field came from, the stage, and for an unknown field the closest known one."""
    cls, _ = stage_kind(stage.kind)
    known = [f.name for f in fields(cls)]
    for k in stage.fields:
        if k not in known:
            raise ConfigError(_at(stage, k, unknown("field", k, known, of=f"for a {stage.kind} stage")))
    model = stage.fields.get("model")
    if isinstance(model, dict) and _is_table(cls, "model"):  # ModelConfig overrides: checked by name here
        names = [f.name for f in fields(ModelConfig)]
        for k in model:
            if k not in names:
                raise ConfigError(
                    _at(stage, f"model.{k}", unknown("field", f"model.{k}", [f"model.{n}" for n in names]))
                )
    try:
        return from_dict(cls, stage.fields)
    except ConfigError as e:
        m = re.match(r"([A-Za-z_]\w*)(?:[.\[](\w+))?", str(e))
        key = (f"{m.group(1)}.{m.group(2)}" if m and m.group(2) else m.group(1)) if m else ""
        raise ConfigError(_at(stage, key, str(e))) from None


def _is_table(cls: type, name: str) -> bool:
    """Whether dataclass field `name` of `cls` is a plain dict (a table passed on as it is, like `model`)."""
    tp = typing.get_type_hints(cls).get(name)
    return tp is dict or typing.get_origin(tp) is dict


def _at(stage: Stage, key: str, msg: str) -> str:
    """`file:line: stage 3 (sft): msg`, the line that of `key` (a field, or table.field) where it is known."""
    origin = stage.origins.get(key) or stage.origins.get(key.split(".", 1)[0])
    where = stage.where.split(": ", 1)[1] if origin else stage.where
    return f"{origin}: {where}: {msg}" if origin else f"{where}: {msg}"


# ----------------------------------------------------------------------------------------------
# one stage: its kind's config dataclass and `run(config, out, resume)`, from the module that owns it


def stage_kind(kind: str) -> tuple[type, Callable[[Any, Path, bool], Any]]:
    """(config dataclass, run) of a stage kind: what `tinyseek KIND` builds from its flags and runs."""
    from tinyseek import evaluate, tokenizer
    from tinyseek.tasks import stage as tasks_stage
    from tinyseek.train import distill, grpo, pretrain, prm, rejection, sft

    cls, module = {
        "tasks": (tasks_stage.TasksConfig, tasks_stage),
        "tokenizer": (tokenizer.TokenizerConfig, tokenizer),
        "pretrain": (pretrain.PretrainConfig, pretrain),
        "sft": (sft.SFTConfig, sft),
        "prm": (prm.PrmConfig, prm),
        "grpo": (grpo.GrpoConfig, grpo),
        "sample": (rejection.SampleConfig, rejection),
        "distill": (distill.DistillConfig, distill),
        "eval": (evaluate.EvalConfig, evaluate),
    }[kind]
    return cls, module.run


def stage_config(stage: Stage) -> Any:
    """The stage's config, built as its command builds it (`config.from_dict`); an error names the stage and the
    file and line of the field."""
    return check_stage(stage)


def _has_checkpoint(out: Path) -> bool:
    ck = out / "checkpoints"
    return ck.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in ck.iterdir())


def run_stage(stage: Stage, out: Path, resume: bool) -> None:
    """Run one stage into `out`. A training stage asked to resume continues from its last checkpoint; one
    interrupted before its first checkpoint, and every other kind, starts over in a clean directory."""
    _, run = stage_kind(stage.kind)
    cfg = stage_config(stage)
    try:
        resume = resume and stage.kind in TRAINING_KINDS and _has_checkpoint(out)
        if not resume and out.exists():
            shutil.rmtree(out)
        run(cfg, out, resume)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(stage.where) else f"{stage.where}: {msg}") from None


def run_recipe_stage(kind: str, argv: list[str]) -> int | None:
    """`tinyseek KIND --config RECIPE --out RUN [--quick] [--resume] [--field value ...]`: when --config names a
    recipe rather than a stage config, the command runs the recipe's one stage of that kind ({run} = RUN, --quick
    applies its quick fields), the flags over its fields, into RUN. None for any other argv: the command's own."""
    ap = argparse.ArgumentParser(prog=f"tinyseek {kind}", add_help=False, allow_abbrev=False)
    ap.add_argument("--config")
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--resume", action="store_true")
    a, rest = ap.parse_known_args(argv)
    if not a.config or not a.out or {"-h", "--help"} & set(rest) or "stage" not in read_file(a.config):
        return None
    stages = [s for s in load_recipe(a.config, a.out, quick=a.quick).stages if s.kind == kind]
    if len(stages) != 1:
        raise ConfigError(
            f"{a.config}: a recipe given to tinyseek {kind} must hold exactly one {kind} stage (it has {len(stages)})"
        )
    cls, run = stage_kind(kind)
    flags = parse_overrides(rest)
    check_flags(cls, flags, f"tinyseek {kind}")
    stage = stages[0]
    stage.fields = overlay(cls, stage.fields, flags)
    stage.origins.update({k: f"--{k.replace('_', '-')}" for k in flags})
    run(check_stage(stage), Path(a.out), a.resume)
    return 0


# ----------------------------------------------------------------------------------------------
# the runner


def read_marker(out: Path) -> dict | None:
    f = out / MARKER
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # a torn marker (should not happen: it is renamed into place) counts as not complete


def _write_marker(out: Path, stage: Stage, wall_s: float, resumed: bool = False) -> None:
    data = {
        "kind": stage.kind,
        "name": stage.name,
        "config_hash": stage.config_hash,
        "wall_s": round(wall_s, 3),
        "resumed": resumed,  # then wall_s is the last attempt's only
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(out / MARKER, data)


def run_recipe(recipe: Recipe, run: str | Path, log: Callable[[str], None] = print) -> list[dict]:
    """Run every stage in order; returns one status dict per stage (name, kind, status, wall_s)."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    import torch

    from tinyseek.train.loop import seed_everything

    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    threads = torch.get_num_threads()
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    note = ""
    if threads > 1 and busy >= (os.cpu_count() or 1):
        # OpenMP threads spin-wait on each other when other jobs hold the cores: measured 10-30x slower
        note = f"; the machine is busy (load average {busy:.1f}): --threads 1 is much faster then"
    log(f"torch threads: {threads}{' (the machine default)' if not recipe.threads else ''}{note}")
    resolved = {
        "name": recipe.name,
        "threads": recipe.threads,
        "recipe": str(recipe.path),
        "stages": [
            {"kind": s.kind, "name": s.name, "config_hash": s.config_hash, "fields": s.fields} for s in recipe.stages
        ],
    }
    write_json(run / RECIPE_COPY, resolved)
    statuses = []
    dirty = False  # an earlier stage re-ran: everything after it is stale
    for i, stage in enumerate(recipe.stages, 1):
        out = run / stage.name
        marker = read_marker(out)
        head = f"[{i}/{len(recipe.stages)}] {stage.kind} -> {out}"
        if marker and marker.get("config_hash") == stage.config_hash and not dirty:
            log(f"{head}: complete, skipped")
            statuses.append(
                {"name": stage.name, "kind": stage.kind, "status": "skipped", "wall_s": marker.get("wall_s")}
            )
            continue
        resume = out.exists() and marker is None and not dirty
        if marker is not None or (out.exists() and dirty):  # complete but stale: start it over
            shutil.rmtree(out)
            resume = False
        log(f"{head}: {'resuming' if resume else 'running'}")
        # the same global RNG state at the start of a stage, whether the process ran earlier stages or not
        key = stage.name if recipe.seed is None else f"{stage.name}|{recipe.seed}"
        seed_everything(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
        t0 = time.perf_counter()
        run_stage(stage, out, resume)
        wall = time.perf_counter() - t0
        if not out.is_dir():
            raise TinyseekError(f"{stage.where}: the stage finished but wrote no {out}")
        _write_marker(out, stage, wall, resume)
        dirty = True
        statuses.append(
            {"name": stage.name, "kind": stage.kind, "status": "resumed" if resume else "ran", "wall_s": round(wall, 3)}
        )
    return statuses


# ----------------------------------------------------------------------------------------------
# commands


def _run_and_report(recipe_path: Path, out: Path, quick: bool, report: bool, seed=None, threads=None, sets=None) -> int:
    recipe = load_recipe(recipe_path, out, quick=quick, seed=seed, threads=threads, sets=sets)
    t0 = time.perf_counter()
    run_recipe(recipe, out)
    print(
        f"recipe {recipe.name}: all {len(recipe.stages)} stages complete in {out} ({time.perf_counter() - t0:.1f} s "
        "this invocation)"
    )
    if report:
        from tinyseek.report.card import write_report

        rep = write_report(out)
        print(rep["console"])
    return 0


def cli_run(argv: list[str]) -> int:
    p = CommandParser(
        prog="tinyseek run",
        description="Run a recipe (a TOML list of stages) into a run directory; "
        "complete stages are skipped and an interrupted one resumes.",
    )
    p.add_argument("recipe", help="a recipe TOML file, or the name of a shipped recipe (demo)")
    p.add_argument("--out", required=True, help="the run directory; stage NAME writes OUT/NAME/")
    p.add_argument(
        "--quick", action="store_true", help="apply each stage's [stage.quick] overrides (same stages, smaller)"
    )
    p.add_argument("--no-report", action="store_true", help="do not write the report card at the end")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="STAGE.FIELD=VALUE",
        help="change one stage's field for this run (repeatable; VALUE in TOML), e.g. --set grpo.loss_type=dr_grpo",
    )
    _seed_threads_flags(p)
    a = p.parse_args(argv)
    sets = parse_sets(a.set)
    return _run_and_report(find_recipe(a.recipe), Path(a.out), a.quick, not a.no_report, a.seed, a.threads, sets)


def _seed_threads_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="the seed of every stage (data draw, model init, sampling); the held-out test set stays the same",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: the recipe's, else the machine's cores; results are bitwise "
        "reproducible for one thread count)",
    )


def cli_demo(argv: list[str]) -> int:
    p = CommandParser(
        prog="tinyseek demo",
        description="The whole R1 recipe in miniature (tasks, tokenizer, MoE teacher "
        "pretrain, cold-start SFT, GRPO, rejection sampling, distillation into a dense student, "
        "evaluation), ending in a report card. Same as `tinyseek run demo --out OUT`.",
    )
    p.add_argument(
        "--out", default="runs/demo", help="the run directory (default runs/demo; runs/demo-quick with --quick)"
    )
    p.add_argument(
        "--quick", action="store_true", help="the same stages, much smaller (about a minute; used by the tests)"
    )
    _seed_threads_flags(p)
    a = p.parse_args(argv)
    out = a.out
    if a.quick and a.out == "runs/demo":
        out = "runs/demo-quick"
    return _run_and_report(recipes_dir() / "demo.toml", Path(out), a.quick, True, a.seed, a.threads)
