"""Images in chat messages: what an OpenAI ``image_url`` part holds, told apart once.

An OpenAI image part carries one URL: a ``data:`` URL with the bytes inline (base64), or
a link (``https://``, and for the clouds that read their own storage ``gs://`` or
``s3://``). Each translating provider needs something different from it (Anthropic and
Gemini take both, Bedrock only bytes), so the part is parsed here into an
:class:`Image` that says which it is, and the providers pick what they can send.

Also here, pure and shared with the fetcher: the image formats recognised by their
first bytes (Bedrock must be told the format), and which addresses are public (the
gateway fetches a link only for Bedrock, and never from a non-public address).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from modelport.gateway.errors import invalid

Source = Literal["data", "https", "http", "gs", "s3"]

FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
"""The formats every image-taking provider accepts, by media type (Bedrock's names)."""
EXTENSIONS = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
}


@dataclass(frozen=True, slots=True)
class Image:
    """One image part of a message."""

    param: str
    """Where it is in the request (``messages.1.content.0.image_url.url``), for errors."""
    url: str
    source: Source
    media_type: str | None
    """From a ``data:`` URL; for a link, guessed from its extension (None when unknown)."""
    base64: str | None = None
    """The bytes of a ``data:`` URL, still base64-encoded (no provider needs them decoded)."""

    def require_media_type(self, provider: str, accepted: frozenset[str] | set[str]) -> str:
        """The media type, or a 400 naming the ones ``provider`` accepts."""
        if self.media_type in accepted:
            return str(self.media_type)
        names = ", ".join(sorted(accepted))
        what = repr(self.media_type) if self.media_type else "an unknown type"
        hint = "" if self.source == "data" else " (a link's type is taken from its extension)"
        raise invalid(
            self.param,
            f"{provider} does not take images of {what}{hint}; send one of {names}",
        )


def parse_image_url(url: str, param: str) -> Image:
    """Classify an ``image_url.url``; a malformed ``data:`` URL or unknown scheme is a 400."""
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        media_type, _, encoding = header.lower().partition(";")
        if not comma or encoding.lower() != "base64" or not media_type.startswith("image/"):
            raise invalid(
                param,
                "a data URL image must be 'data:image/<type>;base64,<data>'",
            )
        if not data:
            raise invalid(param, "the data URL holds no image data")
        return Image(param, url, "data", media_type, data)
    scheme = url.partition(":")[0].lower()
    if scheme in ("https", "http", "gs", "s3"):
        path = urlsplit(url).path.lower()
        dot = path.rfind(".")
        guessed = EXTENSIONS.get(path[dot:]) if dot >= 0 else None
        return Image(param, url, scheme, guessed)  # type: ignore[arg-type]
    raise invalid(
        param,
        f"image URL scheme {scheme!r} is not supported; send a data: URL or an https:// link",
    )


def sniff_format(data: bytes) -> str | None:
    """The media type of image bytes by their signature, or None when not one we know."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def is_public_address(address: str) -> bool:
    """Whether an IP address is globally routable: not private, loopback, link-local,
    shared (CGNAT), multicast or reserved; an IPv4-mapped IPv6 address is judged by its
    IPv4 address. Cluster Pod and Service ranges are private in every supported setup."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True, slots=True)
class Fetched:
    """An image link's bytes, fetched by the gateway, and their sniffed media type."""

    media_type: str
    data: bytes
