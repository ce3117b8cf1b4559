"""Every stage in one process, run by tests/test_distributed.py once plainly and once under a 2-process torchrun:

    python tests/dist_stages.py OUT CKPT DATA                      (the one-process reference)
    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/dist_stages.py OUT CKPT DATA

CKPT is a `nano` checkpoint (MoE + MTP) with its tokenizer; DATA holds prompts.jsonl (prompt, answer) and
traces.jsonl (prompt, completion, answer). Stages run through `tinyseek.cli.main`, the path a user types, into
OUT/<stage>: sft, grpo (and under torchrun also grpo with parallel = fsdp and with ep = 2, each compared with the
same one-process run), sample, distill (white-box, teacher = CKPT), eval. Under torchrun it first checks that a
global batch the world size does not divide stops with a one-line error on every rank.
"""

import sys

import torch


def length_chars(prompts, completions, **columns):
    """A reward that differs within almost every group (so every GRPO step has something to learn)."""
    return [len(c) / 50 for c in completions]


def main(out: str, ckpt: str, data: str) -> None:
    from tinyseek.cli import main as tinyseek
    from tinyseek.dist import world_size

    two = world_size() > 1
    # float32 pinned: the runs are compared with the one-process run to float32 tolerances (dtype = auto is bf16
    # autocast on a CPU with native bf16, whose rounding depends on how the batch is split)
    common = ["--threads", "1", "--progress", "false", "--dtype", "float32"]

    def run(*argv: str) -> None:
        rc = tinyseek(list(argv))
        assert rc == 0, f"tinyseek {argv[0]} exited {rc}"

    if two:  # bad input: the same one-line error on every rank, before any work
        rc = tinyseek(
            ["grpo", "--model", ckpt, "--data", f"{data}/prompts.jsonl", "--batch-size", "3", "--out", f"{out}/bad"]
        )
        assert rc == 2, rc
    run(
        "sft", "--init", ckpt, "--data", f"{data}/traces.jsonl", "--seq-len", "64", "--batch-size", "4",
        "--max-steps", "2", "--warmup-steps", "0", "--eval-batches", "1", "--out", f"{out}/sft", *common,
    )  # fmt: skip
    grpo = [
        "grpo", "--model", ckpt, "--data", f"{data}/prompts.jsonl", "--batch-size", "2", "--group-size", "4",
        "--max-new-tokens", "16", "--max-steps", "2", "--micro-batch", "3", "--rewards",
        "accuracy,format,dist_stages:length_chars", "--eval-data", f"{data}/prompts.jsonl", "--eval-n", "3",
        "--eval-samples", "2", "--ckpt-every", "1", "--sample-every", "1", "--samples-logged", "8", *common,
    ]  # fmt: skip
    run(*grpo, "--out", f"{out}/grpo")
    if two:
        run(*grpo, "--parallel", "fsdp", "--out", f"{out}/grpo-fsdp")
        run(*grpo, "--ep", "2", "--out", f"{out}/grpo-ep")
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
