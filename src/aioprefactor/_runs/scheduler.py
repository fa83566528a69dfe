"""The engine's scheduling: what each record still owes, in what order, and how it goes out.

Everything here runs in the engine's thread, on its event loop; nothing else touches it.
See :mod:`aioprefactor._runs.engine` for the rules it follows.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
from typing import TYPE_CHECKING, Any, Final

import msgspec

from aioprefactor._runs import requests
from aioprefactor._runs.records import End, RecordingState, RunRecord, SpanRecord
from aioprefactor._runs.requests import Kind, Op
from aioprefactor._wire.codec import BULK_DECODER, encode
from aioprefactor._wire.errors import (
    PrefactorConflictError,
    PrefactorError,
    PrefactorRateLimitError,
    PrefactorResponseContractError,
    PrefactorServerError,
)
from aioprefactor._wire.models import AgentInstance, AgentSpan, ControlSignal
from aioprefactor._wire.transport import Failure

if TYPE_CHECKING:
    from collections.abc import Callable

    from aioprefactor._runs.records import Record
    from aioprefactor._wire.config import Settings
    from aioprefactor._wire.models import BulkOutput
    from aioprefactor._wire.transport import Transport

log: Final = logging.getLogger("aioprefactor")

S = RecordingState

MAX_BATCH: Final = 100
"""Items in one bulk request at most."""

_BULK: Final = "/api/v1/bulk"
_BULK_GONE: Final = frozenset({404, 405, 415})
_SHARED_FIELDS: Final = (
    "account_id",
    "agent_id",
    "agent_version_id",
    "environment_id",
    "agent_deployment_id",
)
_MAX_SHARED_IDS: Final = 1024
# An item's answer has a code but no status: the codes of a passing failure (a 429 or a
# 5xx, the change not saved), so that such an item is retried as a single would be.
_PASSING: Final = {
    "rate_limited": 429,
    "internal_error": 500,
    "bad_gateway": 502,
    "service_unavailable": 503,
    "storage_error": 503,
    "gateway_timeout": 504,
}


class Scheduler:
    """Owes, orders, batches, sends and retries the operations records need."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        *,
        max_queue: int,
        batching: bool,
        poll_interval: float | None,
        progressed: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._max_queue = max_queue
        self._poll_interval = poll_interval
        # Called after every step that may have settled work (the engine checks flushes).
        self._check_flushed = progressed
        self._singles: collections.deque[Op] = collections.deque()
        self._batch: collections.deque[Op] = collections.deque()
        self._delayed: list[tuple[float, int, Op]] = []
        self._sequence = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = 0
        self._batch_in_flight = 0
        self._bulk = batching
        self._bulk_types = set(requests.BULK_TYPES)
        self._open_runs: set[RunRecord] = set()
        self._shared_ids: dict[str, str] = {}
        self._warned_drop = False
        self.closing = False
        """Set when the engine closes: failures are no longer retried."""
        self.api_down = False
        """Whether the API's address refused the last connection (cleared by any answer)."""
        self.owed = 0
        """Operations owed and not settled."""
        self.parked = 0
        """Spans waiting for the id of what they hang from."""
        self.sent_requests = self.delivered = self.retried = self.dropped = self.abandoned = 0
        if poll_interval is not None:
            asyncio.get_running_loop().call_later(poll_interval, self._poll)

    # --- what the engine hands over -----------------------------------------------------

    def open_run(self, run: RunRecord) -> None:
        """A run was entered: owe its register (then its start)."""
        self._open_runs.add(run)
        self._owe(Kind.REGISTER, run)

    def end_run(self, run: RunRecord) -> None:
        """A run's block ended: its finish follows its spans."""
        self._end_run(run)

    def open_span(self, span: SpanRecord) -> None:
        """A span was entered: owe its create once what it hangs from has an id."""
        self._open_span(span)

    def end_span(self, span: SpanRecord) -> None:
        """A span's block ended: owe its finish, unless its create will carry the end."""
        self._end_span(span)

    def pump(self) -> None:
        """Send what is ready, as far as the limits allow."""
        self._pump()

    def unfinished_runs(self) -> int:
        """Runs whose blocks have not ended: closing now leaves them open on the server."""
        return sum(1 for run in self._open_runs if run.end is None)

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._settings.total_timeout

    def _owe(self, kind: Kind, record: Record) -> None:
        op = Op(kind, record, self._deadline())
        self.owed += 1
        if self._bulk and kind in self._bulk_types:
            self._batch.append(op)
        else:
            self._singles.append(op)

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
        if self.owed + self.parked >= self._max_queue:
            self._drop(span)
            return
        if run.open_spans is None:
            run.open_spans = set()
        run.open_spans.add(span)
        self._place(span)

    def _place(self, span: SpanRecord) -> None:
        run, parent = span.run, span.parent
        ended = run.end
        if ended is not None and span.end is None:
            # Scopes open no span in an ended run: this one was open when its run ended,
            # and that end was written before the engine got here. Cancelled with it.
            span.end = End("cancelled", ended.at)
        if run.state is not S.ACTIVE:
            if run.settled or run.state in {S.FINISHING, S.UNSTARTED}:
                self._give_up(span, None)
            else:
                run.park(span)
                self.parked += 1
        elif parent is not None and parent.id is None:
            if parent.settled:
                self._give_up(span, None)
            else:
                parent.park(span)
                self.parked += 1
        else:
            self._owe(Kind.CREATE, span)

    def _release(self, record: Record) -> None:
        for span in record.unpark():
            self.parked -= 1
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
        self.dropped += 1
        if not self._warned_drop:
            self._warned_drop = True
            log.warning(
                "aioprefactor: the delivery queue is full (max_queue=%d); spans are dropped "
                "until it drains (runs are never dropped; see client.stats())",
                self._max_queue,
            )

    def _give_up(self, span: SpanRecord, why: BaseException | None) -> None:
        # A span of a run (or parent) that is not recorded has no error of its own.
        span.error = why
        span.move(S.NOT_RECORDED)
        self._settle_span(span)

    def _settle_span(self, span: SpanRecord) -> None:
        for child in span.unpark():
            self.parked -= 1
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
        if self._batch and (not self._bulk or len(self._bulk_types) < len(requests.BULK_TYPES)):
            # The server took bulk (or this type in bulk) away: what waited for a batch
            # goes out singly, in parallel, like any other operation.
            keep: collections.deque[Op] = collections.deque()
            for op in self._batch:
                (keep if self._bulk and op.kind in self._bulk_types else self._singles).append(op)
            self._batch = keep
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

    def _launch(self, work: Any, ops: list[Op], batch_lane: bool) -> None:
        self._in_flight += 1
        self.sent_requests += 1
        if batch_lane:
            self._batch_in_flight += 1
        for op in ops:
            op.flying = True
        task = asyncio.get_running_loop().create_task(work)

        def landed(done: asyncio.Task[None]) -> None:
            self._in_flight -= 1
            if batch_lane:
                self._batch_in_flight -= 1
            error = None if done.cancelled() else done.exception()
            if error is not None:
                # A bug, not an answer (or the session closing under a request at
                # shutdown): give up what it carried rather than leave it owed for ever.
                if not self.closing:
                    log.error("aioprefactor: a delivery failed unexpectedly: %r", error)
                for op in ops:
                    if op.flying:
                        self._abandon(op, error)
            self._pump()

        task.add_done_callback(landed)

    def _send_one(self, op: Op, *, batch_lane: bool) -> None:
        if op.kind is Kind.CREATE and op.record.state is S.QUEUED:
            op.record.move(S.OPENING)
        elif op.kind is Kind.REGISTER and op.record.state is S.QUEUED:
            op.record.move(S.REGISTERING)
        elif op.kind is Kind.START and op.record.state is S.REGISTERED:
            op.record.move(S.OPENING)
        self._launch(self._attempt(op), [op], batch_lane)

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
            self.api_down = False
            self._answered(op, outcome.details, outcome.control)

    def _send_bulk(self, ops: list[Op]) -> None:
        for op in ops:
            if op.record.state is S.QUEUED:
                op.record.move(S.OPENING if op.kind is Kind.CREATE else S.REGISTERING)
        self._launch(self._attempt_bulk(ops), ops, batch_lane=True)

    async def _attempt_bulk(self, ops: list[Op]) -> None:
        transport = self._transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        items = [requests.bulk_item(op) for op in ops]
        body = encode({"items": items})
        limit = self._settings.max_request_bytes
        while len(body) > limit and len(ops) > 1:
            # Too big together (the server would refuse them all): send what fits, and
            # the rest in later requests.
            half = len(ops) // 2
            self._requeue(ops[half:])
            ops, items = ops[:half], items[:half]
            body = encode({"items": items})
        if len(ops) == 1:
            await self._attempt(ops[0])  # alone, its size is checked like any single's
            return
        budget = min(op.deadline for op in ops) - loop.time()
        outcome = await transport.attempt("POST", _BULK, body, BULK_DECODER, "bulk", budget)
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
        self.api_down = False
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
            op.flying = False
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
            op.flying = False
            self._singles.append(op)
            return
        op.attempts += 1
        status = _PASSING.get(code)
        if status is not None:
            kind = PrefactorRateLimitError if status == 429 else PrefactorServerError
            passing = kind(
                output.message or code, status_code=status, code=code, method="POST", path=_BULK
            )
            self._failed(op, Failure(passing))
            return
        refused = PrefactorError(
            f"{requests.NAMES[op.kind]} refused in bulk: {code}: {output.message}"
        )
        self._abandon(op, refused)

    # --- answers ------------------------------------------------------------------------

    def _failed(self, op: Op, failure: Failure) -> None:
        transport = self._transport
        assert transport is not None
        error = failure.error
        if failure.connection_refused:
            self.api_down = True
        loop = asyncio.get_running_loop()
        if transport.retryable(error) and not self.closing:
            delay = transport.delay(op.attempts, failure.retry_after)
            if loop.time() + delay < op.deadline:
                self.retried += 1
                op.flying = False
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
        op.flying = False
        self.owed -= 1

    def _abandon(self, op: Op, error: BaseException) -> None:
        self.abandoned += 1
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
            if not record.warned:
                record.warned = True
                log.warning("aioprefactor: agent instance %s not started: %s", record.id, error)
            record.move(S.UNSTARTED)
            self._release(record)
            self._finish_run_when_ready(record)
            return
        # Warn before the move: whoever waits on the record may read the log at once.
        # Closing, the engine says once how much was not delivered instead.
        if not record.warned and not self.closing:
            record.warned = True
            if isinstance(record, SpanRecord):
                log.warning("aioprefactor: span %r not recorded: %s", record.schema_name, error)
            elif isinstance(record, RunRecord):
                log.warning(
                    "aioprefactor: a run of agent %s not recorded: %s",
                    record.registration.agent_id or "(the token's agent)",
                    error,
                )
        record.move(S.NOT_RECORDED)
        if isinstance(record, SpanRecord):
            self._settle_span(record)
        elif isinstance(record, RunRecord):
            self._release(record)
            self._run_done(record)

    def _run_done(self, run: RunRecord) -> None:
        self._open_runs.discard(run)

    def _answered(self, op: Op, details: Any, control: ControlSignal | None) -> None:
        self.delivered += 1
        self._settle(op)
        kind, record = op.kind, op.record
        if isinstance(record, SpanRecord):
            record.span = details
            if control is not None and control.terminate:
                self._terminated(record.run, control.reason)
            self._heard(record.run, kind)
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
        record.instance = self._compact(details)
        self._heard(record, kind)
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

    def _compact(self, instance: AgentInstance) -> AgentInstance:
        # Every run of an agent answers with the same account, agent, version, environment
        # and deployment ids: each open run keeps one shared copy of them, not its own.
        shared = self._shared_ids
        fields = {}
        for name in _SHARED_FIELDS:
            value = getattr(instance, name)
            kept = shared.get(value)
            if kept is None:
                if len(shared) >= _MAX_SHARED_IDS:
                    shared.clear()
                kept = shared[value] = value
            if kept is not value:
                fields[name] = kept
        return msgspec.structs.replace(instance, **fields) if fields else instance

    def _heard(self, run: RunRecord, kind: Kind) -> None:
        # A poll counted when it was sent: its own answer must not make the run look
        # busy, or a quiet run would be polled only every other interval.
        if kind is not Kind.POLL:
            run.last_heard = asyncio.get_running_loop().time()

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
        run.stop_block()

    def _poll(self) -> None:
        interval = self._poll_interval
        assert interval is not None
        loop = asyncio.get_running_loop()
        quiet = loop.time() - interval
        for run in tuple(self._open_runs):
            if run.state is S.ACTIVE and run.end is None and run.last_heard <= quiet:
                run.last_heard = loop.time()
                self._owe(Kind.POLL, run)
        loop.call_later(interval, self._poll)
        self._pump()
