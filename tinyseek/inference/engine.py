"""tinyseek's engine: batched generation on the preallocated KV cache, continuous batching, MTP drafts.

    engine = Engine(model, tokenizer=None, max_batch=64, max_len=None, speculative=False, compile=False)
    engine.generate(prompts, params, n=1) -> list[list[Completion]]   # batch API (GRPO, eval, distillation)
    rid = engine.add_request(prompt_ids, params, prefix=None, capture_prompt_cache=False)   # the server's API
    events = engine.step()          # list[StepEvent]: new tokens / text delta / finish_reason per request
    engine.collect(rid) -> Completion (once finished; forgets the request);  engine.abort(rid) -> Completion
    engine.encode_chat(messages) -> prompt ids;  engine.decode(ids) -> text
    load_engine(path) (tinyseek/inference/load.py) -> this Engine for a tinyseek checkpoint, HFEngine for other models

`generate` steps the engine until nothing is left, so do not mix it with requests added by `add_request`
on the same engine. A server calls `collect` (or `abort`) for each finished request, or the engine keeps
its record; and it makes every call from one thread (the engine has no locks). The model is used as it is;
`step` puts it in eval mode and restores its training flag afterwards, so a trainer can share it.

How a request runs. Every sequence owns one row of a `KVCache` (MLA's absorbed path: only the latent and
the RoPE key are cached, `cfg.latent_cache_dim` values per token per layer). A request is admitted when a
row is free: its prompt is prefilled once (prompts admitted together share right-padded forwards), and the
n samples of a group get the prompt's rows by `cache.copy_rows` instead of recomputing it. Then every
`step()` feeds each running sequence its last token, samples the next one for all rows at once
(`inference/sampling.py`: per-row parameters, counter-based seeds), and retires rows that hit a stop token,
a stop string or their token budget. A retired row costs nothing from the next step on (the forward runs on
`rows=` the running ones only) and the next queued request takes it: continuous batching.

Host syncs. Each step reads the sampled tokens to the host once (stop checks and streaming need them).
Decode and speculative steps run `model.decode`, which is told the attended length (the engine counts its
tokens) instead of reading `cache.pos`; an eager prefill reads it once. Nothing else syncs.

Compiled decoding (`compile=True`, opt-in: the first compilation takes about a minute of a small CPU, so it
pays only for long generations). The decode step goes through `torch.compile(model.decode, dynamic=True)`,
one graph for every batch size and cache length; speculating, the whole step (verification, acceptance,
rollback and the k drafts: `_speculate`) is one graph, so a step costs one call whatever k is; prefill goes
through the same compiled functions. On a CPU inductor's C++ wrapper calls the kernels, because a small
model's step is mostly per-kernel call overhead. The kernel probes run before tracing
(`model.probe_kernels`), or the layer loop would break into a graph per layer. The eager step is the
reference it is tested against.

What `logprobs` holds: the model's log-probability of each sampled token at the sampling temperature
(T = 1 for greedy), before penalties and truncation — see `inference/sampling.py`.
Token ids include the stop token that ended a sequence (RL needs the model to learn to stop), the text
does not; a stop string is cut from the text (the ids keep the token that completed it).

Speculative decoding (`speculative=True`, or an int k for k drafts a step; greedy requests only, any batch
size). The model's first MTP module drafts: MTP at position j reads the main model's pre-norm hidden state
h_j and the token t_{j+1} and predicts t_{j+2}. Further drafts (k > 1) chain the module on its own output
hidden state, which it was not trained for, so they are accepted less often. A step feeds [pending token,
d_1..d_k] to the main model and keeps the drafts up to the first one that differs from its argmax, plus the
main model's token after the last kept one: 1..k+1 tokens for one forward; each row rolls its `cache.pos`
back past what it rejected. Greedy output is identical to plain decoding; `engine.stats["accepted"] /
stats["drafted"]` is the acceptance rate.

Prefix caching (the server's): `add_request(..., capture_prompt_cache=True)` hands back the prompt's cache
rows as a `PromptRows`, and a later `add_request(..., prefix=pc)` writes them into its row so that only the
rest of its prompt is prefilled (see `add_request`).

Reference path: `Engine(..., recompute=True)` runs the full sequence through the model without a cache
at every step; tests hold the cached path to it (logits within 1e-4).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import random
from collections import deque
from dataclasses import dataclass

import torch

from tinyseek.errors import TinyseekError
from tinyseek.inference.sampling import BatchParams, SamplingParams, derive_seed, sample
from tinyseek.inference.sequence import Completion, PromptRows, Seq


@dataclass
class StepEvent:
    """What one step did for one request: new tokens (0, 1, or 2 with speculation), the new text, the end."""

    rid: int
    token_ids: list[int]
    logprobs: list[float] | None
    text: str = ""  # new text since the last event (streaming; "" without a tokenizer)
    finish_reason: str | None = None
    prompt_cache: PromptRows | None = None


def _chain_draft(mtp_step, h_mtp: torch.Tensor, tok: torch.Tensor, cache, rows: torch.Tensor, i: int, length: int):
    """Draft i+2: MTP depth 1 (`mtp_step`: the model's, or its compiled form) fed its own output h_mtp
    [B, 1, dim] in place of the main model's hidden state (which the drafted token does not have yet) and draft
    i+1 `tok` [B]. It stands at position cache.pos + i (cache.pos is the pending token's position, whose MTP
    entry reads draft 1): each chained draft has its own RoPE position and MTP cache slot. Those entries are
    provisional: verification rewrites them. `length` bounds the positions + 1 from above (the host does not
    know how many drafts were kept)."""
    return mtp_step(1, h_mtp, tok[:, None], cache, rows, cache.pos[rows] + i, min(length, cache.max_len))


def _speculate(model, tokens, cache, rows, length: int, k: int, want_lp: bool):
    """One speculative step on the device, with nothing read to the host (so that it compiles as one graph):
    verify [pending, d_1..d_k] (`tokens` [B, k+1]) in one forward; keep the drafts up to the first mismatch
    plus the main model's own next token; roll the rest of the cache back; draft k tokens again.

    Returns ([B, (k+1) + 1 + k (+ k+1)] float64: the main model's greedy tokens y, the number of drafts
    accepted a, the new drafts (and the log-probs of y), the logits after the pending token [B, V])."""
    B = tokens.shape[0]
    logits, residual = model.decode(tokens, cache, rows, length, residual=True)
    y = logits.argmax(-1)  # [B, k+1]: the main model's greedy token after each fed token
    a = (y[:, :k] == tokens[:, 1:]).long().cumprod(1).sum(1)  # [B]: drafts accepted (leading matches)
    # MTP over the k+1 new positions: position j sees the token the main model put after it (y); only the
    # first a+1 entries are right (the others are rolled back below and rewritten later)
    h_mtp, mlg = model.mtp_step(1, residual, y, cache, rows, None, length)
    cache.pos[rows] = cache.pos[rows] - (k - a)  # keep pending + the accepted drafts
    d = mlg.argmax(-1).gather(1, a[:, None]).squeeze(1)  # [B]: draft after the new pending token y_a
    drafts = [d]
    h = h_mtp.gather(1, a[:, None, None].expand(B, 1, h_mtp.shape[-1]))  # [B, 1, dim]
    for i in range(k - 1):  # chained drafts
        h, lg = _chain_draft(model.mtp_step, h, d, cache, rows, i, length + i + 1)
        d = lg[:, -1].argmax(-1)
        drafts.append(d)
    parts = [y.double(), a.double()[:, None], torch.stack(drafts, 1).double()]
    if want_lp:
        parts.append(torch.log_softmax(logits.float(), -1).gather(-1, y[..., None]).squeeze(-1).double())
    return torch.cat(parts, dim=1), logits[:, 0]


class Engine:
    """Generation for a tinyseek `Transformer` (see the module docstring)."""

    def __init__(
        self,
        model,
        tokenizer=None,
        max_batch: int = 64,
        max_len: int | None = None,
        speculative: bool = False,
        recompute: bool = False,
        compile: bool | str = False,
    ):
        self.model = model
        self.cfg = model.cfg
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_len = max_len or self.cfg.max_seq_len
        self.speculative = bool(speculative)
        self.n_draft = int(speculative)  # True -> 1 draft token a step; an int k -> k chained drafts
        self.recompute = recompute
        if speculative and not 1 <= int(speculative) <= 8:
            raise TinyseekError(f"speculative: draft length must be 1..8 (got {speculative})")
        if speculative and not len(getattr(model, "mtp", [])):
            raise TinyseekError(f"speculative: the model has no MTP module (mtp_depth={self.cfg.mtp_depth})")
        if speculative and recompute:
            raise TinyseekError("speculative: not available with recompute=True (the reference path)")
        # the decode step's forward: model.decode (no host sync), compiled once for every batch size and length
        # (compile: True for inductor, or a torch.compile backend name: "eager" traces without code generation)
        self.compiled = bool(compile) and not recompute
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        backend = compile if isinstance(compile, str) else "inductor"
        # on a CPU the generated code is called from C++ rather than from a Python wrapper: a decode step of a
        # small model is mostly per-kernel call overhead (dev/LOG.md: 1.26x at batch 1, 1.07x at batch 16)
        kw = dict(dynamic=True, backend=backend)
        if backend == "inductor" and self.device.type == "cpu":
            kw["options"] = {"cpp_wrapper": True}
        if self.compiled:
            from tinyseek.model import probe_kernels

            probe_kernels(model)  # before tracing (see probe_kernels)
        self._decode_fn = torch.compile(model.decode, **kw) if self.compiled else model.decode
        # speculating: the drafting MTP steps too (verification goes through _decode_fn with residual=True)
        mtp = getattr(model, "mtp_step", None)
        self._mtp_fn = torch.compile(mtp, **kw) if self.compiled and speculative else mtp
        self._spec_fn = torch.compile(_speculate, **kw) if self.compiled else _speculate
        from tinyseek.model import KVCache

        # the MTP layers are cached only when they draft; speculation writes one position past the last kept token
        cache_cfg = self.cfg if speculative else dataclasses.replace(self.cfg, mtp_depth=0)
        self.cache = KVCache(cache_cfg, max_batch, self.max_len + self.n_draft, device=self.device, dtype=self.dtype)
        self.eos_id = getattr(tokenizer, "eos_id", None)
        self.eos_ids = {self.eos_id} if self.eos_id is not None else set()
        self.free_rows = list(range(max_batch - 1, -1, -1))
        self.waiting: deque[list[Seq]] = deque()  # groups not yet admitted
        self.running: dict[int, Seq] = {}  # by rid
        self.seqs: dict[int, Seq] = {}  # every known request until collected
        self._rid = itertools.count()
        self._group = itertools.count()
        self._rng = random.Random(int.from_bytes(os.urandom(8), "little"))
        self._bp_key: tuple | None = None
        self._bp: BatchParams | None = None
        self._seen: torch.Tensor | None = None  # [max_batch, V] bool: prompt + output tokens (repetition penalty)
        self._counts: torch.Tensor | None = None  # [max_batch, V] int32: output token counts (presence/frequency)
        self.logit_hook = None  # tests: called as hook(rids, logits [B, V]) for every sampling step
        self.stats = {"steps": 0, "forward_tokens": 0, "drafted": 0, "accepted": 0}

    # -- requests --------------------------------------------------------------------------------
    def add_request(
        self,
        prompt_ids: list[int],
        params: SamplingParams | None = None,
        prefix: PromptRows | None = None,
        capture_prompt_cache: bool = False,
        stream: bool = True,
    ) -> int:
        """Queue one sequence; returns its request id.

        `capture_prompt_cache=True`: once the prompt is prefilled, its cache rows are copied out into a
        `PromptRows`: the token ids and one tensor per `KVCache` buffer (`cache._tensors()`, main layers then MTP
        layers), each `[n, ...]` — for absorbed MLA one `[n, kv_lora_rank + qk_rope_head_dim]` latent-and-RoPE-key
        buffer per layer. It arrives on the request's first `StepEvent.prompt_cache` and stays readable through
        `prompt_cache(rid)` until collected. While speculating, the capture happens after the MTP layers' rows are
        filled.

        `prefix=pc`: `pc.token_ids` must be a prefix of `prompt_ids`; its tensors are written into the new row and
        only the rest of the prompt is prefilled. (If it covers the whole prompt its last token is recomputed,
        because sampling needs that position's logits. A speculating engine recomputes the prefix's last position
        anyway: its MTP entry was computed from the token after it, which the new prompt may not share.) A prefix
        made by a cache of another layout (dtype aside) is refused with a one-line error."""
        return self._add_group(prompt_ids, params or SamplingParams(), 1, prefix, capture_prompt_cache, stream)[0]

    def _add_group(
        self, prompt_ids, params: SamplingParams, n: int, prefix=None, capture=False, stream=True, index: int = 0
    ) -> list[int]:
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise TinyseekError("prompt: empty (at least one token is needed)")
        V = self.cfg.vocab_size
        bad = next((t for t in prompt if not 0 <= t < V), None)
        if bad is not None:
            raise TinyseekError(f"prompt: token id {bad} outside the vocabulary 0..{V - 1}")
        if len(prompt) >= self.max_len:
            raise TinyseekError(f"prompt: {len(prompt)} tokens leave no room in the engine's max_len={self.max_len}")
        if self.speculative and (not params.greedy or params.uses_penalties):
            raise TinyseekError("speculative: only greedy requests without penalties (temperature=0) are supported")
        if prefix is not None:
            self._check_prefix(prefix, prompt)
        # the prompt's index in its `generate` call is mixed into the seed: one seed over a batch of prompts must
        # give independent draws, and two copies of one prompt (GRPO's batches may repeat a problem) distinct samples
        base = derive_seed(params.seed, index) if params.seed is not None else self._rng.getrandbits(62)
        g = next(self._group)
        budget = min(params.max_new_tokens, self.max_len - len(prompt))
        group = []
        for i in range(n):
            s = Seq(
                next(self._rid),
                prompt,
                params,
                derive_seed(base, i),
                stream=stream,
                prefix=prefix,
                capture=capture,
                group=g,
                budget=budget,
            )
            self.seqs[s.rid] = s
            group.append(s)
        # a group larger than the batch is admitted in pieces (each piece prefills once)
        for i in range(0, n, self.max_batch):
            self.waiting.append(group[i : i + self.max_batch])
        return [s.rid for s in group]

    def _check_prefix(self, prefix: PromptRows, prompt: list[int]) -> None:
        if tuple(prompt[: prefix.n]) != tuple(prefix.token_ids):
            raise TinyseekError(f"prefix: its {prefix.n} token ids are not a prefix of the prompt")
        mine = self.cache._tensors()
        if len(prefix.tensors) != len(mine) or any(
            tuple(p.shape[1:]) != tuple(m.shape[2:]) or p.shape[0] != prefix.n for p, m in zip(prefix.tensors, mine)
        ):
            raise TinyseekError("prefix: its tensors do not match this engine's cache layout")

    def abort(self, rid: int) -> Completion | None:
        """Stop a request now (queued or running); returns what it produced, or None for an unknown id."""
        s = self.seqs.get(rid)
        if s is None:
            return None
        for grp in self.waiting:
            if s in grp:
                grp.remove(s)
        if s.finish is None:
            s.finish = "abort"
        self._retire(s)
        return self.collect(rid)

    def prompt_cache(self, rid: int) -> PromptRows | None:
        s = self.seqs.get(rid)
        return None if s is None else s.prompt_cache

    def has_unfinished(self) -> bool:
        return bool(self.running) or any(self.waiting)

    def collect(self, rid: int) -> Completion | None:
        """The finished request's completion (and forget it); None while it runs."""
        s = self.seqs.get(rid)
        if s is None or s.finish is None:
            return None
        del self.seqs[rid]
        text = s.output_text(self.eos_ids, self.tokenizer) if self.tokenizer is not None else None
        return Completion(list(s.out), list(s.lps) if s.params.logprobs else None, s.finish, text, len(s.prompt))

    def encode_chat(self, messages: list[dict]) -> list[int]:
        """Prompt ids for a chat with the tokenizer's template (R1 format for tinyseek's tokenizer)."""
        if self.tokenizer is None:
            raise TinyseekError("engine: no tokenizer, cannot build a chat prompt")
        return self.tokenizer.encode(self.tokenizer.chat(messages, add_generation_prompt=True))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    # -- the batch API -----------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams | list[SamplingParams] | None = None,
        n: int = 1,
        first: int = 0,
    ) -> list[list[Completion]]:
        """n samples for each prompt (prefill shared within a prompt's group); results in prompt order. `first` is
        the index of prompts[0] in a larger batch this call is a slice of (a rank's share under torchrun): prompt j
        is seeded as prompt first + j of the whole batch, so the slices draw what the whole batch would."""
        params = params or SamplingParams()
        plist = params if isinstance(params, list) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise TinyseekError(f"params: {len(plist)} given for {len(prompts)} prompts")
        if n < 1:
            raise TinyseekError(f"n: must be >= 1 (got {n})")
        rids: list[list[int]] = []
        try:
            for j, (p, sp) in enumerate(zip(prompts, plist)):
                rids.append(self._add_group(p, sp, n, stream=False, index=first + j))
        except TinyseekError as e:  # one bad prompt: queue nothing
            for r in itertools.chain.from_iterable(rids):
                self.abort(r)
            raise TinyseekError(f"prompt {len(rids)}: {e}") from None
        with self._eval_mode():  # once for the whole batch: switching modes walks every module (~10% of a step)
            while self.has_unfinished():
                self.step()
        return [[self.collect(r) for r in group] for group in rids]

    @contextlib.contextmanager
    def _eval_mode(self):
        """The model in eval mode inside, its own mode restored after (GRPO shares the model with its trainer)."""
        if not self.model.training:
            yield
            return
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(True)

    # -- one step ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[StepEvent]:
        """Admit and prefill what fits, then advance every running sequence by one token (two when a draft is
        accepted). Returns one event per request that produced tokens or finished."""
        events: dict[int, StepEvent] = {}
        decoding = [s for s in self.running.values() if s.pending is not None]
        with self._eval_mode():
            admitted = self._admit()
            if admitted:
                self._prefill(admitted, events)
            if decoding:
                if self.speculative:
                    self._decode_speculative(decoding, events)
                else:
                    self._decode(decoding, events)
        self.stats["steps"] += 1
        return list(events.values())

    def _admit(self) -> list[list[Seq]]:
        groups = []
        while self.waiting and len(self.waiting[0]) <= len(self.free_rows):
            grp = self.waiting.popleft()
            if not grp:
                continue
            for s in grp:
                s.row = self.free_rows.pop()
                self.running[s.rid] = s
            groups.append(grp)
        return groups

    def _prefill(self, groups: list[list[Seq]], events) -> None:
        """Prefill one row per group, copy it to the group's other rows, and sample each sequence's first token.

        Prompts of different lengths share a forward right-padded (`_buckets` bounds the padding): causal
        attention never lets a real token see the padding after it, and each row's `cache.pos` is then set
        back to its real length, so the padded entries are masked out and overwritten by the next tokens."""
        heads = [g[0] for g in groups]
        starts = []
        for s in heads:
            self.cache.reset([s.row])
            # (the whole prompt cached: its last token is recomputed, sampling needs its logits; speculating, the
            # prefix's last position is recomputed too: its MTP entry read the token after it, maybe another one)
            n = min(s.prefix.n - int(self.speculative), len(s.prompt) - 1) if s.prefix is not None else 0
            if n:
                for x, p in zip(self.cache._tensors(), s.prefix.tensors):
                    x[s.row, :n] = p[:n].to(x.dtype)
                self.cache.pos[s.row] = n
            starts.append(n)
        last_logits: list[torch.Tensor | None] = [None] * len(heads)
        for idx in self._buckets([len(s.prompt) - n for s, n in zip(heads, starts)]):
            hs = [heads[i] for i in idx]
            lens = [len(heads[i].prompt) - starts[i] for i in idx]
            T = max(lens)
            if self.recompute:
                logits = self._full_logits([s.prompt for s in hs])
            else:
                pad = [[0] * (T - L) for L in lens]
                tokens = torch.tensor(
                    [s.prompt[len(s.prompt) - L :] + p for s, L, p in zip(hs, lens, pad)], device=self.device
                )  # [k, T]
                rows = torch.tensor([s.row for s in hs], device=self.device)
                if self.compiled:  # the compiled step (prompts were checked on admission; no expert statistics)
                    length = max(starts[i] for i in idx) + T
                    out = self._decode_fn(tokens, self.cache, rows, length, residual=self.speculative)
                    all_logits, residual = out if self.speculative else (out, None)
                else:
                    out = self.model(tokens, cache=self.cache, rows=rows)
                    all_logits, residual = out.logits, out.residual
                last = torch.tensor(lens, device=self.device) - 1
                logits = all_logits[torch.arange(len(hs), device=self.device), last]  # [k, V] at each real last token
                if T > min(lens):
                    self.cache.pos[rows] = torch.tensor([starts[i] + L for i, L in zip(idx, lens)], device=self.device)
                if self.speculative:
                    for j, (s, L) in enumerate(zip(hs, lens)):
                        s._residual = residual[j, :L]  # [L, dim] for the MTP prefill below
                self.stats["forward_tokens"] += sum(lens)
                self.stats["prefill_pad_tokens"] = self.stats.get("prefill_pad_tokens", 0) + tokens.numel() - sum(lens)
            for j, i in enumerate(idx):
                last_logits[i] = logits[j]
        members, rows_logits = [], []
        for grp, lg in zip(groups, last_logits):
            head = grp[0]
            if len(grp) > 1 and not self.recompute:
                self.cache.copy_rows(head.row, [s.row for s in grp[1:]])
            for s in grp:
                self._reset_penalty_rows(s)
                members.append(s)
                rows_logits.append(lg)
        logits = torch.stack(rows_logits)  # [M, V]
        toks, lps = self._sample(members, logits)
        if self.speculative:
            self._mtp_prefill(groups, toks)
        for grp in groups:  # after the MTP prefill, which fills the MTP layers' rows of the prompt
            head = grp[0]
            if head.capture:
                n = len(head.prompt)
                pc = PromptRows(tuple(head.prompt[:n]), [x[head.row, :n].clone() for x in self.cache._tensors()])
                for s in grp:
                    s.prompt_cache = pc
        self._emit(members, [[t] for t in toks], [[x] for x in lps] if lps is not None else None, events)
        for s in members:
            if s.prompt_cache is not None and s.rid in events:
                events[s.rid].prompt_cache = s.prompt_cache

    @staticmethod
    def _buckets(lengths: list[int], slack: float = 1.25, extra: int = 16) -> list[list[int]]:
        """Group prompt indices into forwards: sorted by length, a bucket grows while its padded size stays
        within `slack` x its real tokens + `extra` (one forward instead of one per distinct length)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        buckets: list[list[int]] = []
        for i in order:
            b = buckets[-1] if buckets else None
            if b is not None and lengths[i] * (len(b) + 1) <= slack * (sum(lengths[j] for j in b) + lengths[i]) + extra:
                b.append(i)
            else:
                buckets.append([i])
        return buckets

    def _decode(self, seqs: list[Seq], events) -> None:
        if self.recompute:
            logits = self._full_logits([s.prompt + s.out for s in seqs])
        else:
            tokens = torch.tensor([[s.pending] for s in seqs], device=self.device)  # [B, 1]
            rows = torch.tensor([s.row for s in seqs], device=self.device)
            # the fill level after this step, counted here rather than read from cache.pos (no host sync)
            length = max(len(s.prompt) + len(s.out) for s in seqs)
            logits = self._decode_fn(tokens, self.cache, rows, length)[:, -1]  # [B, V]
            self.stats["forward_tokens"] += len(seqs)
        toks, lps = self._sample(seqs, logits)
        self._emit(seqs, [[t] for t in toks], [[x] for x in lps] if lps is not None else None, events)

    def _full_logits(self, seqs_tokens: list[list[int]]) -> torch.Tensor:
        """Reference path: the last position's logits of each full sequence, no cache."""
        out = []
        for toks in seqs_tokens:
            t = torch.tensor([toks], device=self.device)
            out.append(self.model(t).logits[0, -1])
            self.stats["forward_tokens"] += len(toks)
        return torch.stack(out)

    # -- sampling -------------------------------------------------------------------------------------
    def _batch_params(self, seqs: list[Seq]) -> BatchParams:
        key = tuple(s.rid for s in seqs)
        if key != self._bp_key:
            self._bp = BatchParams.build([s.params for s in seqs], [s.seed for s in seqs], self.device)
            self._bp_key = key
        return self._bp

    def _reset_penalty_rows(self, s: Seq) -> None:
        if not s.params.uses_penalties:
            return
        V = self.cfg.vocab_size
        if self._seen is None:
            self._seen = torch.zeros(self.max_batch, V, dtype=torch.bool, device=self.device)
            self._counts = torch.zeros(self.max_batch, V, dtype=torch.int32, device=self.device)
        self._seen[s.row] = False
        self._counts[s.row] = 0
        self._seen[s.row, torch.tensor(s.prompt, device=self.device)] = True

    def _sample(self, seqs: list[Seq], logits: torch.Tensor) -> tuple[list[int], list[float] | None]:
        """Sample one token per sequence; the one host sync of the step."""
        if self.logit_hook is not None:
            self.logit_hook([s.rid for s in seqs], logits)
        bp = self._batch_params(seqs)
        counters = torch.tensor([len(s.out) for s in seqs], device=self.device)
        track = self._seen is not None and any(s.params.uses_penalties for s in seqs)
        rows = torch.tensor([s.row for s in seqs], device=self.device) if track else None
        seen = self._seen[rows] if track else None
        counts = self._counts[rows] if track else None
        want_lp = any(s.params.logprobs for s in seqs)
        toks, lps = sample(logits, bp, counters, seen=seen, counts=counts, want_logprobs=want_lp)
        if track:
            self._seen[rows, toks] = True
            self._counts[rows, toks] += 1
        if want_lp:
            both = torch.stack([toks.double(), lps.double()]).tolist()
            return [int(t) for t in both[0]], both[1]
        return toks.tolist(), None

    # -- speculative decoding -----------------------------------------------------------------------------
    def _mtp_prefill(self, groups: list[list[Seq]], first_tokens: list[int]) -> None:
        """Run MTP depth 1 over the prompt so its cache layer is filled, and draft the tokens after the first one."""
        i = 0
        for grp in groups:
            head = grp[0]
            T = head._residual.shape[0]
            n0 = len(head.prompt) - T
            ahead = head.prompt[n0 + 1 :] + [first_tokens[i]]  # tokens one position ahead of the hidden states
            tokens = torch.tensor([ahead], device=self.device)
            rows = torch.tensor([head.row], device=self.device)
            start = torch.full((1,), n0, dtype=torch.long, device=self.device)  # the hidden states' first position
            h, lg = self._mtp_fn(1, head._residual[None], tokens, self.cache, rows, start, len(head.prompt))
            del head._residual
            d = lg[:, -1].argmax(-1)  # [1]
            drafts = [d]
            for j in range(self.n_draft - 1):
                h, lg = _chain_draft(self._mtp_fn, h[:, -1:], d, self.cache, rows, j, len(head.prompt) + j + 1)
                d = lg[:, -1].argmax(-1)
                drafts.append(d)
            head.draft = torch.stack(drafts, 1)[0].tolist()
            if len(grp) > 1:  # greedy: every member has the same first token and drafts; share the MTP rows too
                self.cache.copy_rows(head.row, [s.row for s in grp[1:]])
                for s in grp[1:]:
                    s.draft = list(head.draft)
            i += len(grp)

    def _decode_speculative(self, seqs: list[Seq], events) -> None:
        """Verify [pending, d_1..d_k] in one forward; keep the drafts up to the first mismatch plus the main
        model's own next token (1..k+1 tokens), roll the rest of the cache back, and draft again."""
        B, k = len(seqs), self.n_draft
        rows = torch.tensor([s.row for s in seqs], device=self.device)
        tokens = torch.tensor([[s.pending] + s.draft for s in seqs], device=self.device)  # [B, k+1]
        length = max(len(s.prompt) + len(s.out) for s in seqs) + k  # the fill level after these k+1 tokens
        want_lp = any(s.params.logprobs for s in seqs)
        out, first_logits = self._spec_fn(self.model, tokens, self.cache, rows, length, k, want_lp)
        if self.logit_hook is not None:
            self.logit_hook([s.rid for s in seqs], first_logits)
        host = out.tolist()  # the one sync: [B, (k+1) + 1 + k (+ k+1)]
        self.stats["forward_tokens"] += (k + 1) * B
        self.stats["drafted"] += k * B
        new_toks, new_lps = [], []
        for s, h_row in zip(seqs, host):
            n_acc = int(h_row[k + 1])
            self.stats["accepted"] += n_acc
            new_toks.append([int(t) for t in h_row[: n_acc + 1]])
            s.draft = [int(t) for t in h_row[k + 2 : 2 * k + 2]]
            if want_lp:
                new_lps.append(h_row[2 * k + 2 : 2 * k + 3 + n_acc])
        self._emit(seqs, new_toks, new_lps if want_lp else None, events)

    # -- bookkeeping ------------------------------------------------------------------------------------
    def _emit(self, seqs: list[Seq], toks: list[list[int]], lps: list[list[float]] | None, events) -> None:
        """Append new tokens, apply the stop rules, retire finished rows, and fill the events."""
        for i, s in enumerate(seqs):
            if s.finish is not None:
                continue
            p = s.params
            added, added_lp = [], []
            for j, t in enumerate(toks[i]):
                lp = lps[i][j] if lps is not None else None
                added.append(t)
                added_lp.append(lp)
                if s.add(t, lp, self.eos_ids, self.tokenizer) is not None:
                    break
            s.pending = s.out[-1]
            ev = StepEvent(s.rid, added, added_lp if p.logprobs else None, finish_reason=s.finish)
            if s.stream and self.tokenizer is not None:
                ev.text = s.delta(self.eos_ids, self.tokenizer)
            events[s.rid] = ev
            if s.finish is not None:
                self._retire(s)

    def _retire(self, s: Seq) -> None:
        if s.rid in self.running:
            del self.running[s.rid]
            self.cache.reset([s.row])
            self.free_rows.append(s.row)
            s.pending = None
