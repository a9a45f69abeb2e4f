"""Fetching image links for a provider that takes only bytes (Bedrock Converse).

The gateway fetches nothing a client names unless a provider needs the bytes: every
other image-taking provider gets the link and fetches it on its side. When it must, a
client's URL becomes a request from inside the cluster, so the fetch is fenced:

- ``https://`` only, no redirects (a redirect could lead anywhere; send the final URL);
- the host must resolve to public addresses only (:func:`~.media.is_public_address`):
  the addresses are checked by the connection's own resolver, so the address connected
  to is the address checked (no second lookup that DNS could answer differently), and a
  host given as an IP literal is checked as written; cluster Pods, Services, the node
  and cloud metadata endpoints (169.254.169.254) are all refused;
- at most :attr:`FetchPolicy.max_bytes` per image (3.75 MB, Bedrock's own limit), at
  most :data:`MAX_IMAGES` links per request, within :attr:`FetchPolicy.timeout_seconds`;
- straight to the host, never through ``HTTPS_PROXY``, with no credentials or cookies;
- the bytes must be a PNG, JPEG, GIF or WebP image (judged by their signature).

Every refusal is the client's to fix: a 400 naming the image's place in the request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver

from modelport.gateway.errors import GatewayError, invalid
from modelport.gateway.media import Fetched, Image, is_public_address, sniff_format

MAX_IMAGES = 20
"""Links fetched for one request (Bedrock takes at most 20 images a request)."""
USER_AGENT = "modelport-gateway (image fetch)"


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """The fences of :class:`ImageFetcher`; the defaults are the production ones."""

    max_bytes: int = 3_750_000
    timeout_seconds: float = 10.0
    https_only: bool = True
    public_only: bool = True
    """Tests on loopback turn this off; nothing in the gateway's config can."""


class _NotPublicError(OSError):
    """A host that resolves to no public address."""


class _PublicResolver(ThreadedResolver):
    """The system resolver, keeping only public addresses."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        public = [r for r in results if is_public_address(r["host"])]
        if not public:
            raise _NotPublicError(f"{host} resolves to no public address")
        return public


class ImageFetcher:
    """Fetches image links under a :class:`FetchPolicy`; one session, opened on first use."""

    def __init__(self, policy: FetchPolicy | None = None) -> None:
        self.policy = policy or FetchPolicy()
        self._session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        """Close the session (at shutdown)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def fetch_all(self, images: list[Image], into: dict[str, Fetched]) -> None:
        """Fetch every link not in ``into`` yet, concurrently, and add it there."""
        todo = {i.url: i for i in images if i.url not in into}
        if len(todo) > MAX_IMAGES:
            raise invalid(
                next(iter(todo.values())).param,
                f"at most {MAX_IMAGES} image links per request; send the others as data: URLs",
            )
        fetched = await asyncio.gather(*(self.fetch(i) for i in todo.values()))
        into.update(zip(todo, fetched, strict=True))

    async def fetch(self, image: Image) -> Fetched:
        """One image's bytes; any failure is a 400 about that image."""
        policy = self.policy
        parts = urlsplit(image.url)
        if parts.scheme != "https" and (policy.https_only or parts.scheme != "http"):
            raise invalid(image.param, "the gateway fetches image links over https:// only")
        if policy.public_only and _is_non_public_literal(parts.hostname or ""):
            raise _not_public(image)
        try:
            async with self.session.get(
                image.url,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=policy.timeout_seconds),
                headers={"user-agent": USER_AGENT, "accept": "image/*"},
            ) as response:
                return await self._read(image, response)
        except TimeoutError:
            raise invalid(
                image.param,
                f"the image link did not answer within {policy.timeout_seconds:g}s; "
                "send the image as a data: URL",
            ) from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, _NotPublicError):
                raise _not_public(image) from None
            raise _unreachable(image, exc) from None
        except aiohttp.ClientError as exc:
            raise _unreachable(image, exc) from None

    async def _read(self, image: Image, response: aiohttp.ClientResponse) -> Fetched:
        limit = self.policy.max_bytes
        if 300 <= response.status < 400:
            raise invalid(image.param, "the image link redirects; send the URL it redirects to")
        if response.status >= 400:
            raise invalid(image.param, f"the image link answered HTTP {response.status}")
        if response.content_length is not None and response.content_length > limit:
            raise _too_large(image, limit)
        data = bytearray()
        async for chunk in response.content.iter_chunked(65536):
            data += chunk
            if len(data) > limit:
                raise _too_large(image, limit)
        media_type = sniff_format(bytes(data[:16]))
        if media_type is None:
            raise invalid(image.param, "the image link's bytes are not a PNG, JPEG, GIF or WebP")
        return Fetched(media_type, bytes(data))

    @property
    def session(self) -> aiohttp.ClientSession:
        """The fetch session; its resolver enforces the public-address rule."""
        if self._session is None:
            resolver: Any = _PublicResolver() if self.policy.public_only else ThreadedResolver()
            connector = aiohttp.TCPConnector(
                resolver=resolver, use_dns_cache=False, force_close=True, limit=64
            )
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session


def _is_non_public_literal(host: str) -> bool:
    # aiohttp connects to an IP literal without asking the resolver: check it here.
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return not is_public_address(host.strip("[]"))


def _not_public(image: Image) -> GatewayError:
    return invalid(
        image.param,
        "the image link's host is not a public address; the gateway does not fetch from "
        "inside the cluster or private networks: send the image as a data: URL",
    )


def _too_large(image: Image, limit: int) -> GatewayError:
    return invalid(image.param, f"the image is larger than {limit} bytes; send a smaller one")


def _unreachable(image: Image, exc: Exception) -> GatewayError:
    return invalid(
        image.param,
        f"the gateway could not fetch the image link ({type(exc).__name__}); check the URL "
        "or send the image as a data: URL",
    )
