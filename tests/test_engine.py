"""The engine: cached decoding equals recomputation, speculation equals plain greedy, seeds reproduce across
batch compositions, stops and continuous batching behave, the prefix-cache hooks round-trip, and greedy
output equals transformers' `generate` on the exported weights."""

import pytest
import torch
from conftest import tiny_llama

import tinyseek.model as model_mod
from tinyseek.config import ModelConfig
from tinyseek.errors import TinyseekError
from tinyseek.inference.engine import Engine
from tinyseek.inference.sampling import SamplingParams
from tinyseek.inference.sequence import PromptRows
from tinyseek.model import Transformer

PROMPTS = [[5, 9, 17, 3, 44, 21, 8], [100, 7], [31, 32, 33, 34], [250]]


def _model(seed=0, **over):
    torch.manual_seed(seed)
    return Transformer(ModelConfig.preset("nano", **over)).eval()


@pytest.fixture(scope="module")
def model():
    return _model()


def _ids(groups):
    return [[c.token_ids for c in g] for g in groups]


def _record(engine):
    log = {}
    engine.logit_hook = lambda rids, lg: [
        log.setdefault(r, []).append(lg[i].detach().clone()) for i, r in enumerate(rids)
    ]
    return log


@pytest.mark.parametrize("impl", ["absorbed", "naive"])
def test_cached_decoding_equals_full_recompute(impl):
    m = _model(mla_impl=impl)
    params = [
        SamplingParams(temperature=0, max_new_tokens=12),
        SamplingParams(temperature=0.9, top_p=0.9, seed=1, max_new_tokens=12),
        SamplingParams(temperature=0, max_new_tokens=5),
        SamplingParams(temperature=1.0, seed=2, max_new_tokens=12),
    ]
    fast, ref = Engine(m, max_batch=8), Engine(m, max_batch=8, recompute=True)
    lf, lr = _record(fast), _record(ref)
    out_f = fast.generate(PROMPTS, params, n=2)
    out_r = ref.generate(PROMPTS, params, n=2)
    assert _ids(out_f) == _ids(out_r)
    assert fast.stats["prefill_pad_tokens"] > 0  # the prompts (lengths 7, 2, 4, 1) shared a right-padded prefill
    assert len(lf) == len(lr) == 8
    for (_, steps_f), (_, steps_r) in zip(sorted(lf.items()), sorted(lr.items())):
        assert len(steps_f) == len(steps_r)
        for a, b in zip(steps_f, steps_r):
            assert (a - b).abs().max() < 1e-4


def test_compiled_decode_step_equals_the_eager_one():
    """The compiled decode step (traced by dynamo, run by the "eager" backend: inductor's code generation takes
    minutes on a small CPU) against the eager step: same logits, same tokens, batch sizes changing as rows
    finish, both MoE paths (dense at a few rows per expert, sorted with the opaque grouped matmul)."""
    torch._dynamo.reset()
    m = _model(n_layers=2)
    long, short = (
        SamplingParams(temperature=0, max_new_tokens=10),
        SamplingParams(temperature=0.9, seed=1, max_new_tokens=3),
    )
    params = [long, short, short, short] * 3
    prompts = PROMPTS * 3  # x 2 samples: 24 rows (sorted path), then 6 (dense path) once the short ones stop
    E, K = m.cfg.n_routed_experts, m.cfg.n_activated_experts
    assert 24 * K > model_mod.DENSE_MAX_ROWS_PER_EXPERT * E >= 6 * K  # sorted at 24 rows, dense (compiled) at 6
    eager, comp = Engine(m, max_batch=24), Engine(m, max_batch=24, compile="eager")
    le, lc = _record(eager), _record(comp)
    assert _ids(comp.generate(prompts, params, n=2)) == _ids(eager.generate(prompts, params, n=2))
    for (_, a), (_, b) in zip(sorted(le.items()), sorted(lc.items())):
        assert max((x - y).abs().max().item() for x, y in zip(a, b)) < 1e-4
    # speculating: verification and the MTP drafts compiled too, the same drafts accepted
    m, cyc = _cycle_model()
    p = SamplingParams(temperature=0, max_new_tokens=12)
    spec = [Engine(m, max_batch=4, speculative=2, compile=c) for c in (False, "eager")]
    outs = [e.generate([cyc[:5].tolist(), [9, 150]], p) for e in spec]
    assert _ids(outs[0]) == _ids(outs[1])
    assert spec[0].stats == spec[1].stats and 0 < spec[1].stats["accepted"]
    torch._dynamo.reset()


def test_logprobs_are_the_models_tempered_logprobs(model):
    eng = Engine(model, max_batch=4)
    log = _record(eng)
    p = SamplingParams(temperature=0.7, top_k=5, seed=3, max_new_tokens=6, logprobs=True)
    rid = eng.add_request(PROMPTS[0], p, stream=False)
    while eng.has_unfinished():
        eng.step()
    c = eng.collect(rid)
    expect = [torch.log_softmax(lg / 0.7, -1)[t].item() for lg, t in zip(log[rid], c.token_ids)]
    assert c.logprobs == pytest.approx(expect, abs=1e-5)


def _cycle_model():
    """nano trained for two steps on a repeating token cycle: main model and MTP head both learn it,
    so MTP drafts are mostly (not always) accepted and both branches of verification run."""
    m = _model(seed=1)
    cyc = torch.tensor([3, 77, 12, 200, 45, 9, 150, 61, 88, 23, 5])
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    m.train()
    for _ in range(2):  # two steps: drafts are often but not always right (more and the MTP head is always right)
        starts = torch.randint(0, len(cyc), (8,), generator=g)
        seq = torch.stack([cyc[(s + torch.arange(49)) % len(cyc)] for s in starts])
        out = m(seq[:, :-1], targets=seq[:, 1:])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return m.eval(), cyc


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_speculative_greedy_equals_plain_greedy(k):
    m, cyc = _cycle_model()
    prompts = [cyc[:5].tolist(), cyc[3:10].tolist() + [1, 2], [9, 150], [200, 201, 202]]
    p = SamplingParams(temperature=0, max_new_tokens=30, logprobs=True)
    plain = Engine(m, max_batch=8).generate(prompts, p, n=2)
    spec_engine = Engine(m, max_batch=8, speculative=k)
    spec = spec_engine.generate(prompts, p, n=2)
    assert _ids(spec) == _ids(plain)
    for gs, gp in zip(spec, plain):
        for a, b in zip(gs, gp):
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
            assert a.finish_reason == b.finish_reason
    st = spec_engine.stats
    assert 0 < st["accepted"] < st["drafted"]  # both the accept and the reject path ran
    # batch 1 as well
    one = Engine(m, max_batch=1, speculative=k).generate(prompts[:1], p)
    assert one[0][0].token_ids == plain[0][0].token_ids


def _reference_drafts(m, ids: list[int], k: int) -> list[int]:
    """The k chained MTP drafts after `ids` (its last token pending), without a cache: MTP depth 1 over every
    position, then fed its own last output hidden state and draft, each at the next position."""
    x = torch.tensor([ids])
    P = x.shape[1] - 1
    with torch.no_grad():
        hs, ahead = m(x[:, :P]).residual, x[:, 1:]  # main hidden states 0..P-1, the tokens one ahead
        drafts = []
        for _ in range(k):
            h, lg = m.mtp_step(1, hs, ahead)
            drafts.append(int(lg[0, -1].argmax()))
            hs = torch.cat([hs, h[:, -1:]], 1)
            ahead = torch.cat([ahead, torch.tensor([[drafts[-1]]])], 1)
    return drafts


@pytest.mark.parametrize("k", [3, 4])
def test_chained_drafts_equal_a_cache_free_reference(k):
    """Each chained draft at its own RoPE position and MTP cache slot (drafts 3.. once shared one). Random
    weights with the MTP block's attention sharpened (x30), so that drafts depend on positions and cache
    entries (with the init's near-uniform attention they hardly do); drafts are rarely accepted."""
    m, cyc = _model(seed=2), [3, 77, 12, 200, 45, 9]
    with torch.no_grad():
        for name, w in m.mtp.named_parameters():
            if ".attn." in name and w.dim() == 2:
                w.mul_(30)
    eng = Engine(m, max_batch=2, speculative=k)
    p = SamplingParams(temperature=0, max_new_tokens=24, ignore_eos=True)
    rids = [eng.add_request(cyc, p), eng.add_request([9, 150, 4], p)]
    checked = 0
    while eng.has_unfinished():
        eng.step()
        for r in rids:
            s = eng.seqs[r]
            if s.finish is None:
                assert s.draft == _reference_drafts(m, s.prompt + s.out, k)
                checked += 1
    assert checked >= 6


@pytest.mark.parametrize("compiled", [False, "eager"])
def test_prompt_cache_with_speculation_keeps_the_mtp_rows(compiled):
    """A prefix captured while speculating holds the MTP layers' rows too, filled: reused, it drafts exactly
    what a run without the prefix drafts (same acceptance), and the output is plain greedy's. Compiled, the
    prefill and the MTP prefill go through the compiled step (here traced, run by the "eager" backend)."""
    torch._dynamo.reset()
    m, cyc = _cycle_model()
    p = SamplingParams(temperature=0, max_new_tokens=16, ignore_eos=True)
    prompt, longer = cyc[:7].tolist(), cyc[:7].tolist() + cyc[7:9].tolist()
    eng = Engine(m, max_batch=2, speculative=3, compile=compiled)
    rid = eng.add_request(prompt, p, capture_prompt_cache=True)
    while eng.has_unfinished():
        eng.step()
    pc = eng.prompt_cache(rid)
    assert len(pc.tensors) == m.cfg.n_layers + m.cfg.mtp_depth and pc.tensors[-1].abs().sum() > 0
    plain = Engine(m, max_batch=2).generate([longer, prompt], p)
    for prefix in (None, pc):
        e = Engine(m, max_batch=2, speculative=3, compile=compiled)
        r = [e.add_request(longer, p, prefix=prefix), e.add_request(prompt, p, prefix=prefix)]
        while e.has_unfinished():
            e.step()
        got = [e.collect(x).token_ids for x in r]
        assert got == [plain[0][0].token_ids, plain[1][0].token_ids]
        if prefix is None:
            stats = dict(e.stats)
        else:
            assert (e.stats["accepted"], e.stats["drafted"]) == (stats["accepted"], stats["drafted"])
            assert e.stats["forward_tokens"] < stats["forward_tokens"]


def test_seeded_sampling_reproducible_in_any_batch(model):
    p = SamplingParams(temperature=1.0, top_p=0.95, seed=1234, max_new_tokens=15)
    alone = Engine(model, max_batch=1).generate([PROMPTS[2]], p)[0][0].token_ids
    eng = Engine(model, max_batch=8)
    others = [SamplingParams(temperature=0.8, seed=s, max_new_tokens=9) for s in (1, 2, 3)]
    # the same index in its call (the index is part of the seed), whatever else shares the batch
    groups = eng.generate([PROMPTS[2], PROMPTS[0], PROMPTS[1], PROMPTS[3]], [p, others[0], others[1], others[2]], n=1)
    assert groups[0][0].token_ids == alone
    # a group of n: samples differ from each other, and the group reproduces
    g1 = Engine(model, max_batch=8).generate([PROMPTS[2], PROMPTS[0]], [p, others[0]], n=4)[0]
    g2 = Engine(model, max_batch=3).generate([PROMPTS[2], PROMPTS[0]], [p, others[0]], n=4)[0]  # 2 admissions
    assert [c.token_ids for c in g1] == [c.token_ids for c in g2]
    assert len({tuple(c.token_ids) for c in g1}) == 4
    # unseeded requests differ from run to run
    q = SamplingParams(temperature=1.0, max_new_tokens=15)
    assert (
        Engine(model).generate([PROMPTS[2]], q)[0][0].token_ids
        != Engine(model).generate([PROMPTS[2]], q)[0][0].token_ids
    )


def test_copies_of_a_prompt_in_one_call_sample_differently(model):
    """GRPO's batch may hold one problem twice: its two groups must be independent samples, not duplicates
    (the seed of a prompt's group comes from its index in the call, not from its tokens)."""
    from tinyseek.inference.hf_engine import HFEngine

    p = SamplingParams(temperature=1.0, seed=5, max_new_tokens=12, ignore_eos=True)
    for eng in (Engine(model, max_batch=16), HFEngine(_hf_copy(model), max_batch=16)):
        a, b = eng.generate([PROMPTS[1], PROMPTS[1]], p, n=2)
        ids = [c.token_ids for c in a + b]
        assert len({tuple(x) for x in ids}) == 4, type(eng).__name__
        again = eng.generate([PROMPTS[1], PROMPTS[1]], p, n=2)  # and the call reproduces
        assert [c.token_ids for g in again for c in g] == ids


def _hf_copy(model):
    """transformers' DeepseekV3 with the model's weights (for HFEngine)."""
    import tempfile

    import transformers

    from tinyseek.checkpoint import export_dir

    with tempfile.TemporaryDirectory() as d:
        export_dir(model.cfg, model.state_dict(), d)
        return transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()


def test_continuous_batching_refills_rows_and_skips_finished(model):
    budgets = [3, 20, 7, 1, 12, 5]
    prompts = [PROMPTS[i % 4] for i in range(6)]
    params = [SamplingParams(temperature=0, max_new_tokens=b, ignore_eos=True) for b in budgets]
    wide = Engine(model, max_batch=8).generate(prompts, params)
    narrow_engine = Engine(model, max_batch=2)
    narrow = narrow_engine.generate(prompts, params)
    assert _ids(narrow) == _ids(wide)
    assert [len(g[0].token_ids) for g in narrow] == budgets
    assert all(g[0].finish_reason == "length" for g in narrow)
    # compute spent: each prompt once, then one token per generated token after the first; nothing for finished rows
    expect = sum(len(p) for p in prompts) + sum(b - 1 for b in budgets)
    assert narrow_engine.stats["forward_tokens"] == expect
    assert sorted(narrow_engine.free_rows) == [0, 1]


def test_stop_tokens_and_stop_strings():
    from tinyseek.tokenizer import Tokenizer

    tok = Tokenizer.train(["the cat sat on the mat " * 20, "a b c d e f g"], vocab_size=300)
    m = _model(vocab_size=tok.vocab_size)
    eng = Engine(m, tokenizer=tok, max_batch=4)
    base = SamplingParams(temperature=0, max_new_tokens=20, ignore_eos=True)
    prompt = tok.encode("the cat")
    full = eng.generate([prompt], base)[0][0]
    assert full.finish_reason == "length" and full.text == tok.decode(full.token_ids)
    stop_tok = full.token_ids[4]
    first = full.token_ids.index(stop_tok)
    c = eng.generate([prompt], base.replace(stop_token_ids=(stop_tok,)))[0][0]
    assert c.finish_reason == "stop" and c.token_ids == full.token_ids[: first + 1]
    assert c.text == tok.decode(full.token_ids[:first])  # the stop token is not in the text
    text = full.text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    c = eng.generate([prompt], base.replace(stop_strings=(stop,)))[0][0]
    assert c.finish_reason == "stop" and c.text == text[: text.index(stop)]
    # streamed deltas add up to the final text
    rid = eng.add_request(prompt, base.replace(stop_strings=(stop,)))
    pieces = []
    while eng.has_unfinished():
        pieces += [e.text for e in eng.step() if e.rid == rid]
    assert "".join(pieces) == eng.collect(rid).text


def test_abort_frees_the_row(model):
    eng = Engine(model, max_batch=2)
    p = SamplingParams(temperature=0, max_new_tokens=50, ignore_eos=True)
    a = eng.add_request(PROMPTS[0], p)
    b = eng.add_request(PROMPTS[1], p)
    c = eng.add_request(PROMPTS[2], p)  # queued: no free row
    for _ in range(3):
        eng.step()
    done = eng.abort(a)
    assert done.finish_reason == "abort" and len(done.token_ids) == 3
    evs = eng.step()
    assert any(e.rid == c for e in evs)  # the freed row was refilled
    assert eng.abort(c).finish_reason == "abort" and eng.abort(b).finish_reason == "abort"
    assert not eng.has_unfinished() and sorted(eng.free_rows) == [0, 1]


def test_prompt_cache_round_trip(model):
    p = SamplingParams(temperature=0, max_new_tokens=10, ignore_eos=True)
    eng = Engine(model, max_batch=4)
    rid = eng.add_request(PROMPTS[0], p, capture_prompt_cache=True)
    first = eng.step()
    pc = next(e for e in first if e.rid == rid).prompt_cache
    assert isinstance(pc, PromptRows) and pc.n == len(PROMPTS[0]) and pc.nbytes > 0
    assert eng.prompt_cache(rid) is pc
    while eng.has_unfinished():
        eng.step()
    longer = PROMPTS[0] + [60, 61, 62]
    plain = Engine(model, max_batch=4).generate([longer, PROMPTS[0]], p)
    eng2 = Engine(model, max_batch=4)
    log = _record(eng2)
    r1 = eng2.add_request(longer, p, prefix=pc)
    r2 = eng2.add_request(PROMPTS[0], p, prefix=pc)  # the whole prompt cached: its last token is recomputed
    while eng2.has_unfinished():
        eng2.step()
    assert [eng2.collect(r1).token_ids, eng2.collect(r2).token_ids] == [plain[0][0].token_ids, plain[1][0].token_ids]
    assert eng2.stats["forward_tokens"] == (3 + 1) + 2 * 9  # only the uncached prompt tokens were prefilled
    assert len(log[r1]) == 10
    with pytest.raises(TinyseekError, match="prefix"):
        eng2.add_request([1, 2, 3, 4, 5, 6, 7, 8], p, prefix=pc)


def test_bad_requests_raise_one_line_errors(model):
    eng = Engine(model, max_batch=2)
    with pytest.raises(TinyseekError, match="empty"):
        eng.add_request([], SamplingParams())
    with pytest.raises(TinyseekError, match="token id 999"):
        eng.add_request([1, 999], SamplingParams())
    with pytest.raises(TinyseekError, match="max_len"):
        eng.add_request([1] * 300, SamplingParams())
    spec = Engine(model, speculative=True)
    with pytest.raises(TinyseekError, match="speculative"):
        spec.add_request([1, 2], SamplingParams(temperature=0.5))
    with pytest.raises(TinyseekError, match="MTP"):
        Engine(_model(mtp_depth=0), speculative=True)


def test_greedy_equals_transformers_generate(tmp_path):
    """Same exported weights, a left-padded batch of prompts of different lengths, token for token."""
    import transformers

    from tinyseek.checkpoint import export_dir

    m = _model(seed=3)
    export_dir(m.cfg, m.state_dict(), tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    new = 16
    ours = Engine(m, max_batch=8).generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=new, ignore_eos=True))
    L = max(len(p) for p in PROMPTS)
    pad = 0
    ids = torch.tensor([[pad] * (L - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in PROMPTS])
    with torch.no_grad():
        ref = hf.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=None,
        )
    for i, g in enumerate(ours):
        assert g[0].token_ids == ref[i, L:].tolist(), i


def test_hf_engine_matches_engine_on_exported_weights(tmp_path):
    """The adapter (left padding, its own cache, row dropping) gives the engine's tokens, greedy and seeded."""
    import transformers

    from tinyseek.checkpoint import export_dir
    from tinyseek.inference.hf_engine import HFEngine

    m = _model(seed=4)
    export_dir(m.cfg, m.state_dict(), tmp_path / "hf")
    hf = HFEngine(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32), max_batch=8)
    params = [
        SamplingParams(temperature=0, max_new_tokens=10, logprobs=True),
        SamplingParams(temperature=1.0, seed=9, max_new_tokens=7),
        SamplingParams(temperature=0.8, top_k=20, seed=2, max_new_tokens=12, logprobs=True),
        SamplingParams(temperature=0, max_new_tokens=3),
    ]
    ours = Engine(m, max_batch=8).generate(PROMPTS, params, n=2)
    theirs = hf.generate(PROMPTS, params, n=2)
    assert _ids(ours) == _ids(theirs)
    assert ours[0][0].logprobs == pytest.approx(theirs[0][0].logprobs, abs=1e-4)


def test_hf_engine_preallocated_cache_equals_transformers_dynamic_cache():
    """HFEngine's cache (buffers written in place) against transformers' own DynamicCache (concatenation): same
    tokens and log-probs, with groups (repeat_interleave) and rows finishing at different steps (row selection)."""
    pytest.importorskip("transformers")
    from tinyseek.inference.hf_engine import HFEngine

    torch.manual_seed(0)
    llama = tiny_llama(vocab_size=64).eval()
    prompts = [[5, 9, 17, 3], [10, 7], [31, 32, 33, 34, 35, 36], [50]]
    params = [
        SamplingParams(temperature=1.0, seed=3, max_new_tokens=9, logprobs=True, stop_token_ids=(7,)),
        SamplingParams(temperature=0, max_new_tokens=4, logprobs=True),
        SamplingParams(temperature=0.8, top_p=0.9, seed=5, max_new_tokens=12, logprobs=True),
        SamplingParams(temperature=1.0, seed=1, max_new_tokens=6, logprobs=True, stop_token_ids=(11, 12)),
    ]
    fast = HFEngine(llama, max_batch=16).generate(prompts, params, n=3)
    ref = HFEngine(llama, max_batch=16, preallocate=False).generate(prompts, params, n=3)
    assert _ids(fast) == _ids(ref)
    assert len({len(c.token_ids) for g in fast for c in g}) > 3  # rows finished at different steps
    for a, b in zip(fast, ref):
        for x, y in zip(a, b):
            assert x.logprobs == pytest.approx(y.logprobs, abs=1e-5) and x.finish_reason == y.finish_reason


def test_cli_generate_streams_text(tmp_path, capsys, monkeypatch):
    """Plain and with --compile (which reaches the engine; traced here by the "eager" backend, as inductor's
    code generation takes a minute): the same greedy text as the engine's."""
    import tinyseek.chat as chat
    from tinyseek.chat import cli_generate
    from tinyseek.checkpoint import save_checkpoint
    from tinyseek.tokenizer import Tokenizer

    tok = Tokenizer.train(["the cat sat on the mat " * 20, "a b c d e f g"], vocab_size=300)
    tok.save(tmp_path / "tok")
    save_checkpoint(
        _model(vocab_size=tok.vocab_size), tmp_path / "ck", tokenizer_file=tmp_path / "tok" / "tokenizer.json"
    )
    eng = Engine(_model(vocab_size=tok.vocab_size), tok)
    ids = eng.encode_chat([{"role": "user", "content": "the cat"}])
    expect = eng.generate([ids], SamplingParams(temperature=0, max_new_tokens=8))[0][0].text
    asked, load = [], chat.load_engine

    def load_traced(*a, compile=False, **kw):
        asked.append(compile)
        return load(*a, compile="eager" if compile else False, **kw)

    monkeypatch.setattr(chat, "load_engine", load_traced)
    torch._dynamo.reset()
    for extra in ([], ["--compile"]):
        argv = [str(tmp_path / "ck"), "--prompt", "the cat", "--max-new-tokens", "8", "--temperature", "0"]
        assert cli_generate(argv + extra) == 0
        assert capsys.readouterr().out == expect + "\n"
    assert asked == [False, True]
    torch._dynamo.reset()


def test_cli_chat_multi_turn(r1_checkpoint, monkeypatch, capsys):
    from tinyseek.chat import cli_chat

    lines = iter(["What is 2 plus 3?", "/reset", "What is 4 times 2?"])

    def fake_input(prompt=""):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    assert cli_chat([str(r1_checkpoint), "--temperature", "0", "--max-new-tokens", "40"]) == 0
    out = capsys.readouterr().out
    assert "thinking: Add 2 and 3 to get 5.\n5\n" in out and "thinking: Four twice is 8.\n8\n" in out
    assert "<think>" not in out and "<answer>" not in out  # no tags: the reasoning (dimmed on a terminal), the answer


def test_cli_chat_answers_its_commands_itself(r1_checkpoint, monkeypatch, capsys):
    """A banner that says how to leave; /help, /reset (confirmed), a mistyped command and exit are the chat's, never
    sent to the model (before: a bare `>`, and /help, exit, quit went to the model, /reset printed nothing)."""
    import tinyseek.chat as chat

    sent, real = [], chat._stream
    monkeypatch.setattr(
        chat, "_stream", lambda engine, ids, *a: sent.append(engine.decode(ids)) or real(engine, ids, *a)
    )
    lines = iter(["/help", "What is 2 plus 3?", "/reset", "/rset", "exit", "What is 4 times 2?"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert chat.cli_chat([str(r1_checkpoint), "--temperature", "0", "--max-new-tokens", "40"]) == 0
    out = capsys.readouterr().out
    banner = out.split("\n")[:4]
    assert banner[0].startswith(f"tinyseek chat: {r1_checkpoint}") and any("/exit" in b for b in banner)
    assert "/reset" in out.split("What is")[0] and "forget the conversation" in out  # /help's list
    assert len(sent) == 1 and sent[0].endswith("<｜User｜>What is 2 plus 3?<｜Assistant｜>")
    assert "thinking: Add 2 and 3 to get 5.\n5\n" in out
    assert "(conversation cleared)" in out and "unknown command '/rset'; did you mean '/reset'?" in out
    assert next(lines) == "What is 4 times 2?"  # exit left the loop: the last line was never read


def test_the_terminal_reply_splits_as_the_server_does():
    """The chat's reply writer: the reasoning dimmed (on a terminal), the answer plain on its own line, and the
    same split as the server's for any text, a completion without <think> included."""
    import io

    from tinyseek.chat import DIM, RESET, Reply
    from tinyseek.serve.reasoning import ReasoningSplitter

    def show(text: str, color: bool, cut: int = 3) -> str:
        out = io.StringIO()
        reply = Reply(out, color)
        for i in range(0, len(text), cut):
            reply(text[i : i + cut])
        reply.close()
        return out.getvalue().replace(RESET + DIM, "")  # one dimmed run, however many pieces wrote it

    assert show("<think>\nabc\n</think>\n<answer>5</answer>", True) == f"{DIM}thinking: abc{RESET}\n5\n"
    assert show("<think>\nabc\n</think>\n<answer>5</answer>", False) == "thinking: abc\n5\n"
    for cut in (1, 2, 4, 5):  # tags split across pieces anywhere
        assert show("<think>let me see</think><answer>4</answer>", False, cut) == "thinking: let me see\n4\n"
    for text in ("12</think>\n</think>", "<answer>56</answer>", " <think> 5+3 </think> <answer>8</answer>", "hi"):
        sp = ReasoningSplitter()
        sp.feed(text)
        sp.finish()
        reasoning, content = sp.result()
        assert show(text, False) == (f"thinking: {reasoning}\n" if reasoning else "") + f"{content}\n", text


def test_a_bad_prompt_in_a_batch_queues_nothing(model):
    eng = Engine(model, max_batch=4)
    with pytest.raises(TinyseekError, match="prompt 2: .*token id 4000"):
        eng.generate([[1, 2], [3], [4000]], SamplingParams(max_new_tokens=3))
    assert not eng.has_unfinished() and not eng.seqs
    assert len(eng.generate([[1, 2]], SamplingParams(max_new_tokens=3))[0][0].token_ids) <= 3


def test_bf16_engine_keeps_a_trained_models_answers(r1_checkpoint):
    """dtype=bf16 (about 1.2-1.4x faster on this CPU, dev/LOG.md): on a trained model with confident
    predictions the greedy completions are the float32 ones."""
    from tinyseek.inference.load import load_engine

    e32 = load_engine(r1_checkpoint, max_batch=4)
    e16 = load_engine(r1_checkpoint, max_batch=4, dtype=torch.bfloat16)
    assert e16.cache._tensors()[0].dtype == torch.bfloat16
    prompts = [
        e32.encode_chat([{"role": "user", "content": q}])
        for q in ("What is 2 plus 3?", "Say hi.", "What is 4 times 2?")
    ]
    p = SamplingParams(temperature=0, max_new_tokens=40)
    assert [g[0].text for g in e16.generate(prompts, p)] == [g[0].text for g in e32.generate(prompts, p)]


def test_load_engine_picks_the_implementation(tmp_path):
    from tinyseek.checkpoint import export_dir
    from tinyseek.inference.hf_engine import HFEngine
    from tinyseek.inference.load import load_engine

    m = _model(seed=5)
    export_dir(m.cfg, m.state_dict(), tmp_path / "ds")
    e = load_engine(tmp_path / "ds", max_batch=2)  # an exported DeepseekV3 runs on tinyseek's own engine
    assert isinstance(e, Engine)
    assert e.generate([PROMPTS[0]], SamplingParams(temperature=0, max_new_tokens=5)) == Engine(m, max_batch=2).generate(
        [PROMPTS[0]], SamplingParams(temperature=0, max_new_tokens=5)
    )
    torch._dynamo.reset()
    c = load_engine(tmp_path / "ds", max_batch=2, compile="eager")  # compiled (traced, run by the eager backend)
    assert c.compiled and c.generate([PROMPTS[0]], SamplingParams(temperature=0, max_new_tokens=5)) == e.generate(
        [PROMPTS[0]], SamplingParams(temperature=0, max_new_tokens=5)
    )
    torch._dynamo.reset()
    tiny_llama().save_pretrained(tmp_path / "llama")
    h = load_engine(tmp_path / "llama", max_batch=2)
    assert isinstance(h, HFEngine) and h.tokenizer is None
    with pytest.raises(TinyseekError, match="--compile needs a tinyseek checkpoint"):
        load_engine(tmp_path / "llama", compile=True)
    assert len(h.generate([[1, 2, 3]], SamplingParams(max_new_tokens=4, seed=1, ignore_eos=True))[0][0].token_ids) == 4
    with pytest.raises(TinyseekError, match="no such"):
        load_engine(tmp_path / "nothing")


def test_engines_restore_the_training_flag(model, tmp_path):
    """GRPO generates with the policy it trains: generation must not leave it in eval mode."""
    from tinyseek.inference.hf_engine import HFEngine

    m = _model(seed=6).train()
    Engine(m, max_batch=2).generate([PROMPTS[1]], SamplingParams(max_new_tokens=2))
    assert m.training
    hf = tiny_llama().train()
    HFEngine(hf, max_batch=2).generate([[1, 2]], SamplingParams(max_new_tokens=2))
    assert hf.training


# -- one sequence's text: incremental decoding, stop strings, streaming (inference/sequence.py) --------------


@pytest.fixture(scope="module")
def text_tok():
    from tinyseek.tokenizer import Tokenizer

    return Tokenizer.train(["hello world, the answer is 42. Add 2 and 3 to get 5. héllo 你好 😀"] * 5, 300)


def _feed(tok, ids, stops=()):
    """Append `ids` to a streaming Seq one token at a time, as an engine does; returns (seq, streamed deltas)."""
    from tinyseek.inference.sequence import Seq

    s = Seq(0, [1], SamplingParams(max_new_tokens=len(ids) + 1, stop_strings=tuple(stops)), seed=0, budget=len(ids) + 1)
    deltas = []
    for t in ids:
        s.add(t, None, {tok.eos_id}, tok)
        deltas.append(s.delta({tok.eos_id}, tok))
        if s.finish is not None:
            break
    if s.finish is None:  # ended by the caller (a budget, an abort): the rest of the text goes out
        s.finish = "length"
        deltas.append(s.delta({tok.eos_id}, tok))
    return s, deltas


def test_incremental_text_equals_the_whole_decode(text_tok):
    """The fast path (each token re-decodes a short window) against the reference (decode everything, then cut):
    same text, same stopping token, and the streamed pieces add up to it, less the replacement characters at its
    end (the bytes of a character the output ended inside of)."""
    tok = text_tok
    g = torch.Generator().manual_seed(0)
    for trial in range(80):
        ids = torch.randint(0, tok.vocab_size, (int(torch.randint(1, 60, (1,), generator=g)),), generator=g).tolist()
        stops = ["an", "42", "好"] if trial % 2 else []
        s, deltas = _feed(tok, ids, stops)
        kept = s.out[:-1] if s.out[-1] == tok.eos_id and s.finish == "stop" else s.out
        whole = tok.decode(kept)
        cuts = [whole.find(x) for x in stops if x in whole]
        out = s.output_text({tok.eos_id}, tok)
        assert out == (whole[: min(cuts)] if cuts else whole), ids
        assert "".join(deltas) == out.rstrip("\ufffd"), ids  # bytes that never became a character are not streamed
        if cuts and kept == s.out:  # stopped by a stop string: at the first token whose text completes one
            assert not any(x in tok.decode(s.out[:-1]) for x in stops)


def test_streamed_text_holds_back_stop_strings_and_partial_characters(text_tok):
    tok = text_tok
    s, deltas = _feed(tok, tok.encode("hello world, the answer is 42."), stops=["answer"])
    assert s.finish == "stop" and "".join(deltas) == "hello world, the "
    assert tok.decode(s.out).endswith("answer")  # the token that completed the stop string ended it
    s, deltas = _feed(tok, tok.encode("hello world"), stops=["world!"])  # a stop string that never completes
    assert s.finish == "length" and "".join(deltas) == "hello world"
    s, deltas = _feed(tok, tok.encode("héllo 你好 😀"))
    assert all("\ufffd" not in d for d in deltas) and "".join(deltas) == "héllo 你好 😀"


def test_compiled_step_is_one_graph_in_a_fresh_process(monkeypatch):
    """The kernel probe runs before tracing: a process whose first MoE forward is the compiled one (nothing
    probed yet) still compiles prefill and decode whole, on both MoE paths, with no graph break (a break in
    the layer loop would make dynamo compile every layer apart)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    monkeypatch.setattr(model_mod, "_GROUPED_MM_OK", {})  # as in a fresh process
    m = _model(n_layers=2)
    p = SamplingParams(temperature=0, max_new_tokens=4)
    Engine(m, max_batch=24, compile="eager").generate(PROMPTS * 3, p, n=2)  # 24 rows: the sorted path
    assert model_mod._GROUPED_MM_OK and not counters["graph_break"], dict(counters["graph_break"])
    torch._dynamo.reset()


@pytest.mark.parametrize("end", ["length", "stop"])
def test_a_character_cut_short_is_never_streamed(end):
    """A multi-byte character whose last bytes were never sampled (the token budget ran out, or the model ended)
    streams nothing for it (before: a '\\ufffd' chunk); the whole characters before it all stream."""
    from tinyseek.inference.sequence import Seq
    from tinyseek.tokenizer import Tokenizer

    tok = Tokenizer.train(["hello world"] * 5, 300)
    ids = tok.encode("a中")  # "中" is three byte tokens here
    assert len(ids) == 4 and tok.decode(ids[:3]).endswith("\ufffd")
    take = ids[:3] + ([tok.eos_id] if end == "stop" else [])
    seq = Seq(0, [1], SamplingParams(max_new_tokens=len(take)), seed=0, budget=len(take))
    streamed = []
    for t in take:
        seq.add(t, None, {tok.eos_id}, tok)
        streamed.append(seq.delta({tok.eos_id}, tok))
    assert seq.finish == end and "".join(streamed) == "a" and "\ufffd" not in streamed
    whole = Seq(0, [1], SamplingParams(max_new_tokens=8), seed=0, budget=8)
    for t in ids:  # the same character completed: it streams whole, once
        whole.add(t, None, {tok.eos_id}, tok)
        streamed.append(whole.delta({tok.eos_id}, tok))
    assert "".join(streamed[len(take) :]) == "a中"
