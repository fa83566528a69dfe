"""What every integration shares: where a framework's root work is recorded, and conversions.

A framework reports a tree of work through callbacks. Its root is recorded under the
run (and span) current where the root started, found through contextvars; with no run
current, an integration given an agent version opens a run of its own for that root and
ends it with the status the root's ending implies.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Final, ParamSpec
from uuid import UUID

import aioprefactor
from aioprefactor import current_instance, current_span

if TYPE_CHECKING:
    from collections.abc import Callable

    from aioprefactor import AgentVersion, Client, FinishStatus, InstanceRun, InstanceScope, SpanRun

log: Final = logging.getLogger("aioprefactor.integrations")

P = ParamSpec("P")

MAX_DEPTH: Final = 12
MAX_ITEMS: Final = 500
MAX_TEXT: Final = 16_000
_MAX_INT: Final = 2**63 - 1
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


def to_json(value: Any, depth: int = 0) -> Any:  # noqa: PLR0911 - one branch per kind of value
    """Convert a framework's value to JSON: best effort, bounded in depth and size, never raising.

    Pydantic models and dataclasses become objects, sequences lists, times ISO strings,
    NaN and infinities strings; anything else its (clipped) ``repr``.
    """
    if value is None or isinstance(value, bool | str):
        return clip(value) if isinstance(value, str) else value
    if isinstance(value, int):
        return value if -_MAX_INT <= value <= _MAX_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= MAX_DEPTH:
        return clip(repr(value))
    if isinstance(value, Mapping):
        items = list(value.items())[:MAX_ITEMS]
        return {str(key): to_json(item, depth + 1) for key, item in items}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json(item, depth + 1) for item in list(value)[:MAX_ITEMS]]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return to_json(value.value, depth + 1)
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    return _object_to_json(value, depth)


def _object_to_json(value: Any, depth: int) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        try:
            return to_json(dump(mode="json"), depth + 1)
        except Exception:
            log.debug("model_dump failed for %s", type(value).__name__, exc_info=True)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
        return to_json(fields, depth + 1)
    try:
        return clip(repr(value))
    except Exception:  # noqa: BLE001 - a broken __repr__ must not break the recording
        return f"<{type(value).__name__}>"


def json_object(value: Any) -> dict[str, Any]:
    """Convert to a JSON object: a mapping as it is, anything else as ``{"value": ...}``."""
    converted = to_json(value)
    return converted if isinstance(converted, dict) else {"value": converted}


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
