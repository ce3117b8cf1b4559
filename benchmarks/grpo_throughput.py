"""GRPO throughput: tinyseek's GRPO stage against TRL's `GRPOTrainer`, same model, same prompts, same settings.

    .venv/bin/python benchmarks/grpo_throughput.py [--steps 2] [--threads 1] [--skip-trl] [--skip-tiny]

Both trainers get one small random Llama (dim 256, 4 layers, 4 heads, MLP 768, fp32; tinyseek drives the
transformers model through its HF adapter: HFEngine rollouts, log-probs from the decoder's hidden states
through lm_head in chunks), 16 arithmetic prompts per step, G = 8 completions each, exactly 64 new tokens
(EOS ignored / min_new_tokens = max), beta 0.04 (so both keep a frozen reference model and run it every
step), one update per rollout batch, AdamW. Printed: seconds per step and completions per second for each,
and tinyseek / TRL. Then tinyseek alone on its own `tiny` preset (8.3M MoE, MLA, through its own Engine).

The first step of each trainer is a warm-up and not timed (allocations, lazy imports). The machine is
shared: run both in the same invocation and read the ratio, not the absolute figures.

The fp32 compute bound: a step's model FLOPs (rollout: one forward per prompt and generated token; update: the
reference forward and the policy's forward + backward over every prompt + completion token, 4 forwards' worth;
2 FLOPs per weight that multiplies an activation, attention's context term left out) divided by a measured
fp32 matmul peak on this machine (1024^3, the same threads). Both trainers do the same FLOPs, so the
fraction of that bound each reaches says how much a faster implementation could still win. The first line
names the machine (CPU model, torch's vector ISA, native bf16, threads).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

P, G, NEW, BETA = 16, 8, 64, 0.04


def build_tokenizer(tmp: Path):
    """tinyseek's BPE tokenizer on arithmetic texts, also written as a transformers tokenizer directory."""
    from tinyseek.tokenizer import Tokenizer, hf_tokenizer_files, task_texts

    tok = Tokenizer.train(task_texts(["arithmetic"], 2000), 512)
    f = tok.save(tmp / "tok")
    for name, text in hf_tokenizer_files(f).items():
        (tmp / "tok" / name).write_text(text, encoding="utf-8")
    from transformers import AutoTokenizer

    return tok, AutoTokenizer.from_pretrained(str(tmp / "tok"))


def build_llama(vocab: int, tok) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=768,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return LlamaForCausalLM(cfg).float()


def prompts(n_steps: int) -> list[dict]:
    from tinyseek import tasks

    return tasks.get("arithmetic").generate(P * n_steps, seed=0, split="train")


def reward_len(prompts, completions, **kw):
    """A cheap reward that varies within a group (so neither trainer skips the update)."""
    return [float(len(c) % 7) for c in completions]


# ----------------------------------------------------------------------------------------------


def run_trl(model_dir: Path, hf_tok, recs, steps: int, tmp: Path) -> tuple[float, float]:
    """Seconds and CPU-seconds (this process) per step of TRL's GRPOTrainer (steps after the first)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    times: list[tuple[float, float]] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t, self.c = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            times.append((time.perf_counter() - self.t, time.process_time() - self.c))

    ds = Dataset.from_list([{"prompt": r["prompt"]} for r in recs])
    args = GRPOConfig(
        output_dir=str(tmp / "trl"),
        per_device_train_batch_size=P * G,
        num_generations=G,
        max_completion_length=NEW,
        generation_kwargs={"min_new_tokens": NEW},
        beta=BETA,
        learning_rate=1e-5,
        max_steps=steps + 1,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        temperature=1.0,
        num_iterations=1,
        gradient_accumulation_steps=1,
        seed=0,
        disable_tqdm=True,
        model_init_kwargs={"dtype": torch.float32},
    )
    # TRL builds its reference model from the policy's path, so the policy is given as a saved directory
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=[reward_len],
        args=args,
        train_dataset=ds,
        processing_class=hf_tok,
        callbacks=[Clock()],
    )
    trainer.train()
    n = max(1, len(times) - 1)
    return sum(t for t, _ in times[1:]) / n, sum(c for _, c in times[1:]) / n


def run_tinyseek(policy, recs, steps: int, tmp: Path, name: str) -> tuple[float, float, dict]:
    """Seconds and CPU-seconds per step of tinyseek's GRPO stage (steps after the first), the last step's metrics."""
    from tinyseek.train.grpo import GrpoConfig, GrpoStage
    from tinyseek.train.loop import Loop

    cfg = GrpoConfig(
        model="bench",
        rewards=["grpo_throughput:reward_len"],
        batch_size=P,
        group_size=G,
        max_new_tokens=NEW,
        ignore_eos=True,
        beta=BETA,
        lr=1e-5,
        max_steps=steps + 1,
        prompt_template="raw",
        micro_batch=32,
        progress=False,
        sample_every=0,
        dynamic_sampling=False,
        dtype="float32",  # the comparison is at fp32 (the stage's default, auto, is bf16 where it is native)
    )
    cfg.validate()
    ref = copy.deepcopy(policy.module).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    loop = Loop(cfg, policy.module, tmp / name, stage_name="grpo", save_model=policy.save)
    stage = GrpoStage(cfg, policy, ref, tmp / name)

    class Fixed:
        def batch(self, step, n):
            return recs[step * n : (step + 1) * n]

        def heldout(self):
            return []

    stage.prompts = Fixed()
    times, cpu, m = [], [], {}
    for _ in range(steps + 1):
        t, c = time.perf_counter(), time.process_time()
        m = stage.train_step(loop)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        loop.step += 1
    return sum(times[1:]) / steps, sum(cpu[1:]) / steps, m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2, help="timed steps per trainer (after one warm-up step)")
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads (0 = torch's default; 1 is faster on a busy machine)"
    )
    ap.add_argument("--skip-trl", action="store_true", help="do not run TRL")
    ap.add_argument("--skip-tiny", action="store_true", help="do not run tinyseek on its own tiny preset")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # reward_len by import path
    from tinyseek.train.policy import HFPolicy, TinyseekPolicy

    tmp = Path(tempfile.mkdtemp(prefix="grpo-bench-"))
    tok, hf_tok = build_tokenizer(tmp)
    recs = prompts(a.steps + 1)
    base = build_llama(tok.vocab_size, hf_tok)
    n_params = sum(p.numel() for p in base.parameters())
    from tinyseek import cost
    from tinyseek.precision import machine_line

    print(f"machine: {machine_line()}")
    print(
        f"random Llama {n_params / 1e6:.2f}M params (vocab {tok.vocab_size}), {P} prompts x G={G}, {NEW} new tokens, "
        f"beta {BETA}, fp32, torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs"
    )
    results = {}
    policy = HFPolicy(copy.deepcopy(base), hf_tok)
    s, s_cpu, m = run_tinyseek(policy, recs, a.steps, tmp, "ts-llama")
    results["tinyseek (Llama via HF adapter)"] = s
    # the fp32 compute bound of one step (see the module docstring)
    peak = cost.measure_matmul_peak("cpu", torch.float32, n=1024, seconds=1.0)
    flops = m["rollout_flops"] + 4 * policy.forward_flops(m["tokens"], 0)
    bound = flops / peak
    print(
        f"fp32 compute bound: {flops / 1e9:.0f} GFLOP a step at a measured {peak / 1e9:.0f} GFLOP/s fp32 matmul peak "
        f"= {bound:.2f} s/step ({P * G / bound:.1f} completions/s)"
    )
    print(
        f"tinyseek, Llama via the HF adapter: {s:.2f} s/step ({s_cpu:.2f} CPU-s), {P * G / s:.1f} completions/s "
        f"(rollout {m['rollout_s']:.2f} s, update {m['update_s']:.2f} s): {bound / s:.0%} of the bound "
        f"({bound / s_cpu:.0%} by CPU time)",
        flush=True,
    )
    if not a.skip_trl:
        base.save_pretrained(tmp / "llama")
        hf_tok.save_pretrained(tmp / "llama")
        t, t_cpu = run_trl(tmp / "llama", hf_tok, recs, a.steps, tmp)
        results["TRL GRPOTrainer"] = t
        import trl

        print(
            f"TRL {trl.__version__} GRPOTrainer: {t:.2f} s/step ({t_cpu:.2f} CPU-s), {P * G / t:.1f} completions/s: "
            f"{bound / t:.0%} of the bound ({bound / t_cpu:.0%} by CPU time)"
        )
        print(
            f"ratio tinyseek / TRL: {t / s:.2f}x completions/s, {t_cpu / s_cpu:.2f}x per CPU-second (target 2x; the "
            "two run one after the other, so a change of load between them moves the first figure)",
            flush=True,
        )
    if not a.skip_tiny:
        from tinyseek.config import ModelConfig
        from tinyseek.model import Transformer

        torch.manual_seed(0)
        model = Transformer(ModelConfig.preset("tiny", vocab_size=tok.vocab_size))
        s2, s2_cpu, m2 = run_tinyseek(TinyseekPolicy(model, tok), recs, a.steps, tmp, "ts-tiny")
        print(
            f"tinyseek, own tiny preset ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M MoE): "
            f"{s2:.2f} s/step ({s2_cpu:.2f} CPU-s), {P * G / s2:.1f} completions/s "
            f"(rollout {m2['rollout_s']:.2f} s, update {m2['update_s']:.2f} s)"
        )


if __name__ == "__main__":
    main()
