"""The REST API server for integration tests: the chart's RBAC for it applied to the test
cluster, the server itself on a loopback port (in a thread, with its own event loop),
acting as the chart's ServiceAccount with a token the apiserver minted."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import yaml
from aiohttp import web

from modelport.restapi.server import Settings, build
from tests.conftest import ROOT, Cluster
from tests.integration.gateway.fakes import RunningGateway, endpoint, start_gateway
from tests.integration.gateway.kubeauth import api_server, grant_tokenreview, mint
from tests.support import eventually

CHART = ROOT / "charts" / "modelport"
AUDIENCE = "modelport"
UPSTREAM_MODEL = "gpt-4o"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
USER_ROLES = ("-endpoint-viewer", "-endpoint-querier", "-endpoint-editor")


def chart_documents(cluster: Cluster, release: str, namespace: str, *sets: str) -> list[Any]:
    """``helm template`` of the chart with the API on, watching ``namespace`` only."""
    args = [
        str(cluster.tools / "helm"), "template", release, str(CHART), "--namespace", namespace,
        "--set", "api.enabled=true", "--set", f"watchNamespaces={{{namespace}}}",
    ]  # fmt: skip
    for value in sets:
        args += ["--set", value]
    out = subprocess.run(args, capture_output=True, text=True, check=True, env=cluster.env)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@contextmanager
def chart_rbac(cluster: Cluster, namespace: str) -> Iterator[str]:
    """The chart's ServiceAccount, RBAC and user ClusterRoles of the API server, installed
    for a release named for this test (cluster-scoped names must not collide with another
    session's); yields the release's full name (``<release>-modelport``)."""
    release = f"t{uuid.uuid4().hex[:6]}"
    full = f"{release}-modelport"

    def wanted(doc: dict[str, Any]) -> bool:
        name = doc["metadata"]["name"]
        return doc["kind"] in RBAC_KINDS and (
            name.startswith(f"{full}-api") or name.endswith(USER_ROLES)
        )

    docs = [d for d in chart_documents(cluster, release, namespace) if wanted(d)]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    account = f"system:serviceaccount:{namespace}:{full}-api"
    # The RBAC authorizer learns of bindings through a watch: wait until they apply.
    eventually(
        lambda: cluster.kubectl(
            "auth", "can-i", "create", "subjectaccessreviews.authorization.k8s.io",
            f"--as={account}", check=False,
        ).stdout.strip() == "yes",
        timeout=30,
    )  # fmt: skip
    try:
        yield full
    finally:
        for doc in docs:
            if doc["kind"].startswith("Cluster"):
                cluster.kubectl(
                    "delete", doc["kind"].lower(), doc["metadata"]["name"], "--wait=false",
                    check=False,
                )  # fmt: skip


def bind(cluster: Cluster, namespace: str, account: str, cluster_role: str) -> None:
    """A RoleBinding of ``cluster_role`` to ServiceAccount ``account`` in ``namespace``;
    returns once RBAC applies it."""
    cluster.kubectl(
        "-n", namespace, "create", "rolebinding", f"{account}-{cluster_role}"[:63],
        f"--clusterrole={cluster_role}", f"--serviceaccount={namespace}:{account}",
    )  # fmt: skip
    eventually(
        lambda: cluster.kubectl(
            "-n", namespace, "auth", "can-i", "get", "servingendpoints.serving.modelport.io",
            f"--as=system:serviceaccount:{namespace}:{account}", check=False,
        ).stdout.strip() == "yes",
        timeout=30,
    )  # fmt: skip


class Servable(Protocol):
    """An aiohttp server's parts: the REST API's, or the console's."""

    def application(self) -> web.Application: ...


class RunningApi:
    """A :class:`RestApi` (or the console) served on a loopback port from a thread of
    its own."""

    def __init__(self, api: Servable) -> None:
        self.api = api
        self.loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RunningApi:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.api.application(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def start_api(
    cluster: Cluster,
    namespace: str,
    account: str,
    directory: Path,
    **settings: Any,
) -> RunningApi:
    """The server acting as ServiceAccount ``namespace/account`` (a token the apiserver
    minted, for its own audience), serving ``namespace`` as its default workspace."""
    url, ca_file = api_server(cluster, directory)
    token_file = directory / "api.token"
    token_file.write_text(mint(cluster, namespace, account))
    values: dict[str, Any] = {
        "workspaces": frozenset({namespace}),
        "default_workspace": namespace,
        "api_server": url,
        "token_file": str(token_file),
        "ca_file": str(ca_file),
        **settings,
    }
    return RunningApi(build(Settings(**values))).start()


def tokenreview_gateway(
    cluster: Cluster, namespace: str, upstream_url: str, name: str, entity: str, root: Path
) -> tuple[RunningGateway, Callable[[], None]]:
    """What the operator runs for endpoint ``name``, on loopback: one OpenAI entity at
    ``upstream_url``, callers' ServiceAccount tokens verified with TokenReviews (as the
    ServiceAccount ``gateway`` of ``namespace``), the namespace's ServiceAccounts allowed.
    Returns the gateway and the function that revokes its TokenReview right."""
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "gateway")
    revoke = grant_tokenreview(cluster, namespace, "gateway")
    url, ca_file = api_server(cluster, root)
    token_file = root / "gateway.token"
    token_file.write_text(mint(cluster, namespace, "gateway"))
    config = {
        "name": entity,
        "task": "llm/v1/chat",
        "provider": "openai",
        "modelName": UPSTREAM_MODEL,
        "baseUrl": upstream_url + "/v1",
        "credentials": {"apiKey": "keys/openai"},
    }
    auth = {
        "serviceAccountTokens": {
            "audiences": [AUDIENCE], "apiServer": url, "caFile": str(ca_file),
            "tokenFile": str(token_file),
        },
        "allow": {"serviceAccounts": [f"{namespace}/*"]},
    }  # fmt: skip
    doc = endpoint(config, name=name, aiGateway={"auth": auth})
    return start_gateway(root, doc, {"keys/openai": "test-key-not-real-api"}), revoke
