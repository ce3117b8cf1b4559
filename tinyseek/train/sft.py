"""`tinyseek sft`: cold-start supervised fine-tuning in the R1 chat format, loss on assistant tokens only.

Data: `data` files (JSONL / Parquet / `datasets` dirs with `messages`, `prompt`+`completion`, or task
records) and/or `tasks` (name -> number of generated problems, completed with their worked solution).
Held-out loss comes from `eval_data` and `eval_tasks` (the tasks' test side; by default a tenth of
`tasks`). The model starts from `init` (a pretrained checkpoint, whose tokenizer.json is used unless
`tokenizer` is given) or, for experiments, from a random `preset`.

Defaults are what worked for a cold start on tiny models: AdamW 1e-3, betas (0.9, 0.98), weight decay 0.01,
batch 64, clip 1.

A cold start can end on a rule instead of a step count: with `stop_accuracy`, every `eval_every` steps the
model answers `stop_n` problems of `stop_data` (greedy; a validation set, never the test set) and the run
ends at the first check whose accuracy reaches it. Why: on these small models held-out accuracy climbs
steeply once the model learns to read the operands, and *when* that happens varies with the seed and the
CPU's floating point by many steps; a fixed step count then hands RL starts anywhere from 14% to 54%
(dev/LOG.md). Stopping at a measured accuracy gives every seed a comparable start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tinyseek.config import ConfigError, stage_cli, to_dict
from tinyseek.data import ExampleStream, collate, sft_examples_from_rows
from tinyseek.dist import is_main
from tinyseek.io import read_rows
from tinyseek.tokenizer import TOKENIZER_FILE, Tokenizer
from tinyseek.train.loop import Loop, StreamStage, TrainConfig, build_model, seed_everything


@dataclass
class SFTConfig(TrainConfig):
    init: str = ""  # checkpoint to fine-tune (normally a pretrain run's final/)
    preset: str = ""  # a random model of this preset instead of init (experiments only)
    model: dict = field(default_factory=dict)  # ModelConfig overrides for preset
    tokenizer: str = ""  # default: init's tokenizer.json
    data: list[str] = field(default_factory=list)  # JSONL / Parquet / datasets dirs
    tasks: dict[str, int] = field(default_factory=dict)  # task -> generated training problems
    eval_data: list[str] = field(default_factory=list)  # held-out data files (same formats as data)
    eval_tasks: dict[str, int] = field(default_factory=dict)  # task -> held-out problems; default a tenth of tasks
    seq_len: int = 256  # examples are cut to this many tokens
    prompt_template: str = "chat"  # chat (the R1 chat template) | r1-zero (R1-Zero's template, one user turn)
    completion: str = "trace"  # trace: task records' worked traces | answer: the answer alone (RL's information)
    max_steps: int = 200  # optimizer steps in all
    batch_size: int = 64  # examples per optimizer step, over all ranks and micro-steps together
    lr: float = 1e-3  # peak learning rate (AdamW)
    beta2: float = 0.98  # AdamW beta2
    weight_decay: float = 0.01  # decoupled, on weight matrices only
    warmup_steps: int = 10  # linear warmup steps
    stop_data: str = ""  # validation records (prompt, answer) for stop_accuracy (never the test set)
    stop_accuracy: float = 0.0  # end the run once greedy accuracy on stop_data reaches this (0 = run to max_steps)
    stop_n: int = 200  # validation problems per check (every eval_every steps)

    def validate(self) -> None:
        super().validate()
        if not self.init and not self.preset:
            raise ConfigError("init: give the checkpoint to fine-tune (or a preset for a random model)")
        if not self.data and not any(self.tasks.values()):
            raise ConfigError("data: give data files and/or tasks to train on")
        if self.seq_len < 2:
            raise ConfigError(f"seq_len: must be >= 2 (got {self.seq_len})")
        if self.prompt_template not in ("chat", "r1-zero"):
            raise ConfigError(f"prompt_template: must be chat or r1-zero (got {self.prompt_template!r})")
        if self.completion not in ("trace", "answer"):
            raise ConfigError(f"completion: must be trace or answer (got {self.completion!r})")
        if not 0 <= self.stop_accuracy <= 1:
            raise ConfigError(f"stop_accuracy: must be in [0, 1] (got {self.stop_accuracy})")
        if self.stop_accuracy > 0 and (not self.stop_data or not self.eval_every):
            raise ConfigError("stop_accuracy: needs stop_data (validation records) and eval_every (how often to check)")


def task_rows(counts: dict[str, int], seed: int, split: str):
    """(where, record) pairs of generated problems, task by task in name order."""
    from tinyseek import tasks

    for rec in tasks.records(dict(sorted(counts.items())), seed, split):
        yield f"task {rec['task']} ({split}) {rec['id']}", rec


def _rows(files: list[str], counts: dict[str, int], seed: int, split: str):
    for f in files:
        yield from read_rows(f)
    yield from task_rows(counts, seed, split)


class SFTStage(StreamStage):
    """Padded batches of chat examples; held-out loss on fixed batches; the optional accuracy stopping rule."""

    def __init__(self, stream: ExampleStream, eval_batches: list[dict], pad_id: int, tok=None, stop_records=None):
        self.stream = stream
        self.eval_batches = eval_batches
        self.pad_id = pad_id
        self.tok = tok
        self.stop_records = stop_records or []

    def train_step(self, loop: Loop) -> dict:
        items = self.stream.next(loop.cfg.batch_size)
        return loop.supervised_step([collate(mb, self.pad_id) for mb in loop.split_batch(items)])

    def evaluate(self, loop: Loop) -> dict:
        out = super().evaluate(loop)
        cfg = loop.cfg
        if cfg.stop_accuracy > 0 and self.stop_records:
            from tinyseek.evaluate import evaluate, prompt_renderer
            from tinyseek.inference.engine import Engine
            from tinyseek.inference.sampling import SamplingParams

            engine = Engine(loop.raw_model, tokenizer=self.tok, max_batch=min(256, len(self.stop_records)))
            params = SamplingParams(temperature=0.0, max_new_tokens=cfg.seq_len)
            render = prompt_renderer(self.tok, cfg.prompt_template)
            acc = evaluate(engine, self.stop_records, 1, params, keep_text=False, render=render)["pass@1"]["value"]
            out["stop_check_accuracy"] = acc
            if acc >= cfg.stop_accuracy:
                out["stop"] = True
                out["stop_reason"] = (
                    f"greedy accuracy {acc:.3f} on {len(self.stop_records)} validation problems >= {cfg.stop_accuracy}"
                )
        return out


def prepare(cfg: SFTConfig) -> tuple[Tokenizer, ExampleStream, list[dict]]:
    tok_path = cfg.tokenizer or (str(Path(cfg.init) / TOKENIZER_FILE) if cfg.init else "")
    if not tok_path:
        raise ConfigError("tokenizer: a random-preset SFT run needs a tokenizer file")
    tok = Tokenizer.load(tok_path)
    how = {"template": cfg.prompt_template, "answers_only": cfg.completion == "answer"}
    train, dropped = sft_examples_from_rows(tok, _rows(cfg.data, cfg.tasks, cfg.seed, "train"), cfg.seq_len, **how)
    if dropped and is_main():
        print(f"sft: {dropped} training examples dropped (prompt longer than seq_len={cfg.seq_len})", flush=True)
    eval_counts = cfg.eval_tasks or {k: max(1, v // 10) for k, v in cfg.tasks.items() if v > 0}
    ev, _ = sft_examples_from_rows(tok, _rows(cfg.eval_data, eval_counts, cfg.seed, "test"), cfg.seq_len, **how)
    mb = max(1, cfg.batch_size // cfg.grad_accum)
    eval_batches = [collate(ev[i : i + mb], tok.pad_id) for i in range(0, min(len(ev), mb * cfg.eval_batches), mb)]
    return tok, ExampleStream(train, seed=cfg.seed), eval_batches


def run(cfg: SFTConfig, run_dir: Path, resume: bool = False) -> dict:
    seed_everything(cfg.seed)
    tok, stream, eval_batches = prepare(cfg)
    model, model_cfg = build_model(cfg.preset, cfg.model, cfg.init, tok.vocab_size, cfg.seq_len)
    resolved = {**to_dict(cfg), "model": model_cfg, "tokenizer": str(tok.path)}
    loop = Loop(
        cfg,
        model,
        run_dir,
        tokenizer_file=tok.path,
        resolved_config=resolved,
        resume=resume,
        stage_name="sft",
        seq_len=cfg.seq_len,
    )
    stop_records = []
    if cfg.stop_accuracy > 0:
        from tinyseek import tasks

        stop_records = tasks.load_records(cfg.stop_data)[: cfg.stop_n]
        if not stop_records:
            raise ConfigError(f"stop_data: {cfg.stop_data} holds no records")
    return loop.run(SFTStage(stream, eval_batches, tok.pad_id, tok, stop_records))


def cli_sft(argv: list[str]) -> int:
    cfg, run_dir, resume = stage_cli(
        SFTConfig,
        argv,
        "tinyseek sft",
        "Supervised fine-tuning (cold start) in the R1 chat format; loss on assistant tokens only.",
    )
    run(cfg, run_dir, resume)
    return 0
