"""The console commands: `tinyseek generate` (streams a reply) and `tinyseek chat` (a multi-turn REPL).

Both take a tinyseek checkpoint, a transformers directory or a .gguf file (`load_engine`), build the prompt
with the model's own chat template, and stream text as the engine produces it; `chat` shows the model's
thinking dimmed and its answer plain.
"""

from __future__ import annotations

import sys

import torch

from tinyseek.errors import TinyseekError
from tinyseek.inference.load import add_compile_flag, load_engine
from tinyseek.inference.sampling import SamplingParams
from tinyseek.precision import dtype_arg


def _sampling_flags(ap) -> None:
    ap.add_argument("--max-new-tokens", type=int, default=256, help="tokens to generate at most")
    ap.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0 = greedy")
    ap.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    ap.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = off)")
    ap.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min_p * the top probability")
    ap.add_argument("--seed", type=int, default=None, help="sampling seed (same seed, same output)")
    ap.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default: as stored)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: torch's choice; 1 is best on a busy machine)",
    )
    ap.add_argument(
        "--speculative",
        type=int,
        default=0,
        metavar="K",
        help="MTP speculative decoding with K drafts a step (needs --temperature 0; 0 = off)",
    )
    add_compile_flag(ap)


def _params(args) -> SamplingParams:
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.speculative and args.temperature != 0:
        raise TinyseekError("--speculative: greedy decoding only, add --temperature 0")
    return SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        seed=args.seed,
    )


def _stream(engine, prompt_ids: list[int], params: SamplingParams, write) -> str:
    """Run one request to the end, passing each new piece of text to `write`; returns the whole text."""
    if hasattr(engine, "stream"):
        return engine.stream(prompt_ids, params, write)
    rid = engine.add_request(prompt_ids, params)
    with torch.inference_mode():
        while engine.has_unfinished():
            for ev in engine.step():
                if ev.rid == rid and ev.text:
                    write(ev.text)
    return engine.collect(rid).text or ""


def _load_chat_engine(args):
    """A batch-1 engine for interactive use; text in and out needs the checkpoint's tokenizer."""
    engine = load_engine(
        args.ckpt, max_batch=1, speculative=args.speculative, dtype=dtype_arg(args.dtype), compile=args.compile
    )
    if engine.tokenizer is None:
        raise TinyseekError(f"{args.ckpt}: no tokenizer with the checkpoint (tokenizer.json)")
    return engine


def cli_generate(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="tinyseek generate", description="Generate from a prompt, streaming tokens to the console."
    )
    ap.add_argument("ckpt", help="tinyseek checkpoint, transformers model directory, or .gguf file")
    ap.add_argument("--prompt", required=True, help="the user message")
    ap.add_argument("--raw", action="store_true", help="feed the prompt as is (no chat template)")
    _sampling_flags(ap)
    args = ap.parse_args(argv)
    params = _params(args)
    engine = _load_chat_engine(args)
    ids = (
        engine.encode_chat([{"role": "user", "content": args.prompt}])
        if not args.raw
        else engine.tokenizer.encode(args.prompt)
    )
    _stream(engine, ids, params, lambda t: (sys.stdout.write(t), sys.stdout.flush()))
    sys.stdout.write("\n")
    return 0


DIM, RESET = "\033[2m", "\033[0m"


class _ThinkDimmer:
    """Writes streamed text, dimming everything between <think> and </think>."""

    def __init__(self, out, color: bool):
        self.out, self.color, self.inside, self.buf = out, color, False, ""

    def __call__(self, text: str) -> None:
        self.buf += text
        while self.buf:
            tag = "</think>" if self.inside else "<think>"
            i = self.buf.find(tag)
            if i < 0:
                keep = next(
                    (k for k in range(len(tag) - 1, 0, -1) if self.buf.endswith(tag[:k])), 0
                )  # a tag may be split
                self._write(self.buf[: len(self.buf) - keep])
                self.buf = self.buf[len(self.buf) - keep :]
                return
            self._write(self.buf[:i])
            self.buf = self.buf[i + len(tag) :]
            self.inside = not self.inside

    def _write(self, s: str) -> None:
        if s:
            self.out.write(f"{DIM}{s}{RESET}" if self.inside and self.color else s)
            self.out.flush()

    def close(self) -> None:
        self._write(self.buf)
        self.buf = ""


def cli_chat(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="tinyseek chat",
        description="Multi-turn chat; the thinking part is shown dimmed. Ctrl-D to quit, /reset to clear.",
    )
    ap.add_argument("ckpt", help="tinyseek checkpoint, transformers model directory, or .gguf file")
    ap.add_argument("--system", default="", help="system message")
    ap.add_argument("--no-color", action="store_true", help="no ANSI dimming of the thinking part")
    _sampling_flags(ap)
    args = ap.parse_args(argv)
    params = _params(args)
    engine = _load_chat_engine(args)
    history = [{"role": "system", "content": args.system}] if args.system else []
    color = not args.no_color and sys.stdout.isatty()
    while True:
        try:
            user = input("> ")
        except EOFError:
            print()
            return 0
        if user.strip() == "/reset":
            history = history[:1] if args.system else []
            continue
        if not user.strip():
            continue
        history.append({"role": "user", "content": user})
        ids = engine.encode_chat(history)
        dim = _ThinkDimmer(sys.stdout, color)
        text = _stream(engine, ids, params, dim)
        dim.close()
        print()
        history.append({"role": "assistant", "content": text})
