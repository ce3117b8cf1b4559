"""Training throughput: tinyseek vs transformers' DeepseekV3ForCausalLM, same config, same weights.

The transformers model is loaded from a `tinyseek export` of the tinyseek model, so both start from the
same weights; the first step's losses are printed side by side as the check. Each model then trains for
a few AdamW steps on the same random batches, and we print tokens/s, ms/step, and tinyseek / best
transformers experts implementation at equal dtype.

Defaults: preset `tiny`, batch 8 x 256, on CPU in float32 and bfloat16 (pure bf16 weights and optimizer
state on both sides; transformers keeps its router in float32, tinyseek its correction bias), transformers
experts `eager` and `grouped_mm` (`batched_mm` is available with --hf-experts but very slow here).
With CUDA: preset `gpu-500m`, batch 16 x 1024, bfloat16. MFU is model FLOPs (`cost.train_flops_per_token`)
per second over a measured square-matmul peak in the same dtype on the same device.

What is being compared, exactly:
- both: mtp_depth 0 (transformers does not train MTP modules), SDPA attention on the transformers side.
- tinyseek's step is its real training step: loss with the sequence-wise balance term, backward, AdamW,
  and the auxiliary-loss-free bias update; transformers' step is forward with labels, backward, AdamW.
- tinyseek runs with its default switches (absorbed MLA, sorted dispatch); --compile adds a row with it wrapped
  in torch.compile (the transformers rows stay eager).
- CPU threads: 1 by default. The development machine is shared by ~8 processes on 2 cores; with 2 OpenMP
  threads a step took 5-7x longer than with 1 (threads spin-waiting on a descheduled partner). Use
  --threads 2 on an idle machine. Besides wall-clock tokens/s we print tokens per CPU-second.

    .venv/bin/python benchmarks/train_throughput.py                 # CPU (and CUDA when present)
    .venv/bin/python benchmarks/train_throughput.py --steps 3 --dtypes float32
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinyseek import cost, precision  # noqa: E402
from tinyseek.checkpoint import export_dir  # noqa: E402
from tinyseek.config import ModelConfig  # noqa: E402
from tinyseek.model import Transformer  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def batches(cfg: ModelConfig, batch: int, seq: int, n: int, device: str) -> list[torch.Tensor]:
    """n random token batches [batch, seq + 1] (inputs and shifted targets), the same for every model."""
    g = torch.Generator().manual_seed(1234)
    return [torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=g).to(device) for _ in range(n)]


def tinyseek_step(model, opt, runner=None):
    """One training step; `runner` is the (maybe compiled) callable, `model` owns the parameters and the bias."""
    runner = model if runner is None else runner  # (a compiled module has no truth value)

    def step(x: torch.Tensor) -> torch.Tensor:
        targets = x[:, 1:].clone()
        targets[:, -1] = -100  # score the same positions as transformers (its labels are shifted inside)
        out = runner(x[:, :-1], targets=targets)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.update_expert_bias(out.expert_load)
        return out.ce_loss.detach()

    return step


def hf_step(model, opt):
    def step(x: torch.Tensor) -> torch.Tensor:
        out = model(input_ids=x[:, :-1], labels=x[:, :-1])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.detach()

    return step


def measure(step, data: list[torch.Tensor], warmup: int, device: str) -> tuple[float, float, float, float]:
    """-> (first loss, tokens/s, ms/step, tokens per CPU-second) over the steps after `warmup`.

    Tokens per CPU-second (this process's CPU time) is the steadier figure on a shared machine: it does not
    count the time the scheduler gave to other people's processes."""
    first = float(step(data[0]))
    for x in data[1:warmup]:
        step(x)
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for x in data[warmup:]:
        step(x)
    sync(device)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    n = len(data) - warmup
    tokens = n * data[0].shape[0] * (data[0].shape[1] - 1)
    return first, tokens / dt, 1000 * dt / n, tokens / dc


def load_hf(path: Path, dtype: torch.dtype, impl: str, device: str):
    import transformers

    transformers.logging.set_verbosity_error()
    with contextlib.redirect_stderr(io.StringIO()):  # the weight-loading progress bar
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, attn_implementation="sdpa", experts_implementation=impl
        )
    return model.to(device).train()


def measured_peak(device: str, dtype: torch.dtype) -> float:
    """The MFU denominator: a measured square-matmul FLOP/s in `dtype` (8192^2 on a GPU, 1024^2 on a CPU)."""
    gpu = device.startswith("cuda")
    peak = cost.measure_matmul_peak(device, dtype, n=8192 if gpu else 1024, seconds=2.0 if gpu else 1.0)
    name = torch.cuda.get_device_name() if gpu else "this CPU"
    sheet = cost.datasheet_peak(name) if gpu and dtype == torch.bfloat16 else None
    print(
        f"\nmeasured {str(dtype).removeprefix('torch.')} matmul peak on {name}: {peak / 1e12:.3f} TFLOP/s"
        + (f" (datasheet {sheet / 1e12:.0f})" if sheet else "")
    )
    return peak


def run(
    preset: str,
    batch: int,
    seq: int,
    steps: int,
    warmup: int,
    dtypes: list[str],
    impls: list[str],
    device: str,
    compile_: bool,
    lr: float,
) -> list[dict]:
    cfg = ModelConfig.preset(preset, mtp_depth=0, max_seq_len=max(seq, ModelConfig.preset(preset).max_seq_len))
    flops = cost.train_flops_per_token(cfg, seq, include_mtp=False)
    print(
        f"\n## {preset} on {device}: {cost.total_params(cfg) / 1e6:.1f}M params, "
        f"{cost.active_params(cfg) / 1e6:.1f}M active, batch {batch} x {seq}, {steps} timed steps after {warmup} "
        f"warm-up, AdamW lr {lr}"
    )
    torch.manual_seed(0)
    base = Transformer(cfg)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        export_dir(cfg, base.state_dict(), Path(tmp) / "hf")
        data = batches(cfg, batch, seq, warmup + steps, device)
        for dname in dtypes:
            dtype = DTYPES[dname]
            results = []
            peak = measured_peak(device, dtype)
            for compiled in (False, True) if compile_ else (False,):
                model = Transformer(cfg)
                model.load_state_dict(base.state_dict())
                model.to(device=device, dtype=dtype).train()
                runner = torch.compile(model) if compiled else model
                opt = torch.optim.AdamW(model.parameters(), lr=lr)
                name = "tinyseek" + (" (compiled)" if compiled else "")
                t0 = time.perf_counter()
                results.append((name, *measure(tinyseek_step(model, opt, runner), data, warmup, device)))
                if compiled:
                    print(f"  ({name}: {time.perf_counter() - t0:.0f} s in all, the compilation in its warm-up steps)")
                del model, runner, opt
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
            for impl in impls:
                try:
                    hf = load_hf(Path(tmp) / "hf", dtype, impl, device)
                    opt = torch.optim.AdamW(hf.parameters(), lr=lr)
                    results.append((f"transformers {impl}", *measure(hf_step(hf, opt), data, warmup, device)))
                    del hf, opt
                    if device.startswith("cuda"):
                        torch.cuda.empty_cache()
                except Exception as e:  # an implementation this build/device cannot run: say so, keep going
                    results.append((f"transformers {impl}", float("nan"), float("nan"), float("nan"), float("nan")))
                    print(f"  transformers {impl} {dname}: failed: {str(e).splitlines()[0][:160]}")
            hf_best = max(
                (r for r in results if r[0].startswith("transformers") and r[2] == r[2]),
                key=lambda r: r[2],
                default=None,
            )
            print(
                f"\n{dname:<9} {'model':<26} {'first loss':>10} {'tokens/s':>10} {'ms/step':>9} {'tok/CPU-s':>10}"
                + ("    MFU" if peak else "")
            )
            for name, loss, tps, ms, tpc in results:
                mfu = f"  {100 * cost.mfu(tps, flops, peak):5.1f}%" if peak and tps == tps else ""
                print(f"{'':<9} {name:<26} {loss:>10.4f} {tps:>10.0f} {ms:>9.1f} {tpc:>10.0f}{mfu}")
                rows.append(
                    dict(
                        preset=preset,
                        device=device,
                        dtype=dname,
                        model=name,
                        first_loss=loss,
                        tokens_per_s=tps,
                        ms_per_step=ms,
                        tokens_per_cpu_s=tpc,
                        mfu=cost.mfu(tps, flops, peak) if peak and tps == tps else None,
                    )
                )
            for ours in (r for r in results if hf_best is not None and r[0].startswith("tinyseek")):
                print(
                    f"{'':<9} {ours[0]} / best transformers ({hf_best[0]}): {ours[2] / hf_best[2]:.2f}x tokens/s, "
                    f"{ours[4] / hf_best[4]:.2f}x tokens/CPU-s"
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default=None, help="model preset (default: tiny on CPU, gpu-500m on CUDA)")
    p.add_argument("--batch", type=int, default=None, help="sequences per step (default 8 on CPU, 16 on CUDA)")
    p.add_argument("--seq", type=int, default=None, help="tokens per sequence (default 256 on CPU, 1024 on CUDA)")
    p.add_argument("--steps", type=int, default=4, help="timed optimizer steps per model")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (the first one's loss is printed)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1: on a shared machine 2 OpenMP threads spin-wait on each other)",
    )
    p.add_argument(
        "--dtypes", default=None, help="comma list of float32,bfloat16 (default: both on CPU, bfloat16 on CUDA)"
    )
    p.add_argument(
        "--hf-experts",
        default="eager,grouped_mm",
        help="transformers experts implementations to run (eager, grouped_mm, batched_mm)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (CPU always; CUDA too when present)")
    p.add_argument("--compile", action="store_true", help="torch.compile the tinyseek model")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    args = p.parse_args(argv)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    impls = [s for s in args.hf_experts.split(",") if s]
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "auto" else [args.device]
    import os

    print(f"machine: {precision.machine_line('cuda' if torch.cuda.is_available() else 'cpu')}")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores" + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )
    for device in devices:
        gpu = device.startswith("cuda")
        run(
            preset=args.preset or ("gpu-500m" if gpu else "tiny"),
            batch=args.batch or (16 if gpu else 8),
            seq=args.seq or (1024 if gpu else 256),
            steps=args.steps,
            warmup=args.warmup,
            dtypes=(args.dtypes or ("bfloat16" if gpu else "float32,bfloat16")).split(","),
            impls=impls,
            device=device,
            compile_=args.compile,
            lr=args.lr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
