"""``response_format``: what the client asked for, read once for every translator.

OpenAI's ``response_format`` is ``text``, ``json_object`` (any JSON object) or
``json_schema`` (an object matching ``json_schema.schema``). Providers with a JSON mode
of their own take it directly (Gemini ``responseMimeType`` + ``responseJsonSchema``,
Cohere ``response_format``). Anthropic and Bedrock Converse have tool use instead: the
schema becomes the input schema of one tool the model is made to call (a *forced tool*),
and the tool's input comes back to the client as the message's JSON ``content``, with
``finish_reason: stop``, as OpenAI would answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from modelport.gateway.errors import invalid
from modelport.gateway.protocol import ChatRequest
from modelport.gateway.providers.base import unsupported

DEFAULT_NAME = "json_response"
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FORCED_TOOL_DESCRIPTION = (
    "Answer by calling this tool: its input is your whole answer, as JSON that matches the schema."
)


@dataclass(frozen=True, slots=True)
class JsonOutput:
    """JSON output asked for: any object (``schema`` None) or one matching a schema."""

    name: str
    description: str | None
    schema: dict[str, Any] | None


def json_output(request: ChatRequest) -> JsonOutput | None:
    """The JSON output ``request`` asks for, or None for text; a malformed
    ``response_format`` is a 400 naming the field."""
    fmt = request.response_format
    if fmt is None:
        return None
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return JsonOutput(DEFAULT_NAME, None, None)
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise invalid(
                "response_format.json_schema.schema",
                "response_format json_schema needs json_schema.schema, a JSON Schema object",
            )
        name = spec.get("name")
        description = spec.get("description")
        return JsonOutput(
            name if isinstance(name, str) and TOOL_NAME.match(name) else DEFAULT_NAME,
            description if isinstance(description, str) else None,
            spec["schema"],
        )
    raise invalid(
        "response_format.type",
        f"response_format type {kind!r} is not known; use 'text', 'json_object' or 'json_schema'",
    )


@dataclass(frozen=True, slots=True)
class ForcedTool:
    """The tool that carries a JSON answer on a provider without a JSON mode."""

    name: str
    description: str
    schema: dict[str, Any]


def forced_tool(request: ChatRequest, provider: str) -> ForcedTool | None:
    """The forced tool for ``request``'s JSON output, or None when it asks for text.

    With tools of the client's own the model could not both be made to call ours and be
    free to call theirs, so that combination is refused rather than half honoured; so
    is a schema whose top level is not an object (a tool's input always is one).
    """
    output = json_output(request)
    if output is None:
        return None
    if request.tools:
        raise unsupported(
            provider,
            "response_format",
            "JSON output cannot be combined with tools on this provider (the gateway asks "
            "for it through a tool of its own); send one or the other",
        )
    schema = output.schema or {"type": "object"}
    if schema.get("type") != "object":
        raise invalid(
            "response_format.json_schema.schema",
            f"{provider} takes JSON output whose schema has type 'object' at the top level",
        )
    description = FORCED_TOOL_DESCRIPTION
    if output.description:
        description = f"{output.description}\n\n{description}"
    return ForcedTool(output.name, description, schema)
