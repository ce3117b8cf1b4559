"""The policy GRPO trains and samples: one interface, one implementation per kind of model.

What GRPO asks of a model: render a prompt to token ids, sample completions, give the final hidden
states and the output head the loss takes log-probs from (in chunks, `grpo_loss.token_logprobs`), and
save a checkpoint. `TinyseekPolicy` does that for a tinyseek `Transformer`, `HFPolicy` for a transformers
causal LM (SmolLM2 from a GGUF file, say); `Policy.load` picks one through `checkpoint.load`, and
nothing in GRPO asks which kind it has (minimind's rollout interface works the same way).

Sampling goes through an engine: tinyseek's `Engine` or `HFEngine`, kept between steps while its cache is
big enough (the cache-free reference, `PlainRollout`, is in train/rollout.py). The engine is also the one layer
that switches the model to eval mode for generation and back.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tinyseek import cost
from tinyseek.checkpoint import TRAINER_STATE_FILE, load, save_checkpoint
from tinyseek.errors import TinyseekError
from tinyseek.inference.engine import Engine
from tinyseek.inference.hf_engine import HFEngine
from tinyseek.inference.sampling import SamplingParams
from tinyseek.inference.sequence import Completion
from tinyseek.io import atomic_dir
from tinyseek.r1 import R1_ZERO_TEMPLATE
from tinyseek.train.parallel import unwrapped


class Policy:
    """A model GRPO trains, with its tokenizer (see the module docstring). Subclasses implement the methods
    that raise NotImplementedError; the rest is shared."""

    kind = ""  # "tinyseek" | "hf", for messages
    resumable = True  # --resume restores the optimizer state into this model

    def __init__(self, module: torch.nn.Module, tokenizer, source: str = ""):
        self.module, self.tok, self.source = module, tokenizer, source
        self._engine = None
        self._engine_key: tuple | None = None

    @staticmethod
    def load(path: str, tokenizer: str = "") -> Policy:
        """The policy for a model path (anything `checkpoint.load` accepts)."""
        loaded = load(path, tokenizer or None)
        if loaded.tokenizer is None:
            raise TinyseekError(
                f"{loaded.path}: no tokenizer with the model (prompts are rendered and completions decoded with it)"
            )
        cls = TinyseekPolicy if loaded.kind == "tinyseek" else HFPolicy
        return cls(loaded.model, loaded.tokenizer, str(loaded.path))

    # -- what each kind of model does its own way ------------------------------------------------------
    @property
    def eos_id(self) -> int:
        raise NotImplementedError

    @property
    def pad_id(self) -> int:
        raise NotImplementedError

    @property
    def tokenizer_file(self) -> Path | None:
        """The tokenizer file checkpoints carry (None: `save` writes the tokenizer itself)."""
        return None

    def chat_ids(self, prompt: str, system: str = "") -> list[int]:
        """A single user turn in the model's chat template, ready for generation."""
        raise NotImplementedError

    def text_ids(self, text: str) -> list[int]:
        """Plain text, after the model's begin-of-sequence token."""
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def hidden(
        self, module: torch.nn.Module, ids: torch.Tensor, real_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final hidden states [B, T, D] of right-padded `ids` [B, T] (no attention mask needed: attention is
        causal, so a real position never sees the padding after it), and the MoE expert load of the forward
        (or None). `real_mask` [B, T] (True at real tokens) keeps padding out of the MoE routing statistics."""
        raise NotImplementedError

    def head(self, module: torch.nn.Module) -> torch.nn.Module:
        """The output head that turns hidden states into logits."""
        raise NotImplementedError

    def forward_flops(self, tokens: int, context: float) -> float:
        """Forward FLOPs of `tokens` tokens that each see about `context` earlier ones: a rollout's compute."""
        raise NotImplementedError

    def sampling_flops(self, prompts: list[list[int]], generated: int, max_new_tokens: int) -> float:
        """The compute of sampling `generated` tokens in all from `prompts`: each prompt prefilled once (for all
        its samples), then every generated token seeing the mean prompt and half the longest completion."""
        prompt_tokens = sum(len(p) for p in prompts)
        mean_prompt = prompt_tokens / max(1, len(prompts))
        return self.forward_flops(prompt_tokens, mean_prompt / 2) + self.forward_flops(
            generated, mean_prompt + max_new_tokens / 2
        )

    def logits(self, module: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
        """Full logits [B, T, V] without a cache (the reference rollout)."""
        raise NotImplementedError

    def _new_engine(self, module: torch.nn.Module, need: int, max_len: int, max_batch: int, n: int):
        """An engine for sequences of `need` tokens (`max_len` is `need` rounded up, to reuse the engine)."""
        raise NotImplementedError

    def save(self, model: torch.nn.Module, out, tokenizer_file=None, trainer_state: dict | None = None):
        """A checkpoint directory, atomically, in the model's own format (the loop's `save_model`)."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------------------
    def render(self, prompt: str, template: str, system: str = "") -> list[int]:
        """Prompt token ids: the chat template (generation prompt added), the R1-Zero template, raw text, or
        a custom template with {prompt}."""
        if template == "chat":
            return self.chat_ids(prompt, system)
        if template == "r1-zero":
            return self.text_ids(R1_ZERO_TEMPLATE.format(prompt=prompt))
        return self.text_ids(prompt if template == "raw" else template.replace("{prompt}", prompt))

    def sampling_params(
        self,
        max_new_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        ignore_eos: bool = False,
        logprobs: bool = False,
    ) -> SamplingParams:
        """Rollout sampling: the model's end-of-sequence token stops a completion (unless `ignore_eos`)."""
        return SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            seed=seed,
            stop_token_ids=() if ignore_eos else (self.eos_id,),
            ignore_eos=ignore_eos,
            logprobs=logprobs,
        )

    def engine(self, prompts: list[list[int]], max_new_tokens: int, max_batch: int = 256, n: int = 1):
        """An engine able to run `prompts` with `max_new_tokens` each: the cached engine (one preallocated KV cache),
        rebuilt only when it is too small or the model changed."""
        module = unwrapped(self.module)
        need = max(len(p) for p in prompts) + max_new_tokens + 1
        k = self._engine_key
        if self._engine is None or k[0] != id(module) or k[1] < need or k[2] < max_batch:
            max_len = -(-need // 64) * 64  # rounded up so slightly longer prompts do not each allocate a new cache
            self._engine = self._new_engine(module, need, max_len, max_batch, n)
            self._engine_key = (id(module), max_len, max_batch)
        return self._engine

    def generate(
        self,
        prompts: list[list[int]],
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        max_batch: int = 256,
        ignore_eos: bool = False,
        first: int = 0,
        logprobs: bool = False,
        engine=None,
    ) -> list[Completion]:
        """n samples for each prompt, group after group (prompt p's samples at p*n ... p*n + n - 1), exactly as the
        engine returned them. `token_ids` are what the loss trains on: they end with the stop token the model
        sampled (one of several end tokens, for a transformers model), never one it did not; `text` (what the
        rewards read) leaves that token out. `first`: prompts[0]'s index in the whole batch when this is a slice of
        it (a rank's share under torchrun), so that every prompt is seeded as in the whole batch. `logprobs`: each
        completion carries the sampler's log-probs of its tokens. `engine`: what samples them (default: `self.engine`;
        the rollouts' reference, train/rollout.PlainRollout, has the same `generate`)."""
        params = self.sampling_params(max_new_tokens, temperature, top_p, top_k, seed, ignore_eos, logprobs)
        if engine is None:
            engine = self.engine(prompts, max_new_tokens, max_batch, n)
        groups = engine.generate(prompts, params, n=n, first=first)
        return [c for group in groups for c in group]


class TinyseekPolicy(Policy):
    """A tinyseek `Transformer` and tinyseek `Tokenizer`: hidden states are `out.hidden`, the head `model.head`."""

    kind = "tinyseek"

    @property
    def eos_id(self) -> int:
        return self.tok.eos_id

    @property
    def pad_id(self) -> int:
        pad = getattr(self.tok, "pad_id", None)
        return self.eos_id if pad is None else pad

    @property
    def tokenizer_file(self) -> Path | None:
        return getattr(self.tok, "path", None)

    def chat_ids(self, prompt: str, system: str = "") -> list[int]:
        return self.tok.encode(self.tok.prompt(prompt, system))

    def text_ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special=True)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)

    def hidden(self, module, ids, real_mask=None):
        out = module(ids, compute_logits=False, real_mask=real_mask)
        return out.hidden, out.expert_load

    def head(self, module):
        return unwrapped(module).head

    def forward_flops(self, tokens, context):
        return tokens * cost.inference_flops_per_token(unwrapped(self.module).cfg, max(0, round(context)))

    def logits(self, module, ids):
        return module(ids).logits

    def _new_engine(self, module, need, max_len, max_batch, n):
        # the rounding stops at the model's context length; a longer need is the caller's to answer for
        return Engine(
            module, tokenizer=self.tok, max_batch=max_batch, max_len=max(need, min(max_len, module.cfg.max_seq_len))
        )

    def save(self, model, out, tokenizer_file=None, trainer_state=None):
        return save_checkpoint(model, out, tokenizer_file, trainer_state=trainer_state)


class HFPolicy(Policy):
    """A transformers causal LM and its tokenizer: hidden states are the decoder's `last_hidden_state`, the head
    `get_output_embeddings()`. That equals the model's logits for Llama-style models (SmolLM2), not for models
    that post-process logits (soft-capping), which this does not support."""

    kind = "hf"
    resumable = False  # checkpoints are save_pretrained directories, without tinyseek's trainer state layout

    @property
    def eos_id(self) -> int:
        return self.tok.eos_token_id

    @property
    def pad_id(self) -> int:
        return self.eos_id if self.tok.pad_token_id is None else self.tok.pad_token_id

    def chat_ids(self, prompt: str, system: str = "") -> list[int]:
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        text = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return self.tok.encode(text, add_special_tokens=False)

    def text_ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=True)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def hidden(self, module, ids, real_mask=None):
        if module is not unwrapped(module):  # under DDP the forward must go through the wrapper, or nothing is reduced
            out = module(input_ids=ids, use_cache=False, output_hidden_states=True, logits_to_keep=1)
            return out.hidden_states[-1], None  # the final norm's output (= the decoder's last_hidden_state)
        return unwrapped(module).get_decoder()(input_ids=ids, use_cache=False).last_hidden_state, None

    def head(self, module):
        return unwrapped(module).get_output_embeddings()

    def forward_flops(self, tokens, context):
        # 2 FLOPs per weight that multiplies an activation (the input embedding is a lookup); attention's
        # context term is left out: small next to the weights at rollout lengths
        m = unwrapped(self.module)
        emb = m.get_input_embeddings().weight
        return tokens * 2.0 * sum(p.numel() for p in m.parameters() if p is not emb)

    def logits(self, module, ids):
        return module(input_ids=ids, use_cache=False).logits

    def _new_engine(self, module, need, max_len, max_batch, n):
        return HFEngine(module, self.tok, max_batch=max(max_batch, n))

    def save(self, model, out, tokenizer_file=None, trainer_state=None):
        """`save_pretrained` + the tokenizer files: loadable by `from_pretrained`, and by `tinyseek grpo --model`."""
        with atomic_dir(out) as tmp:
            unwrapped(model).save_pretrained(tmp)
            self.tok.save_pretrained(tmp)
            if trainer_state is not None:
                torch.save(trainer_state, tmp / TRAINER_STATE_FILE)
        return out
