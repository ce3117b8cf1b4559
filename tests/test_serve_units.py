"""`tinyseek serve` parts on their own: the prefix cache, the reasoning splitter, the ledger and
`tinyseek usage`, the rate limiter, the app's pieces (jobs from a request, the consumer, billing, admission), the
loopback rule, and the `tinyseek serve` command as a process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyseek.errors import TinyseekError
from tinyseek.inference.sampling import SamplingParams, derive_seed
from tinyseek.serve.app import (
    Call,
    RateLimiter,
    ServeConfig,
    Service,
    _ClientGone,
    consume,
    reasoning_deltas,
    sampling_params,
)
from tinyseek.serve.cli import _is_loopback, cli_serve
from tinyseek.serve.ledger import ApiKeys, Ledger, Prices, cli_usage, key_digest, key_id
from tinyseek.serve.prefix_cache import BlockCache
from tinyseek.serve.protocol import APIError, ChatRequest, CompletionRequest
from tinyseek.serve.reasoning import CONTENT, REASONING, ReasoningSplitter, reasoning_tokens
from tinyseek.serve.scheduler import Job
from tinyseek.tokenizer import Tokenizer

# -- prefix cache --------------------------------------------------------------------------------


def rows_for(ids, width=3):
    """Fake cache rows whose values identify (position, token): [n, width]."""
    t = torch.tensor(ids, dtype=torch.float32)
    return [torch.stack([t * 10 + k for k in range(width)], dim=1) + torch.arange(len(ids))[:, None] * 1000]


def test_prefix_cache_hits_whole_blocks_and_leaves_the_last_token():
    pc = BlockCache(block_size=4, budget_bytes=1 << 20)
    ids = list(range(10))  # blocks [0..3] [4..7], 2 tokens left over
    assert pc.insert(ids, rows_for(ids)) == 2
    hit = pc.lookup(ids)
    assert hit.n_tokens == 8
    assert torch.equal(hit.tensors[0], rows_for(ids)[0][:8])
    assert pc.lookup(ids[:8]).n_tokens == 4  # the last prompt token is always recomputed
    assert pc.lookup(ids[:9]).n_tokens == 8
    other = [0, 1, 2, 3, 99, 5, 6, 7, 8]  # agrees with the first block only
    assert pc.lookup(other).n_tokens == 4
    assert pc.lookup([5] + ids).n_tokens == 0  # same blocks at another offset are another prefix


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 2), min_size=1, max_size=14)), min_size=1, max_size=25),
    st.sampled_from([1 << 20, 200, 100]),
)
def test_prefix_cache_against_a_brute_force_reference(ops, budget):
    """Random inserts and lookups over a 3-token alphabet (many shared prefixes): a hit is never longer than
    the longest block-aligned prefix shared with an inserted prompt, equals it while nothing was evicted,
    and always returns exactly the rows of those tokens; the byte budget always holds."""
    bs = 2
    pc = BlockCache(block_size=bs, budget_bytes=budget)
    inserted: list[list[int]] = []
    for is_insert, ids in ops:
        if is_insert:
            pc.insert(ids, rows_for(ids))
            inserted.append(ids)
            assert pc.nbytes <= budget
            continue
        hit = pc.lookup(ids)
        best = 0
        for other in inserted:
            n = 0
            while n < min(len(ids), len(other)) and ids[n] == other[n]:
                n += 1
            best = max(best, min(n, len(other)) // bs * bs)
        best = min(best, (len(ids) - 1) // bs * bs)
        assert hit.n_tokens % bs == 0 and hit.n_tokens <= best
        if pc.evictions == 0:
            assert hit.n_tokens == best
        if hit.n_tokens:
            assert torch.equal(hit.tensors[0], rows_for(ids)[0][: hit.n_tokens])


def test_prefix_cache_lru_eviction_under_a_byte_budget():
    block_bytes = 4 * 3 * 4  # 4 tokens x width 3 x float32
    pc = BlockCache(block_size=4, budget_bytes=3 * block_bytes)
    a, b = list(range(100, 109)), list(range(200, 209))
    pc.insert(a, rows_for(a))  # 2 blocks
    assert pc.nbytes == 2 * block_bytes
    pc.insert(b, rows_for(b))  # 2 more: one must go, and it is a's leaf (least recently used, leaf first)
    assert pc.nbytes == 3 * block_bytes and pc.evictions == 1
    assert pc.lookup(a).n_tokens == 4 and pc.lookup(b).n_tokens == 8
    pc.lookup(a)  # a's root becomes the most recent; the next insert evicts b's leaf
    c = list(range(300, 305))
    pc.insert(c, rows_for(c))
    assert pc.nbytes <= pc.budget_bytes
    assert pc.lookup(a).n_tokens == 4 and pc.lookup(c).n_tokens == 4 and pc.lookup(b).n_tokens == 4


def test_prefix_cache_served_rows_give_the_same_greedy_tokens_as_a_fresh_prefill(one_thread):
    """The fast path (rows from the cache) against the reference (no cache) on a random nano model."""
    from tinyseek.config import ModelConfig
    from tinyseek.inference.engine import Engine
    from tinyseek.inference.sampling import SamplingParams
    from tinyseek.inference.sequence import PromptRows
    from tinyseek.model import Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("nano")).eval()
    g = torch.Generator().manual_seed(1)
    shared = torch.randint(0, 256, (40,), generator=g).tolist()
    prompts = [shared + torch.randint(0, 256, (k,), generator=g).tolist() for k in (1, 5, 17)]
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    pc = BlockCache(block_size=8)
    eng = Engine(model, max_batch=2)
    rid = eng.add_request(prompts[0], params, capture_prompt_cache=True)
    while eng.has_unfinished():
        for ev in eng.step():
            if ev.prompt_cache is not None:
                pc.insert(list(ev.prompt_cache.token_ids), ev.prompt_cache.tensors)
    eng.collect(rid)
    for p in prompts[1:]:
        hit = pc.lookup(p)
        assert hit.n_tokens == 40
        rid = eng.add_request(p, params, prefix=PromptRows(tuple(p[:40]), hit.tensors))
        while eng.has_unfinished():
            eng.step()
        cached = eng.collect(rid).token_ids
        ((fresh,),) = Engine(model, max_batch=1).generate([p], params)
        assert cached == fresh.token_ids


# -- reasoning / answer split ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    texts = ["hello world, the answer is 42. Add 2 and 3 to get 5. héllo 你好 😀"] * 5
    return Tokenizer.train(texts, 300)


def split(text, start_in_reasoning=False, pieces=None):
    """Feed `text` in `pieces` (default: one character at a time, so every tag arrives cut up)."""
    sp = ReasoningSplitter(start_in_reasoning)
    cuts = pieces if pieces is not None else [text[i : i + 1] for i in range(len(text))]
    deltas = [d for piece in cuts for d in sp.feed(piece)] + sp.finish()
    return sp, deltas


def test_split_reasoning_then_answer_tags_dropped(tok):
    text = "<think>\nAdd 2 and 3 to get 5.\n</think>\n<answer>5</answer>"
    sp, deltas = split(text)
    assert sp.result() == ("Add 2 and 3 to get 5.", "5")
    fields = [f for f, _ in deltas]
    assert fields == sorted(fields, key=lambda f: f == CONTENT) and fields.count(REASONING) >= 2
    assert "".join(t for f, t in deltas if f == REASONING) == "Add 2 and 3 to get 5."
    ids = tok.encode(text) + [tok.eos_id]
    think, end = tok.token_id("<think>"), tok.token_id("</think>")
    assert reasoning_tokens(ids, think, end) == ids.index(end) + 1


def test_split_without_reasoning_and_forced_reasoning(tok):
    sp, _ = split("hello world")
    assert sp.result() == (None, "hello world")
    think, end = tok.token_id("<think>"), tok.token_id("</think>")
    assert reasoning_tokens(tok.encode("hello world"), think, end) == 0
    sp, _ = split("the answer\n</think>\n42", start_in_reasoning=True)
    assert sp.result() == ("the answer", "42")
    ids = tok.encode("the answer\n</think>\n42")
    assert reasoning_tokens(ids, think, end, start_in_reasoning=True) == ids.index(end) + 1
    assert reasoning_tokens(tok.encode("<think>\nstill thinking"), think, end) == len(
        tok.encode("<think>\nstill thinking")
    )
    sp, _ = split("</think>42")  # a stray end tag first: straight to the answer
    assert sp.result() == (None, "42")


def test_split_never_shows_a_tag_and_survives_a_missing_think():
    """A model that does not open with <think> (an undertrained one, or R1-Zero's template, which leaves a space
    first): no tag text reaches `content` or `reasoning_content` (before: '</think>\\n</think>' leaked)."""
    assert split("12</think>\n</think>")[0].result() == (None, "12")
    assert split(" <think> 5+3+0=08 </think> <answer> 8 </answer>")[0].result() == ("5+3+0=08", "8")
    assert split("<think>\n5+3\n<answer>8</answer>")[0].result() == ("5+3", "8")  # no </think>: <answer> ends it
    assert split("<answer>56</answer>")[0].result() == (None, "56")
    assert split("a<think>b</think>c<answer>d</answer>")[0].result() == (None, "abcd")
    g = torch.Generator().manual_seed(1)
    words = ["<think>", "</think>", "<answer>", "</answer>", "\n", " ", "a", "42", "你好"]
    for trial in range(300):
        n = int(torch.randint(0, 12, (1,), generator=g))
        text = "".join(words[int(i)] for i in torch.randint(0, len(words), (n,), generator=g))
        sp, deltas = split(text, trial % 4 == 0)
        shown = [sp.result()[0] or "", sp.result()[1], *(t for _, t in deltas)]
        assert not any(tag in part for part in shown for tag in words[:4]), (text, shown)


def test_split_is_the_same_however_the_text_is_cut():
    """The streaming path (pieces of any size, tags cut anywhere) against the reference (the text fed whole)."""
    g = torch.Generator().manual_seed(0)
    words = [
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        "\n",
        " ",
        "a",
        "bc",
        "4",
        "2",
        "你好",
        "<",
        "th",
        ">",
        "ink",
    ]
    for trial in range(200):
        text = "".join(
            words[int(i)]
            for i in torch.randint(0, len(words), (int(torch.randint(0, 14, (1,), generator=g)),), generator=g)
        )
        whole, _ = split(text, trial % 5 == 0, pieces=[text])
        cuts = sorted(set(torch.randint(0, len(text) + 1, (4,), generator=g).tolist())) if text else []
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        cut_up, deltas = split(text, trial % 5 == 0, pieces=pieces)
        assert cut_up.result() == whole.result(), (text, pieces)
        content = "".join(t for f, t in deltas if f == CONTENT)
        assert content == whole.result()[1], (text, pieces)


# -- ledger, prices, `tinyseek usage` -------------------------------------------------------------


def test_api_keys_are_held_hashed_and_compared_in_constant_time(monkeypatch):
    import hashlib
    import hmac

    keys = ApiKeys(["sk-short", "sk-a-much-longer-key-than-the-other", "sha256:" + hashlib.sha256(b"sk-h").hexdigest()])
    assert keys.check("sk-short") == key_id("sk-short")
    assert keys.check("sk-a-much-longer-key-than-the-other") == key_id("sk-a-much-longer-key-than-the-other")
    assert keys.check("sk-h") == key_id("sk-h") == key_id("sha256:" + hashlib.sha256(b"sk-h").hexdigest())
    for wrong in ("", "sk-shor", "sk-short ", "sha256:" + hashlib.sha256(b"sk-h").hexdigest()):
        assert keys.check(wrong) is None, wrong  # the hashed form is not itself a key
    assert all(h.startswith("sha256:") and "sk-" not in h for h in keys.hashed())
    assert "sk-short" not in repr(vars(keys))  # only digests are kept
    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for presented in ("sk-short", "nope", "x" * 500):
        calls.clear()
        keys.check(presented)
        assert calls == [(32, 32)] * 3  # every key, whatever matched, always 32-byte digests
    with pytest.raises(TinyseekError, match="64 hex digits"):
        key_digest("sha256:abc")


def test_ledger_totals_cost_and_usage_command(tmp_path, capsys):
    db = tmp_path / "u.sqlite"
    led = Ledger(db, Prices(cache_hit=1.0, cache_miss=4.0, output=16.0))
    day1, day2 = 1_700_000_000.0, 1_700_000_000.0 + 86400
    assert led.record(key_id("sk-a"), "tinyseek", "r1", 10, 5, 7, 3, now=day1) == pytest.approx((10 + 20 + 112) / 1e6)
    led.record(key_id("sk-a"), "tinyseek", "r2", 0, 8, 2, 0, now=day2)
    led.record(key_id("sk-b"), "tinyseek", "r3", 16, 0, 1, 1, now=day1)
    (a,) = led.totals(key_id("sk-a"))
    assert (a["requests"], a["prompt_tokens"], a["completion_tokens"], a["reasoning_tokens"]) == (2, 23, 9, 3)
    assert a["cost_usd"] == pytest.approx((10 * 1 + 13 * 4 + 9 * 16) / 1e6)
    days = sorted((r["key_id"], r["day"], r["requests"]) for r in led.totals(by_day=True))
    assert days == sorted(
        [(key_id("sk-a"), "2023-11-14", 1), (key_id("sk-a"), "2023-11-15", 1), (key_id("sk-b"), "2023-11-14", 1)]
    )
    led.close()
    assert b"sk-a" not in db.read_bytes()  # keys are never stored, only their hash ids
    assert cli_usage(["--db", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["key", "day", "requests"] and len(out) == 4
    assert any(key_id("sk-b") in line and "2023-11-14" in line for line in out)
    with pytest.raises(TinyseekError, match="no such ledger"):
        cli_usage(["--db", str(tmp_path / "missing.sqlite")])
    (tmp_path / "junk.sqlite").write_text("not a database" * 100)
    with pytest.raises(TinyseekError, match="junk.sqlite"):
        Ledger(tmp_path / "junk.sqlite")


def test_rate_limiter_sliding_window():
    rl = RateLimiter(per_minute=2)
    assert rl.check("k", now=0.0) == 0 and rl.check("k", now=1.0) == 0
    assert rl.check("k", now=2.0) == pytest.approx(58.0)
    assert rl.check("other", now=2.0) == 0
    assert rl.check("k", now=60.5) == 0  # the first request left the window
    assert RateLimiter(0).check("k") == 0


# -- the app's pieces, each alone (no server, no model) -------------------------------------------


def service(tok, tmp_path, **cfg) -> Service:
    """A `Service` over a stand-in engine: a 48-token context; nothing here runs the model."""
    engine = SimpleNamespace(max_len=48, max_batch=4, cfg=SimpleNamespace(vocab_size=tok.vocab_size))
    return Service(engine, tok, ServeConfig(db=str(tmp_path / "usage.sqlite"), **cfg))


def call_of(prompts, n, outputs=None, cached=None) -> Call:
    """A call whose choice c generated outputs[c] (then finished), with cached[c] prompt tokens from the cache."""
    jobs = [Job(prompts[c // n], SamplingParams(), None, None, index=c) for c in range(len(prompts) * n)]
    for c, job in enumerate(jobs):
        if outputs is not None:
            job.token_ids, job.done = list(outputs[c]), True
        job.cached_tokens = cached[c] if cached else 0
    return Call("key-x", "cmpl-1", prompts, n, jobs, asyncio.Queue())


def test_build_call_makes_n_jobs_a_prompt_each_choice_seeded_by_its_index(tok, tmp_path):
    svc = service(tok, tmp_path)
    req = CompletionRequest(model="tinyseek", prompt=[[1, 2], [3]], n=2, seed=5, temperature=0.5, stop="x")
    call = svc.build_call("k", "cmpl-1", [[1, 2], [3]], req, 7, None, top_k=3)
    assert [(j.index, j.prompt_ids) for j in call.jobs] == [(0, [1, 2]), (1, [1, 2]), (2, [3]), (3, [3])]
    assert [j.params.seed for j in call.jobs] == [derive_seed(5, c) for c in range(4)]
    assert len({j.params.seed for j in call.jobs}) == 4  # copies of one prompt sample independently
    for j in call.jobs:
        p = j.params
        # top_p left out: the server's default, R1's recommended 0.95 (`tinyseek serve --top-p`)
        assert (p.max_new_tokens, p.temperature, p.top_p, p.top_k, p.stop_strings) == (7, 0.5, 0.95, 3, ("x",))
        assert j.queue is call.queue and j.use_cache and not j.token_ids
    assert call.finish == [None] * 4 and call.usage is None
    # the chat endpoint reads the fields both share the same way: choice 1 of either samples alike
    chat = ChatRequest(model="tinyseek", messages=[{"role": "user", "content": "hi"}], n=2, seed=5, temperature=0.5,
                       stop="x")  # fmt: skip
    assert sampling_params(chat, 7, 1) == sampling_params(req, 7, 1)
    bare = ChatRequest(model="tinyseek", messages=[{"role": "user", "content": "hi"}])
    assert (sampling_params(bare, 7, 0).temperature, sampling_params(bare, 7, 0).top_p) == (0.6, 0.95)
    other = service(tok, tmp_path, temperature=1.0, top_p=1.0).build_call("k", "c", [[1]], bare, 7, None)
    assert (other.jobs[0].params.temperature, other.jobs[0].params.top_p) == (1.0, 1.0)
    assert sampling_params(chat, 7, 1, presence_penalty=0.5).presence_penalty == 0.5
    with pytest.raises(APIError) as e:  # what the sampler refuses is the client's doing: 422, not a 500
        sampling_params(req, 7, 0, top_k=-2)
    assert e.value.status == 422 and "top_k" in e.value.message


def test_prompts_from_a_request_and_their_context_checks(tok, tmp_path):
    svc = service(tok, tmp_path, default_max_tokens=8)
    msgs = [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hello world"}]
    prompt, max_tokens = svc.chat_prompt(ChatRequest(model="tinyseek", messages=msgs))
    as_system = [{"role": "system", "content": "be brief"}, msgs[1]]
    assert prompt == tok.encode(tok.chat(as_system, add_generation_prompt=True)) and max_tokens == 8
    _, max_tokens = svc.chat_prompt(ChatRequest(model="tinyseek", messages=msgs, max_completion_tokens=3))
    assert max_tokens == 3
    with pytest.raises(APIError) as e:
        svc.chat_prompt(ChatRequest(model="tinyseek", messages=msgs, max_tokens=48))
    assert (e.value.status, e.value.code) == (400, "context_length_exceeded") and "48 tokens" in e.value.message
    for prompt, ids in (
        ("hello", [tok.encode("hello", add_special=True)]),
        ([1, 2], [[1, 2]]),
        ([[1], [2]], [[1], [2]]),
    ):
        assert svc.completion_prompts(CompletionRequest(model="tinyseek", prompt=prompt, max_tokens=4)) == ids
    for prompt, status in (([[1, tok.vocab_size]], 422), ([[1] * 45], 400)):
        with pytest.raises(APIError) as e:
            svc.completion_prompts(CompletionRequest(model="tinyseek", prompt=prompt, max_tokens=4))
        assert e.value.status == status and e.value.message.startswith("prompt[0]:")
    svc.check_model("deepseek-reasoner")  # an alias is served
    with pytest.raises(APIError) as e:
        svc.check_model("gpt-4")
    assert (e.value.status, e.value.code) == (404, "model_not_found")


def test_the_consumer_turns_engine_events_into_reasoning_and_content_deltas():
    events = [
        (0, "step", ("<think>\nAdd 2", None)),
        (1, "step", ("Hi", None)),
        (0, "step", (" and 3.\n</think>\n<ans", None)),
        (1, "step", ("", None)),
        (0, "step", ("wer>5</answer>", "stop")),
        (0, "step", ("late", None)),  # nothing after a choice's last event counts
        (1, "step", (" there", "length")),
    ]

    async def run():
        call = call_of([[1, 2]], 2)
        for e in events:
            call.queue.put_nowait(e)
        splitters = [ReasoningSplitter() for _ in call.jobs]
        return call, splitters, [d async for d in reasoning_deltas(call, splitters)]

    call, splitters, deltas = asyncio.run(run())
    assert deltas == [
        (0, [(REASONING, "Add 2")], None),
        (1, [(CONTENT, "Hi")], None),
        (0, [(REASONING, " and 3.")], None),
        (1, [], None),
        (0, [(CONTENT, "5")], "stop"),
        (1, [(CONTENT, " there")], "length"),
    ]
    assert call.finish == ["stop", "length"] and call.queue.empty()
    assert [sp.result() for sp in splitters] == [("Add 2 and 3.", "5"), (None, "Hi there")]


def test_the_consumer_raises_on_an_engine_error_and_on_a_client_that_left():
    async def run(events, disconnected=None):
        call = call_of([[1, 2]], 1)
        for e in events:
            call.queue.put_nowait(e)
        return [d async for d in consume(call, disconnected)]

    assert asyncio.run(run([(0, "step", ("a", None)), (0, "step", ("b", "stop"))])) == [
        (0, "a", None),
        (0, "b", "stop"),
    ]
    with pytest.raises(APIError) as e:
        asyncio.run(run([(0, "step", ("a", None)), (0, "error", "engine error: boom")]))
    assert (e.value.status, e.value.code, e.value.message) == (500, "engine_error", "engine error: boom")

    async def gone():
        return True

    with pytest.raises(_ClientGone):  # polled while no event comes
        asyncio.run(run([(0, "step", ("a", None))], gone))


def test_billing_a_finished_call_counts_once_and_records_what_it_returns(tok, tmp_path):
    svc = service(tok, tmp_path)
    think, end, eos = tok.token_id("<think>"), tok.token_id("</think>"), tok.eos_id
    outputs = [[think, 7, end, 8, eos], [9, 10], [think, 7, 7], []]  # choice 2 still reasoning at its last token
    call = call_of([[1, 2, 3, 4, 5, 6], [1, 2, 3]], 2, outputs, cached=[4, 4, 2, 0])
    svc.close(call)  # every choice is done: billed at once
    usage = {
        "prompt_tokens": 9,  # each prompt once, whatever n
        "completion_tokens": 10,
        "total_tokens": 19,
        "prompt_cache_hit_tokens": 6,  # each prompt's first choice: 4 + 2
        "prompt_cache_miss_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 6},
        "completion_tokens_details": {"reasoning_tokens": 6},  # through </think> (3), or all while reasoning (3)
    }
    assert call.usage == usage
    assert svc.bill(call) is call.usage  # the same numbers again, not billed twice
    (row,) = svc.ledger.totals("key-x")
    assert row["requests"] == 1
    assert {k: row[k] for k in ("prompt_cache_hit_tokens", "prompt_cache_miss_tokens", "completion_tokens")} == {
        "prompt_cache_hit_tokens": 6,
        "prompt_cache_miss_tokens": 3,
        "completion_tokens": 10,
    }
    assert row["reasoning_tokens"] == 6


def test_admission_counts_the_rate_then_queues_the_jobs(tok, tmp_path):
    svc = service(tok, tmp_path, rate_limit=1, max_queue=2)
    svc.admit("key-a", call_of([[1]], 2).jobs)
    with pytest.raises(APIError) as e:
        svc.admit("key-a", call_of([[1]], 1).jobs)
    assert (e.value.status, e.value.code) == (429, "rate_limit_exceeded") and int(e.value.headers["Retry-After"]) >= 1
    with pytest.raises(APIError) as e:  # another key is within its rate, but the queue holds two jobs already
        svc.admit("key-b", call_of([[1]], 1).jobs)
    assert (e.value.status, e.value.headers) == (503, {"Retry-After": "1"})
    assert svc.scheduler.load()["waiting"] == 2


# -- the command ------------------------------------------------------------------------------------


def test_serve_refuses_a_public_host_without_a_key(tmp_path):
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.5")
    with pytest.raises(TinyseekError, match="--api-key"):
        cli_serve([str(tmp_path), "--host", "0.0.0.0"])
    # with a key, or told --insecure, it goes on (and stops at the missing checkpoint instead)
    for extra in (["--api-key", "sk-x"], ["--insecure"]):
        with pytest.raises(TinyseekError, match="no such checkpoint"):
            cli_serve([str(tmp_path / "missing"), "--host", "0.0.0.0", *extra])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_process(ckpt, port: int, db, key: str) -> subprocess.Popen:
    """`tinyseek serve` as a process on the loopback, once /health answers."""
    cmd = [sys.executable, "-m", "tinyseek.cli", "serve", str(ckpt), "--port", str(port), "--db", str(db),
           "--api-key", key, "--max-batch", "2", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the server did not come up: {proc.stdout.read().decode()[-3000:]}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_serve_command_runs_as_a_process(r1_checkpoint, tmp_path):
    port = free_port()
    db = tmp_path / "ledger.sqlite"
    proc = serve_process(r1_checkpoint, port, db, "sk-proc")
    try:
        url = f"http://127.0.0.1:{port}"
        body = {
            "model": "tinyseek",
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 40,
            "temperature": 0,
        }
        r = httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-proc"}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "Hi there!"
        assert httpx.post(url + "/v1/chat/completions", json=body, timeout=60).status_code == 401
    finally:
        stop(proc)
    rows = sqlite3.connect(db).execute("SELECT key_id, completion_tokens FROM requests").fetchall()
    assert rows == [(key_id("sk-proc"), r.json()["usage"]["completion_tokens"])]


def _stream_chat(url: str, key: str, prompt: str, seen: dict) -> None:
    """One streamed chat completion; `seen` gets its id, its usage chunk and [DONE] as they arrive (the server may
    die under it)."""
    body = {"model": "tinyseek", "messages": [{"role": "user", "content": prompt}], "max_tokens": 40,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {key}"}, timeout=120) as r:  # fmt: skip
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    obj = json.loads(line[6:])
                    seen["id"] = obj["id"]
                    if obj.get("usage"):
                        seen["usage"] = obj["usage"]
                elif line == "data: [DONE]":
                    seen["done"] = True
    except httpx.HTTPError:
        pass


_ROWS = "SELECT id, request_id, key_id, completion_tokens, cost_usd FROM requests ORDER BY id"


@pytest.mark.slow
def test_server_killed_mid_stream_and_restarted_bills_each_finished_request_once(r1_checkpoint, tmp_path):
    """SIGKILL of `tinyseek serve` while 16 streams run (two decode at a time, the rest queue), then a restart on
    the same ledger: every stream the client saw finish (usage chunk, [DONE]) is billed once, with the tokens it
    was shown; the restart replays the ledger's log and adds only the new requests; the API key still works."""
    import signal
    import threading

    from conftest import R1_CHATS

    port, db, key = free_port(), tmp_path / "usage.sqlite", "sk-crash"
    url = f"http://127.0.0.1:{port}"
    proc = serve_process(r1_checkpoint, port, db, key)
    seen = [{} for _ in range(16)]
    try:
        threads = [
            threading.Thread(target=_stream_chat, args=(url, key, R1_CHATS[i % 3][0], seen[i])) for i in range(16)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while sum("done" in s for s in seen) < 3:  # kill once a few have finished, the rest in flight or queued
            assert proc.poll() is None and time.monotonic() < deadline, "the streams did not finish"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        for t in threads:
            t.join(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    finished = [s for s in seen if "done" in s]
    assert 3 <= len(finished) < 16, len(finished)  # the kill landed mid-run
    assert all("usage" in s for s in finished)
    assert Path(f"{db}-wal").exists()  # the log the killed server left: replayed by the next opening
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    before = con.execute(_ROWS).fetchall()
    con.close()
    rids = [r[1] for r in before]
    assert len(set(rids)) == len(rids) and {r[2] for r in before} == {key_id(key)}
    for s in finished:  # billed once, with the numbers the client was shown
        (row,) = [r for r in before if r[1] == s["id"]]
        assert row[3] == s["usage"]["completion_tokens"]

    proc = serve_process(r1_checkpoint, port, db, key)  # the same port, the same ledger
    try:
        auth = {"Authorization": f"Bearer {key}"}
        u = httpx.get(url + "/v1/usage", headers=auth, timeout=30).json()
        assert u["requests"] == len(before)
        after = [{} for _ in range(2)]
        for s in after:
            _stream_chat(url, key, "Say hi.", s)
            assert "done" in s and "usage" in s
        assert httpx.get(url + "/v1/usage", headers={"Authorization": "Bearer sk-wrong"}, timeout=30).status_code == 401
    finally:
        stop(proc)
    con = sqlite3.connect(db)
    rows = con.execute(_ROWS).fetchall()
    con.close()
    assert rows[: len(before)] == before  # nothing replayed, nothing billed again
    assert [r[1] for r in rows[len(before) :]] == [s["id"] for s in after]
