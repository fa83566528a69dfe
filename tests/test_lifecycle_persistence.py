"""What runs and spans send is retried until the call's deadline, not max_retries times."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import aioprefactor
from aioprefactor import Client, PrefactorRetryExhaustedError

if TYPE_CHECKING:
    from aioprefactor.testing import LocalPrefactor


pytestmark = pytest.mark.inline
VERSION = {"name": "Persistence", "external_identifier": "1"}


def fast_client(api: LocalPrefactor) -> Client:
    """A client with a tiny backoff, so many retries take little time."""
    return Client(api.url, api.token, max_retries=2, backoff_initial=0.001, backoff_max=0.005)


@pytest.mark.parametrize(
    "route",
    [
        "agent_instances.register",
        "agent_instances.start",
        "agent_instances.finish",
        "agent_spans.create",
        "agent_spans.finish",
    ],
)
async def test_lifecycle_outlasts_more_faults_than_max_retries(
    prefactor_api: LocalPrefactor, route: str
) -> None:
    """'complete' run and span on the server after 6 failures in a row on one route."""
    prefactor_api.faults.fail_next(6, 503, route=route)
    async with (
        fast_client(prefactor_api) as client,
        client.agent_instance(agent_id="a", agent_version=VERSION) as run,
        aioprefactor.span("agent:step") as step,
    ):
        pass
    assert run.telemetry_error is None
    assert run.id is not None
    assert step.id is not None
    assert "complete" == prefactor_api.instance(run.id)["status"]
    assert "complete" == prefactor_api.span(step.id)["status"]
    assert 6 == prefactor_api.faults.injected["503"]


async def test_direct_endpoint_calls_still_stop_after_max_retries(
    prefactor_api: LocalPrefactor,
) -> None:
    """PrefactorRetryExhaustedError after max_retries + 1 attempts of a direct call."""
    prefactor_api.faults.fail_next(6, 503, route="agent_instances.get")
    async with fast_client(prefactor_api) as client:
        with pytest.raises(PrefactorRetryExhaustedError) as caught:
            await client.agent_instances.get("anything")
    assert 3 == caught.value.attempts
