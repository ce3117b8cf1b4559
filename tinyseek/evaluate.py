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

`evaluate(engine, records, samples, params)` works with any engine that has `generate`, `encode_chat` and
`decode` (`Engine`, `HFEngine`); GRPO and the demo call it in-process. `tinyseek eval` wraps it.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

from tinyseek.errors import TinyseekError
from tinyseek.inference.sampling import SamplingParams, derive_seed
from tinyseek.io import write_json

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


# ----------------------------------------------------------------------------------------------
# running an engine


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
        raise TinyseekError(f"samples: must be >= 1, got {samples}")
    params = params or SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=256)
    for i, r in enumerate(records):
        if not isinstance(r.get("prompt"), str) or "answer" not in r:
            raise TinyseekError(f"record {i} (id {r.get('id', '?')}): needs a string 'prompt' and an 'answer'")
    t0 = time.time()

    def msgs(r: dict) -> list[dict]:
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": r["prompt"]}]

    rows = []  # (record index, correct, answers, formats, lengths, texts): this rank's
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
                )
            )
            n_tokens += sum(len(c.token_ids) for c in grp)
        if progress is not None:
            progress(min(start + chunk, len(records)), len(records))
    if dist is not None and dist.enabled:
        rows = sorted(dist_.gather(rows, dist), key=lambda row: row[0])
        n_tokens = int(dist_.all_sum(float(n_tokens), dist))
    _, correct, answers, formats, lengths, texts = (list(col) for col in zip(*rows))
    elapsed = time.time() - t0
    out = summarize(correct, answers, formats, lengths)
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


def cli_eval(argv: list[str]) -> int:
    import argparse

    from tinyseek import tasks
    from tinyseek.inference.load import add_compile_flag, load_engine
    from tinyseek.precision import dtype_arg

    ap = argparse.ArgumentParser(
        prog="tinyseek eval", description="pass@1 / pass@k / cons@k with 95% intervals on held-out problems."
    )
    ap.add_argument("ckpt", help="tinyseek checkpoint, transformers model directory, or .gguf file")
    ap.add_argument("--task", default=None, help=f"task name ({', '.join(tasks.names())}); its test split is used")
    ap.add_argument(
        "--data", default=None, help="a JSONL/Parquet file of records (prompt, answer, ...) instead of a task"
    )
    ap.add_argument("--n", type=int, default=100, help="number of problems")
    ap.add_argument("--samples", type=int, default=4, help="completions per problem, K (R1's protocol: K >= 4)")
    ap.add_argument("--temperature", type=float, default=0.6, help="sampling temperature (0 = greedy)")
    ap.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass")
    ap.add_argument("--max-new-tokens", type=int, default=256, help="tokens per completion at most")
    ap.add_argument("--difficulty", type=int, default=None, help="task difficulty (default: the task's own)")
    ap.add_argument("--seed", type=int, default=0, help="problem and sampling seed")
    ap.add_argument("--system", default="", help="system message")
    ap.add_argument("--batch", type=int, default=64, help="sequences decoded together")
    ap.add_argument("--dtype", default=None, help="fp32 | bf16 (default: as stored)")
    add_compile_flag(ap)
    ap.add_argument("--out", default=None, help="directory for eval.json (default runs/eval/<ckpt>-<task>)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's choice; 1 is best on a busy machine)",
    )
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if (args.task is None) == (args.data is None):
        raise TinyseekError("give exactly one of --task NAME or --data FILE")
    if args.n < 1 or args.samples < 1:
        raise TinyseekError("--n and --samples must be >= 1")
    if args.task is not None:
        records = tasks.get(args.task, field="--task").generate(
            args.n, seed=args.seed, split="test", difficulty=args.difficulty
        )
        name = args.task
    else:
        records = tasks.load_records(args.data)[: args.n]
        name = Path(args.data).stem
    params = SamplingParams(
        temperature=args.temperature,
        top_p=args.top_p if args.temperature > 0 else 1.0,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    from tinyseek.dist import init_distributed

    d = init_distributed()  # under torchrun: each rank evaluates its share of the problems (rank 0 writes)
    engine = load_engine(
        args.ckpt, max_batch=args.batch, dtype=dtype_arg(args.dtype), device=d.device, compile=args.compile
    )
    if getattr(engine, "tokenizer", None) is None:
        raise TinyseekError(f"{args.ckpt}: no tokenizer with the checkpoint (tokenizer.json)")

    def prog(done: int, total: int) -> None:
        if d.is_main:
            print(f"\r{done}/{total} problems", end="", file=sys.stderr, flush=True)

    result = {
        "task": name,
        "ckpt": str(args.ckpt),
        **evaluate(engine, records, args.samples, params, system=args.system, progress=prog, dist=d),
    }
    if not d.is_main:
        return 0
    print(file=sys.stderr)
    out = Path(args.out) if args.out else Path("runs/eval") / f"{Path(str(args.ckpt).rstrip('/')).name}-{name}"
    write_json(out / "eval.json", result, indent=1)
    print(format_table(result))
    print(f"wrote {out / 'eval.json'}  ({result['time_s']:.1f} s, {result['tokens_per_s']} tokens/s)")
    return 0
