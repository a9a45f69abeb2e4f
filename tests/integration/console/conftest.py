"""Fixtures of the console's tests: two namespaces watched by the real operator, the
chart's RBAC for the console, people with and without rights, a real gateway on loopback
(TokenReview auth) behind endpoint ``chat``, the console on loopback acting as the
chart's ServiceAccount, and Debian's Chromium driven by selenium."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelport.console.server import Settings, build
from modelport.console.sources import GatewayScrapes
from modelport.restapi import server as api_server
from tests.conftest import Cluster
from tests.integration.gateway.fakes import FakeProvider, RunningGateway
from tests.integration.gateway.kubeauth import api_server as apiserver_url
from tests.integration.gateway.kubeauth import mint
from tests.integration.gateway.openai_fake import serve_openai
from tests.integration.operator.conftest import make_namespace
from tests.integration.operator.support import (
    Operator,
    apply,
    create_secret,
    install_crd,
    install_tokenreview_binding,
    sample,
    wait_ready,
)
from tests.integration.restapi.support import (
    CHART,
    UPSTREAM_MODEL,
    RunningApi,
    bind,
    tokenreview_gateway,
)
from tests.postgres import free_port
from tests.support import eventually

AUDIENCE = "modelport"
QUERIED = "chat"
HIDDEN = "secret-plans"
OPERATOR_METRICS_PORT = free_port()
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@dataclass(frozen=True)
class Namespaces:
    """``mine``: alice may list and call endpoints there; ``theirs``: nobody of ours may."""

    mine: str
    theirs: str
    release: str
    tokens: dict[str, str]
    """Tokens (audience modelport) of ``alice`` and ``nobody``, both in ``mine``."""


@pytest.fixture(scope="module")
def crd(cluster: Cluster) -> Cluster:
    install_crd(cluster)
    return cluster


def console_rbac(cluster: Cluster, namespaces: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """The chart's ServiceAccount, RBAC and user ClusterRoles of the console, for a release
    named for this test; the release's full name and the cluster-scoped documents."""
    release = f"t{uuid.uuid4().hex[:6]}"
    full = f"{release}-modelport"
    args = [
        str(cluster.tools / "helm"), "template", release, str(CHART),
        "--namespace", namespaces[0], "--set", "console.enabled=true",
        "--set", f"watchNamespaces={{{','.join(namespaces)}}}",
    ]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, check=True, env=cluster.env)
    kinds = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    docs = [
        d
        for d in yaml.safe_load_all(out.stdout)
        if d
        and d["kind"] in kinds
        and (
            d["metadata"]["name"].startswith(f"{full}-console")
            or d["metadata"]["name"].endswith(("-endpoint-viewer", "-endpoint-querier"))
        )
    ]
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    account = f"system:serviceaccount:{namespaces[0]}:{full}-console"
    eventually(
        lambda: cluster.kubectl(
            "-n", namespaces[-1], "auth", "can-i", "list", "events", f"--as={account}",
            check=False,
        ).stdout.strip() == "yes",
        timeout=30,
    )  # fmt: skip
    return full, [d for d in docs if d["kind"].startswith("Cluster")]


@pytest.fixture(scope="module")
def namespaces(crd: Cluster) -> Iterator[Namespaces]:
    mine, theirs = make_namespace(crd, "console"), make_namespace(crd, "console-other")
    cluster_docs: list[dict[str, Any]] = []
    try:
        release, cluster_docs = console_rbac(crd, [mine, theirs])
        tokens = {}
        for who in ("alice", "nobody"):
            crd.kubectl("-n", mine, "create", "serviceaccount", who)
            tokens[who] = mint(crd, mine, who, AUDIENCE)
        bind(crd, mine, "alice", f"{release}-endpoint-querier")
        for ns in (mine, theirs):
            create_secret(crd, ns, "llm-keys", {"openai": "test-key-not-real-api"})
        yield Namespaces(mine, theirs, release, tokens)
    finally:
        for doc in cluster_docs:
            crd.kubectl(
                "delete", doc["kind"].lower(), doc["metadata"]["name"], "--wait=false",
                check=False,
            )  # fmt: skip
        for ns in (mine, theirs):
            crd.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def endpoints(
    crd: Cluster, namespaces: Namespaces, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """The real operator watching both namespaces, and one READY endpoint in each (their
    gateway pods run on kwok nodes; ``chat``'s requests go to the loopback gateway)."""
    binding = f"{namespaces.release}-gateways"
    install_tokenreview_binding(crd, binding)
    log = Path(tmp_path_factory.mktemp("operator")) / "operator.log"
    op = Operator(
        crd,
        [namespaces.mine, namespaces.theirs],
        log,
        "--liveness",
        "off",
        "--metrics-port",
        str(OPERATOR_METRICS_PORT),
        binding=binding,
    ).start()
    for ns, name in ((namespaces.mine, QUERIED), (namespaces.theirs, HIDDEN)):
        body = sample("openai")
        body["metadata"] = {"name": name, "namespace": ns}
        body["spec"].pop("aiGateway", None)
        apply(crd, ns, body)
    for ns, name in ((namespaces.mine, QUERIED), (namespaces.theirs, HIDDEN)):
        wait_ready(crd, ns, name, timeout=120)
    yield op
    op.stop()
    crd.kubectl("delete", "clusterrolebinding", binding, "--wait=false", check=False)
    crd.kubectl("delete", "clusterrole", f"{binding}-role", "--wait=false", check=False)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeProvider]:
    fake = FakeProvider().start()
    serve_openai(fake, "/v1", lambda seen: None, model=UPSTREAM_MODEL, chunk_delay=0.05)
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gateway(
    crd: Cluster,
    namespaces: Namespaces,
    upstream: FakeProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningGateway]:
    """What the operator runs for ``chat``, on loopback (TokenReview auth, the
    ServiceAccounts of ``mine`` allowed: its default)."""
    root = tmp_path_factory.mktemp("gateway")
    gw, revoke = tokenreview_gateway(crd, namespaces.mine, upstream.url, QUERIED, "gpt-4o", root)
    yield gw
    gw.stop()
    revoke()


RunningConsole = RunningApi
"""The console served on a loopback port, as the REST API's tests serve theirs."""


@pytest.fixture(scope="module")
def console(
    crd: Cluster,
    namespaces: Namespaces,
    endpoints: Operator,
    gateway: RunningGateway,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningConsole]:
    """The console as the chart's ServiceAccount, showing both namespaces; ``chat``'s
    gateway is the loopback one (invocations and metrics)."""
    root = tmp_path_factory.mktemp("console")
    url, ca_file = apiserver_url(crd, root)
    token_file = root / "console.token"
    token_file.write_text(mint(crd, namespaces.mine, f"{namespaces.release}-console"))
    settings = Settings(
        api=api_server.Settings(
            workspaces=frozenset({namespaces.mine, namespaces.theirs}),
            api_server=url,
            token_file=str(token_file),
            ca_file=str(ca_file),
            gateway_url_template=gateway.url,
        ),
        pod_metrics_url_template=gateway.url + "/metrics",
    )
    app = build(settings)
    # Every chart refresh scrapes (the default waits 10 s between scrapes).
    app.metrics = GatewayScrapes(app.kube, pod_url_template=gateway.url + "/metrics", interval=0)
    running = RunningApi(app).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's), through its chromedriver; nothing is downloaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are missing: hack/setup installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--window-size=1400,1000", "--no-first-run", "--disable-extensions",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
