"""Evaluation: K samples for N held-out problems, scored by rule, with honest uncertainty.

Metrics (each per problem first, then averaged over problems, so every problem weighs the same):

    pass@1        the share of a problem's K samples that are right (R1's pass@1: mean over samples)
    pass@k        Chen et al. 2021's unbiased estimator 1 - C(K-c, k) / C(K, k) from c right out of K samples,
                  for k in 1, 2, 4, ... up to K (never a max over k draws, which would be biased upwards)
    cons@K        majority vote: the most common extracted answer among the K samples (numbers compared as
                  exact fractions, other answers as stripped strings; ties go to the answer seen first;
                  samples without an answer do not vote) is right
    format        share of samples in R1's exact layout (`tinyseek.rewards.format_reward` == 1)
    mean_length   generated tokens per sample

95% intervals, over problems (the problems are the sample; the K samples per problem are not independent
evidence about the task). For the [0, 1]-valued metrics: the Wilson score interval with the mean as the
observed proportion and N problems as the trials. For a binary per-problem score (cons@K, or anything at
K = 1) that is the textbook Wilson interval; for a fractional one (pass@1 with K > 1) it is conservative,
because a [0, 1] variable with mean p has variance at most p(1 - p). For mean_length: mean +- 1.96 standard
errors over problems. Problems whose gold answer cannot be scored (`accuracy_reward` gives None) are left
out of the accuracy metrics and counted in `n_unscored`.

Two models evaluated on the same problems are compared pairwise (`paired_comparison`): the mean per-problem
difference with a paired bootstrap 95% interval, and an exact sign test. Each result keeps its per-problem
scores (`problems`: `correct` per sample) so that a report can pair them.

`evaluate(engine, records, samples, params)` works with any engine that has `generate`, `encode_chat` and
`decode` (`Engine`, `HFEngine`); GRPO and the demo call it in-process. `tinyseek eval` wraps it.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path

from tinyseek.config import CommandParser, ConfigError
from tinyseek.errors import TinyseekError
from tinyseek.inference.sampling import SamplingParams, derive_seed
from tinyseek.io import write_json
from tinyseek.r1 import TEMPERATURE, TOP_P, render_prompt

Z95 = 1.959963984540054


# ----------------------------------------------------------------------------------------------
# the maths


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from c correct out of n samples (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    prod = 1.0  # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i), stable for large n
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def wilson(p_hat: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for an observed proportion p_hat over n trials."""
    if n <= 0:
        return (0.0, 1.0)
    denom = 1 + z * z / n
    centre = (p_hat + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p_hat * (1 - p_hat), 0.0) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_ci(values: list[float], z: float = Z95) -> tuple[float, float, float]:
    """Mean and a normal-approximation interval (mean +- z standard errors)."""
    n = len(values)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    m = sum(values) / n
    if n == 1:
        return (m, m, m)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    return (m, m - z * sd / math.sqrt(n), m + z * sd / math.sqrt(n))


def sign_test(b_better: int, a_better: int) -> float:
    """Exact two-sided sign test: the chance of a split of the untied pairs at least as uneven as this one if each
    favoured A or B with probability 1/2. Ties say nothing about the sign and are left out (p = 1 with none left)."""
    if b_better < 0 or a_better < 0:
        raise ValueError(f"sign_test: counts must be >= 0 (got {b_better}, {a_better})")
    n = b_better + a_better
    tail = sum(math.comb(n, i) for i in range(min(b_better, a_better) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_bootstrap(diffs: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95% interval of the mean of `diffs`, resampling the pairs with replacement (seeded: the same
    input and seed give the same interval on any machine)."""
    import random

    rng, n = random.Random(seed), len(diffs)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    return means[math.floor(0.025 * resamples)], means[math.ceil(0.975 * resamples) - 1]


def paired_comparison(a: list[float], b: list[float], resamples: int = 2000, seed: int = 0) -> dict:
    """B against A on the same problems (a[i] and b[i]: one problem's per-problem score, e.g. pass@1, under each):
    the mean difference B - A with a paired bootstrap 95% interval, and the exact sign test's p-value over the
    problems where they differ. Pairing removes the problems' own difficulty from the comparison, so it resolves
    differences that two overlapping per-arm intervals cannot. Seeds of a whole experiment pool by concatenating
    their pairs (the pair, one problem under one seed, is what the bootstrap resamples)."""
    if len(a) != len(b):
        raise TinyseekError(f"paired comparison: {len(a)} scores for A but {len(b)} for B (one pair per problem)")
    if not a:
        raise TinyseekError("paired comparison: no problems scored by both A and B")
    if resamples < 1:
        raise TinyseekError(f"paired comparison: resamples must be >= 1 (got {resamples})")
    diffs = [y - x for x, y in zip(a, b)]
    if not all(math.isfinite(d) for d in diffs):
        raise TinyseekError("paired comparison: a score is not a finite number")
    wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    n = len(diffs)
    return {
        "n": n,
        "a": sum(a) / n,
        "b": sum(b) / n,
        "diff": sum(diffs) / n,
        "ci95": [round(x, 6) for x in paired_bootstrap(diffs, resamples, seed)],
        "b_better": wins,
        "a_better": losses,
        "ties": n - wins - losses,
        "sign_p": sign_test(wins, losses),
    }


def normalize_answer(ans: str | None) -> str | None:
    """The voting key of an extracted answer: exact fraction for numbers ('42.0' == '84/2'), else stripped text."""
    if ans is None:
        return None
    from tinyseek.rewards import parse_number

    s = ans.strip()
    if not s:
        return None
    num = parse_number(s)
    if isinstance(num, Fraction):
        return f"{num.numerator}/{num.denominator}"
    return " ".join(s.split())


def majority_vote(answers: list[str | None]) -> int | None:
    """Index of a sample carrying the most common answer (ties: the answer seen first), None if none answered."""
    keys = [normalize_answer(a) for a in answers]
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    best = max(counts.values())
    for i, k in enumerate(keys):
        if k is not None and counts[k] == best:
            return i
    return None


def ks_for(samples: int) -> list[int]:
    """1, 2, 4, ... and K itself."""
    ks, k = [], 1
    while k < samples:
        ks.append(k)
        k *= 2
    return ks + [samples]


def summarize(
    correct: list[list[float | None]],
    answers: list[list[str | None]],
    formats: list[list[float]],
    lengths: list[list[int]],
) -> dict:
    """Metrics with 95% intervals from per-problem, per-sample results (see the module docstring)."""
    N = len(correct)
    K = len(correct[0]) if N else 0
    scored = [i for i in range(N) if all(c is not None for c in correct[i])]
    out: dict = {"n_problems": N, "n_unscored": N - len(scored), "samples": K}

    def prop(name: str, per_problem: list[float]) -> None:
        n = len(per_problem)
        m = sum(per_problem) / n if n else math.nan
        out[name] = {"value": m, "ci95": [round(x, 6) for x in wilson(m, n)] if n else [math.nan, math.nan]}

    c = {i: int(sum(correct[i])) for i in scored}
    for k in ks_for(K) if K else []:
        prop(f"pass@{k}", [pass_at_k(K, c[i], k) for i in scored])
    cons = []
    for i in scored:
        j = majority_vote(answers[i])
        cons.append(0.0 if j is None else float(correct[i][j]))
    if K:
        prop(f"cons@{K}", cons)
        prop("format", [sum(f == 1.0 for f in formats[i]) / K for i in range(N)])
        m, lo, hi = mean_ci([sum(lengths[i]) / K for i in range(N)])
        out["mean_length"] = {"value": m, "ci95": [lo, hi]}
    return out


def reasoning_stats(
    texts: list[str], lengths: list[int], truncated: list[bool], correct: list[float | None]
) -> dict[str, float | None]:
    """How a set of completions reasons, R1's Figures 2-3 at one point: the mean length in tokens of the right
    completions that stopped by themselves and of the wrong ones (length alone proves nothing, so the two apart),
    the share cut at the token limit, and the shares that reason at all, verify and backtrack, read by the tasks'
    own trace markers (`tinyseek.tasks.base.behaviours`: exact in the tasks' vocabulary, not keyword guesses).
    None where no completion falls in a group; unscored completions count in the shares, not the lengths."""
    from tinyseek.tasks.base import BEHAVIOURS, behaviours

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    marks = [behaviours(t) for t in texts]
    return {
        "len_right": mean([n for n, c, t in zip(lengths, correct, truncated) if c == 1.0 and not t]),
        "len_wrong": mean([n for n, c in zip(lengths, correct) if c is not None and c < 1.0]),
        "truncated": mean([float(t) for t in truncated]),
        **{f"share_{b}": mean([float(m[b]) for m in marks]) for b in BEHAVIOURS},
    }


# ----------------------------------------------------------------------------------------------
# running an engine


def prompt_renderer(tok, template: str):
    """`evaluate`'s `render` for a prompt template: None for the chat template (the engine's own, with a system
    prompt), else a record's prompt as `r1.render_prompt` writes it (R1-Zero's: as GRPO's policy renders it)."""
    if template == "chat":
        return None

    def render(rec: dict) -> list[int]:
        text, bos = render_prompt([{"role": "user", "content": rec["prompt"]}], template)
        return tok.encode(text, add_special=bos)

    return render


def evaluate(
    engine,
    records: list[dict],
    samples: int = 1,
    params: SamplingParams | None = None,
    system: str = "",
    keep_text: bool = True,
    progress=None,
    chunk: int = 64,
    render=None,
    dist=None,
) -> dict:
    """Generate `samples` completions for every record, score them with tinyseek.rewards, summarise.

    records: task records (`prompt`, `answer`, and for countdown `numbers`/`target`). Returns a dict with the
    metrics (see `summarize`), the sampling parameters, timings and, per problem, the answers, scores and
    (keep_text) the completions. Prompts are built with the engine tokenizer's chat template, or by
    `render(record) -> prompt ids` (GRPO evaluates with the prompt template it trains with).

    `dist` (a `tinyseek.dist.DistInfo`, under torchrun): each rank generates for its contiguous share of every
    chunk, seeded as the whole chunk would be (`first`), and the per-problem results are gathered in order, so
    every rank returns the one-process result. Every rank must call it.
    """
    from tinyseek import dist as dist_
    from tinyseek import rewards

    if not records:
        raise TinyseekError("evaluate: no records")
    if samples < 1:
        raise TinyseekError(f"samples: must be >= 1 (got {samples})")
    params = params or SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=256)
    for i, r in enumerate(records):
        if not isinstance(r.get("prompt"), str) or "answer" not in r:
            raise TinyseekError(f"record {i} (id {r.get('id', '?')}): needs a string 'prompt' and an 'answer'")
    t0 = time.time()

    def msgs(r: dict) -> list[dict]:
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": r["prompt"]}]

    rows = []  # (record index, correct, answers, formats, lengths, texts, truncated): this rank's
    n_tokens = 0
    for start in range(0, len(records), chunk):
        share = range(start, min(start + chunk, len(records)))
        if dist is not None:  # this rank's part of the chunk: seeded as its place in the chunk (first)
            mine = dist_.shard(len(share), dist)
            share = share[mine.start : mine.stop]
        recs = [records[i] for i in share]
        prompt_ids = [render(r) if render is not None else engine.encode_chat(msgs(r)) for r in recs]
        # a seed per chunk: the engines seed prompt j of a call from (seed, j), so chunks must not share one
        p_chunk = params if params.seed is None else params.replace(seed=derive_seed(params.seed, start))
        first = share.start - start
        groups = []
        if recs:
            kw = {"first": first} if first else {}  # (engines without a `first` are only ever called whole)
            groups = engine.generate(prompt_ids, p_chunk, n=samples, **kw)
        for i, r, ids, grp in zip(share, recs, prompt_ids, groups):
            comps = [c.text if c.text is not None else engine.decode(c.token_ids) for c in grp]
            prompt_text = engine.decode(ids)
            cols = {k: [r.get(k)] * len(comps) for k in ("answer", "task", "numbers", "target")}
            rows.append(
                (
                    i,
                    rewards.accuracy_reward([prompt_text] * len(comps), comps, **cols),
                    [rewards.extract_answer(t) for t in comps],
                    rewards.format_reward([prompt_text] * len(comps), comps),
                    [len(c.token_ids) for c in grp],
                    comps,
                    [c.finish_reason == "length" for c in grp],
                )
            )
            n_tokens += sum(len(c.token_ids) for c in grp)
        if progress is not None:
            progress(min(start + chunk, len(records)), len(records))
    if dist is not None and dist.enabled:
        rows = sorted(dist_.gather(rows, dist), key=lambda row: row[0])
        n_tokens = int(dist_.all_sum(float(n_tokens), dist))
    _, correct, answers, formats, lengths, texts, truncated = (list(col) for col in zip(*rows))
    elapsed = time.time() - t0
    out = summarize(correct, answers, formats, lengths)
    flat = lambda xs: [x for row in xs for x in row]  # noqa: E731
    out["reasoning"] = reasoning_stats(flat(texts), flat(lengths), flat(truncated), flat(correct))
    out["params"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(params).items()}
    out["time_s"] = round(elapsed, 3)
    out["tokens_per_s"] = round(n_tokens / elapsed, 1) if elapsed > 0 else None
    out["problems"] = [
        {
            "id": r.get("id", i),
            "prompt": r["prompt"],
            "answer": r["answer"],
            "correct": correct[i],
            "answers": answers[i],
            "lengths": lengths[i],
            **({"completions": texts[i]} if keep_text else {}),
        }
        for i, r in enumerate(records)
    ]
    return out


def format_table(result: dict) -> str:
    """The metrics as an aligned text table."""
    rows = [("metric", "value", "95% CI")]
    for name, m in result.items():
        if isinstance(m, dict) and "value" in m:
            fmt = (lambda x: f"{x:.1f}") if name == "mean_length" else (lambda x: f"{x:.3f}")
            rows.append((name, fmt(m["value"]), f"[{fmt(m['ci95'][0])}, {fmt(m['ci95'][1])}]"))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}" for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    head = f"{result.get('task', 'data')}: {result['n_problems']} problems x {result['samples']} samples"
    if result.get("n_unscored"):
        head += f" ({result['n_unscored']} unscorable, left out of accuracy)"
    return head + "\n" + "\n".join(lines)


@dataclass
class EvalConfig:
    """The fields of `tinyseek eval` and of a recipe's eval stage. The defaults are R1's protocol (DeepSeek-R1 §3.1:
    pass@1 as the mean over k samples at T = 0.6, top-p 0.95), with its smallest k, 4."""

    model: str = ""  # tinyseek checkpoint, transformers model directory, or .gguf file
    task: str = ""  # task name; its held-out side is used
    data: str = ""  # a JSONL/Parquet file of records (prompt, answer, ...) instead of a task
    n: int = 100  # number of problems (0: every record of data)
    samples: int = 4  # completions per problem, K (R1's protocol: K >= 4)
    temperature: float = TEMPERATURE  # sampling temperature (0 = greedy)
    top_p: float = TOP_P  # nucleus sampling mass
    max_new_tokens: int = 256  # tokens per completion at most
    difficulty: int | list[int] | None = None  # task difficulty, or a list of levels (default: the task's own)
    seed: int = 0  # problem and sampling seed
    greedy: bool = False  # also decode every problem once at temperature 0 (eval.json's "greedy")
    batch: int = 64  # sequences decoded together (problems per call: batch // samples)
    system: str = ""  # system message
    prompt_template: str = "chat"  # chat: the model's chat template | r1-zero: R1-Zero's template (a base model)
    dtype: str = ""  # fp32 | bf16 (default: as stored)
    compile: bool = False  # compile the decode step (tinyseek checkpoints; see inference/engine.py)
    threads: int = 0  # CPU threads for torch (0: torch's choice; 1 is best on a busy machine)

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("model: the checkpoint to evaluate is required")
        if bool(self.task) == bool(self.data):
            raise ConfigError("task: give exactly one of task or data")
        if self.task:
            from tinyseek import tasks

            tasks.get(self.task)
        if self.n < (1 if self.task else 0):
            raise ConfigError(f"n: must be >= {1 if self.task else 0} (got {self.n})")
        for name in ("samples", "batch", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1 (got {getattr(self, name)})")
        if self.prompt_template not in ("chat", "r1-zero"):
            raise ConfigError(f"prompt_template: must be chat or r1-zero (got {self.prompt_template!r})")
        if self.prompt_template == "r1-zero" and self.system:
            raise ConfigError("system: R1-Zero's template has no system message")

    @property
    def name(self) -> str:
        """What was evaluated: the task, or the data file's stem."""
        return self.task or Path(self.data).stem


def _records(cfg: EvalConfig) -> list[dict]:
    from tinyseek import tasks

    if cfg.task:
        return tasks.get(cfg.task).generate(cfg.n, seed=cfg.seed, split="test", difficulty=cfg.difficulty)
    records = tasks.load_records(cfg.data)
    return records[: cfg.n] if cfg.n > 0 else records


def run(cfg: EvalConfig, out: Path, resume: bool = False) -> dict:
    """K samples per held-out problem (pass@1, pass@k, cons@K with 95% intervals), with `greedy` also one greedy
    decode each -> OUT/eval.json (the sampled run's result, the greedy one under "greedy"); returns what it wrote.

    Problems go to the engine batch // samples at a time, so that their K samples fill the batch. Under torchrun
    each rank evaluates its share and rank 0 writes. An evaluation is cheap and written at once: `resume` changes
    nothing (it runs again).
    """
    from tinyseek.dist import init_distributed
    from tinyseek.inference.load import load_engine
    from tinyseek.precision import dtype_arg

    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    records = _records(cfg)
    d = init_distributed()
    engine = load_engine(
        cfg.model,
        max_batch=max(cfg.batch, cfg.samples),
        dtype=dtype_arg(cfg.dtype or None),
        device=d.device,
        compile=cfg.compile,
    )
    if getattr(engine, "tokenizer", None) is None:
        raise TinyseekError(f"{cfg.model}: no tokenizer with the checkpoint (tokenizer.json)")

    def prog(done: int, total: int) -> None:
        if d.is_main:
            print(f"\r{done}/{total} problems", end="", file=sys.stderr, flush=True)

    render = prompt_renderer(engine.tokenizer, cfg.prompt_template)
    params = SamplingParams(
        temperature=cfg.temperature,
        top_p=cfg.top_p if cfg.temperature > 0 else 1.0,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
    )
    t0 = time.perf_counter()
    result = {
        "task": cfg.name,
        "model": cfg.model,
        "data": cfg.data,
        "difficulty": cfg.difficulty,
        "prompt_template": cfg.prompt_template,
        "n": len(records),
        **evaluate(
            engine,
            records,
            cfg.samples,
            params,
            system=cfg.system,
            progress=prog,
            chunk=max(1, cfg.batch // cfg.samples),
            render=render,
            dist=d,
        ),
    }
    gen = sum(sum(p["lengths"]) for p in result["problems"])
    if cfg.greedy:
        g = evaluate(
            engine,
            records,
            1,
            SamplingParams(temperature=0.0, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed),
            system=cfg.system,
            keep_text=False,
            chunk=cfg.batch,
            render=render,
            dist=d,
        )
        gen += sum(sum(p["lengths"]) for p in g["problems"])
        result["greedy"] = g
    result["generated_tokens"] = gen
    result["wall_s"] = round(time.perf_counter() - t0, 3)
    if d.is_main:
        print(file=sys.stderr)
        write_json(out / "eval.json", result, indent=1)
    return result


def levels_arg(text: str) -> int | list[int]:
    """`--difficulty 2` or `--difficulty 2,3` (several levels, mixed)."""
    import argparse

    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a level or levels like 2,3 (got {text!r})") from None
    if not levels:
        raise argparse.ArgumentTypeError(f"expected a level or levels like 2,3 (got {text!r})")
    return levels[0] if len(levels) == 1 else levels


def default_out(ckpt: str, name: str) -> Path:
    """runs/eval/RUN-STAGE-CKPT-NAME for a checkpoint of a run (`runs/demo/grpo/final` -> demo-grpo-final-addition),
    runs/eval/CKPT-NAME otherwise; a directory that holds an earlier evaluation gets the next free `-2`, `-3`, ...
    (an evaluation is never overwritten by another's default)."""
    p = Path(ckpt.rstrip("/"))
    parts = [p.stem if p.suffix == ".gguf" else p.name]
    stage = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    if (stage / "config.toml").is_file():
        parts.insert(0, stage.name)
        if (stage.parent / "recipe.json").is_file():
            parts.insert(0, stage.parent.name)
    base = Path("runs/eval") / "-".join([*parts, name]).replace(":", "-").replace("/", "-")
    out, i = base, 1
    while (out / "eval.json").exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


def _defaults_from_checkpoint(a) -> None:
    """What the flags leave out (task, difficulty, template) from what the checkpoint was trained on, said on one
    line; a flag that differs from it gets a one-line warning (a 2-digit model scores 0% on 4-digit problems)."""
    from tinyseek.provenance import levels_text, trained_on

    info = trained_on(a.ckpt)
    said, warn = [], []
    if not a.task and not a.data and info.task:
        a.task = info.task
        said.append(f"task {info.task}")
    if a.task and info.task and a.task != info.task:
        warn.append(f"it was trained on {info.task}, not {a.task}")
    if a.task == info.task and info.levels:
        if a.difficulty is None:
            a.difficulty = info.difficulty
            said.append(f"difficulty {levels_text(info.levels)}")
        elif not set([a.difficulty] if isinstance(a.difficulty, int) else a.difficulty) <= set(info.levels):
            warn.append(f"it was trained on difficulty {levels_text(info.levels)}, not {a.difficulty}")
    if a.prompt_template is None:
        a.prompt_template = info.template
        if info.prompt_template:
            said.append(f"the {info.template} template")
    elif info.prompt_template and a.prompt_template != info.prompt_template:
        warn.append(f"it was trained in the {info.prompt_template} template, not {a.prompt_template}")
    src = f" ({', '.join(info.sources)})" if info.sources else ""
    if said:
        print(f"tinyseek eval: {', '.join(said)}: what {a.ckpt} was trained on{src}", file=sys.stderr)
    for w in warn:
        print(f"tinyseek eval: warning: {a.ckpt}: {w}; expect a lower score", file=sys.stderr)


def cli_eval(argv: list[str]) -> int:
    from tinyseek import tasks
    from tinyseek.config import from_dict
    from tinyseek.dist import is_main
    from tinyseek.inference.load import add_compile_flag

    d = EvalConfig()
    ap = CommandParser(
        prog="tinyseek eval",
        description="pass@1 / pass@k / cons@k with 95% intervals on held-out problems. The task, difficulty and "
        "prompt template default to what the checkpoint was trained on, where its run says.",
    )
    ap.add_argument("ckpt", help="tinyseek checkpoint, transformers model directory, or .gguf file")
    ap.add_argument(
        "--task",
        default=d.task,
        help=f"task name ({', '.join(tasks.names())}); its test split is used (default: the checkpoint's task)",
    )
    ap.add_argument(
        "--data", default=d.data, help="a JSONL/Parquet file of records (prompt, answer, ...) instead of a task"
    )
    ap.add_argument("--n", type=int, default=d.n, help="number of problems (0: every record of --data)")
    ap.add_argument("--samples", type=int, default=d.samples, help="completions per problem, K (R1's protocol: K >= 4)")
    ap.add_argument("--temperature", type=float, default=d.temperature, help="sampling temperature (0 = greedy)")
    ap.add_argument("--top-p", type=float, default=d.top_p, help="nucleus sampling mass")
    ap.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="tokens per completion at most")
    ap.add_argument(
        "--difficulty",
        type=levels_arg,
        default=None,
        help="task difficulty, or levels like 2,3 (default: the checkpoint's, else the task's own)",
    )
    ap.add_argument("--seed", type=int, default=d.seed, help="problem and sampling seed")
    ap.add_argument(
        "--greedy", action="store_true", help="also decode every problem once at temperature 0 (eval.json's greedy)"
    )
    ap.add_argument("--system", default=d.system, help="system message")
    ap.add_argument(
        "--prompt-template",
        default=None,
        choices=["chat", "r1-zero"],
        help="chat: the model's chat template; r1-zero: R1-Zero's template, for a base model (default: the one the "
        "checkpoint was trained in, else chat)",
    )
    ap.add_argument("--batch", type=int, default=d.batch, help="sequences decoded together")
    ap.add_argument("--dtype", default=d.dtype, help="fp32 | bf16 (default: as stored)")
    add_compile_flag(ap)
    ap.add_argument(
        "--out",
        default=None,
        help="directory for eval.json (default: runs/eval/RUN-STAGE-CKPT-TASK, a fresh one for each evaluation)",
    )
    ap.add_argument("--overwrite", action="store_true", help="replace an earlier eval.json in --out")
    ap.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="CPU threads for torch (0: torch's choice; 1 is best on a busy machine)",
    )
    a = ap.parse_args(argv)
    _defaults_from_checkpoint(a)
    cfg = from_dict(
        EvalConfig, {"model": a.ckpt, **{f.name: getattr(a, f.name) for f in fields(EvalConfig) if f.name != "model"}}
    )
    out = Path(a.out) if a.out else default_out(cfg.model, cfg.name)
    if a.out and (out / "eval.json").exists() and not a.overwrite:
        raise TinyseekError(
            f"{out / 'eval.json'}: holds an earlier evaluation (--overwrite replaces it; or another --out)"
        )
    result = run(cfg, out)
    if not is_main():
        return 0
    print(format_table(result))
    print(f"wrote {out / 'eval.json'}  ({result['time_s']:.1f} s, {result['tokens_per_s']} tokens/s)")
    return 0
