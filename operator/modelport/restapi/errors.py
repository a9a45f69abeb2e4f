"""Errors in the reference service's shape: ``{"error_code": …, "message": …}`` with its
HTTP status, which its SDKs turn into typed exceptions (``NotFound``,
``PermissionDenied``, ``ResourceConflict`` …) by status and code.

Messages name the field, the value (never a secret one) and the fix.
"""

from __future__ import annotations

from typing import Any

from modelport.gateway.errors import (
    BAD_REQUEST,
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    PERMISSION_DENIED,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
    UNAUTHENTICATED,
)

RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
RESOURCE_CONFLICT = "RESOURCE_CONFLICT"
NOT_IMPLEMENTED = "NOT_IMPLEMENTED"

__all__ = [
    "BAD_REQUEST",
    "INTERNAL_ERROR",
    "INVALID_PARAMETER_VALUE",
    "NOT_IMPLEMENTED",
    "PERMISSION_DENIED",
    "RESOURCE_ALREADY_EXISTS",
    "RESOURCE_CONFLICT",
    "RESOURCE_DOES_NOT_EXIST",
    "TEMPORARILY_UNAVAILABLE",
    "UNAUTHENTICATED",
    "ApiError",
    "endpoint_not_found",
    "invalid",
]


class ApiError(Exception):
    """A failure with the status and ``error_code`` the client should see."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error_code": self.code, "message": self.message}


def invalid(message: str) -> ApiError:
    """A 400 ``INVALID_PARAMETER_VALUE``."""
    return ApiError(400, INVALID_PARAMETER_VALUE, message)


def endpoint_not_found(name: str, workspace: str) -> ApiError:
    """The service's 404 for an endpoint that does not exist."""
    return ApiError(
        404,
        RESOURCE_DOES_NOT_EXIST,
        f"Endpoint with name '{name}' does not exist in workspace (namespace) '{workspace}'; "
        "list the workspace's endpoints with GET /api/2.0/serving-endpoints",
    )
