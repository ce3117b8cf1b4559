"""The wire format: the chat-completions and completions request schemas, their validation, OpenAI-shaped errors.

Status codes follow DeepSeek's API documentation:
- 400 `invalid_request_error`: the body is not JSON, not an object, misses a required field, or a field
  has the wrong type (the field is named in `param`); also a prompt plus max_tokens beyond the context.
- 401 `authentication_error`: missing or wrong key, when the server has keys.
- 404 `invalid_request_error` / `model_not_found`: an unknown model.
- 413 `invalid_request_error` / `request_too_large`: a body over the server's limit (4 MiB).
- 422 `invalid_request_error`: a field of the right type with a value out of range or unsupported
  (temperature 3, n 0, response_format json_object, a `tool` message).
- 429 `rate_limit_error`: over the per-key request rate.
- 503 `server_error` / `server_overloaded`: the queue is full.
A 500 is a bug in tinyseek, never a client's doing.

The pydantic model below is also what the OpenAPI schema at /openapi.json shows, so fuzzers and
clients see the real contract; the handler validates the raw body itself so that every failure maps
to the statuses above rather than FastAPI's default 422 shape.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_N = 16
MAX_STOP = 16


class APIError(Exception):
    """An error answered to the client as `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class TextPart(_Model):
    type: Literal["text"]
    text: str


class Message(_Model):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    reasoning_content: str | None = None  # accepted and ignored: prior reasoning never re-enters the prompt
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(_Model):
    include_usage: bool = False


class ResponseFormat(_Model):
    type: Literal["text", "json_object", "json_schema"] = "text"


class ChatRequest(_Model):
    """POST /v1/chat/completions. Unknown fields are ignored, as OpenAI-compatible servers do."""

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer OpenAI name for max_tokens
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    response_format: ResponseFormat | None = None
    user: str | None = None
    # accepted only in their "off" form, so a client that relies on them hears so instead of being ignored
    logprobs: bool | None = None
    tools: list[dict] | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(_Model):
    """POST /v1/completions: OpenAI's completions with the prompt as token ids (or text), what RL trainers send to
    an inference server. vLLM's extensions `top_k`, `ignore_eos` and `return_token_ids` are understood; `logprobs`
    gives the sampled token's log-probability only (0 or 1). Choice c = p*n + j is sample j of prompt p, seeded from
    (seed, c) like the chat endpoint's choices: copies of one prompt in a request sample independently."""

    model: str
    prompt: str | list[int] | list[list[int]]
    max_tokens: int = Field(16, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)  # vLLM: -1 (or 0) = off
    n: int = Field(1, ge=1, le=MAX_N)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    logprobs: int | None = Field(None, ge=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    echo: bool = False
    ignore_eos: bool = False
    return_token_ids: bool = False
    user: str | None = None

    def prompts(self) -> list:
        """The prompts as a list: texts or token-id lists."""
        if isinstance(self.prompt, str) or (self.prompt and isinstance(self.prompt[0], int)):
            return [self.prompt]
        return list(self.prompt)

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


# pydantic error types that mean "right type, bad value" (422); everything else is a format error (400)
_VALUE_ERRORS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "literal_error",
    "too_short",
    "too_long",
    "finite_number",
    "value_error",
    "enum",
}


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[TextPart]", "list[str]", "none", "StreamOptions", "ResponseFormat"):
            continue  # union branch names, not fields
        elif "[" in str(part) or str(part).startswith(("int", "float", "bool", "function-")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def _validate(raw: bytes, cls):
    """A raw request body as `cls`, or APIError(400 | 422) naming the offending field."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"request body is not valid JSON: {e}", param="body") from None
    if not isinstance(data, dict):
        raise APIError(400, f"request body must be a JSON object, got {type(data).__name__}", param="body")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        errs = e.errors(include_url=False)
        # prefer a value error when a union produced several branch errors for the same field
        err = next((x for x in errs if x["type"] in _VALUE_ERRORS), errs[0])
        field = _loc(tuple(err["loc"]))
        status = 422 if err["type"] in _VALUE_ERRORS else 400
        if err["type"] == "missing":
            msg = f"{field}: required field is missing"
        else:
            msg = f"{field}: {err['msg']}"
        raise APIError(status, msg, param=field, code="invalid_value" if status == 422 else "invalid_format") from None


def _check_stops(stops: list[str]) -> None:
    if len(stops) > MAX_STOP:
        raise APIError(
            422, f"stop: at most {MAX_STOP} stop sequences, got {len(stops)}", param="stop", code="invalid_value"
        )
    if any(s == "" for s in stops):
        raise APIError(422, "stop: stop sequences must not be empty", param="stop", code="invalid_value")


def parse_completion_request(raw: bytes) -> CompletionRequest:
    """Validate a raw /v1/completions body, raising APIError(400 | 422) that names the offending field."""
    req = _validate(raw, CompletionRequest)
    _check_stops(req.stop_list())
    for name in ("stream", "echo"):
        if getattr(req, name):
            raise APIError(422, f"{name}: not supported on /v1/completions by tinyseek serve", param=name,
                           code="invalid_value")  # fmt: skip
    prompts = req.prompts()
    if not prompts:
        raise APIError(422, "prompt: no prompt given", param="prompt", code="invalid_value")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise APIError(422, f"prompt[{i}]: empty", param="prompt", code="invalid_value")
    return req


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Validate a raw request body, raising APIError(400 | 422) that names the offending field."""
    req = _validate(raw, ChatRequest)
    _check_stops(req.stop_list())
    if req.response_format is not None and req.response_format.type != "text":
        raise APIError(
            422,
            f"response_format: type {req.response_format.type!r} is not supported by tinyseek"
            " (only 'text'; a small model cannot be trusted to emit valid JSON)",
            param="response_format.type",
            code="invalid_value",
        )
    if req.logprobs:
        raise APIError(422, "logprobs: not supported by tinyseek serve", param="logprobs", code="invalid_value")
    if req.tools:
        raise APIError(
            422, "tools: function calling is not supported by tinyseek serve", param="tools", code="invalid_value"
        )
    if (
        req.max_tokens is not None
        and req.max_completion_tokens is not None
        and req.max_tokens != req.max_completion_tokens
    ):
        raise APIError(
            422, "max_tokens and max_completion_tokens disagree; send one", param="max_tokens", code="invalid_value"
        )
    return req
