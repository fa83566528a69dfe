from __future__ import annotations

import asyncio
import gzip
import logging
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from yarl import URL

from aioprefactor import (
    Client,
    ClientState,
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
    __version__,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from aioresponses import aioresponses

BASE = "https://api.example.com"
TOKEN = "tok-secret-7c1d9e2b4a"
INSTANCE_ID = "inst-1"
START_URL = f"{BASE}/api/v1/agent_instance/{INSTANCE_ID}/start"
GET_URL = f"{BASE}/api/v1/agent_instance/{INSTANCE_ID}"
ANY_URL = re.compile(r".*")

INSTANCE: dict[str, Any] = {
    "type": "agent_instance",
    "id": INSTANCE_ID,
    "account_id": "acc-1",
    "agent_id": "agent-1",
    "agent_version_id": "ver-1",
    "environment_id": "env-1",
    "agent_deployment_id": "dep-1",
    "status": "active",
    "inserted_at": "2025-01-02T03:04:05Z",
    "updated_at": "2025-01-02T03:04:05Z",
}
OK: dict[str, Any] = {"status": "success", "details": INSTANCE}


def error_body(code: str, message: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "error", "code": code, "message": message}
    if errors is not None:
        body["errors"] = errors
    return body


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Client]]:
    """Build clients with fast backoff; every one is closed after the test."""
    clients: list[Client] = []

    def make(**kwargs: Any) -> Client:
        options: dict[str, Any] = {
            "api_url": BASE,
            "api_token": TOKEN,
            "backoff_initial": 0.001,
            "backoff_max": 0.002,
            **kwargs,
        }
        client = Client(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the transport's backoff sleeps instead of waiting them out."""
    recorded: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, result: Any = None) -> Any:
        recorded.append(delay)
        return await real_sleep(0, result)

    # The transport's backoff is its only sleep while a mocked request is in flight.
    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    return recorded


def sent(mock: aioresponses, method: str, url: str) -> list[Any]:
    """The calls made to one method and URL, in order."""
    return mock.requests.get((method, URL(url)), [])


def all_sent(mock: aioresponses) -> list[tuple[str, URL]]:
    return [key for key, calls in mock.requests.items() for _ in calls]


# --- headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "call"),
    [
        ("GET", GET_URL, lambda c: c.agent_instances.get(INSTANCE_ID)),
        ("POST", START_URL, lambda c: c.agent_instances.start(INSTANCE_ID)),
    ],
)
async def test_headers_sent(
    mocked: aioresponses,
    make_client: Callable[..., Client],
    method: str,
    url: str,
    call: Callable[[Client], Any],
) -> None:
    """Every request carries the bearer token, JSON content type and accept, and the SDK tag."""
    mocked.add(url, method, payload=OK)
    await call(make_client())
    (request,) = sent(mocked, method, url)
    headers = request.kwargs["headers"]
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json"
    assert headers["Accept"] == "application/json"
    assert headers["X-Prefactor-SDK"] == f"aioprefactor@{__version__}"


async def test_base_path_kept_in_request_url(
    mocked: aioresponses, make_client: Callable[..., Client]
) -> None:
    """A base URL with a path (and a trailing slash) prefixes every API path once."""
    url = "https://api.example.com/prefix/api/v1/agent_instance/inst-1"
    mocked.get(url, payload=OK)
    await make_client(api_url="https://api.example.com/prefix/").agent_instances.get(INSTANCE_ID)
    assert [("GET", URL(url))] == all_sent(mocked)


# --- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        {"exception": aiohttp.ClientConnectionError("refused")},
        {"exception": aiohttp.ServerDisconnectedError()},
        {"exception": aiohttp.ClientOSError(104, "reset")},
        {"exception": ConnectionResetError("reset")},
        {"exception": TimeoutError()},
        {"exception": aiohttp.ServerTimeoutError("slow")},
        {"status": 429, "payload": error_body("rate_limited", "slow down")},
        {"status": 500, "payload": error_body("internal", "boom")},
        {"status": 502, "body": "<html>Bad Gateway</html>", "content_type": "text/html"},
        {"status": 503, "payload": error_body("unavailable", "later")},
        {"status": 504, "body": ""},
    ],
    ids=lambda failure: str(failure.get("status") or type(failure["exception"]).__name__),
)
async def test_retry_sends_the_same_bytes(
    mocked: aioresponses,
    make_client: Callable[..., Client],
    sleeps: list[float],
    failure: dict[str, Any],
) -> None:
    """A retryable failure is retried with the very same body, idempotency key included."""
    mocked.post(START_URL, **failure)
    mocked.post(START_URL, **failure)
    mocked.post(START_URL, payload=OK)
    instance = await make_client().agent_instances.start(INSTANCE_ID)
    assert instance.id == INSTANCE_ID
    bodies = [call.kwargs["data"] for call in sent(mocked, "POST", START_URL)]
    assert len(bodies) == 3
    assert len(set(bodies)) == 1
    assert len(msgspec.json.decode(bodies[0])["idempotency_key"]) == 32
    assert len(sleeps) == 2


async def test_each_call_gets_its_own_key(
    mocked: aioresponses, make_client: Callable[..., Client]
) -> None:
    """Two separate calls carry two different generated idempotency keys."""
    mocked.post(START_URL, payload=OK, repeat=True)
    client = make_client()
    await client.agent_instances.start(INSTANCE_ID)
    await client.agent_instances.start(INSTANCE_ID)
    keys = {
        msgspec.json.decode(c.kwargs["data"])["idempotency_key"]
        for c in sent(mocked, "POST", START_URL)
    }
    assert len(keys) == 2


async def test_custom_retry_statuses_honoured(
    mocked: aioresponses, make_client: Callable[..., Client], sleeps: list[float]
) -> None:
    """A status left out of retry_statuses is raised at once; one put in is retried."""
    mocked.post(START_URL, status=409, payload=error_body("invalid_action", "busy"))
    mocked.post(START_URL, status=503, payload=error_body("unavailable", "later"))
    client = make_client(retry_statuses={409})
    with pytest.raises(PrefactorServerError) as info:
        await client.agent_instances.start(INSTANCE_ID)
    assert info.value.status_code == 503
    assert len(sent(mocked, "POST", START_URL)) == 2
    assert len(sleeps) == 1


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_empty_retry_statuses_retry_no_status(
    mocked: aioresponses, make_client: Callable[..., Client], status: int
) -> None:
    """With retry_statuses empty, an error status is raised on the first answer."""
    mocked.post(START_URL, status=status, payload=error_body("x", "no"))
    with pytest.raises(PrefactorApiError) as info:
        await make_client(retry_statuses=()).agent_instances.start(INSTANCE_ID)
    assert info.value.status_code == status
    assert len(sent(mocked, "POST", START_URL)) == 1


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, PrefactorValidationError),
        (401, PrefactorAuthError),
        (403, PrefactorAuthError),
        (404, PrefactorNotFoundError),
        (409, PrefactorConflictError),
        (422, PrefactorValidationError),
        (418, PrefactorApiError),
        (501, PrefactorServerError),
    ],
)
async def test_error_status_raised_at_once(
    mocked: aioresponses,
    make_client: Callable[..., Client],
    status: int,
    kind: type[PrefactorApiError],
) -> None:
    """A non-retryable error status raises its subclass at once, with code and message."""
    errors = {"timestamp": ["is invalid"]}
    mocked.post(START_URL, status=status, payload=error_body("some_code", "it failed", errors))
    with pytest.raises(kind) as info:
        await make_client().agent_instances.start(INSTANCE_ID)
    error = info.value
    assert type(error) is kind
    assert (status, "some_code", "it failed") == (error.status_code, error.code, error.message)
    assert ("POST", f"/api/v1/agent_instance/{INSTANCE_ID}/start") == (error.method, error.path)
    if isinstance(error, PrefactorValidationError):
        assert errors == error.errors
    assert len(sent(mocked, "POST", START_URL)) == 1


async def test_validation_error_without_field_errors(
    mocked: aioresponses, make_client: Callable[..., Client]
) -> None:
    """A 422 without an errors map has an empty one, and a missing code reads 'unknown'."""
    mocked.post(START_URL, status=422, payload={"status": "error", "message": "bad"})
    with pytest.raises(PrefactorValidationError) as info:
        await make_client().agent_instances.start(INSTANCE_ID)
    assert (info.value.errors, info.value.code) == ({}, "unknown")


async def test_retry_exhausted_carries_last_error_and_attempts(
    mocked: aioresponses, make_client: Callable[..., Client], sleeps: list[float]
) -> None:
    """After max_retries retries the call raises RetryExhausted with the last error."""
    mocked.post(START_URL, status=503, payload=error_body("unavailable", "later"), repeat=True)
    with pytest.raises(PrefactorRetryExhaustedError) as info:
        await make_client(max_retries=2).agent_instances.start(INSTANCE_ID)
    assert info.value.attempts == 3
    assert isinstance(info.value.last_error, PrefactorServerError)
    assert info.value.last_error.status_code == 503
    assert len(sent(mocked, "POST", START_URL)) == 3
    assert len(sleeps) == 2


async def test_max_retries_zero_tries_once(
    mocked: aioresponses, make_client: Callable[..., Client], sleeps: list[float]
) -> None:
    """With max_retries=0 a retryable failure is reported after one attempt."""
    mocked.post(START_URL, exception=aiohttp.ClientConnectionError("refused"), repeat=True)
    with pytest.raises(PrefactorRetryExhaustedError) as info:
        await make_client(max_retries=0).agent_instances.start(INSTANCE_ID)
    assert info.value.attempts == 1
    assert sleeps == []


async def test_backoff_grows_and_stays_under_its_maximum(
    mocked: aioresponses, make_client: Callable[..., Client], sleeps: list[float]
) -> None:
    """Backoff delays double from backoff_initial, with jitter, and never pass backoff_max."""
    mocked.post(START_URL, status=503, payload=error_body("x", "y"), repeat=True)
    client = make_client(max_retries=5, backoff_initial=1.0, backoff_max=4.0, total_timeout=600)
    with pytest.raises(PrefactorRetryExhaustedError):
        await client.agent_instances.start(INSTANCE_ID)
    ceilings = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(sleeps) == 5
    for delay, ceiling in zip(sleeps, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


# --- Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_seconds_beyond_backoff_max(
    mocked: aioresponses, make_client: Callable[..., Client], sleeps: list[float], status: int
) -> None:
    """Retry-After in seconds is waited out even when it is above backoff_max."""
    mocked.post(
        START_URL, status=status, payload=error_body("x", "y"), headers={"Retry-After": "7"}
    )
    mocked.post(START_URL, payload=OK)
    await make_client(backoff_max=0.5).agent_instances.start(INSTANCE_ID)
    assert sleeps == [7.0]


async def test_retry_after_http_date(
    mocked: aioresponses, make_client: Callable[..., Client], sleeps: list[float]
) -> None:
    """Retry-After as an HTTP date waits until that moment."""
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    mocked.post(START_URL, status=429, payload=error_body("x", "y"), headers={"Retry-After": when})
    mocked.post(START_URL, payload=OK)
    await make_client().agent_instances.start(INSTANCE_ID)
    (delay,) = sleeps
    assert 27 < delay <= 30


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("0", 0.0),
        (" 2.5 ", 2.5),
        (format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True), 0.0),
    ],
)
async def test_retry_after_values(
    mocked: aioresponses,
    make_client: Callable[..., Client],
    sleeps: list[float],
    header: str,
    expected: float,
) -> None:
    """Retry-After of zero, a fraction, or a date in the past is honoured as given."""
    mocked.post(
        START_URL, status=429, payload=error_body("x", "y"), headers={"Retry-After": header}
    )
    mocked.post(START_URL, payload=OK)
    await make_client(backoff_initial=10, backoff_max=10).agent_instances.start(INSTANCE_ID)
    assert sleeps == [expected]


@pytest.mark.parametrize("header", ["-1", "soon", "nan", "inf", ""])
async def test_bad_retry_after_falls_back_to_backoff(
    mocked: aioresponses, make_client: Callable[..., Client], sleeps: list[float], header: str
) -> None:
    """An unreadable Retry-After is ignored and the backoff is used."""
    mocked.post(
        START_URL, status=429, payload=error_body("x", "y"), headers={"Retry-After": header}
    )
    mocked.post(START_URL, payload=OK)
    await make_client(backoff_initial=0.4, backoff_max=0.4).agent_instances.start(INSTANCE_ID)
    (delay,) = sleeps
    assert 0.2 <= delay <= 0.4


async def test_retry_after_capped(
    mocked: aioresponses, make_client: Callable[..., Client], sleeps: list[float]
) -> None:
    """Retry-After is bounded by retry_after_cap."""
    mocked.post(START_URL, status=429, payload=error_body("x", "y"), headers={"Retry-After": "50"})
    mocked.post(START_URL, payload=OK)
    await make_client(retry_after_cap=2).agent_instances.start(INSTANCE_ID)
    assert sleeps == [2.0]


async def test_retry_after_beyond_total_deadline_gives_up(
    mocked: aioresponses, make_client: Callable[..., Client], sleeps: list[float]
) -> None:
    """A Retry-After past the total deadline ends the call at once instead of sleeping."""
    mocked.post(START_URL, status=503, payload=error_body("x", "y"), headers={"Retry-After": "40"})
    with pytest.raises(PrefactorRetryExhaustedError, match="total deadline") as info:
        await make_client(total_timeout=5).agent_instances.start(INSTANCE_ID)
    assert sleeps == []
    assert info.value.attempts == 1
    assert isinstance(info.value.last_error, PrefactorServerError)


async def test_rate_limit_error_carries_retry_after(
    mocked: aioresponses, make_client: Callable[..., Client]
) -> None:
    """A 429 that is not retried raises RateLimitError with the Retry-After seconds."""
    mocked.post(START_URL, status=429, payload=error_body("x", "y"), headers={"Retry-After": "3"})
    with pytest.raises(PrefactorRateLimitError) as info:
        await make_client(retry_statuses=()).agent_instances.start(INSTANCE_ID)
    assert info.value.retry_after == 3.0


# --- bad responses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
        (503, '{"status": "error", "code": "unav'),
        (500, ""),
    ],
)
async def test_non_json_5xx_retried_then_reported(
    mocked: aioresponses,
    make_client: Callable[..., Client],
    sleeps: list[float],
    status: int,
    body: str,
) -> None:
    """A 5xx body that is not JSON is a contract error with status and snippet, retried as a 5xx."""
    mocked.post(START_URL, status=status, body=body, content_type="text/html", repeat=True)
    with pytest.raises(PrefactorRetryExhaustedError) as info:
        await make_client(max_retries=1).agent_instances.start(INSTANCE_ID)
    last = info.value.last_error
    assert isinstance(last, PrefactorResponseContractError)
    assert last.status_code == status
    assert last.body_snippet == " ".join(body.split())[:200]
    assert len(sent(mocked, "POST", START_URL)) == 2


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, "<html>hello</html>"),
        (200, '{"status": "success", "details": {"id": "inst-1"'),
        (200, ""),
        (404, "<html>Not Found</html>"),
    ],
)
async def test_non_json_other_status_not_retried(
    mocked: aioresponses, make_client: Callable[..., Client], status: int, body: str
) -> None:
    """A body that is not JSON under a non-retryable status is a contract error at once."""
    mocked.get(GET_URL, status=status, body=body, content_type="text/html")
    with pytest.raises(PrefactorResponseContractError) as info:
        await make_client().agent_instances.get(INSTANCE_ID)
    assert info.value.status_code == status
    assert len(sent(mocked, "GET", GET_URL)) == 1


@pytest.mark.parametrize(
    ("payload", "fragments"),
    [
        (
            {"status": "success", "details": {**INSTANCE, "status": 3}},
            ["agent_instances.get", "$.details.status"],
        ),
        (
            {"status": "success", "details": {k: v for k, v in INSTANCE.items() if k != "id"}},
            ["agent_instances.get", "id", "$.details"],
        ),
        ({"status": "success", "details": []}, ["agent_instances.get", "$.details"]),
        (error_body("weird", "an error under 200"), ["agent_instances.get", "weird"]),
    ],
)
async def test_wrong_shape_on_success_is_contract_error(
    mocked: aioresponses,
    make_client: Callable[..., Client],
    payload: dict[str, Any],
    fragments: list[str],
) -> None:
    """A 200 with the wrong shape or an error envelope names the operation and the field."""
    mocked.get(GET_URL, payload=payload)
    with pytest.raises(PrefactorResponseContractError) as info:
        await make_client().agent_instances.get(INSTANCE_ID)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert len(sent(mocked, "GET", GET_URL)) == 1


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
async def test_body_over_the_cap_refused(
    mocked: aioresponses, make_client: Callable[..., Client], declared: bool
) -> None:
    """A response body over max_response_bytes is a contract error, not read into memory."""
    body = msgspec.json.encode({**OK, "padding": "x" * 4096})
    headers = {"Content-Length": str(len(body))} if declared else {}
    mocked.get(GET_URL, body=body, headers=headers)
    with pytest.raises(PrefactorResponseContractError, match="limit") as info:
        await make_client(max_response_bytes=2048).agent_instances.get(INSTANCE_ID)
    assert info.value.status_code == 200


async def test_body_under_the_cap_accepted(
    mocked: aioresponses, make_client: Callable[..., Client]
) -> None:
    """A body just within max_response_bytes is read and decoded."""
    body = msgspec.json.encode(OK)
    mocked.get(GET_URL, body=body, headers={"Content-Length": str(len(body))})
    instance = await make_client(max_response_bytes=1024).agent_instances.get(INSTANCE_ID)
    assert instance.id == INSTANCE_ID


async def test_compressed_body_over_the_cap_refused(make_client: Callable[..., Client]) -> None:
    """The cap applies to the decompressed body, so a small gzip cannot expand past it."""
    body = gzip.compress(msgspec.json.encode({**OK, "padding": "x" * 200_000}))

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=body,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    app = web.Application()
    app.router.add_get("/api/v1/agent_instance/{id}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        client = make_client(api_url=f"http://127.0.0.1:{port}", max_response_bytes=64 * 1024)
        assert len(body) < 64 * 1024
        with pytest.raises(PrefactorResponseContractError, match="limit"):
            await client.agent_instances.get(INSTANCE_ID)
    finally:
        await runner.cleanup()


# --- transport failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exception",
    [
        aiohttp.ClientConnectionError("refused"),
        aiohttp.ClientConnectorError(
            aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None),
            OSError(111, "refused"),
        ),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("truncated"),
        aiohttp.ClientOSError(104, "reset"),
        ConnectionResetError("reset"),
        OSError("no route"),
    ],
    ids=lambda exc: type(exc).__name__,
)
async def test_transport_failure_is_wrapped(
    mocked: aioresponses, make_client: Callable[..., Client], exception: Exception
) -> None:
    """A connection failure surfaces as a PrefactorTransportError, never a raw aiohttp error."""
    mocked.post(START_URL, exception=exception)
    with pytest.raises(PrefactorRetryExhaustedError) as info:
        await make_client(max_retries=0).agent_instances.start(INSTANCE_ID)
    last = info.value.last_error
    assert type(last) is PrefactorTransportError
    assert not isinstance(last, aiohttp.ClientError)
    assert last.__cause__ is exception


@pytest.mark.parametrize(
    "exception",
    [TimeoutError(), aiohttp.ServerTimeoutError("slow")],
    ids=["TimeoutError", "ServerTimeoutError"],
)
async def test_timeout_is_a_timeout_error(
    mocked: aioresponses, make_client: Callable[..., Client], exception: Exception
) -> None:
    """A timed-out attempt is a PrefactorTimeoutError, which is also a TimeoutError."""
    mocked.post(START_URL, exception=exception)
    with pytest.raises(PrefactorRetryExhaustedError) as info:
        await make_client(max_retries=0).agent_instances.start(INSTANCE_ID)
    last = info.value.last_error
    assert isinstance(last, PrefactorTimeoutError)
    assert isinstance(last, TimeoutError)
    assert isinstance(last, PrefactorTransportError)


def test_error_tree() -> None:
    """The error classes hang off one root, as drawn in _errors.py."""
    for kind in (
        PrefactorAuthError,
        PrefactorNotFoundError,
        PrefactorValidationError,
        PrefactorConflictError,
        PrefactorRateLimitError,
        PrefactorServerError,
    ):
        assert issubclass(kind, PrefactorApiError)
    for base in (
        PrefactorApiError,
        PrefactorResponseContractError,
        PrefactorTransportError,
        PrefactorRetryExhaustedError,
    ):
        assert issubclass(base, PrefactorError)
    assert issubclass(PrefactorTimeoutError, PrefactorTransportError)
    assert issubclass(PrefactorTimeoutError, TimeoutError)


# --- the token stays secret --------------------------------------------------------------------


def texts_of(error: BaseException) -> list[str]:
    """Str and repr of an error and of everything chained to it."""
    texts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), *map(str, current.args)]
        pending += [current.__cause__, current.__context__, getattr(current, "last_error", None)]
    return texts


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 401, "payload": error_body("unauthorized", "bad token")},
        {"status": 422, "payload": error_body("invalid", "nope", {"a": ["b"]})},
        {"status": 503, "payload": error_body("unavailable", "later")},
        {"status": 502, "body": "<html>oops</html>"},
        {"status": 200, "payload": {"status": "success", "details": {}}},
        {"exception": aiohttp.ClientConnectionError("refused")},
        {"exception": TimeoutError()},
    ],
    ids=lambda failure: str(failure.get("status") or type(failure["exception"]).__name__),
)
async def test_token_never_in_errors_or_logs(
    mocked: aioresponses,
    make_client: Callable[..., Client],
    caplog: pytest.LogCaptureFixture,
    failure: dict[str, Any],
) -> None:
    """The token appears in no exception message, repr or debug log line."""
    caplog.set_level(logging.DEBUG)
    mocked.post(START_URL, **failure, repeat=True)
    client = make_client(max_retries=1)
    with pytest.raises(PrefactorError) as info:
        await client.agent_instances.start(INSTANCE_ID)
    assert [text for text in texts_of(info.value) if TOKEN in text] == []
    assert caplog.records
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(client)


async def test_debug_log_line_per_attempt(
    mocked: aioresponses,
    make_client: Callable[..., Client],
    caplog: pytest.LogCaptureFixture,
    sleeps: list[float],
) -> None:
    """Each attempt logs method, path, status and attempt number on the aioprefactor logger."""
    caplog.set_level(logging.DEBUG, logger="aioprefactor")
    mocked.post(START_URL, status=503, payload=error_body("x", "y"))
    mocked.post(START_URL, payload=OK)
    await make_client().agent_instances.start(INSTANCE_ID)
    lines = [r.getMessage() for r in caplog.records if r.name == "aioprefactor"]
    path = f"/api/v1/agent_instance/{INSTANCE_ID}/start"
    assert len(lines) == 2
    assert lines[0].startswith(f"POST {path} -> 503 (attempt 1, ")
    assert lines[1].startswith(f"POST {path} -> 200 (attempt 2, ")
    assert all(line.endswith(" ms)") for line in lines)


# --- client lifecycle ------------------------------------------------------------------------


async def test_opened_on_first_use(
    mocked: aioresponses, make_client: Callable[..., Client]
) -> None:
    """A client used without `async with` opens its session on the first call."""
    mocked.get(GET_URL, payload=OK)
    client = make_client()
    states = [client.state]
    await client.agent_instances.get(INSTANCE_ID)
    states.append(client.state)
    await client.aclose()
    states.append(client.state)
    assert states == [ClientState.UNOPENED, ClientState.OPEN, ClientState.CLOSED]


async def test_opened_by_async_with(make_client: Callable[..., Client]) -> None:
    """`async with` opens the client and closes it on exit."""
    client = make_client()
    async with client as entered:
        assert entered is client
        states = [client.state]
    states.append(client.state)
    assert states == [ClientState.OPEN, ClientState.CLOSED]


async def test_one_session_for_every_call(
    mocked: aioresponses, make_client: Callable[..., Client]
) -> None:
    """Every call goes through the one session the client opened."""
    mocked.get(GET_URL, payload=OK, repeat=True)
    mocked.post(START_URL, payload=OK, repeat=True)
    async with make_client() as client:
        await client.agent_instances.get(INSTANCE_ID)
        session = client._transport_obj._session
        assert session is not None
        await client.agent_instances.start(INSTANCE_ID)
        await client.agent_instances.get(INSTANCE_ID)
        assert client._transport_obj._session is session
    assert session.closed


@pytest.mark.parametrize(
    "use",
    [
        lambda c: c.agent_instances.get(INSTANCE_ID),
        lambda c: c.agent_instances.start(INSTANCE_ID),
        lambda c: c.agent_spans.finish("sp-1"),
        lambda c: c.bulk.execute([{"_type": "agent_instances/start", "idempotency_key": "k" * 8}]),
        lambda c: c.ping(),
        lambda c: c.__aenter__(),
    ],
    ids=["get", "start", "span finish", "bulk", "ping", "enter"],
)
async def test_closed_client_refuses_use(
    mocked: aioresponses, make_client: Callable[..., Client], use: Callable[[Client], Any]
) -> None:
    """A closed client raises RuntimeError on any use, re-entering included, and sends nothing."""
    client = make_client()
    async with client:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await use(client)
    assert mocked.requests == {}


async def test_aclose_twice_is_fine(make_client: Callable[..., Client]) -> None:
    """Closing a client twice, or closing one never opened, does nothing the second time."""
    opened = make_client()
    async with opened:
        pass
    await opened.aclose()
    never_opened = make_client()
    await never_opened.aclose()
    await never_opened.aclose()
    assert (opened.state, never_opened.state) == (ClientState.CLOSED, ClientState.CLOSED)


async def test_ping(mocked: aioresponses, make_client: Callable[..., Client]) -> None:
    """ping() sends GET /api/v1/ping and returns the API's answer."""
    mocked.get(f"{BASE}/api/v1/ping", payload={"status": "success"})
    assert await make_client().ping() == {"status": "success"}
    assert [("GET", URL(f"{BASE}/api/v1/ping"))] == all_sent(mocked)
