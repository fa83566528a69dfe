"""Carrying the context into threads: wrap() and ContextThreadPoolExecutor."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from typing import TYPE_CHECKING

import pytest

from aioprefactor._runs.threads import ContextThreadPoolExecutor, wrap

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

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


def test_map_passes_its_options_through() -> None:
    """map() keeps Executor.map's timeout and chunksize, and refuses unknown options."""
    VALUE.set("m")
    with ContextThreadPoolExecutor(max_workers=2) as pool:
        assert ["m1", "m2"] == list(pool.map(read, ["1", "2"], timeout=30, chunksize=2))
        with pytest.raises(TypeError):
            pool.map(read, ["1"], no_such_option=True)
