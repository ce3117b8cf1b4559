"""The chat page at `/`, driven in headless Chromium against a live server on 127.0.0.1.

Chromium is Debian's `chromium` package, installed by `make test` (its `browser` target) when missing; the
test only uses it, and skips saying so where it is absent. It is driven over the DevTools protocol on a pipe
(`--remote-debugging-pipe`: NUL-terminated JSON on file descriptors 3 and 4), so no websocket or
browser-automation package is needed. The screenshot is saved under the test's tmp dir, and copied to
docs/serve-screenshot.png for the README when that is missing or TINYSEEK_UPDATE_SCREENSHOT=1.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinyseek.checkpoint import load_model
from tinyseek.inference.engine import Engine
from tinyseek.serve.app import ServeConfig, create_app
from tinyseek.serve.cli import serve_in_thread
from tinyseek.tokenizer import Tokenizer

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1100,760",
    "--remote-debugging-pipe",
]


def find_chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("chromium is not installed (`make test` installs Debian's chromium with apt-get where it can)")
    return exe


def high_fds(fds: tuple[int, int]) -> tuple[int, int]:
    """The same pipe ends moved to numbers >= 10, so moving them onto 3 and 4 cannot clobber one another."""
    out = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds)
    for fd in fds:
        os.close(fd)
    return out


class Browser:
    """The DevTools protocol over Chromium's debugging pipe: send a command, wait for its answer."""

    def __init__(self, exe: str, user_data_dir: Path):
        cmd_r, self._w = high_fds(os.pipe())  # we write commands; chromium reads them on its fd 3
        self._r, res_w = high_fds(os.pipe())  # chromium writes answers and events on its fd 4
        # a small launcher moves the pipe ends to fds 3 and 4 and execs chromium (no preexec_fn: threads run)
        args = [*FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"]
        launch = (
            "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
            "os.execv(sys.argv[3], sys.argv[3:])"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", launch, str(cmd_r), str(res_w), exe, *args],
            pass_fds=(cmd_r, res_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(cmd_r)
        os.close(res_w)
        self._buf = b""
        self._id = 0
        self.session = None

    def send(self, method: str, params: dict | None = None, timeout: float = 60.0) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" not in self._buf:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the debugging pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
        raise TimeoutError(method)

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def js(self, expr: str):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expr: str, timeout: float = 120.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.1)
        raise TimeoutError(f"the page never satisfied: {expr}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._w)
        os.close(self._r)


def test_chat_page_streams_reasoning_and_answer(r1_checkpoint, tmp_path):
    exe = find_chromium()
    tok, model = Tokenizer.load(r1_checkpoint), load_model(r1_checkpoint)
    app = create_app(
        Engine(model, tok, max_batch=4),
        tok,
        ServeConfig(
            rate_limit=0,
            cache_block=4,
            db=str(tmp_path / "usage.sqlite"),
            trained_on="three chats",
            example="What is 2 plus 3?",
        ),
    )
    # (4-token cache blocks: the first turn's 15-token prompt leaves 3 blocks for the second turn to hit)
    with serve_in_thread(app) as url:
        browser = Browser(exe, tmp_path / "chromium-profile")
        try:
            browser.open(url + "/")
            browser.wait_for(
                "document.readyState === 'complete' && document.querySelectorAll('#model option').length > 0"
            )
            assert browser.js("document.querySelector('#model').value") == "tinyseek"
            # what to try, and the server's default sampling (R1's), shown before anything is sent
            browser.wait_for("document.querySelector('#input').placeholder.startsWith('Try What is 2 plus 3?')")
            assert browser.js("document.querySelector('#temperature').placeholder") == "0.6"
            browser.js("document.querySelector('#temperature').value = '0'; true")  # greedy: the trained answer
            # count DOM updates of the reasoning and the answer while they stream
            browser.js("""window.__updates = {reasoning: 0, answer: 0};
                new MutationObserver((ms) => { for (const m of ms) {
                    const t = m.target.nodeType === 3 ? m.target.parentElement : m.target;
                    if (t.closest('.reasoning-text')) window.__updates.reasoning++;
                    if (t.closest('.answer')) window.__updates.answer++; } })
                  .observe(document.querySelector('#log'), {subtree: true, childList: true, characterData: true}); true""")
            browser.js(
                "document.querySelector('#input').value = 'What is 2 plus 3?';"
                "document.querySelector('#form').requestSubmit(); true"
            )
            browser.wait_for("document.querySelectorAll('.assistant .usage')[0]?.textContent.length > 0")
            turn = browser.js("""(() => { const a = document.querySelector('.assistant');
                return {reasoning: a.querySelector('.reasoning-text').textContent, answer: a.querySelector('.answer').textContent,
                        shown: !a.querySelector('details.reasoning').hidden, open: a.querySelector('details.reasoning').open,
                        dim: getComputedStyle(a.querySelector('details.reasoning')).color,
                        answerColor: getComputedStyle(a.querySelector('.answer')).color,
                        summary: a.querySelector('summary').textContent, usage: a.querySelector('.usage').textContent}; })()""")
            assert turn["reasoning"] == "Add 2 and 3 to get 5."
            assert turn["answer"] == "5"
            assert turn["shown"] and turn["open"] and turn["summary"] == "Thought"
            assert turn["dim"] != turn["answerColor"]  # the reasoning is dimmed
            assert "cache hit" in turn["usage"] and "reasoning" in turn["usage"]
            updates = browser.js("window.__updates")
            assert updates["reasoning"] >= 2, f"the reasoning did not stream: {updates}"
            # the second turn carries the first one: the conversation is kept, and its prefix is a cache hit
            browser.js(
                "document.querySelector('#input').value = 'Say hi.';"
                "document.querySelector('#form').requestSubmit(); true"
            )
            browser.wait_for("document.querySelectorAll('.assistant .usage')[1]?.textContent.length > 0")
            second = browser.js("""(() => { const a = document.querySelectorAll('.assistant')[1];
                return {answer: a.querySelector('.answer').textContent, usage: a.querySelector('.usage').textContent,
                        reasoning: a.querySelector('.reasoning-text').textContent,
                        hit: Number(a.querySelector('.usage').dataset.cacheHit),
                        turns: document.querySelectorAll('.turn').length}; })()""")
            assert second["turns"] == 4
            # what the model says to a two-turn conversation it was never trained on is its own affair (floats
            # differ between CPUs); the page must show it, in the reasoning or the answer
            assert second["answer"] or second["reasoning"], second
            assert second["hit"] == 12 and "cache hit 12" in second["usage"]
            shot = base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"})["data"])
        finally:
            browser.close()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "serve-screenshot.png").write_bytes(shot)
    readme_copy = ROOT / "docs" / "serve-screenshot.png"  # refreshed on demand, so a test run leaves git clean
    if not readme_copy.exists() or os.environ.get("TINYSEEK_UPDATE_SCREENSHOT") == "1":
        readme_copy.parent.mkdir(exist_ok=True)
        readme_copy.write_bytes(shot)


def test_the_page_asks_a_single_problem_model_each_message_alone(r1_checkpoint, tmp_path):
    """A server whose model was trained on single problems (`/health`'s single_turn, as `tinyseek serve` sets it for
    a checkpoint of a task) gets each message alone from the page, which says so: the second question is answered
    as trained (with the first one in its prompt, this model's answer is noise)."""
    exe = find_chromium()
    tok, model = Tokenizer.load(r1_checkpoint), load_model(r1_checkpoint)
    cfg = ServeConfig(rate_limit=0, db=str(tmp_path / "usage.sqlite"), example="Say hi.", trained_on="three chats")
    cfg.single_turn = True
    app = create_app(Engine(model, tok, max_batch=4), tok, cfg)
    with serve_in_thread(app) as url:
        browser = Browser(exe, tmp_path / "chromium-profile")
        try:
            browser.open(url + "/")
            browser.wait_for(
                "document.querySelector('#input')?.placeholder.includes('each message is asked on its own')"
            )
            browser.js("document.querySelector('#temperature').value = '0'; true")
            for i, q in enumerate(["What is 2 plus 3?", "Say hi."]):
                browser.js(
                    f"document.querySelector('#input').value = '{q}'; document.querySelector('#form').requestSubmit(); true"
                )
                browser.wait_for(f"document.querySelectorAll('.assistant .usage')[{i}]?.textContent.length > 0")
            second = browser.js("""(() => { const a = document.querySelectorAll('.assistant')[1];
                return {answer: a.querySelector('.answer').textContent, usage: a.querySelector('.usage').textContent}; })()""")
        finally:
            browser.close()
    alone = len(tok.encode(tok.chat([{"role": "user", "content": "Say hi."}])))
    assert second["usage"].startswith(f"prompt {alone} tokens") and second["answer"] == "Hi there!", second
