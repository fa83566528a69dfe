from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from aioprefactor import (
    AgentSchemaVersion,
    AgentSpan,
    AgentVersion,
    BulkItem,
    BulkOutput,
    Client,
    ControlSignal,
    RuntimeEnvironment,
    SpanTypeSchema,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from aioresponses import aioresponses

BASE = "https://api.example.com"
TOKEN = "tok-endpoints-5e8f"
KEY = "key-0123456789"
ANY_URL = re.compile(r".*")
WHEN = datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=timezone(timedelta(hours=2)))

INSTANCE: dict[str, Any] = {
    "type": "agent_instance",
    "id": "inst-1",
    "account_id": "acc-1",
    "agent_id": "agent-1",
    "agent_version_id": "ver-1",
    "environment_id": "env-1",
    "agent_deployment_id": "dep-1",
    "status": "active",
    "inserted_at": "2025-01-02T03:04:05Z",
    "updated_at": "2025-01-02T03:04:05Z",
}
SPAN: dict[str, Any] = {
    "type": "agent_span",
    "id": "sp-1",
    "agent_instance_id": "inst-1",
    "schema_name": "agent:llm",
    "status": "active",
    "payload": {"model": "m"},
}
INSTANCE_OK: dict[str, Any] = {"status": "success", "details": INSTANCE}
SPAN_OK: dict[str, Any] = {"status": "success", "details": SPAN}
VERSION: dict[str, Any] = {"name": "Support bot", "external_identifier": "1.4.0"}
SCHEMA: dict[str, Any] = {"external_identifier": "schema-1"}


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with Client(api_url=BASE, api_token=TOKEN, max_retries=0) as client:
        yield client


def only_request(mock: aioresponses) -> tuple[str, str, Any]:
    """The one request made: method, raw path and the decoded JSON body (None for none)."""
    ((method, url), calls), *rest = mock.requests.items()
    assert rest == []
    (call,) = calls
    data = call.kwargs.get("data")
    return method, url.raw_path, None if data is None else msgspec.json.decode(data)


# --- request bodies -----------------------------------------------------------------------------


async def test_register_body_minimal(mocked: aioresponses, client: Client) -> None:
    """Register sends the version, schema, update_current_version and a key; no None fields."""
    mocked.post(ANY_URL, payload=INSTANCE_OK)
    instance = await client.agent_instances.register("agent-1", VERSION, SCHEMA)
    assert instance.id == "inst-1"
    method, path, body = only_request(mocked)
    assert (method, path) == ("POST", "/api/v1/agent_instance/register")
    key = body.pop("idempotency_key")
    assert len(key) == 32
    assert body == {
        "agent_id": "agent-1",
        "agent_version": VERSION,
        "agent_schema_version": SCHEMA,
        "update_current_version": True,
    }


async def test_register_body_full(mocked: aioresponses, client: Client) -> None:
    """Register sends every argument given, Structs and dicts alike, in the API's field names."""
    mocked.post(ANY_URL, payload=INSTANCE_OK)
    version = AgentVersion(
        name="Support bot",
        external_identifier="1.4.0",
        description="answers",
        runtime_environment=RuntimeEnvironment(os="linux", prefactor_sdk=("aioprefactor@0",)),
    )
    schema = AgentSchemaVersion(
        external_identifier="schema-1",
        span_type_schemas=(
            SpanTypeSchema(name="agent:llm", params_schema={"type": "object"}, title="LLM"),
        ),
    )
    await client.agent_instances.register(
        None,
        version,
        schema,
        "my-instance",
        KEY,
        False,
        environment_id="env-9",
        purpose="eval",
        external_identifier="ext-1",
    )
    assert only_request(mocked)[2] == {
        "agent_version": {
            "name": "Support bot",
            "external_identifier": "1.4.0",
            "description": "answers",
            "runtime_environment": {"os": "linux", "prefactor_sdk": ["aioprefactor@0"]},
        },
        "agent_schema_version": {
            "external_identifier": "schema-1",
            "span_type_schemas": [
                {"name": "agent:llm", "params_schema": {"type": "object"}, "title": "LLM"}
            ],
        },
        "update_current_version": False,
        "environment_id": "env-9",
        "id": "my-instance",
        "external_identifier": "ext-1",
        "purpose": "eval",
        "idempotency_key": KEY,
    }


@pytest.mark.parametrize(
    ("call", "path", "body"),
    [
        (
            lambda c: c.agent_instances.start("inst-1", idempotency_key=KEY),
            "/api/v1/agent_instance/inst-1/start",
            {"idempotency_key": KEY},
        ),
        (
            lambda c: c.agent_instances.start("inst-1", WHEN, KEY),
            "/api/v1/agent_instance/inst-1/start",
            {"timestamp": "2025-03-04T05:06:07.890000+02:00", "idempotency_key": KEY},
        ),
        (
            lambda c: c.agent_instances.finish("inst-1", idempotency_key=KEY),
            "/api/v1/agent_instance/inst-1/finish",
            {"idempotency_key": KEY},
        ),
        (
            lambda c: c.agent_instances.finish(
                "inst-1", "failed", datetime(2025, 1, 1, tzinfo=UTC), KEY
            ),
            "/api/v1/agent_instance/inst-1/finish",
            {"status": "failed", "timestamp": "2025-01-01T00:00:00Z", "idempotency_key": KEY},
        ),
        (
            lambda c: c.agent_instances.record_quality("inst-1", "score", {"v": 1}, KEY),
            "/api/v1/agent_instance/inst-1/record_quality",
            {"name": "score", "payload": {"v": 1}, "idempotency_key": KEY},
        ),
        (
            lambda c: c.agent_instances.record_quality("inst-1", "score", None, KEY),
            "/api/v1/agent_instance/inst-1/record_quality",
            {"name": "score", "payload": None, "idempotency_key": KEY},
        ),
    ],
    ids=["start", "start-timestamp", "finish", "finish-full", "quality", "quality-clear"],
)
async def test_instance_call_bodies(
    mocked: aioresponses,
    client: Client,
    call: Callable[[Client], Any],
    path: str,
    body: dict[str, Any],
) -> None:
    """Each instance call posts exactly the fields given, timestamps in RFC 3339 with offset."""
    mocked.post(ANY_URL, payload=INSTANCE_OK)
    await call(client)
    assert only_request(mocked) == ("POST", path, body)


async def test_get_sends_no_body(mocked: aioresponses, client: Client) -> None:
    """Get is a bodiless GET of the instance's path."""
    mocked.get(ANY_URL, payload=INSTANCE_OK)
    instance = await client.agent_instances.get("inst-1")
    assert only_request(mocked) == ("GET", "/api/v1/agent_instance/inst-1", None)
    assert instance.status == "active"


async def test_span_create_body_minimal(mocked: aioresponses, client: Client) -> None:
    """Span create wraps its fields in details, with status active and an empty payload."""
    mocked.post(ANY_URL, payload=SPAN_OK, status=201)
    span = await client.agent_spans.create("inst-1", "agent:llm", idempotency_key=KEY)
    assert span == msgspec.convert(SPAN, AgentSpan)
    assert only_request(mocked) == (
        "POST",
        "/api/v1/agent_spans",
        {
            "details": {
                "agent_instance_id": "inst-1",
                "schema_name": "agent:llm",
                "status": "active",
                "payload": {},
                "idempotency_key": KEY,
            }
        },
    )


async def test_span_create_body_full(mocked: aioresponses, client: Client) -> None:
    """Span create sends every field given."""
    mocked.post(ANY_URL, payload=SPAN_OK)
    await client.agent_spans.create(
        agent_instance_id="inst-1",
        schema_name="agent:tool",
        status="complete",
        payload={"q": [1, 2.5, None, True]},
        result_payload={"a": "b"},
        id="sp-9",
        parent_span_id="sp-0",
        started_at=datetime(2025, 1, 1, tzinfo=UTC),
        finished_at=WHEN,
        idempotency_key=KEY,
    )
    assert only_request(mocked)[2] == {
        "details": {
            "agent_instance_id": "inst-1",
            "schema_name": "agent:tool",
            "status": "complete",
            "payload": {"q": [1, 2.5, None, True]},
            "result_payload": {"a": "b"},
            "id": "sp-9",
            "parent_span_id": "sp-0",
            "started_at": "2025-01-01T00:00:00Z",
            "finished_at": "2025-03-04T05:06:07.890000+02:00",
            "idempotency_key": KEY,
        }
    }


@pytest.mark.parametrize(
    ("kwargs", "body"),
    [
        ({}, {}),
        (
            {"status": "cancelled", "result_payload": {"r": 1}, "timestamp": WHEN},
            {
                "status": "cancelled",
                "result_payload": {"r": 1},
                "timestamp": "2025-03-04T05:06:07.890000+02:00",
            },
        ),
    ],
)
async def test_span_finish_body(
    mocked: aioresponses, client: Client, kwargs: dict[str, Any], body: dict[str, Any]
) -> None:
    """Span finish posts the fields given to the span's path."""
    mocked.post(ANY_URL, payload=SPAN_OK)
    await client.agent_spans.finish("sp-1", idempotency_key=KEY, **kwargs)
    assert only_request(mocked) == (
        "POST",
        "/api/v1/agent_spans/sp-1/finish",
        {**body, "idempotency_key": KEY},
    )


@pytest.mark.parametrize(
    ("control", "expected"),
    [
        ({"terminate": True, "reason": "budget"}, ControlSignal(terminate=True, reason="budget")),
        (None, None),
    ],
)
async def test_span_carries_the_control_signal(
    mocked: aioresponses, client: Client, control: Any, expected: ControlSignal | None
) -> None:
    """The envelope's control signal reaches the caller on the returned span."""
    envelope = {**SPAN_OK, "control": control} if control else SPAN_OK
    mocked.post(ANY_URL, payload=envelope)
    mocked.post(ANY_URL, payload=envelope)
    created = await client.agent_spans.create("inst-1", "agent:llm")
    finished = await client.agent_spans.finish("sp-1")
    assert (expected, expected) == (created.control, finished.control)


async def test_bulk_body_and_outputs(mocked: aioresponses, client: Client) -> None:
    """Bulk flattens each item's params beside _type and its key, and returns outputs by key."""
    outputs = {
        "key-aaaaaaaa": {"status": "success", "details": INSTANCE},
        "key-bbbbbbbb": {"status": "error", "code": "invalid_action", "message": "no"},
    }
    mocked.post(ANY_URL, payload={"status": "success", "outputs": outputs})
    result = await client.bulk.execute(
        [
            BulkItem(
                type="agent_instances/start",
                idempotency_key="key-aaaaaaaa",
                params={"agent_instance_id": "inst-1"},
            ),
            {
                "_type": "agent_instances/finish",
                "idempotency_key": "key-bbbbbbbb",
                "agent_instance_id": "inst-1",
                "status": "failed",
            },
        ]
    )
    assert only_request(mocked) == (
        "POST",
        "/api/v1/bulk",
        {
            "items": [
                {
                    "_type": "agent_instances/start",
                    "idempotency_key": "key-aaaaaaaa",
                    "agent_instance_id": "inst-1",
                },
                {
                    "_type": "agent_instances/finish",
                    "idempotency_key": "key-bbbbbbbb",
                    "agent_instance_id": "inst-1",
                    "status": "failed",
                },
            ]
        },
    )
    assert result.outputs["key-aaaaaaaa"].ok
    assert result.outputs["key-bbbbbbbb"] == BulkOutput(
        status="error", code="invalid_action", message="no"
    )


# --- ids in paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "segment"),
    [
        ("a/b", "a%2Fb"),
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("../../admin", "..%2F..%2Fadmin"),
        ("a?b=1", "a%3Fb%3D1"),
        ("a#frag", "a%23frag"),
        ("100%", "100%25"),
        ("%2E%2E", "%252E%252E"),
        ("a b", "a%20b"),
        ("zürich-東京", "z%C3%BCrich-%E6%9D%B1%E4%BA%AC"),
        ("a;b,c", "a%3Bb%2Cc"),
        ("...", "..."),
    ],
)
@pytest.mark.parametrize(
    ("method", "call", "template"),
    [
        ("GET", lambda c, i: c.agent_instances.get(i), "/api/v1/agent_instance/{}"),
        ("POST", lambda c, i: c.agent_instances.start(i), "/api/v1/agent_instance/{}/start"),
        ("POST", lambda c, i: c.agent_instances.finish(i), "/api/v1/agent_instance/{}/finish"),
        (
            "POST",
            lambda c, i: c.agent_instances.record_quality(i, "q"),
            "/api/v1/agent_instance/{}/record_quality",
        ),
        ("POST", lambda c, i: c.agent_spans.finish(i), "/api/v1/agent_spans/{}/finish"),
    ],
    ids=["get", "start", "finish", "record_quality", "span-finish"],
)
async def test_id_is_one_path_segment(
    mocked: aioresponses,
    client: Client,
    raw: str,
    segment: str,
    method: str,
    call: Callable[[Client, str], Any],
    template: str,
) -> None:
    """An id is percent-encoded as exactly one segment of the URL actually requested."""
    payload = SPAN_OK if "spans" in template else INSTANCE_OK
    mocked.add(ANY_URL, method, payload=payload)
    await call(client, raw)
    sent_method, path, _ = only_request(mocked)
    assert (method, template.format(segment)) == (sent_method, path)


# --- local mistakes: refused before anything is sent ------------------------------------------

NAIVE = datetime(2025, 1, 1)


@pytest.mark.parametrize(
    ("call", "exception", "fragment"),
    [
        # register
        (lambda c: c.agent_instances.register(1, VERSION, SCHEMA), TypeError, "agent_id"),
        (lambda c: c.agent_instances.register("", VERSION, SCHEMA), ValueError, "agent_id"),
        (lambda c: c.agent_instances.register("a", "v1", SCHEMA), TypeError, "agent_version"),
        (
            lambda c: c.agent_instances.register("a", {"name": "n"}, SCHEMA),
            ValueError,
            "agent_version",
        ),
        (
            lambda c: c.agent_instances.register("a", VERSION, None),
            TypeError,
            "agent_schema_version",
        ),
        (
            lambda c: c.agent_instances.register(
                "a",
                VERSION,
                {"external_identifier": "s", "span_schemas": {"x": {"n": float("nan")}}},
            ),
            ValueError,
            "agent_schema_version",
        ),
        (lambda c: c.agent_instances.register("a", VERSION, SCHEMA, 5), TypeError, "id"),
        (
            lambda c: c.agent_instances.register("a", VERSION, SCHEMA, None, "k" * 65),
            ValueError,
            "idempotency_key",
        ),
        (
            lambda c: c.agent_instances.register("a", VERSION, SCHEMA, None, ""),
            ValueError,
            "idempotency_key",
        ),
        (
            lambda c: c.agent_instances.register("a", VERSION, SCHEMA, None, 7),
            TypeError,
            "idempotency_key",
        ),
        (
            lambda c: c.agent_instances.register("a", VERSION, SCHEMA, None, None, "yes"),
            TypeError,
            "update_current_version",
        ),
        (
            lambda c: c.agent_instances.register("a", VERSION, SCHEMA, update_current_version=1),
            TypeError,
            "update_current_version",
        ),
        (
            lambda c: c.agent_instances.register("a", VERSION, SCHEMA, purpose="prod"),
            ValueError,
            "purpose",
        ),
        (
            lambda c: c.agent_instances.register("a", VERSION, SCHEMA, environment_id=3),
            TypeError,
            "environment_id",
        ),
        (
            lambda c: c.agent_instances.register("a", VERSION, SCHEMA, external_identifier=""),
            ValueError,
            "external_identifier",
        ),
        # start / finish / get / record_quality
        (lambda c: c.agent_instances.start(""), ValueError, "agent_instance_id"),
        (lambda c: c.agent_instances.start(None), TypeError, "agent_instance_id"),
        (lambda c: c.agent_instances.start(42), TypeError, "agent_instance_id"),
        (lambda c: c.agent_instances.start("i", NAIVE), ValueError, "timezone-aware"),
        (lambda c: c.agent_instances.start("i", "2025-01-01T00:00:00Z"), TypeError, "timestamp"),
        (
            lambda c: c.agent_instances.start("i", idempotency_key="k" * 65),
            ValueError,
            "idempotency_key",
        ),
        (lambda c: c.agent_instances.finish("i", "done"), ValueError, "status"),
        (lambda c: c.agent_instances.finish("i", "active"), ValueError, "status"),
        (lambda c: c.agent_instances.finish("i", "terminated"), ValueError, "status"),
        (lambda c: c.agent_instances.finish("i", "COMPLETE"), ValueError, "status"),
        (lambda c: c.agent_instances.finish("i", timestamp=NAIVE), ValueError, "timezone-aware"),
        (
            lambda c: c.agent_instances.finish("i", idempotency_key="bad\x00key"),
            ValueError,
            "idempotency_key",
        ),
        (lambda c: c.agent_instances.finish("", "complete"), ValueError, "agent_instance_id"),
        (lambda c: c.agent_instances.get(""), ValueError, "agent_instance_id"),
        (lambda c: c.agent_instances.get(b"inst"), TypeError, "agent_instance_id"),
        (lambda c: c.agent_instances.record_quality("i", ""), ValueError, "name"),
        (lambda c: c.agent_instances.record_quality("i", None), TypeError, "name"),
        (lambda c: c.agent_instances.record_quality("i", "q", [1]), TypeError, "payload"),
        (
            lambda c: c.agent_instances.record_quality("i", "q", {"x": {1, 2}}),
            TypeError,
            "payload['x']",
        ),
        # spans
        (lambda c: c.agent_spans.create("", "agent:llm"), ValueError, "agent_instance_id"),
        (lambda c: c.agent_spans.create("i", ""), ValueError, "schema_name"),
        (lambda c: c.agent_spans.create("i", 3), TypeError, "schema_name"),
        (lambda c: c.agent_spans.create("i", "s", "terminated"), ValueError, "status"),
        (
            lambda c: c.agent_spans.create("i", "s", payload={"x": float("nan")}),
            ValueError,
            "payload['x']",
        ),
        (
            lambda c: c.agent_spans.create("i", "s", payload={"x": float("inf")}),
            ValueError,
            "payload['x']",
        ),
        (
            lambda c: c.agent_spans.create("i", "s", payload={"x": object()}),
            TypeError,
            "payload['x']",
        ),
        (lambda c: c.agent_spans.create("i", "s", payload={1: "x"}), TypeError, "payload"),
        (
            lambda c: c.agent_spans.create("i", "s", payload={"a": [{"b": {3}}]}),
            TypeError,
            "payload['a'][0]['b']",
        ),
        (lambda c: c.agent_spans.create("i", "s", payload="text"), TypeError, "payload"),
        (
            lambda c: c.agent_spans.create("i", "s", result_payload={"r": float("nan")}),
            ValueError,
            "result_payload['r']",
        ),
        (lambda c: c.agent_spans.create("i", "s", parent_span_id=""), ValueError, "parent_span_id"),
        (lambda c: c.agent_spans.create("i", "s", id=1), TypeError, "id"),
        (lambda c: c.agent_spans.create("i", "s", started_at=NAIVE), ValueError, "started_at"),
        (lambda c: c.agent_spans.create("i", "s", finished_at=NAIVE), ValueError, "finished_at"),
        (
            lambda c: c.agent_spans.create("i", "s", idempotency_key="k" * 65),
            ValueError,
            "idempotency_key",
        ),
        (lambda c: c.agent_spans.finish(""), ValueError, "agent_span_id"),
        (lambda c: c.agent_spans.finish("s", "active"), ValueError, "status"),
        (
            lambda c: c.agent_spans.finish("s", result_payload={"r": {1}}),
            TypeError,
            "result_payload['r']",
        ),
        (lambda c: c.agent_spans.finish("s", result_payload=[1]), TypeError, "result_payload"),
        (lambda c: c.agent_spans.finish("s", timestamp=NAIVE), ValueError, "timezone-aware"),
        # bulk
        (lambda c: c.bulk.execute([]), ValueError, "at least one"),
        (lambda c: c.bulk.execute({"_type": "x"}), TypeError, "sequence"),
        (lambda c: c.bulk.execute("items"), TypeError, "sequence"),
        (lambda c: c.bulk.execute(iter([])), TypeError, "sequence"),
        (lambda c: c.bulk.execute([42]), TypeError, "items[0]"),
        (
            lambda c: c.bulk.execute(
                [{"_type": "agent_instances/explode", "idempotency_key": "k" * 8}]
            ),
            ValueError,
            "items[0]._type",
        ),
        (lambda c: c.bulk.execute([{"idempotency_key": "k" * 8}]), ValueError, "items[0]._type"),
        (
            lambda c: c.bulk.execute([{"_type": "agent_instances/start"}]),
            TypeError,
            "items[0].idempotency_key",
        ),
        (
            lambda c: c.bulk.execute(
                [{"_type": "agent_instances/start", "idempotency_key": "k" * 7}]
            ),
            ValueError,
            "8 to 64",
        ),
        (
            lambda c: c.bulk.execute(
                [{"_type": "agent_instances/start", "idempotency_key": "k" * 65}]
            ),
            ValueError,
            "8 to 64",
        ),
        (
            lambda c: c.bulk.execute(
                [
                    {"_type": "agent_instances/start", "idempotency_key": "same-key-1"},
                    {"_type": "agent_instances/finish", "idempotency_key": "other-key"},
                    {"_type": "agent_instances/finish", "idempotency_key": "same-key-1"},
                ]
            ),
            ValueError,
            "same-key-1",
        ),
        (
            lambda c: c.bulk.execute(
                [
                    {
                        "_type": "agent_spans/create",
                        "idempotency_key": "k" * 8,
                        "payload": {"x": float("nan")},
                    }
                ]
            ),
            ValueError,
            "items[0].params",
        ),
        (
            lambda c: c.bulk.execute(
                [
                    BulkItem(
                        type="agent_spans/create", idempotency_key="k" * 8, params={"_type": "x"}
                    )
                ]
            ),
            ValueError,
            "items[0].params",
        ),
    ],
)
async def test_local_mistake_refused_before_sending(
    mocked: aioresponses,
    client: Client,
    call: Callable[[Client], Any],
    exception: type[Exception],
    fragment: str,
) -> None:
    """A bad argument is a ValueError or TypeError naming it, and no request is made."""
    mocked.add(ANY_URL, "GET", payload=INSTANCE_OK, repeat=True)
    mocked.add(ANY_URL, "POST", payload=INSTANCE_OK, repeat=True)
    with pytest.raises(exception) as info:
        await call(client)
    assert fragment in str(info.value)
    assert mocked.requests == {}


async def test_token_not_in_local_mistake_messages(mocked: aioresponses, client: Client) -> None:
    """Argument errors say nothing about the token."""
    with pytest.raises(ValueError, match="agent_instance_id") as info:
        await client.agent_instances.start("")
    assert TOKEN not in str(info.value)
