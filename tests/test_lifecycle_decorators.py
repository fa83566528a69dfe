from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
from typing import TYPE_CHECKING, Any

import pytest

import aioprefactor

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Iterator

    from aioprefactor import Client, InstanceRun
    from aioprefactor.testing import LocalPrefactor


pytestmark = pytest.mark.inline
VERSION: dict[str, Any] = {"name": "Decorated agent", "external_identifier": "1.0.0"}


def finish_statuses(api: LocalPrefactor) -> list[str]:
    return [r.body["status"] for r in api.requests if r.route == "agent_instances.finish"]


def server_status(api: LocalPrefactor, run: InstanceRun) -> str:
    assert run.id is not None
    status: str = api.instance(run.id)["status"]
    return status


def current() -> InstanceRun:
    run = aioprefactor.current_instance()
    assert run is not None
    return run


async def settled(client: Client, run: InstanceRun) -> None:
    """Wait until ``run`` has a status (closing a generator may take a loop turn), then flush."""
    async with asyncio.timeout(5):
        while run.status is None:  # noqa: ASYNC110 - the close runs in a finalizer task
            await asyncio.sleep(0.005)
    await client.flush()


async def test_decorated_function_keeps_name_doc_signature(prefactor_client: Client) -> None:
    """The decorated function keeps its name, qualname, docstring, signature and kind."""

    async def answer(question: str, *, retries: int = 2) -> str:
        """Answer a question."""
        return question * retries

    decorated = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)(answer)
    assert (decorated.__name__, decorated.__qualname__, decorated.__doc__) == (
        answer.__name__,
        answer.__qualname__,
        "Answer a question.",
    )
    assert inspect.signature(decorated) == inspect.signature(answer)
    assert inspect.iscoroutinefunction(decorated)
    result: str = await decorated("ab", retries=3)
    assert result == "ababab"


async def test_decorated_function_gets_a_fresh_run_per_call(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Three calls, three runs: each registered, started and finished complete once."""

    @prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
    async def main(n: int) -> InstanceRun:
        await asyncio.sleep(0)
        return current()

    runs = [await main(1), await main(2), *await asyncio.gather(main(3), main(4))]
    assert len({run.id for run in runs}) == 4
    assert [run.status for run in runs] == ["complete"] * 4
    assert finish_statuses(prefactor_api) == ["complete"] * 4
    assert aioprefactor.current_instance() is None


async def test_decorated_function_raising_fails_and_reraises(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Failed: the decorated function's exception reaches the caller as the same object."""
    error = LookupError("no tool")
    runs: list[InstanceRun] = []

    @prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
    async def main() -> None:
        runs.append(current())
        raise error

    with pytest.raises(LookupError) as caught:
        await main()
    assert caught.value is error
    assert server_status(prefactor_api, runs[0]) == "failed"


async def test_decorated_method_gets_self_and_a_run(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Complete: a decorated method is bound as usual and runs inside its own run."""
    scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)

    class Agent:
        def __init__(self, name: str) -> None:
            self.name = name

        @scope
        async def run(self, question: str) -> tuple[str, InstanceRun]:
            """Run the agent."""
            return f"{self.name}: {question}", current()

        @classmethod
        @scope
        async def build(cls, name: str) -> tuple[Agent, InstanceRun]:
            return cls(name), current()

    agent, built_in = await Agent.build("bot")
    answer, run = await agent.run("hi")
    assert answer == "bot: hi"
    assert Agent.run.__doc__ == "Run the agent."
    assert list(inspect.signature(agent.run).parameters) == ["question"]
    assert run is not built_in
    assert [server_status(prefactor_api, r) for r in (built_in, run)] == ["complete"] * 2


async def test_decorated_function_cancelled_finishes_cancelled(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Cancelled: the task running a decorated function is cancelled and ends cancelled."""
    runs: list[InstanceRun] = []
    inside = asyncio.Event()

    @prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
    async def main() -> None:
        runs.append(current())
        inside.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(main())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert server_status(prefactor_api, runs[0]) == "cancelled"


def make_generator(
    client: Client, runs: list[InstanceRun], fail_at: int | None = None
) -> Callable[[int], AsyncGenerator[int, None]]:
    @client.agent_instance(agent_id="a", agent_version=VERSION)
    async def count(n: int) -> AsyncGenerator[int, None]:
        """Count to n."""
        runs.append(current())
        for i in range(n):
            assert aioprefactor.current_instance() is runs[-1]
            if i == fail_at:
                raise ValueError(f"failed at {i}")
            yield i
            assert aioprefactor.current_instance() is runs[-1]

    return count


async def test_generator_exhausted_finishes_complete(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Complete: the run lasts the whole iteration and finishes when it is exhausted."""
    runs: list[InstanceRun] = []
    count = make_generator(prefactor_client, runs)
    assert inspect.isasyncgenfunction(count)
    assert count.__name__ == "count"
    assert count.__doc__ == "Count to n."
    items = []
    async for item in count(3):
        assert runs[0].status is None
        assert server_status(prefactor_api, runs[0]) == "active"
        items.append(item)
    assert items == [0, 1, 2]
    assert runs[0].status == "complete"
    assert server_status(prefactor_api, runs[0]) == "complete"
    assert finish_statuses(prefactor_api) == ["complete"]


async def test_generator_is_not_recorded_until_iterated(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Nothing is sent when the generator object is made, only when it is first iterated."""
    runs: list[InstanceRun] = []
    agen = make_generator(prefactor_client, runs)(2)
    await asyncio.sleep(0.05)
    assert prefactor_api.requests == []
    assert [item async for item in agen] == [0, 1]
    assert [r.route for r in prefactor_api.requests][-1] == "agent_instances.finish"


@pytest.mark.parametrize("how", ["aclosing-break", "aclose", "break-and-drop", "garbage"])
async def test_generator_closed_early_finishes_cancelled(
    prefactor_api: LocalPrefactor, prefactor_client: Client, how: str
) -> None:
    """Cancelled: the consumer stops before the generator is exhausted."""
    runs: list[InstanceRun] = []
    count = make_generator(prefactor_client, runs)
    if how == "aclosing-break":
        async with contextlib.aclosing(count(5)) as agen:
            async for item in agen:
                if item == 1:
                    break
    elif how == "aclose":
        agen = count(5)
        assert await agen.__anext__() == 0
        await agen.aclose()
    elif how == "break-and-drop":
        async for item in count(5):
            if item == 1:
                break
    else:
        agen = count(5)
        assert await agen.__anext__() == 0
        del agen
        gc.collect()
    await settled(prefactor_client, runs[0])
    assert runs[0].status == "cancelled"
    assert server_status(prefactor_api, runs[0]) == "cancelled"
    assert finish_statuses(prefactor_api) == ["cancelled"]


async def test_generator_raising_finishes_failed(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Failed: the generator's body raises; the consumer gets the exception."""
    runs: list[InstanceRun] = []
    count = make_generator(prefactor_client, runs, fail_at=2)
    items: list[int] = []

    async def consume() -> None:
        async for item in count(5):
            items.append(item)  # noqa: PERF401 - the loop is what is under test

    with pytest.raises(ValueError, match="failed at 2"):
        await consume()
    assert items == [0, 1]
    assert server_status(prefactor_api, runs[0]) == "failed"
    assert finish_statuses(prefactor_api) == ["failed"]


async def test_generator_run_is_current_only_inside_its_body(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """None (or the outer run) in the consumer between items; the generator's run inside it."""
    runs: list[InstanceRun] = []
    count = make_generator(prefactor_client, runs)
    async for _ in count(2):
        assert aioprefactor.current_instance() is None
    outer_scope = prefactor_client.agent_instance(agent_id="outer", agent_version=VERSION)
    async with outer_scope as outer:
        async for _ in count(2):
            assert aioprefactor.current_instance() is outer
        assert runs[-1] is not outer
    assert aioprefactor.current_instance() is None
    assert [r.status for r in runs] == ["complete", "complete"]


async def test_generator_passes_sent_and_thrown_values(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """The wrapped generator receives asend() values and athrow() exceptions."""
    runs: list[InstanceRun] = []

    @prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
    async def echo() -> AsyncGenerator[str, str]:
        runs.append(current())
        received = "start"
        while True:
            try:
                received = yield received.upper()
            except KeyError:
                received = "recovered"

    agen = echo()
    assert await agen.__anext__() == "START"
    assert await agen.asend("hello") == "HELLO"
    assert await agen.athrow(KeyError("x")) == "RECOVERED"
    await agen.aclose()
    assert server_status(prefactor_api, runs[0]) == "cancelled"


async def test_generator_athrow_unhandled_finishes_failed(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Failed: an exception thrown in by the consumer that the body does not handle."""
    runs: list[InstanceRun] = []
    agen = make_generator(prefactor_client, runs)(5)
    assert await agen.__anext__() == 0
    error = RuntimeError("consumer gave up")
    with pytest.raises(RuntimeError) as caught:
        await agen.athrow(error)
    assert caught.value is error
    assert server_status(prefactor_api, runs[0]) == "failed"


async def test_generator_consumer_cancelled_finishes_cancelled(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Cancelled: the task consuming the generator is cancelled while the body awaits."""
    runs: list[InstanceRun] = []
    inside = asyncio.Event()

    @prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
    async def slow() -> AsyncGenerator[int, None]:
        runs.append(current())
        yield 1
        inside.set()
        await asyncio.sleep(10)
        yield 2

    async def consume() -> None:
        async for _ in slow():
            pass

    task = asyncio.create_task(consume())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await settled(prefactor_client, runs[0])
    assert server_status(prefactor_api, runs[0]) == "cancelled"


def sync_function() -> int:
    return 1


def sync_generator() -> Iterator[int]:
    yield 1


@pytest.mark.parametrize("fn", [sync_function, sync_generator])
async def test_sync_callables_are_decorated_and_recorded(
    prefactor_api: LocalPrefactor, prefactor_client: Client, fn: Callable[[], object]
) -> None:
    """A def function or generator decorated with span() is recorded under the current run."""
    wrapped: Any = aioprefactor.span("agent:step")(fn)
    assert wrapped.__name__ == fn.__name__
    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        result = wrapped()
        if not isinstance(result, int):
            assert [1] == list(result)
    await prefactor_client.flush()
    assert run.id is not None
    assert ["complete"] == [s["status"] for s in prefactor_api.spans(run.id)]


def test_decorating_something_not_callable_is_a_type_error() -> None:
    """TypeError when a scope is applied to something that is not a function."""
    with pytest.raises(TypeError, match="decorates functions"):
        aioprefactor.span("agent:step")(42)  # type: ignore[call-overload]


async def test_span_decorator_records_a_span_per_call(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """One span per call of a decorated coroutine, under the current run, with its status."""

    @aioprefactor.span("agent:tool", {"tool": "search"})
    async def tool(ok: bool) -> str:
        """Search."""
        span_run = aioprefactor.current_span()
        assert span_run is not None
        if not ok:
            raise ValueError("tool failed")
        return "found"

    assert tool.__doc__ == "Search."
    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        assert await tool(True) == "found"
        with pytest.raises(ValueError, match="tool failed"):
            await tool(False)
    assert run.id is not None
    spans = prefactor_api.spans(run.id)
    assert [(s["schema_name"], s["status"]) for s in spans] == [
        ("agent:tool", "complete"),
        ("agent:tool", "failed"),
    ]


async def test_span_decorator_on_generator_spans_the_iteration(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Complete when exhausted, cancelled when closed early; the span is current in the body."""

    @aioprefactor.span("agent:stream")
    async def stream(n: int) -> AsyncGenerator[int, None]:
        for i in range(n):
            assert aioprefactor.current_span() is not None
            yield i

    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        assert [i async for i in stream(2)] == [0, 1]
        async with contextlib.aclosing(stream(3)) as agen:
            async for _ in agen:
                assert aioprefactor.current_span() is None
                break
    assert run.id is not None
    assert [s["status"] for s in prefactor_api.spans(run.id)] == ["complete", "cancelled"]


async def test_generator_called_with_bad_arguments_leaves_no_run_open(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """TypeError for a bad call, and no instance left pending or active on the server."""
    runs: list[InstanceRun] = []
    count: Any = make_generator(prefactor_client, runs)

    async def consume() -> None:
        async for _ in count(1, 2, 3):
            pass

    with pytest.raises(TypeError):
        await consume()
    await prefactor_client.flush()
    assert runs == []
    live = [i for i in prefactor_api.instances() if i["status"] in {"pending", "active"}]
    assert live == []
    assert aioprefactor.current_instance() is None
