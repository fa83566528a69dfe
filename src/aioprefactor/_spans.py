"""``span()``: a unit of work inside the current run, nested under the current span."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, final

from aioprefactor import _context
from aioprefactor._decorate import Decorator
from aioprefactor._lifecycle import DEFAULT_ENTER_TIMEOUT, DEFAULT_FINISH_TIMEOUT, InstanceRun
from aioprefactor._recording import Recording
from aioprefactor._wire import checks as _checks
from aioprefactor._wire.payloads import copy_json, json_object

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping
    from contextvars import Token

    from aioprefactor._wire.models import AgentSpan, FinishStatus

log: Final = logging.getLogger("aioprefactor")


def _pending(task: asyncio.Task[None] | None) -> bool:
    return task is not None and not task.done()


_warned_outside = False


@final
class SpanRun(Recording):
    """One span: the handle ``async with span(...)`` gives.

    Attributes:
        id: The span id the server gave, or ``None`` if it is not recorded.
        span: The last :class:`AgentSpan` the server returned.
        run: The run the span belongs to, or ``None`` outside any run.
        parent: The enclosing span, if any.
        schema_name: The span type.
        payload: What the span was created with.
        result: The result payload the finish will carry.
        status: The status decided when the block ended (sent with the finish);
            ``None`` until then.
        telemetry_error: The error that kept the span from being recorded, or ``None``.
    """

    _kind = "span"

    def __init__(
        self,
        run: InstanceRun | None,
        parent: SpanRun | None,
        schema_name: str,
        payload: dict[str, Any],
        *,
        strict: bool,
    ) -> None:
        super().__init__(run.client if run is not None else None, strict=strict)
        self.run = run
        self.parent = parent
        self.schema_name = schema_name
        self.payload = payload
        self.span: AgentSpan | None = None
        self.result: dict[str, Any] | None = None
        self._create_key = _checks.new_key()
        self._started_at: datetime | None = None
        self._token: Token[SpanRun | None] | None = None

    def __repr__(self) -> str:
        return self._describe(schema_name=self.schema_name)

    def set_result(self, result: Mapping[str, Any]) -> None:
        """Set the result payload sent with the finish.

        Raises:
            TypeError: ``result`` is not a JSON object.
            ValueError: It holds NaN or an infinity.
        """
        self.result = copy_json(json_object(result, "result"))

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
        checked = None if result is None else copy_json(json_object(result, "result"))
        self._mark(status)
        if checked is not None:
            self.result = checked

    def _skip_finish(self) -> bool:
        # A span the server holds is finished even after its instance was terminated,
        # so none is left active; only the instance's own finish is skipped then.
        return self.id is None or self.run is None

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = super()._spawn(work)
        if self.run is not None:
            self.run._track(task)
        return task

    async def _send_open(self) -> None:
        run = self.run
        assert run is not None
        parent = self.parent
        # A span opened while its run (or its parent) was still being recorded late is
        # created here, in the background, once the id it hangs from is known.
        for earlier in (run, parent):
            opening = earlier._open_task if earlier is not None else None
            if opening is not None and not opening.done():
                await asyncio.wait((opening,))
        # The run may have ended meanwhile (its finish waits for this); what matters is
        # that it was recorded.
        if not run._started() or (parent is not None and parent.id is None):
            return  # nothing to hang from: the span is not recorded
        assert run.id is not None
        span = await run.client._lifecycle_spans.create(
            run.id,
            self.schema_name,
            "active",
            self.payload,
            parent_span_id=parent.id if parent is not None else None,
            started_at=self._started_at,
            idempotency_key=self._create_key,
        )
        self.id, self.span = span.id, span
        run._control(span.control)

    async def _send_finish(self, status: FinishStatus) -> None:
        run = self.run
        assert run is not None
        assert self.id is not None
        span = await run.client._lifecycle_spans.finish(
            self.id, status, self.result, self._ended_at, idempotency_key=self._finish_key
        )
        self.span = span
        run._control(span.control)


@final
class SpanScope(Decorator[SpanRun]):
    """What ``span(...)`` returns: an async context manager and a decorator."""

    def __init__(
        self,
        schema_name: str,
        payload: Mapping[str, Any] | None,
        *,
        parent: SpanRun | None,
        strict: bool | None,
        enter_timeout: float,
        finish_timeout: float,
    ) -> None:
        super().__init__()
        self.schema_name = _checks.required_str(schema_name, "schema_name")
        self.payload = {} if payload is None else copy_json(json_object(payload, "payload"))
        if parent is not None and not isinstance(parent, SpanRun):
            raise TypeError(f"parent must be a span handle, not {type(parent).__name__}")
        self.parent = parent
        self.strict = strict if strict is None else _checks.boolean(strict, "strict")
        self.enter_timeout = _checks.seconds(enter_timeout, "enter_timeout")
        self.finish_timeout = _checks.seconds(finish_timeout, "finish_timeout")

    def __repr__(self) -> str:
        return f"<SpanScope {self.schema_name!r}>"

    async def _enter(self) -> SpanRun:
        global _warned_outside  # noqa: PLW0603 - warn once per process, not per span
        parent = self.parent if self.parent is not None else _context.SPAN.get()
        run = parent.run if parent is not None and self.parent is not None else _context.RUN.get()
        strict = self.strict if self.strict is not None else (run.strict if run else False)
        handle = SpanRun(run, parent, self.schema_name, self.payload, strict=strict)
        if run is None:
            if strict:
                raise RuntimeError(
                    f"span {self.schema_name!r} opened outside any agent_instance run"
                )
            if not _warned_outside:
                _warned_outside = True
                log.warning(
                    "aioprefactor: span %r opened outside any agent_instance run; "
                    "it is not recorded (this is logged once)",
                    self.schema_name,
                )
            handle._state = handle._state.ACTIVE
            return handle
        if _pending(run._open_task) or (
            parent is not None and parent.id is None and _pending(parent._open_task)
        ):
            # The run (or the parent) is late, not lost: the block goes on at once and the
            # span is created in the background, with the time it really started.
            handle._started_at = datetime.now(UTC)
            handle._state = handle._state.ACTIVE
            handle._open_task = handle._spawn(handle._run_open())
            return handle
        if not run.recording or (parent is not None and parent.id is None):
            # The run (or the parent span) is not recorded: the span is a no-op.
            handle._state = handle._state.ACTIVE
            return handle
        await handle._open(self.enter_timeout, self.finish_timeout)
        return handle

    async def _exit(self, handle: SpanRun, exc: BaseException | None) -> None:
        # The block does not wait for a span's finish unless strict: the run's own
        # finish waits for it, and so do client.flush() and client.aclose().
        await handle._close(exc, self.finish_timeout, wait=handle.strict)

    def _activate(self, handle: SpanRun) -> None:
        handle._token = _context.SPAN.set(handle)

    def _deactivate(self, handle: SpanRun) -> None:
        token = handle._token
        if token is not None:
            handle._token = None
            _context.SPAN.reset(token)

    def _current(self) -> SpanRun | None:
        return _context.SPAN.get()


def span(
    schema_name: str,
    payload: Mapping[str, Any] | None = None,
    *,
    parent: SpanRun | None = None,
    strict: bool | None = None,
    enter_timeout: float = DEFAULT_ENTER_TIMEOUT,
    finish_timeout: float = DEFAULT_FINISH_TIMEOUT,
) -> SpanScope:
    """Record a span around a block or each call of a decorated function.

    The span is created ``active`` in the current run, under the current span, and
    finished with the status the block's ending implies (or the one set with
    ``complete()``, ``fail()``, ``cancel()``), carrying the result set with
    ``set_result()``.

    Args:
        schema_name: The span type, e.g. ``"agent:llm"``.
        payload: The span's parameters, a JSON object.
        parent: The parent span; the current span when omitted.
        strict: Raise on telemetry failures instead of failing open; the run's
            setting when omitted.
        enter_timeout: Seconds the block waits for the create at most.
        finish_timeout: Seconds the end of the block waits for the finish at most.

    Raises:
        TypeError: A payload that is not a JSON object, a bad parent.
        ValueError: An empty schema name, NaN in the payload.
    """
    return SpanScope(
        schema_name,
        payload,
        parent=parent,
        strict=strict,
        enter_timeout=enter_timeout,
        finish_timeout=finish_timeout,
    )
