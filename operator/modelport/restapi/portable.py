"""``modelport import`` and ``modelport export``: files of the reference service's endpoint
JSON <-> ServingEndpoint YAML, through the same mapping as the REST API.

``import`` reads what the service's API or CLI prints (``GET`` answers, create
requests, lists of either, or the list answer ``{"endpoints": [...]}``) and writes YAML
that ``kubectl apply`` admits. ``export`` reads ServingEndpoint YAML (files, or ``kubectl
get servingendpoints -o yaml``) and writes the service's create request. Normalised
names and kept-without-effect fields are reported on stderr; a body that cannot map is
reported with every reason, and nothing is written for it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelport.api.v1alpha1 import ServingEndpoint, format_errors
from modelport.restapi.mapping import (
    KEPT_FIELDS,
    MappingError,
    endpoint_from_reference,
    endpoint_to_reference,
)


def import_main(files: list[str], namespace: str | None) -> int:
    """Print the YAML of every endpoint in ``files``; 1 if any could not be mapped."""
    documents: list[dict[str, Any]] = []
    failed = False
    for source, body in _json_bodies(files):
        label = f"{source}: endpoint {body.get('name')!r}" if isinstance(body, dict) else source
        try:
            endpoint = endpoint_from_reference(body, namespace=namespace)
        except MappingError as exc:
            failed = True
            for error in exc.errors:
                print(f"{label}: {error}", file=sys.stderr)
            continue
        for note in import_notes(body, endpoint):
            print(f"{label}: {note}", file=sys.stderr)
        documents.append(manifest(endpoint))
    if documents:
        sys.stdout.write(yaml.safe_dump_all(documents, sort_keys=False))
    return 1 if failed else 0


def export_main(files: list[str]) -> int:
    """Print the service's create request of every ServingEndpoint in ``files``."""
    bodies: list[dict[str, Any]] = []
    failed = False
    for source, document in _yaml_documents(files):
        try:
            endpoint = ServingEndpoint.parse(document)
        except ValidationError as exc:
            failed = True
            for error in format_errors(exc):
                print(f"{source}: {error}", file=sys.stderr)
            continue
        bodies.append(endpoint_to_reference(endpoint))
    if bodies:
        out: Any = bodies[0] if len(bodies) == 1 else bodies
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    return 1 if failed else 0


def manifest(endpoint: ServingEndpoint) -> dict[str, Any]:
    """The endpoint as a manifest to apply: no status, no empty metadata maps."""
    body = endpoint.to_body()
    body.pop("status", None)
    meta = body["metadata"]
    for key in ("labels", "annotations"):
        if not meta.get(key):
            meta.pop(key, None)
    return body


def import_notes(body: Any, endpoint: ServingEndpoint) -> list[str]:
    """What a user should know about an import that succeeded."""
    notes = []
    if isinstance(body, dict) and body.get("name") != endpoint.metadata.name:
        notes.append(f"named {endpoint.metadata.name!r} here (Kubernetes names: lower case, '-')")
    if isinstance(body, dict) and (kept := [k for k in KEPT_FIELDS if k in body]):
        notes.append(f"{', '.join(kept)} kept in an annotation, without effect on Modelport")
    return notes


def _read(file: str) -> str:
    return sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")


def _json_bodies(files: list[str]) -> Iterator[tuple[str, Any]]:
    for file in files:
        data = json.loads(_read(file))
        if isinstance(data, dict) and isinstance(data.get("endpoints"), list):
            data = data["endpoints"]
        for body in data if isinstance(data, list) else [data]:
            yield file, body


def _yaml_documents(files: list[str]) -> Iterator[tuple[str, Any]]:
    for file in files:
        for document in yaml.safe_load_all(_read(file)):
            if isinstance(document, dict) and document.get("kind") == "List":
                yield from ((file, item) for item in document.get("items") or [])
            elif document is not None:
                yield file, document
