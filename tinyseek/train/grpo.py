"""`tinyseek grpo`: reinforcement learning from rule-based outcome rewards (DeepSeekMath §4, DeepSeek-R1 §2.2).

One step: draw P prompts, sample G completions for each through the policy's engine (the prompt is
prefilled once per group), score every completion with weighted rule rewards, turn the rewards into
group-relative advantages A_i = (r_i - mean_group) / std, and take `num_iterations` gradient steps on the
clipped surrogate

    L_i,t = -min(rho_i,t * A_i, clip(rho_i,t, 1 - epsilon, 1 + epsilon_high) * A_i) + beta * KL_i,t
    rho_i,t = pi_theta(o_t | q, o_<t) / pi_old(o_t | q, o_<t)
    KL_i,t = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1          (the k3 estimator, R1 paper eq. 2)

aggregated over tokens according to `loss_type` (grpo, dr_grpo, dapo: the maths and how it compares with
TRL are in grpo_loss.py). With `dynamic_sampling`, groups whose rewards are all equal (zero advantage) are
dropped from the update altogether (DAPO's dynamic sampling, without re-drawing: the step just has fewer
sequences); grpo and dr_grpo still divide by the generated batch's sequences, as TRL, dapo by the kept tokens.
Reference-model log-probs are taken under no_grad. With `advantage = "process"` each reasoning step gets its own
reward instead (process supervision: train/process_reward.py).

The model is a `Policy` (policy.py): a tinyseek checkpoint, or any transformers causal LM (a directory, a
.gguf file, or `pkg:PACKAGE/FILE` for a file shipped in a pip package), whose own weights the update
trains; completions come from train/rollout.py. Held-out accuracy is `tinyseek.evaluate` on the task's test
side, with the prompts GRPO trains on.

The settings, and why (dev/LOG.md has the runs behind them):

- The learning rate is the only bound on a step. With one update per rollout batch (num_iterations = 1) the
  ratio rho is exactly 1 during the update, so the clipping never acts: nothing but `lr` limits how far one
  step moves the policy. AdamW moves every weight by about lr, so the right lr is set by the model's weight
  scale, not by the loss: 2e-5 for ~1M-parameter models (TRL's 1e-6 suits billion-parameter models).
- `bias_update_speed` = 0: the MoE balancing biases stay as pretraining left them; their sign steps would
  move routing by a fixed amount every step whatever the lr. (DeepSeek-V3's report sets gamma to 0 for its
  last 500B pretraining tokens as well.)
- The rollout temperature stays TRL's 1.0 by default; the demo sets 0.7, near R1's evaluation temperature of
  0.6, so that the update is not spent on sampling noise the evaluation never draws.
- Routing replay and GSPO's sequence ratio would change nothing here by construction: the update's forward
  routes as the rollout did, and with one update per batch GSPO's gradient is the `grpo` loss type's.

Recipes: recipes/demo.toml (the whole R1 pipeline), recipes/r1-zero.toml, recipes/r1.toml,
recipes/smollm2-grpo.toml (`tinyseek run`, or `tinyseek grpo --config RECIPE --out RUN [--quick]`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tinyseek.config import ConfigError
from tinyseek.dist import DistInfo, shard
from tinyseek.rewards import mean_ignoring_none, std_ignoring_none
from tinyseek.train.grpo_loss import (
    LOSS_TYPES,
    SCALE_REWARDS,
    build_micro_batches,
    group_advantages,
    grpo_loss,
    padding_micro_batch,
    process_advantages,
    sequence_logprobs,
)
from tinyseek.train.loop import TrainConfig
from tinyseek.train.policy import Policy
from tinyseek.train.process_reward import ProcessReward
from tinyseek.train.rollout import LocalRollout, ServerRollout, engine_for

# ----------------------------------------------------------------------------------------------
# configuration


@dataclass
class GrpoConfig(TrainConfig):
    """`tinyseek grpo` fields. One loop step = one rollout batch of `batch_size` prompts x `group_size`
    completions, followed by `num_iterations` optimizer updates on it. Loop fields keep their meaning
    except `batch_size` (prompts per step, not sequences) and `grad_accum` (unused: `micro_batch` sets the
    sequences per forward/backward)."""

    # the loop's defaults, re-tuned for RL (the module docstring says why)
    max_steps: int = 100
    batch_size: int = 32  # prompts per step
    lr: float = 2e-5  # AdamW moves every weight by ~lr a step; 1e-4 collapsed small (~1M) models
    min_lr_ratio: float = 1.0
    warmup_steps: int = 0
    weight_decay: float = 0.0
    beta2: float = 0.99
    bias_update_speed: float | None = 0.0  # MoE balancing biases frozen during RL (None = the model's gamma)
    # model and data
    model: str = ""  # tinyseek checkpoint dir, a transformers model dir, a .gguf file, or pkg:PACKAGE/FILE
    tokenizer: str = ""  # default: the model's own
    task: str = "arithmetic"  # prompts from tinyseek.tasks (train split) unless `data` is given; "a,b" mixes tasks
    difficulty: int | None = None  # the task's difficulty (default: the task's own)
    data: str = ""  # prompt records (JSONL / Parquet / datasets dir) with at least `prompt`
    prompt_template: str = "chat"  # chat | r1-zero | raw | any text holding {prompt}
    system_prompt: str = ""  # system message of the chat template (chat only)
    # rollouts
    group_size: int = 8  # G completions per prompt
    max_new_tokens: int = 64  # tokens per rollout at most
    temperature: float = 1.0  # rollout sampling temperature (log-probs are taken at the same temperature)
    top_p: float = 1.0  # rollout nucleus mass
    top_k: int = 0  # rollout top-k (0 = off)
    rollout_impl: str = "engine"  # engine (KV cache, shared prefill) | plain (reference: full recompute per token)
    ignore_eos: bool = False  # benchmarks: every completion runs to max_new_tokens
    # rewards: names from tinyseek.rewards (accuracy, format, language, length) or `pkg.mod:func` (TRL signature)
    rewards: list[str] = field(
        default_factory=lambda: ["accuracy"]
    )  # names or pkg.mod:func, comma-separated on the CLI
    reward_weights: list[float] = field(default_factory=list)  # default: 1 each
    # outcome or process supervision (DeepSeekMath §4.1.3; tinyseek.steps defines the steps)
    advantage: str = "outcome"  # outcome (one reward per completion) | process (per step: process_reward)
    process_reward: str = ""  # advantage = process: oracle (the step rule; needs `solution`) | prm:PATH
    step_separator: str = " "  # the oracle's step separator (a PRM brings its own)
    # the objective
    loss_type: str = "dapo"  # grpo | dr_grpo | dapo
    epsilon: float = 0.2  # clip range below (and above, unless epsilon_high)
    epsilon_high: float | None = None  # None = epsilon (symmetric)
    beta: float = 0.0  # KL weight; 0 = no reference model kept
    scale_rewards: str = "group"  # group | batch | none
    std_threshold: float = 1e-6  # a group with reward std <= this has zero advantage
    dynamic_sampling: bool = True  # drop zero-advantage groups from the update
    mask_truncated_completions: bool = False  # completions cut at max_new_tokens get no loss
    num_iterations: int = 1  # optimizer updates per rollout batch (old log-probs kept for the ratio)
    # where the old log-probs of num_iterations > 1 come from: sampler (the engine's log-probs of the sampled tokens,
    # the policy's own at the rollout temperature: no extra forward; used when the update computes in float32, where
    # they agree with a recomputation to ~1e-5) | recompute (one no-grad forward per batch, the reference)
    old_logprobs: str = "sampler"
    # memory / speed
    micro_batch: int = 64  # sequences per forward/backward
    logprob_impl: str = "chunked"  # chunked | full (reference)
    logprob_chunk: int = 2048  # tokens per head chunk
    # logging and evaluation
    sample_every: int = 10  # write RUN/samples/step-N.jsonl every N steps (0 = never)
    samples_logged: int = 16  # completions per samples file
    eval_data: str = ""  # held-out records; default: the task's test split
    eval_n: int = 200  # held-out problems per evaluation (every eval_every steps and at the end)
    eval_samples: int = 4  # pass@1 = mean accuracy over this many samples per problem (R1's protocol: >= 4)
    eval_temperature: float = 0.6  # sampling temperature of the held-out pass@1 (R1's protocol: 0.6)
    eval_top_p: float = 0.95  # nucleus mass of the held-out pass@1 (R1's protocol: 0.95)
    eval_greedy: bool = True  # also greedy accuracy at every evaluation
    heldout_logged: int = 8  # the first N held-out problems' completions at every evaluation (RUN/heldout/step-N)
    # where rollouts come from (train/rollout.py); the server gets the weights after each update (RUN/rollout_weights)
    rollout: str = "local"  # local (this process's engine) | server (an OpenAI-compatible server at rollout_url)
    rollout_url: str = ""  # e.g. http://127.0.0.1:8000 (tinyseek serve CKPT --allow-weight-updates)
    rollout_api_key: str = ""  # the server's API key, if it has one

    def validate(self) -> None:
        super().validate()

        def need(cond: bool, name: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"{name}: {msg} (got {getattr(self, name)!r})")

        need(bool(self.model), "model", "a checkpoint to train is required")
        need(self.group_size >= 2, "group_size", "must be >= 2 (advantages are relative to the group)")
        need(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        need(self.temperature > 0, "temperature", "rollouts must sample (temperature > 0)")
        need(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        need(self.rollout_impl in ("engine", "plain"), "rollout_impl", "must be engine or plain")
        need(self.rollout in ("local", "server"), "rollout", "must be local or server")
        need(
            self.rollout != "server" or bool(self.rollout_url), "rollout_url", "rollout = server needs the server's URL"
        )
        need(bool(self.rewards), "rewards", "at least one reward function")
        need(
            not self.reward_weights or len(self.reward_weights) == len(self.rewards),
            "reward_weights",
            f"needs one weight per reward ({len(self.rewards)})",
        )
        need(self.advantage in ("outcome", "process"), "advantage", "must be outcome or process")
        need(
            self.advantage == "outcome" or self.process_reward == "oracle" or self.process_reward.startswith("prm:"),
            "process_reward",
            "advantage = process needs process_reward = oracle or prm:PATH (a `tinyseek prm train` directory)",
        )
        need(bool(self.step_separator), "step_separator", "must be a non-empty string")
        need(self.loss_type in LOSS_TYPES, "loss_type", f"must be one of {', '.join(LOSS_TYPES)}")
        need(self.scale_rewards in SCALE_REWARDS, "scale_rewards", f"must be one of {', '.join(SCALE_REWARDS)}")
        need(0 <= self.epsilon < 1, "epsilon", "must be in [0, 1)")
        need(self.epsilon_high is None or self.epsilon_high >= 0, "epsilon_high", "must be >= 0")
        need(self.beta >= 0, "beta", "must be >= 0")
        need(self.num_iterations >= 1, "num_iterations", "must be >= 1")
        need(self.old_logprobs in ("sampler", "recompute"), "old_logprobs", "must be sampler or recompute")
        need(self.micro_batch >= 1, "micro_batch", "must be >= 1")
        need(self.logprob_impl in ("chunked", "full"), "logprob_impl", "must be chunked or full")
        need(self.eval_samples >= 1, "eval_samples", "must be >= 1")
        need(self.eval_temperature > 0, "eval_temperature", "pass@1 samples (temperature > 0; greedy is eval_greedy)")
        need(0 < self.eval_top_p <= 1, "eval_top_p", "must be in (0, 1]")
        need(
            self.prompt_template in ("chat", "r1-zero", "raw") or "{prompt}" in self.prompt_template,
            "prompt_template",
            "must be chat, r1-zero, raw, or a text holding {prompt}",
        )


# ----------------------------------------------------------------------------------------------
# rewards and prompts


class PromptSource:
    """The prompt records of step k, a pure function of (seed, k), so `--resume` needs no data position.

    From a task: `batch_size` fresh problems of the train split per step (seeded by the step). From a file:
    the records in a seeded random order, epoch after epoch.
    """

    def __init__(self, cfg: GrpoConfig):
        from tinyseek import tasks

        self.cfg = cfg
        self.records: list[dict] | None = None
        if cfg.data:
            self.records = tasks.load_records(cfg.data)
            if not self.records:
                raise ConfigError(f"data: {cfg.data} holds no records")
            for i, r in enumerate(self.records):
                if not isinstance(r.get("prompt"), str):
                    raise ConfigError(f"data: {cfg.data} record {i + 1} has no text field 'prompt'")
        else:
            names = [t.strip() for t in cfg.task.split(",") if t.strip()]
            self.tasks = [tasks.get(t) for t in names]

    def batch(self, step: int, n: int) -> list[dict]:
        if self.records is None:  # several tasks (task = "a,b"): an even mix, interleaved
            k = len(self.tasks)
            parts = [
                t.generate(
                    n // k + (i < n % k),
                    seed=self.cfg.seed * 1_000_003 + step,
                    split="train",
                    difficulty=self.cfg.difficulty,
                )
                for i, t in enumerate(self.tasks)
            ]
            return [parts[i % k][i // k] for i in range(n)]
        import random

        N = len(self.records)
        out = []
        for k in range(step * n, step * n + n):
            epoch, i = divmod(k, N)
            order = list(range(N))
            random.Random(self.cfg.seed * 7919 + epoch).shuffle(order)
            out.append(self.records[order[i]])
        return out

    def heldout(self) -> list[dict]:
        from tinyseek import tasks

        if self.cfg.eval_data:
            recs = tasks.load_records(self.cfg.eval_data)
        elif self.records is not None:
            return []
        else:
            k = len(self.tasks)
            parts = [
                t.generate(
                    self.cfg.eval_n // k + (i < self.cfg.eval_n % k),
                    seed=0,
                    split="test",
                    difficulty=self.cfg.difficulty,
                )
                for i, t in enumerate(self.tasks)
            ]
            recs = [r for part in parts for r in part]
        return recs[: self.cfg.eval_n]


def _columns(rows: list[dict]) -> dict[str, list]:
    """Record fields as TRL-style columns (lists), the prompt excluded (it is passed on its own)."""
    keys = sorted({k for r in rows for k in r} - {"prompt"})
    return {k: [r.get(k) for r in rows] for k in keys}


# ----------------------------------------------------------------------------------------------
# the stage

# the update's metrics when there is nothing to learn from (no informative group, or no unmasked token): no step
NO_UPDATE = {
    "loss": 0.0,
    "tokens": 0,
    "kl": 0.0,
    "clip_low": 0.0,
    "clip_high": 0.0,
    "entropy": float("nan"),
    "fixed_logprob_flops": 0.0,
    "grad_norm": 0.0,
    "skipped": 0,
}


class GrpoStage:
    """The GRPO stage for `tinyseek.train.loop.Loop`: one `train_step` = rollout, rewards, advantages, updates."""

    def __init__(self, cfg: GrpoConfig, policy: Policy, ref_module: torch.nn.Module | None, run_dir, rollout=None):
        from pathlib import Path

        from tinyseek import rewards

        self.cfg, self.policy, self.ref = cfg, policy, ref_module
        self._rollout = rollout  # train/rollout.py; None: this process's engine (made at the first step)
        self._sampler = None  # the in-process sampler held-out evaluation uses
        self.run_dir = Path(run_dir)
        funcs = [rewards.resolve(n) for n in cfg.rewards]
        self.reward = rewards.combine(funcs, cfg.reward_weights or None)
        self.reward_names = list(cfg.rewards)
        self.prompts = PromptSource(cfg)
        self._heldout: list[dict] | None = None
        # the step rewards of advantage = "process" (train/process_reward.py)
        self.process = ProcessReward(cfg, policy, self.prompts, run_dir) if cfg.advantage == "process" else None

    @property
    def scorer(self):
        """The PRM of process_reward = "prm:PATH" (None otherwise)."""
        return self.process.scorer if self.process is not None else None

    def sampler(self, loop) -> LocalRollout:
        """The in-process sampler (train/rollout.py), made at the first step: it samples held-out evaluations, and
        the training rollouts unless a server does (`rollout = "server"`)."""
        if self._sampler is None:
            self._sampler = LocalRollout(self.policy, loop)
        return self._sampler

    # the prompts are a function of the step, so there is no data position to save (the PRM's liked-but-wrong
    # samples are kept, so a resumed run's file is whole)
    def state_dict(self) -> dict:
        liked = self.process.liked_wrong if self.process is not None else []
        return {"kind": "grpo", "liked_wrong": liked} if liked else {"kind": "grpo"}

    def load_state_dict(self, d: dict) -> None:
        if self.process is not None:
            self.process.liked_wrong = list(d.get("liked_wrong", []))

    # -- one step ----------------------------------------------------------------------------------
    def train_step(self, loop) -> dict:
        import time

        cfg, pol, G = self.cfg, self.policy, self.cfg.group_size
        recs = self.prompts.batch(loop.step, cfg.batch_size)
        prompt_ids = [pol.render(r["prompt"], cfg.prompt_template, cfg.system_prompt) for r in recs]
        t0 = time.perf_counter()
        sampler = self.sampler(loop)
        rollout = sampler if self._rollout is None else self._rollout
        # the sampler's log-probs as the old log-probs: only an in-process engine's (a server's stay a check), and
        # only for a float32 update (a bf16 update's recomputed log-probs would differ from the sampler's fp32 ones)
        sampler_old = (
            cfg.num_iterations > 1
            and cfg.old_logprobs == "sampler"
            and rollout.own_logprobs
            and loop.dtype == "float32"
        )
        # the engine's completions, as they are: token ids (ending with the stop token sampled), text, finish reason
        # under torchrun each rank samples its share of the prompts; every rank gets the whole batch back
        comps = rollout.generate(
            loop,
            prompt_ids,
            G,
            cfg.max_new_tokens,
            cfg.temperature,
            cfg.top_p,
            cfg.top_k,
            seed=cfg.seed * 1_000_003 + loop.step,
            impl=cfg.rollout_impl,
            max_batch=min(256, len(recs) * G),
            ignore_eos=cfg.ignore_eos,
            logprobs=sampler_old,
        )
        t_roll = time.perf_counter() - t0
        gen_tokens = sum(len(c.token_ids) for c in comps)
        rollout_flops = pol.sampling_flops(prompt_ids, gen_tokens, cfg.max_new_tokens)  # each prompt once per group

        # rewards and advantages
        rows = [r for r in recs for _ in range(G)]
        texts = [c.text for c in comps]
        cols = _columns(rows)
        cols["completion_ids"] = [c.token_ids for c in comps]
        user_prompts = [r["prompt"] for r in rows]
        total, parts = self.reward(user_prompts, texts, **cols)
        r_t = torch.tensor(total, dtype=torch.float32)  # [P*G]
        if cfg.advantage == "process":  # per-step rewards -> per-token advantages [P*G, L]
            steps = self.process.step_rewards(rows, comps, prompt_ids, G, loop.dist.world)
            lens_ = [len(c.token_ids) for c in comps]
            adv, std, informative = process_advantages(
                steps["rewards"], steps["ends"], lens_, G, cfg.scale_rewards, cfg.std_threshold
            )
            rollout_flops += steps["flops"]
        else:
            adv, std, informative = group_advantages(r_t, G, cfg.scale_rewards, cfg.std_threshold)
        keep = [i for i in range(len(comps)) if not cfg.dynamic_sampling or bool(informative[i // G])]
        truncated = [c.finish_reason == "length" for c in comps]
        m, acc = self._rollout_metrics(loop, rows, comps, texts, cols, total, parts, truncated)
        m["groups_informative"] = float(informative.float().mean())
        m["seqs_updated"] = len(keep)
        if adv.dim() == 2:  # per-token advantages: statistics over the completions' real tokens
            a = torch.cat([adv[i, : len(comps[i].token_ids)] for i in keep]) if keep else torch.zeros(1)
            m.update(self.process.metrics(loop, rows, comps, steps, acc))
        else:
            a = adv[keep] if keep else torch.zeros(1)
        m["adv_mean"], m["adv_std"], m["adv_absmax"] = (
            float(a.mean()),
            float(a.std()) if a.numel() > 1 else 0.0,
            float(a.abs().max()),
        )
        if cfg.sample_every and (loop.step + 1) % cfg.sample_every == 0 and loop.is_main:
            self._write_samples(loop.step + 1, rows, comps, total, parts, adv)

        # updates
        t1 = time.perf_counter()
        upd = self._update(
            loop,
            [prompt_ids[i // G] for i in keep],
            [comps[i].token_ids for i in keep],
            adv[keep],
            [not (cfg.mask_truncated_completions and truncated[i]) for i in keep],
            n_generated=len(comps),
            **({"old_logprobs": [comps[i].logprobs for i in keep]} if sampler_old else {}),
        )
        t_upd = time.perf_counter() - t1
        m.update(upd)
        m["rollout_s"], m["update_s"] = t_roll, t_upd
        m["rollout_tok_s"] = gen_tokens / t_roll if t_roll > 0 else 0.0
        m["update_tok_s"] = upd["tokens"] / t_upd if t_upd > 0 and keep else 0.0  # tokens already x num_iterations
        m["completions_per_s"] = len(comps) / (t_roll + t_upd) if t_roll + t_upd > 0 else 0.0
        m["rollout_flops"] = rollout_flops  # with process_reward = prm:PATH, the PRM's scoring too (prm_flops)
        # the loop adds these to the update's training FLOPs in the cost meter: the rollouts (and PRM scoring), and
        # the no-grad forwards of the old (num_iterations > 1, recomputed) and reference (beta > 0) log-probs
        m["extra_flops"] = rollout_flops + upd.get("fixed_logprob_flops", 0.0)
        if self.scorer is not None and loop.step == 0:  # counted against max_flops (loop.prior_flops), not here
            m["prm_train_flops"] = self.scorer.train_flops
        return m

    def _rollout_metrics(self, loop, rows, comps, texts, cols, total, parts, truncated) -> tuple[dict, list]:
        """The step's rewards, accuracy, format and lengths, and how its completions reason (R1's Figures 2-3 on
        the training prompts: `evaluate.reasoning_stats`). Rewarded completions that look like a hack (no worked
        step, no answer tags, work inside the answer: `rewards.reward_hacks`) are counted, and written to
        RUN/hacks/step-N.jsonl. Returns (metrics, each completion's accuracy)."""
        from tinyseek import rewards as R
        from tinyseek.evaluate import reasoning_stats

        user_prompts = [r["prompt"] for r in rows]
        r_t = torch.tensor(total, dtype=torch.float32)
        m: dict = {"reward": float(r_t.mean()), "reward_std": float(r_t.std()) if r_t.numel() > 1 else 0.0}
        for name, key in zip(self.reward_names, self.reward.names):
            short = name.rsplit(":", 1)[-1]
            m[f"reward_{short}"] = mean_ignoring_none(parts[key])
            m[f"reward_{short}_std"] = std_ignoring_none(parts[key])
        acc = parts.get("accuracy_reward") or R.accuracy_reward(user_prompts, texts, **cols)
        fmt = parts.get("format_reward") or R.format_reward(user_prompts, texts, **cols)
        m["accuracy"] = mean_ignoring_none(acc)
        m["format_rate"] = sum(1.0 for f in fmt if f == 1.0) / len(fmt)
        lens = [len(c.token_ids) for c in comps]
        m["len_mean"] = sum(lens) / len(lens)
        m["len_max"] = max(lens)
        m["clipped_frac"] = sum(truncated) / len(truncated)
        m.update({k: v for k, v in reasoning_stats(texts, lens, truncated, acc).items() if k != "truncated"})
        hacks = [(i, R.reward_hacks(texts[i])) for i in range(len(comps)) if total[i] > 0]
        hacks = [(i, flags) for i, flags in hacks if flags]
        m["rewarded_hacks"] = len(hacks) / len(comps)
        if hacks and loop.is_main:
            from tinyseek.io import write_jsonl

            write_jsonl(
                self.run_dir / "hacks" / f"step-{loop.step + 1}.jsonl",
                (
                    {
                        "step": loop.step + 1,
                        "prompt": rows[i]["prompt"],
                        "answer": rows[i].get("answer"),
                        "completion": texts[i],
                        "reward": total[i],
                        "flags": flags,
                    }
                    for i, flags in hacks
                ),
            )
        return m, acc

    def _update(self, loop, prompts, completions, adv, loss_mask, n_generated=None, old_logprobs=None) -> dict:
        """The kept sequences' updates. `n_generated`: the sequences the step sampled (default: the kept ones), the
        grpo and dr_grpo normalisers (grpo_loss.py). `old_logprobs`: the sampler's log-probs of each completion's
        tokens, or None. `train_step` passes them when they may stand in for the no-grad forward of the ratio's
        denominators (num_iterations > 1, the engine's own log-probs, a float32 update)."""
        cfg, pol = self.cfg, self.policy
        if not prompts:  # every group was uninformative: nothing to learn from, no optimizer step
            return dict(NO_UPDATE)
        dev = loop.device
        # the normalisers are the whole batch's (every rank holds every kept sequence); each rank then trains on its
        # share, and the loop's reduction sums the shares' gradients (the loss is scaled as for supervised steps)
        n_seq = len(prompts)
        n_gen = n_seq if n_generated is None else n_generated  # grpo, dr_grpo: dropped groups count, as in TRL
        n_tok = float(sum(len(c) for c, keep in zip(completions, loss_mask) if keep))
        if n_tok == 0:
            return dict(NO_UPDATE)
        mine = list(shard(n_seq, loop.dist))
        mbs = build_micro_batches(
            [prompts[i] for i in mine],
            [completions[i] for i in mine],
            adv[mine],
            [loss_mask[i] for i in mine],
            cfg.micro_batch,
            pol.pad_id,
        )
        # every rank runs as many forwards as rank 0 (the largest share): a sharded forward is a collective
        most = -(-len(shard(n_seq, DistInfo(0, loop.dist.world))) // cfg.micro_batch)
        mbs += [padding_micro_batch(pol.pad_id) for _ in range(most - len(mbs))]
        # (the plain rollout returns no log-probs: then the no-grad forward computes them)
        use_sampler = old_logprobs is not None and all(lp is not None for lp in old_logprobs)
        for mb in mbs:
            for k in ("ids", "rows", "pos", "slot", "tgt", "mask", "adv", "real"):
                setattr(mb, k, getattr(mb, k).to(dev))
            if use_sampler:  # mb.index counts within this rank's share; a padding micro-batch has none
                mb.old = torch.zeros(mb.mask.shape, dtype=torch.float32)
                for b, i in enumerate(mb.index):
                    lp = old_logprobs[mine[i]]
                    mb.old[b, : len(lp)] = torch.tensor(lp, dtype=torch.float32)
                mb.old = mb.old.to(dev)
        # fixed targets of the ratio and the KL, computed once per batch; their forwards are counted in the meter
        n_fixed = int(cfg.num_iterations > 1 and not use_sampler) + int(cfg.beta > 0)
        fixed_flops = n_fixed * sum(pol.forward_flops(n, n / 2) for mb in mbs for n in mb.real.sum(1).tolist())
        with torch.no_grad():
            for mb in mbs:
                with loop.autocast():
                    if cfg.num_iterations > 1 and not use_sampler:
                        mb.old = sequence_logprobs(
                            pol, loop.model, mb, cfg.temperature, cfg.logprob_impl, cfg.logprob_chunk
                        )[0]
                    if cfg.beta > 0:
                        mb.ref = sequence_logprobs(
                            pol, self.ref, mb, cfg.temperature, cfg.logprob_impl, cfg.logprob_chunk
                        )[0]
        sums = {"kl": 0.0, "clip_low": 0.0, "clip_high": 0.0}
        ent_sum = 0.0
        loss_total = 0.0
        st = {}
        for it in range(cfg.num_iterations):
            load = None
            loss_it = 0.0
            for k, mb in enumerate(mbs):
                with loop.no_sync(last=k == len(mbs) - 1):
                    with loop.autocast():
                        logp, ent, el = sequence_logprobs(
                            pol,
                            loop.model,
                            mb,
                            cfg.temperature,
                            cfg.logprob_impl,
                            cfg.logprob_chunk,
                            want_entropy=it == 0,
                        )
                    old = logp.detach() if mb.old is None else mb.old
                    out = grpo_loss(
                        logp,
                        old,
                        mb.adv,
                        mb.mask,
                        mb.ref,
                        cfg.beta,
                        cfg.epsilon,
                        cfg.epsilon_high,
                        cfg.loss_type,
                        cfg.max_new_tokens,
                    )
                    w_tok = float(mb.mask.sum()) / n_tok
                    # each micro-batch's share of the whole batch's loss (see grpo_loss for the normalisers)
                    weight = w_tok if cfg.loss_type == "dapo" else mb.ids.size(0) / n_gen
                    if mb.tokens == 0:  # a padding micro-batch: its forward and (zero) backward keep ranks in step
                        weight = 0.0
                    # DDP/FSDP average gradients over ranks; * world turns that back into the sum of the shares
                    (out.loss * (weight * loop.dist.world)).backward()
                loss_it += float(out.loss.detach()) * weight
                if it == cfg.num_iterations - 1:
                    for key in sums:
                        sums[key] += out.stats[key] * w_tok
                if it == 0:
                    ent_sum += float((ent * mb.mask).sum())
                if el is not None:
                    load = el.detach().float() if load is None else load + el.detach().float()
            st = loop.optimizer_step(loss_it, load)
            loss_total += loss_it / cfg.num_iterations
        tokens = sum(mb.tokens for mb in mbs)
        if loop.dist.enabled:  # the metrics of the whole batch: every rank's shares added up
            t = loop.all_sum(
                torch.tensor([loss_total, tokens, ent_sum, fixed_flops, *sums.values()], dtype=torch.float64)
            )
            loss_total, tokens, ent_sum, fixed_flops = float(t[0]), int(t[1]), float(t[2]), float(t[3])
            sums = {k: float(v) for k, v in zip(sums, t[4:])}
        return {
            "loss": loss_total,
            "tokens": tokens * cfg.num_iterations,
            **sums,
            "entropy": ent_sum / n_tok,
            "fixed_logprob_flops": fixed_flops,
            **st,
        }

    # -- logging and evaluation ----------------------------------------------------------------------
    def _write_samples(self, step: int, rows, comps, total, parts, adv) -> None:
        from tinyseek.io import write_jsonl

        write_jsonl(
            self.run_dir / "samples" / f"step-{step}.jsonl",
            (
                {
                    "step": step,
                    "prompt": rows[i]["prompt"],
                    "answer": rows[i].get("answer"),
                    "completion": comps[i].text,
                    "finish_reason": comps[i].finish_reason,
                    "tokens": len(comps[i].token_ids),
                    "reward": total[i],
                    "rewards": {k: v[i] for k, v in parts.items()},
                    # process supervision: the first token's advantage (the sum over every step)
                    "advantage": float(adv[i]) if adv.dim() == 1 else float(adv[i, 0]),
                }
                for i in range(min(self.cfg.samples_logged, len(comps)))
            ),
        )

    def evaluate(self, loop) -> dict:
        if self._heldout is None:
            self._heldout = self.prompts.heldout()
        if not self._heldout:
            return {}
        # the same sampling seed at every evaluation: the curve's steps differ by the policy, not by the draw
        return self._evaluate_heldout(self._heldout, seed=10_000 + self.cfg.seed, loop=loop)

    def _evaluate_heldout(self, recs: list[dict], seed: int, loop=None) -> dict:
        """Greedy accuracy, and pass@1 over `eval_samples` samples at `eval_temperature` with its 95% interval,
        the format rate and the mean length: tinyseek.evaluate on the held-out records, with GRPO's prompts
        (under torchrun each rank evaluates its share of the records)."""
        from tinyseek.evaluate import evaluate

        cfg, pol, d = self.cfg, self.policy, None
        if loop is not None:
            sampler = self.sampler(loop)
            sampler.sync(loop)
            pol, d = sampler.policy, loop.dist
        render = lambda r: pol.render(r["prompt"], cfg.prompt_template, cfg.system_prompt)  # noqa: E731
        prompt_ids = [render(r) for r in recs]
        out: dict = {"eval_n": len(recs)}
        runs = [("greedy", 1, pol.sampling_params(cfg.max_new_tokens, 0.0, seed=seed))] if cfg.eval_greedy else []
        runs.append(
            (
                "pass1",
                cfg.eval_samples,
                pol.sampling_params(cfg.max_new_tokens, cfg.eval_temperature, cfg.eval_top_p, seed=seed),
            )
        )
        for name, k, params in runs:
            engine = engine_for(
                pol, prompt_ids, cfg.max_new_tokens, max_batch=min(256, len(recs) * k), n=k, impl=cfg.rollout_impl
            )
            res = evaluate(
                engine, recs, k, params, render=render, keep_text=name == "pass1", chunk=max(1, 256 // k), dist=d
            )
            out[f"eval_{name}"] = res["pass@1"]["value"]
            out[f"eval_{name}_lo"], out[f"eval_{name}_hi"] = res["pass@1"]["ci95"]
            if name == "pass1":
                out["eval_format_rate"] = res["format"]["value"]
                out["eval_len_mean"] = res["mean_length"]["value"]
                out.update({f"eval_{k}": v for k, v in res["reasoning"].items()})
                if loop is not None and loop.is_main and cfg.heldout_logged:
                    self._write_heldout(loop.step, res["problems"][: cfg.heldout_logged])
                if self.scorer is not None:  # the over-optimisation curve: the PRM's verdict vs the truth
                    out.update(self.process.heldout_metrics(prompt_ids, res["problems"]))
        return out

    def _write_heldout(self, step: int, problems: list[dict]) -> None:
        """The first held-out problems' completions at this evaluation, RUN/heldout/step-N.jsonl: the same problems
        at every step, so a report can show how one problem's answers changed over RL (the "aha" table)."""
        from tinyseek.io import write_jsonl

        write_jsonl(
            self.run_dir / "heldout" / f"step-{step}.jsonl",
            (
                {
                    "step": step,
                    "prompt": p["prompt"],
                    "answer": p["answer"],
                    "completions": p["completions"],
                    "correct": p["correct"],
                    "lengths": p["lengths"],
                }
                for p in problems
            ),
        )


# ----------------------------------------------------------------------------------------------
# the command


def build_stage(cfg: GrpoConfig, run_dir, resume: bool = False):
    """(loop, stage) ready to `loop.run(stage)`: the policy loaded, the reference model frozen when beta > 0."""
    import copy

    from tinyseek.config import to_dict
    from tinyseek.errors import TinyseekError
    from tinyseek.train.loop import Loop, seed_everything

    seed_everything(cfg.seed)
    policy = Policy.load(cfg.model, cfg.tokenizer)
    # GRPO's forward has no targets, so the MTP modules get no gradient: frozen, they stay out of the optimizer (as
    # AdamW skipped them before) and out of DDP's reduction, which fails on a parameter that never gets a gradient
    for p in getattr(policy.module, "mtp", torch.nn.ModuleList()).parameters():
        p.requires_grad_(False)
    if resume and not policy.resumable:
        raise TinyseekError(
            f"{cfg.model}: --resume is not supported for {policy.kind} models (restart from the last checkpoint "
            "instead)"
        )
    ref = None
    if cfg.beta > 0:
        ref = copy.deepcopy(policy.module).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
    loop = Loop(
        cfg,
        policy.module,
        run_dir,
        tokenizer_file=policy.tokenizer_file,
        resolved_config=to_dict(cfg),
        resume=resume,
        stage_name="grpo",
        seq_len=cfg.max_new_tokens,
        save_model=policy.save,  # the model's own checkpoint format (save_pretrained for a transformers model)
    )
    if ref is not None:
        ref.to(loop.device)
    rollout = None
    if cfg.rollout == "server":
        from pathlib import Path

        rollout = ServerRollout(policy, cfg.rollout_url, cfg.rollout_api_key, Path(run_dir) / "rollout_weights")
    stage = GrpoStage(cfg, policy, ref, run_dir, rollout=rollout)
    if stage.scorer is not None:  # a learned PRM's training is part of this arm's compute budget
        loop.prior_flops = stage.scorer.train_flops
    return loop, stage


def run(cfg: GrpoConfig, run_dir, resume: bool = False) -> dict:
    loop, stage = build_stage(cfg, run_dir, resume=resume)
    return loop.run(stage)


def cli_grpo(argv: list[str]) -> int:
    from tinyseek.config import stage_cli

    cfg, run_dir, resume = stage_cli(
        GrpoConfig,
        argv,
        prog="tinyseek grpo",
        description="GRPO with rule-based rewards on a tinyseek checkpoint or a transformers "
        "model (a directory, a .gguf file or pkg:PACKAGE/FILE).",
    )
    run(cfg, run_dir, resume)
    return 0
