"""DDP: `tinyseek pretrain` under a 2-process torchrun (gloo, CPU) follows the 1-process run with the same global
batch (each rank takes its half of every batch; gradients, losses and MoE loads are averaged/summed over ranks),
and only rank 0 writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(), reason="needs gloo"
)
def test_two_process_torchrun_matches_one_process(tmp_path):
    from tinyseek.data import task_documents
    from tinyseek.tokenizer import Tokenizer

    tok = Tokenizer.train(task_documents({"addition": 300}, seed=0, split="train"), 300).save(tmp_path / "tok")
    args = [
        "pretrain",
        "--tasks",
        "addition=400",
        "--tokenizer",
        str(tok),
        "--seq-len",
        "32",
        "--batch-size",
        "8",
        "--max-steps",
        "6",
        "--threads",
        "1",
        "--model.dim",
        "32",
        "--model.inter_dim",
        "64",
        "--eval-every",
        "3",
        "--ckpt-every",
        "3",
    ]
    one = subprocess.run(
        [sys.executable, "-m", "tinyseek.cli", *args, "--out", str(tmp_path / "one")],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "tinyseek.cli",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("done:") == 1  # only rank 0 prints and writes
    r1 = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    r2 = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in r2] == list(range(1, 7))
    for a, b in zip(r1, r2):
        assert b["tokens"] == a["tokens"] and b["loss_tokens"] == a["loss_tokens"]  # the same global batch
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
    assert r2[-1]["eval_loss"] == pytest.approx(r1[-1]["eval_loss"], rel=1e-4)
    from safetensors.torch import load_file

    w1 = load_file(tmp_path / "one" / "final" / "model.safetensors")
    w2 = load_file(tmp_path / "two" / "final" / "model.safetensors")
    # Adam turns float-noise differences in near-zero gradients into lr-sized steps (early on, update ~ lr * sign(g)),
    # so a few elements may differ by up to a few lr; 99.9% must agree to 1e-4.
    for k in w1:
        d = (w2[k] - w1[k]).abs()
        assert d.max() < 5e-3, k
        assert (d > 1e-4).float().mean() < 1e-3, k
    s = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s["cost"]["n_devices"] == 2
