"""The console commands: `tinyseek generate` (streams a reply) and `tinyseek chat` (a multi-turn REPL).

Both take a tinyseek checkpoint, a transformers directory or a .gguf file (`load_engine`), build the prompt in the
template the checkpoint was trained in (the chat template, or R1-Zero's: `provenance.trained_on`), and stream text
as the engine produces it. On a terminal the reply is split as the server splits it (serve/reasoning.py, one
splitter for both): the reasoning dimmed, the answer plain, no tags. `generate` into a pipe or a file writes the raw
completion (tags included), for scripts.

`chat` opens with a banner saying what the model is, what it was trained on and a prompt it can answer (a model
trained on 2-digit additions answers those, and gives noise to anything else), and takes slash commands (/help,
/reset, /exit; `exit` and `quit` too) instead of sending them to the model.
"""

from __future__ import annotations

import argparse
import sys

import torch

from tinyseek.config import CommandParser
from tinyseek.errors import TinyseekError, unknown
from tinyseek.inference.load import add_compile_flag, load_engine
from tinyseek.inference.sampling import SamplingParams
from tinyseek.precision import dtype_arg
from tinyseek.provenance import TrainedOn, trained_on
from tinyseek.r1 import TEMPERATURE, TOP_P, render_prompt
from tinyseek.serve.reasoning import REASONING, ReasoningSplitter

DIM, RESET = "\033[2m", "\033[0m"
COMMANDS = {
    "/help": "show this list",
    "/reset": "forget the conversation and start over",
    "/exit": "leave (also /quit, exit, quit, Ctrl-D)",
}
EXIT_WORDS = ("/exit", "/quit", "exit", "quit")


def _sampling_flags(ap) -> None:
    ap.add_argument("--max-new-tokens", type=int, default=256, help="tokens to generate at most")
    ap.add_argument(
        "--temperature", type=float, default=TEMPERATURE, help="sampling temperature; 0 = greedy (R1's 0.6)"
    )
    ap.add_argument("--top-p", type=float, default=TOP_P, help="nucleus sampling mass (R1's 0.95)")
    ap.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = off)")
    ap.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min_p * the top probability")
    ap.add_argument("--seed", type=int, default=None, help="sampling seed (same seed, same output)")
    ap.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default: as stored)")
    ap.add_argument(
        "--prompt-template",
        choices=["chat", "r1-zero"],
        default=None,
        help="chat template, or R1-Zero's (default: the one the checkpoint was trained in, else chat)",
    )
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
    if args.max_new_tokens < 1:
        raise TinyseekError(f"--max-new-tokens: must be >= 1 (got {args.max_new_tokens})")
    return SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        seed=args.seed,
    )


def _stream(engine, prompt_ids: list[int], params: SamplingParams, write) -> str:
    """Run one request to the end, passing each new piece of text to `write`; returns the whole text. Ctrl-C stops
    the request (the engine is left with nothing running) and is raised on."""
    if hasattr(engine, "stream"):
        return engine.stream(prompt_ids, params, write)
    rid = engine.add_request(prompt_ids, params)
    try:
        with torch.inference_mode():
            while engine.has_unfinished():
                for ev in engine.step():
                    if ev.rid == rid and ev.text:
                        write(ev.text)
    except KeyboardInterrupt:
        engine.abort(rid)
        raise
    return engine.collect(rid).text or ""


def _load_chat_engine(args):
    """A batch-1 engine for interactive use; text in and out needs the checkpoint's tokenizer."""
    engine = load_engine(
        args.ckpt, max_batch=1, speculative=args.speculative, dtype=dtype_arg(args.dtype), compile=args.compile
    )
    if engine.tokenizer is None:
        raise TinyseekError(f"{args.ckpt}: no tokenizer with the checkpoint (tokenizer.json)")
    return engine


def prompt_ids(engine, messages: list[dict], template: str) -> list[int]:
    """The conversation as prompt ids in `template` (chat | r1-zero)."""
    text, bos = render_prompt(messages, template)
    return engine.tokenizer.encode(text, add_special=bos) if bos else engine.encode_chat(messages)


class Reply:
    """Writes a streamed completion the way a person reads it: the reasoning (dimmed on a terminal, after a
    `thinking:` label elsewhere), then the answer on its own line, plain; the tags never shown."""

    def __init__(self, out, color: bool):
        self.out, self.color = out, color
        self.splitter = ReasoningSplitter()
        self.field: str | None = None  # the part being written

    def __call__(self, text: str) -> None:
        self._write(self.splitter.feed(text))

    def close(self) -> None:
        self._write(self.splitter.finish())
        reasoning, content = self.splitter.result()
        if not content and not reasoning:
            self.out.write(self._dim("(no text: the model ended at once)"))
        self.out.write("\n")
        self.out.flush()

    def _dim(self, text: str) -> str:
        return f"{DIM}{text}{RESET}" if self.color else text

    def _write(self, pieces: list[tuple[str, str]]) -> None:
        for field_, text in pieces:
            if field_ != self.field:
                if self.field is not None:
                    self.out.write("\n")
                if field_ == REASONING:
                    self.out.write(self._dim("thinking: "))
                self.field = field_
            self.out.write(self._dim(text) if field_ == REASONING else text)
        self.out.flush()


def _say_template(args, info: TrainedOn) -> str:
    """The template to prompt in: the flag's, else the checkpoint's (a different flag is warned about)."""
    if args.prompt_template and info.prompt_template and args.prompt_template != info.prompt_template:
        print(
            f"warning: {args.ckpt} was trained in the {info.prompt_template} template, not {args.prompt_template}",
            file=sys.stderr,
        )
    return args.prompt_template or info.template


def cli_generate(argv: list[str]) -> int:
    ap = CommandParser(
        prog="tinyseek generate",
        description="Generate from a prompt, streaming to the console: on a terminal the reasoning dimmed and the "
        "answer plain; into a pipe or file the raw completion.",
    )
    ap.add_argument("ckpt", help="tinyseek checkpoint, transformers model directory, or .gguf file")
    ap.add_argument("--prompt", required=True, help="the user message")
    ap.add_argument("--raw", action="store_true", help="feed the prompt as is (no template)")
    _sampling_flags(ap)
    args = ap.parse_args(argv)
    params = _params(args)
    template = _say_template(args, trained_on(args.ckpt))
    engine = _load_chat_engine(args)
    messages = [{"role": "user", "content": args.prompt}]
    ids = engine.tokenizer.encode(args.prompt) if args.raw else prompt_ids(engine, messages, template)
    if sys.stdout.isatty():
        reply = Reply(sys.stdout, color=True)
        _stream(engine, ids, params, reply)
        reply.close()
        return 0
    _stream(engine, ids, params, lambda t: (sys.stdout.write(t), sys.stdout.flush()))
    sys.stdout.write("\n")
    return 0


def banner(ckpt: str, engine, info: TrainedOn, template: str, history: bool) -> str:
    """Who the model is, what it can answer (an example), and how to leave."""
    model = getattr(engine, "model", None)
    size = f", {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters" if model is not None else ""
    lines = [f"tinyseek chat: {ckpt}{size}"]
    if info.task:
        lines.append(f"trained on {info.describe()}; anything else gets noise")
        lines.append(f"try: {info.example()}")
    else:
        lines.append(f"its run does not say what it was trained on; prompts use the {template} template")
    if not history:
        why = "R1-Zero's template has one turn" if template == "r1-zero" else "it was trained on single problems"
        lines.append(f"each message is asked on its own ({why}; --history keeps the conversation)")
    lines.append("/help for commands; /reset starts over; /exit or Ctrl-D quits")
    return "\n".join(lines)


def _command(line: str, history: list[dict], system: list[dict]) -> str | None:
    """A slash command (or exit/quit): its answer, "" to leave, None when the line is a message for the model."""
    word = line.strip().split()[0] if line.strip() else ""
    if line.strip().lower() in EXIT_WORDS or word in EXIT_WORDS:
        return ""
    if word == "/help":
        return "\n".join(f"  {name:<7} {what}" for name, what in COMMANDS.items())
    if word == "/reset":
        history[:] = list(system)
        return "(conversation cleared)"
    if word.startswith("/"):
        return unknown("command", word, [*COMMANDS, "/quit"], hint="/help lists them")
    return None


def cli_chat(argv: list[str]) -> int:
    ap = CommandParser(
        prog="tinyseek chat",
        description="Multi-turn chat in the terminal: the reasoning dimmed, the answer plain. /help lists the "
        "commands; /exit, exit or Ctrl-D quits.",
    )
    ap.add_argument("ckpt", help="tinyseek checkpoint, transformers model directory, or .gguf file")
    ap.add_argument("--system", default="", help="system message (chat template only)")
    ap.add_argument("--no-color", action="store_true", help="no ANSI dimming of the reasoning")
    ap.add_argument(
        "--history",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="send the conversation so far with each message (default: yes, unless the checkpoint was trained on "
        "single problems of a task or in R1-Zero's one-turn template)",
    )
    _sampling_flags(ap)
    args = ap.parse_args(argv)
    params = _params(args)
    info = trained_on(args.ckpt)
    template = _say_template(args, info)
    if args.system and template == "r1-zero":
        raise TinyseekError("--system: R1-Zero's template has no system message")
    engine = _load_chat_engine(args)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history = list(system)
    keep = args.history if args.history is not None else not (info.task or template == "r1-zero")
    color = not args.no_color and sys.stdout.isatty()
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    print(banner(args.ckpt, engine, info, template, keep))
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        answer = _command(line, history, system)
        if answer == "":
            return 0
        if answer is not None:
            print(answer)
            continue
        if not line.strip():
            continue
        turn = (history if keep else list(system)) + [{"role": "user", "content": line}]
        reply = Reply(sys.stdout, color)
        try:
            text = _stream(engine, prompt_ids(engine, turn, template), params, reply)
        except KeyboardInterrupt:
            reply.close()
            print("(stopped)")
            continue
        reply.close()
        history = turn + [{"role": "assistant", "content": text}]
