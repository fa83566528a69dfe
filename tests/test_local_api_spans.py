"""The local API's spans, span counts and the terminate control signal, over plain aiohttp."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from aioprefactor.testing import LocalPrefactor

SCHEMA = {
    "external_identifier": "schema-1",
    "span_type_schemas": [
        {"name": "agent:llm", "title": "LLM call", "params_schema": {"type": "object"}}
    ],
}
SPAN_KEYS = {
    "type",
    "id",
    "account_id",
    "agent_id",
    "agent_instance_id",
    "parent_span_id",
    "schema_name",
    "schema_title",
    "status",
    "payload",
    "result_payload",
    "summary",
    "started_at",
    "inserted_at",
    "updated_at",
    "finished_at",
}


@dataclass
class Answer:
    """A response: status and decoded JSON body."""

    status: int
    body: Any


if TYPE_CHECKING:
    Post = Callable[[str, Any], Awaitable[Answer]]


@pytest.fixture
async def post(prefactor_api: LocalPrefactor) -> AsyncIterator[Post]:
    headers = {"Authorization": f"Bearer {prefactor_api.token}"}
    async with aiohttp.ClientSession(prefactor_api.url, headers=headers) as http:

        async def send(path: str, body: Any) -> Answer:
            async with http.post(path, json=body) as response:
                return Answer(response.status, await response.json())

        yield send


@pytest.fixture
async def instance_id(post: Post) -> str:
    body = {"agent_version": {"name": "Bot", "external_identifier": "1"}}
    answer = await post("/api/v1/agent_instance/register", {**body, "agent_schema_version": SCHEMA})
    instance: str = answer.body["details"]["id"]
    await post(f"/api/v1/agent_instance/{instance}/start", {})
    return instance


async def create(post: Post, instance_id: str, **details: Any) -> Answer:
    fields = {"agent_instance_id": instance_id, "schema_name": "agent:llm", "status": "active"}
    return await post("/api/v1/agent_spans", {"details": {**fields, **details}})


async def created(post: Post, instance_id: str, **details: Any) -> dict[str, Any]:
    answer = await create(post, instance_id, **details)
    assert answer.status == 200, answer.body
    span: dict[str, Any] = answer.body["details"]
    return span


def assert_error(answer: Answer, status: int, code: str) -> None:
    assert (answer.status, answer.body["status"], answer.body["code"]) == (status, "error", code)


async def test_create_renders_an_active_span(
    prefactor_api: LocalPrefactor, post: Post, instance_id: str
) -> None:
    """A created span has every contract field, its payload, and its schema's title."""
    answer = await create(post, instance_id, payload={"model": "m"})
    span = answer.body["details"]
    assert answer.body["status"] == "success"
    assert "control" not in answer.body
    assert span.keys() >= SPAN_KEYS
    assert (span["type"], span["status"], span["payload"], span["schema_title"]) == (
        "agent_span",
        "active",
        {"model": "m"},
        "LLM call",
    )
    assert span["finished_at"] is None
    assert prefactor_api.spans(instance_id) == [span]


async def test_create_without_payload_defaults_to_an_empty_object(
    post: Post, instance_id: str
) -> None:
    """A span created without `payload` has `{}`."""
    span = await created(post, instance_id)
    assert span["payload"] == {}


async def test_a_span_may_be_created_already_finished(post: Post, instance_id: str) -> None:
    """A span created `complete` with its times keeps them and counts as finished."""
    span = await created(
        post,
        instance_id,
        status="complete",
        started_at="2025-01-01T00:00:00Z",
        finished_at="2025-01-01T00:00:02Z",
        result_payload={"ok": True},
    )
    assert (span["status"], span["started_at"], span["finished_at"]) == (
        "complete",
        "2025-01-01T00:00:00.000000Z",
        "2025-01-01T00:00:02.000000Z",
    )


@pytest.mark.parametrize(
    ("details", "field"),
    [
        ({"schema_name": None}, "details.schema_name"),
        ({"status": "terminated"}, "details.status"),
        ({"status": "running"}, "details.status"),
        ({"payload": [1]}, "details.payload"),
        ({"result_payload": "x"}, "details.result_payload"),
        ({"started_at": "now"}, "details.started_at"),
        ({"finished_at": "2025-01-01T00:00:00Z"}, "details.finished_at"),
        ({"agent_instance_id": None}, "details.agent_instance_id"),
        ({"idempotency_key": "k" * 65}, "details.idempotency_key"),
        ({"colour": "red"}, "details.colour"),
    ],
)
async def test_create_validates_its_details(
    prefactor_api: LocalPrefactor,
    post: Post,
    instance_id: str,
    details: dict[str, Any],
    field: str,
) -> None:
    """Bad span details are a 422 naming the field under `details.`; nothing is created."""
    answer = await create(post, instance_id, **details)
    assert_error(answer, 422, "validation_error")
    assert field in answer.body["errors"]
    assert prefactor_api.spans(instance_id) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "details"), ({"details": 3}, "details"), ({"details": {}, "extra": 1}, "extra")],
)
async def test_create_needs_a_details_object(post: Post, body: Any, field: str) -> None:
    """The span create body must be `{"details": {...}}`."""
    answer = await post("/api/v1/agent_spans", body)
    assert_error(answer, 422, "validation_error")
    assert field in answer.body["errors"]


async def test_create_in_an_unknown_instance_is_a_404(post: Post) -> None:
    """A span for an unknown instance is a 404."""
    assert_error(await create(post, "missing"), 404, "not_found")


async def test_create_in_a_finished_instance_is_refused(post: Post, instance_id: str) -> None:
    """A span for a finished instance is a 409 `invalid_action`."""
    await post(f"/api/v1/agent_instance/{instance_id}/finish", {})
    assert_error(await create(post, instance_id), 409, "invalid_action")


async def test_a_span_id_may_be_given_once(post: Post, instance_id: str) -> None:
    """A given span `id` is used; giving it again is a 409."""
    span = await created(post, instance_id, id="span-1")
    assert span["id"] == "span-1"
    assert_error(await create(post, instance_id, id="span-1"), 409, "conflict")


async def test_a_child_names_its_parent(post: Post, instance_id: str) -> None:
    """A span with `parent_span_id` of the same instance keeps it."""
    parent = await created(post, instance_id)
    child = await created(post, instance_id, parent_span_id=parent["id"])
    assert child["parent_span_id"] == parent["id"]


async def test_the_parent_must_exist_in_the_same_instance(post: Post, instance_id: str) -> None:
    """An unknown parent, or one of another instance, is a 422 on `details.parent_span_id`."""
    body = {"agent_version": {"name": "Bot", "external_identifier": "1"}}
    other = await post("/api/v1/agent_instance/register", {**body, "agent_schema_version": SCHEMA})
    foreign = await created(post, other.body["details"]["id"])
    for parent_id in ("missing", foreign["id"]):
        answer = await create(post, instance_id, parent_span_id=parent_id)
        assert_error(answer, 422, "validation_error")
        assert list(answer.body["errors"]) == ["details.parent_span_id"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, "complete"),
        ({"status": "complete"}, "complete"),
        ({"status": "failed"}, "failed"),
        ({"status": "cancelled"}, "cancelled"),
    ],
)
async def test_finish_moves_an_active_span_to_the_status(
    post: Post, instance_id: str, body: dict[str, Any], status: str
) -> None:
    """Finish on an `active` span sets the status (default `complete`) and `finished_at`."""
    span = await created(post, instance_id)
    answer = await post(f"/api/v1/agent_spans/{span['id']}/finish", body)
    assert (answer.status, answer.body["details"]["status"]) == (200, status)
    assert answer.body["details"]["finished_at"] is not None


async def test_finish_keeps_the_result_payload(
    prefactor_api: LocalPrefactor, post: Post, instance_id: str
) -> None:
    """The finish's `result_payload` and `timestamp` are stored on the span."""
    span = await created(post, instance_id, started_at="2025-01-01T00:00:00Z")
    body = {"result_payload": {"text": "hi"}, "timestamp": "2025-01-01T00:00:01Z"}
    await post(f"/api/v1/agent_spans/{span['id']}/finish", body)
    stored = prefactor_api.span(span["id"])
    assert (stored["result_payload"], stored["finished_at"]) == (
        {"text": "hi"},
        "2025-01-01T00:00:01.000000Z",
    )


@pytest.mark.parametrize(("status", "expected"), [("cancelled", 200), ("complete", 409)])
async def test_a_pending_span_can_only_be_cancelled(
    post: Post, instance_id: str, status: str, expected: int
) -> None:
    """A `pending` span may be finished `cancelled` only; anything else is a 409."""
    span = await created(post, instance_id, status="pending")
    answer = await post(f"/api/v1/agent_spans/{span['id']}/finish", {"status": status})
    assert answer.status == expected


@pytest.mark.parametrize("first", ["complete", "failed", "cancelled"])
async def test_finishing_a_finished_span_is_refused(
    post: Post, instance_id: str, first: str
) -> None:
    """Finish on a terminal span is a 409 and keeps the first status."""
    span = await created(post, instance_id)
    await post(f"/api/v1/agent_spans/{span['id']}/finish", {"status": first})
    answer = await post(f"/api/v1/agent_spans/{span['id']}/finish", {"status": "complete"})
    assert_error(answer, 409, "invalid_action")


async def test_finish_an_unknown_span_is_a_404(post: Post) -> None:
    """Finish on an unknown span id is a 404."""
    assert_error(await post("/api/v1/agent_spans/missing/finish", {}), 404, "not_found")


async def test_finish_validates_its_body(post: Post, instance_id: str) -> None:
    """A bad finish status is a 422 on `status`."""
    span = await created(post, instance_id)
    answer = await post(f"/api/v1/agent_spans/{span['id']}/finish", {"status": "pending"})
    assert_error(answer, 422, "validation_error")
    assert list(answer.body["errors"]) == ["status"]


async def test_span_counts_follow_the_spans(
    prefactor_api: LocalPrefactor, post: Post, instance_id: str
) -> None:
    """The instance's `span_counts` count spans by status; finished = the terminal ones."""
    spans = [await created(post, instance_id) for _ in range(4)]
    await created(post, instance_id, status="pending")
    for span, status in zip(spans, ["complete", "failed", "cancelled"], strict=False):
        await post(f"/api/v1/agent_spans/{span['id']}/finish", {"status": status})
    counts = prefactor_api.instance(instance_id)["span_counts"]
    assert counts == {
        "total": 5,
        "active": 1,
        "complete": 1,
        "failed": 1,
        "cancelled": 1,
        "finished": 3,
    }


async def test_spans_are_listed_in_creation_order(
    prefactor_api: LocalPrefactor, post: Post, instance_id: str
) -> None:
    """`spans()` lists an instance's spans (or all) in creation order."""
    first = await created(post, instance_id, id="b")
    second = await created(post, instance_id, id="a")
    assert [s["id"] for s in prefactor_api.spans(instance_id)] == [first["id"], second["id"]]
    assert [s["id"] for s in prefactor_api.spans()] == ["b", "a"]


async def test_span_create_replays_by_idempotency_key(
    prefactor_api: LocalPrefactor, post: Post, instance_id: str
) -> None:
    """A span create repeated with the same key answers the first span and adds none."""
    first = await create(post, instance_id, idempotency_key="span-key-1")
    again = await create(post, instance_id, idempotency_key="span-key-1")
    assert (again.status, again.body) == (first.status, first.body)
    assert len(prefactor_api.spans(instance_id)) == 1


async def test_span_finish_replays_by_idempotency_key(post: Post, instance_id: str) -> None:
    """A span finish repeated with the same key answers the first response, not a 409."""
    span = await created(post, instance_id)
    path = f"/api/v1/agent_spans/{span['id']}/finish"
    first = await post(path, {"status": "failed", "idempotency_key": "fin-1"})
    again = await post(path, {"status": "failed", "idempotency_key": "fin-1"})
    assert (again.status, again.body) == (first.status, first.body)


# server-side termination


async def test_terminate_sets_the_status_and_reason(
    prefactor_api: LocalPrefactor, post: Post, instance_id: str
) -> None:
    """`terminate()` makes the instance `terminated` with the reason and a finish time."""
    prefactor_api.terminate(instance_id, reason="budget exceeded")
    instance = prefactor_api.instance(instance_id)
    assert (instance["status"], instance["termination_reason"]) == (
        "terminated",
        "budget exceeded",
    )
    assert instance["finished_at"] is not None


async def test_span_answers_carry_the_control_signal_after_terminate(
    prefactor_api: LocalPrefactor, post: Post, instance_id: str
) -> None:
    """After `terminate()`, span create and finish answers carry `control.terminate`."""
    span = await created(post, instance_id)
    prefactor_api.terminate(instance_id, reason="operator stop")
    control = {"terminate": True, "reason": "operator stop"}
    finished = await post(f"/api/v1/agent_spans/{span['id']}/finish", {})
    assert (finished.status, finished.body["control"]) == (200, control)
    new = await create(post, instance_id)
    assert (new.status, new.body["status"], new.body["control"]) == (200, "success", control)


@pytest.mark.parametrize("action", ["start", "finish"])
async def test_a_terminated_instance_cannot_be_started_or_finished(
    prefactor_api: LocalPrefactor, post: Post, instance_id: str, action: str
) -> None:
    """Start or finish on a terminated instance is a 409; it stays `terminated`."""
    prefactor_api.terminate(instance_id)
    answer = await post(f"/api/v1/agent_instance/{instance_id}/{action}", {})
    assert_error(answer, 409, "invalid_action")
    assert prefactor_api.instance(instance_id)["status"] == "terminated"


async def test_terminate_refuses_an_instance_that_has_ended(
    prefactor_api: LocalPrefactor, post: Post, instance_id: str
) -> None:
    """`terminate()` on a finished (or terminated) instance raises `ValueError`."""
    await post(f"/api/v1/agent_instance/{instance_id}/finish", {})
    with pytest.raises(ValueError, match="already complete"):
        prefactor_api.terminate(instance_id)


async def test_inspection_answers_copies(
    prefactor_api: LocalPrefactor, post: Post, instance_id: str
) -> None:
    """Editing what `spans()` returned does not change the stored span."""
    span = await created(post, instance_id, payload={"model": "m"})
    prefactor_api.spans(instance_id)[0]["payload"]["model"] = "edited"
    assert prefactor_api.span(span["id"])["payload"] == {"model": "m"}
