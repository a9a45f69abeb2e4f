"""``reasoning_effort``: OpenAI's reasoning knob, as a token budget for the providers
that take one (Anthropic and Bedrock-hosted Claude ``thinking.budget_tokens``, Gemini
``thinkingConfig.thinkingBudget``, Cohere ``thinking.token_budget``).

The budgets are the gateway's choice, the same for every provider, and documented in
the README's feature table; ``none`` turns reasoning off where the provider allows it.
"""

from __future__ import annotations

from modelport.gateway.errors import invalid
from modelport.gateway.protocol import ChatRequest
from modelport.gateway.providers.base import unsupported

BUDGETS = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 24576,
}
"""Thinking tokens per effort. 1024 is Anthropic's floor; 24576 Gemini Flash's ceiling."""
MIN_BUDGET = 1024


def thinking_budget(request: ChatRequest) -> int | None:
    """The budget ``request`` asks for: None when unset, 0 for ``none``."""
    effort = request.reasoning_effort
    if effort is None:
        return None
    if effort == "none":
        return 0
    budget = BUDGETS.get(effort)
    if budget is None:
        raise invalid(
            "reasoning_effort",
            f"reasoning_effort {effort!r} is not known; use none, {', '.join(BUDGETS)}",
        )
    return budget


def fit_budget(budget: int, max_tokens: int | None, default_answer: int) -> tuple[int, int]:
    """``(budget, max_tokens)`` for a provider whose budget counts inside max_tokens and
    must stay below it (Anthropic). The client's max (OpenAI counts reasoning in it) is
    kept, the budget shrunk to at most half of it; without one, room for an answer of
    ``default_answer`` tokens is added to the budget."""
    if max_tokens is None:
        return budget, budget + default_answer
    budget = min(budget, max(MIN_BUDGET, max_tokens // 2))
    if budget >= max_tokens:
        raise invalid(
            "max_completion_tokens",
            f"reasoning needs max_completion_tokens above {MIN_BUDGET} on this provider "
            f"(got {max_tokens}); raise it or leave reasoning_effort unset",
        )
    return budget, max_tokens


def check_claude_thinking(request: ChatRequest, provider: str, json_output: bool) -> None:
    """Refuse what Claude's extended thinking is documented not to work with (a changed
    temperature, top_k, a forced tool, hence JSON output through one), naming the
    client's field rather than relaying the provider's 400 about its own names."""
    hint = "leave it unset with reasoning_effort, or leave reasoning_effort unset"
    if request.temperature not in (None, 1):
        raise unsupported(provider, "temperature", hint)
    if request.top_k is not None:
        raise unsupported(provider, "top_k", hint)
    if json_output:
        raise unsupported(provider, "response_format", hint)
    if request.forced_tool() or request.tool_choice == "required":
        raise unsupported(provider, "tool_choice", "use 'auto' or 'none' with reasoning_effort")
