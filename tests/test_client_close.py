"""Closing a client sends what is still in flight, and a late finish never crashes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from aioprefactor import Client

if TYPE_CHECKING:
    from aioprefactor.testing import LocalPrefactor

VERSION = {"name": "Close", "external_identifier": "1"}

pytestmark = pytest.mark.inline


async def test_aclose_waits_for_a_slow_finish_however_long_it_takes(
    prefactor_api: LocalPrefactor,
) -> None:
    """'complete' on the server after aclose(), though the finish outlasted flush(0.1)."""
    prefactor_api.faults.latency(0.6, n=1, route="agent_instances.finish")
    client = Client(prefactor_api.url, prefactor_api.token)
    async with client.agent_instance(agent_version=VERSION, finish_timeout=0.05) as run:
        pass
    assert run.id is not None
    assert await client.flush(0.1) is False
    await client.aclose()
    assert "complete" == prefactor_api.instance(run.id)["status"]
    assert run.telemetry_error is None


async def test_flush_reports_all_sent(prefactor_api: LocalPrefactor) -> None:
    """True from flush() once nothing is left to send."""
    async with Client(prefactor_api.url, prefactor_api.token) as client:
        async with client.agent_instance(agent_version=VERSION):
            pass
        assert await client.flush() is True


async def test_finish_after_the_client_closed_is_recorded_not_raised(
    prefactor_api: LocalPrefactor,
) -> None:
    """run.telemetry_error names the closed client; the block's exit does not raise."""
    client = Client(prefactor_api.url, prefactor_api.token)
    async with client.agent_instance(agent_version=VERSION) as run:
        await client.aclose()
    assert isinstance(run.telemetry_error, RuntimeError)
    assert "closed" in str(run.telemetry_error)
    assert run.id is not None
    assert "active" == prefactor_api.instance(run.id)["status"]


async def test_closing_inside_a_run_says_the_run_stays_open(
    prefactor_api: LocalPrefactor, caplog: pytest.LogCaptureFixture
) -> None:
    """One warning names the runs left running when the client closed under them."""
    client = Client(prefactor_api.url, prefactor_api.token)
    async with client.agent_instance(agent_version=VERSION):
        await client.aclose()
    warnings = [r.getMessage() for r in caplog.records if "still running" in r.getMessage()]
    assert 1 == len(warnings)
    assert "1 run(s)" in warnings[0]
