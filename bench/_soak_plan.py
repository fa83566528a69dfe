"""What both sides of the soak share: the run shape, its endings, and what each implies.

Standard library only: the official side's worker imports it from its own environment.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

ENDINGS = ("return", "raise", "cancel", "timeout", "fail")
SPANS = 3
# The status the instance must end with, the status its last span must end with (the
# spans before it complete), and what must propagate out of the run, for each ending.
INSTANCE_STATUS = {
    "return": "complete",
    "raise": "failed",
    "cancel": "cancelled",
    "timeout": "cancelled",
    "fail": "failed",
}
LAST_SPAN_STATUS = {
    "return": "complete",
    "raise": "failed",
    "cancel": "cancelled",
    "timeout": "cancelled",
    "fail": "complete",
}
PROPAGATES = {
    "return": None,
    "raise": "AgentError",
    "cancel": "CancelledError",
    "timeout": "TimeoutError",
    "fail": None,
}


class AgentError(Exception):
    """The agent's own error, raised inside the last span."""


def plan(runs: int, seed: int) -> list[str]:
    rng = random.Random(seed)  # the same endings for both sides
    return [rng.choice(ENDINGS) for _ in range(runs)]


def external_id(i: int) -> str:
    return f"soak-{i}"


async def body(
    ending: str,
    in_last_span: asyncio.Event,
    deadline: asyncio.Timeout,
    span: Callable[[], AbstractAsyncContextManager[Any]],
    fail: Callable[[], None],
) -> None:
    """The agent's work: three spans; the run ends inside the last one, or after it."""
    for k in range(SPANS):
        async with span():
            await asyncio.sleep(0)
            if k < SPANS - 1:
                continue
            in_last_span.set()
            if ending == "raise":
                raise AgentError
            if ending == "timeout":
                deadline.reschedule(asyncio.get_running_loop().time() + 0.001)
            if ending in {"cancel", "timeout"}:
                await asyncio.sleep(3600)
    if ending == "fail":
        fail()


async def drive(
    endings: list[str],
    concurrency: int,
    one_run: Callable[[int, str, asyncio.Event, asyncio.Timeout], Awaitable[None]],
) -> list[dict[str, Any]]:
    """Run every planned run as its own task, ``concurrency`` at a time.

    A "cancel" run is cancelled from outside once it is inside its last span; a "timeout"
    run's ``asyncio.timeout`` expires there. Returns what propagated out of each run.
    """
    gate = asyncio.Semaphore(concurrency)

    async def run_in_task(i: int, ending: str) -> dict[str, Any]:
        async with gate:
            in_last_span = asyncio.Event()

            async def run() -> None:
                async with asyncio.timeout(None) as deadline:
                    await one_run(i, ending, in_last_span, deadline)

            task = asyncio.create_task(run())
            if ending == "cancel":
                waiter = asyncio.create_task(in_last_span.wait())
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                task.cancel()
            raised: str | None = None
            try:
                await task
            except asyncio.CancelledError:
                raised = "CancelledError"
            except BaseException as exc:
                raised = type(exc).__name__
            return {"i": i, "ending": ending, "raised": raised}

    return list(await asyncio.gather(*(run_in_task(i, e) for i, e in enumerate(endings))))
