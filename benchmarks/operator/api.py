"""A small, light Kubernetes API client for the benchmark's own requests.

The standard library only (``http.client`` with a client certificate), one keep-alive
connection per thread: the benchmark shares two cores with the apiserver and the
operator it measures, so its own requests and watches must cost as little CPU as
possible (no model classes, no deserialisation beyond ``json.loads``).
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

APPLY = "application/apply-patch+yaml"
TIMEOUT_SECONDS = 60.0


class ApiError(RuntimeError):
    """A request failed; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Identity:
    """Where the apiserver is and who we are to it (a client certificate)."""

    port: int
    ca: Path
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        """A TLS context trusting the cluster CA and presenting our certificate."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        ctx.check_hostname = False  # the serving certificate names 127.0.0.1 as an IP SAN
        return ctx


class Api:
    """Requests as one identity; thread-safe (a connection per thread)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._ctx = identity.context()
        self._local = threading.local()

    def _connection(self, timeout: float = TIMEOUT_SECONDS) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1", self.identity.port, context=self._ctx, timeout=timeout
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        """One request; the parsed answer, None on 404, ApiError otherwise."""
        url = path + ("?" + urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connection()
            try:
                conn.request(method, url, body=data, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                break
            except (http.client.HTTPException, OSError):
                # A keep-alive connection the server closed: reconnect once.
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        if response.status == 404:
            return None
        if response.status >= 400:
            message = payload[:300].decode(errors="replace")
            raise ApiError(f"{method} {path}: {response.status} {message}", response.status)
        return json.loads(payload) if payload else None

    def apply(self, path: str, body: dict[str, Any], manager: str) -> dict[str, Any] | None:
        """Server-side apply ``body`` at ``path`` (the object's own URL), forced."""
        query = {"fieldManager": manager, "force": "true"}
        return self.request("PATCH", path, body, query=query, content_type=APPLY)

    def watch(
        self,
        path: str,
        query: dict[str, str],
        on_event: Callable[[str, dict[str, Any]], None],
        stop: threading.Event,
    ) -> None:
        """Watch ``path`` from now (existing objects arrive as ADDED first) and hand
        every event to ``on_event`` until ``stop`` is set; re-watches when the server
        ends a watch, resuming at the last resourceVersion seen."""
        version = ""
        while not stop.is_set():
            params = {**query, "watch": "true", "allowWatchBookmarks": "true"}
            params["timeoutSeconds"] = "60"
            if version:
                params["resourceVersion"] = version
            conn = self._connection(timeout=90)
            try:
                conn.request(
                    "GET", f"{path}?{urlencode(params)}", headers={"Accept": "application/json"}
                )
                response = conn.getresponse()
                if response.status != 200:
                    raise ApiError(f"watch {path}: {response.status}", response.status)
                for event in _lines(response, stop):
                    kind, obj = event.get("type", ""), event.get("object") or {}
                    if kind == "ERROR":
                        version = ""  # expired: start again from a fresh list
                        break
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if kind != "BOOKMARK":
                        on_event(kind, obj)
            except (OSError, http.client.HTTPException, ApiError):
                # 429 while the watch cache of a new resource warms up; a dropped stream.
                time.sleep(0.5)
            finally:
                conn.close()


def _lines(response: http.client.HTTPResponse, stop: threading.Event) -> Iterator[dict[str, Any]]:
    while not stop.is_set():
        line = response.readline()
        if not line:
            return
        if line.strip():
            yield json.loads(line)
