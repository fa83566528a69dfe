"""What every integration shares: where a framework's root work is recorded, and conversions.

A framework reports a tree of work through callbacks. Its root is recorded under the
run (and span) current where the root started, found through contextvars; with no run
current, an integration given an agent version opens a run of its own for that root and
ends it with the status the root's ending implies.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, ParamSpec

import aioprefactor
from aioprefactor import current_instance, current_span
from aioprefactor._runs.capture import to_payload, to_value

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from aioprefactor import AgentVersion, Client, FinishStatus, InstanceRun, InstanceScope, SpanRun

log: Final = logging.getLogger("aioprefactor.integrations")

P = ParamSpec("P")

MAX_TEXT: Final = 16_000
_CANCELLATION_NAMES: Final = frozenset(
    {"CancelledError", "KeyboardInterrupt", "GeneratorExit", "asyncio.CancelledError"}
    | {"asyncio.exceptions.CancelledError", "concurrent.futures._base.CancelledError"}
)


def utc_now() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def from_epoch_ns(nanoseconds: int | None) -> datetime | None:
    """Convert nanoseconds since the epoch (OpenTelemetry's clock) to a UTC datetime."""
    if nanoseconds is None:
        return None
    seconds, rest = divmod(nanoseconds, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)


def from_iso(text: str | None) -> datetime | None:
    """Parse an ISO 8601 time; a time without a zone is taken as UTC; junk gives ``None``."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def status_for_type_name(type_name: str | None) -> FinishStatus:
    """Map a failure reported only by its exception's type name to a status."""
    if type_name is not None and type_name.rpartition(".")[2] in _CANCELLATION_NAMES:
        return "cancelled"
    return "failed"


def error_result(type_name: str, message: str) -> dict[str, Any]:
    """Describe a failure known only by name and message, the way ``end(error=...)`` does."""
    return {"error": {"type": type_name, "message": clip(message)}}


def clip(text: str) -> str:
    """Cut a text to the size a payload field keeps."""
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def to_json(value: Any) -> Any:
    """Convert a framework's value to JSON: best effort, bounded in size, never raising.

    The same conversions as every payload (see ``aioprefactor._runs.capture``).
    """
    return to_value(value)


def json_object(value: Any) -> dict[str, Any]:
    """Convert to a JSON object: a mapping as it is, anything else as ``{"value": ...}``."""
    return to_payload(value)


def drop_none(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Return the fields whose value is not ``None``."""
    return {key: value for key, value in fields.items() if value is not None}


def guarded(callback: Callable[P, None]) -> Callable[P, None]:
    """Keep a callback's own failure away from the framework: log it and go on.

    Telemetry never breaks the agent; the framework's work continues unrecorded.
    """

    @functools.wraps(callback)
    def call(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            callback(*args, **kwargs)
        except Exception:
            log.warning("aioprefactor: %s failed; not recorded", callback.__name__, exc_info=True)

    return call


@dataclasses.dataclass(frozen=True, slots=True)
class Anchor:
    """Where a framework's root work is recorded.

    Attributes:
        run: The run its spans belong to, or ``None`` when nothing records them.
        parent: The span its root span nests under, or ``None`` for the run's top level.
        owned: Whether the integration started ``run`` for this root and must end it.
    """

    run: InstanceRun | None
    parent: SpanRun | None
    owned: bool

    def end(self, error: BaseException | None, ended_at: datetime) -> None:
        """End the run if this root owns it, with the status ``error`` implies."""
        if self.owned and self.run is not None:
            self.run.end(error=error, ended_at=ended_at)

    def end_with_status(self, status: FinishStatus, ended_at: datetime) -> None:
        """End the run if this root owns it, with ``status``."""
        if self.owned and self.run is not None:
            self.run.end(status, ended_at=ended_at)


class RunSource:
    """Finds the run a root is recorded in: the current one, or a new one of its own."""

    def __init__(
        self,
        client: Client | None,
        agent_id: str | None,
        agent_version: AgentVersion | Mapping[str, Any] | None,
    ) -> None:
        self.client = client
        self._warned = False
        self._scope: InstanceScope | None = None
        if agent_version is not None:
            # Built (and checked) once: a bad version fails here, before anything is sent.
            if client is not None:
                self._scope = client.agent_instance(agent_id=agent_id, agent_version=agent_version)
            else:
                self._scope = aioprefactor.agent_instance(
                    agent_id=agent_id, agent_version=agent_version
                )
        elif agent_id is not None:
            raise TypeError("agent_id needs an agent_version to open runs")

    def anchor_here(self, started_at: datetime, *, own: bool = True) -> Anchor:
        """Return the anchor for a root starting now, in the caller's context.

        Call this from the root's start callback: that is where the caller's contextvars
        (its current run and span) are visible. With no run current, a run of its own is
        started when ``own`` allows it and an agent version was given.
        """
        run = current_instance()
        if run is not None:
            return Anchor(run, current_span(), owned=False)
        if not own:
            return Anchor(None, None, owned=False)
        if self._scope is None:
            if not self._warned:
                self._warned = True
                log.warning(
                    "aioprefactor: framework work started outside any agent_instance run and "
                    "no agent_version was given to open one; it is not recorded "
                    "(this is logged once)"
                )
            return Anchor(None, None, owned=False)
        return Anchor(self._scope.start(started_at=started_at), None, owned=True)

    def flush(self, timeout: float | None) -> bool:
        """Wait (from sync code) until what was recorded is delivered; ``True`` if all was."""
        if self.client is not None:
            return self.client.flush_sync(timeout)
        return aioprefactor.flush_sync(timeout)
