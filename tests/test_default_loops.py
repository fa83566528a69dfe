"""The default client of an event loop goes with the loop."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from typing import TYPE_CHECKING

import pytest

import aioprefactor
from aioprefactor import _default
from aioprefactor.testing import LocalPrefactor

if TYPE_CHECKING:
    from collections.abc import Iterator

VERSION = {"name": "Loops", "external_identifier": "1"}


@pytest.fixture
def prefactor_api_in_thread() -> Iterator[tuple[str, str]]:
    """A local API on a loop of its own thread, for tests that run loops themselves."""
    loop = asyncio.new_event_loop()
    api = LocalPrefactor()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(api.start(), loop).result(10)
    try:
        yield api.url, api.token
    finally:
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_loops_that_used_the_default_client_can_be_collected(
    prefactor_api_in_thread: tuple[str, str],
) -> None:
    """No loop kept alive, nothing left in the default client's maps, after three runs."""
    url, token = prefactor_api_in_thread
    aioprefactor.configure(url, token)
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    @aioprefactor.agent_instance(agent_version=VERSION)
    async def job() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))

    try:
        for _ in range(3):
            asyncio.run(job())
        gc.collect()
        assert [None, None, None] == [ref() for ref in loops]
        assert 0 == len(_default._lifetimes)
    finally:
        _default.reset()
