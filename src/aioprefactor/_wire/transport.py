"""The HTTP layer: one aiohttp session, deadlines, and retries that are safe to make.

Every mutating request carries its idempotency key in the body, and the body is encoded
once, so each retry sends the very same bytes: a retry after a lost response cannot
apply a second effect.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec
import yarl

from aioprefactor._version import __version__
from aioprefactor._wire.codec import decode, decode_error, scrub, snippet
from aioprefactor._wire.errors import (
    PrefactorApiError,
    PrefactorAuthError,
    PrefactorConflictError,
    PrefactorError,
    PrefactorNotFoundError,
    PrefactorRateLimitError,
    PrefactorResponseContractError,
    PrefactorRetryExhaustedError,
    PrefactorServerError,
    PrefactorTimeoutError,
    PrefactorTransportError,
    PrefactorValidationError,
)

if TYPE_CHECKING:
    from aioprefactor._wire.config import Settings

T = TypeVar("T")

log: Final = logging.getLogger("aioprefactor")

SDK_HEADER: Final = f"aioprefactor@{__version__}"
_READ_CHUNK: Final = 64 * 1024
# A persistent call is bounded by its deadline; this only stops one that a server keeps
# answering at once (a Retry-After of 0) from hammering it.
_PERSISTENT_ATTEMPTS: Final = 100
# Unreserved characters only, not starting with a dot: such an id is its own encoding.
_PLAIN_ID: Final = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*")
# aiohttp warns (a ResourceWarning) about bodies over 1 MiB given as bytes; a file-like
# body is streamed instead, without the warning (an error under ``-W error``).
_LARGE_BODY: Final = 1024 * 1024


def path_segment(value: object, name: str) -> str:
    """Percent-encode an id as exactly one URL path segment.

    Raises:
        TypeError: ``value`` is not a str.
        ValueError: ``value`` is empty.
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    if _PLAIN_ID.fullmatch(value) is not None:
        return value  # the common case: nothing to encode
    encoded = quote(value, safe="")
    # "." and ".." are unreserved, so quote() keeps them, yet as a whole segment they
    # would move the path; encoded, they are plain data.
    if encoded in {".", ".."}:
        encoded = encoded.replace(".", "%2E")
    return encoded


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def api_error(
    status: int,
    body: bytes,
    *,
    method: str,
    path: str,
    operation: str,
    retry_after: float | None,
    secret: str | None = None,
) -> PrefactorError:
    """Turn an error response into the matching exception."""
    error = decode_error(body)
    if error is None:
        return PrefactorResponseContractError(
            "error response is not a JSON error body",
            status_code=status,
            body_snippet=snippet(body, secret),
            operation=operation,
        )
    message = scrub(error.message, secret) or f"HTTP {status}"
    code = scrub(error.code, secret)
    if status in {400, 422}:
        return PrefactorValidationError(
            message,
            status_code=status,
            code=code,
            method=method,
            path=path,
            errors=error.errors,
        )
    if status == 429:
        return PrefactorRateLimitError(
            message,
            status_code=status,
            code=code,
            method=method,
            path=path,
            retry_after=retry_after,
        )
    kind = _ERROR_BY_STATUS.get(
        status, PrefactorServerError if status >= 500 else PrefactorApiError
    )
    return kind(message, status_code=status, code=code, method=method, path=path)


_ERROR_BY_STATUS: Final[dict[int, type[PrefactorApiError]]] = {
    401: PrefactorAuthError,
    403: PrefactorAuthError,
    404: PrefactorNotFoundError,
    409: PrefactorConflictError,
}


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt: the error, and how long the server asked us to wait, if it did."""

    error: PrefactorError
    retry_after: float | None = None

    @property
    def connection_refused(self) -> bool:
        """Whether nothing listens at the API's address (the API is down, not slow)."""
        cause = self.error.__cause__
        while cause is not None:
            if isinstance(cause, ConnectionRefusedError):
                return True
            cause = cause.__cause__ or cause.__context__
        return False


_CLOSING: set[asyncio.Task[None]] = set()


class Transport:
    """Sends requests through one session and decodes the answers."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._base = str(settings.api_url)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=settings.total_timeout,
            sock_connect=settings.connect_timeout,
            sock_read=settings.request_timeout,
        )

    def url(self, path: str) -> yarl.URL:
        """The URL of an API path whose ids are already percent-encoded."""
        return yarl.URL(self._base + path, encoded=True)

    def open(self) -> None:
        """Create the session; it belongs to the running event loop."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._session = aiohttp.ClientSession(
            headers={
                "Authorization": f"Bearer {self._secret()}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "X-Prefactor-SDK": SDK_HEADER,
            },
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=self._settings.max_connections),
            trust_env=False,
        )

    async def close(self) -> None:
        """Close the session and its connections."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _secret(self) -> str:
        return self._settings.api_token.reveal()

    def close_soon(self) -> None:
        """Close the session from sync code: on its loop if that loop still runs."""
        session, loop = self._session, self._loop
        self._session = None
        if session is None or loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task = loop.create_task(session.close())
            _CLOSING.add(task)
            task.add_done_callback(_CLOSING.discard)
        elif loop.is_running():
            asyncio.run_coroutine_threadsafe(session.close(), loop)

    def _check_loop(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            raise RuntimeError("the client's session is not open")
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError(
                "this Client was opened on another event loop; a client (and its "
                "aiohttp session) belongs to one loop: create one Client per loop"
            )
        return session

    async def call(
        self,
        method: str,
        path: str,
        body: bytes | None,
        decoder: msgspec.json.Decoder[T],
        operation: str,
        *,
        persistent: bool = False,
    ) -> T:
        """Send a request, retrying what is safe to retry, and decode the success body.

        Retryable failures are retried ``max_retries`` times, or, when ``persistent``,
        for as long as the call's total deadline allows.

        Raises:
            ValueError: The body is over ``max_request_bytes``; nothing was sent.
            PrefactorApiError: A non-retryable error status (or a subclass of it).
            PrefactorResponseContractError: A response the contract does not allow.
            PrefactorRetryExhaustedError: Every attempt failed with a retryable error.
        """
        settings = self._settings
        self.check_size(body, operation)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.total_timeout
        attempt = 0
        while True:
            attempt += 1
            outcome = await self.attempt(
                method, path, body, decoder, operation, deadline - loop.time(), attempt
            )
            if not isinstance(outcome, Failure):
                return outcome
            error = outcome.error
            if not self.retryable(error):
                raise error
            if attempt > (_PERSISTENT_ATTEMPTS if persistent else settings.max_retries):
                raise PrefactorRetryExhaustedError(
                    f"{operation} failed", last_error=error, attempts=attempt
                )
            delay = self.delay(attempt, outcome.retry_after)
            if loop.time() + delay >= deadline:
                raise PrefactorRetryExhaustedError(
                    f"{operation} failed within its total deadline of {settings.total_timeout:g} s",
                    last_error=error,
                    attempts=attempt,
                )
            await asyncio.sleep(delay)

    def check_size(self, body: bytes | None, operation: str) -> None:
        """Refuse a body over ``max_request_bytes`` before anything is sent.

        Raises:
            ValueError: The body is too large.
        """
        limit = self._settings.max_request_bytes
        if body is not None and len(body) > limit:
            raise ValueError(
                f"{operation}: the request body is {len(body)} bytes, over the "
                f"max_request_bytes limit of {limit}"
            )

    async def attempt(
        self,
        method: str,
        path: str,
        body: bytes | None,
        decoder: msgspec.json.Decoder[T],
        operation: str,
        budget: float,
        number: int = 1,
    ) -> T | Failure:
        """Send a request once, within ``budget`` seconds; the decoded answer or why not.

        Never raises a PrefactorError: a failed attempt is returned as a :class:`Failure`,
        so the caller decides whether and when to try again.
        """
        session = self._check_loop()
        loop = asyncio.get_running_loop()
        started = loop.time()
        settings = self._settings
        # Not aiohttp's "connect", which also counts the wait for a pooled connection:
        # under load a request may queue for the pool well past connect_timeout. The
        # queue is bounded by the call's deadline; once sent, by request_timeout.
        timeout = aiohttp.ClientTimeout(
            total=max(budget, 0.001),
            sock_connect=settings.connect_timeout,
            sock_read=settings.request_timeout,
        )
        retry_after: float | None = None
        try:
            status, payload, retry_after = await self._send(
                session, method, self.url(path), body, timeout, operation
            )
            if status < 300:
                # The decoder itself on the hot path; decode() again only to explain a
                # failure as a contract error.
                try:
                    result = decoder.decode(payload)
                except (msgspec.DecodeError, UnicodeDecodeError):
                    result = decode(
                        decoder,
                        payload,
                        operation=operation,
                        status=status,
                        secret=self._secret(),
                    )
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "%s %s -> %d (attempt %d, %.1f ms)",
                        method,
                        path,
                        status,
                        number,
                        (loop.time() - started) * 1000,
                    )
                return result
            error: PrefactorError = api_error(
                status,
                payload,
                method=method,
                path=path,
                operation=operation,
                retry_after=retry_after,
                secret=self._secret(),
            )
        except PrefactorError as exc:
            error = exc
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s -> %s (attempt %d, %.1f ms)",
                method,
                path,
                getattr(error, "status_code", None) or error,
                number,
                (loop.time() - started) * 1000,
            )
        return Failure(error, retry_after)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: yarl.URL,
        body: bytes | None,
        timeout: aiohttp.ClientTimeout,
        operation: str,
    ) -> tuple[int, bytes, float | None]:
        cap = self._settings.max_response_bytes
        try:
            data = io.BytesIO(body) if body is not None and len(body) > _LARGE_BODY else body
            async with session.request(method, url, data=data, timeout=timeout) as response:
                status = response.status
                retry_after = (
                    parse_retry_after(response.headers.get("Retry-After"))
                    if status == 429 or status >= 500
                    else None
                )
                length = response.content_length
                if length is not None and length > cap:
                    raise PrefactorResponseContractError(
                        f"response of {length} bytes is over the {cap}-byte limit",
                        status_code=status,
                        operation=operation,
                    )
                # Content-Length counts the bytes on the wire; aiohttp decompresses a
                # gzip or deflate body as it reads, so only an unencoded one is bounded by it.
                encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
                if length is not None and encoding == "identity":
                    return status, await response.read(), retry_after
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(_READ_CHUNK):
                    size += len(chunk)
                    if size > cap:
                        raise PrefactorResponseContractError(
                            f"response is over the {cap}-byte limit",
                            status_code=status,
                            body_snippet=snippet(chunks[0] if chunks else chunk, self._secret()),
                            operation=operation,
                        )
                    chunks.append(chunk)
                return status, b"".join(chunks), retry_after
        except TimeoutError as exc:
            raise PrefactorTimeoutError(
                f"{method} {url.raw_path}: no answer within the time allowed"
            ) from exc
        except aiohttp.ClientError as exc:
            raise PrefactorTransportError(
                f"{method} {url.raw_path}: {type(exc).__name__}: {exc}"
            ) from exc
        except OSError as exc:
            raise PrefactorTransportError(
                f"{method} {url.raw_path}: {type(exc).__name__}: {exc}"
            ) from exc

    def retryable(self, error: PrefactorError) -> bool:
        """Whether a failed attempt is worth sending again."""
        if isinstance(error, PrefactorTransportError):
            return True
        status = getattr(error, "status_code", None)
        return status is not None and status in self._settings.retry_statuses

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: the server's word, or backoff."""
        settings = self._settings
        if retry_after is not None:
            # The server's word wins over the backoff's maximum; only its own cap bounds it.
            return min(retry_after, settings.retry_after_cap)
        # The exponent stops growing long after the ceiling is reached: no float overflow.
        ceiling = min(settings.backoff_max, settings.backoff_initial * 2.0 ** min(attempt - 1, 64))
        return ceiling / 2 + random.random() * ceiling / 2  # noqa: S311 - jitter, not crypto
