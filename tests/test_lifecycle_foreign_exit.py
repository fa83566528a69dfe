"""A block exited from another context than it entered is still finished truthfully."""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING

import pytest

import aioprefactor
from aioprefactor import Client

if TYPE_CHECKING:
    from aioprefactor.testing import LocalPrefactor


pytestmark = pytest.mark.inline
VERSION = {"name": "Foreign exit", "external_identifier": "1"}


async def test_exit_from_another_context_finishes_and_keeps_the_exception(
    prefactor_api: LocalPrefactor, caplog: pytest.LogCaptureFixture
) -> None:
    """'failed' on the server and the block's ValueError returned, not a RuntimeError."""
    async with Client(prefactor_api.url, prefactor_api.token) as client:
        scope = client.agent_instance(agent_version=VERSION)
        run = await scope.__aenter__()
        error = ValueError("the block's own")
        exiting = asyncio.create_task(
            scope.__aexit__(ValueError, error, None), context=contextvars.Context()
        )
        assert await exiting is False
    assert run.id is not None
    assert "failed" == prefactor_api.instance(run.id)["status"]
    assert any("another context" in r.getMessage() for r in caplog.records)


async def test_exit_without_enter_is_a_runtime_error() -> None:
    """RuntimeError from __aexit__ of a scope that was never entered."""
    scope = aioprefactor.span("agent:never")
    with pytest.raises(RuntimeError, match="without being entered"):
        await scope.__aexit__(None, None, None)
