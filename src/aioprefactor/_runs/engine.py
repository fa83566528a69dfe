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
import heapq
import itertools
import logging
import os
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec

from aioprefactor._runs import requests
from aioprefactor._runs.records import End, RecordingState, RunRecord, SpanRecord
from aioprefactor._runs.requests import Kind, Op
from aioprefactor._wire.codec import BULK_DECODER, encode
from aioprefactor._wire.errors import (
    PrefactorConflictError,
    PrefactorError,
    PrefactorResponseContractError,
)
from aioprefactor._wire.models import AgentInstance, AgentSpan, ControlSignal
from aioprefactor._wire.transport import Failure, Transport

if TYPE_CHECKING:
    from collections.abc import Callable

    from aioprefactor._runs.records import Record
    from aioprefactor._wire.config import Settings
    from aioprefactor._wire.models import BulkOutput

log: Final = logging.getLogger("aioprefactor")

S = RecordingState

MAX_BATCH: Final = 100
"""Items in one bulk request at most."""

# Inbox events.
OPEN_RUN: Final = 0
END_RUN: Final = 1
OPEN_SPAN: Final = 2
END_SPAN: Final = 3

_BULK_GONE: Final = frozenset({404, 405, 415})
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
        # Everything below is touched only by the engine's own thread.
        self._transport: Transport | None = None
        self._singles: collections.deque[Op] = collections.deque()
        self._batch: collections.deque[Op] = collections.deque()
        self._delayed: list[tuple[float, int, Op]] = []
        self._sequence = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = 0
        self._batch_in_flight = 0
        self._owed = 0
        self._parked = 0
        self._flush_waiters: list[Callable[[bool], None]] = []
        self._api_down = False
        self._bulk = self._options.batching
        self._bulk_types = set(requests.BULK_TYPES)
        self._open_runs: set[RunRecord] = set()
        self._poller: asyncio.TimerHandle | None = None
        self._warned_drop = False
        self._sent_requests = self._delivered = self._retried = 0
        self._dropped = self._abandoned = 0

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
        if self._loop is None or (self._closed and self._thread is None):
            result.set_result(True)
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
        self, record: Record, states: frozenset[RecordingState]
    ) -> concurrent.futures.Future[RecordingState]:
        """A future that resolves with the record's state once it is in ``states``."""
        result: concurrent.futures.Future[RecordingState] = concurrent.futures.Future()
        if record.state in states:
            result.set_result(record.state)
            return result

        def watch(moved: Record) -> None:
            if moved.state in states:
                moved.unwatch(watch)
                if not result.done():
                    result.set_result(moved.state)

        def arm() -> None:
            if record.state in states:
                result.set_result(record.state)
            else:
                record.watch(watch)

        if self._closed:
            result.set_result(record.state)
        else:
            self.call(arm)
        return result

    def stats(self) -> DeliveryStats:
        """Counts since the engine was made (read without locking: a snapshot)."""
        return DeliveryStats(
            pending=self._owed + self._parked + len(self._inbox),
            sent_requests=self._sent_requests,
            delivered=self._delivered,
            retried=self._retried,
            dropped=self._dropped,
            abandoned=self._abandoned,
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
        self._stop(ok)
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
            thread.start()
            atexit.register(_close_at_exit, weakref.ref(self))
            return loop

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        transport = Transport(self._settings)
        loop.call_soon(self._open, transport)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(transport.close())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def _open(self, transport: Transport) -> None:
        transport.open()
        self._transport = transport
        interval = self._options.termination_poll_interval
        if interval is not None:
            self._poller = asyncio.get_running_loop().call_later(interval, self._poll)

    def _stop(self, delivered: bool) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        def stop() -> None:
            if not delivered:
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
        inbox = self._inbox
        while inbox:
            event, record = inbox.popleft()
            if event == OPEN_SPAN:
                self._open_span(record)  # type: ignore[arg-type]
            elif event == END_SPAN:
                self._end_span(record)  # type: ignore[arg-type]
            elif event == OPEN_RUN:
                self._open_run(record)  # type: ignore[arg-type]
            else:
                self._end_run(record)  # type: ignore[arg-type]
        self._pump()

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._settings.total_timeout

    def _owe(self, kind: Kind, record: Record) -> None:
        op = Op(kind, record, self._deadline())
        self._owed += 1
        if self._bulk and kind in self._bulk_types:
            self._batch.append(op)
        else:
            self._singles.append(op)

    def _open_run(self, run: RunRecord) -> None:
        self._open_runs.add(run)
        self._owe(Kind.REGISTER, run)

    def _end_run(self, run: RunRecord) -> None:
        end = run.end
        assert end is not None
        # A span still open when its run ends was abandoned with it.
        for span in tuple(run.open_spans or ()):
            if span.end is None:
                span.end = End("cancelled", end.at)
                self._end_span(span)
        self._finish_run_when_ready(run)

    def _open_span(self, span: SpanRecord) -> None:
        run = span.run
        if self._owed + self._parked >= self._options.max_queue:
            self._drop(span)
            return
        if run.open_spans is None:
            run.open_spans = set()
        run.open_spans.add(span)
        self._place(span)

    def _place(self, span: SpanRecord) -> None:
        run, parent = span.run, span.parent
        if run.end is not None and span.end is None:
            self._give_up(span, RuntimeError("the span opened after its run ended"))
        elif run.state is not S.ACTIVE:
            if run.settled or run.state in {S.FINISHING, S.UNSTARTED}:
                self._give_up(span, None)
            else:
                run.park(span)
                self._parked += 1
        elif parent is not None and parent.id is None:
            if parent.settled:
                self._give_up(span, None)
            else:
                parent.park(span)
                self._parked += 1
        else:
            self._owe(Kind.CREATE, span)

    def _release(self, record: Record) -> None:
        for span in record.unpark():
            self._parked -= 1
            self._place(span)

    def _end_span(self, span: SpanRecord) -> None:
        # Queued: its create carries the end. Being created: the answer decides.
        if span.state is S.ACTIVE:
            self._finish_span(span)

    def _finish_span(self, span: SpanRecord) -> None:
        # FINISHING from the moment it is owed, so it is owed once whatever arrives next.
        span.move(S.FINISHING)
        self._owe(Kind.FINISH_SPAN, span)

    def _drop(self, span: SpanRecord) -> None:
        span.error = RuntimeError("the delivery queue is full")
        span.move(S.DROPPED)
        self._dropped += 1
        if not self._warned_drop:
            self._warned_drop = True
            log.warning(
                "aioprefactor: the delivery queue is full (max_queue=%d); spans are dropped "
                "until it drains (runs are never dropped; see client.stats())",
                self._options.max_queue,
            )

    def _give_up(self, span: SpanRecord, why: BaseException | None) -> None:
        # A span of a run (or parent) that is not recorded has no error of its own.
        span.error = why
        span.move(S.NOT_RECORDED)
        self._settle_span(span)

    def _settle_span(self, span: SpanRecord) -> None:
        for child in span.unpark():
            self._parked -= 1
            self._place(child)
        run = span.run
        if run.open_spans is not None:
            run.open_spans.discard(span)
        self._finish_run_when_ready(run)

    def _finish_run_when_ready(self, run: RunRecord) -> None:
        ready = run.state is S.ACTIVE or run.state is S.UNSTARTED
        if run.end is not None and ready and not run.open_spans:
            run.move(S.FINISHING)
            self._owe(Kind.FINISH_RUN, run)

    # --- sending --------------------------------------------------------------------------

    def _needed(self, op: Op) -> bool:
        """Whether ``op`` is still worth sending: nothing is created in an ended instance."""
        if op.kind is Kind.CREATE and op.run.state is S.TERMINATED:
            self._settle(op)
            self._give_up(op.record, RuntimeError("the server terminated its run"))  # type: ignore[arg-type]
            return False
        return True

    def _pump(self) -> None:
        limit = self._settings.max_connections
        singles, batch = self._singles, self._batch
        while singles and self._in_flight < limit:
            op = singles.popleft()
            if self._needed(op):
                self._send_one(op, batch_lane=False)
        while (
            batch
            and self._in_flight < limit
            and (self._batch_in_flight == 0 or len(batch) >= MAX_BATCH)
        ):
            if not self._bulk:
                op = batch.popleft()
                if self._needed(op):
                    self._send_one(op, batch_lane=True)
                continue
            taken = [
                op
                for op in (batch.popleft() for _ in range(min(MAX_BATCH, len(batch))))
                if self._needed(op)
            ]
            if not taken:
                continue
            if len(taken) == 1:
                self._send_one(taken[0], batch_lane=True)
            else:
                self._send_bulk(taken)
        self._check_flushed()

    def _launch(self, work: Any, batch_lane: bool) -> None:
        self._in_flight += 1
        self._sent_requests += 1
        if batch_lane:
            self._batch_in_flight += 1
        task = asyncio.get_running_loop().create_task(work)

        def landed(_: asyncio.Task[None]) -> None:
            self._in_flight -= 1
            if batch_lane:
                self._batch_in_flight -= 1
            self._pump()

        task.add_done_callback(landed)

    def _send_one(self, op: Op, *, batch_lane: bool) -> None:
        if op.kind is Kind.CREATE and op.record.state is S.QUEUED:
            op.record.move(S.OPENING)
        elif op.kind is Kind.REGISTER and op.record.state is S.QUEUED:
            op.record.move(S.REGISTERING)
        elif op.kind is Kind.START and op.record.state is S.REGISTERED:
            op.record.move(S.OPENING)
        self._launch(self._attempt(op), batch_lane)

    async def _attempt(self, op: Op) -> None:
        transport = self._transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        try:
            method, path, body, decoder = requests.request(op)
            transport.check_size(body, requests.NAMES[op.kind])
        except (ValueError, TypeError) as exc:
            self._abandon(op, exc)
            return
        op.attempts += 1
        outcome = await transport.attempt(
            method,
            path,
            body,
            decoder,
            requests.NAMES[op.kind],
            op.deadline - loop.time(),
            op.attempts,
        )
        if isinstance(outcome, Failure):
            self._failed(op, outcome)
        else:
            self._api_down = False
            self._answered(op, outcome.details, outcome.control)

    def _send_bulk(self, ops: list[Op]) -> None:
        for op in ops:
            if op.record.state is S.QUEUED:
                op.record.move(S.OPENING if op.kind is Kind.CREATE else S.REGISTERING)
        self._launch(self._attempt_bulk(ops), batch_lane=True)

    async def _attempt_bulk(self, ops: list[Op]) -> None:
        transport = self._transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        body = encode({"items": [requests.bulk_item(op) for op in ops]})
        budget = min(op.deadline for op in ops) - loop.time()
        outcome = await transport.attempt(
            "POST", "/api/v1/bulk", body, BULK_DECODER, "bulk", budget
        )
        if isinstance(outcome, Failure):
            status = getattr(outcome.error, "status_code", None)
            if status in _BULK_GONE or status == 422:
                # The server has no bulk route of this shape: singles, for good.
                log.info("aioprefactor: the API answered bulk with %s; sending singly", status)
                self._bulk = False
                self._requeue(ops)
                return
            for op in ops:
                op.attempts += 1
                self._failed(op, outcome)
            return
        self._api_down = False
        left: list[Op] = []
        for op in ops:
            output = outcome.outputs.get(op.key)
            if output is None:
                left.append(op)  # not processed: an earlier item failed
            else:
                self._bulk_answered(op, output)
        self._requeue(left)

    def _requeue(self, ops: list[Op]) -> None:
        for op in ops:
            (self._batch if self._bulk and op.kind in self._bulk_types else self._singles).append(
                op
            )

    def _bulk_answered(self, op: Op, output: BulkOutput) -> None:
        if output.ok:
            model = AgentSpan if op.kind is Kind.CREATE else AgentInstance
            try:
                details = msgspec.convert(output.details, model)
            except msgspec.ValidationError as exc:
                error = PrefactorResponseContractError(
                    f"bulk item answer does not fit {model.__name__}: {exc}",
                    operation=requests.NAMES[op.kind],
                )
                self._failed(op, Failure(error))
                return
            self._answered(op, details, output.control)
            return
        code = output.code or ""
        errors = output.errors or {}
        if "type" in code or "_type" in errors:
            # This server's bulk does not take this item type: send it singly from now on.
            self._bulk_types.discard(op.kind)
            self._singles.append(op)
            return
        refused = PrefactorError(
            f"{requests.NAMES[op.kind]} refused in bulk: {code}: {output.message}"
        )
        op.attempts += 1
        self._abandon(op, refused)

    # --- answers ------------------------------------------------------------------------

    def _failed(self, op: Op, failure: Failure) -> None:
        transport = self._transport
        assert transport is not None
        error = failure.error
        if failure.connection_refused:
            self._api_down = True
        loop = asyncio.get_running_loop()
        if transport.retryable(error) and not self._closed:
            delay = transport.delay(op.attempts, failure.retry_after)
            if loop.time() + delay < op.deadline:
                self._retried += 1
                heapq.heappush(self._delayed, (loop.time() + delay, next(self._sequence), op))
                self._arm_timer()
                self._check_flushed()
                return
        if op.kind is Kind.FINISH_RUN and isinstance(error, PrefactorConflictError):
            # Already terminal: if the server terminated it, that is the truth to keep.
            op.record.error = error
            self._owe(Kind.CHECK, op.record)
            self._settle(op)
            return
        self._abandon(op, error)

    def _arm_timer(self) -> None:
        if self._timer is not None or not self._delayed:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(self._delayed[0][0], self._wake_delayed)

    def _wake_delayed(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, op = heapq.heappop(self._delayed)
            self._requeue([op])
        self._arm_timer()
        self._pump()

    def _settle(self, op: Op) -> None:
        # No flush check here: what settles an operation often owes the next one.
        self._owed -= 1

    def _abandon(self, op: Op, error: BaseException) -> None:
        self._abandoned += 1
        self._settle(op)
        record = op.record
        if op.kind is Kind.POLL:
            return  # the next poll asks again
        if op.kind is Kind.CHECK and record.error is not None:
            error = record.error
        if record.error is None:
            record.error = error
        if record.settled:
            return
        if op.kind is Kind.START:
            # Registered, never started: still finished, so nothing stays pending.
            assert isinstance(record, RunRecord)
            record.move(S.UNSTARTED)
            self._release(record)
            self._finish_run_when_ready(record)
            if not record.warned:
                record.warned = True
                log.warning("aioprefactor: agent instance %s not started: %s", record.id, error)
            return
        record.move(S.NOT_RECORDED)
        warn = not record.warned
        record.warned = True
        if isinstance(record, SpanRecord):
            self._settle_span(record)
            if warn:
                log.warning("aioprefactor: span %r not recorded: %s", record.schema_name, error)
        else:
            assert isinstance(record, RunRecord)
            self._release(record)
            self._run_done(record)
            if warn:
                log.warning(
                    "aioprefactor: a run of agent %s not recorded: %s",
                    record.registration.agent_id or "(the token's agent)",
                    error,
                )

    def _run_done(self, run: RunRecord) -> None:
        self._open_runs.discard(run)

    def _answered(self, op: Op, details: Any, control: ControlSignal | None) -> None:
        self._delivered += 1
        self._settle(op)
        kind, record = op.kind, op.record
        if isinstance(record, SpanRecord):
            record.span = details
            if control is not None and control.terminate:
                self._terminated(record.run, control.reason)
            record.run.last_heard = asyncio.get_running_loop().time()
            if kind is Kind.CREATE:
                record.id = details.id
                if details.status in {"active", "pending"}:
                    record.move(S.ACTIVE)
                    self._release(record)
                    if record.end is not None:
                        self._finish_span(record)
                    return
            if not record.settled:
                record.move(S.FINISHED)
            self._settle_span(record)
            return
        assert isinstance(record, RunRecord)
        record.instance = details
        record.last_heard = asyncio.get_running_loop().time()
        if details.status == "terminated":
            self._terminated(record, details.termination_reason)
        if record.settled:
            return
        if kind is Kind.REGISTER:
            record.id = details.id
            record.move(S.REGISTERED)
            self._owe(Kind.START, record)
        elif kind is Kind.START:
            record.move(S.ACTIVE)
            self._release(record)
            self._finish_run_when_ready(record)
        elif kind is Kind.FINISH_RUN:
            record.move(S.FINISHED)
            self._run_done(record)
        elif kind is Kind.CHECK:  # after a 409 on finish: finished by someone else
            record.move(S.NOT_RECORDED)
            self._run_done(record)

    def _terminated(self, run: RunRecord, reason: str | None) -> None:
        if run.state is S.TERMINATED:
            return
        if run.settled:
            return
        run.termination_reason = reason
        run.error = None  # a 409 that turned out to be the termination is not an error
        was_finishing = run.state is S.FINISHING
        run.move(S.TERMINATED)
        self._run_done(run)
        self._release(run)
        if was_finishing:
            return
        stop = run.cancel_block
        if stop is not None and run.end is None and run.on_terminate == "cancel":
            stop()

    def _poll(self) -> None:
        interval = self._options.termination_poll_interval
        assert interval is not None
        loop = asyncio.get_running_loop()
        quiet = loop.time() - interval
        for run in tuple(self._open_runs):
            if run.state is S.ACTIVE and run.end is None and run.last_heard <= quiet:
                run.last_heard = loop.time()
                self._owe(Kind.POLL, run)
        self._poller = loop.call_later(interval, self._poll)
        self._pump()

    # --- flushing -------------------------------------------------------------------------

    def _check_flushed(self) -> None:
        waiters = self._flush_waiters
        if not waiters:
            return
        idle = not (self._owed or self._parked or self._inbox)
        if idle or self._api_down:
            self._flush_waiters = []
            for done in waiters:
                done(idle)

    def _report_lost(self) -> None:
        lost = self._owed + self._parked
        if lost:
            log.warning(
                "aioprefactor: %d telemetry operation(s) not delivered before the client closed%s",
                lost,
                " (the API refused connections)" if self._api_down else "",
            )


def _close_at_exit(ref: weakref.ref[Engine]) -> None:
    # A script that simply ends loses nothing: deliver within shutdown_timeout.
    engine = ref()
    if engine is not None and not engine.closed and engine._pid == os.getpid():
        engine.close(engine.options.shutdown_timeout)


def after_fork_in_child() -> None:
    """Give every engine a fresh delivery state in a forked child."""
    for engine in list(_ALIVE):
        if engine._loop is not None:
            engine._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=after_fork_in_child)
