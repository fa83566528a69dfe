"""Stopping on SIGTERM the way Ctrl-C stops, so ``docker stop`` is recorded truthfully.

Python turns SIGINT (Ctrl-C) into ``KeyboardInterrupt``: the blocks it unwinds end their
runs and spans ``cancelled``, and the exit flushes what is still queued. SIGTERM, what
``docker stop`` and Kubernetes send, kills the process outright by default: nothing is
unwound, open runs stay ``active`` and queued telemetry is lost. :func:`handle_signals`
gives the chosen signals Ctrl-C's path:

- In sync code, :class:`SignalInterrupt` (a ``KeyboardInterrupt``) is raised in the main
  thread, wherever it is (``time.sleep``, a lock, a blocking call all wake up).
- In an asyncio program (``handle_signals()`` called from the main coroutine, the task
  ``asyncio.run`` runs), the main task is cancelled, as ``asyncio.Runner`` does on Ctrl-C;
  when it has ended, :class:`SignalInterrupt` is raised out of ``asyncio.run``, after the
  loop's own shutdown (remaining tasks cancelled, async generators closed).

A second signal while the first is still being handled raises at once, as a second
Ctrl-C does. A signal that arrives while the interpreter is already exiting is ignored:
the exit's flush is bounded by the client's ``shutdown_timeout``, and an interrupt could
only cut it short.

The exit code: when nothing catches the :class:`SignalInterrupt`, the process exits with
``128 + signum`` (143 for SIGTERM) after the normal interpreter exit, ``atexit`` flush
included. That is the code a shell, Docker and Kubernetes report for a process killed by
that signal, so the stop looks the same from outside, while the process still exits on
its own terms. (Re-raising the signal once everything is flushed cannot be done at the
very end of the interpreter's exit, and an uncaught ``KeyboardInterrupt`` would report
SIGINT.) Code that catches the interrupt decides how the process ends, as with Ctrl-C.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias, final

if TYPE_CHECKING:
    from types import FrameType, TracebackType

_Handler: TypeAlias = Callable[[int, "FrameType | None"], Any] | int | signal.Handlers | None
_ExceptHook: TypeAlias = Callable[[type[BaseException], BaseException, "TracebackType | None"], Any]

# Signals a process cannot catch (those that exist on this platform).
_UNCATCHABLE = frozenset(sig for sig in signal.Signals if sig.name in {"SIGKILL", "SIGSTOP"})


class SignalInterrupt(KeyboardInterrupt):
    """A handled signal arrived: raised in the main thread, or out of ``asyncio.run``.

    A ``KeyboardInterrupt``, so it takes Ctrl-C's path: ``except Exception`` lets it
    through and the blocks it leaves end their runs and spans ``cancelled``. Left
    uncaught, it ends the process with :attr:`exit_code`.

    Args:
        signum: The signal received.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signal.Signals(signum)

    def __str__(self) -> str:
        return f"stopped by {self.signum.name}"

    @property
    def exit_code(self) -> int:
        """The process's exit code when this goes uncaught: 128 + the signal number."""
        return 128 + int(self.signum)


def handle_signals(signals: Iterable[int] = (signal.SIGTERM,)) -> Callable[[], None]:
    """Stop on these signals the way Ctrl-C stops: runs end ``cancelled``, nothing is lost.

    Call it once at startup, from the main thread; in an asyncio program, call it from
    the main coroutine so that the signal cancels that task:

    ```python
    async def main() -> None:
        aioprefactor.handle_signals()  # SIGTERM: cancel main(), flush, exit 143
        async with agent_instance(agent_version=version):
            ...

    asyncio.run(main())
    ```

    When a signal arrives, the open runs and spans end ``cancelled``, pending telemetry is
    flushed within the client's ``shutdown_timeout`` as the process exits, and the exit
    code is ``128 + signum`` (143 for SIGTERM), as a shell reports a process killed by
    that signal. Calling it again adds signals and, from a coroutine, makes the calling
    task the one to cancel; signals already handled stay as they are.

    Args:
        signals: The signals to handle, SIGTERM by default. SIGINT may be included, to end
            Ctrl-C with 130 rather than by re-raising SIGINT.

    Returns:
        A function that puts back the handlers found before the first call (and the
        exception hook, if a signal arrived); it must be called from the main thread,
        and calling it again does nothing.

    Raises:
        TypeError: ``signals`` is not an iterable of signal numbers.
        ValueError: No signals, an unknown signal, or one that cannot be caught.
        RuntimeError: Not called from the main thread (Python runs signal handlers there
            only).
    """
    chosen = _check(signals)
    _require_main_thread("handle_signals()")
    global _installed  # noqa: PLW0603 - one set of handlers per process
    if _installed is None:
        _installed = _Installation()
    _installed.add(chosen)
    _installed.follow(_running_task())
    return _installed.restore


_installed: _Installation | None = None


@final
class _Installation:
    """The handlers installed by :func:`handle_signals`, and how to take them back."""

    def __init__(self) -> None:
        # Bound once: a bound method is a new object on every access, and restore()
        # recognises its own handler and hook by identity.
        self._handler = self._on_signal
        self._hook = self._excepthook
        self._previous: dict[signal.Signals, _Handler] = {}
        self._previous_hook: _ExceptHook | None = None
        self._main: weakref.ref[asyncio.Task[Any]] | None = None
        self._stopping = False

    def add(self, signals: tuple[signal.Signals, ...]) -> None:
        for sig in signals:
            if sig not in self._previous:
                self._previous[sig] = signal.signal(sig, self._handler)

    def follow(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self._main = weakref.ref(task)

    def restore(self) -> None:
        """Put back the signal handlers and the exception hook found before."""
        global _installed  # noqa: PLW0603 - one set of handlers per process
        _require_main_thread("restoring the signal handlers")
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) is self._handler:  # never undo someone else's handler
                signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()
        if self._previous_hook is not None and sys.excepthook is self._hook:
            sys.excepthook = self._previous_hook
        self._previous_hook = None
        if _installed is self:
            _installed = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not threading.main_thread().is_alive():
            return  # the interpreter is exiting: let its flush finish
        if self._previous_hook is None:
            # Chained only now, so that a hook installed after handle_signals() (an error
            # reporter, a traceback prettifier) still sees every other exception.
            self._previous_hook = sys.excepthook
            sys.excepthook = self._hook
        task = self._main() if self._main is not None else None
        first, self._stopping = not self._stopping, True
        if first and task is not None and not task.done():
            loop = task.get_loop()
            if loop.is_running():
                try:
                    loop.call_soon_threadsafe(self._stop_task, task, signum)
                except RuntimeError:  # closed since: stop like sync code
                    pass
                else:
                    return
        raise SignalInterrupt(signum)

    def _stop_task(self, task: asyncio.Task[Any], signum: int) -> None:
        # Runs in the task's loop, so the cancel cannot land in the middle of its machinery.
        if task.done():
            raise SignalInterrupt(signum)
        # Raised from a callback of the main task, the interrupt leaves run_until_complete()
        # once the task has unwound, ahead of its result (cancelled or not).
        task.add_done_callback(functools.partial(_interrupt, signum))
        task.cancel(f"stopped by {signal.Signals(signum).name}")

    def _excepthook(
        self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, SignalInterrupt) and _installed is self:
            # SystemExit raised by the hook makes the interpreter exit with that code, after
            # the normal shutdown (threads joined, atexit callbacks run).
            raise SystemExit(exc.exit_code)
        previous = self._previous_hook if self._previous_hook is not None else sys.__excepthook__
        previous(exc_type, exc, tb)


def _interrupt(signum: int, _task: asyncio.Task[Any]) -> None:
    raise SignalInterrupt(signum)


def _check(signals: Iterable[int]) -> tuple[signal.Signals, ...]:
    if isinstance(signals, int | str | bytes) or not isinstance(signals, Iterable):
        msg = (
            f"signals must be an iterable of signal numbers, such as (signal.SIGTERM,), "
            f"not {signals!r}"
        )
        raise TypeError(msg)
    chosen: list[signal.Signals] = []
    for number in signals:
        if isinstance(number, bool) or not isinstance(number, int):
            msg = f"signals must be signal numbers, such as signal.SIGTERM, not {number!r}"
            raise TypeError(msg)
        try:
            sig = signal.Signals(number)
        except ValueError:
            msg = f"{number} is not a signal on this platform"
            raise ValueError(msg) from None
        if sig in _UNCATCHABLE:
            msg = f"{sig.name} cannot be caught by a process"
            raise ValueError(msg)
        chosen.append(sig)
    if not chosen:
        msg = "no signals given: pass at least one, such as (signal.SIGTERM,)"
        raise ValueError(msg)
    return tuple(dict.fromkeys(chosen))


def _require_main_thread(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        msg = f"{what} must be called from the main thread: Python runs signal handlers there"
        raise RuntimeError(msg)


def _running_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running event loop: sync code
        return None
