"""`HFEngine`: transformers causal LMs (a local directory or a GGUF file) behind the engine's `generate()`.

Evaluation, GRPO and distillation take "an engine"; this one lets them run on a pretrained model such as
SmolLM2-135M-Instruct. The model keeps its own KV cache (`DynamicCache`); what is shared with `Engine` is
everything the caller sees: `SamplingParams`, the sampler (`sampling.sample`: same per-row
parameters, counter-based seeds, same definition of logprobs), the stop rules and `Completion`.

A batch is left-padded (attention mask + explicit position ids); the n samples of a prompt share its
prefill (`cache.batch_repeat_interleave(n)`); finished rows are dropped from the cache
(`batch_select_indices`) so they stop costing compute. No continuous batching: requests are processed in
chunks of at most `max_batch` sequences.

GGUF: transformers de-quantises the file to float32 while loading (~13 s for SmolLM2-135M on an idle
2-core machine), so the model computes in float32 whatever the file's quantisation.
"""

from __future__ import annotations

import torch

from tinyseek.errors import TinyseekError
from tinyseek.inference.sampling import BatchParams, SamplingParams, derive_seed, sample
from tinyseek.inference.sequence import Completion, Seq


class HFTokenizer:
    """The slice of tinyseek's Tokenizer interface the engines use, over a transformers tokenizer."""

    def __init__(self, hf_tok):
        self.hf = hf_tok
        self.eos_id = hf_tok.eos_token_id
        self.pad_id = hf_tok.pad_token_id if hf_tok.pad_token_id is not None else hf_tok.eos_token_id

    def encode(self, text: str, add_special: bool = False) -> list[int]:
        return self.hf(text, add_special_tokens=add_special)["input_ids"]

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special)

    def chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        if getattr(self.hf, "chat_template", None) is None:
            raise TinyseekError("tokenizer: this model has no chat template")
        return self.hf.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)


def _preallocated_cache(capacity: int):
    """A transformers `DynamicCache` whose layers hold their keys and values in buffers preallocated for
    `capacity` positions: `update` writes the new entries into place and returns views, where `DynamicLayer`
    concatenates, copying the whole cache of every layer for every new token (36% of a GRPO step's CPU time
    in the profile, dev/LOG.md). Everything else (masks, `batch_select_indices`, ...) is DynamicCache's."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def lazy_initialization(self, key_states, value_states) -> None:
            super().lazy_initialization(key_states, value_states)
            B, H, _, Dk = key_states.shape
            self._k = key_states.new_zeros(B, H, capacity, Dk)
            self._v = value_states.new_zeros(B, H, capacity, value_states.shape[-1])
            self._n = 0
            self._views()

        def _views(self) -> None:
            self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            T = key_states.shape[-2]
            if self._n + T > self._k.shape[2]:  # past the planned length: grow (double), as a concatenation would
                grow = max(T, self._k.shape[2])
                self._k = torch.cat([self._k, self._k.new_zeros(*self._k.shape[:2], grow, self._k.shape[3])], 2)
                self._v = torch.cat([self._v, self._v.new_zeros(*self._v.shape[:2], grow, self._v.shape[3])], 2)
            self._k[:, :, self._n : self._n + T] = key_states
            self._v[:, :, self._n : self._n + T] = value_states
            self._n += T
            self._views()
            return self.keys, self.values

        def crop(self, tokens_to_remove: int) -> None:
            if self.is_initialized and tokens_to_remove < 0:
                self._n = max(0, self._n + tokens_to_remove)
                self._views()

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.is_initialized:
                self._k, self._v = self._k.repeat_interleave(repeats, 0), self._v.repeat_interleave(repeats, 0)
                self._views()

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.is_initialized:
                self._k, self._v = self._k[indices], self._v[indices]
                self._views()

    cache = DynamicCache()
    cache.layer_class_to_replicate = PreallocatedLayer
    return cache


class HFEngine:
    def __init__(self, hf_model, hf_tokenizer=None, max_batch: int = 64, preallocate: bool = True):
        self.model = hf_model  # generate() switches it to eval mode and back (a trainer may share it)
        self.tokenizer = HFTokenizer(hf_tokenizer) if hf_tokenizer is not None else None
        self.max_batch = max_batch
        self.preallocate = preallocate  # False: transformers' own DynamicCache (the reference)
        self.device = next(hf_model.parameters()).device
        eos = getattr(hf_model.generation_config, "eos_token_id", None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer is not None and self.tokenizer.eos_id is not None:
            eos.append(self.tokenizer.eos_id)
        self.eos_ids = set(eos)
        self.eos_id = eos[0] if eos else None
        self.vocab_size = hf_model.get_output_embeddings().weight.shape[0]
        self.stats = {"forward_tokens": 0}
        import inspect

        # transformers renamed past_key_values -> cache (the old name warns from 5.2x on)
        self._cache_kw = "cache" if "cache" in inspect.signature(hf_model.forward).parameters else "past_key_values"

    def encode_chat(self, messages: list[dict]) -> list[int]:
        if self.tokenizer is None:
            raise TinyseekError("engine: no tokenizer, cannot build a chat prompt")
        return self.tokenizer.encode(self.tokenizer.chat(messages))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    # -- generation ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams | list[SamplingParams] | None = None,
        n: int = 1,
        on_tokens=None,
        first: int = 0,
    ) -> list[list[Completion]]:
        params = params or SamplingParams()
        plist = params if isinstance(params, list) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise TinyseekError(f"params: {len(plist)} given for {len(prompts)} prompts")
        if n < 1 or n > self.max_batch:
            raise TinyseekError(f"n: must be in 1..max_batch={self.max_batch}, got {n}")
        for p in prompts:
            if not p:
                raise TinyseekError("prompt: empty (at least one token is needed)")
            bad = next((t for t in p if not 0 <= t < self.vocab_size), None)
            if bad is not None:
                raise TinyseekError(f"prompt: token id {bad} outside the vocabulary 0..{self.vocab_size - 1}")
        per_chunk = max(1, self.max_batch // n)
        results: list[list[Completion]] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for i in range(0, len(prompts), per_chunk):
                # `first`: prompts[0]'s index in a larger batch (a rank's share), as in Engine.generate
                results += self._chunk(
                    prompts[i : i + per_chunk], plist[i : i + per_chunk], n, on_tokens, first=first + i
                )
        finally:
            self.model.train(was_training)
        return results

    def _chunk(self, prompts, plist, n, on_tokens, first: int = 0) -> list[list[Completion]]:
        """Prompts first.. of the call: their index in the call seeds them, as in `Engine.generate`."""
        from transformers import DynamicCache

        dev, P = self.device, len(prompts)
        L = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_id if self.tokenizer is not None and self.tokenizer.pad_id is not None else 0
        ids = torch.tensor([[pad] * (L - len(p)) + list(p) for p in prompts], device=dev)  # [P, L] left-padded
        mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts], device=dev)
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        longest = L + max(sp.max_new_tokens for sp in plist)
        cache = _preallocated_cache(longest) if self.preallocate else DynamicCache()
        logits = self.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{self._cache_kw: cache}
        ).logits[:, -1]
        self.stats["forward_tokens"] += ids.numel()
        seqs = []
        for j, (p, sp) in enumerate(zip(prompts, plist)):
            base = derive_seed(sp.seed, first + j) if sp.seed is not None else int(torch.randint(0, 2**62, ()).item())
            for k in range(n):
                seqs.append(
                    Seq(
                        rid=j * n + k,
                        prompt=list(p),
                        params=sp,
                        seed=derive_seed(base, k),
                        budget=sp.max_new_tokens,
                        stream=on_tokens is not None,
                    )
                )
        if n > 1:
            cache.batch_repeat_interleave(n)
        logits = logits.repeat_interleave(n, 0)  # [P*n, V]
        # the attention mask in a buffer of the longest length, used through a growing view (no cat per token)
        mask_buf = torch.ones(P * n, longest, dtype=mask.dtype, device=dev)
        mask_buf[:, :L] = mask.repeat_interleave(n, 0)
        width = L
        last_pos = pos[:, -1].repeat_interleave(n, 0)  # [B]
        active = list(range(len(seqs)))
        V = logits.shape[-1]
        track = any(s.params.uses_penalties for s in seqs)
        seen = counts = None
        if track:
            seen = torch.zeros(len(seqs), V, dtype=torch.bool, device=dev)
            counts = torch.zeros(len(seqs), V, dtype=torch.int32, device=dev)
            for b, s in enumerate(seqs):
                seen[b, torch.tensor(s.prompt, device=dev)] = True
        bp_all = BatchParams.build([s.params for s in seqs], [s.seed for s in seqs], dev)
        while True:
            idx = torch.tensor(active, device=dev)
            bp = (
                bp_all
                if len(active) == len(seqs)
                else BatchParams.build([seqs[i].params for i in active], [seqs[i].seed for i in active], dev)
            )
            counters = torch.tensor([len(seqs[i].out) for i in active], device=dev)
            toks, lps = sample(
                logits, bp, counters, seen=seen[idx] if track else None, counts=counts[idx] if track else None
            )
            if track:
                seen[idx, toks] = True
                counts[idx, toks] += 1
            host = torch.stack([toks.double(), lps.double()]).tolist()
            keep = []
            for j, i in enumerate(active):
                s, t = seqs[i], int(host[0][j])
                s.add(t, host[1][j], self.eos_ids, self.tokenizer)
                if on_tokens is not None:
                    on_tokens(s, t)
                if s.finish is None:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(active):
                sel = torch.tensor(keep, device=dev)
                cache.batch_select_indices(sel)
                mask_buf, last_pos = mask_buf[sel], last_pos[sel]
                active = [active[j] for j in keep]
            last_pos = last_pos + 1
            width += 1
            if width > mask_buf.shape[1]:  # a sequence past its planned length (cannot happen with max_new_tokens)
                mask_buf = torch.cat([mask_buf, torch.ones_like(mask_buf)], 1)
            inp = torch.tensor([[seqs[i].out[-1]] for i in active], device=dev)
            logits = self.model(
                input_ids=inp,
                attention_mask=mask_buf[:, :width],
                position_ids=last_pos[:, None],
                use_cache=True,
                **{self._cache_kw: cache},
            ).logits[:, -1]
            self.stats["forward_tokens"] += len(active)
        out = []
        for j in range(P):
            grp = []
            for s in seqs[j * n : (j + 1) * n]:
                text = s.output_text(self.eos_ids, self.tokenizer) if self.tokenizer is not None else None
                grp.append(Completion(s.out, s.lps if s.params.logprobs else None, s.finish, text, len(s.prompt)))
            out.append(grp)
        return out

    def stream(self, prompt_ids: list[int], params: SamplingParams, write) -> str:
        """One request, calling `write(new_text)` as tokens arrive (the generate/chat commands)."""

        def on_tokens(s, t):
            if delta := s.delta(self.eos_ids, self.tokenizer):
                write(delta)

        return self.generate([prompt_ids], params, on_tokens=on_tokens)[0][0].text or ""
