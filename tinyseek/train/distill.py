"""`tinyseek distill`: teach a small (dense) student what a teacher knows — R1's distillation, plus white-box KD.

Black-box (`mode = "blackbox"`, R1's method, 2501.12948 §2.4): the student is fine-tuned on the teacher's
verified traces — the output of `tinyseek sample` (rejection sampling) or any SFT-format rows. Only text
crosses over, so teacher and student may differ in architecture and tokenizer (a transformers teacher
through `HFEngine` and a tinyseek student). Every row is checked again here with the rule reward
(`accuracy_reward` against the row's `answer`) and dropped unless verified: the student never learns
from a wrong trace, whatever produced the file.

White-box (`mode = "whitebox"`, the vocabularies must match): the loss adds `kd_weight` x a KL divergence
between teacher and student token distributions on every completion token (forward, reverse or a mix,
at `kd_temperature`; see tinyseek/train/distill_loss.py for why it is over the teacher's top-k tokens
plus one bucket for the rest). The teacher's top-k log-probs are computed once before training and
cached to RUN/teacher_topk.safetensors (`teacher_cache = "auto"`), after which the teacher is dropped
from memory; `teacher_cache = "none"` keeps the teacher and computes them on the fly each step.
The two give the same loss (tests/test_distill.py).

The student is a `preset` (default `tiny-dense`, a dense MLA model) with `[model]` overrides, its
vocabulary sized to the tokenizer, or an `init` checkpoint. Training is tinyseek/train/loop.py's loop
(checkpoints, --resume, metrics, cost) with the SFT data code of tinyseek/data.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tinyseek.config import ConfigError, stage_cli, to_dict
from tinyseek.data import IGNORE, ExampleStream, collate, row_to_messages, sft_example
from tinyseek.dist import is_main
from tinyseek.errors import TinyseekError
from tinyseek.io import read_rows, write_atomic
from tinyseek.train.distill_loss import KD_KINDS, TeacherCache, build_teacher_cache, kd_loss, teacher_topk
from tinyseek.train.loop import Loop, StreamStage, TrainConfig, build_model, seed_everything

CACHE_FILE = "teacher_topk.safetensors"


@dataclass
class DistillConfig(TrainConfig):
    data: list[str] = field(
        default_factory=list
    )  # trace files (JSONL / Parquet / datasets dir): `tinyseek sample` output
    mode: str = "blackbox"  # blackbox: fine-tune on verified traces | whitebox: also match the teacher's distributions
    teacher: str = ""  # teacher checkpoint (whitebox; in blackbox it only lends its tokenizer when none is given)
    preset: str = "tiny-dense"  # student preset (ignored with init)
    model: dict = field(default_factory=dict)  # ModelConfig fields overriding the preset
    init: str = ""  # start the student from this checkpoint
    tokenizer: str = ""  # the student's tokenizer (tokenizer.json or a dir); default: init's, else the teacher's
    verify: bool = True  # drop rows whose answer the rule reward does not confirm (rows without an answer are an error)
    kd: str = "forward"  # forward | reverse | mix
    kd_mix: float = 0.5  # weight of forward KL in "mix"
    kd_temperature: float = 1.0  # softens both distributions before the KL (Hinton et al.)
    kd_top_k: int = 20  # the teacher's top-k logits kept per token (the rest of its mass lumped together)
    kd_weight: float = 1.0  # weight of the KD loss beside the cross-entropy on the traces
    teacher_cache: str = "auto"  # auto: RUN/teacher_topk.safetensors | none: on the fly | a file path
    max_len: int = 256  # tokens per example (longer ones are cut)
    lr: float = 1e-3
    batch_size: int = 32
    warmup_steps: int = 10

    def validate(self) -> None:
        super().validate()
        if not self.data:
            raise ConfigError("data: give the trace file(s) to distil from (e.g. the output of `tinyseek sample`)")
        if self.mode not in ("blackbox", "whitebox"):
            raise ConfigError(f"mode: must be blackbox or whitebox (got {self.mode!r})")
        if self.mode == "whitebox" and not self.teacher:
            raise ConfigError("teacher: whitebox distillation needs the teacher checkpoint")
        if self.kd not in KD_KINDS:
            raise ConfigError(f"kd: must be one of {', '.join(KD_KINDS)} (got {self.kd!r})")
        if not 0 <= self.kd_mix <= 1:
            raise ConfigError(f"kd_mix: must be between 0 and 1 (got {self.kd_mix})")
        if self.kd_temperature <= 0:
            raise ConfigError(f"kd_temperature: must be positive (got {self.kd_temperature})")
        if self.kd_top_k < 1:
            raise ConfigError(f"kd_top_k: must be >= 1 (got {self.kd_top_k})")
        if self.max_len < 2:
            raise ConfigError(f"max_len: must be >= 2 (got {self.max_len})")


# ----------------------------------------------------------------------------------------------
# data: only verified traces


def verified_rows(paths: list[str], verify: bool = True) -> tuple[list[tuple[str, dict]], int]:
    """Rows of the trace files whose completion the rule reward confirms; returns (rows, number dropped).

    A row is checked when it carries an `answer` (a `tinyseek sample` row or a task record with a
    completion): its last assistant message must earn accuracy_reward 1.0. A row without an answer
    cannot be checked, which is an error under `verify` (say `verify = false` to trust the file).
    """
    from tinyseek.rewards import accuracy_reward

    kept, dropped = [], 0
    for path in paths:
        for where, row in read_rows(path):
            msgs = row_to_messages(row, where)
            if verify:
                if not isinstance(row, dict) or row.get("answer") in (None, ""):
                    raise TinyseekError(
                        f"{where}: no 'answer' to verify the trace against (set verify = false to trust the file)"
                    )
                cols = {k: [row[k]] for k in ("answer", "task", "numbers", "target") if k in row}
                if accuracy_reward([msgs[:-1]], [msgs[-1]["content"]], **cols)[0] != 1.0:
                    dropped += 1
                    continue
            kept.append((where, row))
    return kept, dropped


def tokenize(tok, rows: list[tuple[str, dict]], max_len: int) -> list[tuple[list[int], list[int]]]:
    """SFT examples (ids, labels) cut to max_len + 1 tokens; rows with nothing left to learn are dropped."""
    out = []
    for where, row in rows:
        ids, labels = sft_example(tok, row_to_messages(row, where))
        ids, labels = ids[: max_len + 1], labels[: max_len + 1]
        if any(lab != IGNORE for lab in labels[1:]):
            out.append((ids, labels))
    return out


# ----------------------------------------------------------------------------------------------
# the stage


class DistillStage(StreamStage):
    """Batches of verified examples; the extra loss is the KD term (white-box) against cached or live teacher top-k."""

    def __init__(
        self,
        cfg: DistillConfig,
        examples: list,
        pad_id: int,
        cache: TeacherCache | None = None,
        teacher: torch.nn.Module | None = None,
    ):
        self.cfg, self.examples, self.pad_id = cfg, examples, pad_id
        self.cache, self.teacher = cache, teacher
        self.stream = ExampleStream(list(range(len(examples))), seed=cfg.seed)  # yields example indices

    def _teacher_topk(self, mb: dict, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is not None:
            lp, ix = self.cache.rows(mb["ids"])
            return lp.to(mask.device), ix.to(mask.device)
        # the teacher in its own precision, outside the student's autocast (dtype = bfloat16, or auto where bf16 is
        # native): the targets are the cached ones (build_teacher_cache runs without autocast) at any dtype
        with torch.no_grad(), torch.autocast(device_type=mask.device.type, enabled=False):
            logits = self.teacher(mb["tokens"].to(mask.device)).logits[mask]  # [N, V]
        return teacher_topk(logits, self.cfg.kd_top_k, self.cfg.kd_temperature)

    def extra_loss(self, out: Any, mb: dict) -> tuple[torch.Tensor, dict]:
        mask = mb["targets"].to(out.logits.device) != IGNORE  # [b, T]
        t_lp, t_ix = self._teacher_topk(mb, mask)
        kd = kd_loss(out.logits[mask], t_lp, t_ix, self.cfg.kd, self.cfg.kd_temperature, self.cfg.kd_mix)
        return self.cfg.kd_weight * kd, {"kd": kd}

    def train_step(self, loop: Loop) -> dict:
        ids = self.stream.next(loop.cfg.batch_size)
        micro = []
        for part in loop.split_batch(ids):
            mb = collate([self.examples[i] for i in part], self.pad_id)
            mb["ids"] = part
            micro.append(mb)
        extra = self.extra_loss if self.cfg.mode == "whitebox" else None
        return loop.supervised_step(micro, extra_loss=extra)


def _tokenizer_path(cfg: DistillConfig) -> Path:
    from tinyseek.tokenizer import TOKENIZER_FILE

    for cand in (cfg.tokenizer, cfg.init, cfg.teacher):
        if not cand:
            continue
        p = Path(cand)
        f = p / TOKENIZER_FILE if p.is_dir() else p
        if f.is_file():
            return f
        if cand == cfg.tokenizer:
            raise ConfigError(f"tokenizer: {cand}: no {TOKENIZER_FILE}")
    raise ConfigError("tokenizer: give the student's tokenizer (or an init / teacher checkpoint that holds one)")


def _same_tokenizer(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def run(cfg: DistillConfig, run_dir: Path, resume: bool = False) -> dict:
    from tinyseek.checkpoint import load_model
    from tinyseek.tokenizer import TOKENIZER_FILE, Tokenizer

    seed_everything(cfg.seed)
    tok_file = _tokenizer_path(cfg)
    tok = Tokenizer.load(tok_file)
    rows, dropped = verified_rows(cfg.data, cfg.verify)
    examples = tokenize(tok, rows, cfg.max_len)
    if not examples:
        raise TinyseekError(
            f"data: no verified traces to learn from in {', '.join(cfg.data)} ({dropped} rows failed verification)"
        )
    if is_main():
        print(
            f"distill: {len(examples)} verified traces ({dropped} rows dropped as unverified), mode {cfg.mode}",
            flush=True,
        )

    cache = teacher = None
    teacher_vocab = None
    if cfg.mode == "whitebox":
        teacher_tok = Path(cfg.teacher) / TOKENIZER_FILE
        if not teacher_tok.is_file() or not _same_tokenizer(teacher_tok, tok_file):
            raise ConfigError(
                f"teacher: whitebox distillation needs the student to use the teacher's tokenizer "
                f'({teacher_tok} differs from {tok_file}); use mode = "blackbox" across tokenizers'
            )
        teacher = load_model(cfg.teacher)
        teacher_vocab = teacher.cfg.vocab_size
        if cfg.teacher_cache != "none":
            path = run_dir / CACHE_FILE if cfg.teacher_cache == "auto" else Path(cfg.teacher_cache)
            expect = {"k": cfg.kd_top_k, "temperature": cfg.kd_temperature, "teacher": str(Path(cfg.teacher).resolve())}
            from tinyseek.train.distill_loss import data_hash

            expect["data"] = data_hash(examples)
            if path.is_file():
                cache = TeacherCache.load(path, expect=expect)
            else:
                cache = build_teacher_cache(
                    teacher,
                    examples,
                    cfg.kd_top_k,
                    cfg.kd_temperature,
                    batch_size=cfg.batch_size,
                    pad_id=tok.pad_id,
                    meta={"teacher": expect["teacher"]},
                )
                path.parent.mkdir(parents=True, exist_ok=True)
                if is_main():
                    cache.save(path)
            teacher = None  # the point of the cache: the teacher leaves memory before the student trains

    seed_everything(cfg.seed)
    student, student_cfg = build_model(cfg.preset, cfg.model, cfg.init, tok.vocab_size, cfg.max_len)
    if teacher_vocab is not None and student.cfg.vocab_size != teacher_vocab:
        raise ConfigError(
            f"model.vocab_size: the student's {student.cfg.vocab_size} differs from the teacher's {teacher_vocab} "
            "(whitebox needs one vocabulary)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_main():
        write_atomic(run_dir / TOKENIZER_FILE, tok_file.read_bytes())
    resolved = {**to_dict(cfg), "model": student_cfg, "n_examples": len(examples), "n_dropped": dropped}
    loop = Loop(
        cfg,
        student,
        run_dir,
        tokenizer_file=run_dir / TOKENIZER_FILE,
        resolved_config=resolved,
        resume=resume,
        stage_name="distill",
        seq_len=cfg.max_len,
    )
    if teacher is not None:
        teacher.to(loop.device)
    return loop.run(DistillStage(cfg, examples, tok.pad_id, cache, teacher))


def cli_distill(argv: list[str]) -> int:
    cfg, run_dir, resume = stage_cli(
        DistillConfig,
        argv,
        "tinyseek distill",
        "Distil a teacher into a (dense) student: fine-tune on its verified traces (blackbox), "
        "and in whitebox mode also match its token distributions.",
    )
    run(cfg, run_dir, resume)
    return 0
