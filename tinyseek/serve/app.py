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
- `GET /v1/models`, `GET /health`, `GET /v1/usage` (the caller's totals and cost from the ledger),
  `GET /` (the chat page, `static/index.html`).

Stop strings (`stop`) go to the engine with the other sampling parameters and are matched on the
completion's text as generated (the R1 tags included): the engine ends a choice in the step whose token
completes one, and never streams the stop string. One consumer (`consume`) reads a request's engine events
for the streaming and the non-streaming answer alike.

Usage. `prompt_tokens` counts the prompt once whatever `n`; `prompt_cache_hit_tokens` are the prompt
tokens whose attention rows came from the prefix cache for the first choice (the others are misses);
`completion_tokens` sums every token the engine generated for the choices (the end-of-sentence token
included; for a client that left, up to the step that stopped its rows);
`completion_tokens_details.reasoning_tokens` sums the tokens from each completion's start through
`</think>`. `bill` computes these once per request, when no choice can produce another token, and records
them in the ledger: the numbers a response or a stream's usage chunk shows are the ones billed.

Keys. With `--api-key` given, every `/v1/*` and `/chat/completions` request needs
`Authorization: Bearer KEY` (401 otherwise); `/`, `/health` and `/openapi.json` are open. Rate limits
are per key (or for everyone together without keys): at most `--rate-limit` requests per minute.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
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

from tinyseek.errors import TinyseekError
from tinyseek.r1 import THINK, THINK_END
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
class _Call:
    """One chat completion request in flight: its jobs (one per choice), their splitters, and its bill."""

    kid: str
    rid: str
    prompt: list[int]
    jobs: list[Job]
    splitters: list[ReasoningSplitter] = field(default_factory=list)
    finish: list[str | None] = field(default_factory=list)
    usage: dict | None = None  # set when billed (once)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.splitters = [ReasoningSplitter() for _ in self.jobs]
        self.finish = [None] * len(self.jobs)


def _error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def create_app(engine, tokenizer, cfg: ServeConfig, ledger: Ledger | None = None) -> FastAPI:
    """The FastAPI app around an `Engine` (continuous batching) and a tinyseek `Tokenizer`.

    The scheduler thread starts with the app (lifespan) and stops with it.
    """
    ctx_len = cfg.context_len or int(getattr(engine, "max_len", 0) or engine.model.cfg.max_seq_len)
    cache = BlockCache(cfg.cache_block, int(cfg.cache_budget_mb * (1 << 20))) if cfg.prefix_cache else None
    sched = Scheduler(engine, cache, max_queue=cfg.max_queue)
    limiter = RateLimiter(cfg.rate_limit)
    ledger = ledger if ledger is not None else Ledger(cfg.db, cfg.prices)
    keys = ApiKeys(cfg.api_keys)  # digests only: the plain keys are not kept, not even in app.state.config
    cfg = dataclasses.replace(cfg, api_keys=keys.hashed())
    think_ids = (tokenizer.token_id(THINK), tokenizer.token_id(THINK_END))
    model_names = (cfg.model_name,) + tuple(a for a in MODEL_ALIASES if a != cfg.model_name)
    created = int(time.time())

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        sched.start()
        try:
            yield
        finally:
            sched.stop()

    app = FastAPI(
        title="tinyseek",
        version="0.1.0",
        lifespan=lifespan,
        description="DeepSeek-API-compatible chat completions from a tinyseek model.",
    )
    app.state.scheduler, app.state.prefix_cache, app.state.ledger, app.state.config = sched, cache, ledger, cfg

    # -- errors: always the OpenAI shape, never a 500 for a client's input --------------------------
    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return _error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError):
        err = e.errors()[0] if e.errors() else {"loc": ("body",), "msg": "invalid request"}
        field_ = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        return _error_response(APIError(400, f"{field_}: {err.get('msg')}", param=field_, code="invalid_format"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        msg = f"{request.method} {request.url.path}: {e.detail}"
        return _error_response(APIError(e.status_code, msg, code=code))

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception):
        return _error_response(
            APIError(500, f"internal error: {type(e).__name__}: {e}", type="server_error", code="internal_error")
        )

    # -- helpers ----------------------------------------------------------------------------------
    def authenticate(request: Request) -> str:
        """The caller's key id; raises 401 when keys are configured and this one is missing or wrong."""
        if not keys:
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
        kid = keys.check(token.strip())
        if kid is None:
            raise APIError(401, "wrong API key", type="authentication_error", code="invalid_api_key")
        return kid

    def bill(call: _Call) -> dict:
        """The request's usage, recorded in the ledger exactly once: the one place usage is counted. Completion
        tokens are every token the engine generated for its choices (a stop token included; a choice the
        client abandoned counts up to the step that stopped it)."""
        with call.lock:
            if call.usage is None:
                hit, n_prompt = call.jobs[0].cached_tokens, len(call.prompt)
                completion = sum(len(j.token_ids) for j in call.jobs)
                reasoning = sum(reasoning_tokens(j.token_ids, *think_ids) for j in call.jobs)
                ledger.record(call.kid, cfg.model_name, call.rid, hit, n_prompt - hit, completion, reasoning)
                call.usage = {
                    "prompt_tokens": n_prompt,
                    "completion_tokens": completion,
                    "total_tokens": n_prompt + completion,
                    "prompt_cache_hit_tokens": hit,
                    "prompt_cache_miss_tokens": n_prompt - hit,
                    "prompt_tokens_details": {"cached_tokens": hit},
                    "completion_tokens_details": {"reasoning_tokens": reasoning},
                }
        return call.usage

    async def consume(call: _Call, queue: asyncio.Queue, disconnected=None):
        """The one consumer of a request's engine events, streaming or not: yields (choice, [(field, text)],
        finish_reason or None) as they come, until every choice has finished. `disconnected()` is polled while
        waiting (a non-streaming client that leaves); an engine error is a 500."""
        while any(f is None for f in call.finish):
            try:
                i, kind, payload = await asyncio.wait_for(queue.get(), timeout=0.5)
            except asyncio.TimeoutError:
                if disconnected is not None and await disconnected():
                    raise _ClientGone from None
                continue
            if kind == "error":
                raise APIError(500, payload, type="server_error", code="engine_error")
            if call.finish[i] is not None:
                continue
            text, reason = payload
            pieces = call.splitters[i].feed(text) if text else []
            if reason is not None:
                pieces += call.splitters[i].finish()
                call.finish[i] = reason
            yield i, pieces, reason

    def build_jobs(req: ChatRequest, event_loop) -> tuple[list[int], list[Job], asyncio.Queue, int]:
        from tinyseek.inference.sampling import SamplingParams, derive_seed

        if req.model not in model_names:
            raise APIError(
                404,
                f"model {req.model!r} does not exist (served: {', '.join(model_names)})",
                param="model",
                code="model_not_found",
            )
        msgs = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
        try:
            prompt = tokenizer.encode(tokenizer.chat(msgs, add_generation_prompt=True))
        except TinyseekError as e:
            raise APIError(400, f"messages: {e}", param="messages") from None
        max_tokens = req.max_tokens or req.max_completion_tokens
        room = ctx_len - len(prompt)
        if max_tokens is None:
            max_tokens = min(cfg.default_max_tokens, room)
        if max_tokens < 1 or len(prompt) + max_tokens > ctx_len:
            asked = req.max_tokens or req.max_completion_tokens or max_tokens
            raise APIError(
                400,
                f"this model's maximum context length is {ctx_len} tokens; the messages are "
                f"{len(prompt)} tokens and max_tokens is {asked} ({len(prompt) + asked} in all)",
                param="messages",
                code="context_length_exceeded",
            )
        queue: asyncio.Queue = asyncio.Queue()
        jobs = []
        for i in range(req.n):
            # a hash, not seed + i: requests seeded 11 and 12 must not share choices' seeds
            seed = None if req.seed is None else derive_seed(req.seed, i)
            params = SamplingParams(
                max_new_tokens=max_tokens,
                temperature=1.0 if req.temperature is None else req.temperature,
                top_p=1.0 if req.top_p is None else req.top_p,
                presence_penalty=req.presence_penalty or 0.0,
                frequency_penalty=req.frequency_penalty or 0.0,
                stop_strings=tuple(req.stop_list()),
                seed=seed,
            )
            jobs.append(Job(prompt, params, queue, event_loop, index=i, use_cache=cache is not None))
        return prompt, jobs, queue, max_tokens

    def admit(request: Request, kid: str, jobs: list[Job]) -> None:
        wait = limiter.check(kid)
        if wait > 0:
            raise APIError(
                429,
                f"rate limit of {cfg.rate_limit} requests per minute reached; retry in {wait:.1f} s",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(max(1, round(wait)))},
            )
        try:
            sched.submit(jobs)
        except QueueFull as e:
            raise APIError(
                503,
                f"server overloaded: {e}; retry later",
                type="server_error",
                code="server_overloaded",
                headers={"Retry-After": "1"},
            ) from None

    async def read_body(request: Request) -> bytes:
        """The body, refused with 413 beyond `max_body_bytes` (checked while reading, not after)."""
        limit = cfg.max_body_bytes
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

    # -- routes -----------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "model": cfg.model_name,
            **sched.load(),
            "prefix_cache": cache.stats() if cache is not None else None,
        }

    @app.get("/v1/models")
    async def models(request: Request):
        authenticate(request)
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": created, "owned_by": "tinyseek"} for m in model_names],
        }

    @app.get("/v1/usage")
    async def usage(request: Request):
        kid = authenticate(request)
        rows = ledger.totals(kid)
        tot = (
            rows[0]
            if rows
            else {
                "requests": 0,
                "prompt_cache_hit_tokens": 0,
                "prompt_cache_miss_tokens": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "reasoning_tokens": 0,
                "total_tokens": 0,
                "cost_usd": 0.0,
            }
        )
        tot = {k: v for k, v in tot.items() if k != "key_id"}
        p = cfg.prices
        return {
            "object": "usage",
            "key_id": kid,
            **tot,
            "prices_per_million_tokens": {"cache_hit": p.cache_hit, "cache_miss": p.cache_miss, "output": p.output},
            "by_day": [{k: v for k, v in r.items() if k != "key_id"} for r in ledger.totals(kid, by_day=True)],
        }

    # the body is validated by hand (protocol.parse_chat_request) so that each failure gets its DeepSeek
    # status; the schema still goes into /openapi.json, with its sub-models as components
    body_schema = ChatRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    body_defs = body_schema.pop("$defs", {})
    body_schema["properties"]["model"]["enum"] = list(model_names)
    chat_body = {"requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}}

    def openapi():
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc.setdefault("components", {}).setdefault("schemas", {}).update(body_defs)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi

    async def chat_completions(request: Request):
        kid = authenticate(request)
        req = parse_chat_request(await read_body(request))
        prompt, jobs, queue, _ = build_jobs(req, asyncio.get_running_loop())
        admit(request, kid, jobs)
        call = _Call(kid, "chatcmpl-" + secrets.token_hex(12), prompt, jobs)

        def close() -> None:
            """However the response ends (done, client gone, error, never started): free the slots, bill once."""
            sched.cancel(jobs, on_done=lambda: bill(call))

        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return _EventStream(_stream(call, req, queue, include_usage, close), close)
        try:
            async for _ in consume(call, queue, request.is_disconnected):
                pass
        except _ClientGone:  # nobody to answer; close() frees the slots and bills what ran
            return JSONResponse({}, status_code=499)
        finally:
            close()
        choices = []
        for i, sp in enumerate(call.splitters):
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
            "model": req.model,
            "system_fingerprint": "tinyseek-0.1.0",
            "choices": choices,
            "usage": bill(call),
        }

    async def _stream(call: _Call, req: ChatRequest, queue: asyncio.Queue, include_usage: bool, close):
        created_ = int(time.time())

        def chunk(choices, usage=None):
            obj = {
                "id": call.rid,
                "object": "chat.completion.chunk",
                "created": created_,
                "model": req.model,
                "system_fingerprint": "tinyseek-0.1.0",
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
            async for i, pieces, reason in consume(call, queue):
                for field_, text in pieces:
                    yield chunk([{"index": i, "delta": {field_: text}, "logprobs": None, "finish_reason": None}])
                if reason is not None:
                    yield chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": reason}])
            close()
            if include_usage:
                yield chunk([], bill(call))
            yield "data: [DONE]\n\n"
        except APIError as e:
            yield f"data: {json.dumps(e.body())}\n\n"
        finally:
            close()  # a client that went away: free its slots now, and bill what it consumed

    for path in ("/v1/chat/completions", "/chat/completions"):
        app.post(path, openapi_extra=chat_body, response_model=None)(chat_completions)

    # -- completions on token ids, and weight updates: an inference server for RL (train/rollout.py) --------
    def build_completion_jobs(req: CompletionRequest, event_loop) -> tuple[list[list[int]], list[Job], asyncio.Queue]:
        from tinyseek.inference.sampling import SamplingParams, derive_seed

        if req.model not in model_names:
            raise APIError(
                404,
                f"model {req.model!r} does not exist (served: {', '.join(model_names)})",
                param="model",
                code="model_not_found",
            )
        V = engine.cfg.vocab_size
        prompts = []
        for i, p in enumerate(req.prompts()):
            ids = tokenizer.encode(p, add_special=True) if isinstance(p, str) else list(p)
            bad = next((t for t in ids if not 0 <= t < V), None)
            if bad is not None:
                raise APIError(422, f"prompt[{i}]: token id {bad} outside the vocabulary 0..{V - 1}", param="prompt")
            if len(ids) + req.max_tokens > ctx_len:
                raise APIError(
                    400,
                    f"prompt[{i}]: {len(ids)} tokens plus max_tokens {req.max_tokens} exceed the context length "
                    f"of {ctx_len}",
                    param="prompt",
                    code="context_length_exceeded",
                )
            prompts.append(ids)
        queue: asyncio.Queue = asyncio.Queue()
        jobs = []
        for i, ids in enumerate(prompts):
            for j in range(req.n):
                try:
                    params = SamplingParams(
                        max_new_tokens=req.max_tokens,
                        temperature=1.0 if req.temperature is None else req.temperature,
                        top_p=1.0 if req.top_p is None else req.top_p,
                        top_k=max(0, req.top_k or 0),
                        stop_strings=tuple(req.stop_list()),
                        # choice c = i * n + j seeded from (seed, c), as the chat endpoint seeds its choices
                        seed=None if req.seed is None else derive_seed(req.seed, i * req.n + j),
                        logprobs=req.logprobs is not None,
                        ignore_eos=req.ignore_eos,
                    )
                except TinyseekError as e:
                    raise APIError(422, str(e), code="invalid_value") from None
                jobs.append(Job(ids, params, queue, event_loop, index=i * req.n + j, use_cache=cache is not None))
        return prompts, jobs, queue

    async def completions(request: Request):
        kid = authenticate(request)
        req = parse_completion_request(await read_body(request))
        prompts, jobs, queue = build_completion_jobs(req, asyncio.get_running_loop())
        admit(request, kid, jobs)
        rid = "cmpl-" + secrets.token_hex(12)
        billed: dict = {}
        lock = threading.Lock()

        def bill_once() -> dict:
            with lock:
                if not billed:
                    hit = sum(jobs[i * req.n].cached_tokens for i in range(len(prompts)))
                    n_prompt = sum(len(p) for p in prompts)
                    completion = sum(len(j.token_ids) for j in jobs)
                    reasoning = sum(reasoning_tokens(j.token_ids, *think_ids) for j in jobs)
                    ledger.record(kid, cfg.model_name, rid, hit, n_prompt - hit, completion, reasoning)
                    billed.update(
                        prompt_tokens=n_prompt, completion_tokens=completion, total_tokens=n_prompt + completion
                    )
            return billed

        texts, finish = [""] * len(jobs), [None] * len(jobs)
        try:
            while any(f is None for f in finish):
                try:
                    i, kind, payload = await asyncio.wait_for(queue.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return JSONResponse({}, status_code=499)
                    continue
                if kind == "error":
                    raise APIError(500, payload, type="server_error", code="engine_error")
                text, reason = payload
                texts[i] += text or ""
                if reason is not None:
                    finish[i] = reason
        finally:
            sched.cancel(jobs, on_done=bill_once)
        choices = []
        for i, job in enumerate(jobs):
            c = {"index": i, "text": texts[i], "logprobs": None, "finish_reason": finish[i]}
            if req.logprobs is not None:
                c["logprobs"] = {
                    "tokens": [tokenizer.decode([t]) for t in job.token_ids],
                    "token_logprobs": list(job.logprobs),
                    "top_logprobs": None,
                    "text_offset": None,
                }
            if req.return_token_ids:
                c["token_ids"], c["prompt_token_ids"] = list(job.token_ids), prompts[i // req.n]
            choices.append(c)
        return {
            "id": rid,
            "object": "text_completion",
            "created": int(time.time()),
            "model": req.model,
            "system_fingerprint": "tinyseek-0.1.0",
            "choices": choices,
            "usage": bill_once(),
        }

    comp_schema = CompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    comp_schema.pop("$defs", None)
    comp_schema["properties"]["model"]["enum"] = list(model_names)
    comp_body = {"requestBody": {"required": True, "content": {"application/json": {"schema": comp_schema}}}}
    app.post("/v1/completions", openapi_extra=comp_body, response_model=None)(completions)

    @app.post("/update_weights_from_disk", include_in_schema=False)
    async def update_weights(request: Request):
        authenticate(request)
        if not cfg.allow_weight_updates:
            raise APIError(403, "weight updates are off (start the server with --allow-weight-updates)",
                           type="permission_error", code="forbidden")  # fmt: skip
        raw = await read_body(request)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        path = body.get("model_path") if isinstance(body, dict) else None
        if not isinstance(path, str) or not path:
            raise APIError(400, 'body: expected {"model_path": "a checkpoint directory"}', param="model_path")

        def swap() -> None:
            import torch

            from tinyseek.checkpoint import check_state_dict, read_weights

            model = engine.model
            sd = read_weights(path)
            check_state_dict(model.state_dict(), sd, path)
            with torch.no_grad():
                model.load_state_dict(sd)  # copied into the served dtype and device
            if cache is not None:
                cache.clear()  # its rows were computed with the old weights

        try:
            await asyncio.wrap_future(sched.call(swap))
        except TinyseekError as e:
            raise APIError(400, f"model_path: {e}", param="model_path") from None
        return {"success": True, "message": f"weights updated from {path}"}

    return app
