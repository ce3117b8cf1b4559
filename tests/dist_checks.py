"""Checks that need several processes, run by tests/test_distributed.py under torchrun (gloo, CPU):

    python -m torch.distributed.run --standalone --nproc-per-node N tests/dist_checks.py ep|ep-threads

`ep`: expert parallelism equals the single-process model. Every rank builds the same `nano` model and its own
batch; the reference is the plain model run on every rank's batch in one process. For each EP size that
divides the world (2, and 4 on four ranks: EP composed with data parallelism when ep < world), and for both
dispatch implementations, the EP model's loss on each rank's batch equals the reference's, and after each
rank's backward the replicated parameters' gradients summed over ranks, and each expert shard's gradient
summed over its replicas by `parallel.finish_gradients` and divided by the world size, equal the reference's
gradients of the summed loss (of the mean loss, for the experts). Bad layouts stop with the
one-line error. Prints "ok <check>" on success; any failure raises (non-zero exit).

`ep-threads`: the same with two torch threads a process and batches of different sizes on each rank: rank 0
a [1, 2] forward (GRPO's padding micro-batch), where `MoE` takes its dense branch for a few rows per expert,
rank 1 a [2, 24] one, where it takes the sorted branch. Both must still dispatch (all_to_all) and agree with
the reference; `moe_impl = "dense"` with ep > 1 is refused in one line.
"""

import copy
import sys

import torch
import torch.distributed as dist

from tinyseek.config import ConfigError, ModelConfig
from tinyseek.dist import init_distributed
from tinyseek.model import Transformer
from tinyseek.train import parallel


def _batch(rank: int, vocab: int, shape=(2, 12)):
    g = torch.Generator().manual_seed(100 + rank)
    x = torch.randint(0, vocab, shape, generator=g)
    return x, torch.roll(x, -1, dims=1)


def check_ep(shapes=None) -> None:
    """`shapes`: each rank's batch shape (default [2, 12] on every rank)."""
    d = init_distributed("cpu")
    torch.manual_seed(0)
    shapes = shapes or [(2, 12)] * d.world
    for impl in ("sorted", "loop"):
        cfg = ModelConfig.preset("nano", moe_impl=impl)
        ref = Transformer(cfg)
        with torch.no_grad():  # move the balancing biases off zero so routing is not a tie-break
            for m in ref.moe_blocks:
                m.gate.bias.uniform_(-0.05, 0.05)
        batches = [_batch(r, cfg.vocab_size, shapes[r]) for r in range(d.world)]
        ref_losses = []
        for x, y in batches:
            out = ref(x, targets=y)
            out.loss.backward()  # gradients of the sum of every rank's loss
            ref_losses.append(out.loss.detach())
        ref_grads = {n: p.grad.clone() for n, p in ref.named_parameters() if p.grad is not None}
        for ep in [e for e in (2, 4) if d.world % e == 0]:
            model = copy.deepcopy(ref)
            model.zero_grad(set_to_none=True)
            parallel.apply_expert_parallel(model, d, ep)
            x, y = batches[d.rank]
            out = model(x, targets=y)
            torch.testing.assert_close(out.loss.detach(), ref_losses[d.rank], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(out.expert_load, ref(x, targets=y).expert_load)
            with torch.no_grad():  # the forward without targets (no balance loss) dispatches the same way
                torch.testing.assert_close(model(x).logits, ref(x).logits, rtol=1e-5, atol=1e-5)
            out.loss.backward()
            parallel.finish_gradients(model, d)  # the experts' shards: summed over their replicas, / world
            for name, p in model.named_parameters():
                if p.grad is None:
                    continue
                if name.split(".")[-2] == "experts":  # this rank's shard of the gradient of the mean loss
                    g = p.grad.to_local().clone()
                    L = g.shape[0]
                    r = model._ep_mesh["ep"].get_local_rank()
                    want = ref_grads[name][r * L : (r + 1) * L] / d.world
                else:
                    g = p.grad.clone()
                    dist.all_reduce(g)
                    want = ref_grads[name]
                torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
            full = parallel.full_state_dict(model)
            for k, v in ref.state_dict().items():
                torch.testing.assert_close(full[k], v, msg=lambda m, k=k: f"{k}: {m}")
            if d.is_main:
                print(f"ok ep={ep} world={d.world} moe_impl={impl}", flush=True)
    # bad layouts: the same one-line error on every rank, before any work
    for kw, ep, want in ((dict(n_routed_experts=6, n_expert_groups=1, n_limited_groups=1), 4, "not divisible"),):
        if d.world % ep:
            continue
        try:
            parallel.apply_expert_parallel(Transformer(ModelConfig.preset("nano", **kw)), d, ep)
        except ConfigError as e:
            assert want in str(e) and "\n" not in str(e), e
        else:
            raise AssertionError("EP over a non-divisible expert count was accepted")
    try:
        parallel.apply_expert_parallel(Transformer(ModelConfig.preset("nano", moe_impl="dense")), d, 2)
    except ConfigError as e:
        assert "moe_impl: dense" in str(e) and "\n" not in str(e), e
    else:
        raise AssertionError("moe_impl = dense with ep = 2 was accepted")
    try:
        parallel.check_parallel("ddp", 3, d.world)
    except ConfigError as e:
        assert "does not divide" in str(e), e
    else:
        raise AssertionError("ep = 3 was accepted")
    if d.is_main:
        print("ok bad layouts", flush=True)


def check_ep_threads() -> None:
    assert torch.get_num_threads() == 2
    check_ep(shapes=[(1, 2), (2, 24)])


if __name__ == "__main__":
    torch.set_num_threads(2 if sys.argv[1].endswith("-threads") else 1)
    {"ep": check_ep, "ep-threads": check_ep_threads}[sys.argv[1]]()
    dist.destroy_process_group()
