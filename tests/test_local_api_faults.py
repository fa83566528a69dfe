"""The local API's fault plan, observed from a real aiohttp client on loopback."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from aioprefactor.testing import FaultPlan

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aioprefactor.testing import LocalPrefactor

REGISTER_PATH = "/api/v1/agent_instance/register"
REGISTER_BODY = {
    "agent_version": {"name": "Bot", "external_identifier": "1"},
    "agent_schema_version": {"external_identifier": "schema-1"},
}
DISCONNECTS = (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)


@pytest.fixture
async def http(prefactor_api: LocalPrefactor) -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {prefactor_api.token}"}
    async with aiohttp.ClientSession(prefactor_api.url, headers=headers) as session:
        yield session


async def ping(http: aiohttp.ClientSession) -> str:
    """Ping once; the outcome as a label: the status, or `"disconnect"`."""
    try:
        async with http.get("/api/v1/ping") as response:
            await response.read()
            return str(response.status)
    except DISCONNECTS:
        return "disconnect"


async def register(http: aiohttp.ClientSession, **extra: Any) -> tuple[int, Any]:
    async with http.post(REGISTER_PATH, json={**REGISTER_BODY, **extra}) as response:
        return response.status, await response.json(content_type=None)


@pytest.mark.parametrize(
    ("status", "retry_after", "header"),
    [
        (503, None, None),
        (429, 2, "2"),
        (429, 0.05, "0.05"),
        (503, "Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
        (500, None, None),
    ],
)
async def test_fail_next_answers_the_status_without_effect(
    prefactor_api: LocalPrefactor,
    http: aiohttp.ClientSession,
    status: int,
    retry_after: float | str | None,
    header: str | None,
) -> None:
    """`fail_next` answers an error body with the status (and `Retry-After`); nothing happens."""
    prefactor_api.faults.fail_next(status=status, retry_after=retry_after)
    async with http.post(REGISTER_PATH, json=REGISTER_BODY) as response:
        body = await response.json()
        assert response.headers.get("Retry-After") == header
    assert (response.status, body["status"]) == (status, "error")
    assert isinstance(body["code"], str)
    assert isinstance(body["message"], str)
    assert prefactor_api.instances() == []
    assert prefactor_api.faults.injected == {str(status): 1}
    assert (await register(http))[0] == 200


async def test_fail_next_counts_and_matches_its_route(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """`fail_next(n, route=...)` fails only the next n requests to that route."""
    prefactor_api.faults.fail_next(2, route="agent_instances.register")
    assert await ping(http) == "200"
    assert [(await register(http))[0] for _ in range(3)] == [503, 503, 200]
    assert [r.faults for r in prefactor_api.requests] == [(), ("503",), ("503",), ()]


async def test_fail_next_sends_a_custom_body(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """A given body replaces the default error body."""
    body = {"status": "error", "code": "maintenance", "message": "back soon"}
    prefactor_api.faults.fail_next(status=503, body=body)
    assert await register(http) == (503, body)


async def test_rules_apply_in_the_order_they_were_added(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """Rules are used up in order, one answering rule per request."""
    prefactor_api.faults.fail_next(status=503)
    prefactor_api.faults.fail_next(status=429, retry_after=1)
    prefactor_api.faults.non_json()
    assert [await ping(http) for _ in range(4)] == ["503", "429", "502", "200"]


async def test_concurrent_requests_use_up_a_rule_once_each(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """Of many concurrent requests, exactly n take a `fail_next(n)` rule."""
    prefactor_api.faults.fail_next(3, status=503)
    outcomes = await asyncio.gather(*(ping(http) for _ in range(12)))
    assert sorted(outcomes) == ["200"] * 9 + ["503"] * 3
    assert prefactor_api.faults.injected == {"503": 3}


async def test_latency_delays_until_cleared(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """`latency(seconds)` without n delays every request until `clear()`; then none."""
    prefactor_api.faults.latency(0.01)
    assert [await ping(http) for _ in range(3)] == ["200"] * 3
    prefactor_api.faults.clear()
    assert await ping(http) == "200"
    assert [r.faults for r in prefactor_api.requests] == [("latency",)] * 3 + [()]
    assert prefactor_api.faults.injected == {"latency": 3}


async def test_latency_outlasts_a_client_timeout(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """A latency longer than the client's timeout makes the client time out."""
    prefactor_api.faults.latency(30, n=1, route="ping")
    with pytest.raises(asyncio.TimeoutError):
        await http.get("/api/v1/ping", timeout=aiohttp.ClientTimeout(total=0.2))
    assert await ping(http) == "200"
    assert prefactor_api.faults.injected == {"latency": 1}


async def test_latency_combines_with_an_answering_fault(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """A request can take one latency rule and one answering rule together."""
    prefactor_api.faults.latency(0.01, n=1)
    prefactor_api.faults.fail_next(status=500)
    assert await ping(http) == "500"
    assert prefactor_api.requests[0].faults == ("latency", "500")


async def test_drop_applies_the_effect_then_disconnects(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """`drop_after_effect` registers the instance, then the client sees a disconnect."""
    prefactor_api.faults.drop_after_effect(route="agent_instances.register")
    with pytest.raises(DISCONNECTS):
        await register(http, idempotency_key="reg-1")
    [instance] = prefactor_api.instances()
    logged = prefactor_api.requests[0]
    assert (logged.status, logged.faults) == (None, ("drop",))
    assert prefactor_api.faults.injected == {"drop": 1}
    status, body = await register(http, idempotency_key="reg-1")
    assert (status, body["details"]) == (200, instance)
    assert prefactor_api.requests[1].replayed
    assert len(prefactor_api.instances()) == 1


async def test_non_json_answers_html_without_effect(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """`non_json` answers an HTML body with the status; nothing happens."""
    prefactor_api.faults.non_json()
    prefactor_api.faults.non_json(status=200, body=b"<html>ok?</html>")
    for expected in ((502, b"<html>502 Bad Gateway</html>"), (200, b"<html>ok?</html>")):
        async with http.post(REGISTER_PATH, json=REGISTER_BODY) as response:
            assert (response.status, await response.read()) == expected
            assert response.content_type == "text/html"
    assert prefactor_api.instances() == []
    assert prefactor_api.faults.injected == {"non_json": 2}


async def chaos_outcomes(api: LocalPrefactor, http: aiohttp.ClientSession, seed: int) -> list[str]:
    api.reset()
    api.faults.chaos(0.5, seed=seed, latency=0.001)
    # a dropped GET may be retried by aiohttp itself on a fresh connection: the log
    # then holds more requests than there were calls, the same number each time
    return [await ping(http) for _ in range(60)]


async def test_chaos_is_deterministic_for_a_seed(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """The same seed gives the same faults to the same sequence of requests."""
    first = await chaos_outcomes(prefactor_api, http, seed=7)
    first_faults = [r.faults for r in prefactor_api.requests]
    again = await chaos_outcomes(prefactor_api, http, seed=7)
    assert again == first
    assert [r.faults for r in prefactor_api.requests] == first_faults
    assert prefactor_api.faults.injected.total() == sum(1 for f in first_faults if f)
    assert set(prefactor_api.faults.injected) == {"503", "429", "latency", "drop", "non_json"}
    assert {"200", "503", "429", "502"} <= set(first)


async def test_chaos_drops_really_disconnect(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """A chaos drop applies the request and the client sees a disconnect."""
    prefactor_api.faults.chaos(1.0, seed=5, kinds=["drop"])
    with pytest.raises(DISCONNECTS):
        await register(http)
    assert len(prefactor_api.instances()) == 1
    assert prefactor_api.faults.injected == {"drop": 1}


async def test_chaos_429_carries_retry_after(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """Chaos of kind 429 at rate 1 answers every request 429 with `Retry-After`."""
    prefactor_api.faults.chaos(1.0, seed=1, kinds=["429"], retry_after=0.25)
    for _ in range(3):
        async with http.get("/api/v1/ping") as response:
            assert (response.status, response.headers["Retry-After"]) == (429, "0.25")
    assert prefactor_api.faults.injected == {"429": 3}


async def test_chaos_at_rate_zero_injects_nothing(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """Chaos at rate 0 leaves every request alone."""
    prefactor_api.faults.chaos(0.0, seed=3)
    assert [await ping(http) for _ in range(10)] == ["200"] * 10
    assert prefactor_api.faults.injected.total() == 0


async def test_clear_keeps_the_counts(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """`clear()` removes pending faults and chaos but keeps `injected`."""
    prefactor_api.faults.fail_next(3)
    prefactor_api.faults.chaos(1.0, seed=0, kinds=["503"])
    assert await ping(http) == "503"
    prefactor_api.faults.clear()
    assert await ping(http) == "200"
    assert prefactor_api.faults.injected == {"503": 1}


async def test_faults_apply_before_auth(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """A fault answers even a request with a bad token, as a gateway would."""
    prefactor_api.faults.fail_next(status=503)
    async with http.get("/api/v1/ping", headers={"Authorization": "Bearer nope"}) as response:
        assert response.status == 503
    assert await ping(http) == "200"


@pytest.mark.parametrize(
    "add",
    [
        lambda plan: plan.fail_next(route="agent_instance.register"),
        lambda plan: plan.fail_next(0),
        lambda plan: plan.fail_next(status=200),
        lambda plan: plan.fail_next(retry_after=-1),
        lambda plan: plan.latency(-1),
        lambda plan: plan.latency(1, n=0),
        lambda plan: plan.drop_after_effect(route="spans"),
        lambda plan: plan.non_json(0),
        lambda plan: plan.chaos(1.5),
        lambda plan: plan.chaos(kinds=["boom"]),
        lambda plan: plan.chaos(kinds=[]),
    ],
)
def test_bad_fault_arguments_are_refused(add: Any) -> None:
    """Unknown routes, counts below 1, bad statuses, rates or kinds raise `ValueError`."""
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        add(FaultPlan())
