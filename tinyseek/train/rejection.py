"""`tinyseek sample`: rejection sampling (DeepSeek-R1 §2.3.3) — keep only verified, well-formed completions.

For each training problem, sample K completions from a checkpoint and keep those that are

- correct: `tinyseek.rewards.accuracy_reward` == 1 (rule-checked against the record's answer),
- well-formed: `format_reward` == 1 (exactly `<think>...</think><answer>...</answer>`), and
- finished: the model stopped on its own (a completion cut at max_new_tokens is never kept, even if the
  answer tag happens to be closed: its text is not what the model would have said).

`--dedup` drops repeated completions of a problem (compared after collapsing whitespace); `--shortest` keeps
only the shortest correct completion per problem (R1 filters long, mixed or chaotic chains; shortest is the
simple, rule-checkable version of that). The output is an SFT dataset in the prompt/completion form that
`tinyseek sft --data` reads (plus the record's id/task/answer for tracing), written atomically, and the
stage's statistics (problems with at least one kept completion, acceptance rate) go to stdout and, when the
output is a directory, to stats.json beside it. It is also R1's input to black-box distillation.

Two ways to call it:
    tinyseek sample CKPT --task arithmetic --n 500 --samples 8 --out sft.jsonl [--shortest] [--dedup]
    tinyseek sample --config stage.toml --out RUN/sample        (a directory: RUN/sample/sft.jsonl, stats.json)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tinyseek.config import CommandParser, ConfigError
from tinyseek.errors import TinyseekError


@dataclass
class SampleConfig:
    """The fields of a sample stage (the same names as the flags)."""

    model: str = ""  # the teacher: tinyseek checkpoint, transformers model directory, or .gguf file
    task: str = ""  # problems of this task (its `split` side)
    data: str = ""  # prompt records instead of a task (prompt, answer, ...)
    n: int = 100  # problems
    samples: int = 8  # completions per problem (K)
    temperature: float = 1.0  # sampling temperature (R1 sampled its SFT data from the RL model)
    top_p: float = 1.0  # nucleus sampling mass
    max_new_tokens: int = 128  # tokens per completion at most
    difficulty: int | None = None  # the task's difficulty (default: the task's own)
    seed: int = 0  # problem and sampling seed
    split: str = "train"  # rejection sampling runs on training problems
    prompt_template: str = "chat"  # as tinyseek grpo: chat | r1-zero | raw | text with {prompt}
    system_prompt: str = ""  # system message of the chat template
    shortest: bool = False  # keep only the shortest verified completion of each problem
    dedup: bool = False  # keep each distinct verified completion of a problem once
    accept: str = "verified"  # verified (rejection sampling) | any: every completion, for smoke tests of a pipeline
    threads: int = 0  # torch CPU threads (0 = default)
    batch: int = 256  # sequences decoded together

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("model: the checkpoint to sample from is required")
        if bool(self.task) == bool(self.data):
            raise ConfigError("task: give exactly one of task or data")
        for name in ("n", "samples", "max_new_tokens", "batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1 (got {getattr(self, name)!r})")
        if not self.temperature > 0:
            raise ConfigError(f"temperature: rejection sampling needs temperature > 0 (got {self.temperature!r})")
        if self.accept not in ("verified", "any"):
            raise ConfigError(f"accept: must be verified or any (got {self.accept!r})")
        if self.split not in ("train", "test"):
            raise ConfigError(f"split: must be train or test (got {self.split!r})")


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def select(
    records: list[dict],
    completions: list[list[tuple[str, int, str]]],
    shortest: bool = False,
    dedup: bool = False,
    accept: str = "verified",
) -> tuple[list[dict], dict]:
    """Keep the verified completions. completions[i] lists (text, n_tokens, finish_reason) for records[i].
    accept="any" keeps every completion, verified or not (the quick demo's never-right teacher still feeds its
    student), and the statistics still count the verified ones.

    Returns (rows, stats): rows are {"prompt", "completion", "id", "task", "answer", "tokens"}.
    """
    from tinyseek import rewards as R

    rows, kept_problems, seen_total, correct_total = [], 0, 0, 0
    for rec, comps in zip(records, completions):
        texts = [c[0] for c in comps]
        prompts = [rec["prompt"]] * len(texts)
        cols = {k: [rec.get(k)] * len(texts) for k in ("answer", "task", "numbers", "target")}
        acc = R.accuracy_reward(prompts, texts, **cols)
        fmt = R.format_reward(prompts, texts)
        good = [(t, n) for (t, n, reason), a, f in zip(comps, acc, fmt) if a == 1.0 and f == 1.0 and reason == "stop"]
        seen_total += len(comps)
        correct_total += len(good)
        if accept == "any":
            good = [(t, n) for t, n, _ in comps]
        if dedup:
            uniq, seen = [], set()
            for t, n in good:
                if _norm(t) not in seen:
                    seen.add(_norm(t))
                    uniq.append((t, n))
            good = uniq
        if shortest and good:
            good = [min(good, key=lambda x: (x[1], len(x[0])))]
        if good:
            kept_problems += 1
        for t, n in good:
            rows.append(
                {
                    "prompt": rec["prompt"],
                    "completion": t,
                    "id": rec.get("id"),
                    "task": rec.get("task"),
                    "answer": rec.get("answer"),
                    "tokens": n,
                }
            )
    stats = {
        "problems": len(records),
        "problems_kept": kept_problems,
        "completions": seen_total,
        "verified": correct_total,
        "rows": len(rows),
        "acceptance": correct_total / seen_total if seen_total else 0.0,
    }
    return rows, stats


def rejection_sample(cfg: SampleConfig) -> tuple[list[dict], dict]:
    """Sample cfg.samples completions for cfg.n problems with the checkpoint and `select` the verified ones.

    Under torchrun each rank samples its share of every chunk of problems (with the chunk's seed, each prompt
    seeded by its place in the chunk, so the draws are the one-process draws) and every rank gets all of them back."""
    import torch

    from tinyseek import tasks
    from tinyseek.dist import gather, init_distributed, shard
    from tinyseek.train.policy import Policy

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.data:
        records = tasks.load_records(cfg.data)[: cfg.n]
    else:
        records = tasks.get(cfg.task).generate(cfg.n, seed=cfg.seed, split=cfg.split, difficulty=cfg.difficulty)
    if not records:
        raise TinyseekError(f"{cfg.data or cfg.task}: no problems to sample")
    d = init_distributed()
    policy = Policy.load(cfg.model)
    mine: list[tuple[int, list[tuple[str, int, str]]]] = []  # (problem index, its completions), this rank's
    per_call = max(1, cfg.batch // cfg.samples)
    for s in range(0, len(records), per_call):
        chunk = [records[s + i] for i in shard(len(records[s : s + per_call]), d)]
        if not chunk:
            continue
        first = s + shard(len(records[s : s + per_call]), d).start
        ids = [policy.render(r["prompt"], cfg.prompt_template, cfg.system_prompt) for r in chunk]
        out = policy.generate(
            ids,
            cfg.samples,
            cfg.max_new_tokens,
            cfg.temperature,
            cfg.top_p,
            seed=cfg.seed * 1_000_003 + s,
            max_batch=min(cfg.batch, len(chunk) * cfg.samples),
            first=first - s,  # seeded as its place in the chunk
        )
        for i in range(len(chunk)):
            k = cfg.samples
            mine.append((first + i, [(x.text, len(x.token_ids), x.finish_reason) for x in out[i * k : (i + 1) * k]]))
    comps = [c for _, c in sorted(gather(mine, d))]
    rows, stats = select(records, comps, cfg.shortest, cfg.dedup, cfg.accept)
    stats["generated_tokens"] = sum(n for grp in comps for _, n, _ in grp)  # the report prices this stage's sampling
    return rows, stats


def run(cfg: SampleConfig, out: Path, resume: bool = False) -> dict:
    """`rejection_sample` -> OUT (a .jsonl file, or a directory: OUT/sft.jsonl and OUT/stats.json); returns the
    statistics. Sampling runs whole: `resume` changes nothing (it samples again)."""
    from tinyseek.dist import is_main
    from tinyseek.io import atomic_dir, write_json, write_jsonl

    rows, stats = rejection_sample(cfg)
    if not is_main():  # every rank sampled its share; rank 0 writes
        return stats
    if out.suffix == ".jsonl":
        write_jsonl(out, rows)
        target = out
    else:
        with atomic_dir(out) as tmp:
            write_jsonl(tmp / "sft.jsonl", rows)
            write_json(tmp / "stats.json", stats)
        target = out / "sft.jsonl"
    print(
        f"sample: kept {stats['rows']} completions for {stats['problems_kept']}/{stats['problems']} problems "
        f"(acceptance {stats['acceptance']:.1%} of {stats['completions']}) -> {target}"
    )
    return stats


def cli_sample(argv: list[str]) -> int:

    from tinyseek.config import from_dict, read_file

    ap = CommandParser(
        prog="tinyseek sample",
        description="Rejection sampling: keep correct, well-formed completions as an SFT dataset.",
    )
    ap.add_argument("ckpt", nargs="?", help="checkpoint (tinyseek dir, transformers dir or .gguf) to sample from")
    ap.add_argument(
        "--config", help="a TOML/JSON file of SampleConfig fields (a recipe's sample stage); flags override it"
    )
    ap.add_argument("--task", help="task name: problems from its train split")
    ap.add_argument("--data", help="a JSONL/Parquet file of records (prompt, answer, ...) instead of --task")
    ap.add_argument("--n", type=int, help="number of problems (default 100)")
    ap.add_argument("--samples", type=int, help="completions per problem, K (default 8)")
    ap.add_argument("--temperature", type=float, help="sampling temperature (default 1.0)")
    ap.add_argument("--top-p", type=float, help="nucleus sampling mass (default 1.0)")
    ap.add_argument("--max-new-tokens", type=int, help="tokens per completion at most (default 128)")
    ap.add_argument("--difficulty", type=int, help="task difficulty (default: the task's own)")
    ap.add_argument("--seed", type=int, help="problem and sampling seed (default 0)")
    ap.add_argument("--prompt-template", help="chat (default) | r1-zero | raw | a text holding {prompt}")
    ap.add_argument(
        "--shortest", action="store_true", default=None, help="keep only the shortest verified completion per problem"
    )
    ap.add_argument("--dedup", action="store_true", default=None, help="drop repeated completions of a problem")
    ap.add_argument("--split", help="the task's side to draw problems from: train (default) | test")
    ap.add_argument("--system-prompt", help="system message of the chat template")
    ap.add_argument(
        "--accept", help="verified (default: rejection sampling) | any: every completion (a pipeline smoke test)"
    )
    ap.add_argument("--batch", type=int, help="sequences decoded together (default 256)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy machine)")
    ap.add_argument("--out", required=True, help="FILE.jsonl, or a directory (then DIR/sft.jsonl and DIR/stats.json)")
    a = ap.parse_args(argv)
    data = read_file(a.config) if a.config else {}
    flags = {
        "model": a.ckpt,
        "task": a.task,
        "data": a.data,
        "n": a.n,
        "samples": a.samples,
        "temperature": a.temperature,
        "top_p": a.top_p,
        "max_new_tokens": a.max_new_tokens,
        "difficulty": a.difficulty,
        "seed": a.seed,
        "prompt_template": a.prompt_template,
        "shortest": a.shortest,
        "dedup": a.dedup,
        "split": a.split,
        "system_prompt": a.system_prompt,
        "accept": a.accept,
        "batch": a.batch,
        "threads": a.threads,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    cfg = from_dict(SampleConfig, data, where=a.config or "")
    run(cfg, Path(a.out))
    return 0
