"""handle_signals(): SIGTERM takes Ctrl-C's path, so a stopped process records truthfully."""

from __future__ import annotations

import signal
import sys
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

from aioprefactor._runs.signals import SignalInterrupt, handle_signals

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import FrameType, TracebackType

    from tests.conftest import Scripts, SpanTree

    from aioprefactor.testing import LocalPrefactor

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture(autouse=True)
def _restore_signal_state() -> Iterator[None]:
    """Leave SIGTERM, SIGINT and sys.excepthook as each test found them."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    hook = sys.excepthook
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    sys.excepthook = hook


def recording_handler(seen: list[int]) -> Callable[[int, FrameType | None], None]:
    """A signal handler that records the signals it gets."""

    def handler(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)

    return handler


@pytest.mark.parametrize(
    ("signals", "error", "message"),
    [
        (signal.SIGTERM, TypeError, "iterable of signal numbers"),
        ("SIGTERM", TypeError, "iterable of signal numbers"),
        (["SIGTERM"], TypeError, "signal numbers, such as signal.SIGTERM, not 'SIGTERM'"),
        ([True], TypeError, "not True"),
        ([], ValueError, "no signals given"),
        ([999], ValueError, "999 is not a signal"),
        ([signal.SIGKILL], ValueError, "SIGKILL cannot be caught"),
    ],
)
def test_bad_signals_are_refused_before_anything_is_installed(
    signals: Any, error: type[Exception], message: str
) -> None:
    """A bad argument is a clear TypeError or ValueError, and no handler changes."""
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(error, match=message):
        handle_signals(signals)
    assert before is signal.getsignal(signal.SIGTERM)


def test_calling_from_another_thread_is_a_runtime_error() -> None:
    """Only the main thread may install signal handlers: a clear RuntimeError elsewhere."""
    errors: list[BaseException] = []

    def install() -> None:
        try:
            handle_signals()
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    assert 1 == len(errors)
    assert "must be called from the main thread" in str(errors[0])


def test_restore_puts_back_the_previous_handler() -> None:
    """The returned function reinstates the handler found before the first call."""
    seen: list[int] = []
    previous = recording_handler(seen)
    signal.signal(signal.SIGTERM, previous)
    restore = handle_signals()
    assert previous is not signal.getsignal(signal.SIGTERM)
    restore()
    assert previous is signal.getsignal(signal.SIGTERM)
    signal.raise_signal(signal.SIGTERM)
    assert [signal.SIGTERM] == seen


def test_calling_twice_installs_once() -> None:
    """A second call keeps the first handler and the handler it replaced."""
    seen: list[int] = []
    previous = recording_handler(seen)
    signal.signal(signal.SIGTERM, previous)
    restore = handle_signals()
    installed = signal.getsignal(signal.SIGTERM)
    assert restore == handle_signals((signal.SIGTERM,))
    assert installed is signal.getsignal(signal.SIGTERM)
    restore()
    assert previous is signal.getsignal(signal.SIGTERM)


def test_a_second_call_adds_signals_and_one_restore_undoes_all() -> None:
    """Signals added by a later call are restored by the same function."""
    restore = handle_signals()
    handle_signals((signal.SIGINT,))
    assert signal.getsignal(signal.SIGTERM) is signal.getsignal(signal.SIGINT)
    restore()
    assert signal.SIG_DFL == signal.getsignal(signal.SIGTERM)
    assert signal.default_int_handler is signal.getsignal(signal.SIGINT)


def test_restore_leaves_a_handler_installed_later_alone() -> None:
    """Restoring never removes a handler someone else installed afterwards."""
    restore = handle_signals()
    later = recording_handler([])
    signal.signal(signal.SIGTERM, later)
    restore()
    assert later is signal.getsignal(signal.SIGTERM)


def test_restore_twice_does_nothing_more() -> None:
    """A second restore is harmless, and handle_signals() can install again afterwards."""
    restore = handle_signals()
    restore()
    restore()
    assert signal.SIG_DFL == signal.getsignal(signal.SIGTERM)
    again = handle_signals()
    assert signal.SIG_DFL != signal.getsignal(signal.SIGTERM)
    again()


def test_a_signal_in_sync_code_raises_a_keyboard_interrupt() -> None:
    """SIGTERM raises SignalInterrupt, a KeyboardInterrupt carrying the signal and exit code."""
    restore = handle_signals()
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            signal.raise_signal(signal.SIGTERM)
    finally:
        restore()
    assert isinstance(caught.value, SignalInterrupt)
    assert signal.SIGTERM == caught.value.signum
    assert 143 == caught.value.exit_code
    assert "stopped by SIGTERM" == str(caught.value)


def test_after_a_signal_the_exception_hook_exits_with_the_signal_code() -> None:
    """An uncaught SignalInterrupt becomes SystemExit(128 + signum); others reach the old hook."""
    seen: list[type[BaseException]] = []

    def previous(
        exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        seen.append(exc_type)

    sys.excepthook = previous
    restore = handle_signals()
    with pytest.raises(SignalInterrupt) as caught:
        signal.raise_signal(signal.SIGTERM)
    hook = sys.excepthook
    with pytest.raises(SystemExit) as exiting:
        hook(SignalInterrupt, caught.value, None)
    assert 143 == exiting.value.code
    failure = ValueError("other")
    hook(ValueError, failure, None)
    assert [ValueError] == seen
    restore()
    assert previous is sys.excepthook


def test_signal_interrupt_survives_pickling() -> None:
    """The exception pickles (multiprocessing carries exceptions so)."""
    import pickle  # noqa: PLC0415 - only this test pickles

    copy = pickle.loads(pickle.dumps(SignalInterrupt(signal.SIGINT)))  # noqa: S301 - our own bytes
    assert signal.SIGINT == copy.signum
    assert 130 == copy.exit_code


# The mechanism, in child processes: nothing below needs the API.


SYNC_MECHANISM = """
    import atexit, time
    from aioprefactor._runs.signals import handle_signals

    atexit.register(lambda: print("atexit ran", flush=True))
    handle_signals()
    try:
        print("ready", flush=True)
        time.sleep(60)
    finally:
        print("finally ran", flush=True)
"""


ASYNC_MECHANISM = """
    import asyncio, atexit
    from aioprefactor._runs.signals import handle_signals

    atexit.register(lambda: print("atexit ran", flush=True))

    async def main():
        handle_signals()
        try:
            print("ready", flush=True)
            await asyncio.sleep(60)
        except asyncio.CancelledError as cancel:
            print(f"cancelled: {cancel}", flush=True)
            raise
        finally:
            print("finally ran", flush=True)

    asyncio.run(main())
"""


STUBBORN = """
    import asyncio
    from aioprefactor._runs.signals import handle_signals

    async def main():
        handle_signals()
        print("ready", flush=True)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            print("ready 1", flush=True)
            await asyncio.sleep(60)  # ignores the first stop

    asyncio.run(main())
"""


SIGINT_TOO = """
    import time
    import signal
    from aioprefactor._runs.signals import handle_signals

    handle_signals((signal.SIGTERM, signal.SIGINT))
    print("ready", flush=True)
    time.sleep(60)
"""


DURING_EXIT = """
    import atexit, time
    from aioprefactor._runs.signals import handle_signals

    def slow_flush():
        print("ready", flush=True)
        time.sleep(1)
        print("flush done", flush=True)

    handle_signals()
    atexit.register(slow_flush)
"""


@pytest.mark.parametrize(
    ("script", "signals", "code", "lines"),
    [
        (SYNC_MECHANISM, [signal.SIGTERM], 143, ["ready", "finally ran", "atexit ran"]),
        (
            ASYNC_MECHANISM,
            [signal.SIGTERM],
            143,
            ["ready", "cancelled: stopped by SIGTERM", "finally ran", "atexit ran"],
        ),
        (STUBBORN, [signal.SIGTERM, signal.SIGTERM], 143, ["ready", "ready 1"]),
        (SIGINT_TOO, [signal.SIGINT], 130, ["ready"]),
        (DURING_EXIT, [signal.SIGTERM], 0, ["ready", "flush done"]),
    ],
    ids=[
        "sync-code-unwinds",
        "asyncio-main-task-cancelled",
        "second-signal-interrupts-at-once",
        "sigint-when-chosen",
        "ignored-while-exiting",
    ],
)
async def test_a_handled_signal_unwinds_and_sets_the_exit_code(
    scripts: Scripts, script: str, signals: list[int], code: int, lines: list[str]
) -> None:
    """Each case unwinds as after Ctrl-C, prints no traceback and exits with its code."""
    child = await scripts.start(script)
    await child.signal(*signals)
    assert (code, "") == (await child.wait(), child.stderr)
    assert lines == child.lines


# With runs: a stopped process records its runs truthfully.


SYNC_AGENT = """
    import time
    import aioprefactor
    from aioprefactor import span
    from aioprefactor._runs.signals import handle_signals

    handle_signals()
    with aioprefactor.agent_instance(
        agent_id="sync", agent_version={"name": "S", "external_identifier": "1"}
    ):
        for n in range(3):
            with span("agent:done", payload={"n": n}):
                pass
        with span("agent:outer"), span("agent:inner"):
            print("ready", flush=True)
            time.sleep(60)
"""

ASYNC_AGENT = """
    import asyncio
    import aioprefactor
    from aioprefactor import span
    from aioprefactor._runs.signals import handle_signals

    async def worker():
        async with span("agent:worker"):
            await asyncio.sleep(60)

    async def main():
        handle_signals()
        async with aioprefactor.agent_instance(
            agent_id="async", agent_version={"name": "A", "external_identifier": "1"}
        ):
            for n in range(3):
                async with span("agent:done", payload={"n": n}):
                    pass
            async with span("agent:outer"), asyncio.TaskGroup() as group:
                group.create_task(worker())
                async with span("agent:inner"):
                    await asyncio.sleep(0.05)
                    print("ready", flush=True)
                    await asyncio.sleep(60)

    asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            SYNC_AGENT,
            {
                ("agent:done", "complete", None): 3,
                ("agent:outer", "cancelled", None): 1,
                ("agent:inner", "cancelled", "agent:outer"): 1,
            },
        ),
        (
            ASYNC_AGENT,
            {
                ("agent:done", "complete", None): 3,
                ("agent:outer", "cancelled", None): 1,
                ("agent:inner", "cancelled", "agent:outer"): 1,
                ("agent:worker", "cancelled", "agent:outer"): 1,
            },
        ),
    ],
    ids=["sync", "asyncio"],
)
async def test_sigterm_records_open_runs_cancelled_and_exits_143(
    prefactor_api: LocalPrefactor,
    scripts: Scripts,
    span_tree: SpanTree,
    script: str,
    expected: dict[tuple[str, str, str | None], int],
) -> None:
    """Docker stop: the run and open spans end cancelled, finished ones are kept, exit 143."""
    child = await scripts.start(script, prefactor_api)
    await child.signal(signal.SIGTERM)
    assert 143 == await child.wait(), child.stderr
    assert "" == child.stderr
    (instance,) = prefactor_api.instances()
    assert "cancelled" == instance["status"]
    assert Counter(expected) == span_tree(instance["id"])
    assert all(one["finished_at"] for one in prefactor_api.spans(instance["id"]))


EARLY = """
    import asyncio, atexit
    from aioprefactor._runs.signals import handle_signals

    atexit.register(lambda: print("atexit ran", flush=True))
    handle_signals()  # before the loop: no main task to cancel

    async def helper():
        try:
            print("ready", flush=True)
            await asyncio.sleep(60)
        finally:
            print("helper finally ran", flush=True)

    async def main():
        task = asyncio.create_task(helper())
        try:
            await asyncio.sleep(60)
        finally:
            print("main finally ran", flush=True)

    asyncio.run(main())
"""


async def test_installed_before_asyncio_run_every_task_still_unwinds(scripts: Scripts) -> None:
    """Installed from sync code: the interrupt leaves the loop, asyncio.run cancels the tasks."""
    child = await scripts.start(EARLY)
    await child.signal(signal.SIGTERM)
    assert (143, "") == (await child.wait(), child.stderr)
    first, *unwound, last = child.lines  # the tasks unwind in either order
    assert ("ready", "atexit ran") == (first, last)
    assert ["helper finally ran", "main finally ran"] == sorted(unwound)
