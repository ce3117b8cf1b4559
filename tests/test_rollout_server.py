"""GRPO's rollouts from an inference server: `tinyseek serve`'s /v1/completions (token-id prompts, per-token
log-probs, token ids back) and /update_weights_from_disk, driven by `rollout = "server"` (tinyseek/train/rollout.py).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
import torch

from tinyseek.checkpoint import load_model, read_weights
from tinyseek.inference.engine import Engine
from tinyseek.serve.app import ServeConfig, create_app
from tinyseek.serve.cli import serve_in_thread
from tinyseek.tokenizer import Tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny ops, one torch thread


def chars(prompts, completions, **columns):
    """A reward that differs within almost every group, so every step has a gradient."""
    return [len(c) / 50 for c in completions]


@pytest.fixture
def server(r1_checkpoint, tmp_path):
    tok, model = Tokenizer.load(r1_checkpoint), load_model(r1_checkpoint)
    cfg = ServeConfig(rate_limit=0, db=str(tmp_path / "usage.sqlite"), allow_weight_updates=True)
    engine = Engine(model, tok, max_batch=16)
    with serve_in_thread(create_app(engine, tok, cfg)) as url:
        yield url, engine, tok


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_completions_on_token_ids_return_the_models_own_logprobs(server):
    url, engine, tok = server
    prompts = [tok.encode(tok.chat([{"role": "user", "content": q}])) for q in ("What is 2 plus 3?", "Say hi.")]
    body = {"model": "tinyseek", "prompt": prompts, "n": 2, "max_tokens": 24, "temperature": 1.0, "seed": 7}
    status, ans = _post(url + "/v1/completions", {**body, "logprobs": 1, "return_token_ids": True})
    assert status == 200, ans
    assert [c["index"] for c in ans["choices"]] == [0, 1, 2, 3]  # choice p*n + j: sample j of prompt p
    model = engine.model
    for c in ans["choices"]:
        p, ids = prompts[c["index"] // 2], c["token_ids"]
        assert c["prompt_token_ids"] == p
        if c["finish_reason"] == "stop":
            assert ids[-1] == tok.eos_id  # the stop token the model sampled is returned (GRPO trains on it)
        assert c["text"] == tok.decode(ids[:-1] if c["finish_reason"] == "stop" else ids)
        with torch.no_grad():
            logits = model(torch.tensor([p + ids])).logits[0, len(p) - 1 : -1].float()
        want = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(c["logprobs"]["token_logprobs"]), want, atol=1e-4)
    assert ans["usage"]["prompt_tokens"] == sum(len(p) for p in prompts)  # each prompt once, whatever n
    # seeded: the same request draws the same completions
    status, again = _post(url + "/v1/completions", {**body, "return_token_ids": True})
    assert [c["token_ids"] for c in again["choices"]] == [c["token_ids"] for c in ans["choices"]]
    # bad input: named, never a 500
    assert _post(url + "/v1/completions", {**body, "prompt": [[1, 99999]]})[0] == 422
    assert _post(url + "/v1/completions", {**body, "model": "gpt-4"})[0] == 404
    assert _post(url + "/v1/completions", {**body, "stream": True})[0] == 422
    assert _post(url + "/update_weights_from_disk", {"model_path": "/nonexistent"})[0] == 400


def test_grpo_with_server_rollouts_pushes_weights_after_each_update(server, r1_checkpoint, tmp_path):
    from tinyseek.train.grpo import GrpoConfig, build_stage

    url, engine, tok = server
    data = tmp_path / "prompts.jsonl"
    qa = [("What is 2 plus 3?", "5"), ("Say hi.", "Hi there!"), ("What is 4 times 2?", "8")]
    data.write_text("".join(json.dumps({"prompt": q, "answer": a}) + "\n" for q, a in qa))
    cfg = GrpoConfig(
        model=str(r1_checkpoint),
        data=str(data),
        rewards=["accuracy", "format", "test_rollout_server:chars"],
        batch_size=2,
        group_size=4,
        max_new_tokens=16,
        temperature=1.5,  # the checkpoint is overfit: at 1.0 a group's samples are often all the same
        max_steps=2,
        dynamic_sampling=False,
        lr=1e-2,
        ckpt_every=1,
        eval_n=1,
        eval_samples=1,
        eval_data=str(data),
        progress=False,
        sample_every=0,
        rollout="server",
        rollout_url=url,
    )
    cfg.validate()
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    loop, stage = build_stage(cfg, tmp_path / "run")
    loop.run(stage)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(m["seqs_updated"] == 8 for m in metrics)
    # the server sampled step 2 from the weights after step 1: pushed through RUN/rollout_weights
    served = engine.model.state_dict()
    step1 = read_weights(tmp_path / "run" / "checkpoints" / "step-1")
    assert any(not torch.equal(before[k], served[k]) for k in before)
    for k, v in step1.items():
        assert torch.equal(served[k], v), k
    assert (tmp_path / "run" / "rollout_weights" / "model.safetensors").is_file()


def test_weight_updates_are_off_unless_asked(r1_checkpoint, tmp_path):
    tok, model = Tokenizer.load(r1_checkpoint), load_model(r1_checkpoint)
    cfg = ServeConfig(rate_limit=0, db=str(tmp_path / "usage.sqlite"))
    with serve_in_thread(create_app(Engine(model, tok, max_batch=4), tok, cfg)) as url:
        status, ans = _post(url + "/update_weights_from_disk", {"model_path": str(r1_checkpoint)})
    assert status == 403 and "--allow-weight-updates" in ans["error"]["message"]
