"""The OpenAI request bodies the gateway accepts, validated once at the boundary.

Top-level unknown fields are rejected (a typo such as ``max_token`` would otherwise be
silently ignored by some providers and honoured by others). Messages and content parts
allow extra keys, because the OpenAI API grows them often and OpenAI-compatible upstreams
understand them; providers that translate read only the fields modelled here.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelport.gateway.errors import GatewayError, invalid
from modelport.gateway.media import Image, parse_image_url


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionCall(_Open):
    """A tool call's function: its name and JSON-encoded arguments."""

    name: str
    arguments: str = ""


class ToolCall(_Open):
    """An assistant message's tool call."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ImageURL(_Open):
    """An image part's link or ``data:`` URL (``detail`` is OpenAI's own knob)."""

    url: str = Field(min_length=1)
    detail: str | None = None


class ContentPart(_Open):
    """One part of a message's content. Text parts are translated for every provider,
    image parts for those that take images; OpenAI-compatible upstreams get any part."""

    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class Message(_Open):
    """A chat message."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text, parts joined; a non-text part is an error for translators."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        out = []
        for i, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise invalid(
                    f"messages.content.{i}.type",
                    f"content part type {part.type!r} is not supported by this provider "
                    f"in a {self.role} message; send text parts only",
                )
            out.append(part.text)
        return "".join(out)

    def parts(self, index: int) -> list[str | Image]:
        """The content as text and image parts, in order; ``index`` is this message's
        position, for errors. Adjacent text parts stay apart (providers keep them so)."""
        if self.content is None:
            return []
        if isinstance(self.content, str):
            return [self.content] if self.content else []
        out: list[str | Image] = []
        for i, part in enumerate(self.content):
            where = f"messages.{index}.content.{i}"
            if part.type == "text" and part.text is not None:
                if part.text:
                    out.append(part.text)
            elif part.type == "image_url" and part.image_url is not None:
                out.append(parse_image_url(part.image_url.url, f"{where}.image_url.url"))
            else:
                raise invalid(
                    f"{where}.type",
                    f"content part type {part.type!r} is not supported by this provider; "
                    "send text and image_url parts",
                )
        return out

    def has_images(self) -> bool:
        """Whether any content part is an image."""
        return isinstance(self.content, list) and any(p.type == "image_url" for p in self.content)


class FunctionDefinition(_Open):
    """A tool's function declaration."""

    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Open):
    """A tool the model may call."""

    type: Literal["function"]
    function: FunctionDefinition


class StreamOptions(_Open):
    """``stream_options``; only ``include_usage`` changes what the gateway sends."""

    include_usage: bool = False


class ChatRequest(_Body):
    """``POST /v1/chat/completions``."""

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    store: bool | None = None

    def max_output_tokens(self) -> int | None:
        """``max_completion_tokens`` wins over the older ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    def stop_list(self) -> list[str] | None:
        """``stop`` as a list."""
        if self.stop is None:
            return None
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def forced_tool(self) -> str | None:
        """The function name when ``tool_choice`` forces one function, else None."""
        if isinstance(self.tool_choice, dict):
            fn = self.tool_choice.get("function")
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                return str(fn["name"])
            raise invalid(
                "tool_choice",
                "tool_choice object must be {'type': 'function', 'function': {'name': ...}}",
            )
        return None


class CompletionRequest(_Body):
    """``POST /v1/completions``."""

    model: str | None = None
    prompt: str | list[str] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    logit_bias: dict[str, float] | None = None
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)
    seed: int | None = None
    user: str | None = None

    def as_chat(self) -> ChatRequest:
        """The same request as a one-message chat, for providers with only a chat API."""
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise invalid("prompt", "this provider takes one prompt per request; send a string")
            prompt = self.prompt[0]
        else:
            prompt = self.prompt
        for name in ("logprobs", "echo", "suffix", "best_of", "logit_bias"):
            if getattr(self, name) is not None:
                raise invalid(name, f"'{name}' is not supported by this provider; remove it")
        return ChatRequest(
            model=self.model,
            messages=[Message(role="user", content=prompt)],
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            n=self.n,
            stop=self.stop,
            stream=self.stream,
            stream_options=self.stream_options,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
            user=self.user,
        )


class EmbeddingRequest(_Body):
    """``POST /v1/embeddings``."""

    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    def texts(self) -> list[str]:
        """The inputs as strings; token-id inputs only work with OpenAI-compatible upstreams."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(x, str) for x in self.input):
            return [str(x) for x in self.input]
        raise invalid("input", "token-id input is not supported by this provider; send text")


Request = ChatRequest | CompletionRequest | EmbeddingRequest

CLIENT_REQUEST_ID = "client_request_id"
USAGE_CONTEXT = "usage_context"
MAX_CLIENT_REQUEST_ID = 256
MAX_USAGE_CONTEXT_KEYS = 20
MAX_USAGE_CONTEXT_KEY = 128
MAX_USAGE_CONTEXT_VALUE = 1024


def take_client_fields(body: dict[str, Any]) -> tuple[str | None, dict[str, str] | None]:
    """Remove the reference service's ``client_request_id`` and ``usage_context`` from
    ``body`` (no provider knows them) and return them, checked.

    ``client_request_id`` is a string of at most 256 characters; ``usage_context`` an
    object of at most 20 string values (keys up to 128 characters, values up to 1,024).
    They end up in usage and payload rows, whose text columns cannot hold a NUL
    character, so one is refused here rather than failing a row later.
    """
    request_id = body.pop(CLIENT_REQUEST_ID, None)
    context = body.pop(USAGE_CONTEXT, None)
    if request_id is not None:
        if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_CLIENT_REQUEST_ID:
            raise invalid(
                CLIENT_REQUEST_ID,
                f"'{CLIENT_REQUEST_ID}' must be a string of 1 to {MAX_CLIENT_REQUEST_ID} "
                "characters",
            )
        _no_nul(CLIENT_REQUEST_ID, request_id)
    if context is not None:
        if not isinstance(context, dict) or len(context) > MAX_USAGE_CONTEXT_KEYS:
            raise invalid(
                USAGE_CONTEXT,
                f"'{USAGE_CONTEXT}' must be an object of at most {MAX_USAGE_CONTEXT_KEYS} "
                'string values, e.g. {"project": "search"}',
            )
        for key, value in context.items():
            where = f"{USAGE_CONTEXT}.{key[:MAX_USAGE_CONTEXT_KEY]}"
            if len(key) > MAX_USAGE_CONTEXT_KEY:
                raise invalid(
                    where, f"'{USAGE_CONTEXT}' keys are at most {MAX_USAGE_CONTEXT_KEY} characters"
                )
            if not isinstance(value, str) or len(value) > MAX_USAGE_CONTEXT_VALUE:
                raise invalid(
                    where,
                    f"'{where}' must be a string of at most {MAX_USAGE_CONTEXT_VALUE} characters",
                )
            _no_nul(where, key)
            _no_nul(where, value)
    return request_id, context


def _no_nul(field: str, value: str) -> None:
    if "\x00" in value:
        raise invalid(field, f"'{field}' must not contain a NUL character")


_Validated = TypeVar("_Validated", bound=BaseModel)


def validate(model: type[_Validated], body: dict[str, Any]) -> _Validated:
    """Validate ``body``; a failure names the first offending field and what is wrong."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _to_error(exc) from None


def _to_error(exc: ValidationError) -> GatewayError:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(body)"
    if err["type"] == "extra_forbidden":
        return invalid(loc, f"unknown field '{loc}': remove it or check its spelling")
    if err["type"] == "missing":
        return invalid(loc, f"missing required field '{loc}'")
    return invalid(loc, f"invalid value for '{loc}': {err['msg']}")
