"""`tinyseek serve` under a bounded schemathesis run against its own /openapi.json: valid requests
(positive mode) and invalid ones (negative mode) for every operation; anything but a 5xx is acceptable."""

from __future__ import annotations

import collections

import pytest

from tinyseek.checkpoint import load_model
from tinyseek.inference.engine import Engine
from tinyseek.serve.app import ServeConfig, create_app
from tinyseek.serve.cli import serve_in_thread
from tinyseek.tokenizer import Tokenizer

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def url(r1_checkpoint, tmp_path_factory):
    tok, model = Tokenizer.load(r1_checkpoint), load_model(r1_checkpoint)
    db = tmp_path_factory.mktemp("fuzz") / "usage.sqlite"
    cfg = ServeConfig(rate_limit=0, max_queue=64, default_max_tokens=8, db=str(db))
    with serve_in_thread(create_app(Engine(model, tok, max_batch=8), tok, cfg)) as base:
        yield base


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_finds_no_5xx(url, mode):
    import hypothesis
    import hypothesis.errors
    import schemathesis

    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    seen, failures = collections.Counter(), []
    for result in schema.get_all_operations():
        op = result.ok()
        strategy = op.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

        @hypothesis.settings(
            max_examples=15,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
        @hypothesis.given(case=strategy)
        def run(case):
            resp = case.call(base_url=url, timeout=60)
            seen[(op.label, resp.status_code // 100)] += 1  # noqa: B023  (run within this iteration)
            if resp.status_code >= 500:
                failures.append((op.label, resp.status_code, resp.text[:300]))  # noqa: B023

        try:
            run()
        except hypothesis.errors.Unsatisfiable:  # negative mode: an operation without inputs has nothing to break
            assert mode == "negative" and op.method.upper() == "GET"
    assert not failures, failures
    chat = {k: v for k, v in seen.items() if k[0] == "POST /v1/chat/completions"}
    assert sum(chat.values()) >= 5, seen  # the fuzzer really reached the chat endpoint
    if mode == "positive":
        assert chat.get(("POST /v1/chat/completions", 2), 0) > 0, seen  # ... and got completions out of it
