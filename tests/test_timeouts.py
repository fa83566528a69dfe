"""Timeouts count what they say: waiting in the connection pool is not connecting."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from aioprefactor import Client, PrefactorRetryExhaustedError, PrefactorTimeoutError

if TYPE_CHECKING:
    from aioprefactor.testing import LocalPrefactor


async def test_waiting_for_a_pooled_connection_is_not_a_connect_timeout(
    prefactor_api: LocalPrefactor,
) -> None:
    """Both calls answer when the second queues for the only connection past connect_timeout."""
    prefactor_api.faults.latency(0.5, n=1, route="ping")
    async with Client(
        prefactor_api.url,
        prefactor_api.token,
        max_connections=1,
        connect_timeout=0.1,
        request_timeout=5.0,
        max_retries=0,
    ) as client:
        first = asyncio.create_task(client.ping())
        await asyncio.sleep(0.05)  # the first holds the connection
        answers = await asyncio.gather(first, client.ping())
    assert [answer["status"] for answer in answers] == ["success", "success"]


async def test_an_attempt_waits_request_timeout_for_its_answer(
    prefactor_api: LocalPrefactor,
) -> None:
    """A PrefactorTimeoutError once the answer takes longer than request_timeout."""
    prefactor_api.faults.latency(1.0, n=1, route="ping")
    async with Client(
        prefactor_api.url, prefactor_api.token, request_timeout=0.2, max_retries=0
    ) as client:
        with pytest.raises(PrefactorRetryExhaustedError) as caught:
            await client.ping()
    assert isinstance(caught.value.last_error, PrefactorTimeoutError)
