"""Distillation: the white-box losses, the teacher cache, and the black-box data filter."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tinyseek.errors import TinyseekError
from tinyseek.train.distill_loss import KD_KINDS, TeacherCache, build_teacher_cache, kd_loss, kd_loss_full, teacher_topk

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny ops, one torch thread


@pytest.mark.parametrize("kind", KD_KINDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_loss_is_zero_when_student_equals_teacher(kind, temperature):
    torch.manual_seed(1)
    logits = torch.randn(50, 97) * 3
    lp, ix = teacher_topk(logits, 8, temperature)
    assert kd_loss(logits, lp, ix, kind, temperature).item() == 0.0
    # and positive when they differ
    assert kd_loss(logits + torch.randn_like(logits), lp, ix, kind, temperature).item() > 1e-3


@pytest.mark.parametrize("kind", KD_KINDS)
def test_topk_with_k_equal_vocab_is_the_full_kl(kind):
    torch.manual_seed(2)
    s, t = torch.randn(40, 33, requires_grad=True), torch.randn(40, 33) * 2
    lp, ix = teacher_topk(t, 33, 1.5)
    a = kd_loss(s, lp, ix, kind, 1.5, mix=0.3)
    b = kd_loss_full(s, t, kind, 1.5, mix=0.3)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    (ga,) = torch.autograd.grad(a, s)
    (gb,) = torch.autograd.grad(b, s)
    torch.testing.assert_close(ga, gb, rtol=1e-3, atol=1e-6)


def test_topk_loss_is_a_divergence_and_training_on_it_matches_the_teacher():
    """>= 0 for any student; gradient descent on it moves the student onto the teacher's top-k buckets."""
    torch.manual_seed(0)
    t = torch.randn(16, 50) * 3
    lp, ix = teacher_topk(t, 5, 1.0)
    s = torch.zeros(16, 50, requires_grad=True)
    opt = torch.optim.Adam([s], lr=0.2)
    first = None
    for _ in range(150):
        loss = kd_loss(s, lp, ix, "forward")
        assert loss.item() >= -1e-6
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01 * first
    got = torch.softmax(s.detach(), -1).gather(-1, ix)  # probabilities: a rare top-k token has a weak gradient
    torch.testing.assert_close(got, lp.exp(), atol=0.01, rtol=0)


def test_bad_kind_and_shapes_are_named():
    s = torch.randn(4, 10)
    lp, ix = teacher_topk(s, 3)
    with pytest.raises(TinyseekError, match="kd: must be one of"):
        kd_loss(s, lp, ix, "sideways")
    with pytest.raises(TinyseekError, match="do not match"):
        kd_loss(s[:3], lp, ix)


class _Teacher(torch.nn.Module):
    """A causal toy LM (embedding + cumulative mean + head): position t sees tokens <= t only."""

    def __init__(self, vocab=40, dim=16):
        super().__init__()
        self.emb, self.head = torch.nn.Embedding(vocab, dim), torch.nn.Linear(dim, vocab)

    def forward(self, tokens):
        h = self.emb(tokens).cumsum(1) / torch.arange(1, tokens.shape[1] + 1).view(1, -1, 1)
        return SimpleNamespace(logits=self.head(h))


def _examples(n, vocab=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        L = int(torch.randint(5, 20, (1,), generator=g))
        toks = torch.randint(1, vocab, (L,), generator=g).tolist()
        p = int(torch.randint(1, L - 1, (1,), generator=g))  # prompt length: no loss on the prompt
        out.append((toks, [-100] * p + toks[p:]))  # (ids, labels) as tinyseek.data makes them
    return out


def test_cached_topk_gives_the_same_loss_as_on_the_fly(tmp_path):
    torch.manual_seed(0)
    teacher, student = _Teacher(), _Teacher()
    ex = _examples(23)
    cache = build_teacher_cache(teacher, ex, k=6, temperature=2.0, batch_size=5)
    cache.save(tmp_path / "c.safetensors")
    cache = TeacherCache.load(tmp_path / "c.safetensors", expect={"k": 6, "temperature": 2.0})
    from tinyseek.data import collate

    for ids in ([3, 1, 7, 22], [0], list(range(23))):  # batches in a different grouping than the cache's
        mb = collate([ex[i] for i in ids], 0)
        tokens, mask = mb["tokens"], mb["targets"] != -100
        s_logits = student(tokens).logits[mask]
        with torch.no_grad():
            fly = teacher_topk(teacher(tokens).logits[mask], 6, 2.0)
        cached = cache.rows(ids)
        for kind in KD_KINDS:
            torch.testing.assert_close(
                kd_loss(s_logits, *cached, kind, 2.0), kd_loss(s_logits, *fly, kind, 2.0), rtol=1e-5, atol=1e-6
            )


def test_cache_refuses_a_mismatched_build(tmp_path):
    cache = build_teacher_cache(_Teacher(), _examples(3), k=4, temperature=1.0)
    cache.save(tmp_path / "c.safetensors")
    with pytest.raises(TinyseekError, match="built with k=4, this run needs 8"):
        TeacherCache.load(tmp_path / "c.safetensors", expect={"k": 8})
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(TinyseekError, match="unreadable teacher cache"):
        TeacherCache.load(tmp_path / "bad.safetensors")


# ----------------------------------------------------------------------------------------------
# the stage end to end on a nano teacher


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tokenizer, a nano MoE teacher checkpoint and a trace file with right and wrong answers."""
    import json

    from tinyseek import tasks
    from tinyseek.checkpoint import save_checkpoint
    from tinyseek.config import ModelConfig
    from tinyseek.model import Transformer
    from tinyseek.r1 import completion_text
    from tinyseek.tokenizer import MIN_VOCAB, Tokenizer

    d = tmp_path_factory.mktemp("distill")
    recs = tasks.get("addition").generate(40, seed=0, split="train", difficulty=2)
    tok = Tokenizer.train([r["prompt"] + "\n" + completion_text(r) for r in recs], MIN_VOCAB + 32)
    tok.save(d / "tok")
    torch.manual_seed(0)
    teacher = Transformer(ModelConfig.preset("nano", vocab_size=tok.vocab_size, max_seq_len=128))
    save_checkpoint(teacher, d / "teacher", tokenizer_file=d / "tok" / "tokenizer.json")
    rows = []
    for i, r in enumerate(recs):
        wrong = i % 3 == 0  # a third of the traces end in a wrong answer
        ans = str(int(r["answer"]) + 1) if wrong else r["answer"]
        rows.append(
            {
                "prompt": r["prompt"],
                "completion": f"<think>\n{r['solution']}\n</think>\n<answer>{ans}</answer>",
                "answer": r["answer"],
                "task": r["task"],
                "wrong": wrong,
            }
        )
    (d / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d, rows


def test_blackbox_data_holds_only_verified_traces(world, tmp_path):
    from tinyseek.train.distill import verified_rows

    d, rows = world
    kept, dropped = verified_rows([str(d / "traces.jsonl")])
    assert dropped == sum(r["wrong"] for r in rows) > 0
    assert len(kept) == len(rows) - dropped
    assert not any(r["wrong"] for _, r in kept)
    (tmp_path / "noanswer.jsonl").write_text('{"prompt": "1+1=", "completion": "2"}\n')
    with pytest.raises(TinyseekError, match=r"noanswer.jsonl:1: no 'answer' to verify"):
        verified_rows([str(tmp_path / "noanswer.jsonl")])
    assert len(verified_rows([str(tmp_path / "noanswer.jsonl")], verify=False)[0]) == 1


def _distill(d, out, **fields):
    from tinyseek.config import from_dict
    from tinyseek.train.distill import DistillConfig, run

    base = dict(
        data=[str(d / "traces.jsonl")],
        teacher=str(d / "teacher"),
        max_steps=2,
        batch_size=4,
        warmup_steps=1,
        progress=False,
        max_len=96,
        threads=1,
        model={"dim": 32, "n_layers": 2, "n_dense_layers": 2, "inter_dim": 64, "max_seq_len": 128},
    )
    cfg = from_dict(DistillConfig, {**base, **fields})
    run(cfg, out)
    import json

    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_whitebox_kd_is_zero_when_the_student_is_the_teacher(world, tmp_path):
    d, _ = world
    # float32: under bf16 autocast (dtype = auto where bf16 is native) the student computes another function than
    # its float32 teacher
    m = _distill(d, tmp_path / "run", mode="whitebox", init=str(d / "teacher"), lr=1e-12, max_steps=1, dtype="float32")
    assert m[0]["kd"] == 0.0
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_whitebox_cached_and_on_the_fly_train_the_same(world, tmp_path):
    d, _ = world
    a = _distill(d, tmp_path / "cached", mode="whitebox", teacher_cache="auto", kd="mix", kd_temperature=2.0)
    assert (tmp_path / "cached" / "teacher_topk.safetensors").is_file()
    b = _distill(d, tmp_path / "fly", mode="whitebox", teacher_cache="none", kd="mix", kd_temperature=2.0)
    for x, y in zip(a, b):
        assert x["kd"] == pytest.approx(y["kd"], rel=1e-5, abs=1e-6)
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5, abs=1e-6)
    assert a[0]["kd"] > 0


def test_blackbox_trains_a_dense_student_and_whitebox_refuses_another_tokenizer(world, tmp_path):
    from tinyseek.checkpoint import read_config
    from tinyseek.tokenizer import MIN_VOCAB, Tokenizer

    d, _ = world
    m = _distill(d, tmp_path / "bb", preset="tiny-dense")
    assert "kd" not in m[0] and len(m) == 2
    cfg = read_config(tmp_path / "bb" / "final")
    assert not cfg.is_moe and cfg.dim == 32
    other = Tokenizer.train(["a completely different corpus 12345"] * 20, MIN_VOCAB + 8)
    other.save(tmp_path / "other")
    with pytest.raises(TinyseekError, match="needs the student to use the teacher's tokenizer"):
        _distill(d, tmp_path / "wb", mode="whitebox", tokenizer=str(tmp_path / "other" / "tokenizer.json"))
