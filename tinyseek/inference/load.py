"""`load_engine`: the engine that serves a path — tinyseek's own for tinyseek checkpoints, `HFEngine` otherwise."""

from __future__ import annotations

from pathlib import Path

import torch

from tinyseek.checkpoint import CONFIG_FILE, is_hf_dir, load_model
from tinyseek.errors import TinyseekError
from tinyseek.inference.engine import Engine
from tinyseek.inference.hf_engine import HFEngine
from tinyseek.tokenizer import Tokenizer


def load_engine(path: str | Path, max_batch: int = 64, max_len: int | None = None, speculative: bool = False,
                dtype: torch.dtype | None = None, gguf_file: str | None = None):
    """A tinyseek checkpoint (or exported DeepseekV3 dir) -> `Engine`; any other transformers dir or a .gguf file
    -> `HFEngine`. The tokenizer comes along (tokenizer.json in a tinyseek checkpoint)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".gguf":
        gguf_file, p = p.name, p.parent
    if not p.exists():
        raise TinyseekError(f"{p}: no such checkpoint or model directory")
    hf_native = False
    if is_hf_dir(p):
        import json

        hf_native = json.loads((p / CONFIG_FILE).read_text(encoding="utf-8")).get("model_type") != "deepseek_v3"
    if gguf_file is not None or hf_native or not (p / CONFIG_FILE).is_file():
        if speculative:
            raise TinyseekError(f"{path}: speculative decoding needs a tinyseek checkpoint with an MTP module")
        return HFEngine.from_pretrained(p, gguf_file=gguf_file, dtype=dtype, max_batch=max_batch)
    model = load_model(p, dtype=dtype)
    tok = None
    if (p / "tokenizer.json").is_file():
        tok = Tokenizer.load(p)
    return Engine(model, tok, max_batch=max_batch, max_len=max_len, speculative=speculative)
