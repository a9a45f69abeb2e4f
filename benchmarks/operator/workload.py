"""What a round applies: namespaces, Secrets and ServingEndpoints (the mix), and for
the direct-apply limit the children ``modelport.render.render`` gives for them.

The mix (deterministic, by index): 4 of every 5 endpoints are external-provider
endpoints, rotating OpenAI, Anthropic and Cohere, each with a Secret of its own holding
its API key (fake); every 5th is a self-hosted catalog model on ``GPU_SMALL`` (one GPU),
alternating Llama 3.2 1B and 3B Instruct, served by vLLM. Endpoints are spread evenly
over the round's namespaces (``--namespaces``), like teams sharing a cluster.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from benchmarks.operator.api import Api
from modelport.api import GROUP, PLURAL, VERSION, ServingEndpoint
from modelport.kube import CHILD_KINDS, FIELD_MANAGER
from modelport.kube.compare import with_applied_hash
from modelport.render import render
from modelport.settings import Settings

BENCH_LABEL = "bench.modelport.io/round"
SELF_HOSTED_EVERY = 5
"""Every 5th endpoint is self-hosted: 20%."""
SELF_HOSTED_MODELS = (
    "system.ai.meta_llama_v3_2_1b_instruct",
    "system.ai.meta_llama_v3_2_3b_instruct",
)
SELF_HOSTED_WORKLOAD = "GPU_SMALL"
SELF_HOSTED_GPUS = 1
PROVIDERS = (
    ("openai", "gpt-4o-mini", "openaiConfig", "openaiApiKey"),
    ("anthropic", "claude-3-5-sonnet-20241022", "anthropicConfig", "anthropicApiKey"),
    ("cohere", "command-r-plus", "cohereConfig", "cohereApiKey"),
)
BENCH_MANAGER = "modelport-bench"
MIX = (
    "80% external (OpenAI, Anthropic, Cohere in turn; one Secret each), 20% self-hosted "
    "(Llama 3.2 1B / 3B Instruct from the catalog, GPU_SMALL = 1 GPU, vLLM)"
)


@dataclass(frozen=True)
class Item:
    """One endpoint of a round, with the Secret it needs (if any)."""

    namespace: str
    endpoint: dict[str, Any]
    secret: dict[str, Any] | None

    @property
    def self_hosted(self) -> bool:
        return self.secret is None


def self_hosted_count(n: int) -> int:
    """How many of ``n`` endpoints are self-hosted."""
    return len(range(0, n, SELF_HOSTED_EVERY))


def namespaces(prefix: str, count: int) -> list[str]:
    """The round's namespace names."""
    return [f"{prefix}-t{i}" for i in range(count)]


def items(round_id: str, n: int, spaces: list[str]) -> list[Item]:
    """The round's endpoints and Secrets (see the module docstring)."""
    out = []
    for i in range(n):
        namespace = spaces[i % len(spaces)]
        name = f"ep-{i:04d}"
        meta = {"name": name, "namespace": namespace, "labels": {BENCH_LABEL: round_id}}
        if i % SELF_HOSTED_EVERY == 0:
            model = SELF_HOSTED_MODELS[(i // SELF_HOSTED_EVERY) % len(SELF_HOSTED_MODELS)]
            entity = {"name": "model", "entityName": model, "workloadType": SELF_HOSTED_WORKLOAD}
            secret = None
        else:
            provider, model, config, field = PROVIDERS[i % len(PROVIDERS)]
            key_name = f"{name}-key"
            entity = {
                "name": provider,
                "externalModel": {
                    "name": model,
                    "provider": provider,
                    "task": "llm/v1/chat",
                    config: {field: {"secretKeyRef": {"name": key_name, "key": "api-key"}}},
                },
            }
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": key_name, "namespace": namespace},
                "stringData": {"api-key": f"bench-fake-key-{i}"},
            }
        endpoint = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ServingEndpoint",
            "metadata": meta,
            "spec": {"servedEntities": [entity]},
        }
        out.append(Item(namespace, endpoint, secret))
    return out


def endpoint_path(namespace: str, name: str = "") -> str:
    """The URL of an endpoint (or of the collection, without ``name``)."""
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}"
    return f"{base}/{quote(name)}" if name else base


def create_namespaces(api: Api, spaces: Iterable[str], round_id: str) -> None:
    """Create (apply) the round's namespaces."""
    for ns in spaces:
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": {BENCH_LABEL: round_id}},
        }
        api.apply(f"/api/v1/namespaces/{quote(ns)}", body, BENCH_MANAGER)


def apply_all(
    api: Api,
    round_items: list[Item],
    threads: int,
    after: Callable[[Item, dict[str, Any]], None] | None = None,
) -> None:
    """Apply every Secret, then every endpoint, ``threads`` requests at a time; with
    ``after``, call it with each endpoint as the apiserver returned it (same thread)."""

    def secret(item: Item) -> None:
        assert item.secret is not None
        meta = item.secret["metadata"]
        path = f"/api/v1/namespaces/{quote(meta['namespace'])}/secrets/{quote(meta['name'])}"
        api.apply(path, item.secret, BENCH_MANAGER)

    def endpoint(item: Item) -> None:
        meta = item.endpoint["metadata"]
        live = api.apply(
            endpoint_path(meta["namespace"], meta["name"]), item.endpoint, BENCH_MANAGER
        )
        if after is not None and live is not None:
            after(item, live)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(secret, [i for i in round_items if i.secret is not None]))
        list(pool.map(endpoint, round_items))


def direct_children(api: Api, settings: Settings) -> Callable[[Item, dict[str, Any]], None]:
    """An ``after`` for :func:`apply_all` that renders the endpoint's children with
    ``modelport.render.render`` and server-side applies each of them exactly as the
    operator's ``Kube.apply`` does (field manager ``modelport``, forced, with the
    applied-hash annotation): the same objects, bytes and requests, minus the operator."""

    def apply_children(_item: Item, live: dict[str, Any]) -> None:
        rendered = render(ServingEndpoint.parse(live), settings)
        for manifest in rendered.children:
            kind = CHILD_KINDS[manifest["kind"]]
            meta = manifest["metadata"]
            path = f"{kind.collection(meta['namespace'])}/{quote(meta['name'])}"
            api.apply(path, with_applied_hash(manifest), FIELD_MANAGER)

    return apply_children


def delete_namespaces(api: Api, spaces: Iterable[str]) -> None:
    """Start deleting the namespaces (everything in them goes with them)."""
    for ns in spaces:
        api.request("DELETE", f"/api/v1/namespaces/{quote(ns)}")
