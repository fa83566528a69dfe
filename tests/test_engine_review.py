"""The run-recording engine under races, faults and odd endings: exactly once, truthfully."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from aioprefactor import Client, RecordingState, open_span, span

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aioprefactor.testing import LocalPrefactor

VERSION = {"name": "Review", "external_identifier": "1.0.0"}
GUARD = 30.0  # only against hangs


@pytest.fixture
async def client(prefactor_api: LocalPrefactor) -> AsyncIterator[Client]:
    """A background-delivery client bound to the local API, closed after the test."""
    async with Client(prefactor_api.url, prefactor_api.token) as made:
        yield made


async def test_a_span_still_open_when_its_run_ends_at_once_is_cancelled(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """A span left open by a block that ends before the engine looks is recorded cancelled."""
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        left_open = open_span("agent:step")
    assert await client.flush(GUARD) is True
    assert run.id is not None
    assert RecordingState.FINISHED == left_open.state
    assert ["cancelled"] == [s["status"] for s in prefactor_api.spans(run.id)]
    assert "complete" == prefactor_api.instance(run.id)["status"]


async def test_spans_too_big_to_send_together_are_still_all_recorded(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """A batch whose spans together pass the request limit is split, never refused whole."""
    prefactor_api.faults.latency(0.3, route="agent_instances.register", n=1)
    big = "x" * (200 * 1024)
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        for n in range(100):
            async with span("agent:step", {"n": n, "text": big}):
                pass
    assert await client.flush(GUARD) is True
    assert run.id is not None
    assert ["complete"] * 100 == [s["status"] for s in prefactor_api.spans(run.id)]
    assert 0 == client.stats().abandoned


async def test_a_request_over_a_mebibyte_is_sent_without_a_resource_warning(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """A body over 1 MiB (under max_request_bytes) goes out; aiohttp's warning never fires."""
    schema = {
        "external_identifier": "big",
        "span_type_schemas": [
            {"name": "agent:step", "params_schema": {"description": "x" * (1536 * 1024)}}
        ],
    }
    instance = await client.agent_instances.register(
        agent_id="a", agent_version=VERSION, agent_schema_version=schema
    )
    assert "pending" == instance.status
