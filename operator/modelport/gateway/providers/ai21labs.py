"""AI21 Labs Studio: Jamba chat, an OpenAI-format API at ``/studio/v1/chat/completions``."""

from __future__ import annotations

from modelport.gateway.providers.openai_compatible import OpenAICompatible
from modelport.gatewayconfig import Task


class AI21LabsProvider(OpenAICompatible):
    """Bearer API key; chat only (AI21's completions models are retired)."""

    name = "ai21labs"
    asks_stream_usage = False  # not in its documented parameters; counted if sent
    tasks = frozenset({Task.CHAT})
    default_base_url = "https://api.ai21.com/studio/v1"
