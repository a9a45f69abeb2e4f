"""AI21 Labs Studio: Jamba chat, an OpenAI-like API at ``/studio/v1/chat/completions``.

Only the request fields AI21 documents are sent (``model``, ``messages``, ``tools``,
``response_format``, ``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``n``,
``stream``): its API is OpenAI-like, not OpenAI's, and an undocumented field is either
refused or silently ignored there, which a client cannot tell apart from honoured. So:

- mapped: ``max_completion_tokens`` → ``max_tokens``; the ``developer`` role → ``system``;
  ``tool_choice: "auto"`` and ``parallel_tool_calls: true`` (AI21's behaviour anyway)
  are left out;
- dropped, because they do not change the answer: ``stream_options`` (AI21 reports usage
  on its last chunk unasked), ``user``, ``metadata``, ``store`` and message ``name``s;
- refused with a 400 naming the field: everything else the client set (``seed``,
  ``logprobs``, penalties, other ``tool_choice`` values, ``json_schema`` output,
  ``reasoning_effort``, images, ...).
"""

from __future__ import annotations

from typing import Any

from modelport.gateway.errors import invalid
from modelport.gateway.protocol import ChatRequest
from modelport.gateway.providers.base import (
    Call,
    refuse,
    refuse_serial_tools,
    unsupported,
)
from modelport.gateway.providers.openai_compatible import OpenAICompatible
from modelport.gatewayconfig import Task

NAME = "ai21labs"


class AI21LabsProvider(OpenAICompatible):
    """Bearer API key; chat only (AI21's completions models are retired)."""

    name = NAME
    asks_stream_usage = False  # not in its documented parameters; its last chunk has usage
    tasks = frozenset({Task.CHAT})
    default_base_url = "https://api.ai21.com/studio/v1"

    def body(self, call: Call) -> dict[str, Any]:
        """The documented fields of the client's request (see the module docstring)."""
        return chat_body(call.chat(), call.entity.model_name, stream=call.stream)


def chat_body(request: ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """AI21's chat body for an OpenAI chat request."""
    refuse(
        request,
        NAME,
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "top_k",
        "reasoning_effort",
        "service_tier",
    )
    refuse_serial_tools(request, NAME)
    if request.tool_choice not in (None, "auto"):
        raise unsupported(NAME, "tool_choice", "AI21 chooses tools itself; use 'auto'")
    fmt = (request.response_format or {}).get("type")
    if fmt not in (None, "text", "json_object"):
        raise unsupported(
            NAME, "response_format", "AI21 has JSON mode only: use {'type': 'json_object'}"
        )
    messages: list[dict[str, Any]] = []
    for index, m in enumerate(request.messages):
        if m.has_images():
            raise invalid(
                f"messages.{index}.content",
                f"{NAME} does not take images; send text, or use a provider that does",
            )
        out: dict[str, Any] = {
            "role": "system" if m.role == "developer" else m.role,
            "content": m.text(),
        }
        if m.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in m.tool_calls
            ]
        if m.role == "tool":
            out["tool_call_id"] = m.tool_call_id
        messages.append(out)
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": request.max_output_tokens(),
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": request.stop,
        "n": request.n,
        "stream": True if stream else None,
        "response_format": {"type": fmt} if fmt else None,
    }
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.function.name,
                    **({"description": t.function.description} if t.function.description else {}),
                    "parameters": t.function.parameters or {"type": "object", "properties": {}},
                },
            }
            for t in request.tools
        ]
    return {k: v for k, v in body.items() if v is not None}
