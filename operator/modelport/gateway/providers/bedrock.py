"""Amazon Bedrock: Converse / ConverseStream for chat, InvokeModel for embeddings.

Every request is signed with SigV4 (service ``bedrock``, the entity's region) by
botocore's own signer, over exactly the bytes and URL that are sent; the model ID is
percent-encoded into the path (IDs and ARNs contain ``:`` and ``/``), and botocore's
canonical URI encodes it once more, as SigV4 requires for every service but S3.

ConverseStream answers in the AWS event-stream framing; :mod:`~modelport.gateway.framing`
decodes it into ``(event type, JSON payload)`` pairs that :class:`BedrockStream`
translates: ``contentBlockDelta`` text and tool-input deltas, ``messageStop`` for the
finish reason, ``metadata`` for usage (it arrives after ``messageStop``).
"""

from __future__ import annotations

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
    truncated,
    unsupported,
)
from modelport.gatewayconfig import LLM_TASKS, EntityConfig, Task

SERVICE = "bedrock"
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

    name = "amazon-bedrock"
    tasks = LLM_TASKS
    framing = "eventstream"

    def base_url(self, entity: EntityConfig) -> str:
        """The regional runtime endpoint unless overridden."""
        if entity.base_url:
            return entity.base_url
        region = entity.bedrock.region if entity.bedrock else "us-east-1"
        return f"https://bedrock-runtime.{region}.amazonaws.com"

    def build_request(self, call: Call, auth: Auth) -> UpstreamRequest:
        """A SigV4-signed Converse, ConverseStream or InvokeModel request."""
        model = quote(call.entity.model_name, safe="")
        base = f"{self.base_url(call.entity)}/model/{model}"
        if call.task is Task.EMBEDDINGS:
            url, body = f"{base}/invoke", self._embed_body(call)
        else:
            url = f"{base}/converse-stream" if call.stream else f"{base}/converse"
            body = converse_body(call.chat())
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
        texts = [b["text"] for b in content if "text" in b]
        tools = [
            ToolCallOut(
                b["toolUse"]["toolUseId"],
                b["toolUse"]["name"],
                orjson.dumps(b["toolUse"].get("input") or {}).decode(),
            )
            for b in content
            if "toolUse" in b
        ]
        usage = data.get("usage") or {}
        return completion_response(
            task=call.task,
            response_id=call.response_id,
            created=call.created,
            model=call.entity.model_name,
            text="".join(texts) if texts or not tools else None,
            tool_calls=tools,
            finish_reason=FINISH_REASONS.get(str(data.get("stopReason")), "stop"),
            usage=Usage(int(usage.get("inputTokens") or 0), int(usage.get("outputTokens") or 0)),
        )

    def stream_translator(self, call: Call) -> BedrockStream:
        """Translate ConverseStream events."""
        return BedrockStream(call.chunk_writer())


def sign(entity: EntityConfig, auth: Auth, request: UpstreamRequest) -> UpstreamRequest:
    """Add SigV4 headers (``Authorization``, ``X-Amz-Date``, session token) with botocore."""
    region = entity.bedrock.region if entity.bedrock else "us-east-1"
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


def converse_body(request: ChatRequest) -> bytes:
    """The Converse body for an OpenAI chat request."""
    for param in ("logprobs", "top_logprobs", "logit_bias", "seed", "presence_penalty"):
        if getattr(request, param) is not None:
            raise unsupported("amazon-bedrock", param)
    if request.frequency_penalty is not None:
        raise unsupported("amazon-bedrock", "frequency_penalty")
    if request.n not in (None, 1):
        raise unsupported("amazon-bedrock", "n", "send one request per completion")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role in ("system", "developer"):
            system.append({"text": message.text()})
            continue
        role, blocks = _blocks(message)
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
    body: dict[str, Any] = {
        "messages": turns,
        "system": system or None,
        "inferenceConfig": {k: v for k, v in inference.items() if v is not None} or None,
        # top_k is not a Converse field; the model families that have it read it from here.
        "additionalModelRequestFields": {"top_k": request.top_k} if request.top_k else None,
    }
    if request.tools:
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


def _blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    text = message.text()
    if message.role == "tool":
        result = {"toolUseId": message.tool_call_id, "content": [{"text": text}]}
        return "user", [{"toolResult": result}]
    blocks: list[dict[str, Any]] = [{"text": text}] if text else []
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


class BedrockStream:
    """ConverseStream events to OpenAI chunks."""

    __slots__ = ("_done", "_writer", "usage")

    def __init__(self, writer: ChunkWriter) -> None:
        self._writer = writer
        self._done = False
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
            if "toolUse" in delta:
                key = str(payload.get("contentBlockIndex"))
                return w.tool_call_arguments(key, delta["toolUse"].get("input") or "")
            return []
        if kind == "contentBlockStart":
            tool = (payload.get("start") or {}).get("toolUse")
            if tool:
                key = str(payload.get("contentBlockIndex"))
                return w.tool_call_start(key, tool.get("toolUseId", ""), tool.get("name", ""))
            return []
        if kind == "messageStart":
            return w.start()
        if kind == "messageStop":
            self._done = True
            return w.finish(FINISH_REASONS.get(str(payload.get("stopReason")), "stop"))
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
            raise truncated("amazon-bedrock")
        return []


def _message(data: bytes) -> str:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data[:200].decode("utf-8", "replace")
    if isinstance(parsed, dict):
        return str(parsed.get("message") or parsed.get("Message") or "")
    return ""
