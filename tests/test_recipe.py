"""The recipe runner: order, skipping complete stages, resuming an interrupted one, re-running stale ones.

`run_stage` is replaced by a small fake that records its calls, so these tests check the runner's
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
test = 3
[[stage]]
kind = "pretrain"
name = "base"
max_steps = 10
text_files = ["{run}/data/x.txt"]
[stage.quick]
max_steps = 2
[[stage]]
kind = "sft"
name = "tuned"
init = "{run}/base/final"
data = ["{run}/data/sft.jsonl"]
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

    monkeypatch.setattr(R, "run_stage", fake)
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
    assert calls.log[1][2] == {"max_steps": 10, "text_files": [f"{run}/data/x.txt"]}
    assert calls.log[2][2]["init"] == f"{run}/base/final"
    for name in ("data", "base", "tuned"):
        assert R.read_marker(run / name)["name"] == name
    stages = json.loads((run / R.RECIPE_COPY).read_text())["stages"]
    assert [s["kind"] for s in stages] == ["tasks", "pretrain", "sft"]

    quick = R.load_recipe(_recipe(tmp_path), run, quick=True)
    assert quick.stages[1].fields["max_steps"] == 2


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
    assert json.loads((run / "base" / "done.txt").read_text())["max_steps"] == 2


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
    (tmp_path / "base.toml").write_text("max_steps = 5\nlr = 0.001\n")
    p = _recipe(tmp_path, '[[stage]]\nkind = "pretrain"\nconfig = "base.toml"\nmax_steps = 7\n')
    rec = R.load_recipe(p, tmp_path / "run")
    assert rec.stages[0].fields == {"max_steps": 7, "lr": 0.001}


def test_a_bad_stage_field_error_names_the_file_line_and_stage(tmp_path):
    p = _recipe(tmp_path, '[[stage]]\nkind = "tasks"\nname = "data"\ntaks = ["arithmetic"]\n')
    with pytest.raises(TinyseekError, match=r"r.toml:4: stage 1 \(data\): unknown field 'taks'.*did you mean 'tasks'"):
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
    R.run_stage(stage, out, False)
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
        R.run_stage(stage, tmp_path / "tasks", False)
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


# ----------------------------------------------------------------------------------------------
# one way to build a stage's config: a recipe stage and its command line give the same dataclass


def _cli(kind: str):
    from tinyseek.evaluate import cli_eval
    from tinyseek.tasks.stage import cli_tasks
    from tinyseek.tokenizer import cli_tokenizer
    from tinyseek.train.distill import cli_distill
    from tinyseek.train.grpo import cli_grpo
    from tinyseek.train.pretrain import cli_pretrain
    from tinyseek.train.prm import cli_prm
    from tinyseek.train.rejection import cli_sample
    from tinyseek.train.sft import cli_sft

    return {
        "tasks": lambda argv: cli_tasks(["write", *argv]),
        "tokenizer": cli_tokenizer,
        "pretrain": cli_pretrain,
        "sft": cli_sft,
        "prm": lambda argv: cli_prm(["train", *argv]),
        "grpo": cli_grpo,
        "sample": cli_sample,
        "distill": cli_distill,
        "eval": cli_eval,
    }[kind]


class _Ran(Exception):
    """Raised by the patched `run`: the command built its config and handed it on."""


def _config_of_command(monkeypatch, kind: str, argv: list[str]):
    """The config `tinyseek KIND ARGV` hands to its module's run (run itself replaced)."""
    import importlib

    module = importlib.import_module(R.stage_kind(kind)[1].__module__)
    seen = []

    def fake(cfg, out, resume=False):
        seen.append((cfg, Path(out), resume))
        raise _Ran

    monkeypatch.setattr(module, "run", fake)
    with pytest.raises(_Ran):
        _cli(kind)(argv)
    return seen[0]


# kind -> (the stage's fields in a recipe, the same fields as flags); the flags' spelling is each command's own
SAME_FIELDS = {
    "tasks": (
        {
            "tasks": ["addition", "countdown"],
            "splits": {"sft": 10, "rl": 5},
            "test": 7,
            "difficulty": [1, 2],
            "corpus": {"addition": 20},
            "corpus_format": "chat",
            "shares": {"sft": 0.3, "rl": 0.2, "corpus": 0.25},
            "seed": 3,
        },
        "--tasks addition,countdown --splits sft=10,rl=5 --test 7 --difficulty 1-2 --corpus addition=20 "
        "--corpus-format chat --shares sft=0.3,rl=0.2,corpus=0.25 --seed 3",
    ),
    "tokenizer": (
        {"corpus": ["a.txt", "b.txt"], "tasks": ["addition"], "n_per_task": 7, "vocab_size": 300, "seed": 2},
        "--corpus a.txt b.txt --tasks addition --n-per-task 7 --vocab-size 300 --seed 2",
    ),
    "pretrain": (
        {"preset": "nano", "tasks": {"addition": 50}, "max_steps": 3, "lr": 0.002, "dtype": "float32"},
        "--preset nano --tasks addition=50 --max-steps 3 --lr 0.002 --dtype float32",
    ),
    "sft": (
        {"init": "ck", "data": ["a.jsonl", "b.jsonl"], "max_steps": 5, "batch_size": 4, "eval_every": 2},
        "--init ck --data a.jsonl,b.jsonl --max-steps 5 --batch-size 4 --eval-every 2",
    ),
    "prm": (
        {"init": "ck", "task": "addition", "max_steps": 2, "eval_n": 8},
        "--init ck --task addition --max-steps 2 --eval-n 8",
    ),
    "grpo": (
        {"model": "ck", "task": "addition", "rewards": ["accuracy", "format"], "group_size": 4, "temperature": 0.7},
        "--model ck --task addition --rewards accuracy,format --group-size 4 --temperature 0.7",
    ),
    "sample": (
        {"model": "ck", "task": "addition", "n": 5, "samples": 2, "top_p": 0.9, "shortest": True},
        "ck --task addition --n 5 --samples 2 --top-p 0.9 --shortest",
    ),
    "distill": (
        {"data": ["s.jsonl"], "teacher": "t", "mode": "whitebox", "kd_top_k": 4, "max_steps": 3},
        "--data s.jsonl --teacher t --mode whitebox --kd-top-k 4 --max-steps 3",
    ),
    "eval": (
        {"model": "ck", "data": "t.jsonl", "n": 0, "samples": 8, "max_new_tokens": 128, "greedy": True, "batch": 32},
        "ck --data t.jsonl --n 0 --samples 8 --max-new-tokens 128 --greedy --batch 32",
    ),
}

# the fewest fields each kind needs: what is left is the kind's defaults, the same for a recipe and its command
REQUIRED = {
    "tasks": ({}, ""),
    "tokenizer": ({"tasks": ["addition"]}, "--tasks addition"),
    "pretrain": ({}, ""),
    "sft": ({"init": "ck", "data": ["a.jsonl"]}, "--init ck --data a.jsonl"),
    "prm": ({"init": "ck", "task": "addition"}, "--init ck --task addition"),
    "grpo": ({"model": "ck", "task": "addition"}, "--model ck --task addition"),
    "sample": ({"model": "ck", "task": "addition"}, "ck --task addition"),
    "distill": ({"data": ["s.jsonl"], "teacher": "t"}, "--data s.jsonl --teacher t"),
    "eval": ({"model": "ck", "data": "t.jsonl"}, "ck --data t.jsonl"),
}


@pytest.mark.parametrize("table", [SAME_FIELDS, REQUIRED], ids=["fields", "defaults"])
@pytest.mark.parametrize("kind", R.KINDS)
def test_a_recipe_stage_and_its_command_build_the_same_config(tmp_path, monkeypatch, kind, table):
    fields, flags = table[kind]
    stage = R.Stage(kind, kind, fields, "r.toml stage 1")
    out = tmp_path / "out"
    cfg, cli_out, _ = _config_of_command(monkeypatch, kind, [*flags.split(), "--out", str(out)])
    assert cli_out == out
    assert cfg == R.stage_config(stage)
    recipe_seen = []
    monkeypatch.setattr(
        R, "stage_kind", lambda k, real=R.stage_kind: (real(k)[0], lambda c, o, r: recipe_seen.append(c))
    )
    R.run_stage(stage, out, False)  # and the runner hands exactly that config to the stage's run
    assert recipe_seen == [cfg]


def test_a_recipe_given_to_a_stage_command_runs_its_stage_with_the_flags_over_it(tmp_path, monkeypatch):
    """`tinyseek sft --config RECIPE --out RUN --quick --lr 0.5`: the recipe's sft stage, {run} = RUN, its quick
    fields, then the flags."""
    from tinyseek.cli import main
    from tinyseek.train import sft

    p = _recipe(
        tmp_path,
        RECIPE.replace(
            'data = ["{run}/data/sft.jsonl"]\n',
            'data = ["{run}/data/sft.jsonl"]\n[stage.quick]\nmax_steps = 2\n',
        ),
    )
    seen = []
    monkeypatch.setattr(sft, "run", lambda cfg, out, resume=False: seen.append((cfg, out, resume)))
    run = tmp_path / "run"
    assert main(["sft", "--config", str(p), "--out", str(run), "--quick", "--lr", "0.5", "--resume"]) == 0
    cfg, out, resume = seen[0]
    assert (out, resume) == (run, True)
    assert (cfg.init, cfg.data, cfg.max_steps, cfg.lr) == (f"{run}/base/final", [f"{run}/data/sft.jsonl"], 2, 0.5)
    with pytest.raises(TinyseekError, match="exactly one grpo stage"):
        R.run_recipe_stage("grpo", ["--config", str(p), "--out", str(run)])
    assert R.run_recipe_stage("sft", ["--config", str(p)]) is None  # no --out: the command's own parser decides


def test_a_recipe_is_checked_whole_before_any_stage_runs(tmp_path, calls):
    """A typo in the last stage fails at once, naming the user's file and line and the closest field; no stage
    has run (before: the first stages ran, and the error came when the mistyped stage started)."""
    text = RECIPE + "max_step = 2\n"  # the last line of the last stage (sft)
    p = _recipe(tmp_path, text)
    line = len(text.splitlines())
    with pytest.raises(TinyseekError) as e:
        R.run_recipe(R.load_recipe(p, tmp_path / "run"), tmp_path / "run", log=lambda s: None)
    msg = str(e.value)
    assert msg.startswith(f"{p}:{line}: stage 3 (tuned): unknown field 'max_step'"), msg
    assert "did you mean 'max_steps'?" in msg and "\n" not in msg
    assert calls.log == [] and not (tmp_path / "run" / "data").exists()


@pytest.mark.parametrize("where", ["inline", "quick", "config", "include", "set"])
def test_a_bad_value_names_where_it_was_written(tmp_path, where):
    """The field's own origin: the recipe's line, its [stage.quick] line, the stage's config file, an included
    recipe, or the --set flag."""
    bad = 'lr = "fast"\n'
    files = {"base.toml": "max_steps = 3\n" + (bad if where == "config" else "")}
    stage = '[[stage]]\nkind = "pretrain"\nname = "pt"\nconfig = "base.toml"\n'
    text = (
        stage + (bad if where == "inline" else "") + ("[stage.quick]\nseq_len = 64\n" + bad if where == "quick" else "")
    )
    if where == "include":
        files["inner.toml"], text = text + bad, 'include = "inner.toml"\n[[stage]]\nkind = "tasks"\n'
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    p = _recipe(tmp_path, text)
    sets = R.parse_sets(["pt.lr=fast"]) if where == "set" else None
    with pytest.raises(TinyseekError) as e:
        R.load_recipe(p, tmp_path / "run", quick=where == "quick", sets=sets)
    origin = {
        "inline": f"{p}:5",
        "quick": f"{p}:7",
        "config": f"{tmp_path / 'base.toml'}:2",
        "include": f"{tmp_path / 'inner.toml'}:5",
        "set": "--set pt.lr=fast",
    }[where]
    assert str(e.value).startswith(f"{origin}: stage 1 (pt): lr: expected a number"), str(e.value)


def test_unknown_recipes_and_stages_get_a_did_you_mean(tmp_path):
    with pytest.raises(TinyseekError, match=r"dmeo: no such recipe file or shipped recipe \(did you mean 'demo'\?\)"):
        R.find_recipe("dmeo")
    with pytest.raises(TinyseekError, match=r"shipped recipes: demo, .*r1-zero"):
        R.find_recipe("nothing-like-it")
    with pytest.raises(TinyseekError, match=r"unknown stage 'grop' in the recipe; did you mean 'grpo'\?"):
        R.load_recipe(R.recipes_dir() / "demo.toml", tmp_path / "run", sets=R.parse_sets(["grop.lr=1e-5"]))
    p = _recipe(tmp_path, 'nmae = "x"\n[[stage]]\nkind = "tasks"\n')
    with pytest.raises(TinyseekError, match=r"r.toml:1: unknown top-level field 'nmae'; did you mean 'name'\?"):
        R.load_recipe(p, tmp_path / "run")
