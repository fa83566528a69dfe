"""``agent_instance()``: register, start and finish a run around a block or a call."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any, Final, final

import msgspec

from aioprefactor import _context
from aioprefactor._decorate import Decorator
from aioprefactor._recording import Recording, RecordingState
from aioprefactor._schema import declared_span_types, schema_version_for, with_runtime_environment
from aioprefactor._wire import checks as _checks
from aioprefactor._wire.config import ENV_AGENT_ID, ENV_ENVIRONMENT_ID
from aioprefactor._wire.endpoints import PURPOSES
from aioprefactor._wire.errors import PrefactorConflictError, PrefactorError
from aioprefactor._wire.models import (
    AgentInstance,
    AgentSchemaVersion,
    AgentVersion,
    ControlSignal,
    FinishStatus,
    InstancePurpose,
    RegisterRequest,
    SpanTypeSchema,
)
from aioprefactor._wire.payloads import to_struct

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from contextvars import Token

    from aioprefactor._client import Client
    from aioprefactor._spans import SpanRun

DEFAULT_ENTER_TIMEOUT: Final = 5.0
DEFAULT_FINISH_TIMEOUT: Final = 10.0


@final
class InstanceRun(Recording):
    """One run of an agent: the handle ``async with agent_instance(...)`` gives.

    Attributes:
        id: The instance id the server gave, or ``None`` if it was not recorded.
        instance: The last :class:`AgentInstance` the server returned.
        status: The status decided when the block ended (sent with the finish);
            ``None`` until then. Whether the finish landed: ``telemetry_error``.
        telemetry_error: The error that kept the run from being recorded, or ``None``.
        terminated: Whether the server terminated the instance.
        termination_reason: The server's reason, when it terminated the instance.
        strict: Whether telemetry failures raise instead of failing open.
    """

    _kind = "agent instance"

    def __init__(self, scope: InstanceScope, client: Client, *, strict: bool) -> None:
        super().__init__(client, strict=strict)
        self.client: Final = client
        self.instance: AgentInstance | None = None
        self.terminated = False
        self.termination_reason: str | None = None
        self._scope = scope
        self._register_key = _checks.new_key()
        self._start_key = _checks.new_key()
        self._tokens: tuple[Token[InstanceRun | None], Token[SpanRun | None]] | None = None
        # The span requests still in flight; the instance is finished after them, so a
        # span is never sent to an instance that has already ended.
        self._span_work: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return self._describe(terminated=self.terminated)

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

    @property
    def recording(self) -> bool:
        """Whether spans inside are being sent: registered, started, not ended or terminated."""
        return (
            self._state is RecordingState.ACTIVE
            and self.id is not None
            and self.telemetry_error is None
            and not self.terminated
        )

    def _started(self) -> bool:
        """Whether the instance was registered and started (however late), and not terminated."""
        opening = self._open_task
        return (
            self.id is not None
            and (opening is None or opening.done())
            and self._open_error is None
            and not self.terminated
        )

    def _control(self, control: ControlSignal | None) -> None:
        if control is not None and control.terminate and not self.terminated:
            self.terminated = True
            self.termination_reason = control.reason

    def _skip_finish(self) -> bool:
        return self.id is None or self.terminated

    async def _send_open(self) -> None:
        scope = self._scope
        instances = self.client._lifecycle_instances
        if self.id is None:
            request = msgspec.structs.replace(
                scope.registration, idempotency_key=self._register_key
            )
            instance = await instances._send_register(request)
            self.id, self.instance = instance.id, instance
        self.instance = await instances.start(self.id, idempotency_key=self._start_key)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._span_work.add(task)
        task.add_done_callback(self._span_work.discard)

    async def _settle(self) -> None:
        # A span's answer may carry the terminate signal, which decides whether the
        # instance is finished at all; and no span may reach an instance already ended.
        if self._span_work:
            await asyncio.wait(set(self._span_work))

    async def _send_finish(self, status: FinishStatus) -> None:
        assert self.id is not None
        instances = self.client._lifecycle_instances
        try:
            self.instance = await instances.finish(
                self.id, status, self._ended_at, idempotency_key=self._finish_key
            )
        except PrefactorConflictError as conflict:
            # Already terminal. If the server terminated it, that is the truth to keep.
            try:
                self.instance = await instances.get(self.id)
            except PrefactorError:
                raise conflict from None
            if self.instance.status != "terminated":
                raise
            self.terminated = True
            self.termination_reason = self.instance.termination_reason


@final
class InstanceScope(Decorator[InstanceRun]):
    """What ``agent_instance(...)`` returns: an async context manager and a decorator.

    Each ``async with`` (and each call of a decorated function) is a new run.
    """

    def __init__(
        self,
        client: Callable[[], Client],
        *,
        agent_id: str | None,
        agent_version: AgentVersion | Mapping[str, Any],
        agent_schema_version: AgentSchemaVersion | Mapping[str, Any] | None,
        span_types: Iterable[SpanTypeSchema | Mapping[str, Any]] | None,
        environment_id: str | None,
        purpose: InstancePurpose | None,
        external_identifier: str | None,
        id: str | None,  # noqa: A002 - the API's own name for it
        update_current_version: bool,
        strict: bool,
        enter_timeout: float,
        finish_timeout: float,
    ) -> None:
        super().__init__()
        if agent_version is None:
            raise TypeError(
                "agent_version is required, e.g. {'name': ..., 'external_identifier': ...}"
            )
        self._client = client
        self.agent_id = _checks.optional_str(
            agent_id if agent_id is not None else os.environ.get(ENV_AGENT_ID) or None, "agent_id"
        )
        self.environment_id = _checks.optional_str(
            environment_id
            if environment_id is not None
            else os.environ.get(ENV_ENVIRONMENT_ID) or None,
            "environment_id",
        )
        self.agent_version = with_runtime_environment(
            to_struct(agent_version, AgentVersion, "agent_version")
        )
        if agent_schema_version is not None:
            if span_types is not None:
                raise TypeError("pass agent_schema_version or span_types, not both")
            self.agent_schema_version = to_struct(
                agent_schema_version, AgentSchemaVersion, "agent_schema_version"
            )
        else:
            declared = declared_span_types() if span_types is None else span_types
            self.agent_schema_version = schema_version_for(declared)
        self.purpose = None if purpose is None else _checks.choice(purpose, PURPOSES, "purpose")
        self.external_identifier = _checks.optional_str(external_identifier, "external_identifier")
        self.id = _checks.optional_str(id, "id")
        self.update_current_version = _checks.boolean(
            update_current_version, "update_current_version"
        )
        # Built and checked once: every run of this scope sends it with its own key.
        self.registration: Final = RegisterRequest(
            agent_version=self.agent_version,
            agent_schema_version=self.agent_schema_version,
            update_current_version=self.update_current_version,
            agent_id=self.agent_id,
            environment_id=self.environment_id,
            id=self.id,
            external_identifier=self.external_identifier,
            purpose=self.purpose,
        )
        self.strict = _checks.boolean(strict, "strict")
        self.enter_timeout = _checks.seconds(enter_timeout, "enter_timeout")
        self.finish_timeout = _checks.seconds(finish_timeout, "finish_timeout")

    def __repr__(self) -> str:
        return f"<InstanceScope agent_id={self.agent_id!r} version={self.agent_version.name!r}>"

    async def _enter(self) -> InstanceRun:
        """Register and start a run, without making it current."""
        run = InstanceRun(self, self._client(), strict=self.strict)
        await run._open(self.enter_timeout, self.finish_timeout)
        return run

    async def _exit(self, run: InstanceRun, exc: BaseException | None) -> None:
        await run._close(exc, self.finish_timeout)

    def _activate(self, run: InstanceRun) -> None:
        run._tokens = (_context.RUN.set(run), _context.SPAN.set(None))

    def _deactivate(self, run: InstanceRun) -> None:
        tokens = run._tokens
        if tokens is not None:
            run._tokens = None
            _context.SPAN.reset(tokens[1])
            _context.RUN.reset(tokens[0])

    def _current(self) -> InstanceRun | None:
        run = _context.RUN.get()
        return run if run is not None and run._scope is self else None
