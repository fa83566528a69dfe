"""The names of the API's routes, shared by the app, the request log and the fault plan."""

from __future__ import annotations

from typing import Final

REGISTER: Final = "agent_instances.register"
START: Final = "agent_instances.start"
FINISH: Final = "agent_instances.finish"
GET: Final = "agent_instances.get"
RECORD_QUALITY: Final = "agent_instances.record_quality"
SPAN_CREATE: Final = "agent_spans.create"
SPAN_FINISH: Final = "agent_spans.finish"
BULK: Final = "bulk"
PING: Final = "ping"

ROUTE_NAMES: Final = frozenset(
    {REGISTER, START, FINISH, GET, RECORD_QUALITY, SPAN_CREATE, SPAN_FINISH, BULK, PING}
)


def check_route(route: str | None) -> str | None:
    """Return `route` unchanged, or raise `ValueError` if it names no route of the API."""
    if route is not None and route not in ROUTE_NAMES:
        known = ", ".join(sorted(ROUTE_NAMES))
        msg = f"unknown route {route!r}; expected one of: {known}"
        raise ValueError(msg)
    return route
