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
- Training kinds are driven through their commands (`cli_pretrain(["--config", F, "--out", D])`), the
  same path a user types, so a recipe can do nothing a user cannot. `tasks` and `eval` are small and live
  here, because the recipe needs them to write fixed files (`RUN/tasks/*.jsonl`, `RUN/<eval>/eval.json`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyseek.config import ConfigError, read_file, write_toml
from tinyseek.errors import TinyseekError
from tinyseek.io import atomic_dir, write_json, write_jsonl

MARKER = "stage.json"  # written last into RUN/<name>/: the stage is complete
RECIPE_COPY = "recipe.json"  # the resolved recipe, written into RUN/ (the report reads the stage list from it)
KINDS = ("tasks", "tokenizer", "pretrain", "sft", "prm", "grpo", "sample", "distill", "eval")
TRAINING_KINDS = ("pretrain", "sft", "prm", "grpo", "distill")  # have --resume
_RESERVED = ("kind", "name", "config", "quick")


@dataclass
class Stage:
    kind: str
    name: str
    fields: dict[str, Any]  # the stage config: config file overlaid by the inline fields, {run} substituted
    where: str  # "recipe.toml stage 3 (sft)", for error messages

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
    if p.suffix != ".toml" and os.sep not in name_or_path:
        shipped = recipes_dir() / f"{name_or_path}.toml"
        if shipped.is_file():
            return shipped
    raise TinyseekError(f"{name_or_path}: no such recipe file")


def _substitute(value: Any, run: Path, recipe_dir: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{run}", str(run)).replace("{recipe}", str(recipe_dir))
    if isinstance(value, list):
        return [_substitute(v, run, recipe_dir) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, run, recipe_dir) for k, v in value.items()}
    return value


def load_recipe(
    path: str | Path, run: str | Path, quick: bool = False, seed: int | None = None, threads: int | None = None
) -> Recipe:
    """Parse and check a recipe; every error names the file and the stage. `seed` replaces every stage's
    seed (the held-out test set stays the same: its draw has its own `test_seed`); `threads` the recipe's."""
    path = Path(path)
    data = read_file(path)
    run = Path(run)
    stages_raw = data.get("stage")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise ConfigError(f"{path}: no [[stage]] tables")
    unknown_top = set(data) - {"name", "description", "stage", "threads"}
    if unknown_top:
        raise ConfigError(
            f"{path}: unknown top-level field {sorted(unknown_top)[0]!r} (known: name, description, threads, stage)"
        )
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
    seen: set[str] = set()
    for i, raw in enumerate(stages_raw, 1):
        where = f"{path} stage {i}"
        kind = raw.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        name = raw.get("name", kind)
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ConfigError(f"{where}: name {name!r} must be a plain directory name")
        if name in seen:
            raise ConfigError(f"{where}: name {name!r} is used by an earlier stage")
        seen.add(name)
        where = f"{path} stage {i} ({name})"
        fields_: dict[str, Any] = {}
        if "config" in raw:
            cfg_path = Path(raw["config"])
            if not cfg_path.is_absolute():
                cfg_path = path.parent / cfg_path
            fields_.update(read_file(cfg_path))
        fields_.update({k: v for k, v in raw.items() if k not in _RESERVED})
        q = raw.get("quick", {})
        if not isinstance(q, dict):
            raise ConfigError(f"{where}: quick must be a table of overrides")
        if quick:
            fields_.update(q)
        if seed is not None:
            fields_["seed"] = seed
        fields_ = _substitute(fields_, run, path.parent.resolve())
        recipe.stages.append(Stage(kind=kind, name=name, fields=fields_, where=where))
    return recipe


# ----------------------------------------------------------------------------------------------
# stage runners: (stage, out_dir, resume) -> None


def _write_config(stage: Stage, out: Path) -> Path:
    """The stage's fields as a TOML file beside its run dir (not inside: the stage may build that atomically)."""
    cfg_dir = out.parent / ".recipe"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    f = cfg_dir / f"{stage.name}.toml"
    write_toml(stage.fields, f)
    return f


def _command(kind: str) -> Callable[[list[str]], int]:
    """The function behind `tinyseek KIND`: a stage runs exactly what a user would type."""
    from tinyseek.tokenizer import cli_tokenizer
    from tinyseek.train.distill import cli_distill
    from tinyseek.train.grpo import cli_grpo
    from tinyseek.train.pretrain import cli_pretrain
    from tinyseek.train.prm import cli_prm_train
    from tinyseek.train.sample import cli_sample
    from tinyseek.train.sft import cli_sft

    return {
        "tokenizer": cli_tokenizer,
        "pretrain": cli_pretrain,
        "sft": cli_sft,
        "prm": cli_prm_train,
        "grpo": cli_grpo,
        "sample": cli_sample,
        "distill": cli_distill,
    }[kind]


@contextlib.contextmanager
def stage_argv(kind: str, argv: list[str]) -> Iterator[list[str]]:
    """`tinyseek KIND --config RECIPE --out RUN [--quick]`: when --config names a recipe rather than a stage config,
    the command runs on the recipe's one stage of that kind ({run} = the --out directory, --quick applies its
    quick fields), written to a temporary stage config for the duration. Any other argv passes through."""
    if "--config" not in argv or "--out" not in argv:
        yield argv
        return
    i, j = argv.index("--config"), argv.index("--out")
    if i + 1 >= len(argv) or j + 1 >= len(argv) or "stage" not in read_file(argv[i + 1]):
        yield argv
        return
    stages = [s for s in load_recipe(argv[i + 1], argv[j + 1], quick="--quick" in argv).stages if s.kind == kind]
    if len(stages) != 1:
        raise ConfigError(
            f"{argv[i + 1]}: a recipe given to tinyseek {kind} must hold exactly one {kind} stage (it has "
            f"{len(stages)})"
        )
    fd, tmp = tempfile.mkstemp(suffix=".toml", prefix=f"{kind}-stage-")
    os.close(fd)
    try:
        write_toml(stages[0].fields, tmp)
        rest = [a for a in argv if a != "--quick"]
        rest[rest.index("--config") + 1] = tmp
        yield rest
    finally:
        os.unlink(tmp)


def _has_checkpoint(out: Path) -> bool:
    ck = out / "checkpoints"
    return ck.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in ck.iterdir())


def _run_training(stage: Stage, out: Path, resume: bool) -> None:
    argv = ["--config", str(_write_config(stage, out)), "--out", str(out)]
    if resume and _has_checkpoint(out):
        argv.append("--resume")
    elif out.exists():
        shutil.rmtree(out)  # interrupted before its first checkpoint: start clean
    rc = _command(stage.kind)(argv)
    if rc:
        raise TinyseekError(f"{stage.where}: tinyseek {stage.kind} exited with status {rc}")


def _run_sample(stage: Stage, out: Path, resume: bool) -> None:
    if out.exists():
        shutil.rmtree(out)
    _run_training(stage, out, resume=False)


TOKENIZER_FIELDS = ("corpus", "tasks", "n_per_task", "vocab_size", "seed")


def _run_tokenizer(stage: Stage, out: Path, resume: bool) -> None:
    """`tinyseek tokenizer` with the fields as flags: corpus (a file or list), tasks, n_per_task, vocab_size, seed."""
    argv = []
    for k, v in stage.fields.items():
        if k not in TOKENIZER_FIELDS:
            raise ConfigError(
                f"{stage.where}: unknown field {k!r} for a tokenizer stage (known: {', '.join(TOKENIZER_FIELDS)})"
            )
        flag = "--" + k.replace("_", "-")
        if k == "corpus":
            argv += [flag, *map(str, v if isinstance(v, list) else [v])]
        else:
            argv += [flag, ",".join(map(str, v)) if isinstance(v, list) else str(v)]
    if out.exists():
        shutil.rmtree(out)
    rc = _command("tokenizer")(argv + ["--out", str(out)])
    if rc:
        raise TinyseekError(f"{stage.where}: tinyseek tokenizer exited with status {rc}")


TASKS_FIELDS = {
    "tasks": ["arithmetic"],
    "seed": 0,
    "difficulty": None,
    "splits": {},
    "test": 200,
    "corpus": {},
    "corpus_difficulty": None,
    "corpus_format": "plain",
    "shares": {},
    "test_seed": 0,
}


def _difficulty(value: Any, where: str) -> Any:
    """TOML has no tuples: [lo, hi] means the range lo..hi (tinyseek.tasks takes a tuple for that)."""
    if isinstance(value, list):
        if len(value) != 2 or not all(isinstance(v, int) for v in value):
            raise ConfigError(f"{where}: a difficulty range is [lo, hi] (got {value!r})")
        return tuple(value)
    return value


def role_parts(splits: dict[str, int], shares: dict[str, float], corpus: bool, where: str) -> dict[str, tuple]:
    """Each role's slice (lo, hi) of the train side: the named splits, and "corpus" when there is one.

    `shares` gives each role its fraction of the train side; by default the splits share it in proportion to
    their counts, after a fifth for the corpus. A problem's role is decided by its hash alone (see
    tinyseek.tasks.base), so the roles never share a problem, whatever the seed.
    """
    roles = [*splits, *(["corpus"] if corpus else [])]
    for k, n in splits.items():
        if n <= 0:
            raise ConfigError(
                f"{where}: splits.{k}: an empty split ({n} problems); give it a positive count or drop it"
            )
    if shares:
        extra = sorted(set(shares) - set(roles))
        if extra:
            raise ConfigError(f"{where}: shares.{extra[0]}: no such split (splits: {', '.join(roles)})")
        missing = [k for k in roles if k not in shares]
        if missing:
            raise ConfigError(f"{where}: shares.{missing[0]}: every split needs a share when shares are given")
        frac = {k: float(shares[k]) for k in roles}
    else:
        corpus_share = 0.2 if corpus else 0.0
        total = sum(splits.values())
        frac = {k: (1 - corpus_share) * n / total for k, n in splits.items()} if total else {}
        if corpus:
            frac["corpus"] = corpus_share
    for k, v in frac.items():
        if not 0 < v <= 1:
            raise ConfigError(f"{where}: shares.{k}: must be in (0, 1] (got {v!r}); a role without problems is empty")
    if sum(frac.values()) > 1 + 1e-9:
        raise ConfigError(f"{where}: shares: the roles overlap (their shares add up to {sum(frac.values()):g} > 1)")
    parts, lo = {}, 0.0
    for k in roles:
        parts[k] = (lo, min(1.0, lo + frac[k]))
        lo = parts[k][1]
    return parts


def _run_tasks(stage: Stage, out: Path, resume: bool) -> None:
    """Problem sets whose roles are disjoint: RUN/tasks/<split>.jsonl per named split, test.jsonl, corpus.txt,
    roles.json.

    Fields: tasks (names), splits (name -> count of distinct problems), test (count, from the held-out side),
    seed, difficulty (an int or [lo, hi]), corpus (task -> count: worked problems, prompt + completion, as
    blank-line separated documents in corpus.txt for the tokenizer and pretraining; drawn with repeats),
    corpus_difficulty, corpus_format, shares (role -> fraction of the train side; see `role_parts`), test_seed
    (the held-out draw's own seed, so that every run seed is measured on the same test set). Counts
    are per task. One hash of each problem decides its role: the held-out side (tinyseek.tasks), then one
    slice of the train side per split and one for the corpus, so the test set, the corpus and every split
    are disjoint sets of problems. A split whose slice cannot supply its count raises, naming the split,
    before anything is written. roles.json records each role's slice and count for the report.
    """
    f = {**TASKS_FIELDS, **stage.fields}
    unknown = set(f) - set(TASKS_FIELDS)
    if unknown:
        raise ConfigError(
            f"{stage.where}: unknown field {sorted(unknown)[0]!r} for a tasks stage (known: {', '.join(TASKS_FIELDS)})"
        )
    from tinyseek import tasks as T

    names = f["tasks"] if isinstance(f["tasks"], list) else [f["tasks"]]
    for n in [*names, *f["corpus"]]:
        T.get(n, field=f"{stage.where}: tasks")
    splits: dict[str, int] = {k: int(v) for k, v in f["splits"].items()}
    if "test" in splits or "corpus" in splits:
        raise ConfigError(f"{stage.where}: splits: 'test' and 'corpus' are reserved names")
    parts = role_parts(splits, dict(f["shares"]), bool(f["corpus"]), stage.where)
    diff = _difficulty(f["difficulty"], f"{stage.where}: difficulty")
    out_recs: dict[str, list[dict]] = {k: [] for k in splits}
    test: list[dict] = []
    for name in names:
        task = T.get(name)
        for k, n in splits.items():
            # distinct problems within a split, too: its interval counts problems, not repeats
            try:
                out_recs[k] += task.generate(
                    n, seed=int(f["seed"]), split="train", difficulty=diff, unique=True, part=parts[k]
                )
            except TinyseekError as e:
                raise ConfigError(f"{stage.where}: splits.{k}: {e}; or give the split a larger share") from None
        # the held-out set has its own seed: runs with different seeds are measured on the same problems
        test += task.generate(int(f["test"]), seed=int(f["test_seed"]), split="test", difficulty=diff, unique=True)
    cdiff = _difficulty(f["corpus_difficulty"], f"{stage.where}: corpus_difficulty")
    if f["corpus_format"] not in ("plain", "chat"):
        raise ConfigError(f"{stage.where}: corpus_format must be plain or chat (got {f['corpus_format']!r})")
    corpus = []
    if f["corpus"]:
        try:
            corpus = T.documents(f["corpus"], int(f["seed"]), "train", f["corpus_format"], cdiff, part=parts["corpus"])
        except TinyseekError as e:
            raise ConfigError(f"{stage.where}: corpus: {e}") from None
    roles = {k: {"part": list(parts[k]), "problems": len(out_recs[k])} for k in splits}
    if corpus:
        roles["corpus"] = {"part": list(parts["corpus"]), "documents": len(corpus)}
    roles["test"] = {"part": "held-out side", "problems": len(test)}
    with atomic_dir(out) as tmp:
        for k, recs in out_recs.items():
            write_jsonl(tmp / f"{k}.jsonl", recs)
        write_jsonl(tmp / "test.jsonl", test)
        write_json(tmp / "roles.json", roles)
        if corpus:
            (tmp / "corpus.txt").write_text("\n\n".join(corpus) + "\n", encoding="utf-8")


EVAL_FIELDS = {
    "model": None,
    "data": None,
    "n": 0,
    "samples": 8,  # R1's evaluation protocol (DeepSeek-R1 §3.1): k >= 4 samples at T = 0.6, top-p 0.95
    "temperature": 0.6,
    "top_p": 0.95,
    "max_new_tokens": 128,
    "seed": 0,
    "greedy": True,
    "batch": 64,
    "system": "",
}


def _run_eval(stage: Stage, out: Path, resume: bool) -> None:
    """K samples per held-out problem (pass@1, pass@k, cons@K with 95% intervals) and greedy -> eval.json.

    Fields: model (checkpoint dir), data (records JSONL, e.g. {run}/tasks/test.jsonl), n (first n records;
    0 = all), samples (K), temperature, top_p, max_new_tokens, seed (sampling), greedy (also decode at
    temperature 0), batch (sequences decoded together), system (a system message).
    eval.json holds tinyseek.evaluate's result for the sampled run, with the greedy run under "greedy".
    """
    f = {**EVAL_FIELDS, **stage.fields}
    unknown = set(f) - set(EVAL_FIELDS)
    if unknown:
        raise ConfigError(
            f"{stage.where}: unknown field {sorted(unknown)[0]!r} for an eval stage (known: {', '.join(EVAL_FIELDS)})"
        )
    for k in ("model", "data"):
        if not f[k]:
            raise ConfigError(f"{stage.where}: an eval stage needs {k}")
    from tinyseek import tasks
    from tinyseek.evaluate import evaluate
    from tinyseek.inference.load import load_engine
    from tinyseek.inference.sampling import SamplingParams

    records = tasks.load_records(f["data"])
    if int(f["n"]) > 0:
        records = records[: int(f["n"])]
    samples, batch = int(f["samples"]), int(f["batch"])
    if samples < 1 or batch < 1:
        raise ConfigError(f"{stage.where}: samples and batch must be >= 1")
    engine = load_engine(f["model"], max_batch=max(batch, samples))
    chunk = max(1, batch // samples)  # problems per generate call: their K samples fill the batch
    params = SamplingParams(
        temperature=float(f["temperature"]),
        top_p=float(f["top_p"]),
        max_new_tokens=int(f["max_new_tokens"]),
        seed=int(f["seed"]),
    )
    t0 = time.perf_counter()
    result = {
        "model": str(f["model"]),
        "data": str(f["data"]),
        "n": len(records),
        **evaluate(engine, records, samples, params, system=f["system"], chunk=chunk),
    }
    gen = sum(sum(p["lengths"]) for p in result["problems"])
    if f["greedy"]:
        g = evaluate(
            engine,
            records,
            1,
            SamplingParams(temperature=0.0, max_new_tokens=int(f["max_new_tokens"]), seed=int(f["seed"])),
            system=f["system"],
            keep_text=False,
            chunk=batch,
        )
        gen += sum(sum(p["lengths"]) for p in g["problems"])
        result["greedy"] = g
    result["generated_tokens"] = gen
    result["wall_s"] = round(time.perf_counter() - t0, 3)
    with atomic_dir(out) as tmp:
        write_json(tmp / "eval.json", result, indent=1)


RUNNERS: dict[str, Callable[[Stage, Path, bool], None]] = {
    "tasks": _run_tasks,
    "tokenizer": _run_tokenizer,
    "pretrain": _run_training,
    "sft": _run_training,
    "prm": _run_training,
    "grpo": _run_training,
    "distill": _run_training,
    "sample": _run_sample,
    "eval": _run_eval,
}


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


def _seed_everything(name: str) -> None:
    """The same global RNG state at the start of a stage, whether the process ran earlier stages or not."""
    import torch

    seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


def run_recipe(recipe: Recipe, run: str | Path, log: Callable[[str], None] = print) -> list[dict]:
    """Run every stage in order; returns one status dict per stage (name, kind, status, wall_s)."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    import torch

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
        _seed_everything(stage.name if recipe.seed is None else f"{stage.name}|{recipe.seed}")
        t0 = time.perf_counter()
        try:
            RUNNERS[stage.kind](stage, out, resume)
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith(str(recipe.path)) else f"{stage.where}: {msg}") from None
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


def _run_and_report(recipe_path: Path, out: Path, quick: bool, report: bool, seed=None, threads=None) -> int:
    recipe = load_recipe(recipe_path, out, quick=quick, seed=seed, threads=threads)
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
    p = argparse.ArgumentParser(
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
    _seed_threads_flags(p)
    a = p.parse_args(argv)
    return _run_and_report(find_recipe(a.recipe), Path(a.out), a.quick, not a.no_report, a.seed, a.threads)


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
    p = argparse.ArgumentParser(
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
