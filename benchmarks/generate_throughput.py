"""Generation throughput: tinyseek's engine against transformers' `generate` on the same weights.

    .venv/bin/python benchmarks/generate_throughput.py [--preset tiny] [--batches 1,16,64] [--new-tokens 64] [--compile]
        [--spec-steps 1000] [--spec-dir DIR]

What it measures, all in one run on one machine (so the ratios mean something on a shared, busy box); the first
line names the machine (CPU model, torch's vector ISA, native bf16, threads):
1. new tokens/s of greedy decoding with EOS disabled (exactly --new-tokens per sequence), random weights of
   the preset, prompts of --prompt-len random tokens: tinyseek `Engine.generate` (eager, and with --compile the
   compiled decode step too; its compile time is printed apart and not counted) vs transformers
   `DeepseekV3ForCausalLM.generate` on the exported weights, at each batch size, and the ratio;
   the greedy tokens of both are compared (they should agree; a mismatch is printed).
2. KV-cache bytes per token: tinyseek's latent cache (absorbed MLA) vs transformers' `DynamicCache` (which, in
   transformers 5.2x, holds DeepseekV3's latent too) and vs a full K/V cache of the same model (the naive path).
3. bf16: the engine with the model in bfloat16 at the middle batch size — speed, and how far it drifts from
   float32 (max |logit| difference on the prompts, share of greedy tokens equal before the first divergence).
   Only meaningful where bf16 is native (the machine line says); elsewhere it is emulated and slow.
4. MTP speculative decoding at batch 1 on a model trained on the task corpus: `tinyseek pretrain` of a small
   MoE with MTP (the demo teacher's width, --spec-layers deep) on the demo's corpus (worked 1- and 2-digit
   additions) for --spec-steps steps, then greedy decoding of held-out 2-digit addition prompts, plain and
   with 1-4 chained drafts a step: tokens/s, speed-up, acceptance, and whether the output is identical to plain
   greedy. The untrained model's acceptance is printed too (a random MTP head drafts noise).
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

from tinyseek import precision  # noqa: E402
from tinyseek.config import ModelConfig  # noqa: E402
from tinyseek.inference.engine import Engine  # noqa: E402
from tinyseek.inference.sampling import SamplingParams  # noqa: E402
from tinyseek.model import Transformer  # noqa: E402


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


def pretrain_on_addition(steps: int, out: Path, threads: int, layers: int):
    """A small MoE with MTP (the demo teacher's width, `layers` deep) pretrained on worked addition problems;
    returns (model, tokenizer). `tinyseek pretrain`'s own stage, float32, a few minutes of CPU."""
    from tinyseek import tasks
    from tinyseek.checkpoint import load_model
    from tinyseek.tokenizer import Tokenizer
    from tinyseek.train.pretrain import PretrainConfig, run

    if (out / "final").is_dir():  # --spec-dir of an earlier run: the same model, timed again
        return load_model(out / "final").eval(), Tokenizer.load(out / "final")
    # the demo's corpus: worked 1- and 2-digit additions (what a model this size learns in minutes)
    out.mkdir(parents=True, exist_ok=True)
    docs = tasks.documents({"addition": 6000}, seed=0, split="train", fmt="plain", difficulty=[1, 2])
    (out / "corpus.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")

    cfg = PretrainConfig(
        preset="tiny",
        model=dict(
            dim=128,
            q_lora_rank=64,
            kv_lora_rank=32,
            inter_dim=384,
            moe_inter_dim=64,
            n_routed_experts=8,
            n_activated_experts=2,
            n_layers=layers,
            max_seq_len=256,
        ),
        tasks={},
        text_files=[str(out / "corpus.txt")],
        vocab_size=384,
        seq_len=128,
        batch_size=16,
        max_steps=steps,
        lr=2e-3,
        min_lr_ratio=0.1,
        warmup_steps=20,
        dtype="float32",
        threads=threads,
        progress=False,
        eval_batches=1,
    )
    cfg.validate()
    run(cfg, out)
    return load_model(out / "final").eval(), Tokenizer.load(out / "final")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2, help="timed repetitions (best is kept)")
    ap.add_argument(
        "--spec-steps", type=int, default=1000, help="pretraining steps of the speculative benchmark's model (0: skip)"
    )
    ap.add_argument(
        "--spec-dir",
        default=None,
        help="where that model is trained (default: a new temporary folder); a folder holding final/ is reused",
    )
    ap.add_argument("--spec-prompts", type=int, default=8, help="held-out addition prompts decoded at batch 1")
    ap.add_argument(
        "--spec-layers",
        type=int,
        default=6,
        help="layers of that model (its one MTP block costs 1/layers of a step: 4 makes drafting dear)",
    )
    ap.add_argument("--compile", action="store_true", help="also time the engine's compiled decode step")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-bf16", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig.preset(args.preset)
    model = Transformer(cfg).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"machine: {precision.machine_line()}")
    print(
        f"preset {args.preset}: {n_params / 1e6:.1f}M parameters, float32; torch {torch.__version__}; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared machine: figures are noisy)"
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

    variants = {"tinyseek": {}} | ({"compiled": {"compile": True}} if args.compile else {})
    head = f"\n{'batch':>5}  {'tinyseek tok/s':>14}" + ("  compiled tok/s" if args.compile else "")
    print(
        head
        + (f"  {'transformers tok/s':>18}  {'ratio':>6}" + ("  compiled" if args.compile else "") + "  same tokens")
    )
    compile_s = 0.0
    for B in batches:
        prompts = all_prompts[:B]
        engines = {k: Engine(model, max_batch=B, max_len=P + N + 1, **kw) for k, kw in variants.items()}
        for k, e in engines.items():  # warm-up; for the compiled engine, its compilation for this batch size
            t = time.perf_counter()
            e.generate(prompts.tolist(), greedy.replace(max_new_tokens=4))
            if k == "compiled":
                compile_s += time.perf_counter() - t

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
        dt = {k: float("inf") for k in engines}
        dt_hf = float("inf")
        outs = {}
        for _ in range(args.repeat):  # interleaved, best of each: load spikes on a shared machine hit all
            for k, e in engines.items():
                d, outs[k] = timed(lambda e=e: e.generate(prompts.tolist(), greedy))
                dt[k] = min(dt[k], d)
            if hf is not None:
                d, ref = timed(run_hf)
                dt_hf = min(dt_hf, d)
        tps = {k: B * N / v for k, v in dt.items()}
        line = f"{B:>5}  {tps['tinyseek']:>14.0f}" + (f"  {tps['compiled']:>15.0f}" if args.compile else "")
        if hf is not None:
            tps_hf = B * N / dt_hf
            same = all([g[0].token_ids for g in o] == ref[:, P:].tolist() for o in outs.values())
            line += f"  {tps_hf:>18.0f}  {tps['tinyseek'] / tps_hf:>5.2f}x"
            line += f"  {tps['compiled'] / tps_hf:>7.2f}x" if args.compile else ""
            line += f"  {same}"
        print(line, flush=True)
    if args.compile:
        print(f"(the compiled decode step: {compile_s:.0f} s of compilation in the warm-ups, not counted above)")

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

    if not args.skip_bf16:
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
            f"\nbf16 at batch {B} (native bf16 here: {'yes' if precision.native_bf16() else 'no'}): "
            f"{B * N / dt16:.0f} tok/s vs float32 {B * N / dt32:.0f} ({dt32 / dt16:.2f}x); max |logit diff| on the "
            f"prompts {d:.3f}; greedy tokens equal to float32 before the first divergence: "
            f"{100 * sum(agree) / len(agree):.0f}%"
        )

    if args.spec_steps > 0:
        from tinyseek import tasks

        e = Engine(model, max_batch=1, speculative=True)
        e.generate([all_prompts[0].tolist()], greedy)
        print(
            "\nMTP speculative decoding, batch 1: the random model's acceptance "
            f"{e.stats['accepted'] / max(1, e.stats['drafted']):.2f}; a small MoE with MTP pretrained on addition "
            f"traces for {args.spec_steps} steps"
            + (f" (reused from {args.spec_dir} when it is there)..." if args.spec_dir else "..."),
            flush=True,
        )
        t = time.perf_counter()
        trained, tok = pretrain_on_addition(
            args.spec_steps,
            Path(args.spec_dir or tempfile.mkdtemp(prefix="tinyseek-spec-")),
            args.threads or 0,
            args.spec_layers,
        )
        recs = tasks.get("addition").generate(args.spec_prompts, seed=1, split="test", difficulty=2)
        prompts = [[tok.bos_id] + tok.encode(r["prompt"] + "\n") for r in recs]
        p = SamplingParams(temperature=0, max_new_tokens=96)
        print(
            f"  ({time.perf_counter() - t:.0f} s; {sum(x.numel() for x in trained.parameters()) / 1e6:.2f}M "
            f"parameters; {len(prompts)} held-out prompts such as {recs[0]['prompt']!r}, greedy until the end token)"
        )
        engines = {0: Engine(trained, tokenizer=tok, max_batch=1)} | {
            k: Engine(trained, tokenizer=tok, max_batch=1, speculative=k) for k in (1, 2, 3, 4)
        }
        if args.compile:  # the same, each step one compiled graph ("c" keys)
            engines |= {"c0": Engine(trained, tokenizer=tok, max_batch=1, compile=True)}
            engines |= {
                f"c{k}": Engine(trained, tokenizer=tok, max_batch=1, speculative=k, compile=True) for k in (1, 2)
            }
        t = time.perf_counter()
        for e in engines.values():
            e.generate(prompts[:2], p)  # warm-up (and compilation: the prompts run to their end)
            e.stats.update(drafted=0, accepted=0)
        print(f"  (warm-ups {time.perf_counter() - t:.0f} s, compilation included)")
        best = {k: float("inf") for k in engines}
        outs = {}
        for _ in range(max(3, args.repeat)):  # interleaved, best of each: load spikes on a shared machine hit all
            for k, e in engines.items():
                d, outs[k] = timed(lambda e=e: e.generate(prompts, p))
                best[k] = min(best[k], d)
        n_tok = sum(len(g[0].token_ids) for g in outs[0])
        from tinyseek.rewards import accuracy_reward

        texts = [g[0].text for g in outs[0]]
        acc = accuracy_reward([r["prompt"] for r in recs], texts, answer=[r["answer"] for r in recs])
        print(
            f"  plain: {n_tok / best[0]:.0f} tok/s ({n_tok} tokens, {sum(a or 0 for a in acc):.0f}/{len(recs)} answers "
            f"right; first: {texts[0]!r})"
        )
        for k in (1, 2, 3, 4):
            st = engines[k].stats
            same = [g[0].token_ids for g in outs[k]] == [g[0].token_ids for g in outs[0]]
            print(
                f"  speculative, {k} draft{'s' if k > 1 else ''} a step: {n_tok / best[k]:.0f} tok/s, "
                f"speed-up {best[0] / best[k]:.2f}x, acceptance {st['accepted'] / max(1, st['drafted']):.2f}, "
                f"identical output {same}"
            )
        if args.compile:
            print(f"  compiled, plain: {n_tok / best['c0']:.0f} tok/s ({best[0] / best['c0']:.2f}x the eager plain)")
            for k in (1, 2):
                st = engines[f"c{k}"].stats
                same = [g[0].token_ids for g in outs[f"c{k}"]] == [g[0].token_ids for g in outs[0]]
                print(
                    f"  compiled, speculative, {k} draft{'s' if k > 1 else ''} a step: {n_tok / best[f'c{k}']:.0f} "
                    f"tok/s, speed-up {best['c0'] / best[f'c{k}']:.2f}x over compiled plain, acceptance "
                    f"{st['accepted'] / max(1, st['drafted']):.2f}, identical output {same}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
