"""Signed-in people: the browser holds an opaque random session id in an HttpOnly,
SameSite=Strict cookie; the token it stands for stays in this process's memory.

Why not the token in the cookie: a token is a bearer credential for the gateways and
the apiserver's reviews; kept here, it never travels back to the browser after sign-in,
and signing out really ends it. The price: sessions live in one console process (the
chart runs one replica; a restart signs everyone out).

A session ends at the earliest of: sign-out, :data:`IDLE_SECONDS` without a request,
:data:`MAX_SECONDS` after sign-in, and the token's own ``exp`` (a ServiceAccount or
OIDC token that expires cannot be used anyway).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

import jwt

from modelport.gateway.auth.base import Clock
from modelport.gateway.context import Principal

COOKIE = "modelport_console"
IDLE_SECONDS = 3600.0
MAX_SECONDS = 8 * 3600.0
MAX_SESSIONS = 10_000


@dataclass
class Session:
    """One signed-in person."""

    principal: Principal
    token: str
    expires: float
    """Wall-clock seconds: the hard end (sign-in + MAX_SECONDS, or the token's exp)."""
    seen: float
    """Wall-clock seconds of the last request."""

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value that calls on the person's behalf."""
        return f"Bearer {self.token}"


class Sessions:
    """Session ids -> sessions, bounded (the oldest go first) and expiring."""

    def __init__(self, clock: Clock = time.time, max_sessions: int = MAX_SESSIONS) -> None:
        self._clock = clock
        self._max = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def start(self, principal: Principal, token: str) -> str:
        """A new session for ``principal``; its id, for the cookie."""
        now = self._clock()
        expires = min(now + MAX_SECONDS, token_expiry(token) or now + MAX_SECONDS)
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = Session(principal, token, expires, now)
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return sid

    def get(self, sid: str | None) -> Session | None:
        """The live session ``sid``, or None (unknown, idle too long, or expired)."""
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        now = self._clock()
        if now >= session.expires or now - session.seen > IDLE_SECONDS:
            del self._sessions[sid]
            return None
        session.seen = now
        self._sessions.move_to_end(sid)
        return session

    def end(self, sid: str | None) -> None:
        """Sign out."""
        if sid:
            self._sessions.pop(sid, None)

    def __len__(self) -> int:
        return len(self._sessions)


def token_expiry(token: str) -> float | None:
    """The ``exp`` of a JWT (already verified by the caller), or None."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else None
