"""Byte-level BPE tokenizer (Hugging Face `tokenizers`) over the R1 special tokens, and `tinyseek tokenizer`.

Why these choices:
- Byte level: the base alphabet is the 256 byte values, so any string (Chinese, emoji, control
  characters) encodes and decodes back exactly; there is no unknown token. The cost is that the
  vocabulary can never be smaller than 256 bytes + the special tokens (265).
- Digits split one by one before BPE: a tiny model learns carry arithmetic far more easily when
  "1234" is always the four tokens 1,2,3,4 than when BPE merges frequent digit runs into arbitrary
  chunks ("12", "34", "123") whose boundaries shift from number to number.
- The special tokens are "added tokens": they are matched before BPE runs, so `<think>` or
  `<｜User｜>` in a text is always exactly one token and never merges with its neighbours. (The
  flip side: a user text that contains `<think>` literally is read as the special token; the chat
  formats here rely on that.)

The special tokens and the chat template are the R1 text format (tinyseek/r1.py); `hf_tokenizer_files`
writes them next to tokenizer.json so transformers' AutoTokenizer and `apply_chat_template` agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

from tinyseek.config import CommandParser, ConfigError, from_dict
from tinyseek.errors import TinyseekError
from tinyseek.io import atomic_file, write_atomic
from tinyseek.r1 import BOS, CHAT_TEMPLATE, EOS, PAD, SPECIAL_TOKENS, render_chat

MIN_VOCAB = 256 + len(SPECIAL_TOKENS)

TOKENIZER_FILE = "tokenizer.json"


class Tokenizer:
    """A thin wrapper over a `tokenizers.Tokenizer` that knows tinyseek's special tokens and chat format."""

    def __init__(self, hf_tok, path: Path | None = None):
        self.hf = hf_tok
        self.path = path  # the tokenizer.json this came from / was saved to (checkpoints copy it)
        vocab = hf_tok.get_vocab(with_added_tokens=True)
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise TinyseekError(f"{path or 'tokenizer'}: not a tinyseek tokenizer (no special token {missing[0]!r})")
        self.special_ids = {t: vocab[t] for t in SPECIAL_TOKENS}
        self.bos_id, self.eos_id, self.pad_id = vocab[BOS], vocab[EOS], vocab[PAD]

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> Tokenizer:
        """Train byte-level BPE on `texts` to (at most) `vocab_size` tokens, special tokens included."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if vocab_size < MIN_VOCAB:
            raise TinyseekError(
                f"vocab_size: must be >= {MIN_VOCAB} (256 bytes + {len(SPECIAL_TOKENS)} special tokens), got "
                f"{vocab_size}"
            )
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            min_frequency=2,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """From a tokenizer.json file or a directory holding one (a checkpoint, an export)."""
        from tokenizers import Tokenizer as HFTokenizer

        p = Path(path)
        if p.is_dir():
            p = p / TOKENIZER_FILE
        if not p.is_file():
            raise TinyseekError(f"{p}: no such tokenizer file")
        try:
            hf = HFTokenizer.from_file(str(p))
        except Exception as e:  # tokenizers raises a bare Exception for a bad file
            raise TinyseekError(f"{p}: unreadable tokenizer ({str(e).splitlines()[0]})") from None
        return cls(hf, path=p)

    def save(self, out: str | Path) -> Path:
        """Write `tokenizer.json` into directory `out` (created if needed); returns the file's path."""
        f = Path(out) / TOKENIZER_FILE
        with atomic_file(f) as tmp:
            self.hf.save(str(tmp))
        self.path = f
        return f

    # -- use ----------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        i = self.hf.token_to_id(token)
        if i is None:
            raise TinyseekError(f"tokenizer: no token {token!r}")
        return i

    def encode(self, text: str, add_special: bool = False) -> list[int]:
        """Token ids of `text`; `add_special` prepends the begin-of-sentence token."""
        ids = self.hf.encode(text, add_special_tokens=False).ids
        return [self.bos_id] + ids if add_special else ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special)

    def chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The R1 chat format of `messages` (see the module docstring) as text; encode() it for ids."""
        return render_chat(messages, add_generation_prompt)

    def prompt(self, user: str, system: str = "") -> str:
        """A single user turn, ready for generation."""
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return render_chat(msgs, add_generation_prompt=True)


# ----------------------------------------------------------------------------------------------
# transformers compatibility


def hf_tokenizer_files(tokenizer_json_path: str | Path) -> dict[str, str]:
    """The extra files (name -> text) that make `AutoTokenizer.from_pretrained(dir)` load tokenizer.json
    with tinyseek's special tokens and chat template. The caller copies tokenizer.json itself."""
    tok = Tokenizer.load(tokenizer_json_path)
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    added = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t, i in sorted(tok.special_ids.items(), key=lambda kv: kv[1])
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "added_tokens_decoder": added,
        "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in (BOS, EOS, PAD)],
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1 << 20,
        "chat_template": CHAT_TEMPLATE,
    }
    return {
        "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n",
        "special_tokens_map.json": json.dumps(special, indent=2, ensure_ascii=False) + "\n",
    }


# ----------------------------------------------------------------------------------------------
# the command


def task_texts(names: list[str], n: int, seed: int = 0) -> list[str]:
    """Prompt + completion text of `n` training problems of each named task (the tokenizer's task corpus)."""
    from tinyseek import tasks

    return tasks.documents({name: n for name in names}, seed, "train", field="tasks")


@dataclass
class TokenizerConfig:
    """The fields of `tinyseek tokenizer` and of a recipe's tokenizer stage."""

    corpus: list[str] = field(default_factory=list)  # UTF-8 .txt files (paragraphs) or JSONL files with a 'text' field
    tasks: list[str] = field(default_factory=list)  # task names whose problems and traces are added to the corpus
    n_per_task: int = 5000  # problems generated per task for tasks
    vocab_size: int = 4096  # vocabulary size, special tokens included
    seed: int = 0  # seed of the task problems

    def validate(self) -> None:
        if not self.corpus and not self.tasks:
            raise ConfigError("corpus: give corpus files and/or tasks")


def run(cfg: TokenizerConfig, out: Path, resume: bool = False) -> Path:
    """Train the tokenizer and write OUT/tokenizer.json with transformers' config files; returns tokenizer.json's
    path. A tokenizer trains in seconds: `resume` changes nothing (it trains again)."""
    texts: list[str] = task_texts(cfg.tasks, cfg.n_per_task, cfg.seed) if cfg.tasks else []
    from tinyseek.io import text_documents

    lines = [d for f in cfg.corpus for d in text_documents(f)]  # read (and check) every file before anything is written
    tok = Tokenizer.train(texts + lines, cfg.vocab_size)
    f = tok.save(out)
    for name, text in hf_tokenizer_files(f).items():
        write_atomic(out / name, text)
    print(f"tokenizer: {tok.vocab_size} tokens -> {f}")
    return f


def cli_tokenizer(argv: list[str]) -> int:
    d = TokenizerConfig()
    ap = CommandParser(prog="tinyseek tokenizer", description="Train the byte-level BPE tokenizer.")
    ap.add_argument(
        "--corpus", nargs="*", default=[], help="UTF-8 .txt files (paragraphs) or JSONL files with a 'text' field"
    )
    ap.add_argument(
        "--tasks", default="", help="comma-separated task names whose problems and traces are added to the corpus"
    )
    ap.add_argument("--n-per-task", type=int, default=d.n_per_task, help="problems generated per task for --tasks")
    ap.add_argument(
        "--vocab-size",
        type=int,
        default=d.vocab_size,
        help=f"vocabulary size, special tokens included (>= {MIN_VOCAB})",
    )
    ap.add_argument("--seed", type=int, default=d.seed, help="seed of the task problems")
    ap.add_argument(
        "--out", required=True, help="directory to write tokenizer.json (+ transformers' config files) into"
    )
    a = ap.parse_args(argv)
    run(from_dict(TokenizerConfig, {f.name: getattr(a, f.name) for f in fields(TokenizerConfig)}), Path(a.out))
    return 0
