"""The `tinyseek` command: one subcommand per pipeline stage.

Each subcommand lives next to the code it drives, as a function `f(argv) -> int` that builds its own
argparse parser (so `tinyseek CMD --help` lists every flag). This table is the only registry; modules are
imported only when their command runs, so `tinyseek --help` is instant.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module:function, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("tinyseek.checkpoint:cli_init", "write a randomly initialised checkpoint from a preset"),
    "export": ("tinyseek.checkpoint:cli_export", "export a checkpoint to transformers' DeepseekV3 format"),
    "import": ("tinyseek.checkpoint:cli_import", "import a transformers DeepseekV3 directory as a checkpoint"),
    "cost": (
        "tinyseek.checkpoint:cli_cost",
        "parameters, active parameters and training FLOPs of a preset or checkpoint",
    ),
    "tasks": (
        "tinyseek.tasks.stage:cli_tasks",
        "list the verifiable tasks, print samples, or write a run's problem files",
    ),
    "tokenizer": ("tinyseek.tokenizer:cli_tokenizer", "train the byte-level BPE tokenizer"),
    "pretrain": ("tinyseek.train.pretrain:cli_pretrain", "pretrain a model on a reasoning corpus"),
    "sft": ("tinyseek.train.sft:cli_sft", "supervised fine-tuning (cold start) on chat or prompt/completion data"),
    "grpo": ("tinyseek.train.grpo:cli_grpo", "reinforcement learning with rule-based rewards (GRPO)"),
    "prm": ("tinyseek.train.prm:cli_prm", "train a process reward model (step scores), or score traces with one"),
    "sample": (
        "tinyseek.train.rejection:cli_sample",
        "rejection sampling: keep verified completions as an SFT dataset",
    ),
    "distill": ("tinyseek.train.distill:cli_distill", "distil a teacher into a (dense) student"),
    "eval": ("tinyseek.evaluate:cli_eval", "pass@1 / pass@k / cons@k on held-out problems"),
    "consolidate": (
        "tinyseek.train.parallel:cli_consolidate",
        "turn a sharded (FSDP2 / expert-parallel) step checkpoint into an ordinary one",
    ),
    "generate": ("tinyseek.chat:cli_generate", "generate text from a prompt (streams to the console)"),
    "chat": ("tinyseek.chat:cli_chat", "interactive multi-turn chat"),
    "serve": ("tinyseek.serve.cli:cli_serve", "DeepSeek/OpenAI-compatible HTTP API and chat page"),
    "usage": ("tinyseek.serve.ledger:cli_usage", "usage totals per key and day from a server's ledger"),
    "run": ("tinyseek.recipe:cli_run", "run a recipe (a TOML list of stages) into a run directory"),
    "report": ("tinyseek.report.card:cli_report", "write the report card (JSON, Markdown, plots) for a run"),
    "demo": ("tinyseek.recipe:cli_demo", "the whole R1 recipe in miniature, ending in a report card"),
}

# stage commands whose --config may also name a recipe holding one stage of their kind (tinyseek/recipe.py)
RECIPE_STAGE_COMMANDS = ("pretrain", "sft", "grpo", "sample", "distill")


def _usage() -> str:
    lines = ["usage: tinyseek COMMAND [options]   (tinyseek COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:  # the reader left (`tinyseek -h | head -2`): stop quietly, as `cat` would
        _quiet_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by the signal


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's own flush at exit does not raise BrokenPipeError again."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (a test capturing it): nothing to flush there
        pass


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from tinyseek import __version__

        print(f"tinyseek {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        from tinyseek.errors import unknown

        print(f"tinyseek: {unknown('command', name, COMMANDS, hint='tinyseek --help lists them')}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    mod_name, fn_name = target.split(":")
    from tinyseek.errors import TinyseekError

    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        print(f"tinyseek {name}: not available in this build ({e})", file=sys.stderr)
        return 2
    try:
        if name in RECIPE_STAGE_COMMANDS:
            from tinyseek.recipe import run_recipe_stage

            rc = run_recipe_stage(name, rest)
            if rc is not None:
                return rc
        return int(fn(rest) or 0)
    except TinyseekError as e:
        print(f"tinyseek {name}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file that cannot be read or written (a full disk, permissions): one line, no traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"tinyseek {name}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ntinyseek {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
