"""The `tinyseek` command line as a newcomer meets it: every flag explained with its default, a mistyped command
or flag answered with the closest known one, one wording for a negative count, a closed pipe ended quietly."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tinyseek.cli import COMMANDS, main


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _flags_without_help(text: str) -> list[str]:
    """Option lines of an argparse --help (or a stage command's field list) that say nothing but the default."""
    lines = text.splitlines()
    bad = []
    for i, line in enumerate(lines):
        m = re.match(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$", line)
        if not m:
            continue
        said = (m.group(2) or "").strip()
        if said and not said.startswith("(default"):
            continue
        follow = lines[i + 1] if i + 1 < len(lines) else ""
        if not said and re.match(r"^\s{6,}\S", follow) and not follow.strip().startswith("(default"):
            continue  # argparse put the help on the next line
        bad.append(m.group(1).split()[0])
    return bad


def _commands() -> list[list[str]]:
    return [["prm", "train"], ["prm", "score"], *([c] for c in COMMANDS if c != "prm")]


@pytest.mark.parametrize("argv", _commands(), ids=" ".join)
def test_every_flag_says_what_it_does(capsys, argv):
    """Before: --dtype, --model, --difficulty, --max-new-tokens, --rewards, --kd-temperature, ... had no help."""
    text = _help(capsys, *argv)
    assert _flags_without_help(text) == [], text


def test_help_shows_the_defaults_and_one_set_of_sampling_defaults(capsys):
    """R1's recommended sampling (T 0.6, top-p 0.95) is the default of chat, generate, eval and serve, and --help
    says so (before: 1.0 / 0.7 / 0.7 / 0.6, and no defaults shown)."""
    for cmd in ("chat", "generate", "eval", "serve"):
        text = " ".join(_help(capsys, cmd).split())
        assert re.search(r"--temperature TEMPERATURE .*?default 0\.6\)", text), (cmd, text)
        assert re.search(r"--top-p TOP_P .*?default 0\.95\)", text), (cmd, text)
    assert "(default 8000)" in _help(capsys, "serve")
    from tinyseek.evaluate import EvalConfig

    assert (EvalConfig.temperature, EvalConfig.top_p) == (0.6, 0.95)


def test_the_flag_lists_read_the_field_comments_of_multiline_fields():
    from tinyseek.config import _field_help
    from tinyseek.train.grpo import GrpoConfig

    help_ = _field_help(GrpoConfig)
    assert help_["rewards"].startswith("names or pkg.mod:func")  # `= field(` ... `)  # comment` over three lines
    assert help_["dtype"].startswith("compute dtype: auto")  # the comment lines above the field


def test_a_closed_pipe_ends_quietly():
    """`tinyseek -h | head -2`: two lines, and no BrokenPipeError traceback."""
    p = subprocess.run(
        f"{sys.executable} -m tinyseek.cli -h | head -2", shell=True, capture_output=True, text=True, timeout=120
    )
    assert p.stdout.splitlines()[0].startswith("usage: tinyseek COMMAND")
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


def test_an_unknown_command_is_one_line_with_the_closest(capsys):
    assert main(["evl"]) == 2
    err = capsys.readouterr().err
    assert err == "tinyseek: unknown command 'evl'; did you mean 'eval'?\n"
    assert main(["foo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'foo'" in err and "usage" not in err


def test_unknown_flags_get_the_closest_known_flag(capsys):
    assert main(["pretrain", "--out", "x", "--max-step", "3"]) == 2
    assert (
        capsys.readouterr().err == "tinyseek pretrain: error: unknown flag '--max-step'; did you mean '--max-steps'?\n"
    )
    with pytest.raises(SystemExit):
        main(["eval", "ckpt", "--tsk", "addition"])
    assert "unknown flag '--tsk'; did you mean '--task'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["chat", "ckpt", "--temprature", "0"])
    assert "did you mean '--temperature'?" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "ckpt", "--task", "addition", "--n", "-1"],
        ["sample", "ckpt", "--task", "addition", "--n", "-1", "--out", "x.jsonl"],
        ["tasks", "addition", "--n", "-1"],
        ["serve", "ckpt", "--max-batch", "-1"],
        ["generate", "ckpt", "--prompt", "hi", "--max-new-tokens", "-1"],
        ["pretrain", "--out", "x", "--max-steps", "-1"],
    ],
    ids=lambda a: a[0],
)
def test_a_negative_count_is_refused_in_one_wording(capsys, argv):
    """Before: 'must be >= 1 (got -1)', 'flags: n: must be >= 1', 'n must be a non-negative int, got -1'."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"tinyseek \w+: error: ([\w ]+: )?-{0,2}[\w-]+: must be >= \d \(got -1\)\n", err), err


def test_a_run_directory_given_for_a_checkpoint_points_at_its_final(tmp_path, r1_checkpoint, capsys):
    import shutil

    shutil.copytree(r1_checkpoint, tmp_path / "run" / "final")
    assert main(["generate", str(tmp_path / "run"), "--prompt", "hi"]) == 2
    assert f"did you mean {tmp_path / 'run' / 'final'}?" in capsys.readouterr().err


def test_serve_checks_its_port_first_and_keeps_its_ledger_out_of_the_cwd(tmp_path, r1_checkpoint):
    """A busy port: one line and exit 2, nothing announced (before: "serving on ..." and then uvicorn's Errno 98).
    A free one: it says what the model was trained on and its template, and its ledger is in the user's state
    directory (before: usage.sqlite in whatever directory the server was started from)."""
    import json
    import os
    import socket
    import time
    import urllib.request

    from test_trained_on import make_run

    ckpt = make_run(tmp_path, r1_checkpoint, template="r1-zero") / "grpo" / "final"
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "tinyseek.cli", "serve", str(ckpt), "--port", str(port), "--threads", "1"]
    p = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert (p.returncode, p.stderr) == (2, f"tinyseek serve: error: --port {port}: 127.0.0.1:{port} is in use "
                                           "(another server?); choose another --port\n")  # fmt: skip
    busy.close()
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        said = []
        deadline = time.monotonic() + 120
        while not any("on http://" in s for s in said) and time.monotonic() < deadline:
            said.append(proc.stderr.readline())
            assert proc.poll() is None, "".join(said)
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30).read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = "".join(said)
    assert "was trained on addition problems at difficulty 2, in the r1-zero template" in text
    assert f"(prompts in the r1-zero template; ledger {tmp_path / 'state' / 'tinyseek' / 'usage.sqlite'})" in text
    assert re.fullmatch(r"\d{2}\+\d{2}=", health["example"]) and health["defaults"] == {
        "temperature": 0.6,
        "top_p": 0.95,
    }
    assert (tmp_path / "state" / "tinyseek" / "usage.sqlite").is_file() and not (tmp_path / "usage.sqlite").exists()
    assert health["single_turn"] is True  # a model of a task: the chat page sends each message alone


@pytest.mark.parametrize("kind", ["sample", "eval"])
def test_every_field_of_a_stage_is_a_flag_of_its_command(capsys, kind):
    """A recipe can do nothing a user cannot: each field of the stage's config has its flag (before: `tinyseek
    sample` had no --accept, --split, --batch or --system-prompt)."""
    import dataclasses

    from tinyseek.recipe import stage_kind

    text = _help(capsys, kind)
    cls, _ = stage_kind(kind)
    missing = [
        f.name for f in dataclasses.fields(cls) if f.name != "model" and f"--{f.name.replace('_', '-')}" not in text
    ]
    assert missing == []
