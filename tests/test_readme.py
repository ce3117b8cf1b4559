"""The README's commands, run in order as a newcomer runs them after `make demo`: the "After the demo, try"
section (chat, eval, serve with the OpenAI client, export with transformers) and then the command tour.

They run in a fresh directory where `tinyseek demo --quick` stands in for the full demo (`runs/demo`: the same
stages, smaller), through this interpreter (`python -m tinyseek.cli` for `tinyseek`; `. .venv/bin/activate` is
skipped), with one torch thread. What else differs from typing them, and why:
- sizes are cut so the tour takes seconds (the flags in SMALLER are appended: a later flag wins), and the tour's
  rejection sampling keeps every completion (`--accept any`: a 2-step model answers nothing right, and the
  distillation after it needs rows), its student skips verification for the same reason;
- `--compile` is left out of `generate` (about a minute of compilation; tests/test_engine.py covers it);
- `tinyseek serve` runs in the background on a free port (8000 may be taken), the README's client pointed at it,
  and is stopped after the client, or after /health for the tour's server.
Each command must exit 0 and give a sensible result (checked after it). Slow: about two minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALLER = {
    "eval": ["--n", "4", "--samples", "1", "--max-new-tokens", "16"],
    "chat": ["--max-new-tokens", "16"],
    "generate": ["--max-new-tokens", "8"],
    "pretrain": ["--max-steps", "2", "--batch-size", "4", "--seq-len", "64"],
    "sft": ["--max-steps", "2", "--batch-size", "4"],
    "grpo": ["--max-steps", "1", "--batch-size", "2", "--group-size", "2", "--max-new-tokens", "8"],
    "sample": ["--n", "4", "--samples", "2", "--max-new-tokens", "8", "--accept", "any"],
    "distill": ["--max-steps", "2", "--batch-size", "4", "--verify", "false"],
}
THREADS = ("eval", "chat", "generate", "pretrain", "sft", "grpo", "sample", "distill", "serve", "run")


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def commands(text: str) -> list[list[str]]:
    """The `tinyseek ...` lines of a section's bash blocks, comments dropped, as argv."""
    out = []
    for block in blocks(text, "bash"):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("tinyseek"):
                out.append(shlex.split(line))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Shell:
    """Runs `tinyseek` lines in one directory, as the README's reader would, with the changes the docstring lists."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_STATE_HOME": str(cwd / "state")}

    def argv(self, words: list[str]) -> list[str]:
        cmd = [w for w in words[1:] if w != "--compile"]
        name = cmd[0] if cmd else ""
        extra = SMALLER.get(name, []) + (["--threads", "1"] if name in THREADS else [])
        return [sys.executable, "-m", "tinyseek.cli", *cmd, *extra]

    def run(self, words: list[str], stdin: str = "", timeout: float = 600) -> str:
        p = subprocess.run(
            self.argv(words), cwd=self.cwd, env=self.env, input=stdin, capture_output=True, text=True, timeout=timeout
        )
        assert p.returncode == 0, f"{' '.join(words)}: exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        return p.stdout + p.stderr

    def python(self, code: str) -> str:
        p = subprocess.run(
            [sys.executable, "-c", code], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=600
        )
        assert p.returncode == 0, f"{code}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
        return p.stdout

    def serving(self, words: list[str], port: int):
        proc = subprocess.Popen(
            [*self.argv(words), "--port", str(port)], cwd=self.cwd, env=self.env, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                return proc, json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())
            except OSError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_readme_commands_run_in_order_after_a_quick_demo(tmp_path):
    sh = Shell(tmp_path)
    sh.run(["tinyseek", "run", "demo", "--quick", "--out", "runs/demo"])  # `demo --quick` would write runs/demo-quick
    after = section("After the demo, try")
    cmds = commands(after)
    assert [c[1] for c in cmds] == ["chat", "eval", "serve", "export"]
    client, loader = blocks(after, "python")
    for words in cmds:
        name = words[1]
        if name == "chat":
            out = sh.run(words, stdin="12+34=\n/help\n/exit\n")
            assert "trained on addition problems at difficulty 2, in the chat template" in out
            assert re.search(r"try: \d{2}\+\d{2}=", out) and "/reset" in out
        elif name == "eval":
            out = sh.run(words)
            res = json.loads((tmp_path / "runs/eval/demo-grpo-final-addition/eval.json").read_text())
            assert (res["task"], res["difficulty"], res["prompt_template"]) == ("addition", 2, "chat")
            assert "pass@1" in out
        elif name == "serve":
            port = free_port()
            proc, health = sh.serving(words, port)
            try:
                said = sh.python(client.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
            finally:
                stop(proc)
            assert "->" in said and re.fullmatch(r"\d{2}\+\d{2}=", health["example"])
            assert not (tmp_path / "usage.sqlite").exists() and (tmp_path / "state/tinyseek/usage.sqlite").is_file()
        else:
            sh.run(words)
            hf = tmp_path / "runs/demo-hf"
            assert "addition problems at difficulty 2" in (hf / "README.md").read_text()
            assert json.loads((hf / "generation_config.json").read_text())["temperature"] == 0.6
            sh.python(loader)  # transformers alone: from_pretrained + generate
    tour = commands(section("The command tour: every stage by hand"))
    assert len(tour) >= 15
    for words in tour:
        if words[1] == "serve":
            proc, health = sh.serving(words, free_port())
            stop(proc)
            assert health["status"] == "ok"
            continue
        out = sh.run(words)
        if words[1] == "cost":  # the README's "671.0B total / 36.6B active"
            assert re.search(r"total parameters \(main\)\s+671\.0\dB", out) and re.search(r"/ token\s+36\.6\dB", out)
    for made in ("runs/pt/final", "runs/sft/final", "runs/grpo/final", "runs/student/final", "hf_dir", "ckpt"):
        assert (tmp_path / made / "config.json").is_file(), made
    assert (tmp_path / "traces.jsonl").stat().st_size > 0
