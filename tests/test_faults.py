"""Faults a user meets: a process killed mid-checkpoint, a write that fails, damaged or mismatched files.

Each must lose nothing that was already written and, where a command stops, say why in one line that names
the file (and the field or the count that is wrong).
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tinyseek.checkpoint import load, load_model, read_weights, save_checkpoint
from tinyseek.cli import main
from tinyseek.config import ModelConfig
from tinyseek.errors import TinyseekError
from tinyseek.model import Transformer
from tinyseek.tokenizer import Tokenizer
from tinyseek.train.loop import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def tok_file(tmp_path_factory):
    from tinyseek.data import task_documents

    tok = Tokenizer.train(task_documents({"addition": 300}, seed=0, split="train"), 300)
    return str(tok.save(tmp_path_factory.mktemp("tok")))


def _pretrain_args(tok_file, out, steps=6):
    return [
        "pretrain",
        "--tasks",
        "addition=200",
        "--tokenizer",
        tok_file,
        "--seq-len",
        "32",
        "--batch-size",
        "4",
        "--max-steps",
        str(steps),
        "--ckpt-every",
        "2",
        "--keep-last",
        "5",
        "--threads",
        "1",
        "--model.dim",
        "32",
        "--model.inter_dim",
        "64",
        "--progress",
        "false",
        "--out",
        str(out),
    ]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------------------------
# checkpoints: kill -9 while one is written, a write that fails


# A driver that runs the real CLI but stops inside the step-4 checkpoint's write (its weights written, its
# trainer state half written), says so through a marker file, and waits there to be killed.
_STALL = textwrap.dedent(
    """
    import sys, time, torch
    real_save = torch.save
    def stalling_save(obj, f, *a, **k):
        if "step-4" in str(f):
            with open(f, "wb") as fh:
                fh.write(b"half a trainer state")
            open(sys.argv[1], "w").close()
            time.sleep(600)
        return real_save(obj, f, *a, **k)
    torch.save = stalling_save
    from tinyseek.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)


@pytest.mark.slow
def test_kill_9_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, tok_file):
    run, marker = tmp_path / "run", tmp_path / "writing"
    p = subprocess.Popen(
        [sys.executable, "-c", _STALL, str(marker), *_pretrain_args(tok_file, run)],
        env=ENV,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while not marker.exists():
        assert p.poll() is None, p.stderr.read()
        assert time.time() < deadline, "the run never reached the step-4 checkpoint"
        time.sleep(0.05)
    p.kill()  # SIGKILL, inside the write
    p.wait()
    ckpts = run / "checkpoints"
    assert [d.name for d in ckpts.iterdir() if d.name.startswith(".step-4.tmp")], "the write was not under way"
    assert not (ckpts / "step-4").exists()
    assert latest_checkpoint(run) == ckpts / "step-2"
    load_model(ckpts / "step-2")  # loadable, whole
    torch.load(ckpts / "step-2" / "trainer_state.pt", weights_only=False)
    r = subprocess.run(
        [sys.executable, "-m", "tinyseek.cli", "pretrain", "--out", str(run), "--resume"],
        env=ENV,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert f"resumed from {ckpts / 'step-2'} (step 2)" in r.stdout
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert not [d for d in ckpts.iterdir() if d.name.startswith(".")]  # the half checkpoint was cleared away
    load_model(run / "final")


def test_a_failed_checkpoint_write_loses_nothing_and_says_so_in_one_line(tmp_path, tok_file, monkeypatch, capsys):
    """The disk fills up while step-4's trainer state is written (an injected OSError, as a full disk raises)."""
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        if "step-4" in str(f):
            raise OSError(28, "No space left on device", str(f))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    run = tmp_path / "run"
    torch_threads = torch.get_num_threads()
    try:
        assert main(_pretrain_args(tok_file, run)) == 2
    finally:
        torch.set_num_threads(torch_threads)
    err = _one_line_error(capsys)
    assert str(run / "checkpoints" / "step-4") in err and "No space left on device" in err
    assert "earlier checkpoints are as they were" in err
    ckpts = run / "checkpoints"
    assert sorted(d.name for d in ckpts.iterdir()) == ["step-2"]  # no half checkpoint, the previous one kept
    before = read_weights(ckpts / "step-2")
    monkeypatch.setattr(torch, "save", real_save)  # space again: --resume carries on from step 2
    assert main(["pretrain", "--out", str(run), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    torch.set_num_threads(torch_threads)
    assert (ckpts / "step-4" / "trainer_state.pt").is_file() and (run / "final").is_dir()
    assert all(torch.equal(before[k], v) for k, v in read_weights(ckpts / "step-2").items())


def test_a_real_write_limit_leaves_the_old_checkpoint_whole(tmp_path):
    """No injection: the kernel refuses the write (a file-size limit, EFBIG, as a full disk gives ENOSPC) while
    `tinyseek init` replaces a checkpoint. The old one stays byte for byte; the error is one line."""
    ckpt = tmp_path / "ckpt"
    assert main(["init", "--preset", "nano", "--out", str(ckpt)]) == 0
    before = (ckpt / "model.safetensors").read_bytes()
    limit = 64 << 10  # config.json fits, model.safetensors (~2 MB) does not

    r = subprocess.run(
        [sys.executable, "-m", "tinyseek.cli", "init", "--preset", "nano", "--seed", "1", "--out", str(ckpt)],
        env=ENV,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    assert r.returncode != 0
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and str(ckpt) in err and "not written" in err, err
    assert (ckpt / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary sibling left behind


def test_a_short_write_is_caught_before_the_rename(tmp_path, monkeypatch):
    """A writer that loses bytes without raising must not replace a good checkpoint with a short one."""
    import safetensors.torch

    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("nano"))
    good = save_checkpoint(model, tmp_path / "ckpt")
    before = (good / "model.safetensors").read_bytes()
    real = safetensors.torch.save_file

    def short(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as fh:
            fh.truncate(os.path.getsize(filename) - 100)

    monkeypatch.setattr(safetensors.torch, "save_file", short)
    with pytest.raises(TinyseekError, match=r"checkpoint not written \(.*bytes written of"):
        save_checkpoint(model, good)
    assert (good / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("fault", ["raises", "short"])
def test_a_failed_export_or_import_loses_nothing_and_says_so_in_one_line(tmp_path, monkeypatch, fault):
    """`tinyseek export` / `import` write through the same guard as checkpoints: a full disk (an OSError) or a
    writer that lost bytes leaves the directory that was there, and the error is one line naming it."""
    import safetensors.torch

    from tinyseek.checkpoint import export_dir, import_dir

    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("nano"))
    hf = export_dir(model.cfg, model.state_dict(), tmp_path / "hf")
    ckpt = import_dir(hf, tmp_path / "ckpt")
    before = {d: (d / "model.safetensors").read_bytes() for d in (hf, ckpt)}
    real = safetensors.torch.save_file

    def broken(tensors, filename, metadata=None):
        if fault == "raises":
            raise OSError(28, "No space left on device", str(filename))
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as fh:
            fh.truncate(os.path.getsize(filename) - 100)

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    cause = "No space left on device" if fault == "raises" else "bytes written of"
    for what, write, out in (
        ("export", lambda: export_dir(model.cfg, model.state_dict(), hf), hf),
        ("import", lambda: import_dir(tmp_path / "hf", ckpt), ckpt),
    ):
        with pytest.raises(TinyseekError) as e:
            write()
        msg = str(e.value)
        assert "\n" not in msg and f"{out}: {what} not written" in msg and cause in msg, msg
        assert (out / "model.safetensors").read_bytes() == before[out]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "hf"]  # no temporary directory left behind


# ----------------------------------------------------------------------------------------------
# damaged and mismatched files: one line naming the file and what is wrong


@pytest.fixture
def ckpt(tmp_path, tok_file):
    out = tmp_path / "ckpt"
    assert main(["init", "--preset", "nano", "--out", str(out), "--tokenizer", tok_file]) == 0
    return out


def _generate(ckpt, capsys) -> str:
    capsys.readouterr()
    assert main(["generate", str(ckpt), "--prompt", "1+1=", "--max-new-tokens", "2"]) == 2
    return _one_line_error(capsys)


def test_truncated_or_garbled_weights(ckpt, capsys):
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    err = _generate(ckpt, capsys)
    assert str(f) in err and "unreadable safetensors file" in err
    f.write_bytes(b"\xff" * 8 + data[8:])  # a header length no file can have
    err = _generate(ckpt, capsys)
    assert str(f) in err and "unreadable safetensors file" in err


def test_weights_of_another_shape(ckpt, capsys):
    f = ckpt / "model.safetensors"
    from safetensors.torch import load_file, save_file

    sd = load_file(f)
    sd["layers.0.attn.wo.weight"] = torch.zeros(3, 3)
    save_file(sd, f)
    err = _generate(ckpt, capsys)
    assert str(f) in err and "layers.0.attn.wo.weight" in err


@pytest.mark.parametrize(
    "change,words",
    [
        ({"dimm": 64}, ["unknown field 'dimm'"]),
        ({"dim": "wide"}, ["dim"]),
        ({"n_activated_experts": 99}, ["n_activated_experts"]),
    ],
)
def test_config_with_a_wrong_or_unknown_field(ckpt, capsys, change, words):
    f = ckpt / "config.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), **change}))
    err = _generate(ckpt, capsys)
    assert str(f) in err and all(w in err for w in words), err


def test_config_that_is_not_json(ckpt, capsys):
    f = ckpt / "config.json"
    f.write_text("{'dim': 64")
    err = _generate(ckpt, capsys)
    assert str(f) in err and "invalid JSON" in err


def test_tokenizer_of_another_model(ckpt, capsys, tmp_path):
    """A checkpoint sized for 300 tokens given a 600-token tokenizer (say, copied from another run)."""
    from tinyseek.data import task_documents

    big = Tokenizer.train(task_documents({"addition": 300, "countdown": 300}, seed=0, split="train"), 600)
    assert big.vocab_size > 300
    shutil.copyfile(big.save(tmp_path / "big"), ckpt / "tokenizer.json")
    err = _generate(ckpt, capsys)
    assert str(ckpt / "tokenizer.json") in err and f"{big.vocab_size} tokens" in err and "vocab_size=" in err
    with pytest.raises(TinyseekError, match="not this model's tokenizer"):
        load(ckpt)


def test_init_takes_the_vocabulary_from_the_tokenizer(tmp_path, tok_file, capsys):
    n = Tokenizer.load(tok_file).vocab_size
    assert n > ModelConfig.preset("nano").vocab_size  # the preset's own would not hold it
    assert main(["init", "--preset", "nano", "--tokenizer", tok_file, "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "config.json").read_text())["vocab_size"] == n
    assert (
        main(["init", "--preset", "nano", "--tokenizer", tok_file, "--vocab_size", "512", "--out", str(tmp_path / "b")])
        == 0
    )
    assert json.loads((tmp_path / "b" / "config.json").read_text())["vocab_size"] == 512  # given: kept
    capsys.readouterr()
    assert (
        main(["init", "--preset", "nano", "--tokenizer", tok_file, "--vocab_size", "100", "--out", str(tmp_path / "c")])
        == 2
    )
    err = _one_line_error(capsys)
    assert "vocab_size" in err and f"{n} tokens" in err and tok_file in err
