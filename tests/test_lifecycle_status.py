from __future__ import annotations

import asyncio
import traceback
from typing import TYPE_CHECKING, Any

import pytest

import aioprefactor

if TYPE_CHECKING:
    from collections.abc import Callable

    from aioprefactor import Client, InstanceRun, SpanRun
    from aioprefactor.testing import LocalPrefactor


pytestmark = pytest.mark.inline
VERSION: dict[str, Any] = {"name": "Status agent", "external_identifier": "1.0.0"}


def finish_bodies(api: LocalPrefactor, instance_id: str | None) -> list[Any]:
    """The bodies of the finish requests the API received for one instance."""
    assert instance_id is not None
    path = f"/api/v1/agent_instance/{instance_id}/finish"
    return [r.body for r in api.requests if r.route == "agent_instances.finish" and r.path == path]


def assert_finished_once(api: LocalPrefactor, run: InstanceRun, status: str) -> None:
    """One finish request with ``status``, and the server holds ``status``."""
    assert run.id is not None
    assert run.status == status
    assert [body["status"] for body in finish_bodies(api, run.id)] == [status]
    assert api.instance(run.id)["status"] == status


def system_exit(code: object) -> SystemExit:
    return SystemExit(code) if code != "no-arg" else SystemExit()


async def test_return_finishes_complete(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Complete: a block that falls off its end finishes complete, once."""
    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        assert run.status is None
        assert prefactor_api.instance(run.id or "")["status"] == "active"
    assert_finished_once(prefactor_api, run, "complete")


async def test_decorated_return_finishes_complete(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Complete: a decorated coroutine that returns finishes complete and keeps its value."""
    seen: list[InstanceRun] = []

    @prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
    async def main() -> int:
        run = aioprefactor.current_instance()
        assert run is not None
        seen.append(run)
        return 42

    assert await main() == 42
    assert_finished_once(prefactor_api, seen[0], "complete")


async def test_exception_finishes_failed_and_is_reraised_unchanged(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Failed: the block's exception propagates as the same object, with its traceback."""
    error = ValueError("boom")

    def explode() -> None:
        raise error

    with pytest.raises(ValueError, match="boom") as caught:
        async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            explode()
    assert caught.value is error
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert frames[-1] == "explode"
    assert "test_exception_finishes_failed_and_is_reraised_unchanged" in frames
    assert error.__cause__ is None
    assert error.__context__ is None
    assert_finished_once(prefactor_api, run, "failed")


async def test_exception_group_from_task_group_finishes_failed(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Failed: an ExceptionGroup raised by a TaskGroup whose child failed."""

    async def fail() -> None:
        raise KeyError("tool")

    runs: list[InstanceRun] = []

    async def agent() -> None:
        scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
        async with scope as run, asyncio.TaskGroup() as group:
            runs.append(run)
            group.create_task(fail())
            group.create_task(asyncio.sleep(10))

    with pytest.raises(ExceptionGroup) as caught:
        await agent()
    assert caught.group_contains(KeyError)
    assert_finished_once(prefactor_api, runs[0], "failed")


@pytest.mark.parametrize(
    ("make_group", "expected"),
    [
        (lambda: BaseExceptionGroup("c", [asyncio.CancelledError()]), "cancelled"),
        (
            lambda: BaseExceptionGroup(
                "c", [asyncio.CancelledError(), BaseExceptionGroup("n", [KeyboardInterrupt()])]
            ),
            "cancelled",
        ),
        (lambda: BaseExceptionGroup("m", [asyncio.CancelledError(), ValueError()]), "failed"),
        (lambda: ExceptionGroup("e", [ValueError(), TypeError()]), "failed"),
    ],
    ids=["only-cancelled", "nested-cancellations", "cancelled-and-error", "errors"],
)
async def test_exception_group_status(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    make_group: Callable[[], BaseExceptionGroup[BaseException]],
    expected: str,
) -> None:
    """Cancelled only when the group holds nothing but cancellations, else failed."""
    group = make_group()
    with pytest.raises(BaseExceptionGroup) as caught:
        async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            raise group
    assert caught.value is group
    assert_finished_once(prefactor_api, run, expected)


async def test_task_cancel_finishes_cancelled_and_task_ends_cancelled(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Cancelled: task.cancel() in the block; the task still ends cancelled afterwards."""
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
    assert task.cancelled()
    assert_finished_once(prefactor_api, runs[0], "cancelled")


async def test_cancel_message_propagates(prefactor_client: Client) -> None:
    """The CancelledError that propagates is the block's, message kept."""
    inside = asyncio.Event()
    caught: list[BaseException] = []

    async def agent() -> None:
        try:
            async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION):
                inside.set()
                await asyncio.sleep(10)
        except asyncio.CancelledError as exc:
            caught.append(exc)
            raise

    task = asyncio.create_task(agent())
    await inside.wait()
    task.cancel("stop now")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert caught[0].args == ("stop now",)


async def test_timeout_expiry_finishes_cancelled(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Cancelled: an asyncio.timeout around the block expires; TimeoutError reaches the caller."""
    runs: list[InstanceRun] = []

    async def agent() -> None:
        scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
        async with asyncio.timeout(0.3), scope as run:
            runs.append(run)
            await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        await agent()
    assert_finished_once(prefactor_api, runs[0], "cancelled")
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


async def test_timeout_inside_block_finishes_failed(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Failed: a timeout inside the block that escapes it is a TimeoutError, an Exception."""
    runs: list[InstanceRun] = []

    async def agent() -> None:
        scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
        async with scope as run, asyncio.timeout(0.05):
            runs.append(run)
            await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        await agent()
    assert_finished_once(prefactor_api, runs[0], "failed")


async def test_task_group_abort_finishes_cancelled(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Cancelled: a run in a TaskGroup child is aborted when a sibling fails."""
    runs: list[InstanceRun] = []
    inside = asyncio.Event()

    async def agent() -> None:
        async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            runs.append(run)
            inside.set()
            await asyncio.sleep(10)

    async def sibling() -> None:
        await inside.wait()
        raise RuntimeError("sibling failed")

    async def both() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(agent())
            group.create_task(sibling())

    with pytest.raises(ExceptionGroup) as caught:
        await both()
    assert caught.group_contains(RuntimeError, match="sibling failed")
    assert not caught.group_contains(asyncio.CancelledError)
    assert_finished_once(prefactor_api, runs[0], "cancelled")


async def test_keyboard_interrupt_finishes_cancelled(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Cancelled: a KeyboardInterrupt in the block, re-raised as the same object."""
    interrupt = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as caught:
        async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            raise interrupt
    assert caught.value is interrupt
    assert_finished_once(prefactor_api, run, "cancelled")


@pytest.mark.parametrize(
    ("code", "expected"),
    [(0, "complete"), (None, "complete"), ("no-arg", "complete"), (1, "failed"), ("msg", "failed")],
    ids=["0", "None", "no-arg", "1", "msg"],
)
async def test_system_exit_status_follows_its_code(
    prefactor_api: LocalPrefactor, prefactor_client: Client, code: object, expected: str
) -> None:
    """Complete for SystemExit(0)/(None)/(), failed for any other code; re-raised unchanged."""
    exit_ = system_exit(code)
    with pytest.raises(SystemExit) as caught:
        async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            raise exit_
    assert caught.value is exit_
    assert_finished_once(prefactor_api, run, expected)


@pytest.mark.parametrize("mark", ["complete", "fail", "cancel"])
@pytest.mark.parametrize(
    "ending", ["return", "raise", "keyboard-interrupt", "system-exit-1", "cancelled"]
)
async def test_explicit_status_wins_over_how_the_block_ends(
    prefactor_api: LocalPrefactor, prefactor_client: Client, mark: str, ending: str
) -> None:
    """The status set with complete()/fail()/cancel() is sent, whatever ends the block."""
    expected = {"complete": "complete", "fail": "failed", "cancel": "cancelled"}[mark]
    runs: list[InstanceRun] = []
    inside = asyncio.Event()
    outcome: dict[str, BaseException] = {
        "raise": ValueError("late"),
        "keyboard-interrupt": KeyboardInterrupt(),
        "system-exit-1": SystemExit(1),
    }

    async def agent() -> None:
        async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            runs.append(run)
            getattr(run, mark)()
            inside.set()
            if ending == "cancelled":
                await asyncio.sleep(10)
            elif ending in outcome:
                raise outcome[ending]

    if ending == "return":
        await agent()
    elif ending == "cancelled":
        # Run in its own task: cancelling it must not cancel the test.
        task = asyncio.create_task(agent())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        # Inline: a KeyboardInterrupt escaping a task would stop the event loop.
        with pytest.raises(BaseException) as caught:  # noqa: PT011 - identity checked below
            await agent()
        assert caught.value is outcome[ending]
    assert_finished_once(prefactor_api, runs[0], expected)


@pytest.mark.parametrize(("first", "second"), [("complete", "fail"), ("fail", "fail")])
async def test_second_explicit_status_raises(
    prefactor_api: LocalPrefactor, prefactor_client: Client, first: str, second: str
) -> None:
    """RuntimeError on a second complete()/fail()/cancel(); the first status is kept."""
    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        getattr(run, first)()
        with pytest.raises(RuntimeError):
            getattr(run, second)()
    assert_finished_once(prefactor_api, run, "failed" if first == "fail" else "complete")


@pytest.mark.parametrize("mark", ["complete", "fail", "cancel"])
async def test_explicit_status_after_the_finish_raises(
    prefactor_api: LocalPrefactor, prefactor_client: Client, mark: str
) -> None:
    """RuntimeError when complete()/fail()/cancel() is called after the run finished."""
    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        pass
    with pytest.raises(RuntimeError):
        getattr(run, mark)()
    assert_finished_once(prefactor_api, run, "complete")


async def test_runs_are_registered_and_started_once(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """One register, one start, one finish per run, in that order."""
    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        pass
    routes = [r.route for r in prefactor_api.requests]
    assert routes == [
        "agent_instances.register",
        "agent_instances.start",
        "agent_instances.finish",
    ]
    assert run.instance is not None
    assert run.instance.status == "complete"
    assert run.state is aioprefactor.RecordingState.FINISHED


@pytest.mark.parametrize(
    ("ending", "expected"),
    [
        ("return", "complete"),
        ("raise", "failed"),
        ("keyboard-interrupt", "cancelled"),
        ("system-exit-0", "complete"),
        ("system-exit-2", "failed"),
    ],
)
async def test_span_status_follows_the_same_table(
    prefactor_api: LocalPrefactor, prefactor_client: Client, ending: str, expected: str
) -> None:
    """A span's finish status follows the same mapping as a run's; the error is re-raised."""
    outcome: dict[str, BaseException] = {
        "raise": ValueError("span"),
        "keyboard-interrupt": KeyboardInterrupt(),
        "system-exit-0": SystemExit(0),
        "system-exit-2": SystemExit(2),
    }
    handles: list[SpanRun] = []

    async def step() -> None:
        async with aioprefactor.span("agent:step", {"n": 1}) as s:
            handles.append(s)
            if ending in outcome:
                raise outcome[ending]

    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        if ending in outcome:
            with pytest.raises(BaseException) as caught:  # noqa: PT011 - identity checked below
                await step()
            assert caught.value is outcome[ending]
        else:
            await step()
    [s] = handles
    assert s.status == expected
    assert run.id is not None
    [server_span] = prefactor_api.spans(run.id)
    assert server_span["status"] == expected
    finishes = [r for r in prefactor_api.requests if r.route == "agent_spans.finish"]
    assert len(finishes) == 1


async def test_span_cancelled_by_task_cancel(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Cancelled: a span whose task is cancelled, and then its run, both finish cancelled."""
    handles: list[Any] = []
    inside = asyncio.Event()

    async def agent() -> None:
        async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            handles.append(run)
            async with aioprefactor.span("agent:step") as s:
                handles.append(s)
                inside.set()
                await asyncio.sleep(10)

    task = asyncio.create_task(agent())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    run, s = handles
    assert s.status == "cancelled"
    assert prefactor_api.span(s.id)["status"] == "cancelled"
    assert_finished_once(prefactor_api, run, "cancelled")


async def test_span_explicit_result_and_status(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """fail(result) wins over a clean end and sends its result payload with the finish."""
    scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
    async with scope, aioprefactor.span("agent:llm", {"model": "m"}) as s:
        s.set_result({"text": "draft"})
        s.fail({"reason": "bad answer"})
        with pytest.raises(RuntimeError):
            s.complete()
    assert s.id is not None
    server_span = prefactor_api.span(s.id)
    assert (server_span["status"], server_span["result_payload"]) == (
        "failed",
        {"reason": "bad answer"},
    )


async def test_span_set_result_goes_with_the_finish(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """The payload given to set_result() is the span's result payload on the server."""
    scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
    async with scope, aioprefactor.span("agent:llm", {"model": "m"}) as s:
        s.set_result({"text": "answer"})
    assert s.id is not None
    assert prefactor_api.span(s.id)["result_payload"] == {"text": "answer"}
    assert prefactor_api.span(s.id)["payload"] == {"model": "m"}
