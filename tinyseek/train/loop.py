"""The training loop every stage shares: optimizer, schedule, precision, parallelism, checkpoints, metrics, cost.

A stage (pretrain, sft, grpo, distill) is an object with one required method and three optional ones:

    class MyStage:
        def train_step(self, loop: Loop) -> dict:          # one optimizer step; returns metrics (see below)
        def evaluate(self, loop: Loop) -> dict:            # optional; held-out metrics, called every eval_every
        def state_dict(self) -> dict: ...                  # optional; data position etc., saved in checkpoints
        def load_state_dict(self, d: dict) -> None: ...    # optional; restores it on --resume

Pretrain, SFT and distillation draw from a resumable stream and inherit the optional three from
`StreamStage`. A command runs a stage as

    cfg, run_dir, resume = config.stage_cli(MyConfig, argv, prog, description)   # MyConfig subclasses TrainConfig
    seed_everything(cfg.seed)
    model = build_model(...)                                # a plain single-device tinyseek Transformer
    loop = Loop(cfg, model, run_dir, tokenizer_file=..., resume=resume, stage_name="grpo")
    loop.run(MyStage(...))                                  # returns the summary dict (also RUN/summary.json)

`train_step` does its forward/backward passes through `loop.model` (the wrapped model: DDP or FSDP2, expert
parallelism, torch.compile, as configured; tinyseek/train/parallel.py) inside `loop.autocast()`, and ends with
exactly one `loop.optimizer_step(loss)`.
Two ways to write it:

- Supervised batches (pretrain, SFT, distillation): `return loop.supervised_step(micro_batches,
  extra_loss=None)`. `micro_batches` is this rank's list of `grad_accum` dicts with `tokens` [b, T] and
  `targets` [b, T] (-100 = no loss); `loop.split_batch(items)` cuts a global batch of `cfg.batch_size`
  items into exactly that. Distillation passes `extra_loss(out, mb) -> (scalar, {name: float})`,
  e.g. a KL term against teacher logits carried in `mb`; the loss backpropagated is
  `out.loss + extra`.
- Anything else (GRPO: rollouts, then one or more updates): generate through an engine over
  `loop.raw_model` (the unwrapped model; engines switch it to eval mode and back; when `loop.sharded`, FSDP2 or
  EP, over a full copy of the weights instead: tinyseek/train/rollout.py), then for each update: forward through
  `loop.model` under `loop.autocast()` (use `loop.no_sync(last)` around forward+backward for all but the
  last micro-batch of an update when accumulating; DDP and FSDP2 *average* gradients over ranks, so
  a loss normalised by a global count must be multiplied by `loop.dist.world`; a sharded forward is a
  collective, so every rank must make as many forward passes as the others), `loss.backward()`, and
  `loop.optimizer_step(loss_value, expert_load)`. Return a dict with at least "loss"
  and "tokens" (tokens processed this step, for throughput and FLOPs; already summed over ranks via
  `loop.all_sum` if you count per rank), and optionally "extra_flops" (compute beside the training tokens,
  e.g. GRPO's rollouts, added to the cost meter).

What the loop does around `train_step` (and what a stage therefore must not do itself):
- the learning rate: linear warmup then cosine to `min_lr_ratio * lr`, set before every step (`lr_at`);
  AdamW with decoupled weight decay only on matrices (no decay on norms, biases, embeddings; the MoE
  correction bias is a buffer, never seen by the optimizer);
- gradient clipping, the non-finite guard (a non-finite loss or gradient norm skips the optimizer step
  and is counted; `max_bad_steps` in a row stop the run with a checkpoint of the last good weights),
  and the auxiliary-loss-free MoE bias update with the step's expert load summed over micro-batches
  and ranks — all inside `optimizer_step`;
- checkpoints every `ckpt_every` steps into RUN/checkpoints/step-N (keeping the last `keep_last`) and
  RUN/final at the end, each with the tokenizer and (in step-N) `trainer_state.pt`: optimizer, step,
  RNG states, the stage's `state_dict()` and the counters, so `--resume` continues bitwise on CPU;
- RUN/metrics.jsonl (one object a step: the stage's metrics plus lr, grad_norm, tokens/s, MFU, expert
  balance, elapsed, cumulative FLOPs and cost), a console line with ETA, the same scalars as TensorBoard events
  in RUN/tb/ with the `tb` extra (`pip install 'tinyseek[tb]'`; `make install` has it),
  RUN/config.toml (resolved config) and RUN/summary.json (cost meter, throughput, final metrics).
- parallelism: under `torchrun` the process group is set up here (gloo on CPU, NCCL on GPU; tinyseek/dist.py);
  `parallel.wrap_model` is the one place that applies parallelism and compile (`parallel` = ddp | fsdp, `ep`);
  a world size that does not divide `batch_size` (x `grad_accum`), or a layout that does not fit it, is a
  one-line config error on every rank before any work. Only rank 0 writes, except the shards of a sharded step
  checkpoint (FSDP2 or EP: torch.distributed.checkpoint, every rank; resumable on any world size).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist

from tinyseek import cost, precision
from tinyseek.checkpoint import TRAINER_STATE_FILE, read_weights, save_checkpoint
from tinyseek.config import ConfigError, ModelConfig, write_toml
from tinyseek.dist import check_divides, init_distributed, world_size
from tinyseek.errors import TinyseekError
from tinyseek.hf import check_state_dict
from tinyseek.io import write_atomic, write_json
from tinyseek.train import parallel


class TrainingStopped(TinyseekError):
    """The run stopped on purpose (too many non-finite steps); a checkpoint of the last good state exists."""


# ----------------------------------------------------------------------------------------------
# configuration shared by every stage


@dataclass
class TrainConfig:
    """Knobs of the loop. Stage configs subclass this and add their model/data fields."""

    max_steps: int = 200  # optimizer steps in all (a resumed run continues to this)
    max_flops: float = 0.0  # also stop once the cost meter's FLOPs reach this (0 = no compute budget)
    # also evaluate at the step whose FLOPs first reach this: a common budget that this run goes past (the
    # arms of an equal-compute comparison are read there; the steps after it show what more compute does)
    eval_at_flops: float = 0.0
    batch_size: int = 16  # sequences per optimizer step, over all ranks and micro-steps together
    grad_accum: int = 1  # micro-steps per optimizer step
    lr: float = 1e-3  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at max_steps
    warmup_steps: int = 10  # linear warmup from lr / warmup_steps to lr
    weight_decay: float = 0.1  # decoupled, on weight matrices only
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.95  # AdamW beta2
    adam_eps: float = 1e-8  # AdamW epsilon
    grad_clip: float = 1.0  # 0 = no clipping (the norm is still measured)
    bias_update_speed: float | None = None  # MoE balancing-bias step gamma (None = the model's own; 0 = frozen)
    # compute dtype: auto (bfloat16 where it is native, else float32: precision.resolve_dtype) | float32 | bfloat16
    # (bf16 = autocast; the master weights stay fp32)
    dtype: str = "auto"
    compile: bool = False  # torch.compile the model
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads for torch (0 = torch's default); 1 is far faster on a machine shared with other jobs
    seed: int = 0  # model init, data order and sampling
    log_every: int = 1  # console line every N steps (metrics.jsonl always gets every step)
    eval_every: int = 0  # 0 = only at the end
    eval_batches: int = 4  # held-out batches per evaluation
    ckpt_every: int = 0  # 0 = only the final checkpoint
    keep_last: int = 2  # step-N checkpoints kept (older ones are deleted)
    max_bad_steps: int = 5  # this many non-finite steps in a row stop the run
    peak_tflops: float = 0.0  # per device, for MFU; 0 = a default for the device (cost.device_peak_flops)
    gpu_hour_price: float = 2.0  # $ per GPU-hour (DeepSeek-V3 report: $2 per H800-hour)
    cpu_hour_price: float = 0.05  # $ per CPU-machine-hour
    progress: bool = True  # print the console line
    parallel: str = "ddp"  # under torchrun: ddp (replicated weights) | fsdp (FSDP2: weights, grads, optimizer sharded)
    ep: int = 1  # expert parallelism: routed experts sharded over groups of this many ranks

    def validate(self) -> None:
        def need(cond: bool, name: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"{name}: {msg} (got {getattr(self, name)!r})")

        for name in (
            "max_steps",
            "batch_size",
            "grad_accum",
            "log_every",
            "eval_batches",
            "max_bad_steps",
            "keep_last",
        ):
            need(getattr(self, name) >= 1, name, "must be >= 1")
        for name in (
            "threads",
            "warmup_steps",
            "eval_every",
            "ckpt_every",
            "weight_decay",
            "grad_clip",
            "peak_tflops",
            "max_flops",
            "eval_at_flops",
            "gpu_hour_price",
            "cpu_hour_price",
            "adam_eps",
        ):
            need(getattr(self, name) >= 0, name, "must be >= 0")
        need(self.lr > 0, "lr", "must be positive")
        need(self.bias_update_speed is None or self.bias_update_speed >= 0, "bias_update_speed", "must be >= 0")
        need(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be between 0 and 1")
        need(0 <= self.beta1 < 1, "beta1", "must be in [0, 1)")
        need(0 <= self.beta2 < 1, "beta2", "must be in [0, 1)")
        need(self.dtype in ("auto", "float32", "bfloat16"), "dtype", "must be auto, float32 or bfloat16")
        need(self.device in ("auto", "cpu", "cuda"), "device", "must be auto, cpu or cuda")
        need(
            self.batch_size % self.grad_accum == 0, "batch_size", f"must be a multiple of grad_accum={self.grad_accum}"
        )
        # under torchrun: every rank takes an equal share of the global batch, and the layout fits the world size
        check_divides(self.batch_size, "batch_size", self.grad_accum)
        parallel.check_parallel(self.parallel, self.ep, world_size())


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on weight matrices only.

    Norm gains, biases and embeddings are not decayed: pulling a norm gain or a bias toward 0 has no
    regularising meaning, and decaying the embedding penalises rare tokens whose rows get few updates.
    Parameters are sorted by name so the optimizer state's order is the same in every process.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay, no_decay = [], []
    for _name, p in sorted(model.named_parameters()):  # sorted by name: the same order in every process
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and id(p) not in embeddings else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused_ok = all(p.is_cuda for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, fused=fused_ok or None)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators from one integer (a stage's `seed`; the recipe runner
    seeds each stage from its name, so a stage starts from the same state whatever ran before it)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


# ----------------------------------------------------------------------------------------------
# the FLOPs the cost meter counts


def model_train_flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token of a model object: its ModelConfig's figure for a tinyseek model; for any other
    model (a transformers causal LM under GRPO) 6 x its parameters, the usual estimate without attention."""
    cfg = getattr(model, "cfg", None)
    if isinstance(cfg, ModelConfig):
        return cost.train_flops_per_token(cfg, seq_len)
    return 6.0 * sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# the loop


def _fmt_time(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """RUN/checkpoints/step-N with the largest N that holds trainer state, or None."""
    best, best_n = None, -1
    d = Path(run_dir) / "checkpoints"
    if d.is_dir():
        for p in d.iterdir():
            if p.name.startswith("step-") and (p / TRAINER_STATE_FILE).is_file():
                try:
                    n = int(p.name[5:])
                except ValueError:
                    continue
                if n > best_n:
                    best, best_n = p, n
    return best


class StreamStage:
    """The shared part of the supervised stages (pretrain, SFT, distillation): batches come from a resumable
    data stream, whose position is the stage's checkpointed state, and evaluation is the held-out loss on
    fixed batches (none: no evaluation). Subclasses set `self.stream` (and `self.eval_batches`) and write
    `train_step`."""

    stream: Any
    eval_batches: list[dict] | None = None

    def evaluate(self, loop: Loop) -> dict:
        return loop.eval_loss(self.eval_batches) if self.eval_batches else {}

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, s: dict) -> None:
        self.stream.load_state_dict(s)


class Loop:
    """Owns the model's training machinery for one stage run; see the module docstring for the protocol."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: torch.nn.Module,
        run_dir: str | Path,
        *,
        tokenizer_file: str | Path | None = None,
        resolved_config: dict | None = None,
        resume: bool = False,
        stage_name: str = "train",
        seq_len: int = 0,
        save_model: Callable = save_checkpoint,
    ):
        self.cfg = cfg
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.dist = init_distributed(cfg.device)
        self.device = self.dist.device
        self.run_dir = Path(run_dir)
        self.tokenizer_file = Path(tokenizer_file) if tokenizer_file else None
        self.resolved_config = resolved_config
        self.resume_requested = resume
        self.stage_name = stage_name
        # the compute dtype, decided once per machine for dtype = "auto" (bf16 only where it is native)
        self.dtype = precision.resolve_dtype(cfg.dtype, self.device)
        if self.dist.is_main and cfg.progress:
            how = f"{self.dtype} autocast" if self.dtype == "bfloat16" else self.dtype
            if cfg.dtype == "auto":
                how += f" (dtype = auto: bf16 is {'' if self.dtype == 'bfloat16' else 'not '}native here)"
            print(f"precision: {how}; {precision.machine_line(self.device)}", flush=True)
        self.raw_model = model.to(device=self.device, dtype=torch.float32)  # fp32 master weights
        self.raw_model.train()
        if cfg.batch_size % (cfg.grad_accum * self.dist.world):
            raise ConfigError(
                f"batch_size: {cfg.batch_size} must be a multiple of grad_accum x processes = "
                f"{cfg.grad_accum * self.dist.world}"
            )
        self.seq_len = seq_len
        self.flops_per_token = model_train_flops_per_token(self.raw_model, seq_len or 1)  # before sharding
        # sharded (FSDP2 / EP): step checkpoints through torch.distributed.checkpoint, generation on a full copy
        self.sharded = parallel.is_sharded(cfg.parallel, cfg.ep)
        # parallelism and compile applied from outside the model; FSDP2 gets bf16 parameters where autocast is bf16
        bf16 = self.dtype == "bfloat16"
        self.model = parallel.wrap_model(self.raw_model, cfg.parallel, cfg.ep, bf16, cfg.compile, self.dist)
        self.optimizer = build_optimizer(self.raw_model, cfg)
        self.micro_batch_size = cfg.batch_size // cfg.grad_accum // self.dist.world
        self.peak = cost.device_peak_flops(self.device, cfg.peak_tflops)
        self.price = cfg.gpu_hour_price if self.device.type == "cuda" else cfg.cpu_hour_price
        # counters (saved in checkpoints)
        self.step = 0
        self.tokens = 0
        self.flops = 0.0
        # compute this run builds on that another stage spent (GRPO: its PRM's training): it counts against
        # max_flops, not in this run's cost meter (the other stage's meter has it)
        self.prior_flops = 0.0
        self.elapsed = 0.0
        self.bad_steps = 0
        self.bad_in_a_row = 0
        self.stopped = False  # the stage's stopping rule ended the run before max_steps (saved in checkpoints)
        self.last_metrics: dict = {}
        self.last_eval: dict = {}
        self._t_start = 0.0
        self._tb = None
        # how checkpoints are written: save_model(model, out, tokenizer_file, trainer_state=...); GRPO passes its
        # policy's own format (train/policy.Policy.save: save_pretrained for a transformers model)
        self.save_model = save_model

    # -- helpers for stages --------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def autocast(self):
        """bf16 autocast when dtype = bfloat16 (matmuls in bf16, master weights and reductions in fp32)."""
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bfloat16")

    def no_sync(self, last: bool):
        """Skip the gradient reduction (DDP all-reduce, FSDP2 reduce-scatter) on all but the last micro-batch of
        an optimizer step."""
        return parallel.no_sync(self.model, skip=self.dist.enabled and not last)

    def all_sum(self, x: torch.Tensor | float) -> torch.Tensor | float:
        """Sum over ranks (identity on one process)."""
        if not self.dist.enabled:
            return x
        t = torch.as_tensor(x, dtype=torch.float64 if not torch.is_tensor(x) else x.dtype, device=self.device).clone()
        torch_dist.all_reduce(t)
        return t if torch.is_tensor(x) else t.item()

    def split_batch(self, items: list) -> list[list]:
        """Cut a global batch (cfg.batch_size items, the same on every rank) into this rank's grad_accum
        micro-batches. Micro-step k on rank r gets items [(k*world + r)*mb : ... + mb]."""
        if len(items) != self.cfg.batch_size:
            raise ValueError(f"split_batch: expected {self.cfg.batch_size} items, got {len(items)}")
        mb, w, r = self.micro_batch_size, self.dist.world, self.dist.rank
        return [items[(k * w + r) * mb : (k * w + r + 1) * mb] for k in range(self.cfg.grad_accum)]

    def optimizer_step(self, loss: float, expert_load: torch.Tensor | None = None) -> dict:
        """Clip, guard, step, update MoE biases. Returns {"grad_norm", "skipped"}; call once per train_step."""
        params = [p for p in self.raw_model.parameters() if p.requires_grad]
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        parallel.finish_gradients(self.raw_model, self.dist)  # EP experts: summed over their replicas
        grad_norm = parallel.clip_grad_norm(params, clip)
        ok = float(math.isfinite(loss) and math.isfinite(grad_norm))
        if self.dist.enabled:  # every rank must take the same decision
            ok = float(self.all_sum(ok) == self.dist.world)
        if not ok:
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_steps += 1
            self.bad_in_a_row += 1
            return {"grad_norm": grad_norm, "skipped": 1}
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if expert_load is not None and hasattr(self.raw_model, "update_expert_bias") and expert_load.numel():
            load = self.all_sum(expert_load.detach().float())
            self.raw_model.update_expert_bias(load, speed=self.cfg.bias_update_speed)
        self.bad_in_a_row = 0
        return {"grad_norm": grad_norm, "skipped": 0}

    def supervised_step(self, micro_batches: list[dict], extra_loss: Callable | None = None) -> dict:
        """Forward/backward over this rank's micro-batches and one optimizer step.

        Each micro-batch: {"tokens": LongTensor [b, T], "targets": LongTensor [b, T], ...}. The loss is
        the token-weighted mean of `out.loss` (CE + MTP + aux, from the model) over every micro-batch of
        every rank: micro-batch i is weighted by its share n_i / N of the step's loss tokens. A plain mean
        of micro-batch means would overweight short examples (SFT) and make a 2-process run differ from a
        1-process run with the same global batch. `extra_loss(out, mb)` (optional) returns
        (scalar tensor, {name: float}) and is added to `out.loss` with the same weight.
        """
        n = len(micro_batches)
        counts = [int((mb["targets"] != -100).sum()) for mb in micro_batches]
        total = float(self.all_sum(float(sum(counts))))  # loss tokens of the whole step, all ranks
        weights = [c / total for c in counts] if total > 0 else [1.0 / (n * self.dist.world)] * n
        sums: dict[str, float] = {}
        load = None
        tokens = 0
        loss_total = 0.0

        def add(k: str, v: Any, w: float) -> None:
            if v is not None:
                sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) * w

        for i, mb in enumerate(micro_batches):
            x = mb["tokens"].to(self.device, non_blocking=True)
            y = mb["targets"].to(self.device, non_blocking=True)
            real = mb.get("real_mask")  # right-padded batches: padding is not routed (MoE statistics)
            real = None if real is None else real.to(self.device, non_blocking=True)
            w = weights[i]
            with self.no_sync(last=i == n - 1):
                with self.autocast():
                    out = self.model(x, targets=y, real_mask=real)
                    loss = out.loss
                    if extra_loss is not None:
                        extra, extra_metrics = extra_loss(out, mb)
                        loss = loss + extra
                        for k, v in extra_metrics.items():
                            add(k, v, w)
                # DDP averages gradients over ranks; * world turns that average back into the weighted sum
                (loss.float() * (w * self.dist.world)).backward()
            loss_total += loss.item() * w
            add("ce", getattr(out, "ce_loss", None), w)
            add("mtp_loss", getattr(out, "mtp_loss", None), w)
            add("aux", getattr(out, "aux_loss", None), w)
            el = getattr(out, "expert_load", None)
            if el is not None:
                load = el.detach().float() if load is None else load + el.detach().float()
            tokens += x.numel()
        if self.dist.enabled:  # every rank holds its part of the weighted sums: add them up
            loss_total = self.all_sum(loss_total)
            sums = {k: self.all_sum(v) for k, v in sums.items()}
            tokens = int(self.all_sum(tokens))
        st = self.optimizer_step(loss_total, load)
        m = {"loss": loss_total, **sums, "tokens": tokens, "loss_tokens": int(total), **st}
        if load is not None:
            m["expert_load"] = load  # popped by the loop into balance metrics
        return m

    @torch.no_grad()
    def eval_loss(self, batches: list[dict]) -> dict:
        """Mean `out.loss` / `out.ce_loss` over held-out batches (the same on every rank; no sharding)."""
        self.raw_model.eval()
        loss = ce = 0.0
        for mb in batches:
            with self.autocast():
                real = mb.get("real_mask")
                out = self.raw_model(
                    mb["tokens"].to(self.device),
                    targets=mb["targets"].to(self.device),
                    real_mask=None if real is None else real.to(self.device),
                )
            loss += out.loss.item() / len(batches)
            ce += float(out.ce_loss if getattr(out, "ce_loss", None) is not None else out.loss) / len(batches)
        self.raw_model.train()
        return {"eval_loss": loss, "eval_ce": ce}

    # -- checkpoints -----------------------------------------------------------------------------
    def _trainer_state(self, stage: Any) -> dict:
        return {
            "step": self.step,
            # sharded runs keep the optimizer state in the checkpoint's dcp/ directory, each rank its shards
            **({} if self.sharded else {"optimizer": self.optimizer.state_dict()}),
            "scheduler": {"step": self.step, "lr": lr_at(self.step, self.cfg)},  # the schedule is a function of step
            "rng": rng_state(),
            "data": stage.state_dict() if hasattr(stage, "state_dict") else None,
            "counters": {
                "tokens": self.tokens,
                "flops": self.flops,
                "elapsed": self.elapsed,
                "bad_steps": self.bad_steps,
                "bad_in_a_row": self.bad_in_a_row,
                "stopped": self.stopped,
            },
            "metrics": {"last": self.last_metrics, "eval": self.last_eval},
            "stage": self.stage_name,
        }

    def save(self, stage: Any, final: bool = False) -> Path | None:
        """Write RUN/checkpoints/step-N (with trainer state) or RUN/final; rank 0 writes, except the shards of a
        sharded step checkpoint (every rank, see `_save_sharded`); prunes old ones. Call on every rank."""
        out = None
        if final:
            model = self.raw_model
            if self.sharded:  # the ordinary single-file checkpoint: the weights gathered (on every rank)
                model = parallel.Consolidated(self.raw_model.cfg, parallel.full_state_dict(self.raw_model))
            if self.is_main:
                out = self.save_model(model, self.run_dir / "final", self.tokenizer_file)
        elif self.sharded:
            out = self._save_sharded(stage)
        elif self.is_main:
            out = self.save_model(
                self.raw_model,
                self.run_dir / "checkpoints" / f"step-{self.step}",
                self.tokenizer_file,
                trainer_state=self._trainer_state(stage),
            )
        if not final and self.is_main:
            steps = sorted(
                (int(p.name[5:]), p)
                for p in (self.run_dir / "checkpoints").iterdir()
                if p.name.startswith("step-") and p.name[5:].isdigit()
            )
            for _, p in steps[: -self.cfg.keep_last]:
                shutil.rmtree(p, ignore_errors=True)
        if self.dist.enabled:
            torch_dist.barrier()
        return out

    def _save_sharded(self, stage: Any) -> Path:
        """RUN/checkpoints/step-N as config.json, tokenizer.json, trainer_state.pt (rank 0) and dcp/ (every rank's
        shards of weights and optimizer), built in a temporary sibling that rank 0 renames once all are done."""
        ckpts = self.run_dir / "checkpoints"
        out = ckpts / f"step-{self.step}"
        tmp = ckpts / f".{out.name}.tmp-dcp"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        if self.dist.enabled:
            torch_dist.barrier()
        parallel.save_sharded(self.raw_model, self.optimizer, tmp / parallel.DCP_DIR)
        if self.is_main:
            self.raw_model.cfg.save(tmp / "config.json")
            if self.tokenizer_file is not None and self.tokenizer_file.is_file():
                shutil.copyfile(self.tokenizer_file, tmp / "tokenizer.json")
            torch.save(self._trainer_state(stage), tmp / TRAINER_STATE_FILE)
            if out.exists():
                shutil.rmtree(out)
            tmp.rename(out)
        return out

    def load(self, ckpt: Path, stage: Any) -> None:
        """Restore a step checkpoint: an ordinary one, or a sharded one (DCP) written on any world size."""
        if (ckpt / parallel.DCP_DIR).is_dir():  # resharded onto this run's layout by DCP (every rank reads)
            parallel.load_sharded(self.raw_model, self.optimizer, ckpt / parallel.DCP_DIR)
        elif self.sharded:
            raise TinyseekError(
                f"{ckpt}: an ordinary (unsharded) checkpoint; resume it with parallel = ddp and ep = 1, or start a "
                "new run from its weights (init)"
            )
        else:
            sd = read_weights(ckpt)
            check_state_dict(self.raw_model.state_dict(), sd, str(ckpt))
            self.raw_model.load_state_dict(sd)
        try:
            st = torch.load(ckpt / TRAINER_STATE_FILE, map_location="cpu", weights_only=False)
        except Exception as e:
            raise TinyseekError(f"{ckpt / TRAINER_STATE_FILE}: unreadable trainer state ({e})") from None
        if "optimizer" in st:
            self.optimizer.load_state_dict(st["optimizer"])
        self.step = st["step"]
        c = st["counters"]
        self.tokens, self.flops, self.elapsed = c["tokens"], c["flops"], c["elapsed"]
        self.bad_steps, self.bad_in_a_row = c["bad_steps"], c["bad_in_a_row"]
        self.stopped = bool(c.get("stopped", False))
        self.last_metrics, self.last_eval = st["metrics"]["last"], st["metrics"]["eval"]
        if st.get("data") is not None and hasattr(stage, "load_state_dict"):
            stage.load_state_dict(st["data"])
        set_rng_state(st["rng"])

    # -- logging ----------------------------------------------------------------------------------
    def _open_metrics(self) -> None:
        """On resume, drop metrics lines past the checkpoint's step (written after it by the killed run)."""
        f = self.run_dir / "metrics.jsonl"
        if f.exists():
            keep = []
            for line in f.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= self.step:
                        keep.append(line)
                except json.JSONDecodeError:
                    break  # a line cut short by the kill
            write_atomic(f, "".join(k + "\n" for k in keep))
        try:  # TensorBoard events in RUN/tb/ when the `tb` extra is installed (pip install 'tinyseek[tb]')
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))
        except ImportError:
            self._tb = None

    def _log(self, rec: dict) -> None:
        rec = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}  # strict JSON
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        if self._tb is not None:
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, rec["step"])

    def cost(self) -> dict:
        hours = self.elapsed / 3600 * self.dist.world
        return {
            "flops": self.flops,
            "elapsed_s": self.elapsed,
            "device": self.device.type,
            "n_devices": self.dist.world,
            "device_hours": hours,
            "price_per_device_hour": self.price,
            "cost_usd": hours * self.price,
        }

    # -- the run ------------------------------------------------------------------------------------
    @property
    def budget_spent(self) -> bool:
        """The compute budget (`max_flops`) is used up: the step that crossed it was the last."""
        return self.cfg.max_flops > 0 and self.flops + self.prior_flops >= self.cfg.max_flops

    def _start(self, stage: Any) -> None:
        """Resume from the last checkpoint (--resume), or clear an earlier run's checkpoints out of the way; open
        the run directory's files."""
        if self.resume_requested:
            ckpt = latest_checkpoint(self.run_dir)
            if ckpt is not None:
                self.load(ckpt, stage)
                if self.is_main:
                    print(f"resumed from {ckpt} (step {self.step})", flush=True)
            elif self.is_main:
                print(f"--resume: no checkpoint in {self.run_dir / 'checkpoints'}; starting from step 0", flush=True)
        elif self.is_main and (self.run_dir / "checkpoints").is_dir():
            # a fresh run in an old run's directory replaces that run: its step-N checkpoints would otherwise
            # outrank (and outlive, under keep_last) this run's, and --resume would pick them up
            old = [p for p in (self.run_dir / "checkpoints").iterdir() if p.name.startswith("step-")]
            if old:
                print(
                    f"note: {self.run_dir} held an earlier run; removing its {len(old)} checkpoint(s) (use --resume "
                    "to continue one)",
                    flush=True,
                )
                for p in old:
                    shutil.rmtree(p, ignore_errors=True)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for d in (self.run_dir, self.run_dir / "checkpoints"):  # halves of checkpoints a killed run was writing
                for p in d.glob(".*.tmp-*") if d.is_dir() else []:
                    shutil.rmtree(p, ignore_errors=True)
            if self.resolved_config is not None:
                write_toml(self.resolved_config, self.run_dir / "config.toml")
            self._open_metrics()

    def _record(self, m: dict, lr: float, dt: float) -> dict:
        """Count a step's tokens and FLOPs in the meter; its metrics.jsonl record."""
        tokens = int(m.pop("tokens", 0))
        self.tokens += tokens
        # FLOPs the stage did beside its training tokens (GRPO: the rollouts), counted in the cost meter too
        step_flops = self.flops_per_token * tokens + float(m.pop("extra_flops", 0.0))
        self.flops += step_flops
        rec: dict[str, Any] = {
            "step": self.step,
            **{k: v for k, v in m.items() if k != "expert_load"},
            "lr": lr,
            "tokens": tokens,
        }
        load = m.get("expert_load")
        if load is not None and load.numel():  # a dense model reports an empty [0, 0] load
            mean = load.mean(dim=-1).clamp_min(1e-9)
            rec["moe_maxvio"] = [round(float(v), 4) for v in (load.max(dim=-1).values / mean - 1)]
            rec["moe_cv"] = [round(float(v), 4) for v in (load.std(dim=-1) / mean)]
        rec["tokens_per_s"] = tokens / dt if dt > 0 else 0.0
        rec["mfu"] = step_flops / dt / (self.peak * self.dist.world) if dt > 0 else 0.0
        rec.update(
            elapsed_s=self.elapsed,
            total_tokens=self.tokens,
            total_flops=self.flops,
            cost_usd=self.cost()["cost_usd"],
            bad_steps=self.bad_steps,
        )
        return rec

    def _stop_if_diverged(self, stage: Any, rec: dict) -> None:
        if self.bad_in_a_row < self.cfg.max_bad_steps:
            return
        if self.is_main:
            self._log(rec)
        self.save(stage)  # skipped steps leave the weights alone: these are the last good step's weights
        good = self.step - self.bad_in_a_row
        raise TrainingStopped(
            f"loss: {self.cfg.max_bad_steps} non-finite steps in a row (steps {good + 1}-{self.step}); "
            f"stopped, the weights of step {good} are saved in "
            f"{self.run_dir / 'checkpoints' / f'step-{self.step}'}"
        )

    def _evaluate(self, stage: Any, rec: dict, last: bool) -> bool:
        """The stage's evaluation into `rec`; whether this step is the last (the stage's stopping rule may say so)."""
        if hasattr(stage, "evaluate"):
            self.last_eval = stage.evaluate(self)
            rec.update(self.last_eval)
            if self.last_eval.get("stop") and not last:
                # the stage's own stopping rule (SFT's stop_accuracy) met: this step is the last
                self.stopped, last = True, True
                if self.is_main:
                    why = self.last_eval.get("stop_reason", "")
                    print(f"{self.stage_name}: stopping at step {self.step}: {why}", flush=True)
        return last

    def _finish(self, stage: Any, steps_this_run: int) -> dict:
        cfg = self.cfg
        if steps_this_run == 0 and self.is_main:
            print(
                f"nothing to do: already at step {self.step} of max_steps={cfg.max_steps}"
                + (f" (or the compute budget max_flops={cfg.max_flops:.3g} is spent)" if cfg.max_flops else ""),
                flush=True,
            )
        self.save(stage)  # the last step's trainer state (so a longer --max-steps can continue)
        self.save(stage, final=True)
        summary = self.summary()
        if self.is_main:
            write_json(self.run_dir / "summary.json", summary)
            if self._tb is not None:
                self._tb.close()
            if cfg.progress:
                c = summary["cost"]
                print(
                    f"done: {self.step} steps, {self.tokens:,} tokens, {summary['tokens_per_s']:,.0f} tokens/s, "
                    f"MFU {summary['mfu']:.2%}, {c['flops']:.3g} FLOPs, {c['device_hours']:.4f} {c['device']}-hours, "
                    f"${c['cost_usd']:.4f} -> {self.run_dir}",
                    flush=True,
                )
        return summary

    def run(self, stage: Any) -> dict:
        cfg = self.cfg
        self._start(stage)
        t_prev = time.perf_counter()
        steps_this_run = 0
        time_this_run = 0.0
        while self.step < cfg.max_steps and not self.stopped and not self.budget_spent:
            lr = lr_at(self.step, cfg)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            before = self.flops + self.prior_flops
            m = stage.train_step(self)
            self.step += 1
            now = time.perf_counter()
            dt = now - t_prev
            t_prev = now
            self.elapsed += dt
            time_this_run += dt
            steps_this_run += 1
            rec = self._record(m, lr, dt)
            self._stop_if_diverged(stage, rec)
            last = self.step == cfg.max_steps or self.budget_spent
            at_budget = 0 < cfg.eval_at_flops <= self.flops + self.prior_flops and before < cfg.eval_at_flops
            if at_budget:
                rec["at_eval_flops"] = True  # the step that crossed eval_at_flops (evaluated below)
            if (cfg.eval_every and self.step % cfg.eval_every == 0) or last or at_budget:
                last = self._evaluate(stage, rec, last)
                t_prev = time.perf_counter()  # evaluation time is not training time
            self.last_metrics = rec
            if self.is_main:
                self._log(rec)
                if cfg.progress and (self.step % cfg.log_every == 0 or last):
                    self._print(rec, time_this_run / steps_this_run)
            if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and not last:
                self.save(stage)
                t_prev = time.perf_counter()
        return self._finish(stage, steps_this_run)

    def _print(self, rec: dict, sec_per_step: float) -> None:
        eta = (self.cfg.max_steps - self.step) * sec_per_step
        extra = f" | eval {rec['eval_loss']:.4f}" if "eval_loss" in rec else ""
        skipped = f" | skipped {self.bad_steps}" if self.bad_steps else ""
        print(
            f"{self.stage_name} step {self.step}/{self.cfg.max_steps} | loss "
            f"{rec.get('loss', float('nan')):.4f}{extra} | "
            f"lr {rec['lr']:.2e} | {rec['tokens_per_s']:,.0f} tok/s | MFU {rec['mfu']:.2%} | ${rec['cost_usd']:.4f} | "
            f"ETA {_fmt_time(eta)}{skipped}",
            file=sys.stdout,
            flush=True,
        )

    def summary(self) -> dict:
        c = self.cost()
        tps = self.tokens / self.elapsed if self.elapsed > 0 else 0.0
        return {
            "stage": self.stage_name,
            "dtype": self.dtype,
            "steps": self.step,
            "tokens": self.tokens,
            "tokens_per_s": tps,
            "mfu": tps * self.flops_per_token / (self.peak * self.dist.world) if self.peak else 0.0,
            "flops_per_token": self.flops_per_token,
            "peak_flops_per_device": self.peak,
            "bad_steps": self.bad_steps,
            "stopped_early": self.stopped,
            "cost": c,
            "final": self.last_metrics,
            "eval": self.last_eval,
        }


# ----------------------------------------------------------------------------------------------
# the model a stage trains


def build_model(preset: str, model_overrides: dict, init: str, vocab_size: int, seq_len: int):
    """A random model from `preset` (+ overrides, vocabulary sized to the tokenizer), or the checkpoint `init`.
    Returns (model, resolved ModelConfig dict). Call `seed_everything` first: the init draws from torch's RNG."""
    from tinyseek.checkpoint import load_model
    from tinyseek.config import ModelConfig, from_dict, to_dict
    from tinyseek.model import Transformer

    if init:
        model = load_model(init)
        model.train()
        if model.cfg.vocab_size < vocab_size:
            raise ConfigError(
                f"init: {init} has vocab_size {model.cfg.vocab_size}, smaller than the tokenizer's {vocab_size}"
            )
    else:
        fields = {**model_overrides}
        fields.setdefault("vocab_size", vocab_size)
        cfg = ModelConfig.preset(preset, **fields) if preset else from_dict(ModelConfig, fields, where="model")
        if cfg.vocab_size < vocab_size:
            raise ConfigError(f"model.vocab_size: {cfg.vocab_size} is smaller than the tokenizer's {vocab_size}")
        model = Transformer(cfg)
    if seq_len > model.cfg.max_seq_len:
        raise ConfigError(f"seq_len: {seq_len} is longer than the model's max_seq_len {model.cfg.max_seq_len}")
    return model, to_dict(model.cfg)
