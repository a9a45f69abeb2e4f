"""``GET …/{name}/openapi``: an OpenAPI 3.1 document of one endpoint's query API.

Pure. The request schemas are the gateway's own protocol models (what it validates
against), so the document cannot drift from what the endpoint accepts.
"""

from __future__ import annotations

from typing import Any

from modelport.api.entities import CUSTOM_TASK, EntityTask
from modelport.gateway.invocations import InvocationRequest
from modelport.gateway.protocol import ChatRequest, CompletionRequest, EmbeddingRequest

_MODELS: dict[str, type[ChatRequest | CompletionRequest | EmbeddingRequest]] = {
    "llm/v1/chat": ChatRequest,
    "llm/v1/completions": CompletionRequest,
    "llm/v1/embeddings": EmbeddingRequest,
}
"""The LLM tasks: documented together when the catalog decides an endpoint's task."""
_REF = "#/components/schemas/{model}"


def document(endpoint: str, task: EntityTask | None) -> dict[str, Any]:
    """The OpenAPI document of ``endpoint``; a self-hosted endpoint whose task comes from
    the catalog (``task`` None) documents every LLM task's request; a custom model's
    (ml/v1/predict) documents its invocation formats."""
    tasks = [task] if task is not None else list(_MODELS)
    schemas: dict[str, Any] = {}
    refs = []
    for name in tasks:
        model = InvocationRequest if name == CUSTOM_TASK else _MODELS[name]
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        refs.append({"$ref": _REF.format(model=model.__name__)})
    body = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": endpoint,
            "version": "1",
            "description": f"Query endpoint '{endpoint}' ({', '.join(tasks)}); the answer is "
            "JSON in the OpenAI shape, or server-sent events with stream: true.",
        },
        "paths": {
            f"/serving-endpoints/{endpoint}/invocations": {
                "post": {
                    "operationId": "query",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": body}},
                    },
                    "responses": {
                        "200": {
                            "description": "The answer; served-model-name names the entity.",
                            "content": {
                                "application/json": {"schema": {"type": "object"}},
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        "default": {
                            "description": "An error: {error_code, message} (and OpenAI's "
                            "error object)."
                        },
                    },
                    "security": [{"bearer": []}],
                }
            }
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
