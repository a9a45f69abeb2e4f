"""Credential files, read when they change.

Kubernetes updates a mounted Secret by writing the new files into a fresh directory and
swapping the ``..data`` symlink, so a rotated key shows up as a different inode (and
usually mtime) behind the same path. A ``stat`` per use is a few microseconds; it buys
"the next request uses the new key" without a watcher thread or a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelport.gateway.errors import INTERNAL_ERROR, GatewayError
from modelport.gatewayconfig import Credentials


@dataclass(frozen=True, slots=True)
class _Cached:
    inode: int
    mtime_ns: int
    size: int
    value: str


class SecretStore:
    """Reads credential files under the ``--secrets`` directory, caching by file identity."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._cache: dict[str, _Cached] = {}

    def read(self, relative: str, field: str) -> str:
        """The file's content, stripped of surrounding whitespace.

        ``field`` names the config field for the error message; the value is never part
        of any message.
        """
        path = self._root / relative
        cached = self._cache.get(relative)
        try:
            st = path.stat()
            if (
                cached is not None
                and cached.inode == st.st_ino
                and cached.mtime_ns == st.st_mtime_ns
                and cached.size == st.st_size
            ):
                return cached.value
            # Read after stat: if a swap lands in between, the next stat differs and the
            # file is read again, so a stale value is never pinned.
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            if cached is not None:
                # A swap in progress can make the path vanish for an instant; the old key
                # is still the best answer for this one request.
                return cached.value
            raise GatewayError(
                500,
                INTERNAL_ERROR,
                f"credential {field} is not readable at --secrets/{relative} "
                f"({exc.strerror}); check that the Secret is mounted",
            ) from None
        if not value:
            if cached is not None:
                return cached.value  # a file caught mid-write: keep the previous key
            raise GatewayError(
                500, INTERNAL_ERROR, f"credential {field} at --secrets/{relative} is empty"
            )
        self._cache[relative] = _Cached(st.st_ino, st.st_mtime_ns, st.st_size, value)
        return value

    def resolve(self, credentials: Credentials) -> dict[str, str]:
        """Every configured credential of an entity, by its config field name (alias)."""
        out: dict[str, str] = {}
        for name, info in Credentials.model_fields.items():
            relative = getattr(credentials, name)
            if relative is not None:
                alias = info.alias or name
                out[alias] = self.read(relative, f"credentials.{alias}")
        return out

    def missing(self, credentials: Credentials) -> list[str]:
        """The credential files that cannot be read now (for readiness)."""
        out = []
        for name in Credentials.model_fields:
            relative = getattr(credentials, name)
            if relative is not None and not (self._root / relative).is_file():
                out.append(relative)
        return out
