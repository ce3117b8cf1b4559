"""The HTTP API: DeepSeek/OpenAI-compatible chat completions, completions on token ids, and the chat page.

Endpoints
- `POST /v1/chat/completions` (also `/chat/completions`): see `protocol.ChatRequest`. Non-streaming
  answers carry `choices[i].message.{content, reasoning_content}`; streaming answers are SSE
  `chat.completion.chunk`s (role first, then `delta.reasoning_content` pieces, then `delta.content`
  pieces, then a chunk with `finish_reason`), a final usage chunk with empty `choices` when
  `stream_options.include_usage`, then `data: [DONE]`. See `reasoning.py` for how the completion is
  split (the `<answer>` tags are dropped from `content`).
- `POST /v1/completions`: OpenAI's completions with the prompt as token ids (`protocol.CompletionRequest`),
  non-streaming; each choice carries its text and finish reason, with `logprobs` the sampled tokens'
  log-probabilities, and with `return_token_ids` (vLLM's name) the generated and prompt token ids. This is
  what GRPO's server rollouts send (tinyseek/train/rollout.py).
- `POST /update_weights_from_disk` `{"model_path": CKPT}` (SGLang's endpoint; only with
  `--allow-weight-updates`): the model's weights are replaced by CKPT's once the running requests finish, and
  the prefix cache is emptied (its rows were computed with the old weights).
- `GET /v1/models`, `GET /health` (load, cache, and for the page what the model was trained on, a prompt to try
  and the default sampling), `GET /v1/usage` (the caller's totals and cost from the ledger), `GET /` (the chat
  page, `static/index.html`).

Stop strings (`stop`) go to the engine with the other sampling parameters and are matched on the
completion's text as generated (the R1 tags included): the engine ends a choice in the step whose token
completes one, and never streams the stop string.

One request, either endpoint: a `Service` handler authenticates the caller, reads and validates the body,
checks the model, builds the prompt(s) and a `Call` holding one `scheduler.Job` per choice (`sampling_params`)
and admits the jobs (rate limit, queue). One consumer (`consume`) reads a call's engine events for the chat
stream, the chat answer and the completions answer alike; `Service.close` frees the slots and bills once
however the response ends. `create_app` only wires the routes to the handlers.

Usage. `prompt_tokens` counts the prompt once whatever `n`; `prompt_cache_hit_tokens` are the prompt
tokens whose attention rows came from the prefix cache for the first choice (the others are misses);
`completion_tokens` sums every token the engine generated for the choices (the end-of-sentence token
included; for a client that left, up to the step that stopped its rows);
`completion_tokens_details.reasoning_tokens` sums the tokens from each completion's start through
`</think>`. `Service.bill` computes these once per request, when no choice can produce another token, and
records them in the ledger: the numbers a response or a stream's usage chunk shows are the ones billed
(`/v1/completions` shows OpenAI's three: prompt, completion and total tokens; each prompt counted once).

Keys. With `--api-key` given, every `/v1/*` and `/chat/completions` request needs
`Authorization: Bearer KEY` (401 otherwise); `/`, `/health` and `/openapi.json` are open. Rate limits
are per key (or for everyone together without keys): at most `--rate-limit` requests per minute.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tinyseek import __version__
from tinyseek.errors import TinyseekError
from tinyseek.inference.sampling import SamplingParams, derive_seed
from tinyseek.r1 import TEMPERATURE, THINK, THINK_END, TOP_P, render_prompt
from tinyseek.serve.ledger import ApiKeys, Ledger, Prices, key_id
from tinyseek.serve.prefix_cache import BlockCache
from tinyseek.serve.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    parse_chat_request,
    parse_completion_request,
)
from tinyseek.serve.reasoning import ReasoningSplitter, reasoning_tokens
from tinyseek.serve.scheduler import Job, QueueFull, Scheduler

STATIC = Path(__file__).parent / "static"
MODEL_ALIASES = ("deepseek-reasoner", "deepseek-chat")  # so DeepSeek clients work unchanged
SYSTEM_FINGERPRINT = f"tinyseek-{__version__}"
COMPLETION_USAGE = ("prompt_tokens", "completion_tokens", "total_tokens")  # the usage /v1/completions shows
NO_USAGE = {  # a key's totals before its first request
    "requests": 0,
    "prompt_cache_hit_tokens": 0,
    "prompt_cache_miss_tokens": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "reasoning_tokens": 0,
    "total_tokens": 0,
    "cost_usd": 0.0,
}


@dataclass
class ServeConfig:
    model_name: str = "tinyseek"
    api_keys: tuple[str, ...] = ()
    rate_limit: int = 600  # requests per minute per key; 0 = unlimited
    max_queue: int = 64  # jobs waiting for a slot (each choice of a request is a job)
    default_max_tokens: int = 1024
    context_len: int = 0  # 0 = the model's max_seq_len
    prefix_cache: bool = True
    cache_block: int = 16
    cache_budget_mb: float = 256.0
    prices: Prices = field(default_factory=Prices)
    max_body_bytes: int = 4 << 20
    db: str = "usage.sqlite"
    allow_weight_updates: bool = False  # POST /update_weights_from_disk (RL trainers push their weights)
    temperature: float = TEMPERATURE  # a request's temperature when it gives none (R1's recommended sampling)
    top_p: float = TOP_P  # a request's top_p when it gives none
    prompt_template: str = "chat"  # how chat messages become a prompt: chat | r1-zero (a model trained in R1-Zero's)
    trained_on: str = ""  # what the model was trained on, in words (provenance.TrainedOn.describe), for the page
    example: str = ""  # a prompt it answers, the page's placeholder
    single_turn: bool = False  # the page sends each message alone (a model trained on single problems, as chat)


class RateLimiter:
    """Sliding one-minute window of request times per key id."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._times: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def check(self, kid: str, now: float | None = None) -> float:
        """0 if allowed (and counted); otherwise seconds until a slot frees."""
        if self.per_minute <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._times[kid]
            while q and q[0] <= now - 60.0:
                q.popleft()
            if len(q) >= self.per_minute:
                return max(0.0, q[0] + 60.0 - now)
            q.append(now)
            return 0.0


class _EventStream(StreamingResponse):
    """SSE whose `on_close` runs when the response ends for any reason. A generator's `finally` alone is not
    enough: a client that leaves before the first byte means the generator never starts, so it never ends."""

    def __init__(self, content, on_close):
        super().__init__(
            content, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self._on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


class _ClientGone(Exception):
    """A non-streaming client disconnected while its request ran."""


@dataclass
class Call:
    """One request in flight: its prompts, its jobs (choice c is sample c % n of prompt c // n), the queue their
    engine events arrive on, how each choice finished, and its bill."""

    kid: str
    rid: str
    prompts: list[list[int]]
    n: int  # choices per prompt
    jobs: list[Job]
    queue: asyncio.Queue
    finish: list[str | None] = field(default_factory=list)
    usage: dict | None = None  # set when billed (once)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.finish = [None] * len(self.jobs)


def sampling_params(
    req: ChatRequest | CompletionRequest,
    max_tokens: int,
    choice: int,
    default_temperature: float = TEMPERATURE,
    default_top_p: float = TOP_P,
    **extra,
) -> SamplingParams:
    """Choice `choice`'s sampling parameters: the fields both endpoints share (the server's defaults where the
    request gives none: R1's recommended T 0.6, top-p 0.95 unless `tinyseek serve` was told otherwise), plus an
    endpoint's own (`extra`); a value the sampler refuses is a 422."""
    try:
        return SamplingParams(
            max_new_tokens=max_tokens,
            temperature=default_temperature if req.temperature is None else req.temperature,
            top_p=default_top_p if req.top_p is None else req.top_p,
            stop_strings=tuple(req.stop_list()),
            # a hash, not seed + choice: requests seeded 11 and 12 must not share choices' seeds
            seed=None if req.seed is None else derive_seed(req.seed, choice),
            **extra,
        )
    except TinyseekError as e:
        raise APIError(422, str(e), code="invalid_value") from None


def usage_of(call: Call, think_ids: tuple[int, int]) -> dict:
    """A call's usage from its jobs' token ids: every prompt counted once, its cache hits those of its first
    choice; every token the engine generated for a choice (a stop token included; a choice the client abandoned
    counts up to the step that stopped it); reasoning through `</think>` (`think_ids`: `<think>`, `</think>`)."""
    hit = sum(call.jobs[i * call.n].cached_tokens for i in range(len(call.prompts)))
    n_prompt = sum(len(p) for p in call.prompts)
    completion = sum(len(j.token_ids) for j in call.jobs)
    reasoning = sum(reasoning_tokens(j.token_ids, *think_ids) for j in call.jobs)
    return {
        "prompt_tokens": n_prompt,
        "completion_tokens": completion,
        "total_tokens": n_prompt + completion,
        "prompt_cache_hit_tokens": hit,
        "prompt_cache_miss_tokens": n_prompt - hit,
        "prompt_tokens_details": {"cached_tokens": hit},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


async def consume(call: Call, disconnected=None):
    """The one consumer of a call's engine events, whichever endpoint, streaming or not: yields (choice, text,
    finish_reason or None) as they come, until every choice has finished (`call.finish`). `disconnected()` is
    polled while waiting (a non-streaming client that leaves); an engine error is a 500."""
    while any(f is None for f in call.finish):
        try:
            i, kind, payload = await asyncio.wait_for(call.queue.get(), timeout=0.5)
        except asyncio.TimeoutError:
            if disconnected is not None and await disconnected():
                raise _ClientGone from None
            continue
        if kind == "error":
            raise APIError(500, payload, type="server_error", code="engine_error")
        if call.finish[i] is not None:
            continue
        text, reason = payload
        if reason is not None:
            call.finish[i] = reason
        yield i, text, reason


async def reasoning_deltas(call: Call, splitters: list[ReasoningSplitter], disconnected=None):
    """`consume` for the chat endpoint: yields (choice, [(field, text)], finish_reason or None), each choice's text
    split into `reasoning_content` and `content` pieces by its splitter (which keeps the whole message)."""
    async for i, text, reason in consume(call, disconnected):
        pieces = splitters[i].feed(text) if text else []
        if reason is not None:
            pieces += splitters[i].finish()
        yield i, pieces, reason


def chat_answer(call: Call, splitters: list[ReasoningSplitter], model: str, usage: dict) -> dict:
    """The non-streaming chat completion of a finished call."""
    choices = []
    for i, sp in enumerate(splitters):
        reasoning, content = sp.result()
        choices.append(
            {
                "index": i,
                "message": {"role": "assistant", "content": content, "reasoning_content": reasoning},
                "logprobs": None,
                "finish_reason": call.finish[i],
            }
        )
    return {
        "id": call.rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        "usage": usage,
    }


def completion_answer(call: Call, texts: list[str], req: CompletionRequest, tokenizer, usage: dict) -> dict:
    """The text completion of a finished call: each choice's text, and as asked its log-probs and token ids."""
    choices = []
    for i, job in enumerate(call.jobs):
        c = {"index": i, "text": texts[i], "logprobs": None, "finish_reason": call.finish[i]}
        if req.logprobs is not None:
            c["logprobs"] = {
                "tokens": [tokenizer.decode([t]) for t in job.token_ids],
                "token_logprobs": list(job.logprobs),
                "top_logprobs": None,
                "text_offset": None,
            }
        if req.return_token_ids:
            c["token_ids"], c["prompt_token_ids"] = list(job.token_ids), call.prompts[i // call.n]
        choices.append(c)
    return {
        "id": call.rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": req.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        "usage": {k: usage[k] for k in COMPLETION_USAGE},
    }


class Service:
    """What the routes share (engine, tokenizer, config, ledger, scheduler, rate limiter, prefix cache) and the
    steps of a request. The route handlers carry no docstrings: FastAPI would publish them in /openapi.json."""

    def __init__(self, engine, tokenizer, cfg: ServeConfig, ledger: Ledger | None = None):
        self.engine, self.tokenizer = engine, tokenizer
        self.ctx_len = cfg.context_len or int(getattr(engine, "max_len", 0) or engine.model.cfg.max_seq_len)
        self.cache = BlockCache(cfg.cache_block, int(cfg.cache_budget_mb * (1 << 20))) if cfg.prefix_cache else None
        self.scheduler = Scheduler(engine, self.cache, max_queue=cfg.max_queue)
        self.limiter = RateLimiter(cfg.rate_limit)
        self.ledger = ledger if ledger is not None else Ledger(cfg.db, cfg.prices)
        self.keys = ApiKeys(cfg.api_keys)  # digests only: the plain keys are not kept, not even in self.cfg
        self.cfg = dataclasses.replace(cfg, api_keys=self.keys.hashed())
        self.think_ids = (tokenizer.token_id(THINK), tokenizer.token_id(THINK_END))
        self.model_names = (cfg.model_name,) + tuple(a for a in MODEL_ALIASES if a != cfg.model_name)
        self.created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        """The scheduler thread runs while the app does."""
        self.scheduler.start()
        try:
            yield
        finally:
            self.scheduler.stop()

    # -- the steps of a request -------------------------------------------------------------------
    def authenticate(self, request: Request) -> str:
        """The caller's key id; raises 401 when keys are configured and this one is missing or wrong."""
        if not self.keys:
            return key_id(None)
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(
                401,
                "missing API key: send 'Authorization: Bearer KEY'",
                type="authentication_error",
                code="invalid_api_key",
            )
        kid = self.keys.check(token.strip())
        if kid is None:
            raise APIError(401, "wrong API key", type="authentication_error", code="invalid_api_key")
        return kid

    async def read_body(self, request: Request) -> bytes:
        """The body, refused with 413 beyond `max_body_bytes` (checked while reading, not after)."""
        limit = self.cfg.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise APIError(
                413,
                f"request body of {declared} bytes is over the limit of {limit} bytes",
                param="body",
                code="request_too_large",
            )
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit:
                raise APIError(
                    413, f"request body is over the limit of {limit} bytes", param="body", code="request_too_large"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def check_model(self, model: str) -> None:
        """404 unless `model` is the served name or an alias."""
        if model not in self.model_names:
            raise APIError(
                404,
                f"model {model!r} does not exist (served: {', '.join(self.model_names)})",
                param="model",
                code="model_not_found",
            )

    def chat_prompt(self, req: ChatRequest) -> tuple[list[int], int]:
        """The messages as prompt token ids (the chat template, or R1-Zero's for a model trained in it), and
        max_tokens (by default what fits, at most `default_max_tokens`); 400 when the two overflow the context."""
        msgs = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
        try:
            text, bos = render_prompt(msgs, self.cfg.prompt_template)
            prompt = self.tokenizer.encode(text, add_special=bos)
        except TinyseekError as e:
            raise APIError(400, f"messages: {e}", param="messages") from None
        ctx_len = self.ctx_len
        max_tokens = req.max_tokens or req.max_completion_tokens
        room = ctx_len - len(prompt)
        if max_tokens is None:
            max_tokens = min(self.cfg.default_max_tokens, room)
        if max_tokens < 1 or len(prompt) + max_tokens > ctx_len:
            asked = req.max_tokens or req.max_completion_tokens or max_tokens
            raise APIError(
                400,
                f"this model's maximum context length is {ctx_len} tokens; the messages are "
                f"{len(prompt)} tokens and max_tokens is {asked} ({len(prompt) + asked} in all)",
                param="messages",
                code="context_length_exceeded",
            )
        return prompt, max_tokens

    def completion_prompts(self, req: CompletionRequest) -> list[list[int]]:
        """The prompts as token ids (a text is encoded), each within the vocabulary (422) and, with max_tokens,
        the context (400)."""
        V = self.engine.cfg.vocab_size
        prompts = []
        for i, p in enumerate(req.prompts()):
            ids = self.tokenizer.encode(p, add_special=True) if isinstance(p, str) else list(p)
            bad = next((t for t in ids if not 0 <= t < V), None)
            if bad is not None:
                raise APIError(422, f"prompt[{i}]: token id {bad} outside the vocabulary 0..{V - 1}", param="prompt")
            if len(ids) + req.max_tokens > self.ctx_len:
                raise APIError(
                    400,
                    f"prompt[{i}]: {len(ids)} tokens plus max_tokens {req.max_tokens} exceed the context length "
                    f"of {self.ctx_len}",
                    param="prompt",
                    code="context_length_exceeded",
                )
            prompts.append(ids)
        return prompts

    def build_call(
        self,
        kid: str,
        rid: str,
        prompts: list[list[int]],
        req: ChatRequest | CompletionRequest,
        max_tokens: int,
        event_loop: asyncio.AbstractEventLoop,
        **extra,
    ) -> Call:
        """A `Call` with `req.n` jobs for each prompt, choice c = i * n + j (sample j of prompt i) seeded from
        (seed, c); `extra` are the endpoint's own sampling parameters. Nothing is submitted yet."""
        queue: asyncio.Queue = asyncio.Queue()
        jobs = []
        for i, ids in enumerate(prompts):
            for j in range(req.n):
                c = i * req.n + j
                params = sampling_params(req, max_tokens, c, self.cfg.temperature, self.cfg.top_p, **extra)
                jobs.append(Job(ids, params, queue, event_loop, index=c, use_cache=self.cache is not None))
        return Call(kid, rid, prompts, req.n, jobs, queue)

    def admit(self, kid: str, jobs: list[Job]) -> None:
        """Count the request against the caller's rate (429) and queue its jobs (503 when the queue is full)."""
        wait = self.limiter.check(kid)
        if wait > 0:
            raise APIError(
                429,
                f"rate limit of {self.cfg.rate_limit} requests per minute reached; retry in {wait:.1f} s",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        try:
            self.scheduler.submit(jobs)
        except QueueFull as e:
            raise APIError(
                503,
                f"server overloaded: {e}; retry later",
                type="server_error",
                code="server_overloaded",
                headers={"Retry-After": "1"},
            ) from None

    def bill(self, call: Call) -> dict:
        """The call's usage, recorded in the ledger exactly once: the one place usage is counted."""
        with call.lock:
            if call.usage is None:
                u = usage_of(call, self.think_ids)
                hit, miss = u["prompt_cache_hit_tokens"], u["prompt_cache_miss_tokens"]
                reasoning = u["completion_tokens_details"]["reasoning_tokens"]
                self.ledger.record(
                    call.kid, self.cfg.model_name, call.rid, hit, miss, u["completion_tokens"], reasoning
                )
                call.usage = u
        return call.usage

    def close(self, call: Call) -> None:
        """However a response ends (done, client gone, error, never started): free the slots, bill once (when no
        choice can produce another token)."""
        self.scheduler.cancel(call.jobs, on_done=lambda: self.bill(call))

    async def chat_stream(self, call: Call, splitters: list[ReasoningSplitter], model: str, include_usage: bool):
        """The SSE body of a streamed chat completion."""
        created = int(time.time())

        def chunk(choices, usage=None):
            obj = {
                "id": call.rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": choices,
            }
            if include_usage:
                obj["usage"] = usage
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        try:
            for i in range(len(call.jobs)):
                yield chunk(
                    [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
            async for i, pieces, reason in reasoning_deltas(call, splitters):
                for field_, text in pieces:
                    yield chunk([{"index": i, "delta": {field_: text}, "logprobs": None, "finish_reason": None}])
                if reason is not None:
                    yield chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": reason}])
            self.close(call)
            if include_usage:
                yield chunk([], self.bill(call))
            yield "data: [DONE]\n\n"
        except APIError as e:
            yield f"data: {json.dumps(e.body())}\n\n"
        finally:
            self.close(call)  # a client that went away: free its slots now, and bill what it consumed

    def swap_weights(self, path: str) -> None:
        """On the engine thread, with no job running: the model's weights replaced by those of checkpoint `path`."""
        import torch

        from tinyseek.checkpoint import read_weights
        from tinyseek.hf import check_state_dict

        model = self.engine.model
        sd = read_weights(path)
        check_state_dict(model.state_dict(), sd, path)
        with torch.no_grad():
            model.load_state_dict(sd)  # copied into the served dtype and device
        if self.cache is not None:
            self.cache.clear()  # its rows were computed with the old weights

    # -- route handlers (no docstrings: see the class) --------------------------------------------
    async def chat_completions(self, request: Request):
        kid = self.authenticate(request)
        req = parse_chat_request(await self.read_body(request))
        self.check_model(req.model)
        prompt, max_tokens = self.chat_prompt(req)
        penalties = {"presence_penalty": req.presence_penalty or 0.0, "frequency_penalty": req.frequency_penalty or 0.0}
        rid = "chatcmpl-" + secrets.token_hex(12)
        call = self.build_call(kid, rid, [prompt], req, max_tokens, asyncio.get_running_loop(), **penalties)
        self.admit(kid, call.jobs)
        splitters = [ReasoningSplitter() for _ in call.jobs]
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            stream = self.chat_stream(call, splitters, req.model, include_usage)
            return _EventStream(stream, functools.partial(self.close, call))
        try:
            async for _ in reasoning_deltas(call, splitters, request.is_disconnected):
                pass
        except _ClientGone:  # nobody to answer; close() frees the slots and bills what ran
            return JSONResponse({}, status_code=499)
        finally:
            self.close(call)
        return chat_answer(call, splitters, req.model, self.bill(call))

    async def completions(self, request: Request):
        kid = self.authenticate(request)
        req = parse_completion_request(await self.read_body(request))
        self.check_model(req.model)
        prompts = self.completion_prompts(req)
        vllm = {"top_k": max(0, req.top_k or 0), "logprobs": req.logprobs is not None, "ignore_eos": req.ignore_eos}
        rid = "cmpl-" + secrets.token_hex(12)
        call = self.build_call(kid, rid, prompts, req, req.max_tokens, asyncio.get_running_loop(), **vllm)
        self.admit(kid, call.jobs)
        texts = [""] * len(call.jobs)
        try:
            async for i, text, _ in consume(call, request.is_disconnected):
                texts[i] += text or ""
        except _ClientGone:
            return JSONResponse({}, status_code=499)
        finally:
            self.close(call)
        return completion_answer(call, texts, req, self.tokenizer, self.bill(call))

    async def update_weights(self, request: Request):
        self.authenticate(request)
        if not self.cfg.allow_weight_updates:
            raise APIError(403, "weight updates are off (start the server with --allow-weight-updates)",
                           type="permission_error", code="forbidden")  # fmt: skip
        raw = await self.read_body(request)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        path = body.get("model_path") if isinstance(body, dict) else None
        if not isinstance(path, str) or not path:
            raise APIError(400, 'body: expected {"model_path": "a checkpoint directory"}', param="model_path")
        try:
            await asyncio.wrap_future(self.scheduler.call(functools.partial(self.swap_weights, path)))
        except TinyseekError as e:
            raise APIError(400, f"model_path: {e}", param="model_path") from None
        return {"success": True, "message": f"weights updated from {path}"}

    async def health(self):
        return {
            "status": "ok",
            "model": self.cfg.model_name,
            **self.scheduler.load(),
            "prefix_cache": self.cache.stats() if self.cache is not None else None,
            # for the chat page: what to try, and what a request that says nothing samples with
            "trained_on": self.cfg.trained_on,
            "example": self.cfg.example,
            "single_turn": self.cfg.single_turn,
            "defaults": {"temperature": self.cfg.temperature, "top_p": self.cfg.top_p},
        }

    async def models(self, request: Request):
        self.authenticate(request)
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": self.created, "owned_by": "tinyseek"} for m in self.model_names
            ],
        }

    async def usage(self, request: Request):
        kid = self.authenticate(request)
        rows = self.ledger.totals(kid)
        tot = {k: v for k, v in (rows[0] if rows else NO_USAGE).items() if k != "key_id"}
        p = self.cfg.prices
        return {
            "object": "usage",
            "key_id": kid,
            **tot,
            "prices_per_million_tokens": {"cache_hit": p.cache_hit, "cache_miss": p.cache_miss, "output": p.output},
            "by_day": [{k: v for k, v in r.items() if k != "key_id"} for r in self.ledger.totals(kid, by_day=True)],
        }


async def page():
    return FileResponse(STATIC / "index.html", media_type="text/html")


# -- errors: always the OpenAI shape, never a 500 for a client's input ----------------------------
def _error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


async def _api_error(request: Request, e: APIError):
    return _error_response(e)


async def _validation_error(request: Request, e: RequestValidationError):
    err = e.errors()[0] if e.errors() else {"loc": ("body",), "msg": "invalid request"}
    field_ = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
    return _error_response(APIError(400, f"{field_}: {err.get('msg')}", param=field_, code="invalid_format"))


async def _http_error(request: Request, e: StarletteHTTPException):
    code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
    msg = f"{request.method} {request.url.path}: {e.detail}"
    return _error_response(APIError(e.status_code, msg, code=code))


async def _bug(request: Request, e: Exception):
    return _error_response(
        APIError(500, f"internal error: {type(e).__name__}: {e}", type="server_error", code="internal_error")
    )


ERROR_HANDLERS = (
    (APIError, _api_error),
    (RequestValidationError, _validation_error),
    (StarletteHTTPException, _http_error),
    (Exception, _bug),
)


# -- the schema: bodies are validated by hand (protocol.parse_*_request) so that each failure gets its DeepSeek
# status; their schemas still go into /openapi.json, with their sub-models as components -----------------------
def _request_body(cls, model_names: tuple[str, ...]) -> tuple[dict, dict]:
    """(the route's openapi_extra, the sub-models' schemas) of a request model, its `model` one of `model_names`."""
    schema = cls.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    schema["properties"]["model"]["enum"] = list(model_names)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}, defs


def _openapi(app: FastAPI, defs: dict) -> dict:
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        doc.setdefault("components", {}).setdefault("schemas", {}).update(defs)
        app.openapi_schema = doc
    return app.openapi_schema


def create_app(engine, tokenizer, cfg: ServeConfig, ledger: Ledger | None = None) -> FastAPI:
    """The FastAPI app around an `Engine` (continuous batching) and a tinyseek `Tokenizer`: a `Service`'s handlers
    wired to the routes. The scheduler thread starts with the app (lifespan) and stops with it."""
    service = Service(engine, tokenizer, cfg, ledger)
    app = FastAPI(
        title="tinyseek",
        version=__version__,
        lifespan=service.lifespan,
        description="DeepSeek-API-compatible chat completions from a tinyseek model.",
    )
    app.state.scheduler, app.state.prefix_cache = service.scheduler, service.cache
    app.state.ledger, app.state.config = service.ledger, service.cfg
    for exc, handler in ERROR_HANDLERS:
        app.add_exception_handler(exc, handler)
    app.get("/", include_in_schema=False)(page)
    app.get("/health")(service.health)
    app.get("/v1/models")(service.models)
    app.get("/v1/usage")(service.usage)
    chat_body, chat_defs = _request_body(ChatRequest, service.model_names)
    for path in ("/v1/chat/completions", "/chat/completions"):
        app.post(path, openapi_extra=chat_body, response_model=None)(service.chat_completions)
    completion_body, completion_defs = _request_body(CompletionRequest, service.model_names)
    app.post("/v1/completions", openapi_extra=completion_body, response_model=None)(service.completions)
    app.post("/update_weights_from_disk", include_in_schema=False)(service.update_weights)
    app.openapi = functools.partial(_openapi, app, {**chat_defs, **completion_defs})
    return app
