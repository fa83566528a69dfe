"""What instance runs and spans share: exactly-once open and finish, shielded and bounded.

A recording is opened by one background task (register+start, or span create) and closed
by one background task (finish). The caller waits for each within a budget; the tasks
themselves are shielded from the caller's cancellation and held by the client until
done, so a cancelled block still records its true ending, and ``client.aclose()`` (or
the shutdown of the event loop) never loses a finish. Each request carries an
idempotency key fixed when the recording is made, so sending it again is harmless.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

from aioprefactor._wire.checks import new_key
from aioprefactor._wire.errors import PrefactorError, PrefactorTimeoutError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aioprefactor._client import Client
    from aioprefactor._wire.models import FinishStatus

T = TypeVar("T")

log: Final = logging.getLogger("aioprefactor")

# How many times a background request is sent again after its task was cancelled
# (the event loop cancels every task when it shuts down).
_CANCEL_RESISTANCE: Final = 3

_CANCELLATIONS: Final = (asyncio.CancelledError, KeyboardInterrupt, GeneratorExit)


class RecordingState(enum.Enum):
    """Where a run or span is in its life."""

    CREATED = "created"
    ENTERING = "entering"
    ACTIVE = "active"
    FINISHING = "finishing"
    FINISHED = "finished"


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


async def steadfast(send: Callable[[], Awaitable[T]]) -> T:
    """Await ``send()``, sending again if this background task is cancelled meanwhile."""
    task = asyncio.current_task()
    for _ in range(_CANCEL_RESISTANCE):
        try:
            return await send()
        except asyncio.CancelledError:
            if task is None:
                raise
            task.uncancel()
    return await send()


class Recording:
    """Base of InstanceRun and SpanRun: the state machine and the two background tasks."""

    _kind: str = "recording"

    def __init__(self, client: Client | None, *, strict: bool) -> None:
        self.id: str | None = None
        self.status: FinishStatus | None = None
        self.telemetry_error: BaseException | None = None
        self.strict = strict
        self._client = client
        self._state = RecordingState.CREATED
        self._explicit: FinishStatus | None = None
        self._open_task: asyncio.Task[None] | None = None
        self._finish_task: asyncio.Task[None] | None = None
        self._open_error: Exception | None = None
        self._finish_error: Exception | None = None
        self._finish_key = new_key()
        # When the block ended, sent with the finish: it may go out a while later.
        self._ended_at: datetime | None = None

    @property
    def state(self) -> RecordingState:
        """Where it is in its life."""
        return self._state

    def _mark(self, status: FinishStatus) -> None:
        if self._state in {RecordingState.FINISHING, RecordingState.FINISHED}:
            raise RuntimeError(f"this {self._kind} has already finished as {self.status}")
        if self._explicit is not None:
            raise RuntimeError(f"this {self._kind} was already marked {self._explicit}")
        self._explicit = status

    # --- to be provided by subclasses -----------------------------------------------------

    async def _send_open(self) -> None:
        raise NotImplementedError

    async def _send_finish(self, status: FinishStatus) -> None:
        raise NotImplementedError

    def _skip_finish(self) -> bool:
        """Whether there is nothing to finish (never opened, or ended by the server)."""
        return self.id is None

    async def _settle(self) -> None:
        """Wait for what must land before the finish is decided on (nothing, by default)."""

    # --- the machinery ------------------------------------------------------------------------

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        if self._client is not None:
            self._client._keep(task)
        return task

    async def _open(self, budget: float, finish_budget: float) -> None:
        """Open within ``budget``; fail open, or raise when strict."""
        self._state = RecordingState.ENTERING
        task = self._open_task = self._spawn(self._run_open())
        try:
            # asyncio.wait never cancels the task it waits for: the open is shielded.
            await asyncio.wait((task,), timeout=budget)
        except asyncio.CancelledError:
            # The block will not run; whatever got created is finished as cancelled.
            self._state = RecordingState.FINISHING
            self.status = "cancelled"
            finish = self._finish_task = self._spawn(self._run_finish("cancelled"))
            await asyncio.wait((finish,), timeout=finish_budget)
            raise
        if not task.done():
            self._open_failed(
                PrefactorTimeoutError(
                    f"{self._kind} was not recorded within its budget of {budget:g} s"
                )
            )
            return
        error = self._open_error
        if error is not None and not isinstance(error, PrefactorError):
            raise error  # a local mistake, or a closed client: raised in every mode
        if error is not None:
            self._open_failed(error)
        else:
            self._state = RecordingState.ACTIVE

    def _open_failed(self, error: PrefactorError) -> None:
        if self.strict:
            self._state = RecordingState.FINISHING
            self.status = "cancelled"
            self._finish_task = self._spawn(self._run_finish("cancelled"))
            raise error
        self._state = RecordingState.ACTIVE
        self.telemetry_error = error
        log.warning(
            "aioprefactor: %s not recorded (yet), the block runs without it: %s",
            self._kind,
            error,
        )

    async def _run_open(self) -> None:
        try:
            await steadfast(self._send_open)
        except Exception as exc:  # noqa: BLE001 - telemetry must never break the run
            self._open_error = exc
            if self._state is not RecordingState.ENTERING:
                # Opened in the background (the block runs, or has ended): nobody awaits
                # this, so it is recorded here.
                # A run that was late has been warned about once already.
                if self.telemetry_error is None:
                    log.warning("aioprefactor: %s not recorded: %s", self._kind, exc)
                self.telemetry_error = exc
        else:
            if isinstance(self.telemetry_error, PrefactorTimeoutError):
                # It was only late: recorded after all, so nothing kept it from the record.
                self.telemetry_error = None

    async def _close(self, exc: BaseException | None, budget: float, *, wait: bool = True) -> None:
        """Finish exactly once, with the status ``exc`` implies unless one was set.

        With ``wait=False`` the finish is only started: it goes on in the background,
        held by the client (and, for a span, awaited by its run's own finish).
        """
        if self._state is not RecordingState.ACTIVE:
            raise RuntimeError(f"this {self._kind} is {self._state.value}, not active")
        self._ended_at = datetime.now(UTC)
        status = self._explicit or status_for(exc)
        self.status = status
        opening = self._open_task
        if self._skip_finish() and (opening is None or opening.done()):
            self._state = RecordingState.FINISHED  # nothing was recorded: nothing to send
            return
        self._state = RecordingState.FINISHING
        finish = self._finish_task = self._spawn(self._run_finish(status))
        if not wait:
            return
        done, _ = await asyncio.wait({finish}, timeout=budget)
        if not done:
            log.warning(
                "aioprefactor: finishing %s %s is taking over %g s; it goes on in the "
                "background (await client.flush() or client.aclose() to wait for it)",
                self._kind,
                self.id,
                budget,
            )
        elif self.strict and exc is None and self._finish_error is not None:
            raise self._finish_error

    async def _run_finish(self, status: FinishStatus) -> None:
        if self._ended_at is None:
            self._ended_at = datetime.now(UTC)
        opening = self._open_task
        if opening is not None and not opening.done():
            await steadfast(lambda: asyncio.wait({opening}))
        await steadfast(self._settle)
        try:
            if not self._skip_finish():
                await steadfast(lambda: self._send_finish(status))
        except Exception as exc:  # noqa: BLE001 - telemetry must never break the run
            # A PrefactorError, or a RuntimeError when the client was closed first.
            self._finish_error = exc
            if self.telemetry_error is None:
                self.telemetry_error = exc
            log.warning("aioprefactor: finishing %s %s failed: %s", self._kind, self.id, exc)
        finally:
            self._state = RecordingState.FINISHED

    def _describe(self, **extra: Any) -> str:
        fields = {"id": self.id, "state": self._state.value, "status": self.status, **extra}
        inner = " ".join(f"{key}={value!r}" for key, value in fields.items())
        return f"<{type(self).__name__} {inner}>"
