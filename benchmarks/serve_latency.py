"""`tinyseek serve` latency and throughput, against its peers measured in the same run.

    .venv/bin/python benchmarks/serve_latency.py [--preset tiny] [--clients 16] [--new-tokens 32]

Random weights of the preset (EOS banned, so every request makes exactly --new-tokens tokens), a
tokenizer trained on a few lines, the server in-process on 127.0.0.1, the official `openai` client in a
second process (`--in-process-clients` to share the server's process and GIL).
1. Sequential: one streaming request at a time — time to first token (TTFT) and tokens/s.
2. Concurrent: --clients streaming requests at once — aggregate tokens/s, TTFT p50/p95; the ratio to (1)
   is what continuous batching buys.
3. The peer without HTTP: `Engine.generate` on the same prompts at the same batch size; the ratio is the
   server's overhead (SSE, JSON, the scheduler thread, the event loop).
4. Context caching: a long shared system prompt with max_tokens=1, TTFT on a server with the prefix cache
   (second request: a hit) against one without it (--no-prefix-cache); the ratio is what a hit saves.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai  # noqa: E402
import torch  # noqa: E402

from tinyseek.config import ModelConfig  # noqa: E402
from tinyseek.inference.engine import Engine  # noqa: E402
from tinyseek.inference.sampling import SamplingParams  # noqa: E402
from tinyseek.model import Transformer  # noqa: E402
from tinyseek.serve.app import ServeConfig, create_app  # noqa: E402
from tinyseek.serve.cli import serve_in_thread  # noqa: E402
from tinyseek.tokenizer import Tokenizer  # noqa: E402

WORDS = "the model thinks about a sum then answers with one number and a short check of its work".split()


def make_engine(model, tok, batch):
    eng = Engine(model, tok, max_batch=batch)
    eng.logit_hook = lambda rids, logits: logits[:, tok.eos_id].fill_(float("-inf"))
    return eng


async def stream_one(client, messages, max_tokens):
    t0 = time.perf_counter()
    ttft, n = None, 0
    stream = await client.chat.completions.create(
        model="tinyseek",
        messages=messages,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for c in stream:
        if (
            c.choices
            and ttft is None
            and (c.choices[0].delta.content or (c.choices[0].delta.model_extra or {}).get("reasoning_content"))
        ):
            ttft = time.perf_counter() - t0
        if c.usage:
            n = c.usage.completion_tokens
            hit = c.usage.model_extra["prompt_cache_hit_tokens"]
    return ttft if ttft is not None else time.perf_counter() - t0, n, time.perf_counter() - t0, hit


def run_clients(url, prompts, max_tokens, concurrent):
    async def main():
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=600) as client:
            if concurrent:
                return await asyncio.gather(*[stream_one(client, p, max_tokens) for p in prompts])
            return [await stream_one(client, p, max_tokens) for p in prompts]

    t0 = time.perf_counter()
    res = asyncio.run(main())
    return res, time.perf_counter() - t0


_POOL = None


def run_clients_elsewhere(url, prompts, max_tokens, concurrent):
    """run_clients in a separate process (spawned once), so the clients' JSON parsing does not share the
    server's GIL: the figures are then the server's, not the server's plus an in-process client's."""
    global _POOL
    if _POOL is None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        _POOL = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    return _POOL.submit(run_clients, url, prompts, max_tokens, concurrent).result()


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--sequential", type=int, default=4, help="requests in the one-at-a-time run")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared, overloaded box two OpenMP threads spin against each other)",
    )
    ap.add_argument("--system-words", type=int, default=300, help="length of the shared system prompt (words)")
    ap.add_argument("--in-process-clients", action="store_true", help="run the clients in the server's process")
    args = ap.parse_args()
    clients = run_clients if args.in_process_clients else run_clients_elsewhere

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = Tokenizer.train([" ".join(WORDS)] * 20, 600)
    model = Transformer(ModelConfig.preset(args.preset, vocab_size=tok.vocab_size)).eval()
    prompts = [[{"role": "user", "content": " ".join(WORDS[i % 7 : i % 7 + 6]) + f" {i}"}] for i in range(args.clients)]
    N = args.new_tokens
    print(
        f"preset {args.preset}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, torch threads "
        f"{torch.get_num_threads()}, {args.clients} clients x {N} new tokens (EOS banned)"
    )
    eng = make_engine(model, tok, args.clients)
    ids = [tok.encode(tok.chat(p)) for p in prompts]
    eng.generate(ids[:2], SamplingParams(max_new_tokens=4, temperature=0))
    eng_t = min(timed(lambda: eng.generate(ids, SamplingParams(max_new_tokens=N, temperature=0))) for _ in range(2))
    eng_tps = len(ids) * N / eng_t
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ServeConfig(rate_limit=0, max_queue=4 * args.clients, db=f"{tmp}/u.sqlite")
        with serve_in_thread(create_app(make_engine(model, tok, args.clients), tok, cfg)) as url:
            clients(url, prompts[:1], 4, False)  # warm-up
            seq, seq_t = clients(url, prompts[: args.sequential], N, False)
            conc, conc_t = clients(url, prompts, N, True)
        seq_tps = sum(r[1] for r in seq) / seq_t
        conc_tps = sum(r[1] for r in conc) / conc_t
        assert all(r[1] == N for r in seq + conc), "a request stopped early"
        print(
            f"1. sequential:  {seq_tps:8.1f} tok/s   TTFT median {statistics.median(r[0] for r in seq) * 1e3:7.1f} ms"
        )
        print(
            f"2. concurrent:  {conc_tps:8.1f} tok/s   TTFT p50 {pct([r[0] for r in conc], 0.5) * 1e3:7.1f} ms  "
            f"p95 {pct([r[0] for r in conc], 0.95) * 1e3:7.1f} ms   -> {conc_tps / seq_tps:.2f}x sequential"
        )

        print(
            f"3. Engine.generate, no HTTP: {eng_tps:8.1f} tok/s   -> the server reaches {conc_tps / eng_tps:.2f}x of it"
        )

        system = " ".join(WORDS[i % len(WORDS)] for i in range(args.system_words))
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": "and the answer"}]
        n_prompt = len(tok.encode(tok.chat(msgs)))
        out = {}
        for cache in (False, True):
            cfg = ServeConfig(rate_limit=0, prefix_cache=cache, db=f"{tmp}/c{int(cache)}.sqlite")
            with serve_in_thread(create_app(make_engine(model, tok, 4), tok, cfg)) as url:
                clients(url, [msgs], 1, False)  # fills the cache (when on)
                runs = [clients(url, [msgs], 1, False)[0][0] for _ in range(5)]
            out[cache] = (statistics.median(r[2] for r in runs), runs[-1][3])
        print(
            f"4. {n_prompt}-token prompt, max_tokens=1: latency without the prefix cache "
            f"{out[False][0] * 1e3:7.1f} ms, with it {out[True][0] * 1e3:7.1f} ms ({out[True][1]} tokens hit)  -> "
            f"{out[False][0] / out[True][0]:.2f}x faster"
        )


if __name__ == "__main__":
    try:
        main()
    finally:
        if _POOL is not None:
            _POOL.shutdown()
