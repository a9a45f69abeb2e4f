"""Personally identifiable information in text: clear recognisers with checksums.

Why not a library: presidio-analyzer, the well-kept choice, runs every text through a
spaCy NLP pipeline whose model no package registry reachable here ships (and whose
URL recogniser downloads the public-suffix list at run time); its pattern recognisers
are regular expressions plus the same checksums as below, at several times the CPU per
kilobyte. So the recognisers are ours, each a candidate pattern plus a validity check
that rejects what only looks like PII:

==============  ==============================================================
kind            found when
==============  ==============================================================
``EMAIL``       ``local@domain.tld`` (ASCII; TLD of 2+ letters)
``CREDIT_CARD`` 13-19 digits, optionally grouped by single spaces or dashes, with
                a card network's leading digits and a valid Luhn check digit
``IBAN``        country code, 2 check digits and the country's registered
                length of letters/digits (groups of 4 may be spaced), mod-97 = 1
``IP_ADDRESS``  IPv4 dotted quad (each part 0-255) or IPv6 (as Python's
                ``ipaddress`` parses it, with a digit and 3+ hex digits given)
``US_SSN``      ``AAA-GG-SSSS`` or with spaces; not area 000, 666 or 9xx, group
                00 or serial 0000 (bare 9-digit runs are ids far more often)
``PHONE``       ``+``/``00`` international numbers, or national numbers written
                with separators (``(212) 555-0187``, ``212-555-0187``), that
                libphonenumber's metadata (phonenumberslite, offline) says are
                valid numbers (national ones for :data:`DEFAULT_REGION`)
==============  ==============================================================

Near misses that pass: numbers in prose (``1 000 000``, ``2024 2025``), dates
(``2024-01-15``, ``15/01/2024``), versions (``1.2.3``, ``v1.2.3.4``), order ids
(``ORD-12345678``, a bare ``5551234567``), times (``12:30:45``), cards failing Luhn,
IBANs failing mod-97. Every finding is at most :data:`MAX_FINDING_CHARS` long, which is
what bounds the look-behind of streamed output (:mod:`.stream`).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

import phonenumbers

PiiKind = Literal["EMAIL", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "US_SSN", "PHONE"]
KINDS: tuple[PiiKind, ...] = ("EMAIL", "IBAN", "CREDIT_CARD", "IP_ADDRESS", "US_SSN", "PHONE")
"""In priority order: where two findings overlap, the earlier kind wins."""

DEFAULT_REGION = "US"
"""The region whose national phone formats are recognised without a ``+``."""

MAX_FINDING_CHARS = 64
"""No recogniser matches more (an e-mail address is cut at 64 characters of local part
plus a bounded domain; the longest IBAN written in groups is 42)."""

# A finding never touches a letter/digit (or, for digit kinds, a dash or dot) on either
# side: "ORD-12345678" and "v1.2.3.4" are not numbers of their own.
# ASCII classes (a third faster than Unicode ones), and each look-behind placed after the
# first character, so that the engine's scan for that character skips most of the text.
_A = re.ASCII
_EMAIL = re.compile(
    r"[A-Za-z0-9._%+-](?<![\w.%+-][A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?\.){1,4}[A-Za-z]{2,12}(?![\w-])",
    _A,
)
_CARD = re.compile(r"[0-9](?<![\w.-][0-9])(?:[ -]?[0-9]){12,18}(?![\w-]|\.[0-9])", _A)
_IBAN = re.compile(r"[A-Z](?<![\w-][A-Z])[A-Z][0-9]{2}(?: ?[A-Z0-9]){10,30}(?![a-z0-9])", _A)
_IPV4 = re.compile(r"[0-9](?<![\w.][0-9])[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?![\w-]|\.[0-9])", _A)
_IPV6 = re.compile(r"[0-9A-Fa-f:](?<![\w:.][0-9A-Fa-f:])[0-9A-Fa-f:.]{2,44}(?![\w:])", _A)
_SSN = re.compile(
    r"([0-9](?<![\w.-][0-9])[0-9]{2})([- ])([0-9]{2})\2([0-9]{4})(?![\w-]|\.[0-9])", _A
)
# A run of digits, single separators and parentheses, ending in a digit; libphonenumber
# then judges whether the run is a number.
_PHONE = re.compile(
    r"[+(0-9](?<![\w+.-][+(0-9])(?:[0-9]|[ .-](?=[0-9(])|\(|\)(?=[ .-]?[0-9])){5,24}"
    r"(?<=[0-9])(?![\w-]|\.[0-9])",
    _A,
)
_DATE = re.compile(
    r"[0-9]{4}[./-][0-9]{1,2}[./-][0-9]{1,2}|[0-9]{1,2}[./-][0-9]{1,2}[./-][0-9]{2,4}"
)
_HAS_DIGIT = re.compile(r"[0-9]")

# The registered IBAN length of each country (SWIFT's IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of PII: its kind and where it is (``text[start:end]``); never its value
    outside this process's memory."""

    kind: PiiKind
    start: int
    end: int


def find(text: str) -> list[Finding]:
    """Every finding in ``text``, in order, without overlaps."""
    found: list[Finding] = []
    if "@" in text:
        found.extend(Finding("EMAIL", m.start(), m.end()) for m in _EMAIL.finditer(text))
    if _HAS_DIGIT.search(text) is not None:
        found.extend(_ibans(text))
        found.extend(_cards(text))
        found.extend(_ips(text))
        found.extend(_ssns(text))
        found.extend(_phones(text))
    if len(found) < 2:
        return found
    return _without_overlaps(found)


def mask(text: str, findings: list[Finding] | None = None) -> str:
    """``text`` with each finding replaced by its placeholder (``[EMAIL]``, ...)."""
    findings = find(text) if findings is None else findings
    if not findings:
        return text
    parts: list[str] = []
    at = 0
    for f in findings:
        parts.append(text[at : f.start])
        parts.append(placeholder(f.kind))
        at = f.end
    parts.append(text[at:])
    return "".join(parts)


def placeholder(kind: PiiKind) -> str:
    """What a finding of ``kind`` is replaced with."""
    return f"[{kind}]"


def luhn_valid(digits: str) -> bool:
    """The Luhn check of a string of digits (card numbers)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616's check of a compact, upper-case IBAN: registered length and mod 97 = 1."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


# -- recognisers ------------------------------------------------------------------------


def _cards(text: str) -> list[Finding]:
    out = []
    for m in _CARD.finditer(text):
        raw = m.group()
        if " " in raw and "-" in raw:
            continue  # mixed separators: not how a card number is written
        digits = raw.replace(" ", "").replace("-", "")
        if _card_network(digits) and len(set(digits)) > 1 and luhn_valid(digits):
            out.append(Finding("CREDIT_CARD", m.start(), m.end()))
    return out


def _card_network(digits: str) -> bool:
    """Whether the leading digits and length are those of a card network."""
    n = len(digits)
    first, two = digits[0], int(digits[:2])
    if first == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= two <= 55 or 2221 <= int(digits[:4]) <= 2720:  # Mastercard
        return n == 16
    if two in (34, 37):  # American Express
        return n == 15
    if two in (36, 38, 30):  # Diners Club
        return 14 <= n <= 19
    if first == "6" or two == 35:  # Discover, UnionPay, Maestro, JCB
        return 16 <= n <= 19
    return first == "5" and 12 <= n <= 19  # Maestro 50, 56-58


def _ibans(text: str) -> list[Finding]:
    out = []
    for m in _IBAN.finditer(text):
        expected = IBAN_LENGTHS.get(m.group()[:2])
        if expected is None:
            continue
        # The pattern is greedy over spaced groups: take exactly the country's length.
        taken, end = 0, m.start()
        raw = m.group()
        for i, ch in enumerate(raw):
            if ch != " ":
                taken += 1
            if taken == expected:
                end = m.start() + i + 1
                break
        else:
            continue
        if end < len(text) and text[end].isalnum() and text[end - 1] != " ":
            continue  # runs on into a longer word
        compact = text[m.start() : end].replace(" ", "")
        if iban_valid(compact):
            out.append(Finding("IBAN", m.start(), end))
    return out


def _ips(text: str) -> list[Finding]:
    out = []
    if "." in text:
        for m in _IPV4.finditer(text):
            parts = m.group().split(".")
            if all(int(p) <= 255 and (p == "0" or not p.startswith("0")) for p in parts):
                out.append(Finding("IP_ADDRESS", m.start(), m.end()))
    if "::" in text or text.count(":") >= 7:
        for m in _IPV6.finditer(text):
            raw = m.group().rstrip(".")  # a sentence's full stop
            if raw.count(":") < 2 or sum(c not in ":." for c in raw) < 3:
                continue  # not IPv6, or "::1"-like fragments
            if not any(c.isdigit() for c in raw):
                continue  # "a::b" (C++), "dead::beef": hex words, not addresses
            try:
                ipaddress.IPv6Address(raw)
            except ValueError:
                continue
            out.append(Finding("IP_ADDRESS", m.start(), m.start() + len(raw)))
    return out


def _ssns(text: str) -> list[Finding]:
    out = []
    for m in _SSN.finditer(text):
        area, group, serial = m.group(1), m.group(3), m.group(4)
        if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
            continue
        out.append(Finding("US_SSN", m.start(), m.end()))
    return out


def _phones(text: str) -> list[Finding]:
    out = []
    for m in _PHONE.finditer(text):
        raw = m.group()
        digits = sum(c.isdigit() for c in raw)
        if not 7 <= digits <= 15:
            continue
        international = raw.startswith(("+", "00"))
        # A national number must be written like one: grouped, not a bare id or a date.
        if not international and (not any(c in " .-(" for c in raw) or _DATE.fullmatch(raw)):
            continue
        if _valid_phone(raw, international):
            out.append(Finding("PHONE", m.start(), m.end()))
    return out


@functools.lru_cache(maxsize=4096)
def _valid_phone(raw: str, international: bool) -> bool:
    """libphonenumber's verdict (about 30 µs); cached, because a conversation re-sends its
    history, and with it the same numbers, on every turn."""
    try:
        number = phonenumbers.parse(
            "+" + raw[2:] if raw.startswith("00") else raw,
            None if international else DEFAULT_REGION,
        )
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(number))


def _without_overlaps(found: list[Finding]) -> list[Finding]:
    """Keep, of overlapping findings, the one of the kind earlier in :data:`KINDS`."""
    rank = {kind: i for i, kind in enumerate(KINDS)}
    kept: list[Finding] = []
    for f in sorted(found, key=lambda f: (rank[f.kind], f.start)):
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    kept.sort(key=lambda f: f.start)
    return kept
