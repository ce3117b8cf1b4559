"""Where GRPO's completions come from: this process's engine, or an OpenAI-compatible inference server.

One interface, one implementation per backend (minimind's shape). `Rollout.generate(loop, prompts, n, ...)`
returns the completions of the *global* batch, in prompt order, on every rank:

- each rank samples only its contiguous share of the prompts (`tinyseek.dist.shard`), then the shares are
  gathered (`tinyseek.dist.gather`), so N ranks do 1/N of the sampling each;
- a completion's randomness is a function of (the step's seed, its prompt's index in the global batch, its
  index in the group), never of the rank or of what else is in the call (the engines' counter-based sampler,
  given the share's offset as `first`), so 1 rank and N ranks draw the same completions and the same rewards.

`LocalRollout` samples with the policy's own engine. Under DDP that is the trained model itself; under
FSDP2 or expert parallelism the trained model is sharded, and a forward there is a collective that every
rank would have to run in step (sampling is not: each rank's completions end at different lengths), so
the engine runs on a full copy of the weights, refreshed after each update (`sync`), as an inference
server would hold them.

`ServerRollout` asks an OpenAI-compatible server (`tinyseek serve --allow-weight-updates`; SGLang speaks the
same two endpoints) for completions: one `POST /v1/completions` per prompt, sent together, with the prompt as
token ids, `n`, the sampling parameters, a seed derived from (the step's seed, the prompt's index in the global
batch), `logprobs` and `return_token_ids` (vLLM's name), answered with each choice's token ids, text, finish
reason and per-token log-probs. After each update rank 0 writes the weights as an ordinary checkpoint
(RUN/rollout_weights) and calls `POST /update_weights_from_disk` with its path (SGLang's endpoint), so the
server samples from the current policy. The log-probs come back with each completion; the loss recomputes
them with the trainer's weights as the in-process path does (same maths), so they serve as a check of the
weight push (tests/test_rollout_server.py compares the two).

`PlainRollout` is the reference the engines are checked against (`rollout_impl = "plain"`): no KV cache, the whole
batch recomputed for every new token, behind the same `generate`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import torch

from tinyseek.dist import DistInfo, barrier, gather, shard
from tinyseek.errors import TinyseekError
from tinyseek.inference.sampling import SamplingParams, derive_seed
from tinyseek.inference.sequence import Completion
from tinyseek.train import parallel
from tinyseek.train.policy import Policy, TinyseekPolicy


class Rollout:
    """Completions for GRPO (see the module docstring). Subclasses implement `_generate` and `_push`."""

    policy: Policy  # the policy whose tokenizer (and, locally, whose engine) the rollouts use
    # whether the completions' log-probs are the trained policy's own (GRPO's old log-probs, num_iterations > 1):
    # an in-process engine's are; a server's pass through a checkpoint push and stay a check, not an input
    own_logprobs = False

    def __init__(self) -> None:
        self._version: int | None = None

    def sync(self, loop) -> None:
        """Bring the sampler's weights to the trainer's, once per optimizer step count (every rank calls it)."""
        if self._version != loop.step:
            self._push(loop)
            self._version = loop.step

    def generate(
        self,
        loop,
        prompts: list[list[int]],
        n: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        impl: str = "engine",
        max_batch: int = 256,
        ignore_eos: bool = False,
        logprobs: bool = False,
    ) -> list[Completion]:
        """n completions for each prompt of the global batch, group after group, on every rank (collective).
        `logprobs`: each completion carries the sampler's log-probs of its tokens (a server's always do)."""
        self.sync(loop)
        d: DistInfo = loop.dist
        part = shard(len(prompts), d)  # this rank's share; part.start seeds each prompt by its global index
        out = []
        if len(part):
            opts = {
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "top_k": top_k,
                "seed": seed,
                "impl": impl,
                "max_batch": min(max_batch, len(part) * n),
                "ignore_eos": ignore_eos,
                "logprobs": logprobs,
            }
            out = self._generate([prompts[i] for i in part], n, part.start, opts)
        return gather(out, d)

    def _generate(self, prompts: list[list[int]], n: int, first: int, opts: dict) -> list[Completion]:
        """n completions for each of `prompts`, the share that starts at global index `first`; `opts` holds
        `generate`'s sampling arguments by name."""
        raise NotImplementedError

    def _push(self, loop) -> None:
        raise NotImplementedError


class PlainRollout:
    """The reference rollout, behind the engines' `generate`: no KV cache, the whole right-padded batch recomputed
    for every new token, sampled with torch.multinomial (temperature, top-k, top-p; temperature 0 is greedy).

    Right padding is exact here because attention is causal: the logits at row i's last real position never
    see the padding behind it. O(T^2) and slow; it exists to check the engine path and to run without it.
    """

    def __init__(self, policy: Policy, module: torch.nn.Module):
        self.policy, self.model = policy, module

    def decode(self, ids: list[int]) -> str:
        return self.policy.decode(ids)

    @torch.inference_mode()
    def generate(
        self, prompts: list[list[int]], params: SamplingParams, n: int = 1, first: int = 0
    ) -> list[list[Completion]]:
        was_training = self.model.training
        self.model.eval()
        # each row's own generator, seeded from (seed, its prompt's index in the batch, its index in the group) as
        # the engines seed their rows: a row draws the same tokens whatever else is in the call (so on any rank)
        seeds = [
            derive_seed(derive_seed(params.seed or 0, first + p), j) for p in range(len(prompts)) for j in range(n)
        ]
        try:
            rows = self._sample([p for p in prompts for _ in range(n)], params, seeds)
        finally:
            self.model.train(was_training)
        return [rows[i * n : (i + 1) * n] for i in range(len(prompts))]

    @staticmethod
    def truncate(probs: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
        """probs [N, V] with what top-k, then top-p over the top-k survivors (renormalised), drop set to 0."""
        if top_k > 0:
            kth = probs.topk(min(top_k, probs.size(-1)), dim=-1).values[:, -1:]
            probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
        if top_p < 1.0:
            sp, si = probs.sort(dim=-1, descending=True)
            keep = (sp.cumsum(-1) - sp) < top_p * sp.sum(-1, keepdim=True)
            probs = torch.zeros_like(probs).scatter(-1, si, sp * keep)
        return probs

    def _sample(self, rows: list[list[int]], params: SamplingParams, seeds: list[int]) -> list[Completion]:
        pol = self.policy
        temperature, top_k = (1.0, 1) if params.greedy else (params.temperature, params.top_k)
        stops = set(params.stop_token_ids) | ({pol.eos_id} if not params.ignore_eos else set())
        N = len(rows)
        lens = torch.tensor([len(p) for p in rows])  # [N]
        buf = torch.full((N, int(lens.max()) + params.max_new_tokens), pol.pad_id, dtype=torch.long)
        for i, p in enumerate(rows):
            buf[i, : len(p)] = torch.tensor(p, dtype=torch.long)
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        done = torch.zeros(N, dtype=torch.bool)
        new: list[list[int]] = [[] for _ in range(N)]
        reasons = ["length"] * N
        for _ in range(params.max_new_tokens):
            logits = pol.logits(self.model, buf[:, : int(lens.max())]).float()  # [N, L, V]
            probs = torch.softmax(logits[torch.arange(N), lens - 1] / temperature, dim=-1)  # [N, V]
            probs = self.truncate(probs, top_k, params.top_p)
            tok = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(gens)])  # [N]
            for i in torch.nonzero(~done).flatten().tolist():
                t = int(tok[i])
                new[i].append(t)
                buf[i, lens[i]] = t
                lens[i] += 1
                if t in stops:
                    done[i] = True
                    reasons[i] = "stop"
            if done.all():
                break
        return [
            Completion(ids, None, r, pol.decode(ids[:-1] if r == "stop" else ids), len(p))
            for ids, r, p in zip(new, reasons, rows)
        ]


def engine_for(
    policy: Policy,
    prompts: list[list[int]],
    max_new_tokens: int,
    max_batch: int = 256,
    n: int = 1,
    impl: str = "engine",
):
    """What samples the policy's completions (`rollout_impl`): its cached engine (`Policy.engine`), or for impl
    "plain" the cache-free reference, `PlainRollout`."""
    if impl == "plain":
        return PlainRollout(policy, parallel.unwrapped(policy.module))
    return policy.engine(prompts, max_new_tokens, max_batch, n)


class LocalRollout(Rollout):
    """The policy's engine, on the trained model (DDP, one process) or on a full copy of it (FSDP2, EP)."""

    own_logprobs = True

    def __init__(self, policy: Policy, loop):
        super().__init__()
        self.policy = policy
        self._copy = loop.sharded
        if self._copy:
            from tinyseek.model import Transformer

            model = Transformer(parallel.unwrapped(loop.raw_model).cfg).to(loop.device).eval()
            self.policy = TinyseekPolicy(model, policy.tok, policy.source)

    def _push(self, loop) -> None:
        if self._copy:  # a collective: every rank gathers the full weights
            sd = parallel.full_state_dict(loop.raw_model)
            with torch.no_grad():
                self.policy.module.load_state_dict(sd)

    def _generate(self, prompts, n, first, opts):
        opts = dict(opts)
        engine = engine_for(self.policy, prompts, opts["max_new_tokens"], opts["max_batch"], n, opts.pop("impl"))
        return self.policy.generate(prompts, n, first=first, engine=engine, **opts)


def _post(url: str, body: dict, api_key: str = "", timeout: float = 600.0) -> dict:
    """POST JSON, return the parsed answer; an HTTP or connection error is a one-line TinyseekError."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read()).get("error", {}).get("message", "")
        except Exception:
            msg = ""
        raise TinyseekError(f"rollout_url: {url} answered {e.code} {msg}".rstrip()) from None
    except (urllib.error.URLError, OSError) as e:
        raise TinyseekError(f"rollout_url: cannot reach {url} ({getattr(e, 'reason', e)})") from None


class ServerRollout(Rollout):
    """Completions from an OpenAI-compatible server; weights pushed to it after each update (module docstring)."""

    def __init__(self, policy: Policy, url: str, api_key: str, weights_dir: Path, model_name: str = "tinyseek"):
        super().__init__()
        if policy.kind != "tinyseek":
            raise TinyseekError(
                "rollout: server rollouts push tinyseek checkpoints; a transformers policy samples in-process"
            )
        self.policy = policy
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.weights_dir = Path(weights_dir)
        self.model_name = model_name

    def _push(self, loop) -> None:
        sd = parallel.full_state_dict(loop.raw_model)  # a collective under FSDP2 / EP
        if loop.is_main:
            from tinyseek.checkpoint import save_checkpoint

            model = parallel.Consolidated(parallel.unwrapped(loop.raw_model).cfg, sd)
            save_checkpoint(model, self.weights_dir, loop.tokenizer_file)
            _post(f"{self.url}/update_weights_from_disk", {"model_path": str(self.weights_dir)}, self.api_key)
        barrier(loop.dist)

    def _generate(self, prompts, n, first, opts):
        from concurrent.futures import ThreadPoolExecutor

        def one(p: int) -> list[Completion]:
            body = {
                "model": self.model_name,
                "prompt": prompts[p],
                "n": n,
                "max_tokens": opts["max_new_tokens"],
                "temperature": opts["temperature"],
                "top_p": opts["top_p"],
                "top_k": opts["top_k"],
                "seed": derive_seed(opts["seed"], first + p),  # by the prompt's place in the global batch
                "logprobs": 1,
                "return_token_ids": True,
                "ignore_eos": opts["ignore_eos"],
            }
            ans = _post(f"{self.url}/v1/completions", body, self.api_key)
            choices = sorted(ans.get("choices", []), key=lambda c: c["index"])
            if len(choices) != n:
                raise TinyseekError(f"rollout_url: asked for {n} completions, got {len(choices)}")
            return [
                Completion(
                    list(c["token_ids"]),
                    (c.get("logprobs") or {}).get("token_logprobs"),
                    c["finish_reason"],
                    c["text"],
                    len(prompts[p]),
                )
                for c in choices
            ]

        # every prompt's request at once: the server batches them (continuous batching)
        with ThreadPoolExecutor(max_workers=min(32, len(prompts))) as pool:
            return [c for group in pool.map(one, range(len(prompts))) for c in group]
