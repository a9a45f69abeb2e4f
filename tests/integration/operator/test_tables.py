"""The cluster's usage database against the real apiserver: an endpoint that tracks usage
and logs payloads gets the database's connection string as a file of its gateway's
projected volume and the tables in its gateway.json; a namespace without the Secret
is told so in status (the endpoint serves on), and recovers when it appears; the
connection string is never written anywhere the operator writes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.integration.operator.conftest import make_namespace
from tests.integration.operator.support import (
    FAKE_SECRET_PREFIX,
    Operator,
    apply,
    children,
    create_secret,
    endpoint,
    kubectl_json,
    state,
    wait_ready,
)
from tests.support import eventually
from tests.unit.operator.helpers import external

pytestmark = pytest.mark.cluster

KEY = f"{FAKE_SECRET_PREFIX}-{uuid.uuid4().hex[:12]}"
DSN = f"postgresql://gateway:{FAKE_SECRET_PREFIX}-{uuid.uuid4().hex[:8]}@pg.example:5432/usage"
DATABASE = {"secretName": "usage-db", "secretKey": "dsn", "retentionDays": 30}


@pytest.fixture(scope="module")
def tables_namespace(crd: Cluster) -> Iterator[str]:
    name = make_namespace(crd, "tables")
    create_secret(crd, name, "llm-keys", {"openai": KEY})
    yield name
    crd.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_the_usage_database_is_mounted_and_a_missing_secret_is_named(
    crd: Cluster, tables_namespace: str, tmp_path: Path
) -> None:
    ns, name = tables_namespace, "tracked"
    op = Operator(
        crd,
        [ns],
        tmp_path / "operator.log",
        "--liveness",
        "off",
        "--usage-database",
        json.dumps(DATABASE),
    ).start()
    try:
        apply(
            crd,
            ns,
            {
                "apiVersion": "serving.modelport.io/v1alpha1",
                "kind": "ServingEndpoint",
                "metadata": {"name": name},
                "spec": {
                    "servedEntities": [external("gpt")],
                    "aiGateway": {
                        "auth": {"enabled": False},
                        "usageTrackingConfig": {"enabled": True},
                        "inferenceTableConfig": {"enabled": True, "samplingFraction": 0.5},
                    },
                },
            },
        )

        def degraded() -> dict[str, Any] | None:
            live = endpoint(crd, ns, name) or {}
            conditions = (live.get("status") or {}).get("conditions") or []
            found = next((c for c in conditions if c["type"] == "Degraded"), None)
            return found if found and found["status"] == "True" else None

        condition = eventually(degraded, timeout=60)
        assert condition["reason"] == "SecretMissing"
        message = condition["message"]
        assert "spec.aiGateway.usageTrackingConfig and spec.aiGateway.inferenceTableConfig" in (
            message
        )
        assert "Secret usage-db does not exist" in message and "usageDatabase" in message
        assert "writes no usage or payload rows" in message
        # The gateway serves; only the update failed.
        eventually(lambda: state(crd, ns, name) == ("READY", "UPDATE_FAILED"), timeout=60)

        config = json.loads(
            kubectl_json(crd, "-n", ns, "get", "configmap", f"{name}-gateway")["data"][
                "gateway.json"
            ]
        )
        assert config["endpointNamespace"] == ns
        ai = config["aiGateway"]
        assert ai["usageTable"] == {"postgresDsn": "usage-db/dsn", "retentionDays": 30}
        assert ai["inferenceTable"]["table"] == "tracked_payload"
        assert ai["inferenceTable"]["samplingFraction"] == 0.5
        pod = children(crd, ns, name)[("Deployment", f"{name}-gateway")]["spec"]["template"]
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "secrets")
        items = {
            (s["secret"]["name"], i["key"], i["path"])
            for s in volume["projected"]["sources"]
            for i in s["secret"]["items"]
        }
        assert ("usage-db", "dsn", "usage-db/dsn") in items
        env = pod["spec"]["containers"][0].get("env") or []
        assert not [e for e in env if "usage" in json.dumps(e)], "never an environment variable"

        create_secret(crd, ns, "usage-db", {"dsn": DSN})
        wait_ready(crd, ns, name, timeout=60)
        eventually(lambda: degraded() is None, timeout=30)
        places = [
            json.dumps(kubectl_json(crd, "-n", ns, "get", "configmaps")),
            json.dumps(kubectl_json(crd, "-n", ns, "get", "servingendpoints")),
            json.dumps(kubectl_json(crd, "-n", ns, "get", "events")),
            op.log(),
        ]
        assert not [p for p in places if DSN in p]
        op.assert_alive()
    finally:
        op.stop()
