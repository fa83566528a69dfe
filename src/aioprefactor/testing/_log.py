"""The local API's request log: one record per request, as it arrived."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(slots=True)
class RecordedRequest:
    """One request the local API received, logged as it arrived.

    Attributes:
        method: The HTTP method.
        path: The path as sent, percent-encoding kept (no query string).
        route: The route's name (`"agent_instances.start"`, `"bulk"`, ...), `None` if unknown.
        body: The body decoded as JSON, or `None` (no body, or not JSON).
        headers: The request headers (case-insensitive keys).
        status: The status answered, or `None` when the connection was dropped (or the
            request is still in flight).
        replayed: Whether the answer was replayed from an earlier request's idempotency key.
        faults: The faults applied to the request (`"latency"`, `"503"`, `"drop"`, ...).
    """

    method: str
    path: str
    route: str | None
    body: Any
    headers: Mapping[str, str]
    status: int | None = None
    replayed: bool = False
    faults: tuple[str, ...] = ()
