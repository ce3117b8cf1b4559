"""The policy GRPO trains and samples: one interface over tinyseek models and transformers causal LMs.

`Policy` renders prompts, samples completions (through an engine, or the cache-free reference rollout),
gives the final hidden states and the output head the loss takes log-probs from, and saves checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tinyseek.r1 import R1_ZERO_TEMPLATE


@dataclass
class Sample:
    """One completion of a rollout. `token_ids` are the tokens the loss scores (the end-of-sequence token
    included when the model stopped on it, so stopping is learned); `text` excludes it."""

    token_ids: list[int]
    text: str
    finish_reason: str  # stop | length


class Policy:
    """What GRPO needs from a model, for a tinyseek `Transformer` (kind "tinyseek") or a transformers causal
    LM (kind "hf"): final hidden states and the output head (log-probs are taken from those in chunks),
    prompt rendering and decoding, sampling, and saving.

    For transformers models the hidden states are the decoder's `last_hidden_state` and the head is
    `get_output_embeddings()`; that equals the model's logits for Llama-style models (SmolLM2), not for
    models that post-process logits (soft-capping), which this does not support.
    """

    def __init__(self, module: torch.nn.Module, tokenizer, kind: str, source: str = ""):
        self.module, self.tok, self.kind, self.source = module, tokenizer, kind, source
        self._engine = None
        self._engine_key = None

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str, tokenizer: str = "") -> "Policy":
        from tinyseek.checkpoint import load
        from tinyseek.errors import TinyseekError

        loaded = load(path, tokenizer or None)
        if loaded.tokenizer is None:
            raise TinyseekError(f"{loaded.path}: no tokenizer with the model (prompts are rendered and completions decoded with it)")
        return cls(loaded.model, loaded.tokenizer, loaded.kind, str(loaded.path))

    # -- text ------------------------------------------------------------------------------------
    @property
    def eos_id(self) -> int:
        return self.tok.eos_id if self.kind == "tinyseek" else self.tok.eos_token_id

    @property
    def pad_id(self) -> int:
        pad = getattr(self.tok, "pad_id", None) if self.kind == "tinyseek" else self.tok.pad_token_id
        return self.eos_id if pad is None else pad

    def render(self, prompt: str, template: str, system: str = "") -> list[int]:
        """Prompt token ids: the chat template (generation prompt added), the R1-Zero template, raw text, or
        a custom template with {prompt}."""
        if template == "chat":
            if self.kind == "tinyseek":
                return self.tok.encode(self.tok.prompt(prompt, system))
            msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
            text = self.tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            return self.tok.encode(text, add_special_tokens=False)
        text = R1_ZERO_TEMPLATE.format(prompt=prompt) if template == "r1-zero" else (
            prompt if template == "raw" else template.replace("{prompt}", prompt))
        if self.kind == "tinyseek":
            return self.tok.encode(text, add_special=True)
        return self.tok.encode(text, add_special_tokens=True)

    def decode(self, ids: list[int]) -> str:
        if self.kind == "tinyseek":
            return self.tok.decode(ids)
        return self.tok.decode(ids, skip_special_tokens=False)

    # -- tensors ---------------------------------------------------------------------------------
    def hidden(self, module: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final hidden states [B, T, D] of right-padded `ids` [B, T] (no mask needed: attention is causal, so
        a real position never sees the padding after it), and the MoE expert load (tinyseek) or None."""
        if self.kind == "tinyseek":
            out = module(ids, compute_logits=False)
            return out.hidden, out.expert_load
        base = _unwrap(module).get_decoder()
        return base(input_ids=ids, use_cache=False).last_hidden_state, None

    def head(self, module: torch.nn.Module) -> torch.nn.Module:
        m = _unwrap(module)
        return m.head if self.kind == "tinyseek" else m.get_output_embeddings()

    # -- sampling --------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], n: int, max_new_tokens: int, temperature: float, top_p: float = 1.0,
                 top_k: int = 0, seed: int = 0, impl: str = "engine", max_batch: int = 256, ignore_eos: bool = False) -> list[Sample]:
        """n samples for each prompt, group after group (prompt p's samples at p*n ... p*n + n - 1)."""
        module = _unwrap(self.module)
        was_training = module.training
        module.eval()
        try:
            with torch.inference_mode():
                if impl == "plain":
                    raw = _generate_plain(self, module, prompts, n, max_new_tokens, temperature, top_p, top_k, seed, ignore_eos)
                else:
                    raw = self._generate_engine(module, prompts, n, max_new_tokens, temperature, top_p, top_k, seed, max_batch,
                                                ignore_eos)
        finally:
            module.train(was_training)
        out = []
        for ids, reason in raw:
            text_ids = ids[:-1] if (reason == "stop" and ids and ids[-1] == self.eos_id) else ids
            out.append(Sample(list(ids), self.decode(text_ids), reason))
        return out

    def _generate_engine(self, module, prompts, n, max_new_tokens, temperature, top_p, top_k, seed, max_batch, ignore_eos=False):
        from tinyseek.inference.sampling import SamplingParams

        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                                stop_token_ids=() if ignore_eos else (self.eos_id,), ignore_eos=ignore_eos)
        need = max(len(p) for p in prompts) + max_new_tokens + 1
        k = self._engine_key
        if self._engine is None or k[0] != id(module) or k[1] < need or k[2] < max_batch:
            # one engine (one preallocated KV cache) reused while it is big enough; lengths rounded up to 64 so
            # batches with slightly longer prompts do not each allocate a new cache
            max_len = -(-need // 64) * 64
            if self.kind == "tinyseek":
                max_len = max(need, min(max_len, module.cfg.max_seq_len))
            key = (id(module), max_len, max_batch)
            if self.kind == "tinyseek":
                from tinyseek.inference.engine import Engine

                self._engine = Engine(module, tokenizer=self.tok, max_batch=max_batch, max_len=max_len)
            else:
                from tinyseek.inference.hf_engine import HFEngine

                self._engine = HFEngine(module, self.tok, max_batch=max(max_batch, n))
            self._engine_key = key
        groups = self._engine.generate(prompts, params, n=n)
        out = []
        for group in groups:
            for c in group:
                ids = list(c.token_ids)
                if c.finish_reason == "stop" and (not ids or ids[-1] != self.eos_id):
                    ids.append(self.eos_id)  # the engine may leave the stop token out; the loss must see it
                out.append((ids, c.finish_reason))
        return out

    # -- saving ----------------------------------------------------------------------------------
    def save(self, model: torch.nn.Module, out, tokenizer_file=None, trainer_state: dict | None = None):
        """A checkpoint directory, atomically: tinyseek's format, or `save_pretrained` + the tokenizer files for a
        transformers model (loadable by `from_pretrained`, and by `tinyseek grpo --model` again)."""
        from tinyseek.checkpoint import TRAINER_STATE_FILE, atomic_dir, save_checkpoint

        if self.kind == "tinyseek":
            return save_checkpoint(model, out, tokenizer_file, trainer_state=trainer_state)
        with atomic_dir(out) as tmp:
            _unwrap(model).save_pretrained(tmp)
            self.tok.save_pretrained(tmp)
            if trainer_state is not None:
                torch.save(trainer_state, tmp / TRAINER_STATE_FILE)
        return out


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    m = getattr(module, "_orig_mod", module)  # torch.compile
    return getattr(m, "module", m) if hasattr(m, "no_sync") else m  # DDP


def _logits_plain(policy: Policy, module, ids: torch.Tensor) -> torch.Tensor:
    if policy.kind == "tinyseek":
        return module(ids).logits
    return module(input_ids=ids, use_cache=False).logits


def _generate_plain(policy: Policy, module, prompts: list[list[int]], n: int, max_new_tokens: int, temperature: float,
                    top_p: float, top_k: int, seed: int, ignore_eos: bool = False) -> list[tuple[list[int], str]]:
    """The reference rollout: no KV cache, the whole right-padded batch recomputed for every new token.

    Right padding is exact here because attention is causal: the logits at row i's last real position never
    see the padding behind it. O(T^2) and slow; it exists to check the engine path and to run without it.
    """
    rows = [p for p in prompts for _ in range(n)]
    N = len(rows)
    lens = torch.tensor([len(p) for p in rows])  # [N]
    T = int(lens.max()) + max_new_tokens
    buf = torch.full((N, T), policy.pad_id, dtype=torch.long)
    for i, p in enumerate(rows):
        buf[i, :len(p)] = torch.tensor(p, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    done = torch.zeros(N, dtype=torch.bool)
    new: list[list[int]] = [[] for _ in range(N)]
    reasons = ["length"] * N
    for _ in range(max_new_tokens):
        L = int(lens.max())
        logits = _logits_plain(policy, module, buf[:, :L]).float()  # [N, L, V]
        last = logits[torch.arange(N), lens - 1] / temperature  # [N, V]
        probs = torch.softmax(last, dim=-1)
        if top_k > 0:
            kth = probs.topk(min(top_k, probs.size(-1)), dim=-1).values[:, -1:]
            probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
        if top_p < 1.0:
            sp, si = probs.sort(dim=-1, descending=True)
            keep = (sp.cumsum(-1) - sp) < top_p * sp.sum(-1, keepdim=True)
            probs = torch.zeros_like(probs).scatter(-1, si, sp * keep)
        tok = torch.multinomial(probs, 1, generator=gen).squeeze(1)  # [N]
        for i in torch.nonzero(~done).flatten().tolist():
            t = int(tok[i])
            new[i].append(t)
            buf[i, lens[i]] = t
            lens[i] += 1
            if t == policy.eos_id and not ignore_eos:
                done[i] = True
                reasons[i] = "stop"
        if done.all():
            break
    return list(zip(new, reasons))
