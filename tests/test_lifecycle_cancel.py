from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from aioprefactor import RecordingState

if TYPE_CHECKING:
    from aioprefactor import Client, InstanceRun
    from aioprefactor.testing import LocalPrefactor, RecordedRequest


pytestmark = pytest.mark.inline
VERSION: dict[str, Any] = {"name": "Cancel agent", "external_identifier": "1.0.0"}
SLOW = 0.3  # seconds the fault plan holds a request; the test cancels meanwhile


def requests_to(api: LocalPrefactor, route: str, instance_id: str | None = None) -> list[Any]:
    """The requests to ``route`` (for one instance, when given), in arrival order."""
    found: list[RecordedRequest] = [r for r in api.requests if r.route == route]
    if instance_id is not None:
        found = [r for r in found if f"/agent_instance/{instance_id}/" in r.path]
    return found


def effects(api: LocalPrefactor, route: str, instance_id: str | None = None) -> list[Any]:
    """The bodies of the requests to ``route`` that took effect (a dropped one did too)."""
    return [
        r.body
        for r in requests_to(api, route, instance_id)
        if not r.replayed and ("drop" in r.faults or (r.status is not None and r.status < 300))
    ]


async def arrived(api: LocalPrefactor, route: str, count: int = 1) -> None:
    """Wait until ``count`` requests to ``route`` have reached the API."""
    async with asyncio.timeout(5):
        while len(requests_to(api, route)) < count:  # noqa: ASYNC110 - the API has no hook
            await asyncio.sleep(0.005)


def the_one_instance(api: LocalPrefactor) -> dict[str, Any]:
    [instance] = api.instances()
    return instance


@pytest.mark.parametrize("route", ["agent_instances.register", "agent_instances.start"])
async def test_cancelled_while_entering_finishes_cancelled_once(
    prefactor_api: LocalPrefactor, prefactor_client: Client, route: str
) -> None:
    """Cancelled: a run cancelled during register or start; the block never runs."""
    prefactor_api.faults.latency(SLOW, route=route, n=1)
    ran = False

    async def agent() -> None:
        nonlocal ran
        async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION):
            ran = True

    task = asyncio.create_task(agent())
    await arrived(prefactor_api, route)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert not ran
    await prefactor_client.flush()
    instance = the_one_instance(prefactor_api)
    assert instance["status"] == "cancelled"
    assert len(effects(prefactor_api, "agent_instances.register")) == 1
    assert [b["status"] for b in effects(prefactor_api, "agent_instances.finish")] == ["cancelled"]
    assert len(requests_to(prefactor_api, "agent_instances.finish")) == 1


@pytest.mark.parametrize("route", ["agent_instances.register", "agent_instances.start"])
async def test_cancelled_while_entering_is_finished_before_the_cancel_propagates(
    prefactor_api: LocalPrefactor, prefactor_client: Client, route: str
) -> None:
    """Cancelled: by the time the CancelledError reaches the caller, the server knows."""
    prefactor_api.faults.latency(SLOW, route=route, n=1)
    task = asyncio.create_task(
        prefactor_client.agent_instance(agent_id="a", agent_version=VERSION).__aenter__()
    )
    await arrived(prefactor_api, route)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert the_one_instance(prefactor_api)["status"] == "cancelled"


async def test_cancelled_inside_the_block_finishes_cancelled_once(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Cancelled: one finish, sent before the task ends, and nothing more after a flush."""
    runs: list[InstanceRun] = []
    inside = asyncio.Event()

    async def agent() -> None:
        async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            runs.append(run)
            inside.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(agent())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [run] = runs
    assert prefactor_api.instance(run.id or "")["status"] == "cancelled"
    await prefactor_client.flush()
    assert [b["status"] for b in effects(prefactor_api, "agent_instances.finish")] == ["cancelled"]
    assert len(requests_to(prefactor_api, "agent_instances.finish")) == 1


@pytest.mark.parametrize(
    ("ending", "expected"),
    [("return", "complete"), ("raise", "failed"), ("cancelled", "cancelled")],
)
async def test_cancelled_during_the_finish_keeps_the_block_status(
    prefactor_api: LocalPrefactor, prefactor_client: Client, ending: str, expected: str
) -> None:
    """The block's status: a cancel during the finish propagates, the finish still lands."""
    prefactor_api.faults.latency(SLOW, route="agent_instances.finish", n=1)
    runs: list[InstanceRun] = []
    inside = asyncio.Event()
    error = ValueError("block failed")

    async def agent() -> None:
        async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            runs.append(run)
            inside.set()
            if ending == "raise":
                raise error
            if ending == "cancelled":
                await asyncio.sleep(10)

    task = asyncio.create_task(agent())
    await inside.wait()
    if ending == "cancelled":
        task.cancel()
    await arrived(prefactor_api, "agent_instances.finish")
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as caught:
        await task
    assert task.cancelled()
    [run] = runs
    assert run.status == expected
    if ending == "raise":
        assert caught.value.__context__ is error
    await prefactor_client.flush()
    assert prefactor_api.instance(run.id or "")["status"] == expected
    assert [b["status"] for b in effects(prefactor_api, "agent_instances.finish")] == [expected]
    assert len(requests_to(prefactor_api, "agent_instances.finish")) == 1
    assert run.state is RecordingState.FINISHED


async def test_cancel_during_the_finish_propagates_with_the_block_exception_as_context(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """The block's exception: it is the context of the CancelledError that interrupts the finish."""
    prefactor_api.faults.latency(SLOW, route="agent_instances.finish", n=1)
    error = KeyError("tool")
    caught: list[BaseException] = []

    async def agent() -> None:
        try:
            async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION):
                raise error
        except BaseException as exc:
            caught.append(exc)
            raise

    task = asyncio.create_task(agent())
    await arrived(prefactor_api, "agent_instances.finish")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [cancel] = caught
    assert isinstance(cancel, asyncio.CancelledError)
    assert cancel.__context__ is error
    await prefactor_client.flush()
    assert [b["status"] for b in effects(prefactor_api, "agent_instances.finish")] == ["failed"]


async def test_slow_finish_goes_on_in_the_background(
    prefactor_api: LocalPrefactor, prefactor_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Complete: a finish slower than finish_timeout lands after flush(), exactly once."""
    prefactor_api.faults.latency(SLOW, route="agent_instances.finish", n=1)
    scope = prefactor_client.agent_instance(
        agent_id="a", agent_version=VERSION, finish_timeout=0.05
    )
    async with scope as run:
        pass
    assert run.status == "complete"
    assert prefactor_api.instance(run.id or "")["status"] == "active"
    assert any("background" in r.getMessage() for r in caplog.records)
    await prefactor_client.flush()
    assert prefactor_api.instance(run.id or "")["status"] == "complete"
    assert len(requests_to(prefactor_api, "agent_instances.finish")) == 1


async def test_aclose_sends_the_finish_still_in_flight(prefactor_api: LocalPrefactor) -> None:
    """Complete: client.aclose() waits for a finish still on its way."""
    from aioprefactor import Client  # noqa: PLC0415 - the test owns this client

    prefactor_api.faults.latency(SLOW, route="agent_instances.finish", n=1)
    client = Client(api_url=prefactor_api.url, api_token=prefactor_api.token)
    scope = client.agent_instance(agent_id="a", agent_version=VERSION, finish_timeout=0.05)
    async with scope as run:
        pass
    await client.aclose()
    assert prefactor_api.instance(run.id or "")["status"] == "complete"


@pytest.mark.parametrize(
    "route", ["agent_instances.register", "agent_instances.start", "agent_instances.finish"]
)
@pytest.mark.parametrize("fault", ["503", "drop"])
async def test_retried_requests_take_effect_once(
    prefactor_api: LocalPrefactor, prefactor_client: Client, route: str, fault: str
) -> None:
    """One effect per step: a request retried after a 503 or a lost response acts once."""
    if fault == "503":
        prefactor_api.faults.fail_next(1, 503, route=route)
    else:
        prefactor_api.faults.drop_after_effect(1, route=route)
    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        assert run.telemetry_error is None
    assert run.id is not None
    assert len(prefactor_api.instances()) == 1
    for step in ("agent_instances.register", "agent_instances.start", "agent_instances.finish"):
        assert len(effects(prefactor_api, step)) == 1, step
    assert len(requests_to(prefactor_api, route)) == 2
    assert prefactor_api.instance(run.id)["status"] == "complete"


async def test_cancelled_span_during_its_create_is_finished_cancelled(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Cancelled: a span cancelled while it is being created is still finished, once."""
    import aioprefactor  # noqa: PLC0415 - span() is the module-level door

    prefactor_api.faults.latency(SLOW, route="agent_spans.create", n=1)
    runs: list[InstanceRun] = []
    ran = False

    async def agent() -> None:
        nonlocal ran
        async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            runs.append(run)
            async with aioprefactor.span("agent:step"):
                ran = True

    task = asyncio.create_task(agent())
    await arrived(prefactor_api, "agent_spans.create")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not ran
    await prefactor_client.flush()
    [run] = runs
    assert run.id is not None
    [server_span] = prefactor_api.spans(run.id)
    assert server_span["status"] == "cancelled"
    assert prefactor_api.instance(run.id)["status"] == "cancelled"
    assert len(requests_to(prefactor_api, "agent_spans.finish")) == 1


async def test_timeout_expiring_during_the_finish_keeps_complete(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Complete: an asyncio.timeout that expires while a clean block's finish is in flight."""
    prefactor_api.faults.latency(SLOW, route="agent_instances.finish", n=1)
    runs: list[InstanceRun] = []

    async def agent() -> None:
        scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
        async with asyncio.timeout(0.1), scope as run:
            runs.append(run)

    with pytest.raises(TimeoutError):
        await agent()
    await prefactor_client.flush()
    [run] = runs
    assert run.status == "complete"
    assert prefactor_api.instance(run.id or "")["status"] == "complete"
    assert len(requests_to(prefactor_api, "agent_instances.finish")) == 1


async def test_cancelled_while_entering_and_again_while_finishing(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Cancelled: a second cancel during the entering run's finish propagates; it still lands."""
    prefactor_api.faults.latency(SLOW, route="agent_instances.register", n=1)
    prefactor_api.faults.latency(SLOW, route="agent_instances.finish", n=1)

    async def agent() -> None:
        async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION):
            pytest.fail("the block must not run")

    task = asyncio.create_task(agent())
    await arrived(prefactor_api, "agent_instances.register")
    task.cancel()
    await arrived(prefactor_api, "agent_instances.finish")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    await prefactor_client.flush()
    assert the_one_instance(prefactor_api)["status"] == "cancelled"
    assert len(requests_to(prefactor_api, "agent_instances.finish")) == 1


async def test_block_cancelled_while_a_late_enter_is_still_in_flight(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Cancelled: the block ran fail-open past its enter budget; the late run is finished."""
    prefactor_api.faults.latency(0.6, route="agent_instances.register", n=1)
    inside = asyncio.Event()

    async def agent() -> None:
        scope = prefactor_client.agent_instance(
            agent_id="a", agent_version=VERSION, enter_timeout=0.1
        )
        async with scope:
            inside.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(agent())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await prefactor_client.flush()
    assert the_one_instance(prefactor_api)["status"] == "cancelled"
    assert [b["status"] for b in effects(prefactor_api, "agent_instances.finish")] == ["cancelled"]
