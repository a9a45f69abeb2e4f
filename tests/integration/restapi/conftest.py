"""Fixtures of the REST API's integration tests: one workspace namespace per module, the
real operator watching it, the chart's RBAC for the server, the server acting as its
ServiceAccount, callers with RoleBindings to the chart's user ClusterRoles, and a real
gateway on loopback (with TokenReview auth) that invocations are proxied to."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Cluster
from tests.integration.gateway.fakes import FakeProvider, RunningGateway
from tests.integration.gateway.kubeauth import mint
from tests.integration.gateway.openai_fake import serve_openai
from tests.integration.operator.conftest import make_namespace
from tests.integration.operator.support import (
    Operator,
    create_secret,
    install_crd,
    install_tokenreview_binding,
)
from tests.integration.restapi.support import (
    AUDIENCE,
    UPSTREAM_MODEL,
    RunningApi,
    bind,
    chart_rbac,
    start_api,
    tokenreview_gateway,
)

QUERIED = "chat"
"""The endpoint whose invocations reach the loopback gateway."""


@dataclass(frozen=True)
class Workspace:
    """A namespace served by the API, and who may do what in it."""

    namespace: str
    release: str
    """The chart release's full name (``<release>-modelport``)."""
    tokens: dict[str, str]
    """Tokens (audience modelport) of ``editor``, ``viewer``, ``querier`` and ``nobody``."""


@pytest.fixture(scope="module")
def crd(cluster: Cluster) -> Cluster:
    """The cluster, with the ServingEndpoint CRD installed."""
    install_crd(cluster)
    return cluster


@pytest.fixture(scope="module")
def workspace(crd: Cluster) -> Iterator[Workspace]:
    namespace = make_namespace(crd, "api")
    try:
        with chart_rbac(crd, namespace) as release:
            tokens = {}
            for who in ("editor", "viewer", "querier", "nobody"):
                crd.kubectl("-n", namespace, "create", "serviceaccount", who)
                if who != "nobody":
                    bind(crd, namespace, who, f"{release}-endpoint-{who}")
                tokens[who] = mint(crd, namespace, who, AUDIENCE)
            create_secret(crd, namespace, "llm-keys", {"openai": "test-key-not-real-api"})
            yield Workspace(namespace, release, tokens)
    finally:
        crd.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def operator(
    crd: Cluster, workspace: Workspace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """``modelport operator`` watching the workspace, keeping a TokenReview binding as the
    chart's (named for this module: it is cluster-scoped)."""
    binding = f"{workspace.release}-gateways"
    install_tokenreview_binding(crd, binding)
    log = Path(tmp_path_factory.mktemp("operator")) / "operator.log"
    op = Operator(crd, [workspace.namespace], log, binding=binding).start()
    yield op
    op.stop()
    crd.kubectl("delete", "clusterrolebinding", binding, "--wait=false", check=False)
    crd.kubectl("delete", "clusterrole", f"{binding}-role", "--wait=false", check=False)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeProvider]:
    fake = FakeProvider().start()
    serve_openai(fake, "/v1", lambda seen: None, model=UPSTREAM_MODEL)
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gateway(
    crd: Cluster,
    workspace: Workspace,
    upstream: FakeProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningGateway]:
    """What the operator runs for endpoint ``chat``, on loopback: its gateway verifies
    callers' ServiceAccount tokens with TokenReviews and allows the namespace's."""
    root = tmp_path_factory.mktemp("gateway")
    gw, revoke = tokenreview_gateway(crd, workspace.namespace, upstream.url, QUERIED, "gpt", root)
    yield gw
    gw.stop()
    revoke()


@pytest.fixture(scope="module")
def api(
    crd: Cluster,
    workspace: Workspace,
    gateway: RunningGateway,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningApi]:
    """The server, as the chart's ServiceAccount, proxying invocations to ``gateway``."""
    root = tmp_path_factory.mktemp("api")
    running = start_api(
        crd,
        workspace.namespace,
        f"{workspace.release}-api",
        root,
        gateway_url_template=gateway.url,
    )
    yield running
    running.stop()
