"""Checks of streamed text with a bounded look-behind (pure).

A piece of PII can arrive split over chunks (``"call +44 20 79"``, ``"46 0958"``). Text
that could still be the beginning of one is therefore held back until the next chunk
shows how it ends, and only text that can no longer change its verdict is checked,
masked and released.

What is held is the **open tail**: the longest end of the text made of characters a
finding can contain (letters, digits, ``.-_%+@:()[]/``, and single spaces after a
digit, an upper-case letter or ``)``, as in ``+44 20 7946`` or ``GB82 WEST``), at most
:data:`LOOK_BEHIND_CHARS` long. In prose that is the last word: one token of delay. A
finding is never longer than :data:`~.pii.MAX_FINDING_CHARS` (64), so 64 characters
of look-behind are enough to hold a whole one; a longer run of such characters (a long
hash) is released from its start. Keywords are matched against the released text plus
the last characters already sent (as many as the longest keyword), so a keyword split
over chunks is caught too; only its last word can still be held back from the client.
"""

from __future__ import annotations

import string

from modelport.gateway.guardrails import pii
from modelport.gateway.guardrails.text import KeywordMatcher

LOOK_BEHIND_CHARS = pii.MAX_FINDING_CHARS
"""The most characters held back per choice (see the module's docstring)."""

_FINDING_CHARS = frozenset(string.ascii_letters + string.digits + "._%+-@:()[]/")
_BEFORE_SPACE = frozenset(string.digits + string.ascii_uppercase + ")")
"""After these a space may continue a finding (``+44 20``, ``GB82 WEST``, ``(212) 555``)."""


class ViolationError(Exception):
    """Streamed text broke a blocking rule: ``check`` (``pii``, ``keywords``) and the
    kinds found (never the text)."""

    def __init__(self, check: str, kinds: tuple[str, ...] = ()) -> None:
        super().__init__(check)
        self.check = check
        self.kinds = kinds


class HeldText:
    """One choice's streamed text: what is held back, and the checks it passes on release.

    ``pii`` is ``NONE``, ``MASK`` or ``BLOCK``; ``keywords`` blocks on a match. ``masked``
    collects the kinds masked so far (for the request's record).
    """

    __slots__ = ("_context", "_keywords", "_pending", "_pii", "masked")

    def __init__(self, pii_behaviour: str, keywords: KeywordMatcher | None) -> None:
        self._pii = pii_behaviour
        self._keywords = keywords
        self._pending = ""
        self._context = ""
        self.masked: set[str] = set()

    def feed(self, text: str) -> str:
        """Take the next piece of text; return what may be sent now (checked, masked)."""
        self._pending += text
        return self._release(_open_tail_start(self._pending))

    def flush(self) -> str:
        """The choice ended: check and return everything still held."""
        return self._release(len(self._pending))

    def _release(self, cut: int) -> str:
        pending = self._pending
        if cut == 0:
            return ""
        findings = pii.find(pending) if self._pii != "NONE" else []
        for f in findings:
            if f.start < cut < f.end:
                cut = f.start  # never release part of a finding
        if cut == 0:
            return ""
        out = pending[:cut]
        released = [f for f in findings if f.end <= cut]
        if self._keywords is not None:
            if self._keywords.search(self._context + out):
                raise ViolationError("keywords")
            keep = self._keywords.longest
            self._context = (self._context + out)[-keep:] if keep else ""
        if released:
            kinds = tuple(sorted({f.kind for f in released}))
            if self._pii == "BLOCK":
                raise ViolationError("pii", kinds)
            self.masked.update(kinds)
            out = pii.mask(out, released)
        self._pending = pending[cut:]
        return out


def _open_tail_start(text: str) -> int:
    """Where the open tail of ``text`` begins (see the module's docstring)."""
    i = len(text)
    stop = max(0, i - LOOK_BEHIND_CHARS)
    while i > stop:
        ch = text[i - 1]
        if ch in _FINDING_CHARS or (ch == " " and i >= 2 and text[i - 2] in _BEFORE_SPACE):
            i -= 1
        else:
            break
    return i
