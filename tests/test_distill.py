"""Distillation: the white-box losses, the teacher cache, and the black-box data filter."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tinyseek.errors import TinyseekError
from tinyseek.train.distill_loss import (KD_KINDS, TeacherCache, build_teacher_cache, kd_loss, kd_loss_full,
                                         teacher_topk)


@pytest.mark.parametrize("kind", KD_KINDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_loss_is_zero_when_student_equals_teacher(kind, temperature):
    logits = torch.randn(50, 97) * 3
    lp, ix = teacher_topk(logits, 8, temperature)
    assert kd_loss(logits, lp, ix, kind, temperature).item() == 0.0
    # and positive when they differ
    assert kd_loss(logits + torch.randn_like(logits), lp, ix, kind, temperature).item() > 1e-3


@pytest.mark.parametrize("kind", KD_KINDS)
def test_topk_with_k_equal_vocab_is_the_full_kl(kind):
    s, t = torch.randn(40, 33, requires_grad=True), torch.randn(40, 33) * 2
    lp, ix = teacher_topk(t, 33, 1.5)
    a = kd_loss(s, lp, ix, kind, 1.5, mix=0.3)
    b = kd_loss_full(s, t, kind, 1.5, mix=0.3)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    ga, = torch.autograd.grad(a, s)
    gb, = torch.autograd.grad(b, s)
    torch.testing.assert_close(ga, gb, rtol=1e-3, atol=1e-6)


def test_topk_loss_is_a_divergence_and_training_on_it_matches_the_teacher():
    """>= 0 for any student; gradient descent on it moves the student onto the teacher's top-k buckets."""
    t = torch.randn(16, 50) * 3
    lp, ix = teacher_topk(t, 5, 1.0)
    s = torch.zeros(16, 50, requires_grad=True)
    opt = torch.optim.Adam([s], lr=0.1)
    first = None
    for _ in range(300):
        loss = kd_loss(s, lp, ix, "forward")
        assert loss.item() >= -1e-6
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01 * first
    got = torch.log_softmax(s.detach(), -1).gather(-1, ix)
    torch.testing.assert_close(got, lp, atol=0.05, rtol=0)


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
            torch.testing.assert_close(kd_loss(s_logits, *cached, kind, 2.0), kd_loss(s_logits, *fly, kind, 2.0),
                                       rtol=1e-5, atol=1e-6)


def test_cache_refuses_a_mismatched_build(tmp_path):
    cache = build_teacher_cache(_Teacher(), _examples(3), k=4, temperature=1.0)
    cache.save(tmp_path / "c.safetensors")
    with pytest.raises(TinyseekError, match="built with k=4, this run needs 8"):
        TeacherCache.load(tmp_path / "c.safetensors", expect={"k": 8})
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(TinyseekError, match="unreadable teacher cache"):
        TeacherCache.load(tmp_path / "bad.safetensors")
