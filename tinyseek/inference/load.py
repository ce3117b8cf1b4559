"""`load_engine`: the engine that serves a path — tinyseek's own for tinyseek models, `HFEngine` for the rest."""

from __future__ import annotations

from pathlib import Path

import torch

from tinyseek.checkpoint import load
from tinyseek.errors import TinyseekError
from tinyseek.inference.engine import Engine
from tinyseek.inference.hf_engine import HFEngine


def add_compile_flag(parser) -> None:
    """The `--compile` flag of generate, chat, eval and serve (passed on as `load_engine(compile=...)`)."""
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the decode step (tinyseek checkpoints: ~1 min compiling, then 1.3-2.9x the speed, dev/LOG.md)",
    )


def load_engine(
    path: str | Path,
    max_batch: int = 64,
    max_len: int | None = None,
    speculative: bool = False,
    dtype: torch.dtype | None = None,
    gguf_file: str | None = None,
    device: str | torch.device = "cpu",
    compile: bool | str = False,
):
    """A tinyseek checkpoint (or exported DeepseekV3 dir) -> `Engine`; any other transformers dir or a .gguf file
    -> `HFEngine` (`checkpoint.load` decides which). The model's tokenizer comes along when it has one.
    `compile`: the engine's compiled decode step (tinyseek models only; see `Engine`)."""
    loaded = load(Path(path) / gguf_file if gguf_file else path, device=device, dtype=dtype)
    if loaded.kind == "hf":
        if speculative:
            raise TinyseekError(f"{path}: speculative decoding needs a tinyseek checkpoint with an MTP module")
        if compile:
            raise TinyseekError(f"{path}: --compile needs a tinyseek checkpoint (the transformers engine runs eagerly)")
        return HFEngine(loaded.model, loaded.tokenizer, max_batch=max_batch)
    return Engine(
        loaded.model, loaded.tokenizer, max_batch=max_batch, max_len=max_len, speculative=speculative, compile=compile
    )
