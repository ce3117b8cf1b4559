"""The shared loop and the pretrain/SFT stages: schedule, decay groups, the non-finite guard, learning,
bitwise resume after kill -9, the throughput/cost outputs, checkpoints that load and export, config errors."""

import collections
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tinyseek.config import ConfigError, ModelConfig, from_dict
from tinyseek.model import Transformer
from tinyseek.tokenizer import Tokenizer
from tinyseek.train.loop import (
    Loop,
    TrainConfig,
    TrainingStopped,
    build_optimizer,
    latest_checkpoint,
    lr_at,
    seed_everything,
)
from tinyseek.train.pretrain import PretrainConfig, prepare
from tinyseek.train.pretrain import run as run_pretrain
from tinyseek.train.sft import SFTConfig
from tinyseek.train.sft import run as run_sft

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny ops, one torch thread


@pytest.fixture(scope="module")
def tok_file(tmp_path_factory):
    from tinyseek.data import task_documents

    tok = Tokenizer.train(task_documents({"addition": 300}, seed=0, split="train"), 300)
    return str(tok.save(tmp_path_factory.mktemp("tok")))


def _pre(**kw):
    base = dict(
        tasks={"addition": 400},
        seq_len=32,
        batch_size=8,
        max_steps=6,
        warmup_steps=2,
        threads=1,
        progress=False,
        model={"dim": 32, "inter_dim": 64, "moe_inter_dim": 16},
    )
    return from_dict(PretrainConfig, {**base, **kw})


def test_lr_schedule():
    cfg = TrainConfig(lr=1.0, warmup_steps=4, max_steps=20, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(20)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))  # monotone decay after warmup
    assert lr_at(20, cfg) == pytest.approx(0.1) and lr_at(12, cfg) == pytest.approx(0.55)


def test_weight_decay_only_on_matrices():
    m = Transformer(ModelConfig.preset("nano"))
    opt = build_optimizer(m, TrainConfig(weight_decay=0.1))
    names = {id(p): n for n, p in m.named_parameters()}
    decay = {names[id(p)] for p in opt.param_groups[0]["params"]}
    no_decay = {names[id(p)] for p in opt.param_groups[1]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
    assert decay | no_decay == set(names.values()) and not decay & no_decay
    assert "embed.weight" in no_decay and "norm.weight" in no_decay
    assert all("norm" in n or n == "embed.weight" for n in no_decay)
    assert "layers.0.attn.wkv_a.weight" in decay and "layers.1.ffn.experts.w1" in decay
    assert not any(n.endswith("gate.bias") for n in names.values())  # the MoE correction bias is a buffer


class _NaNStage:
    """Real batches; the extra loss is NaN on the chosen steps. Records the weights after every step."""

    def __init__(self, bad: set[int]):
        self.bad, self.i, self.weights = bad, 0, []

    def train_step(self, loop):
        g = torch.Generator().manual_seed(self.i)
        x = torch.randint(0, 64, (loop.cfg.batch_size, 17), generator=g)
        step = self.i
        self.i += 1

        def extra(out, mb):
            v = torch.tensor(float("nan") if step in self.bad else 0.0)
            return v, {"extra": v.item()}

        m = loop.supervised_step([{"tokens": x[:, :-1], "targets": x[:, 1:]}], extra_loss=extra)
        self.weights.append({k: v.clone() for k, v in loop.raw_model.state_dict().items()})
        return m


def test_nonfinite_steps_are_skipped_then_stop(tmp_path):
    seed_everything(0)
    model = Transformer(ModelConfig.preset("nano", vocab_size=64))
    cfg = TrainConfig(max_steps=10, batch_size=4, max_bad_steps=3, progress=False, warmup_steps=1)
    stage = _NaNStage(bad={1, 4, 5, 6})
    loop = Loop(cfg, model, tmp_path / "run", stage_name="t")
    with pytest.raises(TrainingStopped, match=r"3 non-finite steps in a row \(steps 5-7\)") as e:
        loop.run(stage)
    assert "\n" not in str(e.value)
    w = stage.weights
    assert not torch.equal(w[0]["layers.0.attn.wo.weight"], w[2]["layers.0.attn.wo.weight"])
    for a, b in [(0, 1), (3, 4), (3, 5), (3, 6)]:  # a skipped step changes nothing (biases included)
        assert all(torch.equal(w[a][k], w[b][k]) for k in w[a]), (a, b)
    assert loop.bad_steps == 4
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in recs] == [0, 1, 0, 0, 1, 1, 1]
    assert recs[1]["loss"] is None  # strict JSON: NaN written as null
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt.name == "step-7"
    from tinyseek import load_model

    saved = load_model(ckpt).state_dict()
    assert all(torch.equal(saved[k], w[3][k]) for k in saved)  # the last good weights


def test_padded_batches_move_the_moe_biases_by_real_tokens_only(tmp_path):
    """A right-padded SFT-style batch: the step's expert load counts real tokens (not padding), and
    `bias_update_speed = 0` (GRPO's default) leaves the balancing biases where they were."""
    from tinyseek.data import collate

    seed_everything(0)
    lens = [17, 6, 11, 3]
    g = torch.Generator().manual_seed(3)
    batch = collate([(torch.randint(1, 64, (n,), generator=g).tolist(),) * 2 for n in lens], pad_id=0)
    for speed, moves in ((None, True), (0.0, False)):
        model = Transformer(ModelConfig.preset("nano", vocab_size=64, mtp_depth=0))
        cfg = TrainConfig(max_steps=1, batch_size=4, progress=False, bias_update_speed=speed)
        loop = Loop(cfg, model, tmp_path / f"run-{speed}", stage_name="t")
        before = [moe.gate.bias.clone() for moe in model.moe_blocks]
        m = loop.supervised_step([batch])
        real_tokens = sum(n - 1 for n in lens)  # collate shifts: n ids give n - 1 positions
        assert m["expert_load"].sum(-1).eq(real_tokens * model.cfg.n_activated_experts).all()
        moved = any(not torch.equal(b, moe.gate.bias) for b, moe in zip(before, model.moe_blocks))
        assert moved == moves


@pytest.mark.slow
def test_pretrain_loss_falls_well_below_unigram_entropy(tmp_path):
    cfg = from_dict(
        PretrainConfig,
        dict(
            tasks={"addition": 2000},
            vocab_size=300,
            seq_len=64,
            batch_size=16,
            max_steps=80,
            warmup_steps=5,
            threads=1,
            progress=False,
        ),
    )
    _, stream, _ = prepare(cfg, tmp_path, False)
    counts = collections.Counter(t for d in stream.docs for t in d)
    n = sum(counts.values())
    unigram = -sum(c / n * math.log(c / n) for c in counts.values())  # nats/token of the best context-free model
    t0 = time.perf_counter()
    s = run_pretrain(cfg, tmp_path / "run")
    assert s["eval"]["eval_ce"] < 0.7 * unigram, (s["eval"], unigram)
    print(
        f"nano pretrain: {time.perf_counter() - t0:.1f} s, held-out CE {s['eval']['eval_ce']:.3f} vs unigram "
        f"{unigram:.3f}"
    )
    # auxiliary-loss-free balancing moved the correction biases
    from tinyseek import load_model

    m = load_model(tmp_path / "run" / "final")
    assert any(b.abs().sum() > 0 for n_, b in m.state_dict().items() if n_.endswith("gate.bias"))


def _cli(args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "tinyseek.cli", *args],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted_run(tmp_path, tok_file):
    args = [
        "pretrain",
        "--tasks",
        "addition=400",
        "--tokenizer",
        tok_file,
        "--seq-len",
        "32",
        "--batch-size",
        "8",
        "--max-steps",
        "40",
        "--ckpt-every",
        "5",
        "--threads",
        "1",
        "--model.dim",
        "32",
        "--model.inter_dim",
        "64",
        "--eval-every",
        "10",
        "--keep-last",
        "2",
    ]
    a = _cli([*args, "--out", str(tmp_path / "a")])
    out, err = a.communicate(timeout=300)
    assert a.returncode == 0, err
    b = _cli([*args, "--out", str(tmp_path / "b")])
    deadline = time.time() + 240
    while latest_checkpoint(tmp_path / "b") is None or latest_checkpoint(tmp_path / "b").name == "step-5":
        assert b.poll() is None and time.time() < deadline, "run finished (or died) before it could be killed"
        time.sleep(0.05)
    b.send_signal(signal.SIGKILL)
    b.wait()
    assert not (tmp_path / "b" / "summary.json").exists()
    killed_at = int(latest_checkpoint(tmp_path / "b").name[5:])
    assert 10 <= killed_at < 40
    c = _cli(["pretrain", "--out", str(tmp_path / "b"), "--resume"])  # config from RUN/config.toml
    out, err = c.communicate(timeout=300)
    assert c.returncode == 0, err
    assert f"resumed from {tmp_path / 'b' / 'checkpoints'}" in out
    ra = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rb] == list(range(1, 41))
    assert [r["loss"] for r in ra] == [r["loss"] for r in rb]  # bitwise, every step
    assert [r.get("eval_loss") for r in ra] == [r.get("eval_loss") for r in rb]
    from safetensors.torch import load_file

    wa, wb = (
        load_file(tmp_path / "a" / "final" / "model.safetensors"),
        load_file(tmp_path / "b" / "final" / "model.safetensors"),
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert len(list((tmp_path / "b" / "checkpoints").iterdir())) == 2  # keep_last


def test_tiny_pretrain_cli_reports_throughput_and_cost(tmp_path, capsys, tok_file):
    from tinyseek.cli import main

    cfg = tmp_path / "p.toml"
    cfg.write_text(
        f'preset = "tiny"\ntokenizer = "{tok_file}"\nseq_len = 64\nbatch_size = 4\nmax_steps = 3\nthreads = 1\n'
        f"[tasks]\naddition = 200\n",
        encoding="utf-8",
    )
    assert main(["pretrain", "--config", str(cfg), "--out", str(tmp_path / "run"), "--gpu-hour-price", "3"]) == 0
    out = capsys.readouterr().out
    assert "tok/s" in out and "MFU" in out and "$" in out and "tokens/s" in out
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 3
    for r in recs:
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 and r["cost_usd"] > 0 and r["total_flops"] > 0
        assert len(r["moe_maxvio"]) == ModelConfig.preset("tiny").n_moe_layers + 1  # + the MTP block
        assert {"ce", "mtp_loss", "aux", "grad_norm", "lr", "elapsed_s"} <= set(r)
    # TensorBoard events (the `tb` extra, in the dev extras): the metrics' scalars at their steps
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("loss")] == [
        (r["step"], round(r["loss"], 4)) for r in recs
    ]
    assert {"grad_norm", "lr", "tokens_per_s"} <= set(events.Tags()["scalars"])
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    from tinyseek import cost, precision

    # dtype = "auto" (the default): decided for this machine, printed with it, recorded in the summary
    assert s["dtype"] == precision.resolve_dtype("auto") and f"precision: {s['dtype']}" in out
    assert precision.machine_line() in out

    tiny = ModelConfig.preset("tiny", vocab_size=Tokenizer.load(tok_file).vocab_size)
    assert s["cost"]["flops"] == pytest.approx(cost.train_flops_per_token(tiny, 64) * 3 * 4 * 64)
    assert s["cost"]["device_hours"] == pytest.approx(s["cost"]["elapsed_s"] / 3600)
    assert s["cost"]["cost_usd"] == pytest.approx(s["cost"]["device_hours"] * 0.05)  # CPU price (GPU price unused here)
    resolved = (tmp_path / "run" / "config.toml").read_text()
    assert "gpu_hour_price = 3.0" in resolved and "[model]" in resolved
    # the final checkpoint loads and exports, tokenizer included
    from tinyseek import load_model

    m = load_model(tmp_path / "run" / "final")
    assert m.cfg.dim == 256 and (tmp_path / "run" / "final" / "tokenizer.json").is_file()
    assert main(["export", str(tmp_path / "run" / "final"), "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "config.json").is_file()
    from transformers import AutoTokenizer

    msgs = [{"role": "user", "content": "12+7="}]
    hf_tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == Tokenizer.load(
        tok_file
    ).chat(msgs)


def test_sft_from_pretrained_checkpoint(tmp_path):
    run_pretrain(_pre(), tmp_path / "pre")
    cfg = from_dict(
        SFTConfig,
        dict(
            init=str(tmp_path / "pre" / "final"),
            tasks={"addition": 64},
            batch_size=8,
            max_steps=4,
            seq_len=64,
            threads=1,
            progress=False,
            eval_batches=1,
        ),
    )
    s = run_sft(cfg, tmp_path / "sft")
    assert s["steps"] == 4 and math.isfinite(s["eval"]["eval_loss"])
    r = json.loads((tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 < r["loss_tokens"] < r["tokens"]  # only the completions carry loss
    assert (tmp_path / "sft" / "final" / "tokenizer.json").is_file()


@pytest.mark.parametrize(
    "toml,flags,match",
    [
        ('lr = "fast"\n', [], r"p\.toml: lr: expected a number"),
        ("bogus = 1\n", [], r"p\.toml: unknown field 'bogus'"),
        ("max_steps = 0\n", [], r"max_steps: must be >= 1"),
        ("lr = 0.1\n", ["--batch-size", "6", "--grad-accum", "4"], r"batch_size: must be a multiple of grad_accum=4"),
        ("lr = 0.1\nlr = 0.2\n", [], r"p\.toml: .*line 2"),
        ("[model]\ndim = -1\n", [], r"dim: must be positive"),
        ("lr = 0.1\n", ["--tasks", "arithmetic"], r"--tasks: expected name=value"),
        ("seq_len = 1000\n", [], r"seq_len: 1000 is longer than the model's max_seq_len 256"),
    ],
)
def test_bad_configs_give_one_line_errors(tmp_path, capsys, toml, flags, match):
    from tinyseek.cli import main

    (tmp_path / "p.toml").write_text(
        toml + "tasks = {addition = 20}\n" if "[model]" not in toml else "tasks = {addition = 20}\n" + toml,
        encoding="utf-8",
    )
    assert main(["pretrain", "--config", str(tmp_path / "p.toml"), "--out", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tinyseek pretrain: error:")
    import re

    assert re.search(match, err), err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_sft_bad_data_names_file_and_line(tmp_path, capsys):
    from tinyseek.cli import main

    run_pretrain(_pre(max_steps=1), tmp_path / "pre")
    (tmp_path / "d.jsonl").write_text(
        '{"prompt": "a", "completion": "b"}\n{"prompt": 3, "completion": "b"}\n', encoding="utf-8"
    )
    assert (
        main(
            [
                "sft",
                "--init",
                str(tmp_path / "pre" / "final"),
                "--data",
                str(tmp_path / "d.jsonl"),
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert (
        err.endswith("d.jsonl:2: field 'prompt' must be a string or a list of messages") and len(err.splitlines()) == 1
    )


def test_example_configs_parse():
    from tinyseek.config import load_file

    p = load_file(PretrainConfig, ROOT / "recipes" / "pretrain-tiny.toml")
    s = load_file(SFTConfig, ROOT / "recipes" / "sft-tiny.toml")
    assert p.preset == "tiny" and p.tasks["addition"] > 0 and s.init.endswith("final") and s.lr == 1e-3


def test_bf16_autocast_agrees_with_fp32(tmp_path):
    """The bf16 compute path (autocast, fp32 master weights) against the fp32 reference: same first losses
    to bf16 precision, and the master weights stay float32."""
    losses = {}
    for dt in ("float32", "bfloat16"):
        s = run_pretrain(_pre(dtype=dt, max_steps=3), tmp_path / dt)
        recs = [json.loads(line) for line in (tmp_path / dt / "metrics.jsonl").read_text().splitlines()]
        losses[dt] = [r["loss"] for r in recs]
        assert s["steps"] == 3
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=2e-2)
    assert losses["bfloat16"] != losses["float32"]  # the switch really changed the arithmetic
    from safetensors.torch import load_file

    assert all(
        v.dtype == torch.float32 for v in load_file(tmp_path / "bfloat16" / "final" / "model.safetensors").values()
    )


def test_pretrain_corpus_mixes_tasks_and_text_with_held_out_documents(tmp_path, tok_file):
    paras = [f"paragraph {i} 你好 with some words" for i in range(40)]
    (tmp_path / "t.txt").write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    cfg = _pre(
        tasks={"addition": 30},
        eval_tasks={"addition": 7},
        text_files=[str(tmp_path / "t.txt")],
        eval_text_every=4,
        tokenizer=tok_file,
        eval_batches=1,
    )
    tok, stream, eval_batches = prepare(cfg, tmp_path, False)
    texts = [tok.decode(d[1:-1]) for d in stream.docs]
    assert len(stream.docs) == 30 + 30 and sum(t.startswith("paragraph") for t in texts) == 30
    held = {f"paragraph {i} 你好 with some words" for i in range(3, 40, 4)}
    assert not held & set(texts)  # held-out paragraphs never reach training
    assert len(eval_batches) == 1 and eval_batches[0]["tokens"].shape == (8, 32)


def test_fresh_run_in_an_old_run_directory_replaces_it(tmp_path, tok_file, capsys):
    run_pretrain(_pre(tokenizer=tok_file, max_steps=4, ckpt_every=2), tmp_path / "run")
    assert latest_checkpoint(tmp_path / "run").name == "step-4"
    s = run_pretrain(_pre(tokenizer=tok_file, max_steps=2, seed=1), tmp_path / "run")
    assert "held an earlier run" in capsys.readouterr().out
    assert s["steps"] == 2 and latest_checkpoint(tmp_path / "run").name == "step-2"
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-2"]
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_sft_stops_when_validation_accuracy_reaches_the_target(tmp_path, capsys):
    """stop_accuracy: the run ends at the first check whose greedy accuracy reaches it, says so, and a --resume
    of the stopped run does not train on."""
    from conftest import R1_CHATS

    rows = [{"prompt": u, "completion": c, "answer": c.split("<answer>")[1].split("</answer>")[0]} for u, c in R1_CHATS]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = Tokenizer.train([u + " " + c for u, c in R1_CHATS] * 5, 300)
    tok_file = tok.save(tmp_path / "tok")
    fields = dict(
        preset="nano",
        tokenizer=str(tok_file),
        data=[str(data)] * 8,
        batch_size=6,
        max_steps=400,
        lr=1e-2,
        warmup_steps=0,
        seq_len=64,
        threads=1,
        progress=False,
        eval_every=10,
        eval_batches=1,
        stop_data=str(data),
        stop_accuracy=1.0,
    )
    s = run_sft(from_dict(SFTConfig, fields), tmp_path / "sft")
    recs = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    checks = [r["stop_check_accuracy"] for r in recs if "stop_check_accuracy" in r]
    assert s["stopped_early"] and s["steps"] < 400 and s["steps"] % 10 == 0
    assert checks[-1] == 1.0 and all(c < 1.0 for c in checks[:-1])
    assert "sft: stopping at step" in capsys.readouterr().out
    assert (tmp_path / "sft" / "final" / "model.safetensors").is_file()
    again = run_sft(from_dict(SFTConfig, fields), tmp_path / "sft", resume=True)
    assert again["steps"] == s["steps"]  # the stopped run stays stopped
    with pytest.raises(ConfigError, match="stop_accuracy: needs stop_data"):
        from_dict(SFTConfig, {**fields, "stop_data": ""}).validate()


class _FlopsStage:
    """No update at all: each step reports 10 FLOPs of "extra" compute; evaluation records when it ran."""

    def __init__(self):
        self.evaluated = []

    def train_step(self, loop):
        return {"loss": 0.0, "tokens": 0, "extra_flops": 10.0}

    def evaluate(self, loop):
        self.evaluated.append(loop.step)
        return {}


def _flops_loop(tmp_path, prior: float, **fields):
    """A loop whose steps each cost 10 FLOPs (_FlopsStage), with `prior` FLOPs spent before it."""
    model = Transformer(ModelConfig.preset("nano", vocab_size=64))
    loop = Loop(TrainConfig(max_steps=100, batch_size=4, progress=False, **fields), model, tmp_path / "run")
    loop.flops_per_token = 0.0
    loop.prior_flops = prior
    return loop, _FlopsStage()


@pytest.mark.parametrize("prior,last", [(0.0, 4), (15.0, 2)])
def test_a_compute_budget_stops_the_run_after_the_step_that_spends_it(tmp_path, prior, last):
    """max_flops: the step whose FLOPs reach the budget is the last (and is evaluated); FLOPs another stage spent
    for this run (prior_flops: a PRM's training) count against the budget but not in this run's meter."""
    loop, stage = _flops_loop(tmp_path, prior, max_flops=35.0, eval_every=0)
    summary = loop.run(stage)
    assert summary["steps"] == last and stage.evaluated == [last]
    assert summary["cost"]["flops"] == 10.0 * last


@pytest.mark.parametrize("prior,at,last", [(0.0, 4, 7), (15.0, 2, 6)])
def test_a_run_past_a_common_budget_is_evaluated_where_it_reaches_it(tmp_path, prior, at, last):
    """eval_at_flops: the step whose FLOPs (prior included) first reach it is evaluated and marked, once; the run
    goes on to max_flops."""
    import json

    loop, stage = _flops_loop(tmp_path, prior, max_flops=70.0, eval_at_flops=35.0)
    assert loop.run(stage)["steps"] == last and stage.evaluated == [at, last]
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r.get("at_eval_flops")] == [at]


def test_auto_dtype_reaches_the_parallel_wrapper(monkeypatch, tmp_path):
    """dtype = "auto" is resolved before the model is wrapped: FSDP2 gets bf16 parameters exactly where the loop's
    autocast is bf16 (native bf16), and an explicit float32 never gets them."""
    from tinyseek import precision
    from tinyseek.train import parallel

    seen = []
    monkeypatch.setattr(parallel, "wrap_model", lambda m, par, ep, bf16, comp, d: seen.append(bf16) or m)
    for native in (True, False):
        monkeypatch.setattr(precision, "native_bf16", lambda device="cpu", n=native: n)
        for dtype in ("auto", "float32"):
            loop = Loop(TrainConfig(dtype=dtype, progress=False), torch.nn.Linear(2, 2), tmp_path / "run")
            assert (loop.dtype == "bfloat16") == seen[-1]
    assert seen == [True, False, False, False]
