"""The exceptions aioprefactor raises.

Every error the library raises on its own account derives from one root::

    PrefactorError
    ├── PrefactorApiError                   the API answered with an error status
    │   ├── PrefactorAuthError              401, 403
    │   ├── PrefactorNotFoundError          404
    │   ├── PrefactorValidationError        400, 422 (``.errors`` maps fields to messages)
    │   ├── PrefactorConflictError          409, e.g. an invalid state transition
    │   ├── PrefactorRateLimitError         429 (``.retry_after`` in seconds, if sent)
    │   └── PrefactorServerError            5xx
    ├── PrefactorResponseContractError      a response the contract does not allow
    ├── PrefactorTransportError             the request did not get an answer
    │   └── PrefactorTimeoutError           ... in time (also a ``TimeoutError``)
    └── PrefactorRetryExhaustedError        retries spent (``.last_error``, ``.attempts``)

Local mistakes (a bad argument, a status outside the allowed set, a payload that is
not JSON) are plain ``ValueError`` / ``TypeError``, raised before anything is sent.
No message or attribute of these errors ever holds the API token.
"""

from __future__ import annotations

from typing import Any


class PrefactorError(Exception):
    """Base class of every error raised by aioprefactor."""


class PrefactorApiError(PrefactorError):
    """The API answered with an error status.

    Attributes:
        status_code: The HTTP status.
        code: The API's error code (``"unknown"`` when the body had none).
        message: The API's message.
        method: The HTTP method of the request.
        path: The request path.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str = "unknown",
        method: str = "",
        path: str = "",
    ) -> None:
        self.status_code = status_code
        self.code = code
        self.message = message
        self.method = method
        self.path = path
        where = f" ({method} {path})" if method else ""
        super().__init__(f"HTTP {status_code} {code}: {message}{where}")


class PrefactorAuthError(PrefactorApiError):
    """The token was missing, wrong or not allowed to do this (401, 403)."""


class PrefactorNotFoundError(PrefactorApiError):
    """The resource does not exist (404)."""


class PrefactorValidationError(PrefactorApiError):
    """The API rejected the request's content (400, 422).

    Attributes:
        errors: The API's field errors, keyed by field path.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str = "unknown",
        method: str = "",
        path: str = "",
        errors: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code, method=method, path=path)
        self.errors: dict[str, Any] = errors or {}


class PrefactorConflictError(PrefactorApiError):
    """The request conflicts with the resource's state (409), e.g. finishing twice."""


class PrefactorRateLimitError(PrefactorApiError):
    """The API is rate limiting this client (429).

    Attributes:
        retry_after: Seconds the API asked to wait, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str = "unknown",
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code, method=method, path=path)
        self.retry_after = retry_after


class PrefactorServerError(PrefactorApiError):
    """The API failed on its side (5xx)."""


class PrefactorResponseContractError(PrefactorError):
    """The response does not match the API contract (not JSON, wrong shape, too big).

    Attributes:
        status_code: The HTTP status of the response, if one arrived.
        body_snippet: The start of the body, whitespace collapsed, for diagnosis.
        operation: The operation whose response it was, e.g. ``agent_instances.start``.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        body_snippet: str | None = None,
        operation: str = "",
    ) -> None:
        self.status_code = status_code
        self.body_snippet = body_snippet
        self.operation = operation
        parts = [f"{operation}: {message}" if operation else message]
        if status_code is not None:
            parts.append(f"(HTTP {status_code})")
        if body_snippet:
            parts.append(f"body: {body_snippet!r}")
        super().__init__(" ".join(parts))


class PrefactorTransportError(PrefactorError):
    """The request got no answer: connection refused, reset or dropped."""


class PrefactorTimeoutError(PrefactorTransportError, TimeoutError):
    """The request got no answer in time."""


class PrefactorRetryExhaustedError(PrefactorError):
    """Every attempt failed with a retryable error.

    Attributes:
        last_error: The error of the last attempt.
        attempts: How many attempts were made.
    """

    def __init__(self, message: str, *, last_error: PrefactorError, attempts: int) -> None:
        self.last_error = last_error
        self.attempts = attempts
        super().__init__(f"{message} after {attempts} attempt(s); last error: {last_error}")
