"""Building calls for pure translation tests."""

from __future__ import annotations

import json
from typing import Any

from modelport.gateway.protocol import ChatRequest, CompletionRequest, EmbeddingRequest, validate
from modelport.gateway.providers.base import Call
from modelport.gatewayconfig import EntityConfig, Task

MODELS = {
    Task.CHAT: ChatRequest,
    Task.COMPLETIONS: CompletionRequest,
    Task.EMBEDDINGS: EmbeddingRequest,
}


def entity(provider: str, task: Task = Task.CHAT, **extra: Any) -> EntityConfig:
    data = {
        "name": "e1",
        "task": task.value,
        "provider": provider,
        "modelName": "m-1",
        "credentials": {"apiKey": "k/key"},
        **extra,
    }
    return EntityConfig.model_validate(data)


def call(ent: EntityConfig, body: dict[str, Any], *, include_usage: bool = False) -> Call:
    request = validate(MODELS[ent.task], body)
    stream = bool(body.get("stream"))
    return Call(
        entity=ent,
        task=ent.task,
        raw=body,
        request=request,
        stream=stream,
        include_usage=include_usage,
        response_id="resp-1",
        created=1700000000,
    )


def chunks(payloads: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(p) for p in payloads]


def sse_event(name: str, data: dict[str, Any]) -> tuple[str, bytes]:
    return name, json.dumps(data).encode()
