"""Process supervision for GRPO (`advantage = "process"`, DeepSeekMath §4.1.3): a reward for each reasoning step.

Each completion is cut into reasoning steps (tinyseek.steps), and each step gets a reward: from the exact step rule
(`process_reward = "oracle"`: the step equals the worked solution's, every step before it too) or from a process
reward model (`process_reward = "prm:PATH"`, train/prm.py: its score of the step). GRPO then normalises the rewards
over every step of the group and gives a token the sum of the normalised rewards of its step and the later ones
(grpo_loss.process_advantages); the reward functions are then only logged. A PRM's scoring of every rollout is
counted in the cost meter, its training against `max_flops`; the PRM's score is logged against the truth on the
policy's own samples (prm_score, prm_score_right / _wrong, prm_liked_wrong, prm_step_acc) to measure reward
hacking, and the wrong samples it liked most go to RUN/prm_liked_wrong.jsonl. Under torchrun every process scores
every rollout (the scores are then the same everywhere without a gather), and the meter counts every process's.
"""

from __future__ import annotations

from pathlib import Path

from tinyseek.config import ConfigError
from tinyseek.io import write_jsonl
from tinyseek.r1 import completion_text
from tinyseek.rewards import mean_ignoring_none
from tinyseek.steps import check_separator, oracle_step_rewards, step_spans, token_char_ends, token_step_ends
from tinyseek.train.prm import StepScorer


class ProcessReward:
    """The step rewards of one GRPO run (see the module docstring). `cfg` is its GrpoConfig, `policy` its
    train/policy.Policy (the PRM is checked against its tokenizer), `prompts` its PromptSource (the oracle checks
    that the records carry worked solutions)."""

    def __init__(self, cfg, policy, prompts, run_dir):
        self.cfg, self.policy, self.run_dir = cfg, policy, Path(run_dir)
        self.scorer: StepScorer | None = None  # the PRM of process_reward = "prm:PATH"
        self.liked_wrong: list[dict] = []  # samples the PRM scored above 0.5 that were wrong (reward hacking)
        self._char_ends: dict = {}  # token id -> decoded length (where a completion's steps end)
        self._setup(prompts)

    def _setup(self, prompts) -> None:
        """Load the PRM (tokenizer checked against the policy's), or check that the oracle's records carry worked
        solutions whose steps the separator finds. Errors name the file (or the task)."""
        cfg, pol = self.cfg, self.policy
        if cfg.process_reward.startswith("prm:"):
            mcfg = getattr(pol.module, "cfg", None) or getattr(pol.module, "config", None)
            self.scorer = StepScorer(
                cfg.process_reward[4:], pol.tok, getattr(mcfg, "vocab_size", None), pol.source or cfg.model
            )
            return
        if prompts.records is not None:
            recs, where = prompts.records, lambda i: f"{cfg.data} record {i + 1}"
        else:
            recs, where = prompts.batch(0, min(cfg.batch_size, 8)), lambda i: f"task {cfg.task} record {i + 1}"
        for i, r in enumerate(recs):
            if not isinstance(r.get("solution"), str) or r.get("answer") is None:
                raise ConfigError(
                    f"process_reward: {where(i)} has no `solution` and `answer` (the oracle checks each step against "
                    "the worked solution)"
                )
            check_separator(completion_text(r), cfg.step_separator, where(i))

    def step_rewards(self, rows: list[dict], comps, prompt_ids: list[list[int]], G: int, world: int = 1) -> dict:
        """Each completion's steps (tinyseek.steps), where they end in its tokens, and their rewards: the PRM's
        scores (process_reward = prm:PATH) or the oracle's 0/1. The oracle's verdict is kept beside the PRM's
        whenever the records carry worked solutions, to measure the PRM on the policy's own samples. Every one of
        the `world` processes scores the whole batch: `flops` counts each."""
        cfg, pol = self.cfg, self.policy
        sep = self.scorer.sep if self.scorer is not None else cfg.step_separator
        ends, oracle = [], []
        for r, c in zip(rows, comps):
            spans = step_spans(c.text or "", sep)
            ends.append(token_step_ends(spans, token_char_ends(pol.decode, c.token_ids, self._char_ends)))
            if isinstance(r.get("solution"), str) and r.get("answer") is not None:
                gold = {k: r[k] for k in ("task", "numbers", "target") if k in r}
                oracle.append(oracle_step_rewards(c.text or "", completion_text(r), r["answer"], sep, **gold))
            else:
                oracle.append(None)
        out = {"ends": ends, "oracle": oracle, "flops": 0.0, "prm": None}
        if self.scorer is not None:
            dev = next(pol.module.parameters()).device
            if next(self.scorer.model.parameters()).device != dev:
                self.scorer.model.to(dev)
            prompts = [prompt_ids[i // G] for i in range(len(comps))]
            toks = [c.token_ids for c in comps]
            out["prm"] = self.scorer.score(prompts, toks, ends)
            out["flops"] = self.scorer.flops(prompts, toks) * world
            out["rewards"] = out["prm"]
        else:
            out["rewards"] = oracle
        return out

    def heldout_metrics(self, prompt_ids: list[list[int]], problems: list[dict]) -> dict:
        """The PRM's verdict on a held-out evaluation's samples (each problem's completions, re-encoded from their
        text with the end-of-sequence token) against the truth: its mean score (the minimum over a sample's
        steps), that score on wrong samples, and the share of wrong samples it liked (min score > 0.5), each with
        a 95% interval over problems (a problem's value is the mean over its samples; normal approximation,
        clipped to [0, 1]). The PRM is frozen, so a
        change of the score on wrong samples over training is the policy finding wrong answers the PRM likes
        (exploitation); a change of the overall score that the accuracy explains is not."""
        from tinyseek.evaluate import mean_ci

        sc, tok = self.scorer, self.scorer.tok
        cache: dict = {}
        prompts, comps, ends, where = [], [], [], []
        for i, (p, ids) in enumerate(zip(problems, prompt_ids)):
            for j, text in enumerate(p.get("completions") or []):
                c = tok.encode(text or "") + [tok.eos_id]
                ends.append(token_step_ends(step_spans(text or "", sc.sep), token_char_ends(tok.decode, c, cache)))
                prompts.append(ids)
                comps.append(c)
                where.append((i, j))
        if not comps:
            return {}
        mins = [min(s) if s else 0.0 for s in sc.score(prompts, comps, ends)]
        per: list[dict] = [{"all": [], "wrong": [], "right": []} for _ in problems]
        for (i, j), m in zip(where, mins):
            per[i]["all"].append(m)
            per[i]["right" if problems[i]["correct"][j] == 1.0 else "wrong"].append(m)
        out = {}
        for name, key, fn in (
            ("prm_score", "all", lambda v: sum(v) / len(v)),
            ("prm_score_right", "right", lambda v: sum(v) / len(v)),
            ("prm_score_wrong", "wrong", lambda v: sum(v) / len(v)),
            ("prm_liked_wrong", "wrong", lambda v: sum(x > 0.5 for x in v) / len(v)),
        ):
            vals = [fn(q[key]) for q in per if q[key]]
            m, lo, hi = mean_ci(vals)  # scores and shares lie in [0, 1]: so does their interval
            out.update({f"eval_{name}": m, f"eval_{name}_lo": max(0.0, lo), f"eval_{name}_hi": min(1.0, hi)})
        out["eval_prm_wrong_problems"] = sum(1 for q in per if q["wrong"])
        return out

    def metrics(self, loop, rows, comps, steps: dict, acc) -> dict:
        """What the process reward said against what was true, on the policy's own samples: the oracle's share of
        right steps; with a PRM, its mean score (the minimum over a sample's steps, as Math-Shepherd aggregates),
        that score on right and on wrong answers, the share of wrong answers it liked (min score > 0.5), its
        step accuracy against the oracle, and the scoring's FLOPs. The wrong samples it liked most go to
        RUN/prm_liked_wrong.jsonl (two a step, the last 200)."""
        m: dict = {"steps_mean": sum(len(e) for e in steps["ends"]) / max(1, len(comps))}
        oracle = steps["oracle"]
        if all(o is not None for o in oracle):
            m["step_correct"] = sum(sum(o) for o in oracle) / max(1, sum(len(o) for o in oracle))
        prm = steps["prm"]
        if prm is None:
            return m
        m["prm_flops"] = steps["flops"]
        right = [a == 1.0 for a in acc]
        mins = [min(s) if s else 0.0 for s in prm]
        m["prm_score"] = sum(mins) / len(mins)
        m["prm_score_right"] = mean_ignoring_none([s if r else None for s, r in zip(mins, right)])
        m["prm_score_wrong"] = mean_ignoring_none([None if r else s for s, r in zip(mins, right)])
        wrong = [i for i, r in enumerate(right) if not r]
        liked = [i for i in wrong if mins[i] > 0.5]
        m["prm_liked_wrong"] = len(liked) / len(wrong) if wrong else 0.0
        if all(o is not None for o in oracle):
            agree = [(p > 0.5) == (o >= 0.5) for s, os_ in zip(prm, oracle) for p, o in zip(s, os_)]
            m["prm_step_acc"] = sum(agree) / max(1, len(agree))
        if liked:
            self.liked_wrong += [
                {
                    "step": loop.step + 1,
                    "prompt": rows[i].get("prompt"),
                    "answer": rows[i].get("answer"),
                    "completion": comps[i].text,
                    "prm_min_score": round(mins[i], 4),
                    "prm_step_scores": [round(x, 4) for x in prm[i]],
                    "oracle_steps": oracle[i],
                }
                for i in sorted({comps[i].text: i for i in liked}.values(), key=lambda i: -mins[i])[:2]
            ]
            self.liked_wrong = self.liked_wrong[-200:]
            if loop.is_main:
                write_jsonl(self.run_dir / "prm_liked_wrong.jsonl", self.liked_wrong)
        return m
