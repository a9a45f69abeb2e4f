"""Errors a client can see: OpenAI-shaped JSON with the reference service's error codes.

Every failure the gateway reports goes through :class:`GatewayError`, so a client always
gets ``{"error": {"message", "type", "param", "code"}, "error_code", "message"}`` — the
``error`` object is what the OpenAI SDKs parse, the top-level pair is what clients of the
reference service read.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

import orjson

BAD_REQUEST = "BAD_REQUEST"
INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
ENDPOINT_NOT_FOUND = "ENDPOINT_NOT_FOUND"
REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"
UNAUTHENTICATED = "UNAUTHENTICATED"
PERMISSION_DENIED = "PERMISSION_DENIED"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
TEMPORARILY_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"
INTERNAL_ERROR = "INTERNAL_ERROR"
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


class GatewayError(Exception):
    """A failure with the HTTP status and error code the client should see."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        allow: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        reason: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.allow = allow
        """For 405: the method the route accepts (the ``Allow`` header)."""
        self.headers = headers
        """Extra response headers (``WWW-Authenticate`` of a 401, ``Retry-After``)."""
        self.reason = reason
        """A machine-readable reason beside the code (a guardrail's ``pii:EMAIL``), in the
        body as ``reason`` when set."""

    def payload(self) -> dict[str, Any]:
        """The JSON body, as a dict (also used as an SSE error event mid-stream)."""
        kind = _TYPES.get(
            self.status, "api_error" if self.status >= 500 else "invalid_request_error"
        )
        payload: dict[str, Any] = {
            "error": {
                "message": self.message,
                "type": kind,
                "param": self.param,
                "code": self.code,
            },
            "error_code": self.code,
            "message": self.message,
        }
        if self.reason is not None:
            payload["error"]["reason"] = payload["reason"] = self.reason
        return payload

    def body(self) -> bytes:
        """The serialised JSON body."""
        return orjson.dumps(self.payload())


def invalid(param: str, message: str) -> GatewayError:
    """A 400 INVALID_PARAMETER_VALUE naming the parameter."""
    return GatewayError(400, INVALID_PARAMETER_VALUE, message, param=param)


def from_upstream_status(
    status: int, provider: str, entity: str, detail: str, *, retry_after: str | None = None
) -> GatewayError:
    """Map a provider's HTTP error to the status and code our client should see.

    Authentication failures at the provider are the endpoint's misconfiguration, not the
    caller's: they become 502 so an SDK does not tell the caller their own key is wrong.
    A 429's or 503's ``Retry-After`` (the provider's own word on when to come back) is
    passed on, when it is a valid value, so SDKs that honour it wait as long as the
    provider asked (and fallback may retry the same entity once after a short one).
    """
    where = f"{provider} (served entity {entity!r})"
    if status in (401, 403):
        return GatewayError(
            502,
            PERMISSION_DENIED,
            f"{where} rejected the gateway's credentials (HTTP {status}): check the Secret "
            f"that the entity's provider config refers to. Provider said: {detail}",
        )
    if status == 404:
        return GatewayError(
            404,
            RESOURCE_DOES_NOT_EXIST,
            f"{where} answered 404: check the model name, deployment or base URL. "
            f"Provider said: {detail}",
        )
    if status == 429:
        value = valid_retry_after(retry_after)
        return GatewayError(
            429,
            REQUEST_LIMIT_EXCEEDED,
            f"{where} is rate limiting: {detail}",
            headers=((b"retry-after", value.encode()),) if value else (),
        )
    if status in (408, 504):
        return GatewayError(504, DEADLINE_EXCEEDED, f"{where} timed out: {detail}")
    if status == 413:
        return GatewayError(413, BAD_REQUEST, f"{where}: request too large: {detail}")
    if 400 <= status < 500:
        return GatewayError(400, BAD_REQUEST, f"{where} rejected the request: {detail}")
    if status in (503, 529):
        # A 503's Retry-After too (RFC 9110 10.2.3): fallback retries on a short one.
        value = valid_retry_after(retry_after)
        return GatewayError(
            503,
            TEMPORARILY_UNAVAILABLE,
            f"{where} is unavailable: {detail}",
            headers=((b"retry-after", value.encode()),) if value else (),
        )
    return GatewayError(502, INTERNAL_ERROR, f"{where} failed (HTTP {status}): {detail}")


def valid_retry_after(value: str | None) -> str | None:
    """``value`` when it is a ``Retry-After`` HTTP allows (delay-seconds or an HTTP-date),
    else None: an upstream's header is relayed only in a shape no client can trip on."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit() and len(value) <= 10:
        return value
    if len(value) > 40 or not value.isascii() or not value.isprintable():
        return None
    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return value
