"""Every stage in one process, run by tests/test_distributed.py once plainly and once under a 2-process torchrun:

    python tests/dist_stages.py OUT CKPT DATA                      (the one-process reference)
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_stages.py OUT CKPT DATA

CKPT is a `nano` checkpoint (MoE + MTP) with its tokenizer; DATA holds prompts.jsonl (prompt, answer) and
traces.jsonl (prompt, completion, answer). Stages run through `tinyseek.cli.main`, the path a user types, into
OUT/<stage>: sft, grpo (and under torchrun also grpo with parallel = fsdp and with ep = 2, each compared with the
same one-process run), a process reward model (prm train) and a GRPO step scored by it, sample, distill (white-box,
teacher = CKPT), eval. Under torchrun it first checks that a
global batch the world size does not divide stops with a one-line error on every rank.

GRPO runs at a learning rate where one wrong update shows (AdamW moves a weight by ~lr a step: a flipped gradient
moves it 2 lr the wrong way), with two updates per batch (num_iterations = 2: the ratio leaves 1 and the clip can
act), the sampler's log-probs as the old log-probs and a KL penalty (beta > 0, a reference model), at a rollout
temperature and with a reward (`char_code`) that make every group's rewards differ, so that every step updates.
The expert-parallel GRPO runs with two torch threads a process (MoE's dense branch on small micro-batches).

Every optimizer step's gradients, after the reductions (DDP's all-reduce, FSDP2's reduce-scatter, the EP experts'
sum) and before clipping, are gathered into full tensors and written by rank 0 to OUT/grads/<stage>.pt (a list of
{name: gradient}, one a step), for tests/test_distributed.py to compare parameter by parameter with one process.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist


def char_code(prompts, completions, **columns):
    """A reward that differs between almost any two different completions (so every GRPO step has something to
    learn): the completion's character codes summed, modulo 101, scaled to [0, 1)."""
    return [sum(map(ord, c)) % 101 / 101 for c in completions]


def record_gradients(grads_dir: Path):
    """Wrap `parallel.finish_gradients` (the loop calls it once per optimizer step, after the backward passes'
    reductions): after it, every parameter's gradient as a full tensor (a DTensor's gathered: collective, every rank
    calls it), kept by rank 0. Returns `start(name)`, which begins a new list and saves it as grads_dir/<name>.pt
    at the next call or at `start(None)`."""
    from tinyseek.train import parallel

    finish = parallel.finish_gradients
    state = {"name": None, "steps": []}

    def save() -> None:
        if state["steps"] and (not dist.is_initialized() or dist.get_rank() == 0):
            grads_dir.mkdir(parents=True, exist_ok=True)
            torch.save(state["steps"], grads_dir / f"{state['name']}.pt")

    def finish_and_record(model, d) -> None:
        from torch.distributed.tensor import DTensor

        finish(model, d)
        step = {}
        for name, p in parallel.unwrapped(model).named_parameters():
            if p.grad is not None:
                g = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
                step[name] = g.detach().clone()
        state["steps"].append(step)

    def start(name: str | None) -> None:
        save()
        state["name"], state["steps"] = name, []

    parallel.finish_gradients = finish_and_record
    return start


# float32 pinned: the runs are compared with the one-process run to float32 tolerances (dtype = auto is bf16
# autocast on a CPU with native bf16, whose rounding depends on how the batch is split)
COMMON = ["--threads", "1", "--progress", "false", "--dtype", "float32"]


def grpo_argv(ckpt: str, data: str) -> list[str]:
    """The GRPO run's arguments (without --out): see the module docstring."""
    return [
        "grpo", "--model", ckpt, "--data", f"{data}/prompts.jsonl", "--batch-size", "2", "--group-size", "4",
        "--max-new-tokens", "16", "--max-steps", "2", "--micro-batch", "3", "--rewards",
        "accuracy,format,dist_stages:char_code", "--eval-data", f"{data}/prompts.jsonl", "--eval-n", "3",
        "--eval-samples", "2", "--ckpt-every", "1", "--sample-every", "1", "--samples-logged", "8",
        "--lr", "3e-4", "--num-iterations", "2", "--old-logprobs", "sampler", "--beta", "0.04", "--temperature", "1.5",
        *COMMON,
    ]  # fmt: skip


def main(out: str, ckpt: str, data: str) -> None:
    from tinyseek.cli import main as tinyseek
    from tinyseek.dist import world_size

    two = world_size() > 1
    start_grads = record_gradients(Path(out) / "grads")
    common = COMMON

    def run(*argv: str) -> None:
        start_grads(Path(argv[argv.index("--out") + 1]).name)
        rc = tinyseek(list(argv))
        assert rc == 0, f"tinyseek {argv[0]} exited {rc}"
        start_grads(None)

    if two:  # bad input: the same one-line error on every rank, before any work
        rc = tinyseek(
            ["grpo", "--model", ckpt, "--data", f"{data}/prompts.jsonl", "--batch-size", "3", "--out", f"{out}/bad"]
        )
        assert rc == 2, rc
    run(
        "sft", "--init", ckpt, "--data", f"{data}/traces.jsonl", "--seq-len", "64", "--batch-size", "4",
        "--max-steps", "2", "--warmup-steps", "0", "--eval-batches", "1", "--out", f"{out}/sft", *common,
    )  # fmt: skip
    grpo = grpo_argv(ckpt, data)
    run(*grpo, "--out", f"{out}/grpo")
    if two:
        run(*grpo, "--parallel", "fsdp", "--out", f"{out}/grpo-fsdp")
        run(*grpo, "--ep", "2", "--threads", "2", "--out", f"{out}/grpo-ep")
    # the process reward model: trained (every rank on the whole batch), then scoring GRPO's rollouts (every rank
    # scores the whole batch): the cost meter counts what every rank ran
    run(
        "prm", "train", "--init", ckpt, "--task", "addition", "--n", "32", "--eval-n", "4", "--max-steps", "2",
        "--batch-size", "4", "--seq-len", "96", "--out", f"{out}/prm", *common,
    )  # fmt: skip
    run(
        *grpo, "--advantage", "process", "--process-reward", f"prm:{out}/prm/final", "--max-steps", "1",
        "--eval-n", "0", "--out", f"{out}/grpo-prm",
    )  # fmt: skip
    run(
        "sample", ckpt, "--data", f"{data}/prompts.jsonl", "--n", "3", "--samples", "3", "--max-new-tokens", "16",
        "--threads", "1", "--out", f"{out}/sample.jsonl",
    )  # fmt: skip
    run(
        "distill", "--data", f"{data}/traces.jsonl", "--mode", "whitebox", "--teacher", ckpt, "--preset", "nano",
        "--max-len", "64", "--batch-size", "4", "--max-steps", "2", "--warmup-steps", "0", "--eval-batches", "1",
        "--out", f"{out}/distill", *common,
    )  # fmt: skip
    run(
        "eval", ckpt, "--data", f"{data}/prompts.jsonl", "--n", "3", "--samples", "2", "--max-new-tokens", "16",
        "--threads", "1", "--out", f"{out}/eval",
    )  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(*sys.argv[1:4])
