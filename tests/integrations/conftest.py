from __future__ import annotations

import asyncio
import contextlib
import functools
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aioprefactor.testing import LocalPrefactor


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def render_tree(
    api: LocalPrefactor,
    instance_id: str,
    label: Callable[[dict[str, Any]], str | None] = lambda span: span["schema_name"],
) -> str:
    """Render an instance's spans as `name(status)[children]`, checking their times nest.

    Spans `label` names `None` are left out, their children shown in their place.
    """
    spans = api.spans(instance_id)
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        children.setdefault(span["parent_span_id"], []).append(span)

    def render(parent: dict[str, Any] | None) -> str:
        kids = sorted(
            children.get(parent["id"] if parent else None, []), key=lambda s: s["started_at"]
        )
        parts = []
        for span in kids:
            started, finished = _time(span["started_at"]), _time(span["finished_at"])
            assert started <= finished, span
            if parent is not None:
                assert _time(parent["started_at"]) <= started, (parent, span)
                assert finished <= _time(parent["finished_at"]), (parent, span)
            inner = render(span)
            name = label(span)
            if name is None:
                parts.extend([inner] if inner else [])
                continue
            parts.append(f"{name}({span['status']})" + (f"[{inner}]" if inner else ""))
        return " ".join(parts)

    assert len({s["id"] for s in spans}) == len(spans)
    known = {s["id"] for s in spans}
    assert all(s["parent_span_id"] in known or s["parent_span_id"] is None for s in spans)
    return render(None)


@pytest.fixture
def span_tree(prefactor_api: LocalPrefactor) -> Callable[..., str]:
    """Render a recorded instance's span tree (``render_tree`` on the local API)."""
    return functools.partial(render_tree, prefactor_api)


def _closing_thread_loop(call: Callable[[], Any]) -> Any:
    try:
        return call()
    finally:
        # Sync entry points of some frameworks (run_sync) leave an event loop set in the
        # worker thread; it is closed here, not left to the garbage collector.
        policy = asyncio.get_event_loop_policy()
        with contextlib.suppress(RuntimeError):
            policy.get_event_loop().close()
        policy.set_event_loop(None)


async def run_in_thread(call: Callable[[], Any]) -> Any:
    """Run a framework's sync entry point in a worker thread (with this context)."""
    return await asyncio.to_thread(_closing_thread_loop, call)


@pytest.fixture
def in_thread() -> Callable[[Callable[[], Any]], Awaitable[Any]]:
    """Run a framework's sync entry point in a worker thread, closing any loop it leaves."""
    return run_in_thread
