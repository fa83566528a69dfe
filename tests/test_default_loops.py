"""The default client of an event loop goes with the loop."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import TYPE_CHECKING

import aioprefactor
from aioprefactor import _default

if TYPE_CHECKING:
    from aioprefactor.testing import LocalPrefactor

VERSION = {"name": "Loops", "external_identifier": "1"}


def test_loops_that_used_the_default_client_can_be_collected(
    prefactor_api_in_thread: tuple[str, str, LocalPrefactor],
) -> None:
    """No loop kept alive, nothing left in the default client's maps, after three runs."""
    url, token, _ = prefactor_api_in_thread
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
