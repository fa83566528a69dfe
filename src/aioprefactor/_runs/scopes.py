"""``agent_instance()``: an immutable scope whose entries are runs (spans: ``spans.py``).

A scope checks its arguments when it is made, and reads what the environment supplies
(``PREFACTOR_AGENT_ID``, ``PREFACTOR_ENVIRONMENT_ID``, the declared span types) when it is
entered, so a decorator applied at import sees settings made later. Entering records and
hands over to the engine; with inline delivery it also waits, within its budgets.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any, Final, Literal, Required, TypedDict, final

import msgspec

from aioprefactor._runs import context
from aioprefactor._runs.capture import YieldCollector, call_arguments, to_output
from aioprefactor._runs.entries import NOTHING, Call, Scope
from aioprefactor._runs.handles import AgentTerminated, InstanceRun
from aioprefactor._runs.records import (
    TERMINATED_MESSAGE,
    RecordingState,
    RunRecord,
)
from aioprefactor._runs.schema import (
    declared_schema_version,
    declared_span_types,
    schema_version_for,
    shared_version,
    span_types_generation,
)
from aioprefactor._runs.spans import DEFAULT_ENTER_TIMEOUT, DEFAULT_FINISH_TIMEOUT, SpanScope
from aioprefactor._wire import checks
from aioprefactor._wire.config import ENV_AGENT_ID, ENV_ENVIRONMENT_ID
from aioprefactor._wire.endpoints import PURPOSES
from aioprefactor._wire.models import (
    AgentSchemaVersion,
    AgentVersion,
    InstancePurpose,
    RegisterRequest,
    SpanTypeSchema,
)
from aioprefactor._wire.payloads import to_struct

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from datetime import datetime

    from aioprefactor._runs.engine import Engine

log: Final = logging.getLogger("aioprefactor")

ON_TERMINATE: Final[frozenset[Literal["cancel", "record"]]] = frozenset({"cancel", "record"})


class InstanceOptions(TypedDict, total=False):
    """The options of ``agent_instance(...)``, declared once for both of its doors.

    Attributes:
        agent_id: The agent; ``PREFACTOR_AGENT_ID`` when omitted (read at entry).
        agent_version: The version running, e.g. ``{"name": ..., "external_identifier":
            ...}``; its runtime environment is filled in when missing. Required.
        agent_schema_version: The schema version to register; by default one is built
            from ``span_types`` (or the span types declared by entry time), named by its
            content hash.
        span_types: The span types this agent uses.
        environment_id: The environment; ``PREFACTOR_ENVIRONMENT_ID`` when omitted.
        purpose: ``"live"``, ``"smoke_test"`` or ``"eval"``.
        external_identifier: The run's id in another system.
        id: A client-chosen instance id.
        update_current_version: Whether this version becomes the agent's current one.
        strict: Raise when the run cannot be recorded, instead of running the block
            without telemetry; implies inline delivery.
        enter_timeout: Inline delivery: seconds entering waits for register and start.
        finish_timeout: Inline delivery: seconds leaving waits for the finish.
        on_terminate: ``"cancel"`` (default) stops the block when the server terminates
            the instance; ``"record"`` only sets ``run.terminated``.
        capture: On a decorated entrypoint, record the call in a root span of type
            ``agent:run``: its bound arguments as the payload, its return value (or its
            exception) as the result. Off by default: it adds a span to every run.
    """

    agent_id: str | None
    agent_version: Required[AgentVersion | Mapping[str, Any]]
    agent_schema_version: AgentSchemaVersion | Mapping[str, Any] | None
    span_types: Iterable[SpanTypeSchema | Mapping[str, Any]] | None
    environment_id: str | None
    purpose: InstancePurpose | None
    external_identifier: str | None
    id: str | None
    update_current_version: bool
    strict: bool
    enter_timeout: float
    finish_timeout: float
    on_terminate: Literal["cancel", "record"]
    capture: bool


ROOT_SPAN: Final = "agent:run"
"""The span type of a decorated entrypoint's call, with ``capture=True``."""
ROOT_SPAN_TYPE: Final = SpanTypeSchema(
    name=ROOT_SPAN,
    params_schema={"type": "object"},
    result_schema={"type": "object"},
    title="Agent run",
    description="A decorated entrypoint's call: its arguments, and its output or error.",
)

_OPTION_NAMES: Final = frozenset(InstanceOptions.__annotations__)


def _terminated_instead(run: InstanceRun, exc: BaseException | None) -> BaseException | None:
    """The AgentTerminated to raise when the block was stopped because of a terminate."""
    if (
        run.terminated
        and run.record.on_terminate == "cancel"
        and isinstance(exc, asyncio.CancelledError)
        and TERMINATED_MESSAGE in exc.args
    ):
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return AgentTerminated(run.termination_reason, run.id)
    return None


@final
class InstanceScope(Scope[InstanceRun]):
    """What ``agent_instance(...)`` returns: a block (``with``/``async with``) and a decorator.

    Each entry is a new run. The scope itself is immutable and may be shared.
    """

    __slots__ = (
        "_given",
        "_registration",
        "_source",
        "agent_schema_version",
        "capture",
        "enter_timeout",
        "finish_timeout",
        "on_terminate",
        "strict",
    )

    def __init__(self, source: Callable[[], Engine], options: InstanceOptions) -> None:
        super().__init__()
        unknown = set(options) - _OPTION_NAMES
        if unknown:
            raise TypeError(f"agent_instance() got unexpected options: {sorted(unknown)}")
        version = options.get("agent_version")
        if version is None:
            raise TypeError(
                "agent_version is required, e.g. {'name': ..., 'external_identifier': ...}"
            )
        schema = options.get("agent_schema_version")
        span_types = options.get("span_types")
        if schema is not None and span_types is not None:
            raise TypeError("pass agent_schema_version or span_types, not both")
        self._source = source
        purpose = options.get("purpose")
        # Everything given is checked now; what the environment supplies, at entry.
        self._given = RegisterRequest(
            agent_version=shared_version(to_struct(version, AgentVersion, "agent_version")),
            agent_schema_version=AgentSchemaVersion(external_identifier="-")
            if schema is None
            else to_struct(schema, AgentSchemaVersion, "agent_schema_version"),
            update_current_version=checks.boolean(
                options.get("update_current_version", True), "update_current_version"
            ),
            agent_id=checks.optional_str(options.get("agent_id"), "agent_id"),
            environment_id=checks.optional_str(options.get("environment_id"), "environment_id"),
            id=checks.optional_str(options.get("id"), "id"),
            external_identifier=checks.optional_str(
                options.get("external_identifier"), "external_identifier"
            ),
            purpose=None if purpose is None else checks.choice(purpose, PURPOSES, "purpose"),
        )
        self.agent_schema_version = None if schema is None else self._given.agent_schema_version
        if span_types is not None:
            self.agent_schema_version = schema_version_for(span_types)
        self.strict = checks.boolean(options.get("strict", False), "strict")
        self.enter_timeout = checks.seconds(
            options.get("enter_timeout", DEFAULT_ENTER_TIMEOUT), "enter_timeout"
        )
        self.finish_timeout = checks.seconds(
            options.get("finish_timeout", DEFAULT_FINISH_TIMEOUT), "finish_timeout"
        )
        self.on_terminate: Literal["cancel", "record"] = checks.choice(
            options.get("on_terminate", "cancel"), ON_TERMINATE, "on_terminate"
        )
        self.capture = checks.boolean(options.get("capture", False), "capture")
        self._registration: tuple[tuple[object, ...], RegisterRequest] | None = None

    def __repr__(self) -> str:
        given = self._given
        return f"<InstanceScope agent_id={given.agent_id!r} version={given.agent_version.name!r}>"

    @property
    def agent_version(self) -> AgentVersion:
        """The agent version every run of this scope registers."""
        return self._given.agent_version

    @property
    def registration(self) -> RegisterRequest:
        """What a run entered now registers (environment and span types read now)."""
        given = self._given
        agent_id = given.agent_id or os.environ.get(ENV_AGENT_ID) or None
        environment_id = given.environment_id or os.environ.get(ENV_ENVIRONMENT_ID) or None
        generation = None if self.agent_schema_version is not None else span_types_generation()
        key = (agent_id, environment_id, generation)
        cached = self._registration
        if cached is not None and cached[0] == key:
            return cached[1]
        schema = self.agent_schema_version or declared_schema_version()
        if self.capture and self.agent_schema_version is None:
            names = {t.name for t in schema.span_type_schemas or ()}
            if ROOT_SPAN not in names:
                # The root span a decorated entrypoint records is declared with the rest.
                schema = schema_version_for([*declared_span_types(), ROOT_SPAN_TYPE])
        built = msgspec.structs.replace(
            given,
            agent_id=checks.optional_str(agent_id, "agent_id"),
            environment_id=checks.optional_str(environment_id, "environment_id"),
            agent_schema_version=schema,
        )
        # A cache, not state: any entry may rebuild it, and all build the same.
        self._registration = (key, built)
        return built

    def _inline(self, engine: Engine) -> bool:
        return self.strict or engine.options.inline

    def start(self, *, started_at: datetime | None = None) -> InstanceRun:
        """Begin a run now, without making it current; end it with ``run.end()``.

        For code that cannot wrap the run in a block, such as framework callbacks.

        Args:
            started_at: When the run began; now when omitted.
        """
        return self._start(started_at, is_async=False)

    def _start(self, started_at: datetime | None, *, is_async: bool) -> InstanceRun:
        engine = self._source()
        record = RunRecord(self.registration, started_at=started_at, on_terminate=self.on_terminate)
        run = InstanceRun(engine, record, strict=self.strict, client=engine.owner, scope=self)
        if is_async and self.on_terminate == "cancel":
            record.block_task = asyncio.current_task()
        run.begin()
        return run

    # --- the entry hooks ------------------------------------------------------------------

    def open_entry(self, call: Call | None, *, is_async: bool) -> InstanceRun:
        """Make and begin a run for one entry; with ``capture``, a root span for a call."""
        run = self._start(None, is_async=is_async)
        if call is not None and self.capture and run.engine.options.capture:
            fn, args, kwargs = call
            root = SpanScope(
                ROOT_SPAN,
                None,
                parent=None,
                strict=None,
                enter_timeout=self.enter_timeout,
                finish_timeout=self.finish_timeout,
            )
            run.root = root.start(run=run, payload=call_arguments(fn, args, kwargs))
        return run

    def collector(self, handle: InstanceRun) -> YieldCollector | None:
        """Keeps what a decorated generator yields, when it has a root span."""
        return YieldCollector() if handle.root is not None else None

    def _end_root(self, handle: InstanceRun, exc: BaseException | None, output: Any) -> None:
        root = handle.root
        if root is None or root.ended:
            return
        if exc is None and output is not NOTHING:
            root.add_result(
                output.result() if isinstance(output, YieldCollector) else to_output(output)
            )
        root.end(error=exc)

    def activate(self, handle: InstanceRun) -> None:
        """Make the run current, with its root span (if any) as the current span."""
        handle.tokens = (context.RUN.set(handle), context.SPAN.set(handle.root))

    def deactivate(self, handle: InstanceRun) -> None:
        """Restore what was current before."""
        tokens = handle.tokens
        if tokens is not None:
            handle.tokens = None
            context.SPAN.reset(tokens[1])
            context.RUN.reset(tokens[0])

    def current(self) -> InstanceRun | None:
        """This scope's run current here, if any."""
        run = context.RUN.get()
        return run if run is not None and run.scope is self else None

    async def entered(self, handle: InstanceRun) -> None:
        """Inline delivery: wait for register and start within the enter budget."""
        if not self._inline(handle.engine):
            return
        try:
            await handle.settle_open(self.enter_timeout)
        except asyncio.CancelledError:
            # The block will not run; what got created is finished as cancelled.
            handle.end("cancelled")
            await handle.settle_end(self.finish_timeout)
            raise
        except BaseException:
            handle.end("cancelled")
            raise

    def entered_sync(self, handle: InstanceRun) -> None:
        """:meth:`entered` for sync code."""
        if not self._inline(handle.engine):
            return
        try:
            handle.settle_open_sync(self.enter_timeout)
        except BaseException:
            handle.end("cancelled")
            raise

    async def leave(
        self, handle: InstanceRun, exc: BaseException | None, output: Any = NOTHING
    ) -> BaseException | None:
        """End the run; with inline delivery, wait for its finish within the budget."""
        instead = _terminated_instead(handle, exc)
        self._end_root(handle, exc, output)
        handle.end(error=exc)
        if self._inline(handle.engine):
            await handle.settle_end(self.finish_timeout)
            self._raise_strict(handle, exc)
        return instead

    def leave_sync(
        self, handle: InstanceRun, exc: BaseException | None, output: Any = NOTHING
    ) -> BaseException | None:
        """:meth:`leave` for sync code."""
        self._end_root(handle, exc, output)
        handle.end(error=exc)
        if self._inline(handle.engine):
            handle.settle_end_sync(self.finish_timeout)
            self._raise_strict(handle, exc)
        return None

    def _raise_strict(self, handle: InstanceRun, exc: BaseException | None) -> None:
        record = handle.record
        if (
            self.strict
            and exc is None
            and record.state is RecordingState.NOT_RECORDED
            and record.error is not None
        ):
            raise record.error
