"""What a span will send is fixed when it is given, and nothing reaches an ended run."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

import aioprefactor
from aioprefactor import Client

if TYPE_CHECKING:
    from aioprefactor.testing import LocalPrefactor


pytestmark = pytest.mark.inline
VERSION = {"name": "Snapshots", "external_identifier": "1"}


async def test_result_changed_after_set_result_is_sent_as_it_was_set(
    prefactor_api: LocalPrefactor,
) -> None:
    """'complete' with the result as set, though the caller's dict changed afterwards."""
    async with Client(prefactor_api.url, prefactor_api.token) as client:
        async with client.agent_instance(agent_version=VERSION) as run:
            result: dict[str, Any] = {"text": "first", "items": [1]}
            async with aioprefactor.span("agent:llm") as step:
                step.set_result(result)
                result["bad"] = object()  # not JSON: would fail if sent now
                result["items"].append(2)
        await client.flush()
    assert run.id is not None
    assert step.id is not None
    recorded = prefactor_api.span(step.id)
    assert "complete" == recorded["status"]
    assert {"text": "first", "items": [1]} == recorded["result_payload"]
    assert step.telemetry_error is None
    assert "complete" == prefactor_api.instance(run.id)["status"]


async def test_payload_changed_after_span_was_made_is_not_sent(
    prefactor_api: LocalPrefactor,
) -> None:
    """Each call of a span decorator sends the payload as it was when decorated."""
    payload: dict[str, Any] = {"model": "m-1"}
    scope = aioprefactor.span("agent:llm", payload)
    payload["model"] = "changed"

    @scope
    async def call() -> None:
        await asyncio.sleep(0)

    async with (
        Client(prefactor_api.url, prefactor_api.token) as client,
        client.agent_instance(agent_version=VERSION) as run,
    ):
        await call()
        await call()
    assert run.id is not None
    assert [{"model": "m-1"}] * 2 == [s["payload"] for s in prefactor_api.spans(run.id)]


async def test_span_from_a_task_that_outlives_its_run_sends_nothing(
    prefactor_api: LocalPrefactor,
) -> None:
    """No span request once the run has ended, from a task the run started."""
    gate = asyncio.Event()

    async def straggler() -> None:
        await gate.wait()
        async with aioprefactor.span("agent:late"):
            pass

    async with Client(prefactor_api.url, prefactor_api.token) as client:
        async with client.agent_instance(agent_version=VERSION):
            task = asyncio.create_task(straggler())
        gate.set()
        await task
        await client.flush()
    assert [] == [r for r in prefactor_api.requests if r.route == "agent_spans.create"]
