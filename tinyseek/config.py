"""Configuration: the model's shape (`ModelConfig` + named presets), and how every config is read from files and flags.

Configs are plain dataclasses. Derived quantities are properties, so a config file only ever holds
the knobs a person sets. Every bad value fails in `validate()` with one line that names the field.
Stage configs (pretrain, sft, grpo, ...) are dataclasses too and go through the same `from_dict`,
`load_file` and `parse_overrides`, so a TOML file, a JSON file and `--field value` flags all mean the
same thing everywhere; `stage_cli` is the one command-line parser every stage command uses.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import json
import math
import sys
import textwrap
import tokenize
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


from tinyseek.errors import TinyseekError, unknown
from tinyseek.io import write_atomic, write_json


class ConfigError(TinyseekError, ValueError):
    """A bad configuration value; the message is one line naming the field (and the file, when known)."""


T = TypeVar("T")


# ----------------------------------------------------------------------------------------------
# generic dataclass plumbing (shared by ModelConfig and every stage config)


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Coerce a parsed TOML/JSON/CLI value to the annotated type, or raise a one-line ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or (
        sys.version_info >= (3, 10) and origin is getattr(__import__("types"), "UnionType", None)
    ):
        if value is None and type(None) in args:
            return None
        last = None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, name)
            except ConfigError as e:
                last = e
        raise last or ConfigError(f"{name}: bad value {value!r}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{name}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a table, got {value!r}")
        inner = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, inner, f"{name}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    f = math.nan
                if f.is_integer():
                    return int(f)
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a table, got {value!r}")
        return from_dict(tp, value, where=name)
    return value


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a dict, rejecting unknown keys and coercing types; validates if it can."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.init}
    prefix = f"{where}: " if where else ""
    for k in data:
        if k not in known:
            raise ConfigError(f"{prefix}{unknown('field', k, known, of=f'for {cls.__name__}')}")
    try:
        kwargs = {k: _coerce(v, hints[k], k) for k, v in data.items()}
    except ConfigError as e:  # a wrong type names the file/preset too, like every other error here
        raise ConfigError(f"{prefix}{e}") from None
    try:
        obj = cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{prefix}{e}") from None
    if hasattr(obj, "validate"):
        try:
            obj.validate()
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}") from None
    return obj


def to_dict(obj: Any) -> dict:
    """A dataclass as a plain dict (nested dataclasses included), for JSON/TOML."""
    return dataclasses.asdict(obj)


def read_file(path: str | Path) -> dict:
    """Read a TOML or JSON file to a dict; a syntax error names the file (and line, where the parser says)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None


def load_file(cls: type[T], path: str | Path, overrides: dict | None = None) -> T:
    data = read_file(path)
    if overrides:
        data = {**data, **overrides}
    return from_dict(cls, data, where=str(path))


def write_toml(data: dict, path: str | Path) -> None:
    import tomli_w

    def clean(d: Any) -> Any:  # TOML has no null: drop None values
        if isinstance(d, dict):
            return {k: clean(v) for k, v in d.items() if v is not None}
        if isinstance(d, (list, tuple)):
            return [clean(v) for v in d]
        return d

    write_atomic(path, tomli_w.dumps(clean(data)))


def parse_value(text: str) -> Any:
    """A command-line value as a TOML file would give it (1e-5, 64, true, [2, 3], "x"); a bare word is itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(argv: list[str]) -> dict:
    """`--field value` / `--field=value` / `--flag` pairs to a dict (values stay strings; from_dict coerces)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("--"):
            raise ConfigError(f"unexpected argument {a!r} (overrides are --field value)")
        key = a[2:].replace("-", "_")
        if "=" in key:
            key, val = key.split("=", 1)
            out[key] = val
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out[key] = argv[i + 1]
            i += 2
        else:
            out[key] = "true"
            i += 1
    return out


# ----------------------------------------------------------------------------------------------
# the command line: a stage config from a file plus `--field value` flags


def _coerce_cli(cls: type, data: dict) -> dict:
    """CLI strings to config shapes: `--model.dim 128` -> {"model": {"dim": "128"}}; a dict-typed field given
    as `--tasks arithmetic=2000,countdown=500` -> {"arithmetic": 2000, "countdown": 500}."""
    hints = typing.get_type_hints(cls)
    out: dict = {}
    for k, v in data.items():
        if "." in k:
            head, rest = k.split(".", 1)
            out.setdefault(head, {})
            if not isinstance(out[head], dict):
                raise ConfigError(f"--{k}: {head} is not a table")
            out[head][rest] = v
            continue
        if typing.get_origin(hints.get(k)) is dict and isinstance(v, str):
            table = {}
            for part in filter(None, v.split(",")):
                if "=" not in part:
                    raise ConfigError(f"--{k}: expected name=value[,name=value...], got {v!r}")
                name, val = part.split("=", 1)
                table[name.strip()] = int(val) if val.strip().lstrip("-").isdigit() else val.strip()
            v = table
        out[k] = v
    return out


def _field_help(cls: type) -> dict[str, str]:
    """A config field's help line is the `# comment` on its line (or lines, for a field written over several) in
    the dataclass source, else the comment lines right above it (subclass first)."""
    out: dict[str, str] = {}
    for c in cls.__mro__:
        try:
            src = textwrap.dedent(inspect.getsource(c))
        except (OSError, TypeError):
            continue
        comments = {
            t.start[0]: t.string.lstrip("#").strip()
            for t in tokenize.generate_tokens(io.StringIO(src).readline)
            if t.type == tokenize.COMMENT
        }
        lines = src.splitlines()
        for node in ast.parse(src).body[0].body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                own = range(node.lineno, (node.end_lineno or node.lineno) + 1)
                text = next((comments[i] for i in own if comments.get(i)), "")
                above = node.lineno - 1
                while not text and above >= 1 and lines[above - 1].lstrip().startswith("#"):
                    above -= 1
                if not text and above < node.lineno - 1:
                    text = " ".join(comments[i] for i in range(above + 1, node.lineno))
                if text:
                    out.setdefault(node.target.id, text)
    return out


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with each flag's default shown where its help does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = default not in (None, False, "", [], argparse.SUPPRESS) and not isinstance(default, bool)
        if action.option_strings and shown and "default" not in text:
            text += " (default %(default)s)"
        return text


class CommandParser(argparse.ArgumentParser):
    """The parser of every `tinyseek` command: defaults shown in --help, and a mistyped flag answered with the
    closest known one ("did you mean --max-steps?")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        flags = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        if message.startswith("unrecognized arguments:"):
            given = [a.split("=", 1)[0] for a in message.split(":", 1)[1].split() if a.startswith("--")]
            if given:
                message = unknown("flag", given[0], flags, hint=f"{self.prog} --help lists them")
        super().error(message)


def stage_cli(cls: type, argv: list[str], prog: str, description: str) -> tuple[Any, Path, bool]:
    """Parse `--config FILE.toml --out RUN [--resume] [--field value ...]` into (config, run_dir, resume).

    Fields come from the dataclass defaults, then the file, then the flags (`--max-steps 50`, `--lr 3e-4`,
    `--model.dim 128`). With `--resume` and no `--config`, RUN/config.toml (the resolved config the run wrote) is used.
    """
    helps, width = _field_help(cls), max(len(f.name) for f in dataclasses.fields(cls))
    field_lines = "\n".join(
        f"  --{f.name.replace('_', '-'):<{width}}  {helps.get(f.name, '')} "
        f"(default {f.default if f.default is not dataclasses.MISSING else f.default_factory()!r})"
        for f in dataclasses.fields(cls)
    )
    ap = CommandParser(
        prog=prog,
        description=description,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="any config field can be set as a flag (dashes or underscores; `--model.FIELD` for the model):\n"
        + field_lines,
    )
    ap.add_argument("--config", help="TOML (or JSON) file with the stage's fields")
    ap.add_argument(
        "--out", required=True, help="run directory (config.toml, metrics.jsonl, checkpoints/, final/, summary.json)"
    )
    ap.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    a, rest = ap.parse_known_args(argv)
    run_dir = Path(a.out)
    where = cls.__name__
    data: dict = {}
    if a.config:
        data, where = read_file(a.config), a.config
    elif a.resume and (run_dir / "config.toml").is_file():
        data, where = read_file(run_dir / "config.toml"), str(run_dir / "config.toml")
    flags = parse_overrides(rest)
    check_flags(cls, flags, prog)
    cfg = from_dict(cls, overlay(cls, data, flags), where=where)
    return cfg, run_dir, a.resume


def check_flags(cls: type, flags: dict, prog: str) -> None:
    """Every `--field value` flag names a field of `cls` (`--model.FIELD` one of a table field); the first that
    does not is a one-line error with the closest flag ("did you mean --max-steps?")."""
    known = {f.name for f in dataclasses.fields(cls)}
    for k in flags:
        if k.split(".", 1)[0] not in known:
            flag, dashed = k.split(".", 1)[0].replace("_", "-"), [n.replace("_", "-") for n in known]
            raise ConfigError(unknown("flag", flag, dashed, show="--{}", hint=f"{prog} --help lists them"))


def overlay(cls: type, data: dict, flags: dict) -> dict:
    """A config's fields from a file (or a recipe stage), overlaid by command-line values (strings, as
    `parse_overrides` gives them): `--model.dim 128` merges into the file's [model] table; `--tasks a=1` replaces
    a table. Every command that takes a config file builds its config through here, and so does a recipe stage
    given to a stage command."""
    out = dict(data)
    dotted = {k.split(".", 1)[0] for k in flags if "." in k}
    for k, v in _coerce_cli(cls, flags).items():
        out[k] = {**out[k], **v} if k in dotted and isinstance(out.get(k), dict) else v
    return out


# ----------------------------------------------------------------------------------------------
# the model


@dataclass
class ModelConfig:
    """The shape of a DeepSeek-V3 model (report 2412.19437 §2). Field names follow DeepSeek's inference code.

    A dense model is `n_routed_experts = 0` (every layer then uses `inter_dim`).
    """

    vocab_size: int = 512
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    max_seq_len: int = 512
    norm_eps: float = 1e-6
    init_std: float = 0.02
    # Multi-head Latent Attention
    q_lora_rank: int = 0  # 0 = queries are not compressed
    kv_lora_rank: int = 32
    qk_nope_head_dim: int = 16
    qk_rope_head_dim: int = 8
    v_head_dim: int = 16
    # DeepSeekMoE
    n_dense_layers: int = 1  # the first layers use a dense MLP ("first_k_dense_replace")
    inter_dim: int = 256  # dense MLP hidden size
    moe_inter_dim: int = 64  # per-expert hidden size
    n_routed_experts: int = 8
    n_shared_experts: int = 1
    n_activated_experts: int = 2
    n_expert_groups: int = 1
    n_limited_groups: int = 1
    score_func: str = "sigmoid"  # sigmoid (V3) | softmax (V2)
    route_scale: float = 1.0
    bias_update_speed: float = 0.001  # gamma of auxiliary-loss-free balancing
    seq_aux_alpha: float = 0.0001  # weight of the complementary sequence-wise balance loss
    # multi-token prediction
    mtp_depth: int = 0
    mtp_loss_weight: float = 0.3
    # RoPE / YaRN (rope_factor 1 = plain RoPE)
    rope_theta: float = 10000.0
    rope_factor: float = 1.0
    original_seq_len: int = 4096
    beta_fast: int = 32
    beta_slow: int = 1
    mscale: float = 1.0
    # implementation switches: fast path and plain reference path (see tests)
    mla_impl: str = "absorbed"  # absorbed | naive
    moe_impl: str = "sorted"  # sorted (dense while decoding: model.use_dense) | dense | loop (reference)

    # -- derived -----------------------------------------------------------------------------
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0

    def layer_is_moe(self, layer: int) -> bool:
        return self.is_moe and layer >= self.n_dense_layers

    @property
    def n_moe_layers(self) -> int:
        return sum(self.layer_is_moe(i) for i in range(self.n_layers))

    @property
    def softmax_scale(self) -> float:
        """1/sqrt(d_qk), times YaRN's mscale^2 when the context is extended (as DeepSeek's inference code)."""
        s = self.qk_head_dim**-0.5
        if self.max_seq_len > self.original_seq_len and self.rope_factor > 1:
            m = 0.1 * self.mscale * math.log(self.rope_factor) + 1.0
            s = s * m * m
        return s

    @property
    def latent_cache_dim(self) -> int:
        """Values cached per token per layer by absorbed MLA: the normalised latent and the shared RoPE key."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    # -- checks and I/O ----------------------------------------------------------------------
    def validate(self) -> None:
        def need(cond: bool, name: str, msg: str) -> None:
            if not cond:
                raise ConfigError(f"{name}: {msg} (got {getattr(self, name)!r})")

        for name in (
            "vocab_size",
            "dim",
            "n_layers",
            "n_heads",
            "max_seq_len",
            "kv_lora_rank",
            "qk_rope_head_dim",
            "v_head_dim",
            "inter_dim",
            "original_seq_len",
        ):
            need(getattr(self, name) > 0, name, "must be positive")
        for name in (
            "q_lora_rank",
            "qk_nope_head_dim",
            "n_routed_experts",
            "n_shared_experts",
            "mtp_depth",
            "n_dense_layers",
        ):
            need(getattr(self, name) >= 0, name, "must be >= 0")
        need(self.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim", "must be even (RoPE rotates pairs)")
        need(self.n_dense_layers <= self.n_layers, "n_dense_layers", f"must be <= n_layers={self.n_layers}")
        need(self.norm_eps > 0, "norm_eps", "must be positive")
        need(self.rope_theta > 0, "rope_theta", "must be positive")
        need(self.rope_factor >= 1, "rope_factor", "must be >= 1")
        need(self.score_func in ("sigmoid", "softmax"), "score_func", "must be sigmoid or softmax")
        need(self.mla_impl in ("absorbed", "naive"), "mla_impl", "must be absorbed or naive")
        need(self.moe_impl in ("sorted", "dense", "loop"), "moe_impl", "must be sorted, dense or loop")
        need(self.mtp_loss_weight >= 0, "mtp_loss_weight", "must be >= 0")
        need(self.bias_update_speed >= 0, "bias_update_speed", "must be >= 0")
        need(self.seq_aux_alpha >= 0, "seq_aux_alpha", "must be >= 0")
        if self.is_moe:
            need(self.moe_inter_dim > 0, "moe_inter_dim", "must be positive for an MoE model")
            need(self.n_activated_experts >= 1, "n_activated_experts", "must be >= 1")
            need(
                self.n_activated_experts <= self.n_routed_experts,
                "n_activated_experts",
                f"must be <= n_routed_experts={self.n_routed_experts}",
            )
            need(self.n_expert_groups >= 1, "n_expert_groups", "must be >= 1")
            need(
                self.n_routed_experts % self.n_expert_groups == 0,
                "n_expert_groups",
                f"must divide n_routed_experts={self.n_routed_experts}",
            )
            need(
                1 <= self.n_limited_groups <= self.n_expert_groups,
                "n_limited_groups",
                f"must be between 1 and n_expert_groups={self.n_expert_groups}",
            )
            per_group = self.n_routed_experts // self.n_expert_groups
            need(
                self.n_limited_groups * per_group >= self.n_activated_experts,
                "n_limited_groups",
                f"the {self.n_limited_groups} chosen groups hold {self.n_limited_groups * per_group} experts, fewer "
                f"than n_activated_experts={self.n_activated_experts}",
            )
            need(self.route_scale > 0, "route_scale", "must be positive")

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "") -> ModelConfig:
        return from_dict(cls, data, where=where)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix == ".toml":
            write_toml(self.to_dict(), path)
        else:
            write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return load_file(cls, path)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        if name not in PRESETS:
            raise ConfigError(f"preset: {unknown('preset', name, PRESETS)}")
        return from_dict(cls, {**PRESETS[name], **overrides}, where=f"preset {name}")


PRESETS: dict[str, dict[str, Any]] = {
    # < 1M parameters: unit tests. Two MoE layers with two expert groups so group-limited routing is exercised.
    "nano": dict(
        vocab_size=256,
        dim=64,
        n_layers=3,
        n_heads=4,
        max_seq_len=256,
        q_lora_rank=32,
        kv_lora_rank=32,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=16,
        n_dense_layers=1,
        inter_dim=192,
        moe_inter_dim=32,
        n_routed_experts=8,
        n_shared_experts=1,
        n_activated_experts=2,
        n_expert_groups=2,
        n_limited_groups=1,
        mtp_depth=1,
    ),
    # ~8.2M total / ~3.6M active: the CPU demo teacher, and the shape of the CPU transformers anchor.
    "tiny": dict(
        vocab_size=4096,
        dim=256,
        n_layers=4,
        n_heads=4,
        max_seq_len=512,
        q_lora_rank=128,
        kv_lora_rank=64,
        qk_nope_head_dim=32,
        qk_rope_head_dim=16,
        v_head_dim=32,
        n_dense_layers=1,
        inter_dim=768,
        moe_inter_dim=128,
        n_routed_experts=16,
        n_shared_experts=1,
        n_activated_experts=4,
        mtp_depth=1,
    ),
    # a dense MLA student with about a third of tiny's active parameters
    "tiny-dense": dict(
        vocab_size=4096,
        dim=128,
        n_layers=4,
        n_heads=4,
        max_seq_len=512,
        q_lora_rank=0,
        kv_lora_rank=64,
        qk_nope_head_dim=32,
        qk_rope_head_dim=16,
        v_head_dim=32,
        n_dense_layers=4,
        inter_dim=384,
        n_routed_experts=0,
        n_shared_experts=0,
        n_activated_experts=0,
        mtp_depth=0,
    ),
    # 152.8M total / 45.2M active (`tinyseek cost --preset small`; +11.1M in the MTP module)
    "small": dict(
        vocab_size=32768,
        dim=512,
        n_layers=12,
        n_heads=8,
        max_seq_len=2048,
        q_lora_rank=256,
        kv_lora_rank=128,
        qk_nope_head_dim=64,
        qk_rope_head_dim=32,
        v_head_dim=64,
        n_dense_layers=1,
        inter_dim=1536,
        moe_inter_dim=192,
        n_routed_experts=32,
        n_shared_experts=1,
        n_activated_experts=4,
        mtp_depth=1,
    ),
    # the transformers GPU anchor's shape: 673M total / 138M active
    "gpu-500m": dict(
        vocab_size=32768,
        dim=1024,
        n_layers=12,
        n_heads=16,
        max_seq_len=4096,
        q_lora_rank=384,
        kv_lora_rank=256,
        qk_nope_head_dim=64,
        qk_rope_head_dim=32,
        v_head_dim=64,
        n_dense_layers=1,
        inter_dim=2816,
        moe_inter_dim=256,
        n_routed_experts=64,
        n_shared_experts=1,
        n_activated_experts=6,
        mtp_depth=1,
    ),
    # DeepSeek-V3 itself, for parameter and FLOP accounting only; never allocate it.
    "deepseek-v3-671b": dict(
        vocab_size=129280,
        dim=7168,
        n_layers=61,
        n_heads=128,
        max_seq_len=163840,
        q_lora_rank=1536,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        n_dense_layers=3,
        inter_dim=18432,
        moe_inter_dim=2048,
        n_routed_experts=256,
        n_shared_experts=1,
        n_activated_experts=8,
        n_expert_groups=8,
        n_limited_groups=4,
        route_scale=2.5,
        mtp_depth=1,
        rope_theta=10000.0,
        rope_factor=40.0,
        original_seq_len=4096,
        beta_fast=32,
        beta_slow=1,
        mscale=1.0,
    ),
}
