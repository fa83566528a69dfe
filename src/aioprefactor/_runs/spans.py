"""``span()`` and ``open_span()``: spans in the current run, as blocks, decorators or by hand.

A span scope is immutable and may be shared; each entry gets its own handle. Its payload is
recorded best-effort (converted, cut to size) unless strict; a decorated function's bound
arguments and return value are captured unless ``capture=False``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any, Final, final

from aioprefactor._runs import context
from aioprefactor._runs.capture import (
    YieldCollector,
    call_arguments,
    to_output,
    to_payload,
    without_secret,
)
from aioprefactor._runs.entries import NOTHING, Call, Scope
from aioprefactor._runs.handles import AgentTerminated, InstanceRun, SpanRun
from aioprefactor._runs.records import (
    RecordingState,
    SpanRecord,
)
from aioprefactor._wire import checks

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from datetime import datetime


log: Final = logging.getLogger("aioprefactor")

DEFAULT_ENTER_TIMEOUT: Final = 5.0
DEFAULT_FINISH_TIMEOUT: Final = 10.0


_warned_sites: set[tuple[str, int]] = set()
_warned_lock = threading.Lock()


def _warn_outside(schema_name: str) -> None:
    # Once per call site: a span outside any run in a new place is news; in the same
    # place again, it is not.
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        "aioprefactor."
    ):
        frame = frame.f_back  # up to the user's own line
    site = (frame.f_code.co_filename, frame.f_lineno)
    with _warned_lock:
        if site in _warned_sites:
            return
        _warned_sites.add(site)
    log.warning(
        "aioprefactor: span %r opened outside any agent_instance run (%s:%d); it is not "
        "recorded (in a thread? pass the context along: aioprefactor.wrap, "
        "ContextThreadPoolExecutor or contextvars.copy_context())",
        schema_name,
        site[0],
        site[1],
    )


def forget_warnings() -> None:
    """Warn again about every call site (for tests)."""
    with _warned_lock:
        _warned_sites.clear()


@final
class SpanScope(Scope[SpanRun]):
    """What ``span(...)`` returns: a block (``with``/``async with``) and a decorator."""

    __slots__ = (
        "_given",
        "capture",
        "enter_timeout",
        "finish_timeout",
        "parent",
        "payload",
        "schema_name",
        "strict",
    )

    def __init__(
        self,
        schema_name: str,
        payload: Mapping[str, Any] | None,
        *,
        parent: SpanRun | None,
        strict: bool | None,
        enter_timeout: float,
        finish_timeout: float,
        capture: bool | None = None,
    ) -> None:
        super().__init__()
        self.schema_name = checks.required_str(schema_name, "schema_name")
        self.strict = strict if strict is None else checks.boolean(strict, "strict")
        # Best effort unless strict: what JSON cannot hold is converted, never raised.
        self.payload = {} if payload is None else to_payload(payload, strict=bool(self.strict))
        self._given = payload
        if parent is not None and not isinstance(parent, SpanRun):
            raise TypeError(f"parent must be a span handle, not {type(parent).__name__}")
        self.parent = parent
        self.capture = capture if capture is None else checks.boolean(capture, "capture")
        self.enter_timeout = checks.seconds(enter_timeout, "enter_timeout")
        self.finish_timeout = checks.seconds(finish_timeout, "finish_timeout")

    def __repr__(self) -> str:
        return f"<SpanScope {self.schema_name!r}>"

    def start(
        self,
        *,
        run: InstanceRun | None = None,
        started_at: datetime | None = None,
        payload: dict[str, Any] | None = None,
    ) -> SpanRun:
        """Begin a span now without making it current (see :func:`open_span`)."""
        parent = self.parent if self.parent is not None else context.SPAN.get()
        if run is None:
            run = parent.run if parent is not None else context.RUN.get()
        elif parent is not None and parent.run is not run:
            parent = None
        strict = self.strict if self.strict is not None else (run.strict if run else False)
        body = self.payload if payload is None else payload
        if strict and self.strict is None and self._given is not None:
            to_payload(self._given, strict=True)  # a strict run refuses what needs converting
        if run is not None and (run.record.settled or run.ended):
            if run.terminated and run.record.on_terminate == "cancel" and not run.ended:
                raise AgentTerminated(run.termination_reason, run.id)
            # Not recorded, ended, or terminated: nothing in it is sent.
            return SpanRun(
                None,
                None,
                run=run,
                parent=parent,
                schema_name=self.schema_name,
                payload=body,
                strict=strict,
            )
        if run is None:
            if strict:
                raise RuntimeError(
                    f"span {self.schema_name!r} opened outside any agent_instance run"
                )
            _warn_outside(self.schema_name)
            return SpanRun(
                None,
                None,
                run=None,
                parent=parent,
                schema_name=self.schema_name,
                payload=body,
                strict=strict,
            )
        # The client's token never goes into a record, whoever put it in the payload.
        body = without_secret(body, run.engine.secret)
        parent_record = parent.record if parent is not None else None
        record = SpanRecord(
            run.record, parent_record, self.schema_name, body, started_at=started_at
        )
        handle = SpanRun(
            run.engine,
            record,
            run=run,
            parent=parent,
            schema_name=self.schema_name,
            payload=body,
            strict=strict,
            capture=self.capture is not False,
        )
        handle.begin()
        return handle

    def _inline(self, handle: SpanRun) -> bool:
        # A span of a run (or parent) that is late does not wait: it is created once
        # what it hangs from lands.
        run, parent = handle.run, handle.parent
        return (
            run is not None
            and handle.record is not None
            and (handle.strict or run.engine.options.inline)
            and run.record.state is RecordingState.ACTIVE
            and (parent is None or parent.id is not None)
        )

    # --- the entry hooks ------------------------------------------------------------------

    def _capturing(self, handle: SpanRun) -> bool:
        run = handle.run
        return (
            handle.record is not None
            and run is not None
            and self.capture is not False
            and run.engine.options.capture
        )

    def open_entry(self, call: Call | None, *, is_async: bool) -> SpanRun:
        """Make and begin a span for one entry; a call's arguments are its payload."""
        if call is None or self.capture is False:
            return self.start()
        run = context.RUN.get() if self.parent is None else self.parent.run
        if run is None or not run.engine.options.capture:
            return self.start()
        fn, args, kwargs = call
        return self.start(payload={**self.payload, **call_arguments(fn, args, kwargs)})

    def collector(self, handle: SpanRun) -> YieldCollector | None:
        """Keeps what a decorated generator yields, when capturing."""
        return YieldCollector() if self._capturing(handle) else None

    def _record_output(self, handle: SpanRun, exc: BaseException | None, output: Any) -> None:
        if exc is None and output is not NOTHING and self._capturing(handle):
            if isinstance(output, YieldCollector):
                handle.add_result(output.result())
            else:
                handle.add_result(to_output(output))

    def activate(self, handle: SpanRun) -> None:
        """Make the span current."""
        handle.tokens = (context.SPAN.set(handle),)

    def deactivate(self, handle: SpanRun) -> None:
        """Restore the span current before."""
        tokens = handle.tokens
        if tokens is not None:
            handle.tokens = None
            context.SPAN.reset(tokens[0])

    def current(self) -> SpanRun | None:
        """The span current here, if any."""
        return context.SPAN.get()

    async def entered(self, handle: SpanRun) -> None:
        """Inline delivery: wait for the create within the enter budget."""
        if self._inline(handle):
            try:
                await handle.settle_open(self.enter_timeout)
            except BaseException:
                handle.end("cancelled")  # the block will not run: its span ends here
                raise

    def entered_sync(self, handle: SpanRun) -> None:
        """:meth:`entered` for sync code."""
        if self._inline(handle):
            try:
                handle.settle_open_sync(self.enter_timeout)
            except BaseException:
                handle.end("cancelled")
                raise

    async def leave(
        self, handle: SpanRun, exc: BaseException | None, output: Any = NOTHING
    ) -> BaseException | None:
        """End the span (the run's finish waits for it; strict also waits here)."""
        self._record_output(handle, exc, output)
        handle.end(error=exc)
        if handle.strict and handle.run is not None:
            await handle.settle_end(self.finish_timeout)
        return None

    def leave_sync(
        self, handle: SpanRun, exc: BaseException | None, output: Any = NOTHING
    ) -> BaseException | None:
        """:meth:`leave` for sync code; raises AgentTerminated in a terminated run."""
        self._record_output(handle, exc, output)
        handle.end(error=exc)
        if handle.strict and handle.run is not None:
            handle.settle_end_sync(self.finish_timeout)
        run = handle.run
        if (
            run is not None
            and run.terminated
            and run.record.on_terminate == "cancel"
            and not run.ended
            and not isinstance(exc, AgentTerminated)
        ):
            return AgentTerminated(run.termination_reason, run.id)
        return None


def span(
    schema_name: str,
    payload: Mapping[str, Any] | None = None,
    *,
    parent: SpanRun | None = None,
    strict: bool | None = None,
    enter_timeout: float = DEFAULT_ENTER_TIMEOUT,
    finish_timeout: float = DEFAULT_FINISH_TIMEOUT,
    capture: bool | None = None,
) -> SpanScope:
    """Record a span around a block or each call of a decorated function.

    The span is created ``active`` in the current run, under the current span, and
    finished with the status the block's ending implies (or the one set with
    ``complete()``, ``fail()``, ``cancel()``), carrying the result set with
    ``set_result()``. Works in ``with`` and ``async with`` blocks, and on ``def``,
    ``async def`` and generator functions.

    Args:
        schema_name: The span type, e.g. ``"agent:llm"``.
        payload: The span's parameters, a JSON object.
        parent: The parent span; the current span when omitted.
        strict: Raise on telemetry failures instead of failing open (and wait for the
            API); the run's setting when omitted.
        enter_timeout: Inline delivery: seconds the block waits for the create.
        finish_timeout: Strict: seconds the end of the block waits for the finish.
        capture: Record, on a decorated function, its bound arguments as the payload
            and its return value (or a generator's yields) as the result, and for a
            failed span its exception; ``None`` follows the client's ``capture``
            setting, ``False`` keeps them all out.

    The payload is recorded best-effort: what JSON cannot hold is converted (see
    ``aioprefactor._runs.capture``) and an oversized one is cut with a marker.

    Raises:
        TypeError: Strict: a payload that is not a JSON object; a bad parent.
        ValueError: An empty schema name; strict: NaN in the payload.
    """
    return SpanScope(
        schema_name,
        payload,
        parent=parent,
        strict=strict,
        enter_timeout=enter_timeout,
        finish_timeout=finish_timeout,
        capture=capture,
    )


def open_span(
    schema_name: str,
    payload: Mapping[str, Any] | None = None,
    *,
    parent: SpanRun | None = None,
    run: InstanceRun | None = None,
    started_at: datetime | None = None,
) -> SpanRun:
    """Begin a span now and end it later with ``handle.end()``; it is not made current.

    For framework callbacks, where the start and the end arrive as separate calls.
    Nothing here waits for the network.

    Args:
        schema_name: The span type.
        payload: The span's parameters, a JSON object.
        parent: The parent span; the current span when omitted.
        run: The run; the parent's run, or the current run, when omitted.
        started_at: When the span began; now when omitted.

    Returns:
        The span's handle; with no run at all, a handle that records nothing.

    Raises:
        TypeError: A payload that is not a JSON object, a bad parent or run.
        ValueError: An empty schema name, NaN in the payload.
    """
    if run is not None and not isinstance(run, InstanceRun):
        raise TypeError(f"run must be a run handle, not {type(run).__name__}")
    scope = SpanScope(
        schema_name,
        payload,
        parent=parent,
        strict=None,
        enter_timeout=DEFAULT_ENTER_TIMEOUT,
        finish_timeout=DEFAULT_FINISH_TIMEOUT,
    )
    return scope.start(run=run, started_at=started_at)


@contextlib.contextmanager
def use_span(handle: SpanRun) -> Iterator[SpanRun]:
    """Make a span (and its run) current for a block, without ending it afterwards.

    For spans begun with :func:`open_span`, so that code called inside nests under them.

    Raises:
        TypeError: ``handle`` is not a span handle.
    """
    if not isinstance(handle, SpanRun):
        raise TypeError(f"use_span() takes a span handle, not {type(handle).__name__}")
    run_token = context.RUN.set(handle.run)
    span_token = context.SPAN.set(handle)
    try:
        yield handle
    finally:
        context.SPAN.reset(span_token)
        context.RUN.reset(run_token)
