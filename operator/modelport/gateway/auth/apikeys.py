"""API keys kept in Kubernetes Secrets, mounted as files, each mapped to a principal.

A key file holds one key per line (blank lines ignored), so a rotation can overlap: put
the new key on a second line, move the callers over, then remove the old line. Only keyed
digests (:class:`~modelport.gateway.auth.base.Fingerprinter`) are kept: a file's text
lives in memory only while it is hashed. Lookup costs one keyed hash whatever the number
of keys: the first bytes of the presented key's digest select a candidate from a
dictionary, and the whole digests are then compared in constant time
(``hmac.compare_digest``). Neither step's timing tells an attacker anything about the
stored keys: they cannot choose the digest of what they send.

The files are re-checked (one ``stat`` each) at most every :data:`RECHECK_SECONDS`, so a
rotated Secret takes effect within about that long after the kubelet writes it, at no
cost on the request path in between.
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from modelport import gatewayconfig as gc
from modelport.gateway.auth.base import Clock, Fingerprinter
from modelport.gateway.context import Principal

log = logging.getLogger("modelport.gateway.auth")

RECHECK_SECONDS = 1.0
SELECTOR_BYTES = 8
MIN_KEY_LENGTH = 16
"""Shorter keys are ignored (with a warning): they could be guessed."""


@dataclass(frozen=True, slots=True)
class _FileState:
    inode: int
    mtime_ns: int
    size: int


class ApiKeyVerifier:
    """The API keys of one endpoint; :meth:`lookup` maps a presented key to its principal."""

    def __init__(
        self,
        secrets_dir: Path,
        keys: list[gc.ApiKey],
        *,
        fingerprint: Fingerprinter,
        clock: Clock = time.monotonic,
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        self._root = secrets_dir
        self._entries = [(k.path, _principal(k.principal)) for k in keys]
        self._fingerprint = fingerprint
        self._clock = clock
        self._recheck = recheck_seconds
        self._states: dict[str, _FileState | None] = {}
        self._table: dict[bytes, tuple[bytes, Principal]] = {}
        """Digest prefix -> (whole digest, principal)."""
        self._checked_at = float("-inf")

    def __bool__(self) -> bool:
        return bool(self._entries)

    def lookup(self, key: str) -> Principal | None:
        """The principal of ``key``, or None when it is no key of this endpoint."""
        now = self._clock()
        if now - self._checked_at >= self._recheck:
            self._checked_at = now
            self._refresh()
        digest = self._fingerprint(key)
        found = self._table.get(digest[:SELECTOR_BYTES])
        if found is None or not hmac.compare_digest(found[0], digest):
            return None
        return found[1]

    def _refresh(self) -> None:
        """Rebuild the table when any key file changed (appeared, rotated, vanished)."""
        states = {path: _stat(self._root / path) for path, _ in self._entries}
        if states == self._states:
            return
        self._states = states
        table: dict[bytes, Principal] = {}
        ambiguous: set[bytes] = set()
        for path, principal in self._entries:
            if states[path] is None:
                log.warning("API key file %s is not mounted; its keys are not accepted", path)
                continue
            for digest in self._digests(path):
                known = table.get(digest)
                if known is not None and known != principal:
                    ambiguous.add(digest)
                table[digest] = principal
        for digest in ambiguous:
            # One key for two principals: whichever we picked would be wrong for someone.
            del table[digest]
            log.warning("an API key is listed for two different principals; it is not accepted")
        # Selected by a prefix, confirmed by the whole digest (see the module docstring);
        # two keys sharing a 64-bit prefix would need 2^32 keys to be likely.
        self._table = {digest[:SELECTOR_BYTES]: (digest, p) for digest, p in table.items()}

    def _digests(self, path: str) -> list[bytes]:
        try:
            text = (self._root / path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("API key file %s is not readable (%s)", path, type(exc).__name__)
            return []
        out = []
        for number, line in enumerate(text.splitlines(), 1):
            key = line.strip()
            if not key:
                continue
            if len(key) < MIN_KEY_LENGTH:
                log.warning(
                    "API key file %s line %d is shorter than %d characters; ignored",
                    path,
                    number,
                    MIN_KEY_LENGTH,
                )
                continue
            out.append(self._fingerprint(key))
        del text
        return out


def _principal(config: gc.CallerPrincipal) -> Principal:
    if config.user is not None:
        return Principal("user", config.user, tuple(config.groups), "api_key")
    return Principal("service_principal", config.service_principal or "", tuple(config.groups))


def _stat(path: Path) -> _FileState | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return _FileState(st.st_ino, st.st_mtime_ns, st.st_size)
