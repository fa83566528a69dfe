"""The current run and span, carried by ContextVars.

Each task and thread started from inside a block (``create_task``, ``gather``,
``TaskGroup``, ``asyncio.to_thread``, an executor given ``contextvars.copy_context()``)
gets a copy of the context, so it sees the run that was current where it started.
Values are set on enter and reset, by token, on exit, so none outlives its block.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aioprefactor._runs.handles import InstanceRun, SpanRun

RUN: ContextVar[InstanceRun | None] = ContextVar("aioprefactor_run", default=None)
SPAN: ContextVar[SpanRun | None] = ContextVar("aioprefactor_span", default=None)


def current_instance() -> InstanceRun | None:
    """Return the innermost agent instance run active here, or ``None``."""
    return RUN.get()


def current_span() -> SpanRun | None:
    """Return the innermost span active here, or ``None``."""
    return SPAN.get()
