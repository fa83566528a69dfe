"""Shared by the examples: the API to talk to, from the environment or started locally."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import urllib.parse
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import aioprefactor
from aioprefactor.testing import LocalPrefactor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

LOCAL_SERVER = "aioprefactor-local@"  # how the local API names itself in its ping answer


async def timeline_of(url: str, token: str) -> str | None:
    """Return the timeline page's address if ``url`` is a local API, else ``None``."""
    async with aioprefactor.Client(url, token) as client:
        answer = await client.ping()
    server = (answer.get("details") or {}).get("server", "")
    if isinstance(server, str) and server.startswith(LOCAL_SERVER):
        return f"{url.rstrip('/')}/?token={urllib.parse.quote(token, safe='')}"
    return None


@asynccontextmanager
async def api_endpoint(*, keep: bool = False) -> AsyncIterator[tuple[str, str]]:
    """Yield ``(api_url, api_token)``: ``PREFACTOR_API_*`` when set, else a local API.

    With ``keep``, a local API started here stays up after the block until Ctrl-C.
    """
    url = os.environ.get("PREFACTOR_API_URL")
    if url:
        yield url, os.environ.get("PREFACTOR_API_TOKEN", "")
        return
    async with LocalPrefactor() as api:
        print(f"(no PREFACTOR_API_URL set: using a local API at {api.url})\n")
        yield api.url, api.token
        if keep:
            print("\nThe local API stays up so you can look; Ctrl-C ends it.", flush=True)
            await until_ctrl_c()


async def until_ctrl_c() -> None:
    """Wait until Ctrl-C (SIGINT) or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Without signal handlers (Windows), Ctrl-C raises KeyboardInterrupt instead.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signum)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Render rows as a plain-text table."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
    return "\n".join(lines)
