"""A bounded soak of `tinyseek serve` on 127.0.0.1: 32 clients at once, for SOAK_S seconds or MAX_REQUESTS
requests (whichever comes first), streaming and not, greedy and sampled, n = 1 or 2, with and without a
shared system prompt (prefix-cache hits), a quarter of them walking away mid-answer (a stream closed after a
few chunks, a plain request cancelled while it waits).

What it bounds, after a warm-up (WARMUP_S: the prefix cache, a small 2 MiB budget here, fills and torch's
allocator settles):
- memory: this process's resident set (server and clients together) grows by at most RSS_MARGIN_MB;
- no status but 200: no 5xx, and no 4xx either (the queue holds every job 32 clients can have in flight);
- every slot freed: nothing running or waiting in the scheduler or the engine, every cache row free;
- every token billed once: one ledger row per request the server accepted, no request id twice, each answer's
  usage equal to its row, and the rows' completion tokens summing to exactly the tokens the engine generated.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import sqlite3
import time

import httpx
import pytest
from conftest import R1_CHATS

from tinyseek.checkpoint import load_model
from tinyseek.inference.engine import Engine
from tinyseek.serve.app import ServeConfig, create_app
from tinyseek.serve.cli import serve_in_thread
from tinyseek.tokenizer import Tokenizer

SOAK_S = 75.0
WARMUP_S = 15.0
MAX_REQUESTS = 3000
CLIENTS = 32
RSS_MARGIN_MB = 64
SYSTEM = "You are a careful assistant for arithmetic. Think step by step inside think tags, then answer."


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_soak_32_concurrent_clients(r1_checkpoint, tmp_path):
    tok, model = Tokenizer.load(r1_checkpoint), load_model(r1_checkpoint)
    engine = Engine(model, tok, max_batch=32)
    generated = [0]  # every token the engine hands out, counted apart from the server's own books
    step = engine.step

    def counting_step():
        events = step()
        generated[0] += sum(len(e.token_ids) for e in events)
        return events

    engine.step = counting_step
    db = tmp_path / "usage.sqlite"
    cfg = ServeConfig(rate_limit=0, max_queue=2 * CLIENTS, db=str(db), cache_budget_mb=2.0)
    app = create_app(engine, tok, cfg)
    sched = app.state.scheduler
    accepted = [0]
    submit = sched.submit

    def counting_submit(jobs):
        submit(jobs)
        accepted[0] += 1

    sched.submit = counting_submit
    rng = random.Random(0)
    results: list[dict] = []
    rss: list[tuple[float, float]] = []

    def body():
        q = rng.choice([R1_CHATS[rng.randrange(3)][0], f"What is {rng.randrange(10)} plus {rng.randrange(10)}?"])
        msgs = ([{"role": "system", "content": SYSTEM}] if rng.random() < 0.5 else []) + [
            {"role": "user", "content": q}
        ]
        b = {"model": "tinyseek", "messages": msgs, "max_tokens": rng.randint(1, 40), "n": rng.choice([1, 1, 2])}
        b["temperature"] = rng.choice([0, 1.0])
        if rng.random() < 0.5:
            b.update(stream=True, stream_options={"include_usage": True})
        return b

    async def one(client: httpx.AsyncClient, b: dict, leave: bool) -> dict:
        out = {"stream": bool(b.get("stream")), "left": leave, "n": b["n"]}
        if b.get("stream"):
            async with client.stream("POST", "/v1/chat/completions", json=b) as r:
                out["status"] = r.status_code
                quota = rng.randint(1, 4) if leave else None
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    c = json.loads(line[6:])
                    out["id"] = c.get("id")
                    if c.get("usage"):
                        out["usage"] = c["usage"]
                    if quota is not None:
                        quota -= 1
                        if quota == 0:
                            break  # leaving the block closes the connection mid-stream
            return out
        try:
            r = await asyncio.wait_for(
                client.post("/v1/chat/completions", json=b), rng.uniform(0.01, 0.3) if leave else None
            )
        except asyncio.TimeoutError:
            out["status"] = None  # we left before an answer
            return out
        out["status"] = r.status_code
        if r.status_code == 200:
            out["id"], out["usage"] = r.json()["id"], r.json()["usage"]
        return out

    elapsed = [0.0]

    async def main(url: str):
        t0 = time.monotonic()
        limits = httpx.Limits(max_connections=CLIENTS * 2)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

            async def worker():
                while time.monotonic() - t0 < SOAK_S and len(results) < MAX_REQUESTS:
                    results.append(await one(client, body(), rng.random() < 0.25))

            async def sample_rss():
                while time.monotonic() - t0 < SOAK_S:
                    rss.append((time.monotonic() - t0, rss_mb()))
                    await asyncio.sleep(1.0)

            await asyncio.gather(sample_rss(), *[worker() for _ in range(CLIENTS)])
        elapsed[0] = time.monotonic() - t0

    with serve_in_thread(app) as url:
        asyncio.run(main(url))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (sched.load()["running"] or sched.load()["waiting"] or engine.running):
            time.sleep(0.1)
        n_rows = lambda: sqlite3.connect(db).execute("SELECT COUNT(*) FROM requests").fetchone()[0]  # noqa: E731
        while time.monotonic() < deadline and n_rows() < accepted[0]:
            time.sleep(0.1)
        load = sched.load()
        free_rows = len(engine.free_rows)

    statuses = {r["status"] for r in results}
    done = [r for r in results if r.get("usage") is not None]
    left = sum(r["left"] for r in results)
    after = [m for t, m in rss if t >= WARMUP_S]
    print(
        f"soak: {len(results)} requests in {elapsed[0]:.0f} s ({len(done)} answered whole, {left} left early), "
        f"{generated[0]} tokens; RSS {after[0]:.0f} MB after warm-up, max {max(after):.0f} MB"
    )
    # no errors at all; the client gave up on some, nothing else
    assert statuses <= {200, None}, statuses
    assert len(results) > 200 and len(done) > 100 and left > 20
    # memory flat after the warm-up
    assert max(after) - after[0] <= RSS_MARGIN_MB, rss
    # every slot freed
    assert (load["running"], load["waiting"]) == (0, 0)
    assert not engine.running and not engine.seqs and not any(engine.waiting)
    assert free_rows == engine.max_batch
    # every token billed once
    got = sqlite3.connect(db).execute("SELECT request_id, prompt_cache_hit_tokens, completion_tokens FROM requests")
    got = got.fetchall()
    rows = {rid: (hit, comp) for rid, hit, comp in got}
    assert len(got) == len(rows) == accepted[0]  # one row per accepted request, none twice
    for r in done:
        u = r["usage"]
        assert rows[r["id"]] == (u["prompt_cache_hit_tokens"], u["completion_tokens"]), r
    assert sum(comp for _, comp in rows.values()) == generated[0]
    assert any(hit for hit, _ in rows.values())  # the shared system prompt did hit the prefix cache
