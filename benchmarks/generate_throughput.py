"""Generation throughput: tinyseek's engine against transformers' `generate` on the same weights.

    .venv/bin/python benchmarks/generate_throughput.py [--preset tiny] [--batches 1,16,64] [--new-tokens 64]

What it measures, all in one run on one machine (so the ratios mean something on a shared, busy box):
1. new tokens/s of greedy decoding with EOS disabled (exactly --new-tokens per sequence), random weights of
   the preset, prompts of --prompt-len random tokens: tinyseek `Engine.generate` vs transformers
   `DeepseekV3ForCausalLM.generate` on the exported weights, at each batch size, and the ratio;
   the greedy tokens of both are compared (they should agree; a mismatch is printed).
2. KV-cache bytes per token: tinyseek's latent cache (absorbed MLA) vs transformers' `DynamicCache` (which, in
   transformers 5.2x, holds DeepseekV3's latent too) and vs a full K/V cache of the same model (the naive path).
3. bf16: the engine with the model in bfloat16 at the middle batch size — speed, and how far it drifts from
   float32 (max |logit| difference on the prompts, share of greedy tokens equal before the first divergence).
4. MTP speculative decoding at batch 1. A randomly initialised MTP head drafts noise (acceptance ~0), so the
   model is first trained for --mtp-steps steps on a repetitive corpus (a fixed random token cycle with
   occasional noise); that gives a best case for acceptance, not a typical one. Prints plain and speculative
   tokens/s, the speed-up, the acceptance rate and whether the outputs are identical, for 1, 2 and 3 drafts a
   step (drafts after the first chain the MTP module on its own output). The untrained model's acceptance is
   printed too.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tinyseek.config import ModelConfig  # noqa: E402
from tinyseek.engine import Engine  # noqa: E402
from tinyseek.model import Transformer  # noqa: E402
from tinyseek.sampling import SamplingParams  # noqa: E402


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def hf_cache_bytes_per_token(hf, T: int = 16) -> float:
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.inference_mode():
        hf(input_ids=torch.randint(0, hf.config.vocab_size, (1, T)), past_key_values=cache, use_cache=True)
    total = 0
    for layer in cache.layers:
        total += layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
    return total / T


def hf_cache_shapes(hf) -> str:
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.inference_mode():
        hf(input_ids=torch.randint(0, hf.config.vocab_size, (1, 3)), past_key_values=cache, use_cache=True)
    return f"keys {list(cache.layers[0].keys.shape)}, values {list(cache.layers[0].values.shape)} for 3 tokens"


def ours_cache_bytes_per_token(engine: Engine) -> float:
    return sum(x[0, 0].numel() * x.element_size() for x in engine.cache._tensors())


def train_on_cycle(model: Transformer, steps: int, seed: int = 0) -> None:
    """A few AdamW steps on a repetitive corpus (a fixed cycle, 5% of positions replaced by noise)."""
    g = torch.Generator().manual_seed(seed)
    V = model.cfg.vocab_size
    cycle = torch.randint(0, V, (61,), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for i in range(steps):
        starts = torch.randint(0, len(cycle), (8,), generator=g)
        seq = torch.stack([cycle[(s + torch.arange(129)) % len(cycle)] for s in starts])
        noise = torch.rand(seq.shape, generator=g) < 0.05
        seq = torch.where(noise, torch.randint(0, V, seq.shape, generator=g), seq)
        out = model(seq[:, :-1], targets=seq[:, 1:])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if (i + 1) % 20 == 0:
            print(f"  train step {i + 1}: loss {out.loss.item():.3f}", flush=True)
    model.eval()
    return cycle


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2, help="timed repetitions (best is kept)")
    ap.add_argument(
        "--mtp-steps", type=int, default=80, help="training steps before the speculative benchmark (0: skip it)"
    )
    ap.add_argument("--mtp-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig.preset(args.preset)
    model = Transformer(cfg).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"preset {args.preset}: {n_params / 1e6:.1f}M parameters; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
        "(a shared machine: figures are noisy)"
    )
    batches = [int(b) for b in args.batches.split(",")]
    N, P = args.new_tokens, args.prompt_len
    g = torch.Generator().manual_seed(1)
    all_prompts = torch.randint(0, cfg.vocab_size, (max(batches), P), generator=g)
    greedy = SamplingParams(temperature=0, max_new_tokens=N, ignore_eos=True)

    hf = None
    if not args.skip_hf:
        import transformers

        from tinyseek.checkpoint import export_dir

        tmp = tempfile.mkdtemp(prefix="tinyseek-bench-")
        export_dir(cfg, model.state_dict(), Path(tmp) / "hf")
        hf = transformers.AutoModelForCausalLM.from_pretrained(Path(tmp) / "hf", dtype=torch.float32).eval()
        print(f"transformers {transformers.__version__} DeepseekV3ForCausalLM on the exported weights")

    print(f"\n{'batch':>5}  {'tinyseek tok/s':>14}  {'transformers tok/s':>18}  {'ratio':>6}  same tokens")
    rows = []
    for B in batches:
        prompts = all_prompts[:B]
        engine = Engine(model, max_batch=B, max_len=P + N + 1)
        engine.generate(prompts[:1].tolist(), greedy.replace(max_new_tokens=4))  # warm-up

        def run_hf():
            with torch.inference_mode():
                return hf.generate(
                    input_ids=prompts,
                    attention_mask=torch.ones_like(prompts),
                    max_new_tokens=N,
                    min_new_tokens=N,
                    do_sample=False,
                    eos_token_id=None,
                    pad_token_id=0,
                )

        if hf is not None and B == batches[0]:
            run_hf()  # warm-up
        dt = dt_hf = float("inf")
        for _ in range(args.repeat):  # interleaved, best of each: load spikes on a shared machine hit both
            d, ours = timed(lambda: engine.generate(prompts.tolist(), greedy))
            dt = min(dt, d)
            if hf is not None:
                d, ref = timed(run_hf)
                dt_hf = min(dt_hf, d)
        tps = B * N / dt
        line = f"{B:>5}  {tps:>14.0f}"
        if hf is not None:
            tps_hf = B * N / dt_hf
            same = [g[0].token_ids for g in ours] == ref[:, P:].tolist()
            line += f"  {tps_hf:>18.0f}  {tps / tps_hf:>5.2f}x  {same}"
            rows.append((B, tps, tps_hf))
        print(line, flush=True)

    eng = Engine(model, max_batch=1)
    ours_b = ours_cache_bytes_per_token(eng)
    line = (
        f"\nKV cache bytes per token (float32): tinyseek {ours_b:.0f} (latent {cfg.kv_lora_rank} + rope key "
        f"{cfg.qk_rope_head_dim} per layer x {cfg.n_layers})"
    )
    if hf is not None:
        hf_b = hf_cache_bytes_per_token(hf)
        line += (
            f", transformers {hf_b:.0f}: ratio {ours_b / hf_b:.3f} (transformers' DynamicCache layers: "
            f"{hf_cache_shapes(hf)})"
        )
    print(line)
    from tinyseek.model import KVCache

    naive = KVCache(dataclasses.replace(cfg, mtp_depth=0), 1, 1, impl="naive")
    naive_b = sum(x[0, 0].numel() * x.element_size() for x in naive._tensors())
    print(
        f"  a full K/V cache of the same model (tinyseek's naive MLA path) would take {naive_b:.0f}: ratio "
        f"{ours_b / naive_b:.3f}"
    )
    spec_eng = Engine(model, max_batch=1, speculative=True)
    print(
        f"  (with speculative decoding the MTP layer's cache is added: {ours_cache_bytes_per_token(spec_eng):.0f} "
        "bytes per token)"
    )

    # bf16
    B = batches[len(batches) // 2]
    prompts = all_prompts[:B]
    m16 = copy.deepcopy(model).to(torch.bfloat16)
    e16 = Engine(m16, max_batch=B, max_len=P + N + 1)
    e16.generate(prompts[:1].tolist(), greedy.replace(max_new_tokens=4))
    dt16, out16 = timed(lambda: e16.generate(prompts.tolist(), greedy), args.repeat)
    e32 = Engine(model, max_batch=B, max_len=P + N + 1)
    dt32, out32 = timed(lambda: e32.generate(prompts.tolist(), greedy), args.repeat)
    with torch.inference_mode():
        d = (model(prompts).logits - m16(prompts).logits.float()).abs().max().item()
    agree = []
    for a, b in zip(out16, out32):
        x, y = a[0].token_ids, b[0].token_ids
        k = next((i for i in range(len(x)) if x[i] != y[i]), len(x))
        agree.append(k / len(x))
    print(
        f"\nbf16 at batch {B}: {B * N / dt16:.0f} tok/s vs float32 {B * N / dt32:.0f} ({dt32 / dt16:.2f}x); "
        f"max |logit diff| on the prompts {d:.3f}; greedy tokens equal to float32 before the first divergence: "
        f"{100 * sum(agree) / len(agree):.0f}%"
    )

    if args.mtp_steps > 0 and cfg.mtp_depth > 0:
        M = args.mtp_new_tokens
        p = greedy.replace(max_new_tokens=M)
        e = Engine(model, max_batch=1, speculative=True)
        e.generate([all_prompts[0].tolist()], p)
        print(
            "\nMTP speculative decoding, batch 1: untrained model acceptance "
            f"{e.stats['accepted'] / max(1, e.stats['drafted']):.2f}"
        )
        print(
            f"training a copy for {args.mtp_steps} steps on a repetitive corpus (best case for acceptance)...",
            flush=True,
        )
        trained = copy.deepcopy(model)
        cycle = train_on_cycle(trained, args.mtp_steps)
        prompt = [cycle[:P].tolist()]
        engines = {0: Engine(trained, max_batch=1)} | {
            k: Engine(trained, max_batch=1, speculative=k) for k in (1, 2, 3)
        }
        for e in engines.values():
            e.generate(prompt, p.replace(max_new_tokens=4))
            e.stats.update(drafted=0, accepted=0)
        best = {k: float("inf") for k in engines}
        outs = {}
        for _ in range(max(3, args.repeat)):  # interleaved, best of each: load spikes on a shared machine hit all
            for k, e in engines.items():
                d, outs[k] = timed(lambda: e.generate(prompt, p))
                best[k] = min(best[k], d)
        print(f"  plain: {M / best[0]:.0f} tok/s")
        for k in (1, 2, 3):
            st = engines[k].stats
            same = outs[k][0][0].token_ids == outs[0][0][0].token_ids
            print(
                f"  speculative, {k} draft{'s' if k > 1 else ''} a step: {M / best[k]:.0f} tok/s, "
                f"speed-up {best[0] / best[k]:.2f}x, acceptance {st['accepted'] / max(1, st['drafted']):.2f}, "
                f"identical output {same}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
