"""Sampling: truncation never leaves its set, seeds reproduce, the vectorised path equals the per-row reference."""

import math

import pytest
import torch

from tinyseek.errors import TinyseekError
from tinyseek.inference.sampling import (
    BatchParams,
    SamplingParams,
    derive_seed,
    inverse_cdf,
    sample,
    sample_reference,
    uniform,
)

V = 12


def _draws(logits_row: torch.Tensor, p: SamplingParams, n: int) -> torch.Tensor:
    """n draws from one distribution: n rows with distinct seeds, in one batched call."""
    logits = logits_row.expand(n, -1)
    bp = BatchParams.build([p] * n, [derive_seed(7, i) for i in range(n)])
    toks, _ = sample(logits, bp, torch.zeros(n, dtype=torch.long))
    return toks


def _constructed() -> torch.Tensor:
    # probabilities 0.4, 0.2, 0.15, 0.1, 0.05, then 7 tokens sharing 0.1
    p = torch.tensor([0.4, 0.2, 0.15, 0.1, 0.05] + [0.1 / 7] * 7)
    return p.log()


def test_top_k_top_p_min_p_stay_inside_their_sets():
    logits = _constructed()
    n = 4000
    cases = [
        (SamplingParams(top_k=3), {0, 1, 2}),
        (SamplingParams(top_p=0.7), {0, 1, 2}),  # 0.4 + 0.2 < 0.7 -> the third is needed, the fourth is not
        (SamplingParams(top_p=0.74), {0, 1, 2}),
        (SamplingParams(top_p=0.76), {0, 1, 2, 3}),
        (SamplingParams(min_p=0.3), {0, 1, 2}),  # p >= 0.12
        (SamplingParams(top_k=4, min_p=0.45), {0, 1}),  # p >= 0.18
    ]
    for p, allowed in cases:
        toks = _draws(logits, p, n)
        seen = set(toks.tolist())
        assert seen <= allowed, (p, seen - allowed)
        assert seen == allowed, (p, allowed - seen)  # and every allowed token does come up


def test_top_p_after_top_k_renormalises():
    """top-k 3 leaves 0.4, 0.2, 0.15, i.e. 0.53, 0.27, 0.2 renormalised: top-p 0.7 then needs two tokens (as in
    transformers and vLLM); on the unrenormalised masses (0.4 + 0.2 < 0.7) it would keep the third too."""
    toks = _draws(_constructed(), SamplingParams(top_k=3, top_p=0.7), 4000)
    assert set(toks.tolist()) == {0, 1}


def test_engine_and_plain_rollout_truncate_to_the_same_set():
    """The engine's truncation mask and the plain reference rollout's (train/rollout.PlainRollout) keep the same
    tokens for every top-k / top-p combination, on random and on peaked distributions."""
    from tinyseek.inference.sampling import truncation_mask
    from tinyseek.train.rollout import PlainRollout

    g = torch.Generator().manual_seed(0)
    for scale in (0.5, 3.0, 8.0):
        logits = torch.randn(64, 50, generator=g) * scale
        for k, top_p in [(0, 0.5), (5, 1.0), (5, 0.7), (10, 0.3), (3, 0.95), (1, 0.5), (50, 0.9)]:
            params = [SamplingParams(top_k=k, top_p=top_p)] * len(logits)
            keep = truncation_mask(torch.log_softmax(logits, -1), BatchParams.build(params, [0] * len(logits)))
            plain = PlainRollout.truncate(torch.softmax(logits, -1), k, top_p) > 0
            assert torch.equal(keep, plain), (scale, k, top_p, (keep != plain).nonzero()[:3].tolist())


def test_sampling_matches_the_distribution():
    logits = _constructed()
    n = 20000
    toks = _draws(logits, SamplingParams(top_k=3), n)
    freq = torch.bincount(toks, minlength=V).float() / n
    expect = torch.tensor([0.4, 0.2, 0.15]) / 0.75
    assert torch.allclose(freq[:3], expect, atol=0.015), freq[:3]
    # temperature 2 flattens: p ~ sqrt(p)
    toks = _draws(logits, SamplingParams(temperature=2.0), n)
    freq = torch.bincount(toks, minlength=V).float() / n
    q = logits.div(2).softmax(-1)
    assert torch.allclose(freq, q, atol=0.015)


def test_greedy_is_argmax_and_logprobs_are_the_untruncated_tempered_ones():
    torch.manual_seed(0)
    logits = torch.randn(4, V)
    ps = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=0.5, top_k=2),
        SamplingParams(temperature=1.0, top_p=0.3),
        SamplingParams(temperature=0),
    ]
    bp = BatchParams.build(ps, [1, 2, 3, 4])
    toks, lps = sample(logits, bp, torch.zeros(4, dtype=torch.long))
    assert toks[0] == logits[0].argmax() and toks[3] == logits[3].argmax()
    temps = torch.tensor([1.0, 0.5, 1.0, 1.0])
    expect = torch.log_softmax(logits / temps[:, None], -1).gather(-1, toks[:, None]).squeeze(-1)
    assert torch.allclose(lps, expect)


def test_seeded_draws_do_not_depend_on_the_batch():
    torch.manual_seed(1)
    logits = torch.randn(6, V)
    p = SamplingParams(temperature=1.3, top_p=0.9)
    bp = BatchParams.build([p] * 6, [11, 12, 13, 14, 15, 16])
    counters = torch.tensor([0, 5, 2, 9, 1, 3])
    toks, _ = sample(logits, bp, counters)
    # the same rows, alone and reordered
    for b in range(6):
        alone, _ = sample(logits[b : b + 1], BatchParams.build([p], [11 + b]), counters[b : b + 1])
        assert alone.item() == toks[b].item()
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    shuffled, _ = sample(logits[perm], BatchParams.build([p] * 6, [11 + i for i in perm.tolist()]), counters[perm])
    assert torch.equal(shuffled, toks[perm])


def test_uniform_is_uniform_and_counter_dependent():
    seeds = torch.full((50000,), 123, dtype=torch.long)
    u = uniform(seeds, torch.arange(50000))
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    assert len(set(u.tolist())) > 49990  # counters give fresh draws
    assert uniform(torch.tensor([5]), torch.tensor([7])).item() == uniform(torch.tensor([5]), torch.tensor([7])).item()


def test_inverse_cdf_never_draws_zero_probability():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]]).expand(1000, -1)
    u = torch.linspace(1e-9, 1 - 1e-12, 1000, dtype=torch.float64)
    idx = inverse_cdf(probs, u)
    assert set(idx.tolist()) == {1, 3}
    # u at the very top lands past the last nonzero mass: the fallback is the most likely token, the first of ties
    top = inverse_cdf(
        torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0], [0.1, 0.2, 0.7, 0.0, 0.0]]), torch.ones(2, dtype=torch.float64)
    )
    assert top.tolist() == [1, 2]


def test_vectorised_sampler_agrees_with_reference():
    torch.manual_seed(2)
    B = 8
    logits = torch.randn(B, V) * 2
    ps = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=0.7, top_k=5),
        SamplingParams(top_p=0.8),
        SamplingParams(min_p=0.1, temperature=1.5),
        SamplingParams(repetition_penalty=1.3, top_k=4),
        SamplingParams(presence_penalty=0.5, frequency_penalty=0.3),
        SamplingParams(temperature=0, repetition_penalty=2.0),
        SamplingParams(top_k=3, top_p=0.5, min_p=0.05),
    ]
    seeds = [derive_seed(3, i) for i in range(B)]
    seen = torch.rand(B, V) < 0.3
    counts = (torch.rand(B, V) < 0.2).long() * torch.randint(1, 4, (B, V))
    for step in range(5):
        counters = torch.full((B,), step)
        toks, lps = sample(logits, BatchParams.build(ps, seeds), counters, seen=seen, counts=counts)
        rtoks, rlps = sample_reference(logits, ps, seeds, counters.tolist(), seen=seen, counts=counts)
        assert toks.tolist() == rtoks
        assert torch.allclose(lps, torch.tensor(rlps), atol=1e-5)


def test_penalties_change_the_greedy_choice():
    logits = torch.tensor([[2.0, 1.9, 0.0]])
    seen = torch.tensor([[True, False, False]])
    counts = torch.tensor([[3, 0, 0]])
    for p in (
        SamplingParams(temperature=0, repetition_penalty=1.2),
        SamplingParams(temperature=0, frequency_penalty=0.1),
        SamplingParams(temperature=0, presence_penalty=0.2),
    ):
        tok, _ = sample(logits, BatchParams.build([p], [0]), torch.zeros(1, dtype=torch.long), seen=seen, counts=counts)
        assert tok.item() == 1, p
    tok, _ = sample(
        logits,
        BatchParams.build([SamplingParams(temperature=0)], [0]),
        torch.zeros(1, dtype=torch.long),
        seen=seen,
        counts=counts,
    )
    assert tok.item() == 0


@pytest.mark.parametrize(
    "field,value",
    [
        ("temperature", -1.0),
        ("top_p", 0.0),
        ("top_k", -2),
        ("min_p", 1.5),
        ("max_new_tokens", 0),
        ("repetition_penalty", 0.0),
        ("stop_strings", ("",)),
        ("seed", -1),
        ("presence_penalty", 3.0),
    ],
)
def test_bad_parameters_name_the_field(field, value):
    with pytest.raises(TinyseekError, match=field):
        SamplingParams(**{field: value})


def test_derive_seed_distinct():
    assert len({derive_seed(0, i) for i in range(1000)}) == 1000
    assert derive_seed(5, 3) == derive_seed(5, 3) and derive_seed(5, 3) != derive_seed(6, 3)
    assert not math.isnan(float(derive_seed(2**62, 7)))


def test_greedy_takes_the_first_of_tied_maxima_as_argmax_does():
    """Greedy is `max(-1).indices` (faster than argmax on a CPU): on ties it must pick argmax's token, the
    first maximum, in every row and at a vocabulary size where the reduction is vectorised."""
    logits = torch.zeros(6, 4096)
    cols = [[1, 2], [0, 4095], [17, 18, 19], [4000, 64], [3, 2048], [4095]]
    for r, c in enumerate(cols):
        logits[r, c] = 5.0
    bp = BatchParams.build([SamplingParams(temperature=0)] * 6, [0] * 6)
    tok, _ = sample(logits, bp, torch.zeros(6, dtype=torch.long))
    assert tok.tolist() == logits.argmax(-1).tolist() == [min(c) for c in cols]
