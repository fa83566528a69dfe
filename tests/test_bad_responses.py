"""Bad responses, catalogued: each is a typed aioprefactor error, never a decoder's crash.

The API here is a tiny ``aiohttp.web`` app on a real loopback socket that answers every
request with exactly the bad body a case asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec
import pytest
from aiohttp import web

from aioprefactor import (
    Client,
    PrefactorError,
    PrefactorNotFoundError,
    PrefactorResponseContractError,
    PrefactorRetryExhaustedError,
    PrefactorTransportError,
    PrefactorValidationError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from _pytest.mark.structures import ParameterSet

TOKEN: Final = "pf-bad-responses-token-0123456789"
RESPONSE_CAP: Final = 2048
SNIPPET_MAX: Final = 203  # 200 characters and an ellipsis

VERSION: Final = {"name": "Bad response agent", "external_identifier": "1.0.0"}
SCHEMA: Final = {"external_identifier": "schema-1"}

INSTANCE: Final[dict[str, Any]] = {
    "type": "agent_instance",
    "id": "i-1",
    "account_id": "acc-1",
    "agent_id": "agent-1",
    "agent_version_id": "ver-1",
    "environment_id": "env-1",
    "agent_deployment_id": "dep-1",
    "status": "active",
    "inserted_at": "2024-01-01T12:00:00Z",
    "updated_at": "2024-01-01T12:00:00Z",
}
SPAN: Final[dict[str, Any]] = {
    "type": "agent_span",
    "id": "s-1",
    "agent_instance_id": "i-1",
    "schema_name": "agent:llm",
    "status": "active",
}

HTML_PAGE: Final = (
    b"<!DOCTYPE html>\n<html>\n  <head><title>Welcome</title></head>\n"
    b"  <body><h1>Sign in</h1><form action='/login'></form></body>\n</html>\n"
)
NGINX_502: Final = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


def success(details: object, **extra: object) -> bytes:
    """A success envelope around ``details``."""
    return msgspec.json.encode({"status": "success", "details": details, **extra})


def instance_with(**fields: object) -> bytes:
    """A success envelope around a valid instance with ``fields`` changed, put first.

    First, so that the start of the body (all a snippet shows) holds the bad value.
    """
    return success({**fields, **{k: v for k, v in INSTANCE.items() if k not in fields}})


def instance_without(name: str) -> bytes:
    """A success envelope around a valid instance missing the field ``name``."""
    return success({key: value for key, value in INSTANCE.items() if key != name})


@dataclass(frozen=True)
class BadResponse:
    """One row: what the server answers, which call meets it, and the error expected.

    ``snippet`` is a fragment the error's ``body_snippet`` must hold, or ``None`` when no
    body was read (too big, or empty). ``retried`` cases end in
    ``PrefactorRetryExhaustedError`` whose ``last_error`` is the expected error. A body
    that cannot even be read (a false ``Content-Encoding``) is a transport error.
    """

    status: int
    body: bytes
    operation: str
    error: type[PrefactorError]
    fragment: str
    snippet: str | None
    retried: bool = False
    chunked: bool = False
    headers: tuple[tuple[str, str], ...] = ()


CALLS: Final[dict[str, Callable[[Client], Awaitable[object]]]] = {
    "agent_instances.register": lambda c: c.agent_instances.register("agent-1", VERSION, SCHEMA),
    "agent_instances.start": lambda c: c.agent_instances.start("i-1"),
    "agent_instances.finish": lambda c: c.agent_instances.finish("i-1", "complete"),
    "agent_instances.get": lambda c: c.agent_instances.get("i-1"),
    "agent_spans.create": lambda c: c.agent_spans.create("i-1", "agent:llm"),
    "agent_spans.finish": lambda c: c.agent_spans.finish("s-1", "complete"),
    "bulk.execute": lambda c: c.bulk.execute(
        [{"_type": "agent_instances/start", "idempotency_key": "key-0001", "id": "i-1"}]
    ),
    "ping": lambda c: c.ping(),
}


def row(case_id: str, case: BadResponse, *, bug: str | None = None) -> ParameterSet:
    """One parametrize row; ``bug`` marks a case the library fails today."""
    marks = [] if bug is None else [pytest.mark.xfail(reason=bug, strict=True)]
    return pytest.param(case, id=case_id, marks=marks)


CONTRACT = PrefactorResponseContractError
NOT_JSON = "is not valid JSON"
SHAPE = "unexpected response shape"

BAD_RESPONSES = [
    row(
        "html-200",
        BadResponse(200, HTML_PAGE, "agent_instances.get", CONTRACT, NOT_JSON, "<!DOCTYPE html>"),
    ),
    row(
        "html-502",
        BadResponse(
            502,
            NGINX_502,
            "agent_instances.finish",
            CONTRACT,
            "not a JSON error body",
            "502 Bad Gateway",
            retried=True,
        ),
    ),
    row(
        "html-404",
        BadResponse(
            404,
            b"<html><body>Not Found</body></html>",
            "agent_instances.get",
            CONTRACT,
            "not a JSON error body",
            "Not Found",
        ),
    ),
    row(
        "truncated-json-200",
        BadResponse(
            200,
            instance_with()[:60],
            "agent_instances.start",
            CONTRACT,
            NOT_JSON,
            '{"status":"success","details":',
        ),
    ),
    row(
        "truncated-json-503",
        BadResponse(
            503,
            b'{"status":"error","code":"unavail',
            "agent_instances.start",
            CONTRACT,
            "not a JSON error body",
            '{"status":"error"',
            retried=True,
        ),
    ),
    row(
        "json-array",
        BadResponse(
            200,
            b'[{"status":"success","details":{}}]',
            "agent_instances.get",
            CONTRACT,
            "Expected `object`, got `array`",
            '[{"status":"success"',
        ),
    ),
    row(
        "json-null",
        BadResponse(200, b"null", "agent_instances.get", CONTRACT, "got `null`", "null"),
    ),
    row(
        "details-str",
        BadResponse(
            200,
            success("ok"),
            "agent_instances.finish",
            CONTRACT,
            "at `$.details`",
            '"details":"ok"',
        ),
    ),
    row(
        "details-list-span",
        BadResponse(
            200,
            success([SPAN]),
            "agent_spans.create",
            CONTRACT,
            "at `$.details`",
            '"details":[',
        ),
    ),
    row(
        "missing-id",
        BadResponse(
            200,
            instance_without("id"),
            "agent_instances.get",
            CONTRACT,
            "missing required field `id` - at `$.details`",
            '"account_id":"acc-1"',
        ),
    ),
    row(
        "missing-span-status",
        BadResponse(
            200,
            success({key: value for key, value in SPAN.items() if key != "status"}),
            "agent_spans.finish",
            CONTRACT,
            "missing required field `status`",
            '"schema_name":"agent:llm"',
        ),
    ),
    row(
        "status-int",
        BadResponse(
            200,
            instance_with(status=5),
            "agent_instances.get",
            CONTRACT,
            "at `$.details.status`",
            '{"status":5',
        ),
    ),
    row(
        "status-unknown",
        BadResponse(
            200,
            instance_with(status="paused"),
            "agent_instances.start",
            CONTRACT,
            "'paused' - at `$.details.status`",
            '{"status":"paused"',
        ),
    ),
    row(
        "inserted-at-not-iso",
        BadResponse(
            200,
            instance_with(inserted_at="01/02/2024 12:00"),
            "agent_instances.register",
            CONTRACT,
            "at `$.details.inserted_at`",
            '{"inserted_at":"01/02/2024 12:00"',
        ),
    ),
    row(
        "span-counts-list",
        BadResponse(
            200,
            instance_with(span_counts=[1, 2]),
            "agent_instances.get",
            CONTRACT,
            "at `$.details.span_counts`",
            '{"span_counts":[1,2]',
        ),
    ),
    row(
        "control-str",
        BadResponse(
            200,
            success(SPAN, control="stop"),
            "agent_spans.create",
            CONTRACT,
            "at `$.control`",
            '"control":"stop"',
        ),
    ),
    row(
        "bulk-outputs-list",
        BadResponse(
            200,
            b'{"status":"success","outputs":[]}',
            "bulk.execute",
            CONTRACT,
            "at `$.outputs`",
            '"outputs":[]',
        ),
    ),
    row(
        "huge-body-with-length",
        BadResponse(
            200,
            success({**INSTANCE, "pad": "x" * (4 * RESPONSE_CAP)}),
            "agent_instances.get",
            CONTRACT,
            f"over the {RESPONSE_CAP}-byte limit",
            None,
        ),
    ),
    row(
        "huge-body-chunked",
        BadResponse(
            200,
            success({**INSTANCE, "pad": "x" * (40 * RESPONSE_CAP)}),
            "agent_instances.get",
            CONTRACT,
            f"over the {RESPONSE_CAP}-byte limit",
            '{"status":"success"',
            chunked=True,
        ),
    ),
    row(
        "empty-200",
        BadResponse(200, b"", "agent_instances.finish", CONTRACT, NOT_JSON, None),
    ),
    row(
        "no-content-204",
        BadResponse(204, b"", "agent_instances.finish", CONTRACT, NOT_JSON, None),
    ),
    row(
        "error-envelope-200",
        BadResponse(
            200,
            b'{"status":"error","code":"internal","message":"database unavailable"}',
            "agent_instances.finish",
            CONTRACT,
            "internal: database unavailable",
            '"code":"internal"',
        ),
    ),
    row(
        "error-envelope-200-ping",
        BadResponse(
            200,
            b'{"status":"error","code":"unauthorized","message":"bad token"}',
            "ping",
            CONTRACT,
            "unauthorized: bad token",
            '"code":"unauthorized"',
        ),
    ),
    row(
        "non-utf8-bytes",
        BadResponse(
            200, b"\xff\xfe\x00\x81garbage", "agent_instances.get", CONTRACT, NOT_JSON, "garbage"
        ),
    ),
    row(
        "non-utf8-in-json-string",
        BadResponse(
            200,
            instance_with(id="i-1").replace(b'"i-1"', b'"i-\xff\xfe"'),
            "agent_instances.get",
            CONTRACT,
            NOT_JSON,
            '{"id":"i-\ufffd\ufffd"',
        ),
    ),
    row(
        "non-utf8-in-error-message-500",
        BadResponse(
            500,
            b'{"status":"error","code":"internal","message":"caf\xe9 failed"}',
            "agent_instances.finish",
            CONTRACT,
            "not a JSON error body",
            "caf\ufffd failed",
            retried=True,
        ),
    ),
    row(
        "gzip-header-plain-body",
        BadResponse(
            200,
            instance_with(),
            "agent_instances.get",
            PrefactorTransportError,
            "Can not decode content-encoding: gzip",
            None,
            retried=True,
            headers=(("Content-Encoding", "gzip"),),
        ),
    ),
    row(
        "error-body-empty-object-404",
        BadResponse(
            404, b"{}", "agent_instances.get", PrefactorNotFoundError, "HTTP 404 unknown", None
        ),
    ),
    row(
        "error-body-no-code-no-message-422",
        BadResponse(
            422,
            b'{"status":"error"}',
            "agent_spans.create",
            PrefactorValidationError,
            "HTTP 422 unknown: HTTP 422",
            None,
        ),
    ),
    row(
        "error-body-json-string-400",
        BadResponse(
            400,
            b'"bad request"',
            "agent_instances.register",
            CONTRACT,
            "not a JSON error body",
            '"bad request"',
        ),
    ),
    row(
        "error-body-code-int-409",
        BadResponse(
            409,
            b'{"status":"error","code":7,"message":"conflict"}',
            "agent_instances.finish",
            CONTRACT,
            "not a JSON error body",
            '"code":7',
        ),
    ),
    row(
        "html-429",
        BadResponse(
            429,
            b"<html><body>Too Many Requests</body></html>",
            "agent_spans.create",
            CONTRACT,
            "not a JSON error body",
            "Too Many Requests",
            retried=True,
        ),
    ),
    row(
        "debug-page-echoes-token-502",
        BadResponse(
            502,
            b"<html><pre>upstream failed; request headers: Authorization: {auth}</pre></html>",
            "agent_instances.start",
            CONTRACT,
            "not a JSON error body",
            "upstream failed",
            retried=True,
        ),
    ),
]


class BadApi:
    """A loopback server that answers every request with the current case's response."""

    def __init__(self) -> None:
        self.case: BadResponse | None = None
        self.hits = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer with exactly the case's status, headers and bytes."""
        await request.read()
        self.hits += 1
        case = self.case
        assert case is not None
        body = case.body.replace(b"{auth}", request.headers["Authorization"].encode())
        headers = {"Content-Type": "application/json", **dict(case.headers)}
        if not case.chunked:
            return web.Response(status=case.status, body=body or None, headers=headers)
        response = web.StreamResponse(status=case.status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 1024):
            await response.write(body[start : start + 1024])
        await response.write_eof()
        return response


@pytest.fixture
async def bad_api() -> AsyncIterator[BadApi]:
    """A running ``BadApi`` on 127.0.0.1, stopped after the test."""
    api = BadApi()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", api.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    api.url = f"http://{host}:{port}"
    try:
        yield api
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("case", BAD_RESPONSES)
async def test_bad_response_is_a_typed_error(bad_api: BadApi, case: BadResponse) -> None:
    """The case's typed error, naming the operation, with a short snippet and no token."""
    bad_api.case = case
    async with Client(
        bad_api.url,
        TOKEN,
        max_retries=1,
        backoff_initial=0.001,
        max_response_bytes=RESPONSE_CAP,
    ) as client:
        with pytest.raises(PrefactorError) as info:
            await CALLS[case.operation](client)
    raised = info.value
    for text in (str(raised), repr(raised)):
        assert TOKEN not in text
    error: PrefactorError = raised
    if case.retried:
        assert type(raised) is PrefactorRetryExhaustedError, repr(raised)
        assert raised.attempts == 2
        error = raised.last_error
    assert bad_api.hits == (2 if case.retried else 1)
    assert type(error) is case.error, repr(error)
    assert case.fragment in str(error)
    if isinstance(error, PrefactorTransportError):
        return  # the body could not be read: no status or snippet to carry
    assert error.status_code == case.status  # type: ignore[attr-defined]
    if not isinstance(error, PrefactorResponseContractError):
        assert error.code == "unknown"  # type: ignore[attr-defined]
        return
    if case.snippet is None:
        assert not error.body_snippet
    else:
        assert error.body_snippet is not None
        assert case.snippet in error.body_snippet
        assert len(error.body_snippet) <= SNIPPET_MAX
        assert TOKEN not in error.body_snippet
    assert error.operation == case.operation
