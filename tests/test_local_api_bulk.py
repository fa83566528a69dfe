"""The local API's bulk route: items in order, stop at the first error, per-item idempotency."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from aioprefactor.testing import LocalPrefactor

    Post = Callable[[str, Any], Awaitable[tuple[int, Any]]]

REGISTER = {
    "_type": "agent_instances/register",
    "agent_version": {"name": "Bot", "external_identifier": "1"},
    "agent_schema_version": {"external_identifier": "schema-1"},
}


@pytest.fixture
async def post(prefactor_api: LocalPrefactor) -> AsyncIterator[Post]:
    headers = {"Authorization": f"Bearer {prefactor_api.token}"}
    async with aiohttp.ClientSession(prefactor_api.url, headers=headers) as http:

        async def send(path: str, body: Any) -> tuple[int, Any]:
            async with http.post(path, json=body) as response:
                return response.status, await response.json()

        yield send


async def bulk(post: Post, *items: dict[str, Any]) -> dict[str, Any]:
    status, body = await post("/api/v1/bulk", {"items": list(items)})
    assert (status, body["status"]) == (200, "success"), body
    outputs: dict[str, Any] = body["outputs"]
    return outputs


async def registered(post: Post) -> str:
    outputs = await bulk(post, {**REGISTER, "idempotency_key": "register-0"})
    instance_id: str = outputs["register-0"]["details"]["id"]
    return instance_id


async def test_every_item_type_runs_in_order(prefactor_api: LocalPrefactor, post: Post) -> None:
    """A bulk of every item type answers each output, keyed by its idempotency key."""
    instance_id = await registered(post)
    outputs = await bulk(
        post,
        {
            "_type": "agent_instances/start",
            "idempotency_key": "start-001",
            "agent_instance_id": instance_id,
        },
        {
            "_type": "agent_spans/create",
            "idempotency_key": "span-0001",
            "agent_instance_id": instance_id,
            "schema_name": "agent:llm",
            "status": "active",
            "id": "span-a",
            "payload": {"model": "m"},
        },
        {
            "_type": "agent_spans/finish",
            "idempotency_key": "span-fin-1",
            "agent_span_id": "span-a",
            "status": "complete",
            "result_payload": {"text": "hi"},
        },
        {
            "_type": "agent_instances/finish",
            "idempotency_key": "finish-01",
            "agent_instance_id": instance_id,
            "status": "failed",
        },
    )
    assert list(outputs) == ["start-001", "span-0001", "span-fin-1", "finish-01"]
    assert {o["status"] for o in outputs.values()} == {"success"}
    assert outputs["span-0001"]["details"]["type"] == "agent_span"
    assert outputs["span-fin-1"]["details"]["result_payload"] == {"text": "hi"}
    assert outputs["finish-01"]["details"]["status"] == "failed"
    assert prefactor_api.instance(instance_id)["span_counts"]["complete"] == 1


async def test_processing_stops_at_the_first_error(
    prefactor_api: LocalPrefactor, post: Post
) -> None:
    """Items before an error are applied, the error is its output, later items are absent."""
    instance_id = await registered(post)
    start = {"_type": "agent_instances/start", "agent_instance_id": instance_id}
    outputs = await bulk(
        post,
        {**start, "idempotency_key": "start-001"},
        {**start, "idempotency_key": "start-002"},
        {**REGISTER, "idempotency_key": "register-1"},
    )
    assert list(outputs) == ["start-001", "start-002"]
    assert outputs["start-002"]["status"] == "error"
    assert outputs["start-002"]["code"] == "invalid_action"
    assert len(prefactor_api.instances()) == 1


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"_type": "agent_instances/start"}, "agent_instance_id"),
        ({"_type": "agent_spans/finish", "agent_span_id": 5}, "agent_span_id"),
        ({**REGISTER, "purpose": "prod"}, "purpose"),
        ({**REGISTER, "agent_version": None}, "agent_version"),
        (
            {"_type": "agent_spans/create", "agent_instance_id": "x", "status": "active"},
            "schema_name",
        ),
    ],
)
async def test_an_invalid_item_answers_a_field_error_output(
    post: Post, item: dict[str, Any], field: str
) -> None:
    """An item with bad fields gets a 422-shaped error output naming the flattened field."""
    outputs = await bulk(post, {**item, "idempotency_key": "the-item"})
    output = outputs["the-item"]
    assert (output["status"], output["code"]) == ("error", "validation_error")
    assert field in output["errors"]


async def test_an_unknown_id_answers_a_not_found_output(post: Post) -> None:
    """An item on an unknown instance gets a `not_found` error output."""
    item = {"_type": "agent_instances/finish", "agent_instance_id": "missing"}
    outputs = await bulk(post, {**item, "idempotency_key": "finish-01"})
    assert outputs["finish-01"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "items"),
        ({"items": []}, "items"),
        ({"items": {}}, "items"),
        ({"items": [3]}, "items.0"),
        ({"items": [{**REGISTER, "idempotency_key": "short"}]}, "items.0.idempotency_key"),
        ({"items": [{**REGISTER, "idempotency_key": "k" * 65}]}, "items.0.idempotency_key"),
        ({"items": [{**REGISTER}]}, "items.0.idempotency_key"),
        (
            {"items": [{**REGISTER, "idempotency_key": "same-key"}] * 2},
            "items.1.idempotency_key",
        ),
        (
            {"items": [{**REGISTER, "_type": "agents/create", "idempotency_key": "k" * 8}]},
            "items.0._type",
        ),
        ({"items": [], "extra": True}, "extra"),
    ],
)
async def test_a_malformed_bulk_request_is_a_422(
    prefactor_api: LocalPrefactor, post: Post, body: dict[str, Any], field: str
) -> None:
    """An empty list, bad or duplicate keys, an unknown `_type` are a 422; nothing is applied."""
    status, answer = await post("/api/v1/bulk", body)
    assert (status, answer["code"]) == (422, "validation_error")
    assert field in answer["errors"]
    assert prefactor_api.instances() == []


async def test_a_repeated_bulk_replays_every_item(
    prefactor_api: LocalPrefactor, post: Post
) -> None:
    """Sending the same bulk again answers the same outputs and applies nothing twice."""
    instance_id = await registered(post)
    items = [
        {
            "_type": "agent_instances/start",
            "idempotency_key": "start-001",
            "agent_instance_id": instance_id,
        },
        {
            "_type": "agent_spans/create",
            "idempotency_key": "span-0001",
            "agent_instance_id": instance_id,
            "schema_name": "agent:llm",
            "status": "active",
        },
    ]
    first = await bulk(post, *items)
    again = await bulk(post, *items)
    assert again == first
    assert len(prefactor_api.spans(instance_id)) == 1


async def test_an_item_key_shares_the_direct_route_scope(
    prefactor_api: LocalPrefactor, post: Post
) -> None:
    """A bulk item with the key of an earlier direct request on the same path replays it."""
    instance_id = await registered(post)
    path = f"/api/v1/agent_instance/{instance_id}/start"
    status, direct = await post(path, {"idempotency_key": "start-key-1"})
    item = {"_type": "agent_instances/start", "agent_instance_id": instance_id}
    outputs = await bulk(post, {**item, "idempotency_key": "start-key-1"})
    assert status == 200
    assert outputs["start-key-1"] == direct
