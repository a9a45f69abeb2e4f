"""The weighted choice and the router's plan (the fallback seam)."""

from __future__ import annotations

import json
import random

import pytest

from modelport import gatewayconfig as gc
from modelport.gateway.errors import GatewayError
from modelport.gateway.traffic import Router, TrafficSplit


@pytest.mark.parametrize(
    ("draw", "expected"),
    [(0.0, "a"), (0.5, "a"), (0.7999, "a"), (0.8, "b"), (0.9999999, "b")],
)
def test_split_boundaries(draw: float, expected: str) -> None:
    assert TrafficSplit([("a", 80), ("b", 20)], rng=lambda: draw).choose() == expected


def test_zero_weight_is_never_drawn() -> None:
    split = TrafficSplit([("a", 0), ("b", 100), ("c", 0)], rng=random.Random(1).random)  # noqa: S311
    assert {split.choose() for _ in range(1000)} == {"b"}


def test_split_statistics() -> None:
    split = TrafficSplit([("a", 80), ("b", 20)], rng=random.Random(42).random)  # noqa: S311
    share = sum(split.choose() == "a" for _ in range(10_000)) / 10_000
    assert abs(share - 0.8) <= 0.02


def _config(fallback: bool) -> gc.GatewayConfig:
    entity = {
        "task": "llm/v1/chat",
        "provider": "self-hosted",
        "modelName": "m",
        "baseUrl": "http://x/v1",
    }
    return gc.loads(
        json.dumps(
            {
                "endpointName": "ep",
                "entities": [{**entity, "name": n} for n in ("a", "b", "c")],
                "routes": [
                    {"servedEntityName": "a", "trafficPercentage": 70},
                    {"servedEntityName": "b", "trafficPercentage": 30},
                    {"servedEntityName": "c", "trafficPercentage": 0},
                ],
                "aiGateway": {"fallbackEnabled": fallback},
            }
        )
    )


def test_plan_resolves_the_model_field() -> None:
    router = Router(_config(False), rng=lambda: 0.9)
    assert [e.name for e in router.plan(None)] == ["b"]
    assert [e.name for e in router.plan("ep")] == ["b"]
    assert [e.name for e in router.plan("c")] == ["c"], "naming an entity bypasses the split"
    with pytest.raises(GatewayError) as caught:
        router.plan("gpt-4o")
    assert caught.value.param == "model" and "'ep'" in caught.value.message


def test_plan_with_fallback_lists_the_others_by_weight() -> None:
    router = Router(_config(True), rng=lambda: 0.9)
    assert [e.name for e in router.plan(None)] == ["b", "a", "c"]
