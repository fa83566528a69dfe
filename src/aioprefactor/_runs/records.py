"""A run's and a span's record: what the block did, and where its delivery stands.

The block's side writes a record's ``end`` once (an immutable :class:`End`), and the
delivery engine reads it when it sends: a span that ended before its create was sent goes
as one create carrying its final status. Only the engine moves ``state``, and only through
:meth:`Record.move`, which checks the move against the one table of allowed transitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from aioprefactor._wire.checks import new_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from aioprefactor._wire.models import AgentInstance, AgentSpan, FinishStatus, RegisterRequest

_CANCELLATIONS: Final = (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit)


class RecordingState(enum.Enum):
    """Where the record of a run or span stands with the API."""

    QUEUED = "queued"
    """Recorded here; nothing sent yet."""
    REGISTERING = "registering"
    """A run's register is in flight."""
    REGISTERED = "registered"
    """The server holds the run as ``pending``."""
    OPENING = "opening"
    """A run's start, or a span's create, is in flight."""
    UNSTARTED = "unstarted"
    """The server refused the run's start: only its finish is sent, so nothing stays open."""
    ACTIVE = "active"
    """The server holds it ``active``."""
    FINISHING = "finishing"
    """Its finish is in flight."""
    FINISHED = "finished"
    """The server holds its final status."""
    NOT_RECORDED = "not_recorded"
    """Delivery gave up; ``telemetry_error`` says why."""
    TERMINATED = "terminated"
    """The server terminated the run; nothing more is sent for it."""
    DROPPED = "dropped"
    """Never sent: the delivery queue was full, or the client closed first."""


S = RecordingState
_FINAL: Final = frozenset({S.FINISHED, S.NOT_RECORDED, S.TERMINATED, S.DROPPED})

# Every move a record's delivery may make; nothing else assigns ``state``.
_RUN_MOVES: Final[dict[RecordingState, frozenset[RecordingState]]] = {
    S.QUEUED: frozenset({S.REGISTERING, S.NOT_RECORDED, S.DROPPED}),
    S.REGISTERING: frozenset({S.REGISTERED, S.NOT_RECORDED, S.TERMINATED}),
    S.REGISTERED: frozenset({S.OPENING, S.NOT_RECORDED, S.TERMINATED}),
    S.OPENING: frozenset({S.ACTIVE, S.UNSTARTED, S.NOT_RECORDED, S.TERMINATED}),
    S.UNSTARTED: frozenset({S.FINISHING, S.NOT_RECORDED, S.TERMINATED}),
    S.ACTIVE: frozenset({S.FINISHING, S.NOT_RECORDED, S.TERMINATED}),
    S.FINISHING: frozenset({S.FINISHED, S.NOT_RECORDED, S.TERMINATED}),
}
_SPAN_MOVES: Final[dict[RecordingState, frozenset[RecordingState]]] = {
    S.QUEUED: frozenset({S.OPENING, S.NOT_RECORDED, S.DROPPED}),
    S.OPENING: frozenset({S.ACTIVE, S.FINISHED, S.NOT_RECORDED}),
    S.ACTIVE: frozenset({S.FINISHING, S.NOT_RECORDED}),
    S.FINISHING: frozenset({S.FINISHED, S.NOT_RECORDED}),
}


def _only_cancellations(group: BaseExceptionGroup[BaseException]) -> bool:
    return all(
        _only_cancellations(exc)
        if isinstance(exc, BaseExceptionGroup)
        else isinstance(exc, _CANCELLATIONS)
        for exc in group.exceptions
    )


def status_for(exc: BaseException | None) -> FinishStatus:
    """Map how a block ended to the status that tells the truth about it."""
    if exc is None:
        return "complete"
    if isinstance(exc, _CANCELLATIONS):
        return "cancelled"
    if isinstance(exc, SystemExit):
        return "complete" if exc.code in (0, None) else "failed"
    if isinstance(exc, BaseExceptionGroup) and _only_cancellations(exc):
        return "cancelled"
    return "failed"


def now() -> datetime:
    """The current time, timezone-aware, as every timestamp sent."""
    return datetime.now(UTC)


TERMINATED_MESSAGE: Final = "aioprefactor: the server terminated this agent instance"
"""The message of the cancellation that stops a block its server terminated."""


def _cancel_block(run: RunRecord, task: asyncio.Task[Any]) -> None:
    # On the block's own loop: a block that ended meanwhile (its task went on to other
    # work) is not stopped.
    if run.end is None and not task.done():
        task.cancel(TERMINATED_MESSAGE)


class End(NamedTuple):
    """How a block ended: written once by the block, read by the engine when it sends."""

    status: FinishStatus
    at: datetime
    result: dict[str, Any] | None = None


class Record:
    """What runs and spans share: the key, the times, the delivery state and its watchers."""

    __slots__ = (
        "end",
        "error",
        "id",
        "key",
        "started_at",
        "state",
        "waiting",
        "warned",
        "watchers",
    )

    kind: Literal["run", "span"]
    _moves: dict[RecordingState, frozenset[RecordingState]]

    def __init__(self, started_at: datetime | None) -> None:
        self.key = new_key()
        self.started_at = started_at or now()
        self.end: End | None = None
        self.state = S.QUEUED
        self.id: str | None = None
        self.error: BaseException | None = None
        # Whether a warning about it was logged: each record is warned about once.
        self.warned = False
        # Spans parked until this record has its id (made on first use: most have none).
        self.waiting: list[SpanRecord] | None = None
        # Called, in the engine's thread, whenever the delivery state moves.
        self.watchers: list[Callable[[Record], None]] | None = None

    def op_key(self, suffix: str) -> str:
        """The idempotency key of one of this record's operations, the same on every retry."""
        return f"{self.key}-{suffix}"

    @property
    def settled(self) -> bool:
        """Whether nothing more will be sent for it."""
        return self.state in _FINAL

    def move(self, to: RecordingState) -> None:
        """Move the delivery state; engine only.

        Raises:
            RuntimeError: The move is not one the table allows (a bug, never user error).
        """
        if to not in self._moves.get(self.state, ()):
            raise RuntimeError(f"{self.kind} cannot move from {self.state.value} to {to.value}")
        self.state = to
        watchers = self.watchers
        if watchers:
            for watch in tuple(watchers):
                watch(self)

    def watch(self, callback: Callable[[Record], None]) -> None:
        """Call ``callback(record)`` on every later move (in the engine's thread)."""
        if self.watchers is None:
            self.watchers = []
        self.watchers.append(callback)

    def unwatch(self, callback: Callable[[Record], None]) -> None:
        """Stop calling ``callback``."""
        if self.watchers is not None and callback in self.watchers:
            self.watchers.remove(callback)

    def park(self, span: SpanRecord) -> None:
        """Hold ``span`` until this record has its id."""
        if self.waiting is None:
            self.waiting = []
        self.waiting.append(span)

    def unpark(self) -> list[SpanRecord]:
        """Hand back the spans held until now."""
        waiting, self.waiting = self.waiting or [], None
        return waiting


class RunRecord(Record):
    """One run of an agent instance."""

    __slots__ = (
        "block_task",
        "instance",
        "last_heard",
        "on_terminate",
        "open_spans",
        "registration",
        "termination_reason",
    )

    kind = "run"
    _moves = _RUN_MOVES

    def __init__(
        self,
        registration: RegisterRequest,
        *,
        started_at: datetime | None = None,
        on_terminate: Literal["cancel", "record"] = "cancel",
    ) -> None:
        super().__init__(started_at)
        self.registration = registration
        self.instance: AgentInstance | None = None
        self.termination_reason: str | None = None
        self.on_terminate = on_terminate
        # Spans not yet settled; the run's finish waits for them (engine only).
        self.open_spans: set[SpanRecord] | None = None
        # When the API last answered about this run (the engine's clock), for polling.
        self.last_heard = 0.0
        # The task running the block (async blocks with on_terminate="cancel"): the one
        # stop_block() cancels when the server terminates the run.
        self.block_task: asyncio.Task[Any] | None = None

    def stop_block(self) -> None:
        """Cancel the block's task, on its own loop, unless the block has ended (engine only)."""
        task = self.block_task
        if task is None or self.end is not None or self.on_terminate != "cancel":
            return
        with contextlib.suppress(RuntimeError):  # the block's loop is gone
            task.get_loop().call_soon_threadsafe(_cancel_block, self, task)

    @property
    def recorded(self) -> bool:
        """Whether the server holds the run as started (or has since finished it)."""
        return self.state in {S.ACTIVE, S.FINISHING, S.FINISHED, S.TERMINATED}


class SpanRecord(Record):
    """One span inside a run."""

    __slots__ = ("parent", "payload", "run", "schema_name", "span")

    kind = "span"
    _moves = _SPAN_MOVES

    def __init__(
        self,
        run: RunRecord,
        parent: SpanRecord | None,
        schema_name: str,
        payload: dict[str, Any],
        *,
        started_at: datetime | None = None,
    ) -> None:
        super().__init__(started_at)
        self.run = run
        self.parent = parent
        self.schema_name = schema_name
        self.payload = payload
        self.span: AgentSpan | None = None
