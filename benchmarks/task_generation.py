"""Task generation and reward throughput: problems per second per task, and the batched draw vs the reference.

For each task: 100k training problems and 20k held-out ones (the held-out side rejects ~9 draws in 10), in
wall-clock seconds and CPU seconds (the development machine is shared, so CPU time is the steadier figure).
Last, rewards per second on gold completions. (A chunked variant of `generate` -- draw 10n problems, hash
them in one comprehension, then filter -- was measured at 0.57-0.92x of the plain per-draw loop, garbage
collection over the big chunk eating the saving, and was dropped; so was a per-task inlined batch draw,
0.9-1.1x.)

    .venv/bin/python benchmarks/task_generation.py [--n 100000]
"""

from __future__ import annotations

import argparse
import time

from tinyseek import rewards, tasks
from tinyseek.r1 import completion_text


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="training problems per task")
    args = ap.parse_args()
    n_test = max(1, args.n // 5)
    print(f"{'task':<16} {'train/s (cpu)':>14} {'test/s (cpu)':>13}")
    for name in tasks.names():
        task = tasks.get(name)
        _, w_tr, c_tr = timed(lambda: task.generate(args.n, seed=0, split="train"))
        _, w_te, c_te = timed(lambda: task.generate(n_test, seed=0, split="test"))
        print(
            f"{name:<16} {args.n / c_tr:>14,.0f} {n_test / c_te:>13,.0f}"
            f"   (wall: train {w_tr:.2f} s, test {w_te:.2f} s)"
        )
    print()
    for name in tasks.names():
        recs = tasks.get(name).generate(10_000, seed=1)
        comps = [completion_text(r) for r in recs]
        cols = {k: [r.get(k) for r in recs] for k in recs[0]}
        prompts = [r["prompt"] for r in recs]
        for f in (rewards.accuracy_reward, rewards.format_reward, rewards.language_reward):
            _, _, c = timed(lambda: f(prompts, comps, **cols))
            print(f"{name:<16} {f.__name__:<16} {len(recs) / c:>10,.0f} completions per CPU-second")


if __name__ == "__main__":
    main()
