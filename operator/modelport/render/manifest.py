"""Plain Kubernetes manifests as dicts, and the metadata every child shares."""

from __future__ import annotations

from dataclasses import dataclass

from modelport.objects import Manifest as Manifest  # the one type, used here by name


@dataclass(frozen=True)
class OwnerRef:
    """The endpoint that owns the children (garbage collection deletes them with it)."""

    api_version: str
    kind: str
    name: str
    uid: str

    def to_body(self) -> Manifest:
        """The `ownerReferences` entry."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def metadata(name: str, namespace: str, labels: dict[str, str], owner: OwnerRef) -> Manifest:
    """`metadata` of a child: name, namespace, labels and the owner reference."""
    return {
        "name": name,
        "namespace": namespace,
        "labels": dict(labels),
        "ownerReferences": [owner.to_body()],
    }
