"""The run-recording engine under races, faults and odd endings: exactly once, truthfully."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from aioprefactor import (
    Client,
    PrefactorTimeoutError,
    PrefactorValidationError,
    RecordingState,
    open_span,
    span,
)
from aioprefactor.testing import LocalPrefactor, StorageError
from aioprefactor.testing._sqlite import SqliteStorage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from aioprefactor import InstanceRun
    from aioprefactor.testing._storage import Records

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


async def test_a_strict_generator_refused_on_enter_raises_the_api_error(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """Strict, on a generator: the register's refusal is raised, not a second-end error."""
    prefactor_api.faults.fail_next(1, 422, route="agent_instances.register")

    @client.agent_instance(agent_id="a", agent_version=VERSION, strict=True)
    def steps() -> Iterator[int]:
        yield 1

    with pytest.raises(PrefactorValidationError):
        await asyncio.to_thread(next, steps())


async def test_an_inline_async_generator_cancelled_while_entering_propagates_the_cancel(
    prefactor_api: LocalPrefactor,
) -> None:
    """Inline, on an async generator: cancelled while entering, CancelledError; run cancelled."""
    prefactor_api.faults.latency(0.5, route="agent_instances.register", n=1)
    async with Client(prefactor_api.url, prefactor_api.token, delivery="inline") as client:

        @client.agent_instance(agent_id="a", agent_version=VERSION)
        async def steps() -> AsyncIterator[int]:
            yield 1

        async def consume() -> list[int]:
            return [item async for item in steps()]

        task = asyncio.create_task(consume())
        async with asyncio.timeout(GUARD):
            while not prefactor_api.requests:  # noqa: ASYNC110 - the API has no hook
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await client.flush(GUARD) is True
    assert ["cancelled"] == [i["status"] for i in prefactor_api.instances()]


async def test_a_finished_run_does_not_keep_its_event_loop_alive(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """A run handle kept after its loop closed does not keep that loop (nor its task)."""
    kept: list[InstanceRun] = []

    async def agent() -> None:
        async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            kept.append(run)

    def in_a_loop_of_its_own() -> weakref.ref[asyncio.AbstractEventLoop]:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(agent())
        finally:
            loop.close()
        return weakref.ref(loop)

    ref = await asyncio.to_thread(in_a_loop_of_its_own)
    assert await client.flush(GUARD) is True
    gc.collect()
    assert ref() is None
    assert RecordingState.FINISHED == kept[0].state


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


async def test_a_strict_span_that_fails_to_open_is_ended_at_once(
    prefactor_api: LocalPrefactor,
) -> None:
    """A strict span whose create is late raises at entry and is cancelled then, not left open."""
    prefactor_api.faults.latency(0.5, route="agent_spans.create", n=1)
    inline = Client(prefactor_api.url, prefactor_api.token, delivery="inline")
    async with inline as client, client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        with pytest.raises(PrefactorTimeoutError):
            async with span("agent:step", strict=True, enter_timeout=0.05):
                pytest.fail("the block of a span that did not open ran")
        assert await client.flush(GUARD) is True
        assert run.id is not None
        assert ["cancelled"] == [s["status"] for s in prefactor_api.spans(run.id)]


async def test_a_bulk_item_the_server_could_not_save_is_retried(tmp_path: Path) -> None:
    """An item answered 503 inside a bulk is retried like a single, not abandoned."""
    failed: list[str] = []

    class FailsOnce(SqliteStorage):
        """Fails the first save of a change that holds spans (the API answers it 503)."""

        def save(self, changes: Records) -> None:
            """Save, except the first time spans are saved."""
            if changes.spans and not failed:
                failed.append("spans")
                raise StorageError("disk full")
            super().save(changes)

    async with LocalPrefactor() as api:
        api._app.use(FailsOnce.open(tmp_path / "api.db"))
        api.faults.latency(0.3, route="agent_instances.start", n=1)  # the spans pile up
        async with Client(api.url, api.token) as client:
            async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
                for n in range(3):
                    async with span("agent:step", {"n": n}):
                        pass
            assert await client.flush(GUARD) is True
            assert (0, 0) == (client.stats().abandoned, client.stats().pending)
        assert ["spans"] == failed
        assert "bulk" in [r.route for r in api.requests]
        assert run.id is not None
        assert ["complete"] * 3 == [s["status"] for s in api.spans(run.id)]


async def test_an_unexpected_error_while_sending_gives_up_instead_of_hanging(
    prefactor_api: LocalPrefactor, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug inside a send: what it carried is abandoned and counted; flush still ends."""
    from aioprefactor._wire.transport import Transport  # noqa: PLC0415 - the seam under test

    real = Transport.attempt
    calls = {"n": 0}

    async def broken_once(self: Transport, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in the sender")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(Transport, "attempt", broken_once)
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        pass
    assert await asyncio.wait_for(client.flush(), 10) is True
    assert 1 == client.stats().abandoned
    assert isinstance(run.telemetry_error, RuntimeError)


def test_a_create_retried_alone_after_a_bulk_carries_what_the_bulk_carried() -> None:
    """The same span under the same key, even if the block ended between the two sends."""
    from aioprefactor._runs import requests  # noqa: PLC0415 - the unit under test
    from aioprefactor._runs.records import End, RecordingState, RunRecord, SpanRecord, now  # noqa: PLC0415
    from aioprefactor._wire.models import AgentSchemaVersion, AgentVersion, RegisterRequest  # noqa: PLC0415

    registration = RegisterRequest(
        agent_version=AgentVersion(name="n", external_identifier="1"),
        agent_schema_version=AgentSchemaVersion(external_identifier="s"),
        update_current_version=True,
    )
    run = RunRecord(registration)
    run.id = "inst-1"
    span = SpanRecord(run, None, "agent:step", {"k": 1})
    op = requests.Op(requests.Kind.CREATE, span, deadline=0.0)
    item = requests.bulk_item(op)
    span.end = End("complete", now(), {"r": 1})
    _, _, body, _ = requests.request(op)
    assert body is not None
    sent = msgspec.json.decode(body)["details"]
    assert item["status"] == sent["status"] == "active"
    assert item["idempotency_key"] == sent["idempotency_key"]
    assert "finished_at" not in sent
    assert RecordingState.QUEUED is span.state


def test_a_run_can_be_terminated_while_its_register_is_in_flight() -> None:
    """An instance the server answers as terminated is recorded so, from any open state."""
    from aioprefactor._runs.records import RecordingState, RunRecord  # noqa: PLC0415
    from aioprefactor._wire.models import AgentSchemaVersion, AgentVersion, RegisterRequest  # noqa: PLC0415

    run = RunRecord(
        RegisterRequest(
            agent_version=AgentVersion(name="n", external_identifier="1"),
            agent_schema_version=AgentSchemaVersion(external_identifier="s"),
            update_current_version=True,
        )
    )
    run.move(RecordingState.REGISTERING)
    run.move(RecordingState.TERMINATED)
    assert run.settled
