"""Reading a run directory for the report: the stage list and each stage's files, as plain dicts.

`load_run` reads `RUN/recipe.json` and, in each stage directory, `stage.json`, `summary.json`, `metrics.jsonl`
and `eval.json`; the other helpers read what a section needs beyond those (a checkpoint's config, a data file's
row count) and name paths relative to the run, so a card read on another machine shows no local directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinyseek.errors import TinyseekError

REPORT_DIR = "report"  # RUN/report/: report.json, report.md, the plots

RL_KEYS = {  # first key present wins; the GRPO stage's metrics.jsonl names
    "reward": ("reward", "reward_mean", "rewards/mean"),
    "accuracy": ("accuracy", "acc", "reward_accuracy", "accuracy_reward"),
    "response length": (
        "len_mean",
        "completion_len",
        "response_len",
        "completion_length",
        "mean_completion_len",
        "length",
    ),
}


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TinyseekError(f"{path}: invalid JSON ({e})") from None


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl as a list of dicts; a torn last line (a killed writer) is ignored, another bad line is an error."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines):
                break
            raise TinyseekError(f"{path}:{i}: invalid JSON line") from None
    return out


def stage_of(path: Any, run: Path) -> str | None:
    """Which stage of the run a checkpoint path belongs to (RUN/<stage>/...), or None."""
    if not isinstance(path, str) or not path:
        return None
    try:
        rel = Path(path).resolve().relative_to(run.resolve())
    except ValueError:
        return None
    return rel.parts[0] if rel.parts else None


def model_params(ckpt: Path) -> dict | None:
    from tinyseek import cost
    from tinyseek.checkpoint import read_config

    try:
        cfg = read_config(ckpt)
    except TinyseekError:
        return None
    return {
        "total": cost.total_params(cfg),
        "active": cost.active_params(cfg),
        "moe": cfg.is_moe,
        "dim": cfg.dim,
        "n_layers": cfg.n_layers,
        "vocab_size": cfg.vocab_size,
        "n_routed_experts": cfg.n_routed_experts,
        "n_activated_experts": cfg.n_activated_experts,
        "mtp_depth": cfg.mtp_depth,
    }


def load_run(run: str | Path) -> dict:
    """Everything the report needs, read from disk: the stage list and each stage's files."""
    run = Path(run)
    recipe = read_json(run / "recipe.json")
    if recipe is None:
        raise TinyseekError(f"{run}: not a recipe run directory (no recipe.json; run `tinyseek run` first)")
    stages = []
    for s in recipe["stages"]:
        d = run / s["name"]
        stages.append(
            {
                "name": s["name"],
                "kind": s["kind"],
                "fields": s.get("fields", {}),
                "dir": d,
                "marker": read_json(d / "stage.json"),
                "summary": read_json(d / "summary.json"),
                "metrics": read_metrics(d / "metrics.jsonl"),
                "eval": read_json(d / "eval.json"),
            }
        )
    return {"run": run, "recipe": recipe, "stages": stages}


def eval_data(ev: dict) -> str:
    """What an eval.json measured: the stem of its records file (`test`, `ood`), else its task's name."""
    return Path(str(ev.get("data") or ev.get("task"))).stem


def evals_by_model(data: dict) -> dict:
    """The run's eval.json files by the stage whose checkpoint they evaluated (the start of a stage that trains it):
    a checkpoint evaluated on several sets is represented by its first evaluation in the recipe (the held-out test
    set; a later out-of-distribution one is not the start of a curve)."""
    out: dict = {}
    for s in data["stages"]:
        if s["eval"]:
            out.setdefault(stage_of(s["eval"].get("model"), data["run"]), s["eval"])
    return out


def count_lines(path: Any) -> int | None:
    """Rows of a JSONL file, or documents (blank-line separated paragraphs) of a .txt file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, TypeError, UnicodeDecodeError):
        return None
    if Path(path).suffix == ".txt":
        return sum(1 for para in text.split("\n\n") if para.strip())
    return sum(1 for line in text.splitlines() if line.strip())


def short_path(path: Any, run: Path) -> str:
    """`path` relative to the run directory where it lies inside it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(run.resolve()))
    except (ValueError, TypeError):
        return str(path)


def metric_value(result: dict, metric: str, part: str = "value") -> Any:
    """A metric of tinyseek.evaluate's result ({"pass@1": {"value": .., "ci95": [lo, hi]}, ...}), or None."""
    m = result.get(metric)
    return m.get(part) if isinstance(m, dict) else None
