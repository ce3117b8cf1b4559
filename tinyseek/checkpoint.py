"""Checkpoint directories: written whole or not at all, and checked tensor by tensor when read.

A checkpoint is a directory: `config.json` (ModelConfig), `model.safetensors`, `tokenizer.json` when the
model has one, and `trainer_state.pt` when it carries training state. Every writer builds it in a hidden
temporary sibling and renames it into place, so a crash or a bad input never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from tinyseek.config import ConfigError, ModelConfig
from tinyseek.errors import TinyseekError
from tinyseek.io import atomic_dir  # noqa: F401  (also public here: checkpoints are its main user)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TRAINER_STATE_FILE = "trainer_state.pt"


def _contiguous_cpu(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def write_weights(dir_: Path, cfg: ModelConfig, state_dict: dict[str, torch.Tensor], tokenizer_file: str | Path | None = None) -> None:
    """Write config.json + model.safetensors (+ tokenizer.json) into an existing directory."""
    from safetensors.torch import save_file

    cfg.save(dir_ / CONFIG_FILE)
    save_file(_contiguous_cpu(state_dict), str(dir_ / WEIGHTS_FILE), metadata={"format": "pt", "tinyseek": "1"})
    if tokenizer_file is not None and Path(tokenizer_file).is_file():
        shutil.copyfile(tokenizer_file, dir_ / TOKENIZER_FILE)


def save_checkpoint(model: torch.nn.Module, out: str | Path, tokenizer_file: str | Path | None = None,
                    trainer_state: dict | None = None) -> Path:
    """Atomically write `model` (a tinyseek Transformer with `.cfg`) as a checkpoint directory."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        write_weights(tmp, model.cfg, model.state_dict(), tokenizer_file)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE_FILE)
    return out


def read_config_json(path: str | Path, missing: str = f"no {CONFIG_FILE}") -> Any:
    """A directory's config.json, parsed; a missing or malformed file is a one-line error naming it."""
    f = Path(path) / CONFIG_FILE
    if not f.is_file():
        raise TinyseekError(f"{path}: {missing}")
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TinyseekError(f"{f}: invalid JSON ({e})") from None


def read_config(path: str | Path) -> ModelConfig:
    f = Path(path) / CONFIG_FILE
    data = read_config_json(path, missing=f"not a checkpoint (no {CONFIG_FILE})")
    try:
        return ModelConfig.from_dict(data, where=str(f))
    except ConfigError as e:
        raise TinyseekError(str(e)) from None


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    f = Path(path) / WEIGHTS_FILE
    if not f.is_file():
        raise TinyseekError(f"{path}: no {WEIGHTS_FILE}")
    try:
        return load_file(str(f))
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise TinyseekError(f"{f}: unreadable safetensors file ({e})") from None


def check_state_dict(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor], source: str) -> None:
    """One-line error naming the first missing, unexpected or misshaped tensor."""
    missing = [k for k in expected if k not in got]
    if missing:
        raise TinyseekError(f"{source}: missing tensor {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = [k for k in got if k not in expected]
    if extra:
        raise TinyseekError(f"{source}: unexpected tensor {extra[0]!r}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    for k, v in expected.items():
        if tuple(got[k].shape) != tuple(v.shape):
            raise TinyseekError(f"{source}: tensor {k!r} has shape {tuple(got[k].shape)}, the config expects {tuple(v.shape)}")


def is_hf_dir(path: str | Path) -> bool:
    """A transformers directory (config.json with a model_type) rather than a tinyseek checkpoint."""
    f = Path(path) / CONFIG_FILE
    if not f.is_file():
        return False
    try:
        return "model_type" in json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A tinyseek checkpoint directory or an exported transformers DeepseekV3 directory, as a tinyseek model."""
    path = Path(path)
    if not path.is_dir():
        raise TinyseekError(f"{path}: no such checkpoint directory")
    if is_hf_dir(path):
        from tinyseek.hf import load_hf_as_tinyseek

        model = load_hf_as_tinyseek(path)
    else:
        from tinyseek.model import Transformer

        cfg = read_config(path)
        model = Transformer(cfg)
        sd = read_weights(path)
        check_state_dict(model.state_dict(), sd, str(path / WEIGHTS_FILE))
        model.load_state_dict(sd)
    model.to(device=device)
    if dtype is not None:
        model.to(dtype=dtype)
    model.eval()
    return model
