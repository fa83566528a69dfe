"""A run recorded late (registered after its enter budget) still records its spans."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

import aioprefactor
from aioprefactor import Client

if TYPE_CHECKING:
    from aioprefactor.testing import LocalPrefactor


pytestmark = pytest.mark.inline
VERSION = {"name": "Late", "external_identifier": "1"}


def parse(stamp: str) -> datetime:
    """A timestamp of the local API's JSON."""
    return datetime.fromisoformat(stamp)


@pytest.mark.parametrize("late", ["agent_instances.register", "agent_instances.start"])
async def test_spans_of_a_late_run_are_created_once_it_lands(
    prefactor_api: LocalPrefactor, late: str
) -> None:
    """Both spans on the server, nested, complete, started when their blocks started."""
    prefactor_api.faults.latency(0.6, n=1, route=late)
    async with Client(prefactor_api.url, prefactor_api.token) as client:
        loop = asyncio.get_running_loop()
        began = loop.time()
        scope = client.agent_instance(agent_version=VERSION, enter_timeout=0.1)
        async with scope as run:
            assert not run.recording  # not started yet: the block runs anyway
            opened = datetime.now(UTC)
            async with (
                aioprefactor.span("agent:outer") as outer,
                aioprefactor.span("agent:inner") as inner,
            ):
                pass
            # The blocks did not wait for the late registration.
            assert loop.time() - began < 0.6
        await client.flush()
    assert run.id is not None
    assert run.telemetry_error is None
    spans = {s["schema_name"]: s for s in prefactor_api.spans(run.id)}
    assert ["complete", "complete"] == [spans[n]["status"] for n in ("agent:outer", "agent:inner")]
    assert outer.id == spans["agent:inner"]["parent_span_id"]
    assert inner.id == spans["agent:inner"]["id"]
    # Every start carries when its block began: the run's before its span's, though the
    # run's start landed only after the span's block had ended.
    assert parse(prefactor_api.instance(run.id)["started_at"]) <= parse(
        spans["agent:outer"]["started_at"]
    )
    assert abs((parse(spans["agent:outer"]["started_at"]) - opened).total_seconds()) < 0.5
    assert "complete" == prefactor_api.instance(run.id)["status"]


async def test_finishes_carry_the_time_the_block_ended(prefactor_api: LocalPrefactor) -> None:
    """The span and instance finishes send the block's end time, not the send time."""
    async with (
        Client(prefactor_api.url, prefactor_api.token) as client,
        client.agent_instance(agent_version=VERSION),
        aioprefactor.span("agent:s"),
    ):
        pass
    finishes = [
        r
        for r in prefactor_api.requests
        if r.route in {"agent_instances.finish", "agent_spans.finish"}
    ]
    assert 2 == len(finishes)
    for request in finishes:
        assert request.body is not None
        assert parse(request.body["timestamp"]).tzinfo is not None


async def test_a_late_run_that_then_fails_is_warned_about_once(
    prefactor_api: LocalPrefactor, caplog: pytest.LogCaptureFixture
) -> None:
    """One warning for a run late on enter whose register then fails for good."""
    prefactor_api.faults.latency(0.3, route="agent_instances.register")
    prefactor_api.faults.fail_next(10_000, 503, route="agent_instances.register")
    client = Client(prefactor_api.url, prefactor_api.token, total_timeout=0.6, backoff_initial=0.01)
    async with client, client.agent_instance(agent_version=VERSION, enter_timeout=0.1) as run:
        pass
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert 1 == len(warnings)
    assert run.id is None
    assert run.telemetry_error is not None


async def test_a_deferred_span_that_fails_after_its_block_records_why(
    prefactor_api: LocalPrefactor,
) -> None:
    """span.telemetry_error set when its background create fails after the block ended."""
    prefactor_api.faults.latency(0.3, n=1, route="agent_instances.start")
    prefactor_api.faults.fail_next(10_000, 503, route="agent_spans.create")
    client = Client(prefactor_api.url, prefactor_api.token, total_timeout=0.6, backoff_initial=0.01)
    async with (
        client,
        client.agent_instance(agent_version=VERSION, enter_timeout=0.1),
        aioprefactor.span("agent:s") as step,
    ):
        pass
    assert step.id is None
    assert step.telemetry_error is not None
