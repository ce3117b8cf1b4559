"""`tinyseek serve`: error statuses and shapes, keys, rate limits, the queue bound, disconnects, the ledger,
and a bounded schemathesis fuzz run (no 5xx), all against a live server on 127.0.0.1 running the real engine."""

from __future__ import annotations

import hashlib
import time

import httpx
import openai
import pytest

from tinyseek.checkpoint import load_model
from tinyseek.inference.engine import Engine
from tinyseek.serve.app import ServeConfig, create_app
from tinyseek.serve.cli import serve_in_thread
from tinyseek.serve.ledger import Ledger, Prices, key_id
from tinyseek.tokenizer import Tokenizer

pytestmark = pytest.mark.timeout(300)

K1, K2, K3 = "sk-test-one", "sk-test-two", "sk-test-three"
PRICES = Prices(cache_hit=0.5, cache_miss=2.0, output=8.0)


@pytest.fixture(scope="module")
def parts(r1_checkpoint):
    return Tokenizer.load(r1_checkpoint), load_model(r1_checkpoint)


@pytest.fixture(scope="module")
def keyed(parts, tmp_path_factory):
    """Keys K1..K3, 4 requests a minute per key, a queue of one job."""
    tok, model = parts
    db = tmp_path_factory.mktemp("keyed") / "usage.sqlite"
    k3 = "sha256:" + hashlib.sha256(K3.encode()).hexdigest()  # a key may be configured by its digest alone
    cfg = ServeConfig(api_keys=(K1, K2, k3), rate_limit=4, max_queue=1, db=str(db), prices=PRICES)
    app = create_app(Engine(model, tok, max_batch=4), tok, cfg)
    assert not {K1, K2} & set(app.state.config.api_keys)  # the server holds digests, not keys
    with serve_in_thread(app) as url:
        yield url, app, db


def post(url, body=None, key=K1, raw=None, path="/v1/chat/completions", method="POST"):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if raw is not None:
        headers["Content-Type"] = "application/json"
        return httpx.request(method, url + path, content=raw, headers=headers, timeout=60)
    return httpx.request(method, url + path, json=body, headers=headers, timeout=60)


OK = {"model": "tinyseek", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}

# (name, request kwargs, status, error type, param) — param None means "not checked"
CASES = [
    ("no key", dict(body=OK, key=None), 401, "authentication_error", None),
    ("wrong key", dict(body=OK, key="sk-nope"), 401, "authentication_error", None),
    ("not json", dict(raw=b"{not json"), 400, "invalid_request_error", "body"),
    ("not an object", dict(raw=b"[1, 2]"), 400, "invalid_request_error", "body"),
    ("missing messages", dict(body={"model": "tinyseek"}), 400, "invalid_request_error", "messages"),
    ("missing model", dict(body={"messages": OK["messages"]}), 400, "invalid_request_error", "model"),
    ("messages wrong type", dict(body={**OK, "messages": "hi"}), 400, "invalid_request_error", "messages"),
    ("max_tokens wrong type", dict(body={**OK, "max_tokens": "lots"}), 400, "invalid_request_error", "max_tokens"),
    (
        "content wrong type",
        dict(body={**OK, "messages": [{"role": "user", "content": 5}]}),
        400,
        "invalid_request_error",
        "messages[0].content",
    ),
    ("empty messages", dict(body={**OK, "messages": []}), 422, "invalid_request_error", "messages"),
    ("temperature too high", dict(body={**OK, "temperature": 5}), 422, "invalid_request_error", "temperature"),
    ("top_p zero", dict(body={**OK, "top_p": 0}), 422, "invalid_request_error", "top_p"),
    ("n zero", dict(body={**OK, "n": 0}), 422, "invalid_request_error", "n"),
    ("max_tokens zero", dict(body={**OK, "max_tokens": 0}), 422, "invalid_request_error", "max_tokens"),
    (
        "penalty out of range",
        dict(body={**OK, "presence_penalty": 3}),
        422,
        "invalid_request_error",
        "presence_penalty",
    ),
    (
        "tool role",
        dict(body={**OK, "messages": [{"role": "tool", "content": "x"}]}),
        422,
        "invalid_request_error",
        "messages[0].role",
    ),
    (
        "json_object refused",
        dict(body={**OK, "response_format": {"type": "json_object"}}),
        422,
        "invalid_request_error",
        "response_format.type",
    ),
    ("empty stop", dict(body={**OK, "stop": [""]}), 422, "invalid_request_error", "stop"),
    ("logprobs refused", dict(body={**OK, "logprobs": True}), 422, "invalid_request_error", "logprobs"),
    (
        "tools refused",
        dict(body={**OK, "tools": [{"type": "function", "function": {"name": "f"}}]}),
        422,
        "invalid_request_error",
        "tools",
    ),
    ("unknown model", dict(body={**OK, "model": "gpt-9"}), 404, "invalid_request_error", "model"),
    ("context exceeded", dict(body={**OK, "max_tokens": 100000}), 400, "invalid_request_error", "messages"),
    ("unknown path", dict(body=OK, path="/v1/nothing"), 404, "invalid_request_error", None),
    ("wrong method", dict(body=None, path="/v1/chat/completions", method="GET"), 405, "invalid_request_error", None),
    ("models without key", dict(key=None, path="/v1/models", method="GET"), 401, "authentication_error", None),
    ("usage without key", dict(key=None, path="/v1/usage", method="GET"), 401, "authentication_error", None),
    ("queue full", dict(body={**OK, "n": 2}), 503, "server_error", None),
    (
        "body too large",
        dict(raw=b'{"model": "tinyseek", "messages": [], "pad": "' + b"x" * (5 << 20) + b'"}'),
        413,
        "invalid_request_error",
        "body",
    ),
]


@pytest.mark.parametrize("name,kwargs,status,etype,param", CASES, ids=[c[0] for c in CASES])
def test_error_table(keyed, name, kwargs, status, etype, param):
    url, _, _ = keyed
    r = post(url, **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == etype and err["message"]
    if param is not None:
        assert err["param"] == param
    if name == "context exceeded":
        assert "256" in err["message"] and "100000" in err["message"] and err["code"] == "context_length_exceeded"


def test_body_over_the_limit_without_a_length_gets_413(keyed):
    """A chunked body (no Content-Length to refuse up front) is cut off while it is read."""
    url, _, _ = keyed

    def chunks():
        yield b'{"model": "tinyseek", "messages": [], "pad": "'
        for _ in range(6):
            yield b"x" * (1 << 20)
        yield b'"}'

    headers = {"Authorization": f"Bearer {K1}", "Content-Type": "application/json"}
    r = httpx.post(url + "/v1/chat/completions", content=chunks(), headers=headers, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_rate_limit_per_key(keyed):
    url, _, _ = keyed
    codes = [post(url, OK, key=K2).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 200, 429]
    r = post(url, OK, key=K2)
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error" and "Retry-After" in r.headers
    assert post(url, {**OK, "max_tokens": 1}, key=K1).status_code == 200  # another key is not limited


def test_models_and_health(keyed):
    url, _, _ = keyed
    ids = [m.id for m in openai.OpenAI(base_url=url + "/v1", api_key=K1, max_retries=0).models.list()]
    assert ids[0] == "tinyseek" and "deepseek-reasoner" in ids
    h = httpx.get(url + "/health").json()
    assert h["status"] == "ok" and h["max_queue"] == 1


def test_ledger_totals_equal_returned_usage(keyed):
    url, app, db = keyed
    client = openai.OpenAI(base_url=url + "/v1", api_key=K3, max_retries=0, timeout=60)
    usages = [
        client.chat.completions.create(model="tinyseek", messages=OK["messages"], max_tokens=12, temperature=0).usage
    ]
    stream = client.chat.completions.create(
        model="deepseek-reasoner",
        messages=OK["messages"],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    usages.append([c for c in stream][-1].usage)
    usages.append(
        client.chat.completions.create(
            model="tinyseek", messages=OK["messages"], max_tokens=12, temperature=0.7, seed=3
        ).usage
    )
    hit = sum(u.model_extra["prompt_cache_hit_tokens"] for u in usages)
    miss = sum(u.model_extra["prompt_cache_miss_tokens"] for u in usages)
    out = sum(u.completion_tokens for u in usages)
    reasoning = sum(u.completion_tokens_details.reasoning_tokens for u in usages)
    me = httpx.get(url + "/v1/usage", headers={"Authorization": f"Bearer {K3}"}).json()
    assert me["key_id"] == key_id(K3)
    assert (
        me["requests"],
        me["prompt_cache_hit_tokens"],
        me["prompt_cache_miss_tokens"],
        me["completion_tokens"],
        me["reasoning_tokens"],
    ) == (3, hit, miss, out, reasoning)
    assert me["cost_usd"] == pytest.approx((hit * 0.5 + miss * 2.0 + out * 8.0) / 1e6)
    # the same numbers straight from the SQLite file, read by a second connection
    (row,) = Ledger(db).totals(key_id(K3))
    assert (row["prompt_tokens"], row["completion_tokens"]) == (hit + miss, out)


@pytest.fixture(scope="module")
def one_slot(parts, tmp_path_factory):
    """One engine row and an end-of-sentence token that never wins: a stream runs until its budget."""
    tok, model = parts
    engine = Engine(model, tok, max_batch=1)

    def no_eos(rids, logits):
        logits[:, tok.eos_id] = float("-inf")

    engine.logit_hook = no_eos
    db = tmp_path_factory.mktemp("slot") / "usage.sqlite"
    app = create_app(engine, tok, ServeConfig(rate_limit=0, max_queue=4, db=str(db)))
    with serve_in_thread(app) as url:
        yield url, app, engine


def test_disconnected_client_frees_its_slot(one_slot):
    url, app, engine = one_slot
    sched = app.state.scheduler
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
    stream = client.chat.completions.create(model="tinyseek", messages=OK["messages"], max_tokens=200, stream=True)
    it = iter(stream)
    for _ in range(4):
        next(it)
    stream.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 10
    while (engine.running or sched.load()["running"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not engine.running and sched.load()["running"] == 0, "the slot was not freed"
    steps_at_disconnect = sched.steps
    r = client.chat.completions.create(model="tinyseek", messages=OK["messages"], max_tokens=5, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5
    # the 200-token stream was abandoned: far fewer than 200 steps ran in all
    assert sched.steps < steps_at_disconnect + 20 < 200
    # the abandoned stream is billed for what it generated before it was stopped, no more
    (tot,) = app.state.ledger.totals()
    assert tot["requests"] == 2 and 3 + 5 <= tot["completion_tokens"] < 30 + 5


def _wait_idle(app, engine):
    deadline = time.monotonic() + 10
    while (engine.running or app.state.scheduler.load()["running"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not engine.running, "the engine still runs a request"


def _billed(app, request_id):
    """(completion_tokens, reasoning_tokens) of one request in the ledger file."""
    import sqlite3

    rows = (
        sqlite3.connect(app.state.ledger.path)
        .execute("SELECT completion_tokens, reasoning_tokens FROM requests WHERE request_id = ?", (request_id,))
        .fetchall()
    )
    assert len(rows) == 1, f"{request_id} billed {len(rows)} times"
    return rows[0]


def test_usage_around_a_stop_string(one_slot, parts):
    """The engine ends a row in the step that completes a stop string (no decode step after it), and the usage of
    the request (in the response, in the stream's usage chunk, in the ledger) is the tokens generated up to and
    including the one that completed it: what the engine alone produces with the same stop string."""
    from tinyseek.inference.sampling import SamplingParams

    url, app, engine = one_slot
    tok, model = parts
    ref = Engine(model, tok, max_batch=1)
    ref.logit_hook = engine.logit_hook
    prompt = tok.encode(tok.chat(OK["messages"]))
    ((expect,),) = ref.generate([prompt], SamplingParams(temperature=0, max_new_tokens=40, stop_strings=("there",)))
    assert expect.finish_reason == "stop" and expect.text.endswith("<answer>Hi ")
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
    _wait_idle(app, engine)
    steps = app.state.scheduler.steps
    r = client.chat.completions.create(
        model="tinyseek", messages=OK["messages"], max_tokens=40, temperature=0, stop=["there"]
    )
    assert r.choices[0].message.content == "Hi" and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == len(expect.token_ids)
    assert app.state.scheduler.steps - steps == len(expect.token_ids)  # one step a token, none after the stop
    assert _billed(app, r.id) == (r.usage.completion_tokens, r.usage.completion_tokens_details.reasoning_tokens)
    stream = client.chat.completions.create(
        model="tinyseek",
        messages=OK["messages"],
        max_tokens=40,
        temperature=0,
        stop=["there"],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi"
    assert chunks[-1].usage.completion_tokens == len(expect.token_ids)
    assert _billed(app, chunks[-1].id)[0] == len(expect.token_ids)


def test_a_disconnected_stream_is_billed_exactly_what_was_generated(one_slot):
    """A client that leaves mid-stream is billed once, for every token the engine generated for it before the
    cancellation stopped the row (counted after the last one, not when the client left)."""
    url, app, engine = one_slot
    _wait_idle(app, engine)
    aborted = []
    abort = engine.abort
    engine.abort = lambda rid: aborted.append(abort(rid)) or aborted[-1]
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
        stream = client.chat.completions.create(model="tinyseek", messages=OK["messages"], max_tokens=200, stream=True)
        it = iter(stream)
        request_id = next(it).id
        for _ in range(3):
            next(it)
        stream.close()
        _wait_idle(app, engine)
        deadline = time.monotonic() + 10
        while not aborted and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        engine.abort = abort
    (c,) = aborted
    assert c.finish_reason == "abort" and 3 <= len(c.token_ids) < 200
    deadline, billed = time.monotonic() + 10, None
    while time.monotonic() < deadline:
        try:
            billed = _billed(app, request_id)
            break
        except AssertionError:
            time.sleep(0.05)
    assert billed is not None and billed[0] == len(c.token_ids)
