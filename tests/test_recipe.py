"""The recipe runner: order, skipping complete stages, resuming an interrupted one, re-running stale ones.

Stage runners are replaced by small fakes that record their calls, so these tests check the runner's
bookkeeping alone; tests/test_demo.py runs the real stages end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinyseek import recipe as R
from tinyseek.errors import TinyseekError

RECIPE = """
name = "t"
[[stage]]
kind = "tasks"
name = "data"
n = 3
[[stage]]
kind = "pretrain"
name = "base"
steps = 10
data = "{run}/data/x.txt"
[stage.quick]
steps = 2
[[stage]]
kind = "sft"
name = "tuned"
init = "{run}/base/final"
"""


@pytest.fixture
def calls(monkeypatch):
    """Fake runners: each writes OUT/done.txt with its fields; 'fail_at' makes one raise mid-stage."""
    log: list[tuple[str, bool, dict]] = []
    state = {"fail_at": None}

    def fake(stage, out, resume):
        log.append((stage.name, resume, dict(stage.fields)))
        out.mkdir(parents=True, exist_ok=True)
        (out / "partial.txt").write_text("started")
        if state["fail_at"] == stage.name:
            raise KeyboardInterrupt  # as if the user pressed ^C (or the process was killed) mid-stage
        (out / "done.txt").write_text(json.dumps(stage.fields))

    for k in R.KINDS:
        monkeypatch.setitem(R.RUNNERS, k, fake)
    log_state = type("S", (), {})()
    log_state.log, log_state.state = log, state
    return log_state


def _recipe(tmp_path: Path, text: str = RECIPE) -> Path:
    p = tmp_path / "r.toml"
    p.write_text(text)
    return p


def test_runs_in_order_with_substitution_and_quick(tmp_path, calls):
    run = tmp_path / "run"
    st = R.run_recipe(R.load_recipe(_recipe(tmp_path), run), run, log=lambda s: None)
    assert [s["status"] for s in st] == ["ran"] * 3
    assert [c[0] for c in calls.log] == ["data", "base", "tuned"]
    assert calls.log[1][2] == {"steps": 10, "data": f"{run}/data/x.txt"}
    assert calls.log[2][2]["init"] == f"{run}/base/final"
    for name in ("data", "base", "tuned"):
        assert R.read_marker(run / name)["name"] == name
    stages = json.loads((run / R.RECIPE_COPY).read_text())["stages"]
    assert [s["kind"] for s in stages] == ["tasks", "pretrain", "sft"]

    quick = R.load_recipe(_recipe(tmp_path), run, quick=True)
    assert quick.stages[1].fields["steps"] == 2


def test_complete_stages_are_skipped(tmp_path, calls):
    run = tmp_path / "run"
    rec = R.load_recipe(_recipe(tmp_path), run)
    R.run_recipe(rec, run, log=lambda s: None)
    calls.log.clear()
    st = R.run_recipe(rec, run, log=lambda s: None)
    assert [s["status"] for s in st] == ["skipped"] * 3
    assert calls.log == []


def test_interrupted_stage_resumes_and_later_stages_run(tmp_path, calls):
    run = tmp_path / "run"
    rec = R.load_recipe(_recipe(tmp_path), run)
    calls.state["fail_at"] = "base"
    with pytest.raises(KeyboardInterrupt):
        R.run_recipe(rec, run, log=lambda s: None)
    assert R.read_marker(run / "data") is not None
    assert R.read_marker(run / "base") is None  # the marker is written last: not complete
    assert not (run / "tuned").exists()
    calls.state["fail_at"] = None
    calls.log.clear()
    st = R.run_recipe(rec, run, log=lambda s: None)
    assert [s["status"] for s in st] == ["skipped", "resumed", "ran"]
    assert [(c[0], c[1]) for c in calls.log] == [("base", True), ("tuned", False)]


def test_changed_config_reruns_that_stage_and_every_later_one(tmp_path, calls):
    run = tmp_path / "run"
    R.run_recipe(R.load_recipe(_recipe(tmp_path), run), run, log=lambda s: None)
    calls.log.clear()
    st = R.run_recipe(R.load_recipe(_recipe(tmp_path), run, quick=True), run, log=lambda s: None)
    assert [s["status"] for s in st] == ["skipped", "ran", "ran"]
    assert [(c[0], c[1]) for c in calls.log] == [("base", False), ("tuned", False)]
    assert json.loads((run / "base" / "done.txt").read_text())["steps"] == 2


@pytest.mark.parametrize(
    "text, needle",
    [
        ('[[stage]]\nkind = "bake"\n', "stage 1: kind 'bake'"),
        ('[[stage]]\nkind = "sft"\n[[stage]]\nkind = "sft"\n', "stage 2: name 'sft' is used"),
        ('[[stage]]\nkind = "sft"\nname = "../x"\n', "must be a plain directory name"),
        ('name = "x"\n', "no [[stage]] tables"),
        ('nmae = "x"\n[[stage]]\nkind = "sft"\n', "unknown top-level field 'nmae'"),
        ('[[stage]]\nkind = "sft"\nconfig = "missing.toml"\n', "missing.toml: no such config file"),
    ],
)
def test_bad_recipes_name_the_file_and_stage(tmp_path, text, needle):
    p = _recipe(tmp_path, text)
    with pytest.raises(TinyseekError) as e:
        R.load_recipe(p, tmp_path / "run")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_config_file_is_relative_to_the_recipe_and_inline_fields_win(tmp_path, calls):
    (tmp_path / "base.toml").write_text("steps = 5\nlr = 0.001\n")
    p = _recipe(tmp_path, '[[stage]]\nkind = "pretrain"\nconfig = "base.toml"\nsteps = 7\n')
    rec = R.load_recipe(p, tmp_path / "run")
    assert rec.stages[0].fields == {"steps": 7, "lr": 0.001}


def test_a_bad_stage_field_error_names_the_stage(tmp_path):
    p = _recipe(tmp_path, '[[stage]]\nkind = "tasks"\nname = "data"\ntaks = ["arithmetic"]\n')
    with pytest.raises(TinyseekError, match=r"r.toml stage 1 \(data\): unknown field 'taks'"):
        R.run_recipe(R.load_recipe(p, tmp_path / "run"), tmp_path / "run", log=lambda s: None)


def test_shipped_recipes_are_found_and_parse(tmp_path):
    d = R.recipes_dir()
    assert (d / "demo.toml").is_file()
    assert R.find_recipe("demo") == d / "demo.toml"
    for quick in (False, True):
        rec = R.load_recipe(d / "demo.toml", tmp_path / "run", quick=quick)
        kinds = [s.kind for s in rec.stages]
        for k in ("tasks", "tokenizer", "pretrain", "sft", "grpo", "sample", "distill", "eval"):
            assert k in kinds
    with pytest.raises(TinyseekError, match="no-such-recipe"):
        R.find_recipe("no-such-recipe")


def _demo_tasks_stage(tmp_path: Path, quick: bool = False):
    rec = R.load_recipe(R.recipes_dir() / "demo.toml", tmp_path / "run", quick=quick)
    return next(s for s in rec.stages if s.kind == "tasks")


def _problems(path: Path) -> set[str]:
    return {json.loads(line)["prompt"] for line in path.read_text().splitlines()}


def test_the_demo_gives_every_stage_its_own_problems(tmp_path):
    """The demo's (full-size) tasks stage: corpus, SFT traces, RL prompts, distillation prompts and the test
    set are disjoint sets of problems, and each split holds distinct problems."""
    stage = _demo_tasks_stage(tmp_path)
    out = tmp_path / "tasks"
    R.RUNNERS["tasks"](stage, out, False)
    sets = {k: _problems(out / f"{k}.jsonl") for k in [*stage.fields["splits"], "test"]}
    for k in sets:
        n = len((out / f"{k}.jsonl").read_text().splitlines())
        assert len(sets[k]) == n > 0, k  # distinct problems
    # the corpus: worked problems in the chat layout; its prompts sit between the user tag and the assistant tag
    corpus = {
        doc.split("<｜Assistant｜>")[0].split("<｜User｜>")[-1]
        for doc in (out / "corpus.txt").read_text().split("\n\n")
    }
    sets["corpus"] = {p for p in corpus if p.strip()}
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not sets[a] & sets[b], (a, b, sorted(sets[a] & sets[b])[:3])
    roles = json.loads((out / "roles.json").read_text())
    assert set(roles) == set(names)


@pytest.mark.parametrize("quick", [False, True])
def test_the_demo_student_learns_only_from_its_teacher(tmp_path, quick):
    """Every file the demo's distillation reads is written by a sample stage of its own teacher, on prompts of
    the distill split, which no training stage reads: no gold trace reaches the student."""
    run = tmp_path / "run"
    rec = R.load_recipe(R.recipes_dir() / "demo.toml", run, quick=quick)
    by_dir = {str(run / s.name): s for s in rec.stages}
    distills = [s for s in rec.stages if s.kind == "distill"]
    assert distills
    for d in distills:
        for path in d.fields["data"]:
            src = by_dir.get(str(Path(path).parent))
            assert src is not None and src.kind == "sample", path
            assert src.fields["model"] == d.fields["teacher"], (src.name, d.name)
            assert src.fields["data"] == str(run / "tasks" / "distill.jsonl")
    trained = [s for s in rec.stages if s.kind in ("pretrain", "sft", "grpo", "distill", "prm")]
    listed = lambda v: [v] if isinstance(v, str) else (v or [])  # noqa: E731
    read = {str(p) for s in trained for k in ("data", "text_files") for p in listed(s.fields.get(k))}
    assert str(run / "tasks" / "rl.jsonl") in read  # (the check sees the stages' files)
    assert str(run / "tasks" / "distill.jsonl") not in read


@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"splits": {"sft": 10, "rl": 0}}, "splits.rl: an empty split"),
        ({"splits": {"sft": 10, "rl": 10}, "shares": {"sft": 0.6, "rl": 0.6}}, "shares: the roles overlap"),
        ({"splits": {"sft": 10, "rl": 10}, "shares": {"sft": 0.5}}, "shares.rl: every split needs a share"),
        ({"splits": {"sft": 10}, "shares": {"sft": 0.5, "rl": 0.1}}, "shares.rl: no such split"),
        ({"splits": {"sft": 10, "rl": 10}, "shares": {"sft": 0.5, "rl": 0.0}}, "shares.rl: must be in (0, 1]"),
        ({"splits": {"sft": 10, "rl": 900}, "shares": {"sft": 0.5, "rl": 0.1}}, "splits.rl: task addition"),
    ],
)
def test_bad_splits_stop_before_anything_is_written(tmp_path, fields, needle):
    stage = R.Stage(
        "tasks", "tasks", {"tasks": ["addition"], "difficulty": 2, "test": 10, **fields}, "r.toml stage 1 (tasks)"
    )
    with pytest.raises(TinyseekError) as e:
        R.RUNNERS["tasks"](stage, tmp_path / "tasks", False)
    assert needle in str(e.value) and "\n" not in str(e.value) and "r.toml stage 1 (tasks)" in str(e.value)
    assert not (tmp_path / "tasks").exists()


def test_seed_and_threads_flags_reach_every_stage(tmp_path):
    rec = R.load_recipe(R.recipes_dir() / "demo.toml", tmp_path / "run", seed=7, threads=3)
    assert rec.threads == 3 and rec.seed == 7
    assert all(s.fields["seed"] == 7 for s in rec.stages)
    tasks_stage = next(s for s in rec.stages if s.kind == "tasks")
    assert tasks_stage.fields.get("test_seed", 0) == 0  # the held-out set is the same for every run seed
    default = R.load_recipe(R.recipes_dir() / "demo.toml", tmp_path / "run")
    assert default.threads == 0  # the machine's cores (torch's default)
    with pytest.raises(TinyseekError, match="--seed"):
        R.load_recipe(R.recipes_dir() / "demo.toml", tmp_path / "run", seed=-1)
