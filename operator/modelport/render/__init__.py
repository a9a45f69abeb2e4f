"""Rendering: an endpoint (plus cluster settings) in, the desired child manifests out.

Pure and deterministic: no I/O, no clock, no randomness, so that rendering an
unchanged endpoint twice gives equal manifests and the operator writes nothing.

    rendered = render(endpoint, settings)
    rendered.children      # manifests, in apply order
    rendered.secret_refs   # Secret keys to check (never their values)
    rendered.service_account  # the gateway's ServiceAccount, when it needs TokenReview
"""

from __future__ import annotations

from dataclasses import dataclass

from modelport import gatewayconfig as gc
from modelport.api import API_VERSION, KIND, ServingEndpoint
from modelport.render.config import (
    RenderError,
    SecretRef,
    needs_readiness,
    rate_limits_per_replica,
    render_gateway_config,
    secret_refs,
    uses_guard,
)
from modelport.render.gateway import gateway_children
from modelport.render.inference import entity_children
from modelport.render.manifest import Manifest, OwnerRef
from modelport.render.names import (
    endpoint_labels,
    gateway_service_account_name,
    service_name,
    stable_hash,
)
from modelport.settings import Settings

__all__ = [
    "Manifest",
    "OwnerRef",
    "RenderError",
    "Rendered",
    "SecretRef",
    "endpoint_labels",
    "endpoint_url",
    "render",
]

CONFIG_HASH_LEN = 16


@dataclass(frozen=True)
class Rendered:
    """The desired state of one endpoint."""

    children: list[Manifest]
    config: gc.GatewayConfig
    config_hash: str
    secret_refs: list[SecretRef]
    service_account: str | None = None
    """The gateway's ServiceAccount when it verifies callers' ServiceAccount tokens: the
    subject the TokenReview ClusterRoleBinding must name."""
    rate_limit_warning: str | None = None
    """Why the endpoint's rate limits would multiply by the replica count (no shared
    store), for its status."""


def render(endpoint: ServingEndpoint, settings: Settings) -> Rendered:
    """The children `endpoint` should have; raises `RenderError` naming field and fix."""
    meta = endpoint.metadata
    namespace = meta.namespace or "default"
    if not meta.uid:
        raise RenderError(f"metadata.uid of {meta.name} is empty; read the endpoint from the API")
    owner = OwnerRef(API_VERSION, KIND, meta.name, meta.uid)
    # Readiness needs the chart's role to bind; without it, nothing is rendered.
    readiness = bool(settings.gateway_readiness_role) and needs_readiness(endpoint)
    config = render_gateway_config(
        endpoint,
        settings.catalog,
        settings.gateway_auth,
        settings.rate_limiting,
        guard=settings.guard_model,
        readiness=readiness,
        database=settings.usage_database,
        tracing=settings.tracing,
        access_log=settings.gateway_access_log,
    )
    text = gc.dumps(config)
    config_hash = stable_hash(text, CONFIG_HASH_LEN)
    refs = secret_refs(endpoint, settings.rate_limiting, settings.usage_database)
    verifies_tokens = config.ai_gateway.auth.service_account_tokens is not None
    guard = settings.guard_model
    token_for_guard = guard is not None and guard.endpoint is not None and uses_guard(endpoint)
    children = gateway_children(
        meta.name,
        namespace,
        owner,
        text,
        config_hash,
        refs,
        settings,
        # Its own token for the apiserver: TokenReviews, or the EndpointSlices watch.
        service_account=verifies_tokens or readiness,
        pod_identity=any(_signs_as_pod(e) for e in config.entities),
        readiness_role=settings.gateway_readiness_role if readiness else None,
        guard_audience=guard.audience if guard is not None and token_for_guard else None,
    )
    for index, entity in enumerate(endpoint.spec.served_entities):
        if entity.is_self_hosted:
            try:
                children += entity_children(
                    meta.name, namespace, owner, index, entity, settings, endpoint.spec.task
                )
            except RenderError as exc:
                raise exc.about(entity.name)  # noqa: B904 - the same error, said of its entity
    account = gateway_service_account_name(meta.name) if verifies_tokens else None
    warning = rate_limits_per_replica(
        endpoint, settings.rate_limiting, settings.gateway_max_replicas
    )
    return Rendered(children, config, config_hash, refs, account, warning)


def _signs_as_pod(entity: gc.EntityConfig) -> bool:
    """A Bedrock entity without access keys signs with the pod's AWS identity."""
    return (
        entity.provider is gc.ProviderName.AMAZON_BEDROCK
        and entity.credentials.aws_access_key_id is None
    )


def endpoint_url(name: str, namespace: str) -> str:
    """The endpoint's in-cluster URL (the gateway Service on port 80)."""
    return f"http://{service_name(name)}.{namespace}.svc.cluster.local"
