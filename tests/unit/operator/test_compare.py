"""needs_apply: write only when a child differs from what we would apply."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelport.kube.compare import APPLIED_HASH_ANNOTATION, needs_apply, with_applied_hash

DESIRED: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "d", "namespace": "n", "labels": {"a": "1"}},
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "i:1",
                        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
                        "ports": [{"containerPort": 8080}],
                    }
                ]
            }
        }
    },
}


def _live(**changes: Any) -> dict[str, Any]:
    live = with_applied_hash(DESIRED)
    # What the apiserver adds: defaults, status, bookkeeping.
    live["metadata"].update(uid="u", resourceVersion="7", generation=2)
    live["metadata"]["labels"]["other"] = "x"
    live["spec"]["replicas"] = 1
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicy"] = "IfNotPresent"
    container["ports"][0]["protocol"] = "TCP"
    live["status"] = {"replicas": 1}
    for path, value in changes.items():
        target = live
        *head, last = path.split("|")
        for part in head:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
    return live


@pytest.mark.parametrize(
    ("live", "expected"),
    [
        (None, True),
        (_live(), False),  # defaults and status added by the server do not count
        (_live(**{"spec|template|spec|containers|0|image": "evil"}), True),  # hand edit
        (_live(**{"metadata|labels|a": "2"}), True),
        (_live(**{"spec|template|spec|containers|0|resources|requests|cpu": "1000m"}), False),
        (_live(**{"spec|template|spec|containers|0|resources|requests|memory": "1024Mi"}), False),
        (_live(**{"spec|template|spec|containers|0|resources|requests|memory": "2Gi"}), True),
        (_live(**{"metadata|annotations": {}}), True),  # never applied by us
        (_live(**{f"metadata|annotations|{APPLIED_HASH_ANNOTATION}": "stale"}), True),
    ],
)
def test_needs_apply(live: dict[str, Any] | None, expected: bool) -> None:
    assert needs_apply(DESIRED, live) is expected


def test_a_field_we_stopped_rendering_is_noticed() -> None:
    live = _live()
    smaller = copy.deepcopy(DESIRED)
    del smaller["metadata"]["labels"]["a"]
    # A subset test alone would say "nothing to do"; the applied hash says otherwise.
    assert needs_apply(smaller, live) is True


def test_list_length_change_is_noticed() -> None:
    live = _live()
    live["spec"]["template"]["spec"]["containers"].append({"name": "sidecar"})
    assert needs_apply(DESIRED, live) is True
