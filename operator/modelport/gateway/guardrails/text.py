"""Word-level checks: invalid keywords and valid topics (pure).

Text is compared in one normal form: Unicode NFKC (so fullwidth letters and ligatures
read as plain letters) and case-folded (``ß`` = ``ss``). A keyword matches as whole
words: ``class`` does not match ``classic``; a keyword of several words matches them
with any whitespace between.

**Valid topics** are judged by a lexical classifier, not a model: the text is on topic
when it shares a content word with one of the topics, after light stemming (``refunds``,
``refunded`` and ``refund`` are one word). Its accuracy on the table in
``tests/unit/gateway/test_guardrails_text.py`` is stated in the chart's README; its
limits: it knows no synonyms (list them as topics: ``billing``, ``invoice``,
``payment``), it cannot tell a passing mention from the subject, and a text with no
content word at all (``hi``, ``thanks!``) is let through rather than refused.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_WORD = re.compile(r"\w+")

_STOPWORDS_TEXT = """a about above after again against all am an and any are as at be
    because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is
    it its itself just me more most my myself no nor not now of off on once only or other our
    ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your yours yourself
    yourselves please tell me give show explain help want need know like get make let hi
    hello hey thanks thank ok okay yes yeah sure also just really much many one two"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
"""Words that say nothing about a topic."""

_SUFFIXES = ("ational", "ization", "ations", "ation", "ments", "ment", "ness", "ings", "ing",
             "ies", "ied", "edly", "ers", "er", "ed", "es", "ly", "s")  # fmt: skip


def normalise(text: str) -> str:
    """NFKC, then case-folded."""
    return unicodedata.normalize("NFKC", text).casefold()


def stem(word: str) -> str:
    """A light suffix stripper (no dictionary): enough to make plural, past and -ing forms
    of one word equal; it need not give a real word."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            if suffix in ("ies", "ied"):
                word += "y"
            break
    # "running" -> "runn" -> "run"; "stopped" -> "stopp" -> "stop"
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
        word = word[:-1]
    # "invoice" and "invoic(es)", "charge" and "charg(ed)": one stem
    if len(word) > 4 and word[-1] == "e":
        word = word[:-1]
    return word


def content_stems(text: str) -> set[str]:
    """The stems of ``text``'s words that carry meaning."""
    stems = {stem(w) for w in _WORD.findall(normalise(text)) if w not in STOPWORDS and len(w) > 1}
    return stems - STOPWORDS  # "helps" is "help"


class KeywordMatcher:
    """Finds whole-word, case-insensitive, normalised matches of any of a list of keywords."""

    def __init__(self, keywords: Iterable[str]) -> None:
        words = sorted({" ".join(normalise(k).split()) for k in keywords if k.strip()}, key=len)
        self.longest = max((len(w) for w in words), default=0)
        if not words:
            self._pattern: re.Pattern[str] | None = None
            return
        # Longest first, so the alternation prefers "credit card" over "credit".
        alternatives = "|".join(
            r"\s+".join(re.escape(part) for part in w.split()) for w in reversed(words)
        )
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")

    def search(self, text: str) -> bool:
        """Whether ``text`` contains a keyword."""
        return self._pattern is not None and self._pattern.search(normalise(text)) is not None


class TopicClassifier:
    """Whether a text is about one of the valid topics (see the module's docstring)."""

    def __init__(self, topics: Iterable[str]) -> None:
        self.topics = [t for t in topics if t.strip()]
        self._stems: set[str] = set()
        for topic in self.topics:
            self._stems |= content_stems(topic)

    def on_topic(self, text: str) -> bool:
        """True when ``text`` shares a content word with a topic, or has no content word."""
        stems = content_stems(text)
        return not stems or not self._stems or bool(stems & self._stems)
