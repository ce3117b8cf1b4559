"""`tinyseek pretrain`: next-token prediction (plus MTP) on documents — task traces and plain text.

The corpus is `tasks` (name -> number of generated training problems, each with its worked solution)
and `text_files`; held-out loss is measured on the tasks' test side and on every `eval_text_every`-th
text document (kept out of training). Without a `tokenizer`, one is trained on the training corpus
(vocabulary `vocab_size`, default the preset's) and saved as RUN/tokenizer.json; it travels into every
checkpoint. See tinyseek/train/loop.py for everything around the step (checkpoints, resume, metrics, cost).

`packing` decides what a row holds. `packed` (the default) concatenates documents and cuts the stream into rows of
`seq_len` tokens: no padding, but a document sees the ones before it in its row (the model has no document mask).
`document` gives every document a row of its own, padded per batch: padding costs compute, but nothing outside
the document is in view. For short worked problems that matters: a small model finds the operands it must copy
from its own prompt much sooner when earlier problems' digits are not in the row (dev/LOG.md, 2026-12-07).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tinyseek.config import ConfigError, stage_cli, to_dict
from tinyseek.data import ExampleStream, PackedStream, collate, document_examples, task_documents, tokenize_documents
from tinyseek.io import text_documents
from tinyseek.tokenizer import MIN_VOCAB, TOKENIZER_FILE, Tokenizer
from tinyseek.train.loop import Loop, StreamStage, TrainConfig, build_model, seed_everything


@dataclass
class PretrainConfig(TrainConfig):
    preset: str = "nano"  # model preset (ignored when init is set)
    model: dict = field(
        default_factory=dict
    )  # ModelConfig fields overriding the preset ([model] table / --model.FIELD)
    init: str = ""  # start from this checkpoint instead of a random init
    tokenizer: str = ""  # tokenizer.json (or a dir holding one); "" = train one on the corpus
    vocab_size: int = 0  # vocabulary of a tokenizer trained here; 0 = the preset's (at least 265)
    tasks: dict[str, int] = field(default_factory=lambda: {"arithmetic": 4000})  # task -> training problems
    task_format: str = "plain"  # plain: prompt + newline + completion | chat: the R1 chat rendering
    text_files: list[str] = field(default_factory=list)  # UTF-8 .txt (paragraph documents) or JSONL with "text"
    eval_tasks: dict[str, int] = field(default_factory=dict)  # task -> held-out problems; default a tenth of tasks
    eval_text_every: int = 20  # every N-th text document is held out for evaluation
    seq_len: int = 128  # tokens per packed row (packing = document: the longest row; longer documents are cut)
    packing: str = "packed"  # packed: documents concatenated into rows | document: one document per (padded) row
    lr: float = 3e-3  # peak learning rate (AdamW)
    batch_size: int = 16  # sequences per optimizer step, over all ranks and micro-steps together

    def validate(self) -> None:
        super().validate()
        if self.packing not in ("packed", "document"):
            raise ConfigError(f"packing: must be packed or document (got {self.packing!r})")
        if self.task_format not in ("plain", "chat"):
            raise ConfigError(f"task_format: must be plain or chat (got {self.task_format!r})")
        if self.seq_len < 2:
            raise ConfigError(f"seq_len: must be >= 2 (got {self.seq_len})")
        if self.eval_text_every < 2:
            raise ConfigError(f"eval_text_every: must be >= 2 (got {self.eval_text_every})")
        for k, v in {**self.tasks, **self.eval_tasks}.items():
            if not isinstance(v, int) or v < 0:
                raise ConfigError(f"tasks.{k}: expected a count >= 0 (got {v!r})")
        if not self.init and not self.preset and not self.model:
            raise ConfigError("preset: give a model preset, [model] fields, or init")


class PretrainStage(StreamStage):
    """Rows from a PackedStream, or padded batches of whole documents from an ExampleStream; held-out loss on
    fixed batches."""

    def __init__(self, stream: PackedStream | ExampleStream, eval_batches: list[dict], pad_id: int):
        self.stream = stream
        self.eval_batches = eval_batches
        self.pad_id = pad_id

    def train_step(self, loop: Loop) -> dict:
        if isinstance(self.stream, ExampleStream):
            docs = self.stream.next(loop.cfg.batch_size)
            return loop.supervised_step([collate(mb, self.pad_id) for mb in loop.split_batch(docs)])
        x, y = self.stream.next_rows(loop.cfg.batch_size)  # the global batch, identical on every rank
        items = list(range(loop.cfg.batch_size))
        micro = [
            {"tokens": x[idx[0] : idx[-1] + 1], "targets": y[idx[0] : idx[-1] + 1]} for idx in loop.split_batch(items)
        ]
        return loop.supervised_step(micro)


def prepare(
    cfg: PretrainConfig, run_dir: Path, resume: bool
) -> tuple[Tokenizer, PackedStream | ExampleStream, list[dict]]:
    """Documents, tokenizer and streams (train + fixed eval batches)."""
    train_docs = task_documents(cfg.tasks, cfg.seed, "train", cfg.task_format)
    eval_counts = cfg.eval_tasks or {k: max(1, v // 10) for k, v in cfg.tasks.items() if v > 0}
    eval_docs = task_documents(eval_counts, cfg.seed, "test", cfg.task_format)
    for f in cfg.text_files:
        for i, d in enumerate(text_documents(f)):
            (eval_docs if i % cfg.eval_text_every == cfg.eval_text_every - 1 else train_docs).append(d)
    tok_path = cfg.tokenizer
    if not tok_path and resume and (run_dir / TOKENIZER_FILE).is_file():
        tok_path = str(run_dir / TOKENIZER_FILE)
    if tok_path:
        tok = Tokenizer.load(tok_path)
    else:
        from tinyseek.config import PRESETS

        vocab = cfg.vocab_size or max(
            MIN_VOCAB, int(cfg.model.get("vocab_size", PRESETS.get(cfg.preset, {}).get("vocab_size", 4096)))
        )
        tok = Tokenizer.train(train_docs, vocab)
    mb = max(1, cfg.batch_size // cfg.grad_accum)
    if cfg.packing == "document":
        train = ExampleStream(document_examples(tokenize_documents(tok, train_docs), cfg.seq_len), seed=cfg.seed)
        ev = document_examples(tokenize_documents(tok, eval_docs), cfg.seq_len)[: mb * cfg.eval_batches]
        return tok, train, [collate(ev[i : i + mb], tok.pad_id) for i in range(0, len(ev), mb)]
    train = PackedStream(tokenize_documents(tok, train_docs), cfg.seq_len, tok.eos_id, seed=cfg.seed)
    eval_batches = []
    if eval_docs:
        es = PackedStream(tokenize_documents(tok, eval_docs), cfg.seq_len, tok.eos_id, seed=cfg.seed + 1)
        for _ in range(cfg.eval_batches):
            x, y = es.next_rows(mb)
            eval_batches.append({"tokens": x, "targets": y})
    return tok, train, eval_batches


def run(cfg: PretrainConfig, run_dir: Path, resume: bool = False) -> dict:
    seed_everything(cfg.seed)
    tok, stream, eval_batches = prepare(cfg, run_dir, resume)
    seed_everything(cfg.seed)
    model, model_cfg = build_model(cfg.preset, cfg.model, cfg.init, tok.vocab_size, cfg.seq_len)
    # the tokenizer travels with the run (and from there into every checkpoint); rank 0 writes it
    if int(os.environ.get("RANK", "0")) == 0 and (
        tok.path is None or Path(tok.path).resolve() != (run_dir / TOKENIZER_FILE).resolve()
    ):
        tok.save(run_dir)
    resolved = {**to_dict(cfg), "model": model_cfg, "tokenizer": str(run_dir / TOKENIZER_FILE)}
    loop = Loop(
        cfg,
        model,
        run_dir,
        tokenizer_file=run_dir / TOKENIZER_FILE,
        resolved_config=resolved,
        resume=resume,
        stage_name="pretrain",
        seq_len=cfg.seq_len,
    )
    return loop.run(PretrainStage(stream, eval_batches, tok.pad_id))


def cli_pretrain(argv: list[str]) -> int:
    cfg, run_dir, resume = stage_cli(
        PretrainConfig, argv, "tinyseek pretrain", "Pretrain a model on task traces and text (next-token + MTP loss)."
    )
    run(cfg, run_dir, resume)
    return 0
