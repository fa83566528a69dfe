"""Shared by the examples: the API to talk to, from the environment or started locally."""

from __future__ import annotations

import asyncio
import os
import threading
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

from aioprefactor.testing import LocalPrefactor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


@asynccontextmanager
async def api_endpoint() -> AsyncIterator[tuple[str, str]]:
    """Yield ``(api_url, api_token)``: ``PREFACTOR_API_*`` when set, else a local API."""
    url = os.environ.get("PREFACTOR_API_URL")
    if url:
        yield url, os.environ.get("PREFACTOR_API_TOKEN", "")
        return
    async with LocalPrefactor() as api:
        print(f"(no PREFACTOR_API_URL set: using a local API at {api.url})\n")
        yield api.url, api.token


@contextmanager
def api_endpoint_sync() -> Iterator[tuple[str, str]]:
    """Like :func:`api_endpoint`, for sync programs: a local API is served from a thread."""
    url = os.environ.get("PREFACTOR_API_URL")
    if url:
        yield url, os.environ.get("PREFACTOR_API_TOKEN", "")
        return
    loop = asyncio.new_event_loop()
    server = threading.Thread(target=loop.run_forever, name="local-api", daemon=True)
    server.start()
    api = LocalPrefactor()
    try:
        asyncio.run_coroutine_threadsafe(api.start(), loop).result()
        print(f"(no PREFACTOR_API_URL set: using a local API at {api.url})\n")
        yield api.url, api.token
    finally:
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        server.join()
        loop.close()


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
