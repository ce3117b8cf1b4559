"""The model: both MLA paths and both MoE dispatch paths agree, the cache is exact, balancing balances."""

import copy

import pytest
import torch

from tinyseek.config import ModelConfig
from tinyseek.errors import TinyseekError
from tinyseek.model import Gate, KVCache, Transformer, cross_entropy, seq_balance_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny ops, one torch thread


def nano(**kw) -> ModelConfig:
    return ModelConfig.preset("nano", **kw)


def make(cfg: ModelConfig, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    m = Transformer(cfg)
    # random (non-trivial) norm weights and biases, so that a wrong eps/order/bias use shows
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.2 * torch.randn_like(p))
        for moe in m.moe_blocks:
            moe.gate.bias.copy_(0.05 * torch.randn_like(moe.gate.bias))
    return m.eval()


def twin(m: Transformer, **kw) -> Transformer:
    """The same weights under a different implementation switch."""
    cfg = copy.replace(m.cfg, **kw) if hasattr(copy, "replace") else ModelConfig(**{**m.cfg.to_dict(), **kw})
    t = Transformer(cfg)
    t.load_state_dict(m.state_dict())
    return t.eval()


def latent_always(m: Transformer) -> Transformer:
    """Make absorbed MLA use the latent form without a cache too (by default training up-projects K/V)."""
    for mod in m.modules():
        if hasattr(mod, "latent_without_cache"):
            mod.latent_without_cache = True
    return m


def tokens(B, T, seed=1, vocab=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (B, T), generator=g)


# ---------------------------------------------------------------------------------------------- MLA


@pytest.mark.parametrize("q_lora_rank", [0, 32])
def test_naive_and_absorbed_agree_on_a_whole_sequence(q_lora_rank):
    a = latent_always(make(nano(mla_impl="absorbed", q_lora_rank=q_lora_rank)))
    n = twin(a, mla_impl="naive")
    x = tokens(2, 24)
    la, ln = a(x).logits, n(x).logits
    assert la.abs().max() > 0.1
    torch.testing.assert_close(la, ln, atol=1e-5, rtol=0)
    # a whole-sequence prefill into the latent cache, and the default (up-projected) training forward
    torch.testing.assert_close(a(x, cache=KVCache(a.cfg, 2, 32)).logits, ln, atol=1e-5, rtol=0)
    torch.testing.assert_close(twin(a, mla_impl="absorbed")(x).logits, ln, atol=1e-5, rtol=0)


def test_yarn_changes_rope_and_scale_and_paths_still_agree():
    cfg = nano(max_seq_len=256, original_seq_len=64, rope_factor=4.0, mscale=0.7)
    assert cfg.softmax_scale > cfg.qk_head_dim**-0.5
    a = make(cfg)
    plain = twin(a, rope_factor=1.0)
    x = tokens(1, 40)
    assert (a(x).logits - plain(x).logits).abs().max() > 1e-4
    torch.testing.assert_close(latent_always(a)(x).logits, twin(a, mla_impl="naive")(x).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("impl,max_len", [("absorbed", 32), ("naive", 32), ("absorbed", 200)])
def test_cached_decoding_equals_a_full_forward(impl, max_len):
    m = make(nano(mla_impl=impl))
    x = tokens(2, 20)
    full = m(x).logits
    cache = KVCache(m.cfg, 2, max_len)
    steps = [m(x[:, :7], cache=cache).logits]  # prefill 7, then one token at a time
    for t in range(7, 20):
        steps.append(m(x[:, t : t + 1], cache=cache).logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
    assert cache.pos.tolist() == [20, 20]


def test_rows_at_different_lengths_decode_like_separate_sequences():
    """One batch, rows prefilled to different lengths in other cache slots, decoded together."""
    for impl in ("absorbed", "naive"):
        m = make(nano(mla_impl=impl))
        a, b = tokens(1, 12, seed=3), tokens(1, 5, seed=4)
        cache = KVCache(m.cfg, 4, 32)
        m(a[:, :9], cache=cache, rows=torch.tensor([2]))
        m(b[:, :3], cache=cache, rows=torch.tensor([0]))
        got = m(torch.cat([a[:, 9:10], b[:, 3:4]]), cache=cache, rows=torch.tensor([2, 0])).logits  # [2, 1, V]
        torch.testing.assert_close(got[0, 0], m(a[:, :10]).logits[0, -1], atol=1e-5, rtol=0)
        torch.testing.assert_close(got[1, 0], m(b[:, :4]).logits[0, -1], atol=1e-5, rtol=0)
        assert cache.pos.tolist() == [4, 0, 10, 0]


def test_naive_and_absorbed_decode_alike_with_a_cache():
    a = make(nano(mla_impl="absorbed"))
    n = twin(a, mla_impl="naive")
    x = tokens(3, 10)
    ca, cn = KVCache(a.cfg, 3, 16), KVCache(n.cfg, 3, 16)
    outs = []
    for model, cache in ((a, ca), (n, cn)):
        steps = [model(x[:, :4], cache=cache).logits]
        steps += [model(x[:, t : t + 1], cache=cache).logits for t in range(4, 10)]
        outs.append(torch.cat(steps, 1))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)


def test_absorbed_cache_holds_latent_plus_rope_key_per_token_per_layer():
    cfg = nano()
    cache = KVCache(cfg, 2, 8)
    assert cache.values_per_token == cfg.kv_lora_rank + cfg.qk_rope_head_dim == cfg.latent_cache_dim
    assert len(cache.kv) == cfg.n_layers + cfg.mtp_depth
    assert KVCache(nano(mla_impl="naive"), 2, 8).values_per_token == cfg.n_heads * (cfg.qk_head_dim + cfg.v_head_dim)


def test_copy_rows_and_reset():
    m = make(nano())
    x = tokens(1, 8)
    cache = KVCache(m.cfg, 3, 16)
    m(x[:, :6], cache=cache, rows=torch.tensor([0]))
    cache.copy_rows(0, [1, 2])
    assert cache.pos.tolist() == [6, 6, 6]
    got = m(x[:, 6:7].expand(3, 1), cache=cache).logits
    ref = m(x[:, :7]).logits[0, -1]
    for r in range(3):
        torch.testing.assert_close(got[r, 0], ref, atol=1e-5, rtol=0)
    cache.reset([1])
    assert cache.pos.tolist() == [7, 0, 7]
    with pytest.raises(TinyseekError, match="max_len"):
        m(tokens(1, 20), cache=cache, rows=torch.tensor([1]))


# ---------------------------------------------------------------------------------------------- MoE


def _same_forward_and_gradients(fast, ref, x, mtp_without_grad=False):
    """A dispatch path against the loop reference: logits, expert counts and every parameter's gradient."""
    outs = []
    for m in (fast, ref):
        out = m(x, targets=x.roll(-1, 1))
        out.loss.backward()
        outs.append(out)
    torch.testing.assert_close(outs[0].logits, outs[1].logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(outs[0].expert_load, outs[1].expert_load)
    gl = dict(ref.named_parameters())
    for name, p in fast.named_parameters():
        if mtp_without_grad and name.startswith("mtp."):
            assert p.grad is None and gl[name].grad is None, name
        else:
            assert p.grad is not None, name
            torch.testing.assert_close(p.grad, gl[name].grad, atol=1e-5, rtol=1e-4, msg=name)
    assert fast.layers[1].ffn.experts.w1.grad.abs().sum() > 0


@pytest.mark.parametrize("score_func,B,T", [("sigmoid", 2, 16), ("softmax", 2, 16), ("sigmoid", 4, 40)])
def test_loop_and_sorted_dispatch_agree_in_outputs_and_every_gradient(score_func, B, T):
    """4 x 40 tokens: enough rows per expert that the sorted path pads each group to 16 rows."""
    import tinyseek.model as model

    s = make(nano(moe_impl="sorted", score_func=score_func, route_scale=2.5)).train()
    loop = twin(s, moe_impl="loop").train()
    x = tokens(B, T)
    assert model._group_align(x.device, torch.float32, B * T * 2, 8) == (16 if B * T >= 128 else 1)
    _same_forward_and_gradients(s, loop, x)


@pytest.mark.parametrize("B,T", [(1, 1), (1, 7), (3, 5)])
def test_loop_and_sorted_agree_when_experts_get_no_tokens(B, T):
    s = make(nano())
    loop = twin(s, moe_impl="loop")
    x = tokens(B, T)
    out = s(x)
    assert (out.expert_load == 0).any()
    torch.testing.assert_close(out.logits, loop(x).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("B,T", [(1, 1), (3, 1), (2, 16)])
def test_dense_dispatch_agrees_with_the_loop_in_outputs_and_every_gradient(B, T):
    """The decode path (every expert on every token, unchosen ones weighted 0) against the reference."""
    d = make(nano(moe_impl="dense")).train()
    loop = twin(d, moe_impl="loop").train()
    x = tokens(B, T)
    _same_forward_and_gradients(d, loop, x, mtp_without_grad=T == 1)  # one token: MTP has nothing to predict


def test_sorted_dispatch_takes_the_dense_path_only_for_few_rows_per_expert(monkeypatch):
    import tinyseek.model as model

    cfg = nano()
    E, K = cfg.n_routed_experts, cfg.n_activated_experts
    limit = model.DENSE_MAX_ROWS_PER_EXPERT * E // K  # tokens
    assert not model.use_dense(limit, K, E)  # eager on one thread: the grouped matmul's small products win
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert model.use_dense(limit, K, E) and not model.use_dense(limit + 1, K, E)
    s = make(cfg)
    calls = []
    monkeypatch.setattr(model.Experts, "dense", lambda self, *a: calls.append("dense") or model.Experts.loop(self, *a))
    x = tokens(1, limit + 1)
    s(x)
    assert calls == []
    s(x[:, :limit])
    assert calls == ["dense"] * cfg.n_moe_layers


def test_decode_without_host_sync_equals_the_cached_forward():
    """model.decode (the engine's compiled step) against forward(cache=...): same logits, same cache, same pos."""
    m = make(nano())
    x = tokens(3, 12)
    ca, cb = KVCache(m.cfg, 4, 64), KVCache(m.cfg, 4, 64)
    rows = torch.tensor([3, 0, 2])
    for c in (ca, cb):
        m(x[:, :9], cache=c, rows=rows)
    for t in range(9, 12):
        ref = m(x[:, t : t + 1], cache=ca, rows=rows).logits
        got = m.decode(x[:, t : t + 1], cb, rows, t + 1)
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    assert ca.pos.tolist() == cb.pos.tolist() == [12, 0, 12, 12]
    torch.testing.assert_close(ca.latent[0], cb.latent[0], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_compiled_fp32_training_step_takes_the_grouped_path_and_matches_eager(monkeypatch):
    """Under torch.compile in fp32 the sorted dispatch runs grouped_mm as an opaque op with its own backward
    (dynamo's shape rule for grouped_mm is bf16-only): traced through AOT autograd ("aot_eager": no code
    generation), the loss and every gradient equal the eager step's."""
    import tinyseek.model as model

    torch._dynamo.reset()
    m = make(nano()).train()
    c = twin(m).train()
    x = tokens(4, 40)  # 4 x 40 tokens: the sorted path, groups padded to 16 rows
    assert not model.use_dense(4 * 40, m.cfg.n_activated_experts, m.cfg.n_routed_experts)
    calls = []
    op = model._grouped_mm_opaque
    monkeypatch.setattr(model, "_grouped_mm_opaque", lambda *a, **k: calls.append(1) or op(*a, **k))
    ref = m(x, targets=x.roll(-1, 1))
    ref.loss.backward()
    assert not calls  # eager: torch._grouped_mm itself
    out = torch.compile(c, backend="aot_eager")(x, targets=x.roll(-1, 1))
    out.loss.backward()
    torch._dynamo.reset()
    assert calls  # traced: the opaque op
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=0)
    gm = dict(m.named_parameters())
    for name, p in c.named_parameters():
        torch.testing.assert_close(p.grad, gm[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_padded_fallback_agrees_with_grouped_mm(monkeypatch):
    import tinyseek.model as model

    s = make(nano())
    x = tokens(2, 16)
    ref = s(x).logits
    calls = []
    monkeypatch.setattr(model, "_GROUPED_MM_OK", {})  # the probe's answers so far: forgotten
    monkeypatch.setattr(model, "grouped_mm_works", lambda device, dtype: calls.append(dtype) or False)
    torch.testing.assert_close(s(x).logits, ref, atol=1e-5, rtol=0)
    assert calls  # the fallback did run


def test_group_limited_routing_stays_inside_the_chosen_groups():
    cfg = nano(n_routed_experts=16, n_expert_groups=4, n_limited_groups=2, n_activated_experts=3)
    torch.manual_seed(0)
    gate = Gate(cfg)
    torch.nn.init.normal_(gate.weight, std=1.0)
    gate.bias.copy_(0.1 * torch.randn(16))
    x = torch.randn(500, cfg.dim)
    weights, experts, scores = gate(x)
    groups = experts // 4  # [T, K] group of each pick
    n_groups = torch.tensor([len(set(g.tolist())) for g in groups])
    assert n_groups.max() <= 2 and n_groups.min() >= 1
    # and the groups are the ones with the best top-2 biased sums
    biased = (scores + gate.bias).view(500, 4, 4)
    best = biased.topk(2, -1).values.sum(-1).topk(2, -1).indices.sort(-1).values
    for t in range(500):
        assert set(groups[t].tolist()) <= set(best[t].tolist())
    # weights: unbiased scores of the picks, normalised, times route_scale
    w = scores.gather(1, experts)
    torch.testing.assert_close(weights, w / w.sum(-1, keepdim=True) * cfg.route_scale)
    # without the group limit some tokens would have used more groups (so the test can fail)
    free = (scores + gate.bias).topk(3, -1).indices // 4
    assert max(len(set(g.tolist())) for g in free) == 3


def test_bias_only_changes_selection_not_weights():
    cfg = nano(n_expert_groups=1, n_limited_groups=1)
    torch.manual_seed(0)
    gate = Gate(cfg)
    torch.nn.init.normal_(gate.weight)
    x = torch.randn(64, cfg.dim)
    gate.bias.zero_()
    gate.bias[3] = 10.0  # expert 3 always chosen, but with its unbiased score as weight
    w, e, s = gate(x)
    assert (e == 3).any(-1).all()
    picked = s.gather(1, e)
    torch.testing.assert_close(w, picked / picked.sum(-1, keepdim=True))


def test_seq_balance_loss_matches_a_hand_computation():
    # one sequence of 2 tokens, 3 experts, top-1
    scores = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]])  # sums 1.0 each
    counts = torch.tensor([[1, 0, 1]])
    # f = E/(K T) * counts = 1.5 * [1, 0, 1]; P = mean over tokens = [0.3, 0.2, 0.5]
    expected = 1.5 * 0.3 + 0 + 1.5 * 0.5
    got = seq_balance_loss(scores, counts, k=1, score_func="sigmoid")
    assert abs(got.item() - expected) < 1e-6
    # sigmoid scores are normalised per token first: scaling a token's scores changes nothing
    assert (
        abs(seq_balance_loss(scores * torch.tensor([2.0, 3.0]).view(1, 2, 1), counts, 1, "sigmoid").item() - expected)
        < 1e-6
    )


def test_aux_loss_is_part_of_the_loss_with_alpha():
    m = make(nano(seq_aux_alpha=0.5, mtp_depth=0))
    x = tokens(2, 12)
    out = m(x, targets=x.roll(-1, 1))
    assert out.aux_loss is not None and out.aux_loss > 0
    torch.testing.assert_close(out.loss, out.ce_loss + 0.5 * out.aux_loss)


def test_bias_updates_shrink_a_skewed_load():
    cfg = nano(n_expert_groups=1, n_limited_groups=1, bias_update_speed=0.01, mtp_depth=0)
    m = make(cfg)
    with torch.no_grad():
        for moe in m.moe_blocks:
            moe.gate.bias.zero_()
            moe.gate.weight[0] += 0.5  # expert 0 gets a large score for most tokens: skewed
            moe.gate.weight[1] -= 0.5
    x = tokens(4, 32)

    def ratio():
        load = m(x).expert_load
        return (load.max(-1).values / load.min(-1).values.clamp(min=1)).max().item(), load

    before, load = ratio()
    for _ in range(60):
        m.update_expert_bias(load)
        after, load = ratio()
    assert before > 4 and after < before / 2, (before, after)


def test_routing_statistics_count_real_tokens_not_padding():
    """With `real_mask`, a right-padded batch's expert load and balance loss count its real tokens only."""
    m = make(nano(seq_aux_alpha=1.0, mtp_depth=1))
    E, K = m.cfg.n_routed_experts, m.cfg.n_activated_experts
    lens = [12, 5, 9]
    x = tokens(3, max(lens), seed=10)
    real = torch.arange(max(lens))[None, :] < torch.tensor(lens)[:, None]  # [B, T]
    x[~real] = 0  # padding after each row
    routed = []  # per MoE block that runs: (scores [T*B, E], experts [T*B, K], its real mask [B, T'])
    hooks = [moe.gate.register_forward_hook(lambda mod, inp, out: routed.append(out)) for moe in m.moe_blocks]
    out = m(x, targets=x.roll(-1, 1), real_mask=real)
    for h in hooks:
        h.remove()
    masks = [real] * m.cfg.n_moe_layers + [real[:, 1:]]  # the MTP block's position i carries token i + 1
    assert len(routed) == len(masks)
    auxes = []
    for (_, experts_TK, scores_TE), r_BT, load_E in zip(routed, masks, out.expert_load):
        B, T = r_BT.shape
        experts_BTK = experts_TK.view(B, T, K)
        want = torch.bincount(experts_BTK[r_BT].flatten(), minlength=E).float()
        torch.testing.assert_close(load_E, want)  # every routed slot of a real token once, padding nowhere
        per_row = []
        for b in range(B):
            n = int(r_BT[b].sum())
            counts = torch.bincount(experts_BTK[b, :n].flatten(), minlength=E)[None]
            per_row.append(seq_balance_loss(scores_TE.view(B, T, E)[b : b + 1, :n], counts, K, m.cfg.score_func))
        auxes.append(torch.stack(per_row).mean())
    torch.testing.assert_close(out.aux_loss, torch.stack(auxes).mean())  # each row's loss as if it were alone
    # without the mask the padding is counted as routed tokens (the bug this guards against)
    unmasked = m(x, targets=x.roll(-1, 1))
    assert unmasked.expert_load[0].sum() == x.numel() * K > out.expert_load[0].sum() == sum(lens) * K
    # outputs at real positions do not depend on the mask
    torch.testing.assert_close(out.logits[real], unmasked.logits[real])


def test_bias_update_speed_zero_leaves_the_biases_alone():
    m = make(nano())
    before = [moe.gate.bias.clone() for moe in m.moe_blocks]
    load = m(tokens(2, 16)).expert_load
    m.update_expert_bias(load, speed=0.0)
    assert all(torch.equal(a, moe.gate.bias) for a, moe in zip(before, m.moe_blocks))
    m.update_expert_bias(load)  # the model's own gamma moves them
    assert not all(torch.equal(a, moe.gate.bias) for a, moe in zip(before, m.moe_blocks))


def test_update_expert_bias_rejects_a_wrong_shape():
    m = make(nano())
    with pytest.raises(TinyseekError, match="load"):
        m.update_expert_bias(torch.ones(5, 3))


def test_bias_stays_float32_and_is_saved():
    m = make(nano()).to(torch.bfloat16)
    assert all(moe.gate.bias.dtype == torch.float32 for moe in m.moe_blocks)
    assert "layers.1.ffn.gate.bias" in m.state_dict()


# ---------------------------------------------------------------------------------------------- MTP, shapes


def test_mtp_loss_is_finite_and_trains_the_mtp_modules():
    m = make(nano(mtp_depth=2)).train()
    x = tokens(2, 16)
    out = m(x, targets=x.roll(-1, 1))
    assert torch.isfinite(out.mtp_loss) and out.mtp_loss > 0
    assert [lg.shape[1] for lg in out.mtp_logits] == [15, 14]
    torch.testing.assert_close(
        out.loss, out.ce_loss + m.cfg.mtp_loss_weight * out.mtp_loss + m.cfg.seq_aux_alpha * out.aux_loss
    )
    out.loss.backward()
    for name, p in m.mtp.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert out.expert_load.shape == (len(m.moe_blocks), 8) and out.expert_load[-1].sum() > 0


def test_mtp_step_equals_the_training_path():
    m = make(nano(mtp_depth=1))
    x = tokens(1, 12)
    out = m(x, targets=x.roll(-1, 1))
    _, lg = m.mtp_step(1, out.residual[:, :11], x[:, 1:])
    torch.testing.assert_close(lg, out.mtp_logits[0], atol=1e-5, rtol=0)
    # with a cache, position by position
    cache = KVCache(m.cfg, 1, 16)
    res = m(x[:, :6], cache=cache).residual
    got = [m.mtp_step(1, res, x[:, 1:7], cache=cache)[1]]
    for t in range(6, 11):
        res = m(x[:, t : t + 1], cache=cache).residual
        got.append(m.mtp_step(1, res, x[:, t + 1 : t + 2], cache=cache)[1])
    torch.testing.assert_close(torch.cat(got, 1), out.mtp_logits[0], atol=1e-5, rtol=0)


def test_dense_model_without_query_compression_works():
    cfg = ModelConfig.preset("tiny-dense", vocab_size=128, dim=32, n_layers=2, n_dense_layers=2, inter_dim=64)
    m = make(cfg)
    x = tokens(2, 10, vocab=128)
    out = m(x, targets=x.roll(-1, 1), compute_logits=False)
    assert out.logits is None and out.hidden.shape == (2, 10, 32) and out.aux_loss is None
    assert out.expert_load.shape == (0, 0)
    out.loss.backward()
    assert m.layers[0].attn.wq.weight.grad is not None
    torch.testing.assert_close(m.head(out.hidden), m(x).logits)
    m.update_expert_bias(out.expert_load)  # a no-op, not an error


def test_state_dict_names_follow_the_contract():
    keys = set(make(nano()).state_dict())
    for k in [
        "embed.weight",
        "layers.0.attn_norm.weight",
        "layers.0.attn.wq_a.weight",
        "layers.0.attn.q_norm.weight",
        "layers.0.attn.wq_b.weight",
        "layers.0.attn.wkv_a.weight",
        "layers.0.attn.kv_norm.weight",
        "layers.0.attn.wkv_b.weight",
        "layers.0.attn.wo.weight",
        "layers.0.ffn_norm.weight",
        "layers.0.ffn.w1.weight",
        "layers.0.ffn.w2.weight",
        "layers.0.ffn.w3.weight",
        "layers.1.ffn.gate.weight",
        "layers.1.ffn.gate.bias",
        "layers.1.ffn.experts.w1",
        "layers.1.ffn.experts.w2",
        "layers.1.ffn.experts.w3",
        "layers.1.ffn.shared.w1.weight",
        "norm.weight",
        "head.weight",
        "mtp.0.enorm.weight",
        "mtp.0.hnorm.weight",
        "mtp.0.eh_proj.weight",
        "mtp.0.block.attn.wkv_a.weight",
        "mtp.0.norm.weight",
    ]:
        assert k in keys, k
    sd = make(nano()).state_dict()
    assert sd["layers.1.ffn.experts.w1"].shape == (8, 32, 64) and sd["layers.1.ffn.experts.w2"].shape == (8, 64, 32)


def test_bad_inputs_raise_one_line_errors():
    m = make(nano())
    with pytest.raises(TinyseekError, match="tokens"):
        m(torch.zeros(3, dtype=torch.long))
    with pytest.raises(TinyseekError, match=r"tokens: ids must lie in \[0, 256\), got 0 .. 256"):
        m(torch.tensor([[0, 256]]))
    with pytest.raises(TinyseekError, match="targets"):
        m(tokens(2, 4), targets=tokens(2, 5))
    with pytest.raises(TinyseekError, match="mla_impl"):
        m(tokens(1, 4), cache=KVCache(nano(mla_impl="naive"), 1, 8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_cross_entropy_equals_torch(dtype):
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(150, 77, generator=g)).to(dtype).requires_grad_()
    targets = torch.randint(0, 77, (150,), generator=g)
    targets[::5] = -100
    ref = torch.nn.functional.cross_entropy(logits.float(), targets, ignore_index=-100)
    (g_ref,) = torch.autograd.grad(ref * 3, logits)
    before = logits.detach().clone()
    got = cross_entropy(logits, targets, chunk=64)  # 150 rows: chunks of 64, 64, 22
    (g_got,) = torch.autograd.grad(got * 3, logits)
    assert torch.equal(logits.detach(), before)  # fp32 logits are not modified in place
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(g_got, g_ref, atol=1e-7 if dtype == torch.float32 else 1e-3, rtol=1e-2)
    assert g_got[::5].abs().max() == 0
    (g_one,) = torch.autograd.grad(cross_entropy(logits, targets), logits)  # upstream gradient 1: no scaling pass
    torch.testing.assert_close(g_one * 3, g_got, atol=1e-6, rtol=1e-2)


def test_bf16_model_tracks_fp32():
    m = make(nano())
    x = tokens(4, 40)
    ref = m(x, targets=x.roll(-1, 1))
    b = twin(m).to(torch.bfloat16)
    out = b(x, targets=x.roll(-1, 1))
    assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    assert (out.logits.float() - ref.logits).abs().max() < 0.1 * ref.logits.abs().max()
    assert abs(out.ce_loss.item() - ref.ce_loss.item()) < 0.02
    out.loss.backward()
    assert all(p.grad is not None for p in b.parameters())
