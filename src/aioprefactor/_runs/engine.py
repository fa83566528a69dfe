"""The delivery engine: records in, requests out, in order, in the background.

The agent's code never waits here. Scopes hand records over with :meth:`Engine.submit`
(any thread: it appends to an inbox and wakes the engine at most once per burst), and
the engine, an event loop of its own in a daemon thread with one aiohttp session, works
out what each record still owes the API:

- register -> start -> (spans) -> finish for a run; create -> finish for a span. A span's
  create waits for its run to be started and for its parent's id; a run's finish waits
  for every one of its spans to settle. Waiting is parking on the record it waits for,
  never polling.
- Coalescing: an operation's body is built when it is first sent, from the record as it
  is then, so a span that already ended goes as one create with its final status.
- Batching without lingering: one request of the batch lane (registers and creates) is
  in flight at a time unless a batch is full; what becomes ready meanwhile goes out
  together, through ``/api/v1/bulk``. Other operations go out at once, up to the
  connection limit.
- Retries under the operation's own idempotency key, with backoff and ``Retry-After``,
  until its deadline; then the operation is abandoned and counted.
- Bounded: past ``max_queue`` owed operations, new spans are dropped (counted, logged
  once); a run's own operations are never dropped.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import logging
import os
import sys
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aioprefactor._runs.scheduler import Scheduler
from aioprefactor._wire.transport import Transport

if TYPE_CHECKING:
    from collections.abc import Callable

    from aioprefactor._runs.records import Record, RecordingState
    from aioprefactor._wire.config import Settings

log: Final = logging.getLogger("aioprefactor")


# Inbox events.
OPEN_RUN: Final = 0
END_RUN: Final = 1
OPEN_SPAN: Final = 2
END_SPAN: Final = 3

_ALIVE: Final[weakref.WeakSet[Engine]] = weakref.WeakSet()
# What a forked child must never touch nor collect: the parent's loops and sessions.
_LEFT_IN_PARENT: list[object] = []


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    """Counts of a client's background delivery since it was made.

    Attributes:
        pending: Operations owed to the API and not yet settled.
        sent_requests: HTTP requests sent (a bulk request counts once).
        delivered: Operations the API accepted.
        retried: Attempts that failed and were tried again.
        dropped: Spans not recorded because the queue was full or the client closed.
        abandoned: Operations given up on (a refusal, or their deadline passed).
    """

    pending: int
    sent_requests: int
    delivered: int
    retried: int
    dropped: int
    abandoned: int


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """How the engine delivers; checked by the client's settings."""

    max_queue: int = 100_000
    batching: bool = True
    termination_poll_interval: float | None = 30.0
    inline: bool = False
    capture: bool = True
    shutdown_timeout: float = 5.0


class Engine:
    """Delivers records to the API from a thread and event loop of its own."""

    def __init__(self, settings: Settings, options: EngineOptions, owner: object = None) -> None:
        self.owner = owner
        """The client this engine delivers for (handed to run handles)."""
        self._settings = settings
        self._options = options
        self._lock = threading.Lock()
        self._inbox: collections.deque[tuple[int, Record]] = collections.deque()
        self._woken = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._reset()
        _ALIVE.add(self)

    def _reset(self) -> None:
        # Touched only by the engine's own thread, once it runs.
        self._transport: Transport | None = None
        self._scheduler: Scheduler | None = None
        self._flush_waiters: list[Callable[[bool], None]] = []

    def _counts(self) -> tuple[int, int]:
        """Operations owed, and spans parked (a snapshot; zero before the engine runs)."""
        scheduler = self._scheduler
        return (0, 0) if scheduler is None else (scheduler.owed, scheduler.parked)

    # --- any thread ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the engine was closed: nothing more is sent."""
        return self._closed

    def submit(self, event: int, record: Record) -> bool:
        """Hand a record over: it was opened or ended. Never blocks, never raises.

        Returns:
            False when the engine is closed and the record will not be delivered.
        """
        if self._closed:
            return False
        self._inbox.append((event, record))
        if not self._woken:
            self._woken = True
            loop = self._loop if self._pid == os.getpid() and self._loop else self._start()
            try:
                loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop closed under us: the interpreter is ending
                return False
        return True

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the engine's thread, soon."""
        loop = self._loop if self._loop is not None else self._start()
        loop.call_soon_threadsafe(fn)

    def flush_future(self, timeout: float | None) -> concurrent.futures.Future[bool]:
        """A future that becomes True once everything handed over so far is settled.

        It becomes False when ``timeout`` passes first, or at once when the API refuses
        connections (it is down: waiting would only hold the program).
        """
        result: concurrent.futures.Future[bool] = concurrent.futures.Future()
        if self._loop is None or self._closed:
            # Nothing started, or nothing more will be sent: say whether all was delivered.
            result.set_result(not (any(self._counts()) or self._inbox))
            return result

        def done(ok: bool) -> None:
            if not result.done():
                result.set_result(ok)

        def arm() -> None:
            loop = asyncio.get_running_loop()
            if timeout is not None:
                handle = loop.call_later(timeout, done, False)
                result.add_done_callback(lambda _: handle.cancel())
            self._flush_waiters.append(done)
            self._check_flushed()

        self.call(arm)
        return result

    @property
    def options(self) -> EngineOptions:
        """How this engine delivers."""
        return self._options

    @property
    def secret(self) -> str:
        """The token, to scrub from anything recorded."""
        return self._settings.api_token.reveal()

    def when(
        self,
        record: Record,
        states: frozenset[RecordingState],
        notify: Callable[[RecordingState], None],
    ) -> None:
        """Call ``notify(state)`` once the record's state is in ``states`` (or never moves again).

        ``notify`` runs in the engine's thread (or here, when the state is already there or
        the engine is closed): it must only hand the news over, thread-safely.
        """
        if record.state in states or self._closed:
            notify(record.state)
            return

        def watch(moved: Record) -> None:
            if moved.state in states:
                moved.unwatch(watch)
                notify(moved.state)

        def arm() -> None:
            if record.state in states:
                notify(record.state)
            else:
                record.watch(watch)

        self.call(arm)

    def stats(self) -> DeliveryStats:
        """Counts since the engine was made (read without locking: a snapshot)."""
        scheduler = self._scheduler
        owed, parked = self._counts()
        pending = owed + parked + len(self._inbox)
        if scheduler is None:
            return DeliveryStats(pending, 0, 0, 0, 0, 0)
        return DeliveryStats(
            pending=pending,
            sent_requests=scheduler.sent_requests,
            delivered=scheduler.delivered,
            retried=scheduler.retried,
            dropped=scheduler.dropped,
            abandoned=scheduler.abandoned,
        )

    def close(self, timeout: float | None) -> bool:
        """Flush within ``timeout``, then stop the thread and close the session.

        Returns:
            Whether everything was delivered.
        """
        with self._lock:
            if self._closed:
                return True
            loop, thread = self._loop, self._thread
        ok = True
        if loop is not None and thread is not None and thread.is_alive():
            future = self.flush_future(timeout)
            try:
                ok = future.result(None if timeout is None else timeout + 1.0)
            except concurrent.futures.TimeoutError:
                ok = False
        self._closed = True
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.closing = True
        self._stop()
        return ok

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._pid != os.getpid():
                self._after_fork()
            if self._loop is not None:
                return self._loop
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=self._run, args=(loop,), name="aioprefactor-delivery", daemon=True
            )
            self._loop, self._thread = loop, thread
            loop.call_soon(self._open)
            thread.start()
            atexit.register(_close_at_exit, weakref.ref(self))
            _in_process_children(self)
            return loop

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                if self._transport is not None:
                    loop.run_until_complete(self._transport.close())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def _open(self) -> None:
        # The first callback of the engine's loop: scheduled before the thread starts, so
        # it runs before any hand-over is drained.
        transport = Transport(self._settings)
        transport.open()
        self._transport = transport
        options = self._options
        self._scheduler = Scheduler(
            self._settings,
            transport,
            max_queue=options.max_queue,
            batching=options.batching,
            poll_interval=options.termination_poll_interval,
            progressed=self._check_flushed,
        )

    def _stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        def stop() -> None:
            # Also what was handed over between the last flush and the close.
            self._report_lost()
            loop.stop()

        try:
            loop.call_soon_threadsafe(stop)
        except RuntimeError:
            return
        if thread is not threading.current_thread():
            thread.join(5.0)

    def _after_fork(self) -> None:
        # The child shares the parent's sockets but not its thread: start afresh, and keep
        # the parent's objects alive (collecting them would close the parent's sockets).
        _LEFT_IN_PARENT.append((self._loop, self._transport))
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._inbox = collections.deque()
        self._woken = False
        self._loop = self._thread = None
        self._reset()

    # --- the engine's thread ------------------------------------------------------------

    def _drain(self) -> None:
        self._woken = False
        scheduler = self._scheduler
        assert scheduler is not None  # opened first: call_soon keeps the order
        inbox = self._inbox
        while inbox:
            event, record = inbox.popleft()
            if event == OPEN_SPAN:
                scheduler.open_span(record)  # type: ignore[arg-type]
            elif event == END_SPAN:
                scheduler.end_span(record)  # type: ignore[arg-type]
            elif event == OPEN_RUN:
                scheduler.open_run(record)  # type: ignore[arg-type]
            else:
                scheduler.end_run(record)  # type: ignore[arg-type]
        scheduler.pump()

    # --- flushing -------------------------------------------------------------------------

    def _check_flushed(self) -> None:
        waiters = self._flush_waiters
        if not waiters:
            return
        scheduler = self._scheduler
        idle = not (any(self._counts()) or self._inbox)
        if idle or (scheduler is not None and scheduler.api_down):
            self._flush_waiters = []
            for done in waiters:
                done(idle)

    def _report_lost(self) -> None:
        lost = sum(self._counts()) + len(self._inbox)
        scheduler = self._scheduler
        down = scheduler is not None and scheduler.api_down
        running = 0 if scheduler is None else scheduler.unfinished_runs()
        if running:
            log.warning(
                "aioprefactor: the client closed while %d run(s) were still running; "
                "their finish cannot be sent and they stay open on the server",
                running,
            )
        if lost:
            log.warning(
                "aioprefactor: %d telemetry operation(s) not delivered before the client closed%s",
                lost,
                " (the API refused connections)" if down else "",
            )


def _close_at_exit(ref: weakref.ref[Engine]) -> None:
    # A script that simply ends loses nothing: deliver within shutdown_timeout.
    engine = ref()
    if engine is not None and not engine.closed and engine._pid == os.getpid():
        engine.close(engine.options.shutdown_timeout)


def _in_process_children(engine: Engine) -> None:
    # A multiprocessing child ends with os._exit, which skips atexit; its finalizers run,
    # so a child's engine delivers from there too.
    processes = sys.modules.get("multiprocessing")
    if processes is not None and processes.parent_process() is not None:
        util = sys.modules.get("multiprocessing.util")
        if util is not None:
            util.Finalize(engine, _close_at_exit, args=(weakref.ref(engine),), exitpriority=10)


def after_fork_in_child() -> None:
    """Give every engine a fresh delivery state in a forked child."""
    for engine in list(_ALIVE):
        if engine._loop is not None:
            engine._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=after_fork_in_child)
