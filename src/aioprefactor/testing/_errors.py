"""Error bodies in the API's shape, and the exception that carries one out of an operation."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "invalid_action",
    413: "request_too_large",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


def code_for(status: int) -> str:
    """Return the API error code conventionally sent with `status`."""
    if status in _CODES:
        return _CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def error_body(
    status: int,
    message: str,
    *,
    code: str | None = None,
    errors: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Build an error body: `{"status": "error", "code", "message", "errors"?}`."""
    body: dict[str, Any] = {
        "status": "error",
        "code": code if code is not None else code_for(status),
        "message": message,
    }
    if errors is not None:
        body["errors"] = errors
    return body


class ApiError(Exception):
    """An error answer: the operation stops and the API replies with this status and body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        errors: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(status, message, code=code, errors=errors)


def not_found(kind: str, ident: str) -> ApiError:
    """Return the 404 for an unknown instance or span."""
    return ApiError(404, f"{kind} {ident!r} not found")


def invalid_action(message: str) -> ApiError:
    """Return the 409 for a transition the state machine does not allow."""
    return ApiError(409, message)


def invalid(errors: dict[str, list[str]]) -> ApiError:
    """Return the 422 for a body whose fields failed validation."""
    return ApiError(422, "the request body is invalid", errors=errors)
