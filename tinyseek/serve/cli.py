"""`tinyseek serve`: the command that loads a checkpoint and serves it, and `serve_in_thread` for tests and notebooks.

Both run the app of app.py (`create_app`) under uvicorn: the command in the foreground on the given address,
`serve_in_thread` on a free port in a background thread.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import sys
import threading
import time
from collections.abc import Iterator

from tinyseek.config import CommandParser
from tinyseek.errors import TinyseekError
from tinyseek.r1 import TEMPERATURE, TOP_P
from tinyseek.serve.app import ServeConfig, create_app
from tinyseek.serve.ledger import Prices, default_ledger, key_id


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parser() -> argparse.ArgumentParser:
    from tinyseek.inference.load import add_compile_flag

    p = CommandParser(
        prog="tinyseek serve", description="DeepSeek/OpenAI-compatible HTTP API and chat page for a checkpoint."
    )
    p.add_argument("ckpt", help="checkpoint directory (with tokenizer.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port to bind")
    p.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="accepted API key, or sha256:HEX of one (repeatable; held only hashed); none = no authentication",
    )
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without any --api-key")
    p.add_argument("--db", default=str(default_ledger()), help="SQLite usage ledger (the user's state directory)")
    p.add_argument(
        "--model-name", default="tinyseek", help="the model id clients send (deepseek-reasoner/-chat are aliases)"
    )
    p.add_argument("--max-batch", type=int, default=32, help="requests decoded together (engine slots)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting for a slot before 503")
    p.add_argument("--max-tokens", type=int, default=1024, help="default max_tokens when a request gives none")
    p.add_argument(
        "--temperature", type=float, default=TEMPERATURE, help="temperature when a request gives none (R1's 0.6)"
    )
    p.add_argument("--top-p", type=float, default=TOP_P, help="top_p when a request gives none (R1's 0.95)")
    p.add_argument(
        "--prompt-template",
        choices=["chat", "r1-zero"],
        default=None,
        help="how chat messages become a prompt (default: the template the checkpoint was trained in, else chat)",
    )
    p.add_argument("--rate-limit", type=int, default=600, help="requests per minute per key (0 = unlimited)")
    p.add_argument("--no-prefix-cache", action="store_true", help="disable context caching")
    p.add_argument("--cache-block", type=int, default=16, help="prefix cache block size in tokens")
    p.add_argument("--cache-mb", type=float, default=256.0, help="prefix cache memory budget in MiB")
    p.add_argument("--price-hit", type=float, default=Prices.cache_hit, help="$ per million cache-hit input tokens")
    p.add_argument("--price-miss", type=float, default=Prices.cache_miss, help="$ per million cache-miss input tokens")
    p.add_argument("--price-output", type=float, default=Prices.output, help="$ per million output tokens")
    p.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    add_compile_flag(p)
    p.add_argument(
        "--allow-weight-updates",
        action="store_true",
        help="accept POST /update_weights_from_disk (a GRPO trainer pushing its weights after each update)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0 = torch's default; 1 is fastest for tiny models on a busy box)",
    )
    return p


def _check_args(args) -> None:
    if not _is_loopback(args.host) and not args.api_key and not args.insecure:
        raise TinyseekError(
            f"--host {args.host}: refusing to serve beyond loopback without --api-key (or pass --insecure)"
        )
    if args.port < 0 or args.port > 65535:
        raise TinyseekError(f"--port: must be in 0..65535 (got {args.port})")
    for name in ("max_batch", "max_queue", "max_tokens", "cache_block"):
        if getattr(args, name) < 1:
            raise TinyseekError(f"--{name.replace('_', '-')}: must be >= 1 (got {getattr(args, name)})")


def bind(host: str, port: int):
    """A listening socket on host:port, bound before anything is loaded or announced: a port in use is one line
    (not "serving on ..." and then uvicorn's Errno 98)."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a just-closed server's port is free
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise TinyseekError(
                f"--port {port}: {host}:{port} is in use (another server?); choose another --port"
            ) from None
        raise TinyseekError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
    sock.listen(2048)  # connections wait in the backlog until the app runs: the address announced answers
    return sock


def _load(args):
    """The engine and its tokenizer, checked for serving."""
    import torch

    from tinyseek.inference.engine import Engine
    from tinyseek.inference.load import load_engine

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    engine = load_engine(args.ckpt, max_batch=args.max_batch, device=device, compile=args.compile)
    if not isinstance(engine, Engine):
        raise TinyseekError(
            f"{args.ckpt}: tinyseek serve runs tinyseek checkpoints (continuous batching on the MLA cache), "
            "not other transformers models"
        )
    tokenizer = engine.tokenizer
    if tokenizer is None:
        raise TinyseekError(f"{args.ckpt}: no tokenizer with the checkpoint (tokenizer.json)")
    if tokenizer.vocab_size > engine.cfg.vocab_size:
        raise TinyseekError(
            f"{args.ckpt}: tokenizer.json has {tokenizer.vocab_size} tokens, more than the model's "
            f"vocab_size={engine.cfg.vocab_size}"
        )
    return engine, tokenizer


def cli_serve(argv: list[str]) -> int:
    import uvicorn

    from tinyseek.provenance import trained_on

    args = _parser().parse_args(argv)
    _check_args(args)
    sock = bind(args.host, args.port)
    try:
        engine, tokenizer = _load(args)
        info = trained_on(args.ckpt)
        cfg = ServeConfig(
            model_name=args.model_name,
            api_keys=tuple(args.api_key),
            rate_limit=args.rate_limit,
            max_queue=args.max_queue,
            default_max_tokens=args.max_tokens,
            prefix_cache=not args.no_prefix_cache,
            cache_block=args.cache_block,
            cache_budget_mb=args.cache_mb,
            prices=Prices(args.price_hit, args.price_miss, args.price_output),
            db=args.db,
            allow_weight_updates=args.allow_weight_updates,
            temperature=args.temperature,
            top_p=args.top_p,
            prompt_template=args.prompt_template or info.template,
            trained_on=info.describe() if info.task else "",
            example=info.example(),
            single_turn=bool(info.task) or (args.prompt_template or info.template) == "r1-zero",
        )
        app = create_app(engine, tokenizer, cfg)
        for k in cfg.api_keys:
            print(f"tinyseek serve: key {k[:4]}... is {key_id(k)} in the ledger", file=sys.stderr)
        if info.task or info.prompt_template:
            print(f"tinyseek serve: {args.ckpt} was trained on {info.describe()}", file=sys.stderr)
        if args.prompt_template and info.prompt_template and args.prompt_template != info.prompt_template:
            print(
                f"tinyseek serve: warning: {args.ckpt} was trained in the {info.prompt_template} template, not "
                f"{args.prompt_template}",
                file=sys.stderr,
            )
        print(
            f"tinyseek serve: {args.ckpt} as {cfg.model_name!r} on http://{args.host}:{sock.getsockname()[1]}/  "
            f"(prompts in the {cfg.prompt_template} template; ledger {cfg.db})",
            file=sys.stderr,
        )
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", timeout: float = 30.0) -> Iterator[str]:
    """Run `app` under uvicorn in a background thread on a free port of `host`; yields the base URL.

    For tests and notebooks: the socket is bound before the server starts (no port race), and the
    server is shut down (lifespan included, so the scheduler thread stops) when the block exits.
    """
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("tinyseek: the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)
        sock.close()
