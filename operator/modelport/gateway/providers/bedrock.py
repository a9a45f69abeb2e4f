"""Amazon Bedrock: Converse / ConverseStream for chat, InvokeModel for embeddings.

Every request is signed with SigV4 (service ``bedrock``, the entity's region) by
botocore's own signer, over exactly the bytes and URL that are sent; the model ID is
percent-encoded into the path (IDs and ARNs contain ``:`` and ``/``), and botocore's
canonical URI encodes it once more, as SigV4 requires for every service but S3.

An entity without access keys signs with the pod's own AWS identity: the I/O layer
resolves it (botocore's credential chain) and hands it over as the same three secrets.

ConverseStream answers in the AWS event-stream framing; :mod:`~modelport.gateway.framing`
decodes it into ``(event type, JSON payload)`` pairs that :class:`BedrockStream`
translates: ``contentBlockDelta`` text, reasoning and tool-input deltas, ``messageStop``
for the finish reason, ``metadata`` for usage (it arrives after ``messageStop``).

Images: Converse takes bytes (or an ``s3://`` location), never a link, so an
``https://`` image is fetched by the gateway first (:mod:`~modelport.gateway.fetch`,
fenced). JSON output goes through a forced tool (:mod:`.structured`), as on Anthropic;
``reasoning_effort`` becomes Claude's ``thinking`` in ``additionalModelRequestFields``
(Claude models only: other families document no such field).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from modelport.gateway.errors import (
    BAD_REQUEST,
    REQUEST_LIMIT_EXCEEDED,
    TEMPORARILY_UNAVAILABLE,
    GatewayError,
    invalid,
)
from modelport.gateway.framing import EXCEPTION_PREFIX, Event
from modelport.gateway.media import FORMATS, Fetched, Image
from modelport.gateway.openai_format import (
    ChunkWriter,
    ToolCallOut,
    Usage,
    completion_response,
    embeddings_response,
)
from modelport.gateway.protocol import ChatRequest, Message
from modelport.gateway.providers.base import (
    Auth,
    Call,
    Provider,
    UpstreamRequest,
    json_body,
    parse_json_object,
    refuse,
    refuse_serial_tools,
    truncated,
    unsupported,
)
from modelport.gateway.providers.reasoning import (
    check_claude_thinking,
    fit_budget,
    thinking_budget,
)
from modelport.gateway.providers.structured import forced_tool
from modelport.gatewayconfig import LLM_TASKS, EntityConfig, Task

NAME = "amazon-bedrock"
SERVICE = "bedrock"
DEFAULT_MAX_TOKENS = 4096
"""The answer's room added to a thinking budget when the client set no maximum."""
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
EMBED_INPUT_TYPE = "search_document"
STREAM_EXCEPTIONS = {
    "throttlingException": (429, REQUEST_LIMIT_EXCEEDED),
    "validationException": (400, BAD_REQUEST),
    "serviceUnavailableException": (503, TEMPORARILY_UNAVAILABLE),
}


class BedrockProvider(Provider):
    """Chat and completions via Converse; embeddings via InvokeModel (Titan, Cohere)."""

    name = NAME
    tasks = LLM_TASKS
    framing = "eventstream"

    def base_url(self, entity: EntityConfig) -> str:
        """The regional runtime endpoint unless overridden."""
        if entity.base_url:
            return entity.base_url
        region = entity.bedrock.region if entity.bedrock else "us-east-1"
        return f"https://bedrock-runtime.{region}.amazonaws.com"

    def aws_identity_region(self, entity: EntityConfig) -> str | None:
        """The entity's region when it has no access keys: the pod's identity signs."""
        if entity.credentials.aws_access_key_id is None:
            return _region(entity)
        return None

    def remote_images(self, call: Call) -> list[Image]:
        """Every ``https://`` image of the request: Converse takes only bytes."""
        if call.task is Task.EMBEDDINGS:
            return []
        request = call.chat()
        return [
            part
            for index, message in enumerate(request.messages)
            if message.role == "user" and message.has_images()
            for part in message.parts(index)
            if isinstance(part, Image) and part.source in ("https", "http")
        ]

    def build_request(self, call: Call, auth: Auth) -> UpstreamRequest:
        """A SigV4-signed Converse, ConverseStream or InvokeModel request."""
        model = quote(call.entity.model_name, safe="")
        base = f"{self.base_url(call.entity)}/model/{model}"
        if call.task is Task.EMBEDDINGS:
            url, body = f"{base}/invoke", self._embed_body(call)
        else:
            url = f"{base}/converse-stream" if call.stream else f"{base}/converse"
            family = call.entity.bedrock.bedrock_provider if call.entity.bedrock else "anthropic"
            body = converse_body(call.chat(), family=family, fetched=call.fetched)
        headers = {"content-type": "application/json", "accept": "application/json"}
        if call.stream:
            headers["accept"] = "application/vnd.amazon.eventstream"
        return sign(call.entity, auth, UpstreamRequest("POST", url, headers, body))

    def _embed_body(self, call: Call) -> bytes:
        request = call.embedding()
        texts = request.texts()
        family = call.entity.bedrock.bedrock_provider if call.entity.bedrock else "amazon"
        if family == "cohere":
            return json_body({"texts": texts, "input_type": EMBED_INPUT_TYPE})
        if family != "amazon":
            raise GatewayError(
                400,
                BAD_REQUEST,
                f"bedrockProvider {family!r} has no embeddings models here; "
                "use 'amazon' (Titan) or 'cohere'",
            )
        if len(texts) != 1:
            raise invalid("input", "Titan embeddings take one input per request; send a string")
        return json_body({"inputText": texts[0], "dimensions": request.dimensions})

    def parse_response(self, call: Call, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """A Converse or InvokeModel response in OpenAI's shape."""
        data = parse_json_object(body, self.name)
        if call.task is Task.EMBEDDINGS:
            if "embedding" in data:  # Titan
                vectors = [data["embedding"]]
                tokens = int(data.get("inputTextTokenCount") or 0)
            else:  # Cohere: the count comes in a response header
                vectors = list(data.get("embeddings") or [])
                tokens = int(headers.get("x-amzn-bedrock-input-token-count") or 0)
            return embeddings_response(
                model=call.entity.model_name,
                vectors=vectors,
                prompt_tokens=tokens,
                encoding_format=call.embedding().encoding_format,
            )
        content = ((data.get("output") or {}).get("message") or {}).get("content") or []
        json_tool = _json_tool_name(call)
        texts: list[str] = []
        thoughts: list[str] = []
        tools: list[ToolCallOut] = []
        for block in content:
            if "text" in block:
                texts.append(block["text"])
            elif "reasoningContent" in block:
                text = (block["reasoningContent"].get("reasoningText") or {}).get("text")
                thoughts.append(text or "")
            elif "toolUse" in block:
                use = block["toolUse"]
                arguments = orjson.dumps(use.get("input") or {}).decode()
                if use.get("name") == json_tool:
                    texts.append(arguments)
                else:
                    tools.append(ToolCallOut(use["toolUseId"], use["name"], arguments))
        usage = data.get("usage") or {}
        finish = FINISH_REASONS.get(str(data.get("stopReason")), "stop")
        return completion_response(
            task=call.task,
            response_id=call.response_id,
            created=call.created,
            model=call.entity.model_name,
            text="".join(texts) if texts or not tools else None,
            tool_calls=tools,
            finish_reason="stop" if json_tool and not tools and finish == "tool_calls" else finish,
            usage=Usage(int(usage.get("inputTokens") or 0), int(usage.get("outputTokens") or 0)),
            reasoning="".join(thoughts) or None,
        )

    def stream_translator(self, call: Call) -> BedrockStream:
        """Translate ConverseStream events."""
        return BedrockStream(call.chunk_writer(), _json_tool_name(call))


def _region(entity: EntityConfig) -> str:
    return entity.bedrock.region if entity.bedrock else "us-east-1"


def _json_tool_name(call: Call) -> str | None:
    # Checked when the request was built, so this cannot fail here.
    if call.task is Task.EMBEDDINGS or not isinstance(call.request, ChatRequest):
        return None
    tool = forced_tool(call.request, NAME)
    return tool.name if tool else None


def sign(entity: EntityConfig, auth: Auth, request: UpstreamRequest) -> UpstreamRequest:
    """Add SigV4 headers (``Authorization``, ``X-Amz-Date``, session token) with botocore."""
    region = _region(entity)
    credentials = Credentials(
        auth.secret("awsAccessKeyId"),
        auth.secret("awsSecretAccessKey"),
        auth.secrets.get("awsSessionToken"),
    )
    aws = AWSRequest(
        method=request.method, url=request.url, data=request.body, headers=dict(request.headers)
    )
    SigV4Auth(credentials, SERVICE, region).add_auth(aws)
    return UpstreamRequest(request.method, request.url, dict(aws.headers.items()), request.body)


def converse_body(
    request: ChatRequest,
    *,
    family: str = "anthropic",
    fetched: Mapping[str, Fetched] | None = None,
) -> bytes:
    """The Converse body for an OpenAI chat request; ``fetched`` holds the bytes of its
    ``https://`` images (the I/O layer fetched them)."""
    refuse(request, NAME, "logprobs", "top_logprobs", "logit_bias", "seed", "presence_penalty")
    refuse(request, NAME, "frequency_penalty", "service_tier")
    refuse_serial_tools(request, NAME)
    if request.n not in (None, 1):
        raise unsupported(NAME, "n", "send one request per completion")
    json_tool = forced_tool(request, NAME)
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        if message.role in ("system", "developer"):
            system.append({"text": message.text()})
            continue
        role, blocks = _blocks(message, index, fetched or {})
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    inference = {
        "maxTokens": request.max_output_tokens(),
        "temperature": request.temperature,
        "topP": request.top_p,
        "stopSequences": request.stop_list(),
    }
    # top_k is not a Converse field; the model families that have it read it from here.
    additional: dict[str, Any] = {"top_k": request.top_k} if request.top_k else {}
    budget = thinking_budget(request)
    if budget and family != "anthropic":
        raise unsupported(
            NAME,
            "reasoning_effort",
            f"Bedrock documents reasoning settings for Claude models only, not {family!r} "
            "ones; leave it unset (or 'none')",
        )
    if budget:
        check_claude_thinking(request, NAME, json_tool is not None)
        budget, inference["maxTokens"] = fit_budget(
            budget, request.max_output_tokens(), DEFAULT_MAX_TOKENS
        )
        additional["thinking"] = {"type": "enabled", "budget_tokens": budget}
    body: dict[str, Any] = {
        "messages": turns,
        "system": system or None,
        "inferenceConfig": {k: v for k, v in inference.items() if v is not None} or None,
        "additionalModelRequestFields": additional or None,
    }
    if json_tool is not None:
        body["toolConfig"] = {
            "tools": [
                {
                    "toolSpec": {
                        "name": json_tool.name,
                        "description": json_tool.description,
                        "inputSchema": {"json": json_tool.schema},
                    }
                }
            ],
            "toolChoice": {"tool": {"name": json_tool.name}},
        }
    elif request.tools and request.tool_choice == "none":
        # Converse has no 'none': the tools are left out, so none can be called. A
        # conversation that already holds tool calls needs toolConfig, so there it is
        # refused rather than silently allowed.
        if any(m.tool_calls or m.role == "tool" for m in request.messages):
            raise unsupported(
                NAME,
                "tool_choice",
                "Converse cannot forbid tool calls in a conversation that has some; use 'auto'",
            )
    elif request.tools:
        config: dict[str, Any] = {
            "tools": [
                {
                    "toolSpec": {
                        "name": t.function.name,
                        "description": t.function.description or t.function.name,
                        "inputSchema": {
                            "json": t.function.parameters or {"type": "object", "properties": {}}
                        },
                    }
                }
                for t in request.tools
            ]
        }
        forced = request.forced_tool()
        if forced:
            config["toolChoice"] = {"tool": {"name": forced}}
        elif request.tool_choice == "required":
            config["toolChoice"] = {"any": {}}
        elif request.tool_choice == "auto":
            config["toolChoice"] = {"auto": {}}
        body["toolConfig"] = config
    return json_body(body)


def _blocks(
    message: Message, index: int, fetched: Mapping[str, Fetched]
) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        result = {"toolUseId": message.tool_call_id, "content": [{"text": message.text()}]}
        return "user", [{"toolResult": result}]
    blocks: list[dict[str, Any]] = []
    if message.role == "user":
        for part in message.parts(index):
            if isinstance(part, Image):
                blocks.append({"image": image_block(part, fetched)})
            else:
                blocks.append({"text": part})
    else:
        text = message.text()
        if text:
            blocks.append({"text": text})
    for call in message.tool_calls or []:
        try:
            arguments = orjson.loads(call.function.arguments or "{}")
        except orjson.JSONDecodeError:
            raise invalid(
                "messages.tool_calls.function.arguments", "tool call arguments must be JSON"
            ) from None
        blocks.append(
            {"toolUse": {"toolUseId": call.id, "name": call.function.name, "input": arguments}}
        )
    return message.role, blocks


def image_block(image: Image, fetched: Mapping[str, Fetched]) -> dict[str, Any]:
    """A Converse ``image`` block: inline bytes (base64 in JSON) or an S3 location."""
    if image.source == "s3":
        media_type = image.require_media_type(NAME, set(FORMATS))
        return {"format": FORMATS[media_type], "source": {"s3Location": {"uri": image.url}}}
    if image.source == "data":
        media_type = image.require_media_type(NAME, set(FORMATS))
        return {"format": FORMATS[media_type], "source": {"bytes": image.base64}}
    got = fetched.get(image.url)
    if got is None:  # only a gs:// link gets here: fetched are every http(s) one
        raise invalid(
            image.param,
            f"{NAME} takes images as data: URLs, https:// links or s3:// locations, "
            f"not {image.source}://",
        )
    data = base64.b64encode(got.data).decode("ascii")
    return {"format": FORMATS[got.media_type], "source": {"bytes": data}}


class BedrockStream:
    """ConverseStream events to OpenAI chunks; a forced JSON tool's input is text."""

    __slots__ = ("_done", "_json_block", "_json_tool", "_writer", "usage")

    def __init__(self, writer: ChunkWriter, json_tool: str | None = None) -> None:
        self._writer = writer
        self._done = False
        self._json_tool = json_tool
        self._json_block: object = None
        self.usage: Usage | None = None

    def feed(self, event: Event) -> list[bytes]:
        """Translate one event-stream message."""
        kind, data = event
        w = self._writer
        if kind.startswith(EXCEPTION_PREFIX):
            name = kind[len(EXCEPTION_PREFIX) :]
            status, code = STREAM_EXCEPTIONS.get(name, (502, TEMPORARILY_UNAVAILABLE))
            message = _message(data)
            raise GatewayError(status, code, f"amazon-bedrock {name}: {message}")
        payload = orjson.loads(data) if data else {}
        if kind == "contentBlockDelta":
            delta = payload.get("delta") or {}
            if "text" in delta:
                return w.text(delta["text"])
            if "reasoningContent" in delta:
                return w.reasoning(delta["reasoningContent"].get("text") or "")
            if "toolUse" in delta:
                arguments = delta["toolUse"].get("input") or ""
                if payload.get("contentBlockIndex") == self._json_block:
                    return w.text(arguments)
                key = str(payload.get("contentBlockIndex"))
                return w.tool_call_arguments(key, arguments)
            return []
        if kind == "contentBlockStart":
            tool = (payload.get("start") or {}).get("toolUse")
            if tool and self._json_tool is not None and tool.get("name") == self._json_tool:
                self._json_block = payload.get("contentBlockIndex")
                return w.start()
            if tool:
                key = str(payload.get("contentBlockIndex"))
                return w.tool_call_start(key, tool.get("toolUseId", ""), tool.get("name", ""))
            return []
        if kind == "messageStart":
            return w.start()
        if kind == "messageStop":
            self._done = True
            finish = FINISH_REASONS.get(str(payload.get("stopReason")), "stop")
            if self._json_block is not None and finish == "tool_calls":
                finish = "stop"  # the forced tool carried the answer
            return w.finish(finish)
        if kind == "metadata":
            usage = payload.get("usage") or {}
            self.usage = Usage(
                int(usage.get("inputTokens") or 0), int(usage.get("outputTokens") or 0)
            )
            return w.usage(self.usage)
        return []

    def finish(self) -> list[bytes]:
        """``messageStop`` and ``metadata`` already said everything; without them the
        answer is cut."""
        if not self._done:
            raise truncated(NAME)
        return []


def _message(data: bytes) -> str:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data[:200].decode("utf-8", "replace")
    if isinstance(parsed, dict):
        return str(parsed.get("message") or parsed.get("Message") or "")
    return ""
