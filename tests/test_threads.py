"""Carrying the context into threads: wrap() and ContextThreadPoolExecutor."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from aioprefactor import span
from aioprefactor._runs.threads import ContextThreadPoolExecutor, wrap

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from tests.conftest import SpanTree

    from aioprefactor import Client, InstanceRun
    from aioprefactor.testing import LocalPrefactor

VALUE: contextvars.ContextVar[str] = contextvars.ContextVar("test_threads_value", default="unset")


@pytest.fixture(autouse=True)
def _reset_value() -> Iterator[None]:
    """Leave the variable as each test found it (sync tests share one context)."""
    token = VALUE.set("unset")
    yield
    VALUE.reset(token)


def read(suffix: str = "") -> str:
    """Return the variable's value here, with a suffix."""
    return VALUE.get() + suffix


def set_and_read(value: str) -> str:
    """Set the variable, then return what it was before."""
    before = VALUE.get()
    VALUE.set(value)
    return before


def in_thread(target: Callable[[], None]) -> None:
    """Run target in a new thread and wait for it."""
    thread = threading.Thread(target=target)
    thread.start()
    thread.join()


def test_wrap_carries_the_context_into_a_thread() -> None:
    """A wrapped target sees, in a new thread, the value set where it was wrapped."""
    seen: list[str] = []
    VALUE.set("outer")
    in_thread(wrap(lambda: seen.append(read())))
    assert ["outer"] == seen


def test_a_plain_thread_target_does_not_see_the_context() -> None:
    """Without wrap() a thread starts from an empty context (why the helper exists)."""
    seen: list[str] = []
    VALUE.set("outer")
    in_thread(lambda: seen.append(read()))
    assert ["unset"] == seen


def test_wrap_captures_the_context_when_it_is_called() -> None:
    """The context is the one current at wrap() time, not at call time."""
    VALUE.set("at wrap")
    bound = wrap(read)
    VALUE.set("at call")
    assert "at wrap" == bound()


def test_wrapped_calls_do_not_leak_into_each_other_or_the_caller() -> None:
    """What one call sets is seen neither by the next call nor by the caller."""
    VALUE.set("captured")
    bound = wrap(set_and_read)
    assert "captured" == bound("first")
    assert "captured" == bound("second")
    assert "captured" == VALUE.get()


def test_one_wrapped_callable_runs_in_many_threads_at_once() -> None:
    """Concurrent calls each get their own copy, so none fails to enter the context."""
    VALUE.set("shared")
    barrier = threading.Barrier(8)
    seen: list[str] = []
    errors: list[BaseException] = []

    def work(index: int) -> None:
        barrier.wait()
        seen.append(set_and_read(f"thread {index}"))

    bound = wrap(work)

    def target(index: int) -> None:
        try:
            bound(index)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [] == errors
    assert ["shared"] * 8 == seen


def test_wrap_keeps_the_signature_name_and_result() -> None:
    """The wrapped callable has fn's name, docstring and signature, and returns its result."""
    VALUE.set("v")
    bound = wrap(read)
    assert "read" == bound.__name__
    assert read.__doc__ == bound.__doc__
    assert inspect.signature(read) == inspect.signature(bound)
    assert "v!" == bound("!")


def test_wrap_lets_the_exception_through() -> None:
    """An exception raised by fn reaches the caller unchanged."""
    failure = LookupError("missing")

    def fail() -> None:
        raise failure

    with pytest.raises(LookupError) as caught:
        wrap(fail)()
    assert failure is caught.value


async def _coroutine_function() -> None:
    """A coroutine function."""


async def _async_generator_function() -> AsyncIterator[None]:
    """An async generator function."""
    yield


def _generator_function() -> Iterator[None]:
    """A generator function."""
    yield


@pytest.mark.parametrize(
    "fn", [_coroutine_function, _async_generator_function, _generator_function]
)
def test_wrap_refuses_functions_whose_body_runs_later(fn: Callable[[], object]) -> None:
    """Coroutine and generator functions are refused: binding their call binds nothing."""
    with pytest.raises(TypeError, match="runs later"):
        wrap(fn)


def test_wrap_refuses_what_is_not_callable() -> None:
    """A non-callable is a TypeError at wrap() time, not in the thread."""
    with pytest.raises(TypeError, match="needs a callable, not int"):
        wrap(3)  # type: ignore[arg-type]


async def test_run_in_executor_with_wrap_sees_the_context() -> None:
    """loop.run_in_executor(None, wrap(fn)) sees the caller's value."""
    VALUE.set("from the task")
    loop = asyncio.get_running_loop()
    assert "from the task?" == await loop.run_in_executor(None, wrap(read), "?")


def test_submit_runs_in_a_copy_of_the_submitters_context() -> None:
    """Each submitted call sees the value current where it was submitted."""
    with ContextThreadPoolExecutor(max_workers=2) as pool:
        VALUE.set("first")
        first = pool.submit(read, "!")
        VALUE.set("second")
        second = pool.submit(read, suffix="?")
        assert "first!" == first.result()
        assert "second?" == second.result()


def test_submit_does_not_leak_between_calls_on_one_worker() -> None:
    """A value a call sets is gone for the next call on the same worker thread."""
    VALUE.set("submitter")
    with ContextThreadPoolExecutor(max_workers=1) as pool:
        assert "submitter" == pool.submit(set_and_read, "leaked").result()
        assert "submitter" == pool.submit(read).result()


def test_map_runs_every_call_in_the_context_of_the_map_call() -> None:
    """map() calls see the value current where map() was called."""
    VALUE.set("mapper")
    with ContextThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(read, ["-1", "-2", "-3"])
        VALUE.set("changed afterwards")
        assert ["mapper-1", "mapper-2", "mapper-3"] == list(results)


def test_wrap_and_submit_keep_the_parameter_types() -> None:
    """Wrong arguments are type errors to mypy (the ignores below would be unused otherwise)."""
    with pytest.raises(TypeError):
        wrap(read)("a", "b")  # type: ignore[call-arg]
    text: str = wrap(read)(suffix="!")
    assert "unset!" == text
    with ContextThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(read, 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            future.result()
        text = pool.submit(read, suffix="?").result()
    assert "unset?" == text


def test_map_passes_its_options_through() -> None:
    """map() keeps Executor.map's timeout and chunksize, and refuses unknown options."""
    VALUE.set("m")
    with ContextThreadPoolExecutor(max_workers=2) as pool:
        assert ["m1", "m2"] == list(pool.map(read, ["1", "2"], timeout=30, chunksize=2))
        with pytest.raises(TypeError):
            pool.map(read, ["1"], no_such_option=True)


# With runs: spans opened in threads nest under the run and span current where the work
# was handed over.

VERSION: dict[str, Any] = {"name": "Threaded agent", "external_identifier": "1.0.0"}


def tool(n: int) -> int:
    """A sync tool that records a span."""
    with span("agent:tool", payload={"n": n}) as step:
        step.set_result({"double": 2 * n})
        return 2 * n


async def test_eight_threads_each_record_their_own_run_at_once(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    span_tree: SpanTree,
) -> None:
    """Eight threads, eight runs in flight together: all recorded, no span in another's tree."""
    barrier = threading.Barrier(8)
    runs: dict[int, InstanceRun] = {}

    def agent(index: int) -> None:
        with prefactor_client.agent_instance(agent_id="threads", agent_version=VERSION) as run:
            runs[index] = run
            with span("agent:outer", payload={"thread": index}):
                barrier.wait(timeout=30)  # every run is open at once
                with span("agent:inner", payload={"thread": index}):
                    barrier.wait(timeout=30)

    def start_all() -> None:
        threads = [threading.Thread(target=agent, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    await asyncio.to_thread(start_all)
    assert await prefactor_client.flush(timeout=10)
    assert 8 == len({run.id for run in runs.values()})
    for index, run in runs.items():
        assert run.id is not None
        assert "complete" == prefactor_api.instance(run.id)["status"]
        assert Counter(
            [
                ("agent:outer", "complete", None),
                ("agent:inner", "complete", "agent:outer"),
            ]
        ) == span_tree(run.id)
        assert [{"thread": index}] * 2 == [one["payload"] for one in prefactor_api.spans(run.id)]


async def test_to_thread_spans_nest_under_the_current_span(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    span_tree: SpanTree,
) -> None:
    """A span opened in asyncio.to_thread is a child of the span awaiting it."""
    scope = prefactor_client.agent_instance(agent_id="threads", agent_version=VERSION)
    async with scope as run, span("agent:outer"):
        assert [2, 4] == [await asyncio.to_thread(tool, n) for n in (1, 2)]
    assert await prefactor_client.flush(timeout=10)
    assert Counter(
        [
            ("agent:outer", "complete", None),
            ("agent:tool", "complete", "agent:outer"),
            ("agent:tool", "complete", "agent:outer"),
        ]
    ) == span_tree(run.id)


async def test_executor_spans_nest_under_the_submitters_span(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    span_tree: SpanTree,
) -> None:
    """ContextThreadPoolExecutor's submit and map: every call's span nests under the fan-out."""

    def fan_out() -> InstanceRun:
        with (
            prefactor_client.agent_instance(agent_id="threads", agent_version=VERSION) as run,
            span("agent:fan-out"),
            ContextThreadPoolExecutor(max_workers=4) as pool,
        ):
            assert [0, 2, 4, 6] == list(pool.map(tool, range(4)))
            assert 8 == pool.submit(tool, 4).result()
        return run

    run = await asyncio.to_thread(fan_out)
    assert await prefactor_client.flush(timeout=10)
    assert Counter(
        {("agent:fan-out", "complete", None): 1, ("agent:tool", "complete", "agent:fan-out"): 5}
    ) == span_tree(run.id)
    spans = prefactor_api.spans(run.id)
    results = [one["result_payload"] for one in spans if one["schema_name"] == "agent:tool"]
    assert [{"double": 2 * n} for n in range(5)] == sorted(results, key=lambda r: r["double"])


async def test_wrapped_calls_nest_in_run_in_executor_and_threads(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    span_tree: SpanTree,
) -> None:
    """wrap() carries the span into loop.run_in_executor and into a threading.Thread."""
    loop = asyncio.get_running_loop()
    async with prefactor_client.agent_instance(agent_id="threads", agent_version=VERSION) as run:
        async with span("agent:executor"):
            assert 2 == await loop.run_in_executor(None, wrap(tool), 1)
        async with span("agent:thread"):
            thread = threading.Thread(target=wrap(tool), args=(2,))
            thread.start()
            await asyncio.to_thread(thread.join)
    assert await prefactor_client.flush(timeout=10)
    assert Counter(
        [
            ("agent:executor", "complete", None),
            ("agent:tool", "complete", "agent:executor"),
            ("agent:thread", "complete", None),
            ("agent:tool", "complete", "agent:thread"),
        ]
    ) == span_tree(run.id)


def opened_outside_a_run(n: int) -> None:
    """Open a span with no current run (one call site)."""
    with span("agent:stray", payload={"n": n}):
        pass


def opened_elsewhere() -> None:
    """Open a span with no current run (another call site)."""
    with span("agent:stray"):
        pass


async def test_a_span_in_a_thread_without_a_run_warns_once_per_call_site(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    caplog: pytest.LogCaptureFixture,
    span_tree: SpanTree,
) -> None:
    """A plain executor loses the run: its spans record nothing and warn once per call site."""
    caplog.set_level(logging.WARNING, logger="aioprefactor")
    async with prefactor_client.agent_instance(agent_id="threads", agent_version=VERSION) as run:
        with ThreadPoolExecutor(max_workers=2) as pool:  # no context carried
            for n in range(3):
                pool.submit(opened_outside_a_run, n).result()
            pool.submit(opened_elsewhere).result()
            pool.submit(opened_elsewhere).result()
    assert await prefactor_client.flush(timeout=10)
    warnings = [r for r in caplog.records if r.name == "aioprefactor" and r.levelno >= 30]
    assert 2 == len(warnings), [r.getMessage() for r in warnings]
    assert Counter([]) == span_tree(run.id)


async def test_a_worker_thread_with_its_own_event_loop_records_under_its_run(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    span_tree: SpanTree,
) -> None:
    """asyncio.run in a worker thread, inside a sync run: its spans nest, nothing is raised."""

    async def steps() -> None:
        async with span("agent:async"):
            await asyncio.gather(*(asyncio.to_thread(tool, n) for n in range(2)))

    def worker() -> InstanceRun:
        with (
            prefactor_client.agent_instance(agent_id="threads", agent_version=VERSION) as run,
            span("agent:sync"),
        ):
            asyncio.run(steps())
            asyncio.run(steps())  # a second loop in the same run
        return run

    run = await asyncio.to_thread(worker)
    assert await prefactor_client.flush(timeout=10)
    assert "complete" == prefactor_api.instance(str(run.id))["status"]
    assert Counter(
        {
            ("agent:sync", "complete", None): 1,
            ("agent:async", "complete", "agent:sync"): 2,
            ("agent:tool", "complete", "agent:async"): 4,
        }
    ) == span_tree(run.id)
    spans = prefactor_api.spans(run.id)
    parents = Counter(one["parent_span_id"] for one in spans if one["schema_name"] == "agent:tool")
    assert [2, 2] == list(parents.values())
