"""`tinyseek prm`: a process reward model, a tinyseek model with a scalar head that scores each reasoning step.

The model is the policy's own architecture and weights (normally its SFT checkpoint: the same tokenizer, and a
trunk that already reads the traces) plus `score_head`, one linear map from the final hidden state to a logit.
A step's score is sigmoid(logit) at the step's last token (tinyseek.steps says where steps end): the
probability that the trace is still right after this step. Scores are read from one causal forward, so a
step's score sees the prompt and every step up to it, never a later one.

Two label schemes (`labels`), each named for what it is:

- `corruption`: *first-error labels of synthetic corruptions*, made from the tasks' worked solutions with no
  model in the loop: one digit of one step of a gold trace changed (a wrong carry, a misread operand, a wrong
  result, a wrong answer), the steps before it labelled good, the corrupted one and every later one bad
  (tinyseek.steps.corrupt). Cheap, but the PRM sees one-digit slips in otherwise perfect traces, not the
  policy's own errors (truncations, repetitions, garbled formats), and that gap is what a policy trained
  against it can exploit. A corrupted operand whose step result stays right is bad here, though a
  continuation from it can still reach the answer.
- `completion`: *completion labels* (Math-Shepherd): the init policy's own completions, each reasoning step
  good when one of `label_continuations` continuations sampled from its end reaches the right answer (or the
  share that do, `label_soft`); train/prm_labels.py. The sampling is counted on this stage's cost meter.

The GRPO stage logs the PRM's score against the truth on the policy's own samples and on its held-out samples
(tinyseek.train.process_reward).

    tinyseek prm train --config prm.toml --out RUN     # RUN/final is the PRM (config.json, model.safetensors,
                                                       # tokenizer.json, prm.json); held-out step accuracy in
                                                       # metrics.jsonl and summary.json
    tinyseek prm score RUN/final --data traces.jsonl [--corrupt] [--out scores.jsonl]

Held-out evaluation scores every held-out trace and one seeded corruption of it: step accuracy (score > 0.5
against the label), the accuracy on good and on bad steps, and pair accuracy (the corrupted step scores
lower than the same step of the gold trace).
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tinyseek import cost
from tinyseek.checkpoint import TRAINER_STATE_FILE, read_config, read_weights, write_weights
from tinyseek.config import CommandParser, ConfigError, stage_cli, to_dict
from tinyseek.errors import TinyseekError
from tinyseek.hf import check_state_dict
from tinyseek.io import atomic_dir, read_rows, write_json, write_jsonl
from tinyseek.model import Transformer
from tinyseek.r1 import completion_text
from tinyseek.steps import (
    SEPARATOR,
    check_separator,
    corrupt,
    labels_after,
    oracle_step_rewards,
    step_spans,
    token_char_ends,
    token_step_ends,
)
from tinyseek.tasks.base import stream_seed
from tinyseek.tokenizer import TOKENIZER_FILE, Tokenizer
from tinyseek.train.loop import Loop, TrainConfig, seed_everything

PRM_FILE = "prm.json"


# ----------------------------------------------------------------------------------------------
# the model


@dataclass
class PrmOut:
    scores: torch.Tensor  # [B, T] step logits at every position (read at the steps' last tokens)
    expert_load: torch.Tensor | None  # the MoE load of the forward (the loop's balancing-bias update)


N_FEATURES = 2  # besides the hidden state: the token's log-prob, and the lowest log-prob of the completion so far


class ProcessRewardModel(Transformer):
    """A tinyseek Transformer whose forward returns a step logit per position: `score_head(features)`.

    The features at position t are the final hidden state h_t, the model's own log-probability of token t
    (its language-model head on h_{t-1}), and the lowest such log-probability in the completion up to t. The
    last two are how a model that writes these traces notices a slip in one it reads: on the held-out one-digit
    corruptions the SFT model's own log-probs alone tell the corrupted step from its gold version 99.5% of the
    time, while a head on the hidden state alone reached 60% after 300 steps (dev/LOG.md). The MTP modules stay
    in the checkpoint, unused.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        self.score_head = nn.Linear(cfg.dim + N_FEATURES, 1)
        nn.init.zeros_(self.score_head.weight)  # every step scores 0.5 before training
        nn.init.zeros_(self.score_head.bias)

    def forward(  # type: ignore[override]
        self, tokens: torch.Tensor, real_mask: torch.Tensor | None = None, start: torch.Tensor | None = None
    ) -> PrmOut:
        """tokens [B, T]; start [B]: where each row's completion begins (default 0: the whole row)."""
        out = super().forward(tokens, compute_logits=False, real_mask=real_mask)
        h = out.hidden  # [B, T, D]
        B, T = tokens.shape
        lp = torch.zeros(B, T, device=h.device)
        if T > 1:
            logits = self.head(h[:, :-1]).float()  # [B, T-1, V]
            lp[:, 1:] = (logits.gather(-1, tokens[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, -1)).clamp(
                min=-30.0
            )
        if start is not None:  # the prompt's own log-probs are not the completion's
            lp = torch.where(torch.arange(T, device=h.device)[None, :] >= start[:, None], lp, torch.zeros_like(lp))
        low = lp.cummin(dim=1).values  # [B, T]
        feats = torch.cat([h.float(), lp[..., None], low[..., None]], dim=-1)
        return PrmOut(self.score_head(feats).squeeze(-1), out.expert_load)


def forward_flops_per_token(cfg, context: float) -> float:
    """Forward FLOPs per scored token seeing `context` earlier tokens on average (the LM head included: its
    log-probs are features; the score head's dim + 2 weights are noise beside it)."""
    return cost.inference_flops_per_token(cfg, max(0, round(context))) + 2.0 * (cfg.dim + N_FEATURES)


def train_flops_per_token(cfg, seq_len: int, trunk: bool = True) -> float:
    """Training FLOPs per token: the whole model's forward and backward (no MTP), or with a frozen trunk its
    forward only (the backward stops at the score head)."""
    if trunk:
        return cost.train_flops_per_token(cfg, seq_len, include_mtp=False) + 6.0 * (cfg.dim + N_FEATURES)
    return forward_flops_per_token(cfg, (seq_len + 1) / 2) + 4.0 * (cfg.dim + N_FEATURES)


def save_prm(model, out, tokenizer_file=None, trainer_state: dict | None = None, meta: dict | None = None) -> Path:
    """A PRM directory, atomically: a tinyseek checkpoint whose weights include `score_head`, plus prm.json."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        write_weights(tmp, model.cfg, model.state_dict(), tokenizer_file)
        write_json(tmp / PRM_FILE, meta or {})
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE_FILE)
    return out


def load_prm(path: str | Path, device="cpu") -> tuple[ProcessRewardModel, Tokenizer, dict]:
    """(model in eval mode, its tokenizer, prm.json) of a PRM directory; a one-line error naming what is wrong."""
    path = Path(path)
    if not (path / PRM_FILE).is_file():
        raise TinyseekError(f"{path}: not a process reward model (no {PRM_FILE}; train one with `tinyseek prm train`)")
    try:
        meta = json.loads((path / PRM_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TinyseekError(f"{path / PRM_FILE}: invalid JSON ({e})") from None
    if not (path / TOKENIZER_FILE).is_file():
        raise TinyseekError(f"{path}: no {TOKENIZER_FILE} (a PRM scores the policy's tokens with its own tokenizer)")
    model = ProcessRewardModel(read_config(path))
    sd = read_weights(path)
    check_state_dict(model.state_dict(), sd, str(path))
    model.load_state_dict(sd)
    return model.to(device).eval(), Tokenizer.load(path / TOKENIZER_FILE), meta


# ----------------------------------------------------------------------------------------------
# examples: a trace, where its steps end, and their labels


@dataclass
class Example:
    prompt: list[int]  # prompt token ids (the chat template, generation prompt included)
    completion: list[int]  # completion token ids, ending with the end-of-sequence token
    ends: list[int]  # index (within the completion) of each step's last token
    labels: list[float] | None = None  # 1 good / 0 bad per step (None: unlabelled)
    bad: int = -1  # the corrupted step (-1: a gold trace)


def encode_trace(tok: Tokenizer, prompt: str, text: str, sep: str, labels=None, bad: int = -1) -> Example:
    """`text` as a completion of `prompt`, with the end-of-sequence token, and its steps' last tokens."""
    ids = tok.encode(text) + [tok.eos_id]
    ends = token_step_ends(step_spans(text, sep), token_char_ends(tok.decode, ids))
    return Example(tok.encode(tok.prompt(prompt)), ids, ends, labels, bad)


def _check_record(rec: dict, where: str, sep: str) -> str:
    """The gold completion of a record with prompt, solution and answer; errors name the row."""
    for k in ("prompt", "solution", "answer"):
        if not isinstance(rec.get(k), (str, int, float)) or (k != "answer" and not isinstance(rec.get(k), str)):
            raise TinyseekError(f"{where}: a PRM trace needs the field {k!r} (prompt, solution and answer)")
    text = completion_text(rec)
    check_separator(text, sep, where)
    return text


def labelled_pair(tok, rec: dict, text: str, sep: str, rng: random.Random) -> tuple[Example, Example, str]:
    """The gold trace (every step good) and one corruption of it (prefix labels), encoded; the corrupted text."""
    n = len(step_spans(text, sep))
    gold = encode_trace(tok, rec["prompt"], text, sep, [1.0] * n)
    bad_text, k = corrupt(text, rng, sep)
    return gold, encode_trace(tok, rec["prompt"], bad_text, sep, labels_after(n, k), k), bad_text


def collate(examples: list[Example], pad_id: int):
    """(ids [B, T] right-padded, real [B, T], start [B], rows [n], pos [n]): where each completion starts, and one
    (row, position) per step end."""
    T = max(len(e.prompt) + len(e.completion) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    real = torch.zeros(len(examples), T, dtype=torch.bool)
    rows, pos = [], []
    for b, e in enumerate(examples):
        seq = e.prompt + e.completion
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        real[b, : len(seq)] = True
        rows += [b] * len(e.ends)
        pos += [len(e.prompt) + t for t in e.ends]
    start = torch.tensor([len(e.prompt) for e in examples], dtype=torch.long)
    return ids, real, start, torch.tensor(rows, dtype=torch.long), torch.tensor(pos, dtype=torch.long)


@torch.no_grad()
def score_examples(model, examples: list[Example], pad_id: int, batch: int = 64) -> list[list[float]]:
    """Each example's step scores (probabilities), in the examples' order; batches of similar lengths."""
    was = model.training
    model.eval()
    out: list[list[float]] = [[] for _ in examples]
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt) + len(examples[i].completion))
    dev = next(model.parameters()).device
    try:
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            ids, real, start, rows, pos = (t.to(dev) for t in collate([examples[i] for i in idx], pad_id))
            probs = torch.sigmoid(model(ids, real, start).scores[rows, pos]).tolist()
            k = 0
            for i in idx:
                n = len(examples[i].ends)
                out[i] = probs[k : k + n]
                k += n
    finally:
        model.train(was)
    return out


def step_metrics(examples: list[Example], scores: list[list[float]]) -> dict:
    """Step accuracy at 0.5 (all, good steps, bad steps), and pair accuracy: each corrupted example's bad step
    against the same step of the gold example just before it (`labelled_pair` order)."""
    good = bad = good_ok = bad_ok = 0
    for e, s in zip(examples, scores):
        for y, p in zip(e.labels or [], s):
            if y >= 0.5:
                good, good_ok = good + 1, good_ok + (p > 0.5)
            else:
                bad, bad_ok = bad + 1, bad_ok + (p <= 0.5)
    pairs = wins = 0
    for i in range(1, len(examples)):
        e = examples[i]
        if e.bad >= 0 and examples[i - 1].bad < 0 and e.bad < len(scores[i - 1]):
            pairs += 1
            wins += scores[i][e.bad] < scores[i - 1][e.bad]
    n = good + bad
    return {
        "step_acc": (good_ok + bad_ok) / n if n else float("nan"),
        "good_step_acc": good_ok / good if good else float("nan"),
        "bad_step_acc": bad_ok / bad if bad else float("nan"),
        "pair_acc": wins / pairs if pairs else float("nan"),
        "steps": n,
        "pairs": pairs,
    }


# ----------------------------------------------------------------------------------------------
# training


@dataclass
class PrmConfig(TrainConfig):
    """`tinyseek prm train` fields: the trunk to start from, the traces to label, the labelling, the loop."""

    init: str = ""  # the trunk: a tinyseek checkpoint (normally the policy's SFT checkpoint; its tokenizer is used)
    data: list[str] = field(default_factory=list)  # records with prompt, solution, answer (JSONL / Parquet / datasets)
    task: str = ""  # or: problems of this task's train split (when no data)
    n: int = 2000  # problems drawn from `task`
    difficulty: int | None = None  # the task's difficulty (default: the task's)
    eval_data: list[str] = field(default_factory=list)  # held-out records (default: the task's test split)
    eval_n: int = 200  # held-out traces per evaluation (each also corrupted once)
    # corruption: first-error labels of one-digit corruptions of the worked traces (tinyseek.steps.corrupt) |
    # completion: Math-Shepherd's, on the init policy's own completions (train/prm_labels.py; the sampling's
    # FLOPs are on this stage's meter, so an arm scoring with this PRM pays for them)
    labels: str = "corruption"
    label_n: int = 0  # completion labels: problems of `data` the policy completes and labels (0 = all)
    label_continuations: int = 4  # continuations sampled from each reasoning step's end
    label_soft: bool = False  # a step's label is the share of its continuations that reach the answer (else any)
    label_temperature: float = 0.7  # the policy's sampling temperature for completions and continuations
    label_max_new_tokens: int = 48  # the longest completion or continuation
    train_trunk: bool = False  # train the whole model (False: only the score head, on the frozen policy's features)
    paired: bool = True  # each trace twice in a batch: as it is and with one step corrupted (corrupt_rate unused)
    corrupt_rate: float = 0.5  # unpaired: the share of training traces with one corrupted step
    step_separator: str = SEPARATOR  # what separates the traces' reasoning steps
    seq_len: int = 128  # longer traces (prompt + completion) are dropped
    max_steps: int = 100
    batch_size: int = 32
    lr: float = 3e-2  # for the score head alone (measured: 1e-2 and 3e-2 reach 94% / 96% held-out step accuracy)
    min_lr_ratio: float = 0.3
    beta2: float = 0.98
    weight_decay: float = 0.01
    warmup_steps: int = 10

    def validate(self) -> None:
        super().validate()
        if not self.init:
            raise ConfigError("init: the PRM's trunk checkpoint is required (normally the policy's SFT checkpoint)")
        if not self.data and not self.task:
            raise ConfigError("data: give trace records (prompt, solution, answer) or a task")
        if not 0.0 <= self.corrupt_rate <= 1.0:
            raise ConfigError(f"corrupt_rate: must be in [0, 1] (got {self.corrupt_rate})")
        if not self.step_separator:
            raise ConfigError("step_separator: must be a non-empty string")
        if self.eval_n < 1:
            raise ConfigError(f"eval_n: must be >= 1 (got {self.eval_n})")
        if self.labels not in ("corruption", "completion"):
            raise ConfigError(f"labels: must be corruption or completion (got {self.labels!r})")
        for name in ("label_continuations", "label_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1 (got {getattr(self, name)})")
        if self.label_n < 0:
            raise ConfigError(f"label_n: must be >= 0 (got {self.label_n})")
        if self.label_temperature <= 0:
            raise ConfigError(f"label_temperature: must be > 0 (got {self.label_temperature})")


def _records(files: list[str], task: str, n: int, difficulty, seed: int, split: str) -> list[tuple[str, dict]]:
    if files:
        return [pair for f in files for pair in read_rows(f)]
    from tinyseek import tasks

    return [(f"task {task} ({split}) {r['id']}", r) for r in tasks.get(task).generate(n, seed, split, difficulty)]


class PrmStage:
    """Batches of traces, each corrupted with probability `corrupt_rate` (a pure function of the step and the
    seed, so resuming needs no data position); binary cross-entropy on every step's score."""

    def __init__(
        self,
        cfg: PrmConfig,
        tok: Tokenizer,
        train: list[tuple[dict, str]],
        heldout: list[Example],
        labelled: list[Example] | None = None,
    ):
        self.cfg, self.tok, self.train, self.heldout = cfg, tok, train, heldout
        self.labelled = labelled  # completion labels: the policy's own labelled completions, trained on as they are
        self.dropped = 0

    def state_dict(self) -> dict:
        return {"kind": "prm"}

    def load_state_dict(self, d: dict) -> None:
        pass

    def batch(self, step: int) -> list[Example]:
        cfg, N = self.cfg, len(self.train)
        if self.labelled is not None:
            return self._labelled_batch(step)
        out = []
        k = step * cfg.batch_size
        while len(out) < cfg.batch_size:
            epoch, i = divmod(k, N)
            order = list(range(N))
            random.Random(stream_seed("prm", cfg.seed, epoch)).shuffle(order)
            rec, text = self.train[order[i]]
            rng = random.Random(stream_seed("prm", cfg.seed, k))
            k += 1
            n = len(step_spans(text, cfg.step_separator))
            if cfg.paired:  # the gold trace and its corruption side by side: only the corrupted step tells them apart
                exs = labelled_pair(self.tok, rec, text, cfg.step_separator, rng)[:2]
            elif rng.random() < cfg.corrupt_rate:
                text, bad = corrupt(text, rng, cfg.step_separator)
                exs = (encode_trace(self.tok, rec["prompt"], text, cfg.step_separator, labels_after(n, bad), bad),)
            else:
                exs = (encode_trace(self.tok, rec["prompt"], text, cfg.step_separator, [1.0] * n),)
            if len(exs[0].prompt) + max(len(e.completion) for e in exs) > cfg.seq_len:
                self.dropped += 1
                if self.dropped > 10 * N:
                    raise ConfigError(f"seq_len: {cfg.seq_len} is shorter than every trace (prompt + completion)")
                continue
            out += exs
        return out[: cfg.batch_size]

    def _labelled_batch(self, step: int) -> list[Example]:
        """The next `batch_size` labelled completions of a seeded shuffle per epoch."""
        N, out = len(self.labelled), []
        for k in range(step * self.cfg.batch_size, (step + 1) * self.cfg.batch_size):
            epoch, i = divmod(k, N)
            order = list(range(N))
            random.Random(stream_seed("prm", self.cfg.seed, epoch)).shuffle(order)
            out.append(self.labelled[order[i]])
        return out

    def train_step(self, loop: Loop) -> dict:
        exs = self.batch(loop.step)
        dev = loop.device
        ids, real, start, rows, pos = (t.to(dev) for t in collate(exs, self.tok.pad_id))
        y = torch.tensor([v for e in exs for v in e.labels], device=dev)
        with loop.autocast():
            out = loop.model(ids, real, start)
        logit = out.scores[rows, pos]
        loss = nn.functional.binary_cross_entropy_with_logits(logit, y)
        loss.backward()
        st = loop.optimizer_step(float(loss.detach()), out.expert_load if self.cfg.train_trunk else None)
        with torch.no_grad():
            acc = float(((logit > 0).float() == y).float().mean())
        # under torchrun every rank trains on the whole batch (DDP averages equal gradients): the meter counts each
        tokens = ids.numel() * loop.dist.world
        m = {"loss": float(loss.detach()), "step_acc": acc, "good_frac": float(y.mean()), "tokens": tokens, **st}
        if out.expert_load is not None and self.cfg.train_trunk:
            m["expert_load"] = out.expert_load.detach()
        return m

    def evaluate(self, loop: Loop) -> dict:
        scores = score_examples(loop.raw_model, self.heldout, self.tok.pad_id)
        return {f"eval_{k}": v for k, v in step_metrics(self.heldout, scores).items()}


def heldout_pairs(tok, rows: list[tuple[str, dict]], sep: str, seed: int = 0) -> list[Example]:
    """Every held-out trace and one seeded corruption of it, in that order (what `step_metrics` pairs up)."""
    out = []
    for i, (where, rec) in enumerate(rows):
        text = _check_record(rec, where, sep)
        out += labelled_pair(tok, rec, text, sep, random.Random(stream_seed("prm-eval", seed, i)))[:2]
    return out


def run(cfg: PrmConfig, run_dir: Path, resume: bool = False) -> dict:
    from tinyseek.checkpoint import load_model

    seed_everything(cfg.seed)
    trunk = load_model(cfg.init)
    tok_path = Path(cfg.init) / TOKENIZER_FILE
    if not tok_path.is_file():
        raise ConfigError(f"init: {cfg.init} has no {TOKENIZER_FILE} (the PRM reads the policy's tokens with it)")
    tok = Tokenizer.load(tok_path)
    model = ProcessRewardModel(trunk.cfg)
    missing = model.load_state_dict(trunk.state_dict(), strict=False)
    assert set(missing.missing_keys) == {"score_head.weight", "score_head.bias"}, missing
    if not cfg.train_trunk:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("score_head."))
    sep = cfg.step_separator
    train = [
        (r, _check_record(r, w, sep)) for w, r in _records(cfg.data, cfg.task, cfg.n, cfg.difficulty, cfg.seed, "train")
    ]
    if not train:
        raise ConfigError(f"data: {', '.join(cfg.data) or cfg.task} holds no traces")
    held = _records(cfg.eval_data, cfg.task, cfg.eval_n, cfg.difficulty, 0, "test")[: cfg.eval_n]
    if not held:
        raise ConfigError("eval_data: give held-out traces (or a task, whose test split is used)")
    heldout = heldout_pairs(tok, held, sep)
    labelled, label_stats = None, {}
    if cfg.labels == "completion":
        labelled, label_stats = _completion_examples(cfg, [r for r, _ in train])
    meta = {
        "kind": "process reward model",
        "labels": LABELS[cfg.labels]
        + (" (soft: the share that do)" if cfg.labels == "completion" and cfg.label_soft else ""),
        "label_stats": label_stats,
        "step_separator": sep,
        "init": str(cfg.init),
        "score": "sigmoid(score_head([hidden, token log-prob, lowest log-prob so far])) at each step's last token",
        "trunk_trained": cfg.train_trunk,
    }
    # prm.json carries the compute spent so far: a GRPO run scoring with this PRM counts it in its own cost
    loop = Loop(
        cfg,
        model,
        run_dir,
        tokenizer_file=tok_path,
        resolved_config=to_dict(cfg),
        resume=resume,
        stage_name="prm",
        seq_len=cfg.seq_len,
        save_model=lambda m, out, tf=None, trainer_state=None: save_prm(
            m, out, tf, trainer_state, {**meta, "train_flops": loop.flops, "train_steps": loop.step}
        ),
    )
    loop.flops_per_token = train_flops_per_token(model.cfg, cfg.seq_len, cfg.train_trunk)
    loop.flops += label_stats.get("flops", 0.0)  # the labelling's sampling (a resumed run's meter has it already)
    return loop.run(PrmStage(cfg, tok, train, heldout, labelled))


LABELS = {
    "corruption": "first-error labels of synthetic corruptions (tinyseek.steps.corrupt): one digit of one step of a "
    "worked trace changed; good before the corrupted step, bad from it on",
    "completion": "completion labels (Math-Shepherd): the init policy's own completions; a reasoning step is good "
    "when one of label_continuations continuations sampled from its end reaches the right answer; the answer "
    "step is the completion's own verdict",
}


def _completion_examples(cfg: PrmConfig, records: list[dict]) -> tuple[list[Example], dict]:
    """The init policy's labelled completions of the first `label_n` records (train/prm_labels.py), those longer
    than seq_len dropped, and the labelling's figures (FLOPs, traces, continuations, share right, share good)."""
    from tinyseek.train.policy import Policy
    from tinyseek.train.prm_labels import sample_labelled

    policy = Policy.load(cfg.init)
    policy.module.eval()
    recs = records[: cfg.label_n or None]
    examples, stats = sample_labelled(
        policy,
        recs,
        cfg.label_continuations,
        cfg.step_separator,
        cfg.label_soft,
        cfg.label_max_new_tokens,
        cfg.label_temperature,
        cfg.seed,
    )
    examples = [Example(*row) for row in examples if len(row[0]) + len(row[1]) <= cfg.seq_len]
    if not examples:
        raise ConfigError(f"seq_len: {cfg.seq_len} is shorter than every labelled completion (prompt + completion)")
    return examples, {**stats, "examples": len(examples)}


def cli_prm_train(argv: list[str]) -> int:
    cfg, run_dir, resume = stage_cli(
        PrmConfig,
        argv,
        "tinyseek prm train",
        "Train a process reward model: the policy's checkpoint plus a scalar step head, on first-error labels of "
        "one-step corruptions of worked traces (labels = corruption) or on completion labels of the policy's own "
        "completions (labels = completion: Math-Shepherd's, continuations sampled from each step).",
    )
    run(cfg, run_dir, resume)
    return 0


# ----------------------------------------------------------------------------------------------
# scoring


def cli_prm_score(argv: list[str]) -> int:
    p = CommandParser(
        prog="tinyseek prm score",
        description="Score every reasoning step of the traces in a file with a PRM. A row is a prompt with a "
        "`completion` (scored as written; labelled by the step rule when it also has `solution` and `answer`) or "
        "with `solution` and `answer` (the gold trace; with --corrupt, also one corruption of it).",
    )
    p.add_argument("prm", help="a PRM directory (`tinyseek prm train`'s RUN/final)")
    p.add_argument("--data", required=True, help="records (JSONL / Parquet / datasets dir)")
    p.add_argument("--n", type=int, default=0, help="only the first N rows (0 = all)")
    p.add_argument("--corrupt", action="store_true", help="score each gold trace and one seeded corruption of it")
    p.add_argument("--seed", type=int, default=0, help="the corruptions' seed")
    p.add_argument("--out", default=None, help="write one JSON line per scored trace here")
    a = p.parse_args(argv)
    model, tok, meta = load_prm(a.prm)
    sep = meta.get("step_separator", SEPARATOR)
    rows = list(read_rows(a.data))[: a.n or None]
    if not rows:
        raise TinyseekError(f"{a.data}: no rows")
    examples, texts = [], []
    for i, (where, rec) in enumerate(rows):
        if isinstance(rec.get("completion"), str):
            text = rec["completion"]
            if not isinstance(rec.get("prompt"), str):
                raise TinyseekError(f"{where}: a row needs a text field 'prompt'")
            labels = None
            if isinstance(rec.get("solution"), str) and rec.get("answer") is not None:
                labels = oracle_step_rewards(text, completion_text(rec), rec["answer"], sep)
            check_separator(text, sep, where)
            examples.append(encode_trace(tok, rec["prompt"], text, sep, labels))
            texts.append(text)
        else:
            gold = _check_record(rec, where, sep)
            if a.corrupt:
                g, b, bad_text = labelled_pair(tok, rec, gold, sep, random.Random(stream_seed("prm-eval", a.seed, i)))
                examples += [g, b]
                texts += [gold, bad_text]
            else:
                examples.append(encode_trace(tok, rec["prompt"], gold, sep, [1.0] * len(step_spans(gold, sep))))
                texts.append(gold)
    scores = score_examples(model, examples, tok.pad_id)
    if a.out:
        write_jsonl(
            a.out,
            (
                {
                    "completion": t,
                    "steps": [t[x:y].strip() for x, y in step_spans(t, sep)],
                    "scores": [round(s, 4) for s in sc],
                    "labels": e.labels,
                }
                for t, e, sc in zip(texts, examples, scores)
            ),
        )
    labelled = [(e, s) for e, s in zip(examples, scores) if e.labels is not None]
    res = {"traces": len(examples), "steps": sum(len(s) for s in scores)}
    if labelled:
        res.update(step_metrics([e for e, _ in labelled], [s for _, s in labelled]))
    print(json.dumps(res), file=sys.stdout)
    return 0


def cli_prm(argv: list[str]) -> int:
    """`tinyseek prm train ...` / `tinyseek prm score ...`."""
    if not argv or argv[0] not in ("train", "score"):
        print(
            "usage: tinyseek prm train --config FILE --out RUN [--field value ...]\n"
            "       tinyseek prm score PRM --data FILE [--corrupt] [--out FILE]\n"
            "(tinyseek prm train --help / tinyseek prm score --help for the flags)",
            file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout,
        )
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return (cli_prm_train if argv[0] == "train" else cli_prm_score)(argv[1:])


# ----------------------------------------------------------------------------------------------
# the PRM as GRPO's process reward


def _vocab(tok) -> dict:
    return tok.hf.get_vocab(with_added_tokens=True) if hasattr(tok, "hf") else dict(tok.get_vocab())


class StepScorer:
    """A PRM scoring the policy's own completions step by step (GRPO's `process_reward = "prm:PATH"`).

    The PRM must read the policy's tokens: a different tokenizer or vocabulary size is a one-line error naming
    the PRM's file. `score` takes token ids (the policy's prompts and sampled completions, no re-tokenising) and
    each step's last token; `flops` is the forward compute of that scoring, for the cost meter.
    """

    def __init__(self, path: str | Path, policy_tok, policy_vocab_size: int | None, policy_source: str, device="cpu"):
        self.path = Path(path)
        self.model, self.tok, self.meta = load_prm(self.path, device)
        if _vocab(self.tok) != _vocab(policy_tok):
            raise TinyseekError(
                f"{self.path / TOKENIZER_FILE}: the PRM's tokenizer is not the policy's ({policy_source}); a PRM "
                "scores the policy's tokens, so train it from the policy's checkpoint"
            )
        if policy_vocab_size is not None and policy_vocab_size != self.model.cfg.vocab_size:
            raise TinyseekError(
                f"{self.path / 'config.json'}: the PRM's vocab_size {self.model.cfg.vocab_size} differs from the "
                f"policy's {policy_vocab_size} ({policy_source})"
            )
        self.sep = self.meta.get("step_separator", SEPARATOR)
        self.pad_id = self.tok.pad_id
        self.train_flops = float(self.meta.get("train_flops", 0.0))  # what training the PRM cost

    def score(self, prompts: list[list[int]], completions: list[list[int]], ends: list[list[int]]) -> list[list[float]]:
        """Step scores (probabilities) of each completion (empty completions: one score per listed end, at the
        prompt's last token)."""
        exs = [
            Example(p, c if c else [self.pad_id], [min(e, max(0, len(c) - 1)) for e in es])
            for p, c, es in zip(prompts, completions, ends)
        ]
        return score_examples(self.model, exs, self.pad_id)

    def flops(self, prompts: list[list[int]], completions: list[list[int]]) -> float:
        lens = [len(p) + len(c) for p, c in zip(prompts, completions)]
        mean = sum(lens) / max(1, len(lens))
        return sum(lens) * forward_flops_per_token(self.model.cfg, mean / 2)
