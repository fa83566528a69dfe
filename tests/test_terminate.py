"""Stopping a run from the server: the control signal, polling, ``on_terminate``, sync code."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

import aioprefactor
from aioprefactor import AgentTerminated, Client, span

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from aioprefactor import InstanceRun
    from aioprefactor.testing import LocalPrefactor, RecordedRequest

VERSION: dict[str, Any] = {"name": "Stoppable agent", "external_identifier": "1.0.0"}
GUARD = 20.0  # seconds: only a guard against a hang, never the bound a test checks
FOREVER = 600.0  # a sleep the block never finishes when it is stopped
POLL = 0.1  # the termination poll interval of the polling tests, in seconds


@pytest.fixture
async def make_client(prefactor_api: LocalPrefactor) -> AsyncIterator[Callable[..., Client]]:
    """Build clients bound to the local API (no polling unless asked); all closed afterwards."""
    made: list[Client] = []

    def make(**options: Any) -> Client:
        settings: dict[str, Any] = {"termination_poll_interval": None, **options}
        client = Client(api_url=prefactor_api.url, api_token=prefactor_api.token, **settings)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


def sent(api: LocalPrefactor, route: str) -> list[RecordedRequest]:
    """The requests to ``route`` the local API received so far."""
    return [request for request in api.requests if request.route == route]


def polls_of(api: LocalPrefactor, instance_id: str) -> int:
    """How many GETs of ``instance_id`` the local API received so far."""
    return sum(
        1 for request in sent(api, "agent_instances.get") if request.path.endswith(instance_id)
    )


async def eventually(check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds (failing after the guard)."""
    async with asyncio.timeout(GUARD):
        while not check():  # noqa: ASYNC110 - the local API has no hook to wait on
            await asyncio.sleep(0.01)


def wait_in_thread(check: Callable[[], bool]) -> None:
    """Block this thread until ``check()`` holds (failing after the guard)."""
    deadline = time.monotonic() + GUARD
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


# --- the control signal on a span answer ----------------------------------------------------


async def test_the_signal_cancels_the_block_and_raises_agent_terminated(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """AgentTerminated with the reason and id, the block stopped mid-await, no finish sent."""
    client = make_client()
    reached: list[str] = []
    runs: list[InstanceRun] = []

    async def agent() -> None:
        async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            runs.append(run)
            instance_id = await run.wait_recorded()
            assert instance_id is not None
            prefactor_api.terminate(instance_id, "over budget")
            async with span("agent:step"):  # its create's answer carries the signal
                reached.append("step")
                await asyncio.sleep(FOREVER)
                reached.append("slept")
            reached.append("after the span")

    with pytest.raises(AgentTerminated) as caught:
        await asyncio.wait_for(agent(), GUARD)
    run = runs[0]
    assert run.id is not None
    assert ["step"] == reached
    assert "over budget" == caught.value.reason
    assert run.id == caught.value.instance_id
    assert isinstance(caught.value.__cause__, asyncio.CancelledError)
    assert run.terminated
    assert "over budget" == run.termination_reason
    assert await client.flush()
    assert [] == sent(prefactor_api, "agent_instances.finish")
    assert "terminated" == prefactor_api.instance(run.id)["status"]
    assert ["cancelled"] == [s["status"] for s in prefactor_api.spans(run.id)]


async def test_a_stopped_task_is_not_left_cancelling(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """The task that caught AgentTerminated awaits on normally: its cancel request is undone."""
    client = make_client()

    async def agent() -> None:
        async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            instance_id = await run.wait_recorded()
            assert instance_id is not None
            prefactor_api.terminate(instance_id)
            async with span("agent:step"):
                await asyncio.sleep(FOREVER)

    async with asyncio.timeout(GUARD):
        with pytest.raises(AgentTerminated):
            await agent()  # in this task: the one the terminate cancels
        task = asyncio.current_task()
        assert task is not None
        assert 0 == task.cancelling()
        await asyncio.sleep(0.01)  # not cancelled again


async def test_open_spans_are_finished_cancelled(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """Every span open when the block is stopped is finished 'cancelled' on the server."""
    client = make_client()
    ids: list[str] = []

    async def agent() -> None:
        async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            instance_id = await run.wait_recorded()
            assert instance_id is not None
            ids.append(instance_id)
            async with span("agent:outer"), span("agent:middle"):
                assert await client.flush()  # both created, still open
                prefactor_api.terminate(instance_id, "stop")
                async with span("agent:inner"):
                    await asyncio.sleep(FOREVER)

    with pytest.raises(AgentTerminated):
        await asyncio.wait_for(agent(), GUARD)
    assert await client.flush()
    spans = {s["schema_name"]: s["status"] for s in prefactor_api.spans(ids[0])}
    assert {
        "agent:outer": "cancelled",
        "agent:middle": "cancelled",
        "agent:inner": "cancelled",
    } == spans


async def test_a_span_opened_after_the_stop_raises_agent_terminated(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """A block that swallows the cancellation gets AgentTerminated at its next span."""
    client = make_client()
    reached: list[str] = []
    ids: list[str] = []

    async def agent() -> None:
        async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            instance_id = await run.wait_recorded()
            assert instance_id is not None
            ids.append(instance_id)
            prefactor_api.terminate(instance_id, "stop")
            try:
                async with span("agent:step"):
                    await asyncio.sleep(FOREVER)
            except asyncio.CancelledError:
                reached.append("swallowed")
            async with span("agent:next"):
                reached.append("next")

    with pytest.raises(AgentTerminated, match="stop"):
        await asyncio.wait_for(agent(), GUARD)
    assert ["swallowed"] == reached
    assert await client.flush()
    assert ["agent:step"] == [s["schema_name"] for s in prefactor_api.spans(ids[0])]


async def test_a_decorated_entrypoint_raises_agent_terminated(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """The caller of a decorated coroutine gets AgentTerminated; its root span is cancelled."""
    client = make_client()
    reached: list[str] = []

    @client.agent_instance(agent_id="a", agent_version=VERSION, capture=True)
    async def agent(task: str) -> str:
        run = aioprefactor.current_instance()
        assert run is not None
        instance_id = await run.wait_recorded()
        assert instance_id is not None
        assert await client.flush()  # the root span is created
        prefactor_api.terminate(instance_id, "operator stop")
        async with span("agent:step"):  # its create's answer carries the signal
            await asyncio.sleep(FOREVER)
        reached.append("returned")
        return task

    with pytest.raises(AgentTerminated) as caught:
        await asyncio.wait_for(agent("write"), GUARD)
    assert [] == reached
    assert "operator stop" == caught.value.reason
    instance_id = caught.value.instance_id
    assert instance_id is not None
    assert await client.flush()
    assert "terminated" == prefactor_api.instance(instance_id)["status"]
    spans = {s["schema_name"]: s for s in prefactor_api.spans(instance_id)}
    assert "cancelled" == spans["agent:run"]["status"]
    assert {"task": "write"} == spans["agent:run"]["payload"]
    assert "cancelled" == spans["agent:step"]["status"]
    assert [] == sent(prefactor_api, "agent_instances.finish")


async def test_a_decorated_async_generator_raises_agent_terminated(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """The consumer of a decorated async generator gets AgentTerminated mid-iteration."""
    client = make_client()

    @client.agent_instance(agent_id="a", agent_version=VERSION)
    async def agent() -> AsyncIterator[int]:
        run = aioprefactor.current_instance()
        assert run is not None
        instance_id = await run.wait_recorded()
        assert instance_id is not None
        yield 1
        prefactor_api.terminate(instance_id, "enough")
        async with span("agent:step"):
            await asyncio.sleep(FOREVER)
        yield 2

    iterator = agent()
    async with asyncio.timeout(GUARD):  # iterated in this task: the one the terminate cancels
        assert 1 == await anext(iterator)
        with pytest.raises(AgentTerminated, match="enough"):
            await anext(iterator)
    with pytest.raises(StopAsyncIteration):
        await anext(iterator)


# --- polling a quiet run --------------------------------------------------------------------


async def test_polling_stops_a_quiet_run(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """A run that sends nothing is stopped once a poll sees 'terminated'; only GETs found it."""
    client = make_client(termination_poll_interval=POLL)
    reached: list[str] = []
    runs: list[InstanceRun] = []
    recorded = asyncio.Event()

    async def agent() -> None:
        async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            runs.append(run)
            await run.wait_recorded()
            recorded.set()
            await asyncio.sleep(FOREVER)
            reached.append("slept")

    task = asyncio.create_task(agent())
    await asyncio.wait_for(recorded.wait(), GUARD)
    instance_id = runs[0].id
    assert instance_id is not None
    before = len(prefactor_api.requests)
    prefactor_api.terminate(instance_id, "polled")
    with pytest.raises(AgentTerminated, match="polled"):
        await asyncio.wait_for(task, GUARD)
    assert [] == reached
    assert "polled" == runs[0].termination_reason
    after = prefactor_api.requests[before:]
    assert len(after) >= 1
    assert {("GET", f"/api/v1/agent_instance/{instance_id}")} == {
        (request.method, request.path) for request in after
    }
    assert await client.flush()
    assert [] == sent(prefactor_api, "agent_instances.finish")


async def test_a_quiet_run_is_polled_on_every_interval(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """About one GET per interval: a poll's own (slow) answer does not make the run look busy."""
    interval = 0.2
    client = make_client(termination_poll_interval=interval)
    prefactor_api.faults.latency(interval / 4, route="agent_instances.get")
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        instance_id = await run.wait_recorded()
        assert instance_id is not None
        await eventually(lambda: polls_of(prefactor_api, instance_id) >= 1)
        first = time.monotonic()
        await asyncio.sleep(20 * interval)
        polls = polls_of(prefactor_api, instance_id) - 1
        window = time.monotonic() - first
    ticks = window / interval
    # Never more than one per tick; and not every other tick (that would be ticks / 2).
    assert polls <= ticks + 1
    assert polls >= 0.7 * ticks


async def test_a_busy_run_is_not_polled(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """A run whose spans are answered more often than the interval gets no GET."""
    interval = 1.0
    client = make_client(termination_poll_interval=interval)
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        instance_id = await run.wait_recorded()
        assert instance_id is not None
        until = time.monotonic() + 3 * interval
        while time.monotonic() < until:
            async with span("agent:step"):
                pass
            assert await client.flush()
            await asyncio.sleep(interval / 20)
    assert 0 == polls_of(prefactor_api, instance_id)


async def test_one_poll_loop_serves_many_runs_and_forgets_ended_ones(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """20 quiet runs: one delivery thread, at most one GET per run per interval, none once ended."""

    def threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "aioprefactor-delivery"}

    before_threads = threads()
    client = make_client(termination_poll_interval=POLL)
    count = 20
    done = [asyncio.Event() for _ in range(count)]
    recorded: list[str] = []

    async def agent(index: int) -> None:
        async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            instance_id = await run.wait_recorded()
            assert instance_id is not None
            recorded.append(instance_id)
            await done[index].wait()

    began = time.monotonic()
    tasks = [asyncio.create_task(agent(index)) for index in range(count)]
    await eventually(lambda: len(recorded) == count)
    await eventually(lambda: all(polls_of(prefactor_api, i) >= 2 for i in recorded))
    assert 1 == len(threads() - before_threads)
    ticks = (time.monotonic() - began) / POLL
    gets = len(sent(prefactor_api, "agent_instances.get"))
    assert gets <= count * (ticks + 1)
    assert all(polls_of(prefactor_api, i) <= ticks + 1 for i in recorded)

    # End half of them: the others are still polled, the ended ones never again.
    for event in done[: count // 2]:
        event.set()
    await asyncio.gather(*tasks[: count // 2])
    assert await client.flush()
    ended = [run_id for run_id in recorded if prefactor_api.instance(run_id)["status"] != "active"]
    assert count // 2 == len(ended)
    live = [run_id for run_id in recorded if run_id not in ended]
    polled_ended = {run_id: polls_of(prefactor_api, run_id) for run_id in ended}
    polled_live = {run_id: polls_of(prefactor_api, run_id) for run_id in live}
    await eventually(lambda: all(polls_of(prefactor_api, i) >= polled_live[i] + 2 for i in live))
    assert polled_ended == {run_id: polls_of(prefactor_api, run_id) for run_id in ended}

    for event in done:
        event.set()
    await asyncio.gather(*tasks)
    assert await client.flush()
    total = len(sent(prefactor_api, "agent_instances.get"))
    await asyncio.sleep(5 * POLL)
    assert total == len(sent(prefactor_api, "agent_instances.get"))


@pytest.mark.parametrize("interval", [None, POLL])
async def test_polling_off_sends_no_get(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client], interval: float | None
) -> None:
    """With termination_poll_interval=None a quiet terminated block runs on; with polling, not."""
    client = make_client(termination_poll_interval=interval)
    reached: list[str] = []

    async def agent() -> None:
        async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            instance_id = await run.wait_recorded()
            assert instance_id is not None
            prefactor_api.terminate(instance_id, "stop")
            await asyncio.sleep(10 * POLL)
            reached.append("slept")
            assert [] == sent(prefactor_api, "agent_instances.get")

    if interval is None:
        await asyncio.wait_for(agent(), GUARD)
        assert ["slept"] == reached
    else:
        with pytest.raises(AgentTerminated):
            await asyncio.wait_for(agent(), GUARD)
        assert [] == reached


# --- on_terminate="record" ------------------------------------------------------------------


async def test_on_terminate_record_only_sets_the_flags(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """The block runs to its end; run.terminated and the reason are set; no finish is sent."""
    client = make_client(termination_poll_interval=POLL)
    reached: list[str] = []
    scope = client.agent_instance(agent_id="a", agent_version=VERSION, on_terminate="record")
    async with asyncio.timeout(GUARD), scope as run:
        instance_id = await run.wait_recorded()
        assert instance_id is not None
        prefactor_api.terminate(instance_id, "recorded only")
        await eventually(lambda: run.terminated)  # seen by a poll
        async with span("agent:after") as after:
            await asyncio.sleep(2 * POLL)
            reached.append("slept")
        reached.append("ended")
    assert ["slept", "ended"] == reached
    assert "recorded only" == run.termination_reason
    assert "complete" == run.status
    assert await client.flush()
    assert after.id is None  # nothing more is sent for a terminated instance
    assert [] == sent(prefactor_api, "agent_instances.finish")
    assert [] == sent(prefactor_api, "agent_spans.create")
    assert "terminated" == prefactor_api.instance(instance_id)["status"]


# --- sync code ------------------------------------------------------------------------------


async def test_sync_block_raises_at_the_next_span_enter(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """A sync block (in a thread) gets AgentTerminated when it next opens a span."""
    client = make_client(termination_poll_interval=POLL)
    recorded = threading.Event()
    reached: list[str] = []
    runs: list[InstanceRun] = []

    def agent() -> None:
        with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            runs.append(run)
            run.wait_recorded_sync()
            recorded.set()
            wait_in_thread(lambda: run.terminated)  # a poll saw it; nothing was interrupted
            reached.append("running")
            with span("agent:next"):
                reached.append("in the span")

    worker = asyncio.create_task(asyncio.to_thread(agent))
    assert await asyncio.to_thread(recorded.wait, GUARD)
    run = runs[0]
    assert run.id is not None
    prefactor_api.terminate(run.id, "sync stop")
    with pytest.raises(AgentTerminated) as caught:
        await asyncio.wait_for(worker, GUARD)
    assert ["running"] == reached
    assert ("sync stop", run.id) == (caught.value.reason, caught.value.instance_id)
    assert await client.flush()
    assert [] == prefactor_api.spans(run.id)
    assert [] == sent(prefactor_api, "agent_instances.finish")


async def test_sync_block_raises_at_the_next_span_exit(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """A sync span whose answer carries the signal raises AgentTerminated as it exits."""
    client = make_client()
    recorded = threading.Event()
    terminated = threading.Event()
    reached: list[str] = []
    runs: list[InstanceRun] = []

    def agent() -> None:
        with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            runs.append(run)
            with span("agent:outer"):
                run.wait_recorded_sync()
                assert client.flush_sync(GUARD)  # the outer span is created
                recorded.set()
                assert terminated.wait(GUARD)
                with span("agent:step"):
                    assert client.flush_sync(GUARD)  # its create's answer carries the signal
                    reached.append("step done")
                reached.append("after the step")

    worker = asyncio.create_task(asyncio.to_thread(agent))
    assert await asyncio.to_thread(recorded.wait, GUARD)
    run = runs[0]
    assert run.id is not None
    prefactor_api.terminate(run.id, "at exit")
    terminated.set()
    with pytest.raises(AgentTerminated, match="at exit"):
        await asyncio.wait_for(worker, GUARD)
    assert ["step done"] == reached
    assert run.terminated
    assert await client.flush()
    spans = {s["schema_name"]: s for s in prefactor_api.spans(run.id)}
    assert "complete" == spans["agent:step"]["status"]  # its body ran to the end
    assert "cancelled" == spans["agent:outer"]["status"]  # stopped: cancelled, not failed
    assert spans["agent:outer"]["result_payload"] is None
    assert [] == sent(prefactor_api, "agent_instances.finish")


async def test_a_decorated_sync_entrypoint_raises_agent_terminated(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """The caller of a decorated def function gets AgentTerminated from its next span."""
    client = make_client(termination_poll_interval=POLL)
    recorded = threading.Event()
    ids: list[str] = []

    @client.agent_instance(agent_id="a", agent_version=VERSION)
    def agent() -> str:
        run = aioprefactor.current_instance()
        assert run is not None
        instance_id = run.wait_recorded_sync()
        assert instance_id is not None
        ids.append(instance_id)
        recorded.set()
        wait_in_thread(lambda: run.terminated)
        with span("agent:step"):
            return "done"

    worker = asyncio.create_task(asyncio.to_thread(agent))
    assert await asyncio.to_thread(recorded.wait, GUARD)
    prefactor_api.terminate(ids[0], "sync entrypoint")
    with pytest.raises(AgentTerminated) as caught:
        await asyncio.wait_for(worker, GUARD)
    assert ("sync entrypoint", ids[0]) == (caught.value.reason, caught.value.instance_id)


# --- a terminate that comes after the block ---------------------------------------------------


async def test_a_terminate_after_the_finish_changes_nothing(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """A run already finished stays complete: the server refuses the terminate."""
    client = make_client(termination_poll_interval=POLL)
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        pass
    assert await client.flush()
    assert run.id is not None
    with pytest.raises(ValueError, match="complete"):
        prefactor_api.terminate(run.id, "too late")
    await asyncio.sleep(3 * POLL)
    assert (False, None, "complete") == (run.terminated, run.termination_reason, run.status)
    assert "complete" == prefactor_api.instance(run.id)["status"]


async def test_a_terminate_before_the_finish_lands_is_recorded_not_raised(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """Block ended, finish in flight, then terminated: nothing raised, the server's truth kept."""
    client = make_client(termination_poll_interval=POLL)
    prefactor_api.faults.latency(0.3, n=1, route="agent_instances.finish")
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        instance_id = await run.wait_recorded()
        assert instance_id is not None
    await eventually(lambda: len(sent(prefactor_api, "agent_instances.finish")) == 1)
    prefactor_api.terminate(instance_id, "raced the finish")
    await asyncio.sleep(3 * POLL)  # the caller goes on, and is not interrupted
    assert await client.flush()
    task = asyncio.current_task()
    assert task is not None
    assert 0 == task.cancelling()
    assert "complete" == run.status  # how the block ended
    assert (True, "raced the finish") == (run.terminated, run.termination_reason)
    assert run.telemetry_error is None
    assert [409] == [r.status for r in sent(prefactor_api, "agent_instances.finish")]
    assert "terminated" == prefactor_api.instance(instance_id)["status"]


@pytest.fixture
def api_in_thread() -> Iterator[tuple[LocalPrefactor, asyncio.AbstractEventLoop]]:
    """A local API served by an event loop of its own, in another thread."""
    from aioprefactor.testing import LocalPrefactor  # noqa: PLC0415 - the fixture's own loop

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="local-api", daemon=True)
    thread.start()
    api = LocalPrefactor()
    try:
        asyncio.run_coroutine_threadsafe(api.start(), loop).result(GUARD)
        yield api, loop
    finally:
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(GUARD)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(GUARD)
        loop.close()


async def test_a_stop_that_lands_after_the_block_ended_is_dropped(
    api_in_thread: tuple[LocalPrefactor, asyncio.AbstractEventLoop],
) -> None:
    """Signal seen while the block could not yield, block then ended: the task is not cancelled."""
    api, api_loop = api_in_thread
    async with Client(
        api_url=api.url, api_token=api.token, termination_poll_interval=None
    ) as client:
        async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            instance_id = await run.wait_recorded(GUARD)
            assert instance_id is not None

            async def terminate() -> None:
                api.terminate(instance_id, "late")

            # Blocking here is fine: the API answers from its own loop.
            asyncio.run_coroutine_threadsafe(terminate(), api_loop).result(GUARD)
            async with span("agent:step"):
                pass
            # Blocks this loop until the span's answer (with the signal) was handled.
            assert client.flush_sync(GUARD)
            assert run.terminated
        await asyncio.sleep(0.2)  # after the block: nothing may cancel this task
        task = asyncio.current_task()
        assert task is not None
        assert 0 == task.cancelling()
    assert "complete" == run.status


async def test_the_command_line_stops_a_running_agent(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """`python -m aioprefactor terminate ID` stops a block that is awaiting, as polled."""
    client = make_client(termination_poll_interval=POLL)
    recorded = asyncio.Event()
    runs: list[InstanceRun] = []

    async def agent() -> None:
        async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            runs.append(run)
            await run.wait_recorded()
            recorded.set()
            await asyncio.sleep(FOREVER)

    task = asyncio.create_task(agent())
    await asyncio.wait_for(recorded.wait(), GUARD)
    instance_id = runs[0].id
    assert instance_id is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFACTOR_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioprefactor",
        "terminate",
        instance_id,
        "--url",
        prefactor_api.url,
        "--token",
        prefactor_api.token,
        "--reason",
        "from the shell",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), GUARD)
    assert 0 == process.returncode, output.decode()
    with pytest.raises(AgentTerminated) as caught:
        await asyncio.wait_for(task, GUARD)
    assert "from the shell" == caught.value.reason
