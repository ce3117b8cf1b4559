"""Under torchrun (gloo, CPU; no GPU or NCCL path is tested here): every stage, DDP, FSDP2, expert parallelism.

- `tinyseek pretrain` under a 2-process torchrun follows the 1-process run with the same global batch (each rank
  takes its half of every batch; gradients, losses and MoE loads are averaged/summed over ranks); only rank 0 writes.
- FSDP2 (`--parallel fsdp`): the same run, killed with SIGKILL after its first sharded (DCP) checkpoint, resumed on
  one process (a different world size), ends where the 1-process run ends; the sharded checkpoint consolidates
  to an ordinary one that exports to transformers with the same logits.
- sft, grpo (ddp, fsdp, ep = 2 with two threads a process), sample, distill and eval under a 2-process torchrun give
  the 1-process rollouts, rewards, samples and evaluations exactly, and the same gradients (every parameter, every
  optimizer step) and updates within float tolerance (tests/dist_stages.py); GRPO with two updates a batch, the
  sampler's log-probs as the old ones and a KL penalty, at a learning rate where a wrong update shows. The EP run's
  sharded checkpoint resumes on one process.
- The 2-process pretrain runs with two threads a process; expert parallelism with two threads a process and small,
  unequal forwards (MoE's dense branch on one rank, the sorted one on the other) equals the one-process MoE.
- Expert parallelism on 4 processes (ep = 2 with data parallelism, and ep = 4) equals the single-process MoE in
  forward and backward (tests/dist_checks.py); FSDP2 together with expert parallelism trains as one process does.
- Faults: `torchrun --max-restarts 1 ... --resume` with a rank SIGKILLed after a step checkpoint resumes and ends
  where one process ends (pretrain under DDP, GRPO under FSDP2); two torchrun agents on the loopback
  (`--nnodes 2`, c10d rendezvous) form one job that matches one process.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# OMP_WAIT_POLICY=PASSIVE: the runs with two threads a process put four threads on a machine that may have two
# cores; spinning OpenMP threads then wait on each other (a 2-process pretrain: 28 s spinning, 15 s passive)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers through /proc"),
    pytest.mark.skipif(
        not torch.distributed.is_available() or not torch.distributed.is_gloo_available(), reason="needs gloo"
    ),
]


def _run(cmd, env=None, **kw):
    return subprocess.run(cmd, env=env or ENV, cwd=ROOT, capture_output=True, text=True, timeout=600, **kw)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _close_weights(a: dict, b: dict) -> None:
    # Adam turns float-noise differences in near-zero gradients into lr-sized steps (early on, update ~ lr * sign(g)),
    # so a few elements may differ by up to a few lr; 99.9% must agree to 1e-4.
    assert a.keys() == b.keys()
    for k in a:
        d = (a[k] - b[k]).abs()
        assert d.max() < 5e-3, k
        assert (d > 1e-4).float().mean() < 1e-3, k


def _close_grads(one: Path, two: Path) -> None:
    """Every optimizer step's gradients (tests/dist_stages.py writes them: full tensors, after the reductions) equal
    the one-process run's, parameter by parameter, to 1e-3 of each parameter's largest gradient."""
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    assert len(a) == len(b) > 0
    for i, (ga, gb) in enumerate(zip(a, b)):
        assert ga.keys() == gb.keys(), i
        for k in ga:
            scale = float(ga[k].abs().max())
            torch.testing.assert_close(
                gb[k], ga[k], rtol=1e-3, atol=1e-3 * scale + 1e-9, msg=lambda m, i=i, k=k: f"step {i + 1}, {k}: {m}"
            )


def _children(pid: int) -> list[int]:
    """The process ids whose parent is `pid`, read from /proc (Linux; no psutil, not a declared dependency)."""
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:  # it exited while we looked
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4, after the parenthesised command name
                kids.append(int(d.name))
    return kids


def _rank_of(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((e[5:].decode() for e in env if e.startswith(b"RANK=")), None)


def _kill_rank_after(p: subprocess.Popen, path: Path, rank: int, timeout: float = 300) -> None:
    """SIGKILL torchrun's worker of global rank `rank` as soon as `path` exists (the agent `p` stays up)."""
    deadline = time.time() + timeout
    while not path.exists():
        assert p.poll() is None, "the job ended before the kill"
        assert time.time() < deadline
        time.sleep(0.02)
    workers = [w for w in _children(p.pid) if _rank_of(w) == str(rank)]
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)


def _elastic(cmd: list[str], kill_after: Path, rank: int, env=None) -> subprocess.CompletedProcess:
    """Run a torchrun command line with --max-restarts 1, SIGKILL one rank's worker once `kill_after` exists, and
    return the job once the agent has restarted the workers and they have finished. The agent does not share its
    rendezvous store with the workers (tinyseek.dist refuses a restart on a shared one, where gloo hangs)."""
    env = {**(env or ENV), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out: dict = {}
        reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), p.communicate())))
        reader.start()  # read the pipes while waiting (a full pipe would stall the workers)
        _kill_rank_after(p, kill_after, rank)
        reader.join(timeout=600)
        assert not reader.is_alive(), "the restarted job did not finish"
    finally:
        if p.poll() is None:
            p.kill()
    return subprocess.CompletedProcess(cmd, p.returncode, out.get("stdout", ""), out.get("stderr", ""))


_EXIT_SCRIPT = """
import atexit

import torch.distributed as dist
from tinyseek.dist import gather, init_distributed

# registered before init_distributed's own hook, so it runs after it (atexit is last in, first out)
atexit.register(lambda: print(f"rank {dist.get_rank() if dist.is_initialized() else '-'}: group up at exit: "
                              f"{dist.is_initialized()}", flush=True))
d = init_distributed("cpu")
assert gather([d.rank] * 1000, d) == [0] * 1000 + [1] * 1000
"""


def test_the_process_group_is_destroyed_before_the_interpreter_exits(tmp_path):
    # Left to the interpreter's teardown, gloo's worker threads abort a process now and then after the work is
    # done (SIGABRT, "terminate called without an active exception"; 8 of 30 runs of such a script here).
    script = tmp_path / "exit.py"
    script.write_text(_EXIT_SCRIPT)
    r = _run([*TORCHRUN, "--nproc-per-node", "2", str(script)])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("rank -: group up at exit: False") == 2, r.stdout


@pytest.fixture(scope="module")
def pretrain_one(tmp_path_factory):
    """A 6-step `tinyseek pretrain` on one process (MoE + MTP), and the arguments that made it."""
    from tinyseek.data import task_documents
    from tinyseek.tokenizer import Tokenizer

    tmp = tmp_path_factory.mktemp("pretrain")
    tok = Tokenizer.train(task_documents({"addition": 300}, seed=0, split="train"), 300).save(tmp / "tok")
    args = [
        "pretrain", "--tasks", "addition=400", "--tokenizer", str(tok), "--seq-len", "32", "--batch-size", "8",
        "--max-steps", "6", "--threads", "1", "--model.dim", "32", "--model.inter_dim", "64", "--eval-every", "3",
        "--ckpt-every", "3", "--dtype", "float32",
    ]  # fmt: skip
    # float32 pinned: 1 and N processes do the same maths, held to float32 tolerances; dtype = auto is bf16 autocast
    # on a CPU with native bf16, whose rounding depends on how the batch is split
    one = _run([sys.executable, "-m", "tinyseek.cli", *args, "--out", str(tmp / "one")])
    assert one.returncode == 0, one.stderr
    return tmp, args


def _matches_one(tmp: Path, run: Path) -> None:
    """A pretrain run under torchrun follows the 1-process run step by step and ends with its weights."""
    from safetensors.torch import load_file

    r1, r2 = _metrics(tmp / "one"), _metrics(run)
    assert [r["step"] for r in r2] == list(range(1, 7))
    for a, b in zip(r1, r2):
        assert b["tokens"] == a["tokens"] and b["loss_tokens"] == a["loss_tokens"]  # the same global batch
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
    assert r2[-1]["eval_loss"] == pytest.approx(r1[-1]["eval_loss"], rel=1e-4)
    _close_weights(
        load_file(tmp / "one" / "final" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    )


def test_two_process_torchrun_matches_one_process(pretrain_one):
    """Two threads a process here (the one-process run has one): the result does not depend on the thread count."""
    tmp, args = pretrain_one
    cmd = [*TORCHRUN, "--nproc-per-node", "2", "-m", "tinyseek.cli", *args, "--threads", "2"]
    two = _run([*cmd, "--out", str(tmp / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("done:") == 1  # only rank 0 prints and writes
    _matches_one(tmp, tmp / "two")
    s = json.loads((tmp / "two" / "summary.json").read_text())
    assert s["cost"]["n_devices"] == 2


def test_fsdp2_with_expert_parallelism_matches_one_process(pretrain_one):
    """FSDP2 and expert parallelism together (`--parallel fsdp --ep 2`): the routed experts sharded over the EP
    group and left out of FSDP2, everything else sharded by FSDP2; the sharded (DCP) checkpoint, written from
    tensors on two meshes, consolidates to the final weights. (On 4 processes, two EP groups, the losses and
    gradient norms match too, but a 4-way split moves 0.2% of an attention matrix's elements by over 1e-4 under
    plain FSDP2 and DDP + EP alike: Adam's noise, beyond `_close_weights`' 0.1%; dev/LOG.md.)"""
    from safetensors.torch import load_file

    tmp, args = pretrain_one
    run = tmp / "fsdp-ep"
    cmd = [*TORCHRUN, "--nproc-per-node", "2", "-m", "tinyseek.cli", *args, "--parallel", "fsdp", "--ep", "2"]
    r = _run([*cmd, "--out", str(run)])
    assert r.returncode == 0, r.stderr[-3000:]
    _matches_one(tmp, run)
    c = _run([sys.executable, "-m", "tinyseek.cli", "consolidate", str(run / "checkpoints" / "step-6"), "--out",
              str(tmp / "fsdp-ep-6")])  # fmt: skip
    assert c.returncode == 0, c.stderr
    a, b = load_file(run / "final" / "model.safetensors"), load_file(tmp / "fsdp-ep-6" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_torchrun_agents_on_the_loopback_form_one_job_that_matches_one_process(pretrain_one):
    """Multi-node on one machine: two agents (`--nnodes 2 --node-rank 0/1`, one process each) meet at a c10d
    rendezvous on 127.0.0.1 (node 0 hosts the store) and train as one 2-process job; gloo stays on the loopback."""
    import socket

    tmp, args = pretrain_one
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**ENV, "GLOO_SOCKET_IFNAME": "lo"}
    agents = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
               "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", "tinyseek-two-nodes", "--rdzv-conf", f"is_host={int(node == 0)}",
               "--local-addr", "127.0.0.1", "-m", "tinyseek.cli", *args, "--out", str(tmp / "nodes")]  # fmt: skip
        agents.append(
            subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    try:
        outs = [a.communicate(timeout=600) for a in agents]
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()
                a.wait()
    for a, (_, err) in zip(agents, outs):
        assert a.returncode == 0, err[-3000:]
    assert sum(out.count("done:") for out, _ in outs) == 1  # one job: one rank 0
    _matches_one(tmp, tmp / "nodes")
    assert json.loads((tmp / "nodes" / "summary.json").read_text())["cost"]["n_devices"] == 2


def test_fsdp_killed_then_resumed_on_another_world_size_matches_one_process(pretrain_one):
    """FSDP2 on 2 processes until SIGKILL right after its step-3 sharded checkpoint, then --resume on 1 process."""
    from safetensors.torch import load_file

    tmp, args = pretrain_one
    run = tmp / "fsdp"
    # evaluation every step (100 held-out batches, no effect on training) slows each step down, so the kill lands
    # well before the step-6 checkpoint
    slow = ["--eval-every", "1", "--eval-batches", "100"]
    cmd = [*TORCHRUN, "--nproc-per-node", "2", "-m", "tinyseek.cli", *args, *slow, "--parallel", "fsdp"]
    p = subprocess.Popen(
        [*cmd, "--out", str(run)], env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 300
    while not (run / "checkpoints" / "step-3").exists():
        assert p.poll() is None, p.stderr.read().decode()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    for q in [*_children(p.pid), p.pid]:  # the workers (their own sessions), then the agent
        os.kill(q, signal.SIGKILL)
    p.wait()
    step3 = run / "checkpoints" / "step-3"
    assert (step3 / "dcp" / ".metadata").is_file() and not (step3 / "model.safetensors").exists()
    assert not (run / "checkpoints" / "step-6").exists()
    # resume on one process: DCP reshards the two ranks' shards onto the unsharded model and optimizer
    res = _run([sys.executable, "-m", "tinyseek.cli", *args, "--parallel", "fsdp", "--resume", "--out", str(run)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from" in res.stdout and "step-3 (step 3)" in res.stdout
    r1, rf = _metrics(tmp / "one"), _metrics(run)
    assert [r["step"] for r in rf] == list(range(1, 7))  # steps 1-3 from the killed 2-process run, 4-6 resumed
    for a, b in zip(r1, rf):
        assert b["tokens"] == a["tokens"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
    one_final = load_file(tmp / "one" / "final" / "model.safetensors")
    _close_weights(one_final, load_file(run / "final" / "model.safetensors"))
    # the 2-process sharded checkpoint -> the ordinary format (= the 1-process run's step-3) -> transformers
    c = _run([sys.executable, "-m", "tinyseek.cli", "consolidate", str(step3), "--out", str(tmp / "step3")])
    assert c.returncode == 0, c.stderr
    _close_weights(
        load_file(tmp / "one" / "checkpoints" / "step-3" / "model.safetensors"),
        load_file(tmp / "step3" / "model.safetensors"),
    )
    e = _run([sys.executable, "-m", "tinyseek.cli", "export", str(tmp / "step3"), "--out", str(tmp / "hf")])
    assert e.returncode == 0, e.stderr
    import transformers

    import tinyseek

    ours = tinyseek.load_model(tmp / "step3")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp / "hf")
    tokens = torch.randint(0, ours.cfg.vocab_size, (2, 24))
    with torch.no_grad():
        assert (ours(tokens).logits - theirs(tokens).logits).abs().max() < 1e-4


def test_elastic_restart_after_a_rank_is_killed_resumes_and_matches_one_process(pretrain_one):
    """`torchrun --max-restarts 1` with `--resume` in the command: rank 1 is SIGKILLed right after the step-3
    checkpoint (ordinary, DDP); the agent restarts both workers, they resume from step 3, and the run ends where the
    uninterrupted 1-process run ends."""
    from safetensors.torch import load_file

    tmp, args = pretrain_one
    run = tmp / "elastic"
    slow = ["--eval-every", "1", "--eval-batches", "100"]  # (as in the FSDP kill test: the kill lands before step 6)
    cmd = [*TORCHRUN, "--nproc-per-node", "2", "--max-restarts", "1", "-m", "tinyseek.cli", *args, *slow]
    res = _elastic([*cmd, "--resume", "--out", str(run)], run / "checkpoints" / "step-3", rank=1)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "no checkpoint" in res.stdout and res.stdout.count("resumed from") == 1
    assert f"resumed from {run / 'checkpoints' / 'step-3'} (step 3)" in res.stdout
    r1, re_ = _metrics(tmp / "one"), _metrics(run)
    assert [r["step"] for r in re_] == list(range(1, 7))
    for a, b in zip(r1, re_):
        assert b["tokens"] == a["tokens"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
    _close_weights(
        load_file(tmp / "one" / "final" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    )


def test_a_restart_on_torchruns_shared_store_is_refused_in_one_line(monkeypatch):
    """Restarted workers on the rendezvous store the agent shares (torch's default) would read the dead workers'
    gloo addresses and wait 30 minutes; they stop at once, naming the setting that avoids it."""
    from tinyseek.dist import init_distributed
    from tinyseek.errors import TinyseekError

    env = {"WORLD_SIZE": "2", "RANK": "1", "TORCHELASTIC_RESTART_COUNT": "1", "TORCHELASTIC_USE_AGENT_STORE": "True"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(TinyseekError, match="TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"):
        init_distributed("cpu")
    assert not torch.distributed.is_initialized()


@pytest.fixture(scope="module")
def stage_runs(tmp_path_factory, r1_checkpoint):
    """tests/dist_stages.py on one process and under a 2-process torchrun, on the R1 checkpoint (MoE + MTP)."""
    from conftest import R1_CHATS

    tmp = tmp_path_factory.mktemp("stages")
    data = tmp / "data"
    data.mkdir()
    answers = ["5", "Hi there!", "8"]
    with open(data / "prompts.jsonl", "w") as f:
        for (u, _), a in zip(R1_CHATS, answers):
            f.write(json.dumps({"prompt": u, "answer": a}) + "\n")
    with open(data / "traces.jsonl", "w") as f:
        for (u, c), a in zip(R1_CHATS, answers):
            f.write(json.dumps({"prompt": u, "completion": c, "answer": a}) + "\n")
    script = str(ROOT / "tests" / "dist_stages.py")
    one = _run([sys.executable, script, str(tmp / "one"), str(r1_checkpoint), str(data)])
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run([*TORCHRUN, "--nproc-per-node", "2", script, str(tmp / "two"), str(r1_checkpoint), str(data)])
    assert two.returncode == 0, two.stderr[-3000:]
    return tmp / "one", tmp / "two", two


def test_bad_world_size_stops_every_rank_with_one_line(stage_runs):
    two = stage_runs[2]
    line = "tinyseek grpo: error: GrpoConfig: batch_size: 3 is not a multiple of the number of processes, 2"
    assert two.stderr.count(line) == 2  # both ranks, one line each
    assert not (stage_runs[1] / "bad").exists()


def test_sft_and_distill_under_torchrun_match_one_process(stage_runs):
    one, two, _ = stage_runs
    from safetensors.torch import load_file

    for stage in ("sft", "distill"):
        r1, r2 = _metrics(one / stage), _metrics(two / stage)
        assert len(r1) == len(r2) == 2
        for a, b in zip(r1, r2):
            # the same examples (tokens processed differ: each rank pads its own micro-batch)
            assert b["loss_tokens"] == a["loss_tokens"]
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
        if stage == "distill":
            assert b["kd"] == pytest.approx(a["kd"], rel=1e-4)
        _close_grads(one / "grads" / f"{stage}.pt", two / "grads" / f"{stage}.pt")
        _close_weights(
            load_file(one / stage / "final" / "model.safetensors"),
            load_file(two / stage / "final" / "model.safetensors"),
        )


@pytest.mark.parametrize("variant", ["grpo", "grpo-fsdp", "grpo-ep"])
def test_grpo_under_torchrun_gives_the_same_rollouts_rewards_and_updates(stage_runs, variant):
    """The issue's failure (MoE + MTP checkpoint, accuracy + format rewards, 2 processes) runs to the end, with the
    1-process rollouts and rewards step by step, under DDP, FSDP2 and expert parallelism (two threads a process).
    Every step updates (two updates a batch, sampler log-probs as the old ones, a KL penalty), with every
    parameter's gradient equal to one process's, and at a learning rate where a wrong update shows in the weights."""
    one, two, _ = stage_runs
    from safetensors.torch import load_file

    r1, r2 = _metrics(one / "grpo"), _metrics(two / variant)
    assert [r["step"] for r in r2] == [1, 2]
    for a, b in zip(r1, r2):
        assert a["seqs_updated"] > 0 and a["loss"] is not None  # the test's strength: every step trains
        for k in ("reward", "reward_accuracy", "reward_format", "accuracy", "len_mean", "seqs_updated", "tokens"):
            assert b[k] == a[k], k  # the same completions, scored the same
        assert b["rollout_flops"] == pytest.approx(a["rollout_flops"], rel=1e-12)
        for k, rel in (("loss", 1e-4), ("grad_norm", 1e-3), ("entropy", 1e-4), ("kl", 1e-3)):
            assert b[k] == pytest.approx(a[k], rel=rel, abs=1e-6), k
        for k in ("clip_low", "clip_high"):
            assert b[k] == pytest.approx(a[k], abs=1e-6), k
    assert r1[0]["kl"] > 0 and r1[0]["clip_low"] + r1[0]["clip_high"] > 0  # the second update is off-policy
    _close_grads(one / "grads" / "grpo.pt", two / "grads" / f"{variant}.pt")
    for k in ("eval_greedy", "eval_pass1", "eval_format_rate", "eval_len_mean"):
        assert r2[-1][k] == r1[-1][k], k
    s1 = (one / "grpo" / "samples" / "step-2.jsonl").read_text()
    assert (two / variant / "samples" / "step-2.jsonl").read_text() == s1  # rank 0 wrote the whole batch's samples
    _close_weights(
        load_file(one / "grpo" / "final" / "model.safetensors"),
        load_file(two / variant / "final" / "model.safetensors"),
    )
    sharded = (two / variant / "checkpoints" / "step-2" / "dcp").is_dir()
    assert sharded == (variant != "grpo")


def test_expert_parallel_grpo_resumes_on_one_process(stage_runs, r1_checkpoint, tmp_path):
    """The 2-process EP run's step-1 sharded checkpoint (each rank holding half the experts) resumed on one process
    (no EP): DCP reshards it, and the resumed step 2 is the one-process run's step 2."""
    import shutil

    from dist_stages import grpo_argv
    from safetensors.torch import load_file

    one, two, _ = stage_runs
    run = tmp_path / "grpo-ep"
    shutil.copytree(two / "grpo-ep", run)
    for p in (run / "checkpoints" / "step-2", run / "final"):  # as if the run had been killed after step 1
        shutil.rmtree(p)
    assert (run / "checkpoints" / "step-1" / "dcp" / ".metadata").is_file()
    args = grpo_argv(str(r1_checkpoint), str(one.parent / "data"))
    env = {**ENV, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}  # the reward dist_stages:char_code
    res = _run([sys.executable, "-m", "tinyseek.cli", *args, "--ep", "1", "--resume", "--out", str(run)], env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "step-1 (step 1)" in res.stdout
    r1, rr = _metrics(one / "grpo"), _metrics(run)
    assert [r["step"] for r in rr] == [1, 2]
    for k in ("reward", "seqs_updated", "tokens"):
        assert rr[1][k] == r1[1][k], k
    for k in ("loss", "grad_norm", "kl"):
        assert rr[1][k] == pytest.approx(r1[1][k], rel=1e-3, abs=1e-6), k
    _close_weights(
        load_file(one / "grpo" / "final" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    )


def test_elastic_restart_of_fsdp_grpo_after_rank_0_is_killed(stage_runs, r1_checkpoint, tmp_path):
    """GRPO under FSDP2 (sharded DCP checkpoints) with `torchrun --max-restarts 1 ... --resume`: rank 0 is SIGKILLed
    right after the step-1 checkpoint; the restarted workers reshard it and end where the 1-process run ends."""
    from dist_stages import grpo_argv
    from safetensors.torch import load_file

    one = stage_runs[0]
    run = tmp_path / "grpo-elastic"
    env = {**ENV, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}  # the reward dist_stages:char_code
    args = grpo_argv(str(r1_checkpoint), str(one.parent / "data"))
    cmd = [*TORCHRUN, "--nproc-per-node", "2", "--max-restarts", "1", "-m", "tinyseek.cli", *args, "--parallel", "fsdp"]
    res = _elastic([*cmd, "--resume", "--out", str(run)], run / "checkpoints" / "step-1", rank=0, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed from {run / 'checkpoints' / 'step-1'} (step 1)" in res.stdout
    assert (run / "checkpoints" / "step-2" / "dcp").is_dir()
    r1, re_ = _metrics(one / "grpo"), _metrics(run)
    assert [r["step"] for r in re_] == [1, 2]
    for a, b in zip(r1, re_):
        for k in ("reward", "seqs_updated", "tokens"):
            assert b[k] == a[k], k
        for k in ("loss", "grad_norm", "kl"):
            assert b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-6), k
    _close_weights(
        load_file(one / "grpo" / "final" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    )


def test_the_cost_meter_counts_what_every_rank_runs(stage_runs):
    """Under torchrun every rank trains the PRM on the whole batch and scores every rollout with it: the meter counts
    each rank's; the no-grad reference forwards (beta > 0) are shared out like the update: counted once."""
    one, two, _ = stage_runs
    p1, p2 = _metrics(one / "prm"), _metrics(two / "prm")
    for a, b in zip(p1, p2):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["tokens"] == 2 * a["tokens"]
    assert p2[-1]["total_flops"] == pytest.approx(2 * p1[-1]["total_flops"], rel=1e-9)
    (a,), (b,) = _metrics(one / "grpo-prm"), _metrics(two / "grpo-prm")
    assert b["reward"] == a["reward"] and b["prm_score"] == pytest.approx(a["prm_score"], rel=1e-5)
    assert a["prm_flops"] > 0 and b["prm_flops"] == pytest.approx(2 * a["prm_flops"], rel=1e-9)
    assert b["prm_train_flops"] == pytest.approx(2 * a["prm_train_flops"], rel=1e-9)
    assert a["fixed_logprob_flops"] > 0 and b["fixed_logprob_flops"] == pytest.approx(a["fixed_logprob_flops"])
    assert b["total_flops"] == pytest.approx(a["total_flops"] + a["prm_flops"], rel=1e-9)
    for variant in ("grpo", "grpo-fsdp", "grpo-ep"):  # no PRM: the same meter on one and on two processes
        assert _metrics(two / variant)[-1]["total_flops"] == pytest.approx(
            _metrics(one / "grpo")[-1]["total_flops"], rel=1e-9
        )


def test_sample_and_eval_under_torchrun_match_one_process(stage_runs):
    one, two, proc = stage_runs
    assert (two / "sample.jsonl").read_text() == (one / "sample.jsonl").read_text()
    e1 = json.loads((one / "eval" / "eval.json").read_text())
    e2 = json.loads((two / "eval" / "eval.json").read_text())
    assert e2["problems"] == e1["problems"] and e2["pass@1"] == e1["pass@1"]
    assert proc.stdout.count("sample: kept") == 1 and proc.stdout.count("eval.json") == 1  # rank 0 alone


def test_expert_parallel_equals_the_single_process_moe_on_four_ranks():
    ep = _run([*TORCHRUN, "--nproc-per-node", "4", str(ROOT / "tests" / "dist_checks.py"), "ep"])
    assert ep.returncode == 0, ep.stderr[-3000:]
    for line in ("ok ep=2 world=4 moe_impl=sorted", "ok ep=4 world=4 moe_impl=loop", "ok bad layouts"):
        assert line in ep.stdout


def test_expert_parallel_with_two_threads_and_small_unequal_forwards():
    """Two threads a process: a 2-token forward takes MoE's dense branch on one rank while the other rank's larger
    batch takes the sorted one; both dispatch (all_to_all) and equal the single-process MoE. moe_impl = dense with
    ep > 1 is refused in one line."""
    ep = _run([*TORCHRUN, "--nproc-per-node", "2", str(ROOT / "tests" / "dist_checks.py"), "ep-threads"])
    assert ep.returncode == 0, ep.stderr[-3000:]
    for line in ("ok ep=2 world=2 moe_impl=sorted", "ok ep=2 world=2 moe_impl=loop", "ok bad layouts"):
        assert line in ep.stdout
