"""The handles a block gets: :class:`InstanceRun` and :class:`SpanRun`.

A handle belongs to one entry (one ``with`` block, one decorated call, one manual
``start()``/``open_span()``). It writes its record's end once and tells the engine; in
the default (background) delivery nothing here waits for the network. Inline delivery
waits, within the entry's budgets, for the engine to deliver.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any, Final, final

from aioprefactor._runs import engine as _engine
from aioprefactor._runs.capture import to_payload, with_error, without_secret
from aioprefactor._runs.records import End, RecordingState, now, status_for
from aioprefactor._wire.errors import PrefactorError, PrefactorTimeoutError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from contextvars import Token
    from datetime import datetime

    from aioprefactor._runs.engine import Engine
    from aioprefactor._runs.records import Record, RunRecord, SpanRecord
    from aioprefactor._wire.models import AgentInstance, AgentSpan, FinishStatus

log: Final = logging.getLogger("aioprefactor")

S = RecordingState
_OPENED: Final = frozenset(
    {S.ACTIVE, S.UNSTARTED, S.FINISHING, S.FINISHED, S.NOT_RECORDED, S.TERMINATED, S.DROPPED}
)
_SETTLED: Final = frozenset({S.FINISHED, S.NOT_RECORDED, S.TERMINATED, S.DROPPED})


class AgentTerminated(Exception):  # noqa: N818 - the name says what happened, as users read it
    """The server terminated the run: an operator stopped the agent.

    Raised when leaving a block (or returning from a decorated entrypoint) that was
    stopped because the API said its instance is terminated.

    Attributes:
        reason: The server's reason, if it gave one.
        instance_id: The terminated instance.
    """

    def __init__(self, reason: str | None, instance_id: str | None) -> None:
        super().__init__(
            f"the agent instance {instance_id} was terminated: {reason or 'no reason'}"
        )
        self.reason = reason
        self.instance_id = instance_id


def _resolve(future: asyncio.Future[RecordingState], state: RecordingState) -> None:
    if not future.done():
        future.set_result(state)


async def _wait(
    engine: Engine, record: Record, states: frozenset[RecordingState], timeout: float | None
) -> bool:
    """Wait until the record's state is in ``states``; whether it got there in time.

    The wait never cancels anything in the engine: cancelling it only stops the waiting.
    """
    if record.state in states:
        return True
    loop = asyncio.get_running_loop()
    future: asyncio.Future[RecordingState] = loop.create_future()

    def notify(state: RecordingState) -> None:
        with contextlib.suppress(RuntimeError):  # the waiter's loop is gone
            loop.call_soon_threadsafe(_resolve, future, state)

    engine.when(record, states, notify)
    done, _ = await asyncio.wait((future,), timeout=timeout)
    return bool(done)


def _wait_sync(
    engine: Engine, record: Record, states: frozenset[RecordingState], timeout: float | None
) -> bool:
    """:func:`_wait` for sync code: blocks this thread."""
    if record.state in states:
        return True
    arrived = threading.Event()
    engine.when(record, states, lambda _: arrived.set())
    return arrived.wait(timeout)


class _Handle:
    """What run and span handles share: the explicit status and the block's end."""

    __slots__ = ("_engine", "_explicit", "_late", "_tokens", "status", "strict")

    _record: RunRecord | SpanRecord | None
    _kind: str

    def __init__(self, engine: Engine | None, *, strict: bool) -> None:
        self._engine = engine
        self._explicit: FinishStatus | None = None
        self._late: BaseException | None = None
        self._tokens: tuple[Token[Any], ...] | None = None
        self.status: FinishStatus | None = None
        self.strict = strict

    @property
    def id(self) -> str | None:
        """The id the server gave; ``None`` until its answer has landed (or if never)."""
        record = self._record
        return None if record is None else record.id

    @property
    def state(self) -> RecordingState:
        """Where its record stands with the API."""
        record = self._record
        return S.NOT_RECORDED if record is None else record.state

    @property
    def telemetry_error(self) -> BaseException | None:
        """Why it is not (or not yet) recorded; ``None`` when nothing is wrong."""
        record = self._record
        if record is not None and record.error is not None:
            return record.error
        late = self._late
        if late is not None and (record is None or record.state not in _OPENED):
            return late
        return None

    @property
    def ended(self) -> bool:
        """Whether its block has ended (a status was decided)."""
        return self.status is not None

    @property
    def tokens(self) -> tuple[Token[Any], ...] | None:
        """The context tokens of the entry that made it current (for its scope)."""
        return self._tokens

    @tokens.setter
    def tokens(self, tokens: tuple[Token[Any], ...] | None) -> None:
        self._tokens = tokens

    def _mark(self, status: FinishStatus) -> None:
        if self.status is not None:
            raise RuntimeError(f"this {self._kind} has already finished as {self.status}")
        if self._explicit is not None:
            raise RuntimeError(f"this {self._kind} was already marked {self._explicit}")
        self._explicit = status

    def _decide(self, status: FinishStatus | None, error: BaseException | None) -> FinishStatus:
        if self.status is not None:
            raise RuntimeError(f"this {self._kind} has already finished as {self.status}")
        # What a terminate stopped (AgentTerminated, in sync code) was cancelled, not failed.
        ending = "cancelled" if isinstance(error, AgentTerminated) else status_for(error)
        decided = status or self._explicit or ending
        self.status = decided
        return decided

    async def settle_open(self, budget: float) -> None:
        """Inline delivery: wait (within ``budget``) for the register and start, or the create."""
        record, engine = self._record, self._engine
        if record is not None and engine is not None:
            await _wait(engine, record, _OPENED, budget)
            self._opened(budget)

    def settle_open_sync(self, budget: float) -> None:
        """:meth:`settle_open` for sync code."""
        record, engine = self._record, self._engine
        if record is not None and engine is not None:
            _wait_sync(engine, record, _OPENED, budget)
            self._opened(budget)

    async def settle_end(self, budget: float) -> None:
        """Inline delivery: wait (within ``budget``) for the finish to be delivered."""
        record, engine = self._record, self._engine
        if (
            record is not None
            and engine is not None
            and not await _wait(engine, record, _SETTLED, budget)
        ):
            self._slow_finish(budget)

    def settle_end_sync(self, budget: float) -> None:
        """:meth:`settle_end` for sync code."""
        record, engine = self._record, self._engine
        if (
            record is not None
            and engine is not None
            and not _wait_sync(engine, record, _SETTLED, budget)
        ):
            self._slow_finish(budget)

    def _slow_finish(self, budget: float) -> None:
        """The finish outlasted the wait for it (a run says so; a span need not)."""

    def _describe(self, **extra: Any) -> str:
        fields = {"id": self.id, "state": self.state.value, "status": self.status, **extra}
        inner = " ".join(f"{key}={value!r}" for key, value in fields.items())
        return f"<{type(self).__name__} {inner}>"

    def _budget_exceeded(self, what: str, budget: float) -> None:
        error = PrefactorTimeoutError(
            f"{self._kind} was not {what} within its budget of {budget:g} s"
        )
        if self._late is None:
            self._late = error
        record = self._record
        if record is not None:
            record.warned = True
        log.warning(
            "aioprefactor: %s not recorded (yet), the block runs without it: %s", self._kind, error
        )

    def _opened(self, budget: float) -> None:
        """After an inline wait for the open: raise when strict, else note it (fail-open)."""
        record = self._record
        if record is None:
            return
        if record.state not in _OPENED:
            if self.strict:
                raise PrefactorTimeoutError(
                    f"{self._kind} was not recorded within its budget of {budget:g} s"
                )
            self._budget_exceeded("recorded", budget)
            return
        error = record.error
        if record.state is not S.ACTIVE and error is not None:
            if self.strict:
                raise error
            if not isinstance(error, PrefactorError):
                raise error  # a local mistake: raised in every mode


@final
class InstanceRun(_Handle):
    """One run of an agent: the handle ``with agent_instance(...)`` gives.

    Attributes:
        status: The status decided when the block ended (sent with the finish); ``None``
            until then.
        strict: Whether telemetry failures raise instead of failing open.
    """

    __slots__ = ("_record", "client", "root", "scope")

    _kind = "agent instance"

    def __init__(
        self,
        engine: Engine,
        record: RunRecord,
        *,
        strict: bool,
        client: Any = None,
        scope: Any = None,
    ) -> None:
        super().__init__(engine, strict=strict)
        self._record: RunRecord = record
        self.client = client
        self.scope = scope
        # The span recording a decorated call (``capture=True``), if any.
        self.root: SpanRun | None = None

    def __repr__(self) -> str:
        return self._describe(terminated=self.terminated)

    @property
    def record(self) -> RunRecord:
        """The run's record (what the engine delivers)."""
        return self._record

    @property
    def engine(self) -> Engine:
        """The engine that delivers this run."""
        engine = self._engine
        assert engine is not None
        return engine

    @property
    def instance(self) -> AgentInstance | None:
        """The last :class:`AgentInstance` the server returned."""
        return self._record.instance

    @property
    def terminated(self) -> bool:
        """Whether the server terminated the instance."""
        return self._record.state is S.TERMINATED

    @property
    def termination_reason(self) -> str | None:
        """The server's reason, when it terminated the instance."""
        return self._record.termination_reason

    @property
    def recording(self) -> bool:
        """Whether spans opened now are recorded: started (or on its way), not ended."""
        return self.status is None and self.telemetry_error is None and not self._record.settled

    def complete(self) -> None:
        """Finish as ``complete`` at the end of the block, whatever happens after.

        Raises:
            RuntimeError: A status was already set, or the run already finished.
        """
        self._mark("complete")

    def fail(self) -> None:
        """Finish as ``failed`` at the end of the block, whatever happens after.

        Raises:
            RuntimeError: A status was already set, or the run already finished.
        """
        self._mark("failed")

    def cancel(self) -> None:
        """Finish as ``cancelled`` at the end of the block, whatever happens after.

        Raises:
            RuntimeError: A status was already set, or the run already finished.
        """
        self._mark("cancelled")

    async def wait_recorded(self, timeout: float | None = None) -> str | None:
        """Wait until the run is registered and started; return its id.

        Args:
            timeout: Seconds to wait at most; ``None`` waits until delivery settles.

        Returns:
            The instance id, or ``None`` if the run is not recorded (``telemetry_error``
            says why) or the timeout came first.
        """
        await _wait(self.engine, self._record, _OPENED, timeout)
        return self.id if self._record.recorded else None

    def wait_recorded_sync(self, timeout: float | None = None) -> str | None:
        """:meth:`wait_recorded` for sync code: blocks this thread."""
        _wait_sync(self.engine, self._record, _OPENED, timeout)
        return self.id if self._record.recorded else None

    def begin(self) -> None:
        """Hand the run to the engine (scopes call this once)."""
        if not self.engine.submit(_engine.OPEN_RUN, self._record):
            self._closed_client()

    def _closed_client(self) -> None:
        error = RuntimeError("the client is closed; the run is not recorded")
        record = self._record
        if record.error is None:
            record.error = error
        if self.strict:
            raise error

    def end(
        self,
        status: FinishStatus | None = None,
        *,
        error: BaseException | None = None,
        ended_at: datetime | None = None,
    ) -> FinishStatus:
        """End the run: decide its status and hand the finish to the engine.

        Args:
            status: The status; by default the one set with ``complete()``/``fail()``/
                ``cancel()``, else what ``error`` implies (none: ``complete``).
            error: The exception the run ended with, if any.
            ended_at: When it ended; now when omitted.

        Returns:
            The status decided.

        Raises:
            RuntimeError: The run already ended.
        """
        decided = self._decide(status, error)
        record = self._record
        record.end = End(decided, ended_at or now())
        record.block_task = None  # nothing to stop any more: let the task go
        if not self.engine.submit(_engine.END_RUN, record) and record.error is None:
            record.error = RuntimeError("the client was closed first; the run's finish is not sent")
        return decided

    def _slow_finish(self, budget: float) -> None:
        log.warning(
            "aioprefactor: finishing agent instance %s is taking over %g s; it goes on in the "
            "background (await client.flush() or client.aclose() to wait for it)",
            self.id,
            budget,
        )


@final
class SpanRun(_Handle):
    """One span: the handle ``with span(...)`` gives.

    Attributes:
        run: The run the span belongs to, or ``None`` outside any run.
        parent: The enclosing span, if any.
        schema_name: The span type.
        payload: What the span was created with.
        result: The result payload its finish carries.
        status: The status decided when the block ended; ``None`` until then.
    """

    __slots__ = ("_record", "capture", "parent", "payload", "result", "run", "schema_name")

    _kind = "span"

    def __init__(
        self,
        engine: Engine | None,
        record: SpanRecord | None,
        *,
        run: InstanceRun | None,
        parent: SpanRun | None,
        schema_name: str,
        payload: dict[str, Any],
        strict: bool,
        capture: bool = True,
    ) -> None:
        super().__init__(engine, strict=strict)
        self._record: SpanRecord | None = record
        # Whether a failure's exception is recorded in the result (span(capture=False): not).
        self.capture = capture
        self.run = run
        self.parent = parent
        self.schema_name = schema_name
        self.payload = payload
        self.result: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return self._describe(schema_name=self.schema_name)

    @property
    def record(self) -> SpanRecord | None:
        """The span's record, or ``None`` when it records nothing."""
        return self._record

    @property
    def span(self) -> AgentSpan | None:
        """The last :class:`AgentSpan` the server returned."""
        record = self._record
        return None if record is None else record.span

    def set_result(self, result: Mapping[str, Any]) -> None:
        """Set the result payload sent with the finish.

        What JSON cannot hold is converted (see ``aioprefactor._runs.capture``), and an
        oversized result is cut with a marker; a strict span raises instead.

        Raises:
            TypeError: Strict: ``result`` is not a JSON object.
            ValueError: Strict: it holds NaN or an infinity, or is over the size limit.
        """
        self.result = to_payload(result, "result", strict=self.strict)

    def complete(self, result: Mapping[str, Any] | None = None) -> None:
        """Finish as ``complete`` (with ``result``, if given) at the end of the block.

        Raises:
            RuntimeError: A status was already set, or the span already finished.
        """
        self._mark_with("complete", result)

    def fail(self, result: Mapping[str, Any] | None = None) -> None:
        """Finish as ``failed`` (with ``result``, if given) at the end of the block.

        Raises:
            RuntimeError: A status was already set, or the span already finished.
        """
        self._mark_with("failed", result)

    def cancel(self) -> None:
        """Finish as ``cancelled`` at the end of the block.

        Raises:
            RuntimeError: A status was already set, or the span already finished.
        """
        self._mark("cancelled")

    def _mark_with(self, status: FinishStatus, result: Mapping[str, Any] | None) -> None:
        checked = None if result is None else to_payload(result, "result", strict=self.strict)
        self._mark(status)
        if checked is not None:
            self.result = checked

    def add_result(self, extra: Mapping[str, Any]) -> None:
        """Merge already-converted values into the result (what capture recorded)."""
        self.result = {**(self.result or {}), **extra}

    def begin(self) -> None:
        """Hand the span to the engine (scopes call this once)."""
        record, engine = self._record, self._engine
        if (
            record is not None
            and engine is not None
            and not engine.submit(_engine.OPEN_SPAN, record)
        ):
            record.error = RuntimeError("the client is closed; the span is not recorded")

    def end(
        self,
        status: FinishStatus | None = None,
        *,
        result: Mapping[str, Any] | None = None,
        error: BaseException | None = None,
        ended_at: datetime | None = None,
    ) -> FinishStatus:
        """End the span: decide its status and hand the finish to the engine.

        Args:
            status: The status; by default the one set with ``complete()``/``fail()``/
                ``cancel()``, else what ``error`` implies (none: ``complete``).
            result: The result payload (replaces one set before).
            error: The exception it ended with, recorded in the result as
                ``{"error": {"type": ..., "message": ...}}`` when the span failed.
            ended_at: When it ended; now when omitted.

        Returns:
            The status decided.

        Raises:
            RuntimeError: The span already ended.
        """
        if result is not None:
            self.set_result(result)
        decided = self._decide(status, error)
        record, engine = self._record, self._engine
        if record is None or engine is None:
            return decided
        final = self.result
        if error is not None and decided == "failed" and self.capture and engine.options.capture:
            final = with_error(final, error, secret=engine.secret)
        record.end = End(decided, ended_at or now(), without_secret(final, engine.secret))
        engine.submit(_engine.END_SPAN, record)
        return decided
