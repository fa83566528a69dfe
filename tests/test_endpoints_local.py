from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from aioprefactor import (
    AgentInstance,
    Client,
    PrefactorAuthError,
    PrefactorConflictError,
    PrefactorNotFoundError,
    PrefactorRateLimitError,
    PrefactorResponseContractError,
    PrefactorRetryExhaustedError,
    PrefactorServerError,
    PrefactorTimeoutError,
    PrefactorValidationError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from aioprefactor.testing import LocalPrefactor, RecordedRequest

VERSION: dict[str, Any] = {"name": "Support bot", "external_identifier": "1.4.0"}
SCHEMA: dict[str, Any] = {"external_identifier": "schema-1"}


@pytest.fixture
async def make_client(prefactor_api: LocalPrefactor) -> AsyncIterator[Callable[..., Client]]:
    """Clients bound to the local API with fast backoff; all closed after the test."""
    clients: list[Client] = []

    def make(**kwargs: Any) -> Client:
        options: dict[str, Any] = {
            "api_url": prefactor_api.url,
            "api_token": prefactor_api.token,
            "backoff_initial": 0.001,
            "backoff_max": 0.002,
            **kwargs,
        }
        client = Client(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    return make_client()


async def register(client: Client) -> AgentInstance:
    return await client.agent_instances.register("agent-1", VERSION, SCHEMA)


def on_route(api: LocalPrefactor, route: str) -> list[RecordedRequest]:
    return [request for request in api.requests if request.route == route]


# --- the happy path --------------------------------------------------------------------------


async def test_full_run(prefactor_api: LocalPrefactor, client: Client) -> None:
    """Register, start, a nested span pair, finish and get agree with what the server holds."""
    instance = await register(client)
    assert instance.status == "pending"
    assert (await client.agent_instances.start(instance.id)).status == "active"
    outer = await client.agent_spans.create(instance.id, "agent:llm", payload={"model": "m"})
    inner = await client.agent_spans.create(
        instance.id, "agent:tool", payload={"q": 1}, parent_span_id=outer.id
    )
    assert (await client.agent_spans.finish(inner.id, "failed")).status == "failed"
    done = await client.agent_spans.finish(outer.id, "complete", result_payload={"text": "hi"})
    assert done.result_payload == {"text": "hi"}
    assert (await client.agent_instances.finish(instance.id, "complete")).status == "complete"
    fetched = await client.agent_instances.get(instance.id)
    assert (fetched.id, fetched.status) == (instance.id, "complete")
    assert [i["status"] for i in prefactor_api.instances()] == ["complete"]
    spans = {s["id"]: s for s in prefactor_api.spans(instance.id)}
    assert spans[inner.id]["parent_span_id"] == outer.id
    assert (spans[outer.id]["status"], spans[inner.id]["status"]) == ("complete", "failed")


async def test_headers_reach_the_server(prefactor_api: LocalPrefactor, client: Client) -> None:
    """The server sees the bearer token, JSON content type and the SDK tag."""
    await client.ping()
    (request,) = prefactor_api.requests
    assert request.headers["Authorization"] == f"Bearer {prefactor_api.token}"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["X-Prefactor-SDK"].startswith("aioprefactor@")


async def test_ping(prefactor_api: LocalPrefactor, client: Client) -> None:
    """ping() answers with the API's success body."""
    answer = await client.ping()
    assert answer.get("status") == "success"
    assert [r.route for r in prefactor_api.requests] == ["ping"]


@pytest.mark.parametrize(
    "call",
    [lambda c: c.ping(), lambda c: c.agent_instances.get("x")],
    ids=["ping", "get"],
)
async def test_bad_token_is_auth_error(
    prefactor_api: LocalPrefactor,
    make_client: Callable[..., Client],
    call: Callable[[Client], Any],
) -> None:
    """A wrong token gets a 401, raised at once as PrefactorAuthError without the token."""
    client = make_client(api_token="not-the-token")
    with pytest.raises(PrefactorAuthError) as info:
        await call(client)
    assert info.value.status_code == 401
    assert "not-the-token" not in str(info.value)
    assert len(prefactor_api.requests) == 1


# --- error mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_id", "segment"),
    [
        ("missing", "missing"),
        ("a/b", "a%2Fb"),
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("a?b#c", "a%3Fb%23c"),
        ("100%", "100%25"),
        ("ü x", "%C3%BC%20x"),
    ],
)
async def test_unknown_instance_is_not_found(
    prefactor_api: LocalPrefactor, client: Client, instance_id: str, segment: str
) -> None:
    """An unknown id, however odd its characters, is a 404 on the instance's own path."""
    with pytest.raises(PrefactorNotFoundError) as info:
        await client.agent_instances.get(instance_id)
    assert info.value.status_code == 404
    (request,) = prefactor_api.requests
    assert (request.route, request.path) == (
        "agent_instances.get",
        f"/api/v1/agent_instance/{segment}",
    )


async def test_finish_twice_is_conflict(client: Client) -> None:
    """Finishing a finished instance is a 409 PrefactorConflictError with code invalid_action."""
    instance = await register(client)
    await client.agent_instances.finish(instance.id, "complete")
    with pytest.raises(PrefactorConflictError) as info:
        await client.agent_instances.finish(instance.id, "failed")
    assert (info.value.status_code, info.value.code) == (409, "invalid_action")


async def test_start_after_finish_is_conflict(client: Client) -> None:
    """Starting a terminal instance is a 409."""
    instance = await register(client)
    await client.agent_instances.finish(instance.id, "cancelled")
    with pytest.raises(PrefactorConflictError):
        await client.agent_instances.start(instance.id)


async def test_server_validation_is_validation_error(client: Client) -> None:
    """A 422 from the server is a PrefactorValidationError carrying its field errors."""
    instance = await register(client)
    with pytest.raises(PrefactorValidationError) as info:
        await client.agent_spans.create(instance.id, "agent:llm", parent_span_id="no-such-span")
    assert info.value.status_code == 422
    assert "details.parent_span_id" in info.value.errors


async def test_span_in_unknown_instance_is_not_found(client: Client) -> None:
    """A span for an instance that does not exist is a 404."""
    with pytest.raises(PrefactorNotFoundError):
        await client.agent_spans.create("no-such-instance", "agent:llm")


# --- bulk ------------------------------------------------------------------------------------


async def test_bulk(prefactor_api: LocalPrefactor, client: Client) -> None:
    """Bulk runs each item and returns its output under its key; the server applies them."""
    instance = await register(client)
    result = await client.bulk.execute(
        [
            {
                "_type": "agent_instances/start",
                "idempotency_key": "bulk-start-1",
                "agent_instance_id": instance.id,
            },
            {
                "_type": "agent_spans/create",
                "idempotency_key": "bulk-span-1",
                "agent_instance_id": instance.id,
                "schema_name": "agent:llm",
                "status": "active",
                "payload": {"model": "m"},
            },
        ]
    )
    assert sorted(result.outputs) == ["bulk-span-1", "bulk-start-1"]
    assert all(output.ok for output in result.outputs.values())
    assert prefactor_api.instance(instance.id)["status"] == "active"
    assert [s["schema_name"] for s in prefactor_api.spans(instance.id)] == ["agent:llm"]


async def test_bulk_item_error_reported_in_outputs(client: Client) -> None:
    """A bulk item the server rejects comes back as an error output with its field errors."""
    result = await client.bulk.execute(
        [{"_type": "agent_spans/create", "idempotency_key": "bulk-bad-1"}]
    )
    output = result.outputs["bulk-bad-1"]
    assert not output.ok
    assert output.errors is not None
    assert "schema_name" in output.errors


# --- the fault plan --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
async def test_failed_requests_retried_with_the_same_key(
    prefactor_api: LocalPrefactor, client: Client, status: int
) -> None:
    """Failures are retried with the same body until one succeeds; one effect is applied."""
    instance = await register(client)
    prefactor_api.faults.fail_next(2, status, route="agent_instances.start")
    started = await client.agent_instances.start(instance.id)
    assert started.status == "active"
    requests = on_route(prefactor_api, "agent_instances.start")
    assert [r.status for r in requests] == [status, status, 200]
    assert len({r.body["idempotency_key"] for r in requests}) == 1
    assert prefactor_api.instance(instance.id)["status"] == "active"


async def test_retry_after_from_server_honoured(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """A 429 with Retry-After is retried after the server's delay, not the short backoff."""
    client = make_client()
    instance = await register(client)
    prefactor_api.faults.fail_next(1, 429, retry_after=0.2, route="agent_instances.start")
    loop = asyncio.get_running_loop()
    before = loop.time()
    await client.agent_instances.start(instance.id)
    assert loop.time() - before >= 0.2


async def test_retry_after_beyond_deadline_gives_up(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """A Retry-After longer than the total deadline ends the call after one attempt."""
    client = make_client(total_timeout=1)
    instance = await register(client)
    prefactor_api.faults.fail_next(1, 503, retry_after=30, route="agent_instances.start")
    with pytest.raises(PrefactorRetryExhaustedError) as info:
        await client.agent_instances.start(instance.id)
    assert info.value.attempts == 1
    assert isinstance(info.value.last_error, PrefactorServerError)
    assert prefactor_api.instance(instance.id)["status"] == "pending"


async def test_rate_limit_not_retried_when_left_out(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """With 429 left out of retry_statuses, a rate limit is raised with its Retry-After."""
    client = make_client(retry_statuses={503})
    prefactor_api.faults.fail_next(1, 429, retry_after=2, route="ping")
    with pytest.raises(PrefactorRateLimitError) as info:
        await client.ping()
    assert info.value.retry_after == 2.0


async def test_retries_exhausted(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """More failures than retries end in RetryExhausted with the last error and the count."""
    client = make_client(max_retries=2)
    instance = await register(client)
    prefactor_api.faults.fail_next(5, 503, route="agent_instances.finish")
    with pytest.raises(PrefactorRetryExhaustedError) as info:
        await client.agent_instances.finish(instance.id, "complete")
    assert info.value.attempts == 3
    assert isinstance(info.value.last_error, PrefactorServerError)
    assert len(on_route(prefactor_api, "agent_instances.finish")) == 3
    assert prefactor_api.instance(instance.id)["status"] == "pending"


async def test_latency_over_request_timeout_then_retried(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """An attempt slower than request_timeout times out and the retry lands, exactly once."""
    client = make_client(request_timeout=0.2)
    instance = await register(client)
    prefactor_api.faults.latency(1.0, n=1, route="agent_instances.start")
    started = await client.agent_instances.start(instance.id)
    assert started.status == "active"
    keys = {r.body["idempotency_key"] for r in on_route(prefactor_api, "agent_instances.start")}
    assert len(keys) == 1
    assert prefactor_api.instance(instance.id)["status"] == "active"


async def test_latency_under_request_timeout_is_fine(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """A slow answer within request_timeout is taken as it is, without a retry."""
    client = make_client(request_timeout=5)
    prefactor_api.faults.latency(0.1, n=1, route="ping")
    await client.ping()
    assert len(prefactor_api.requests) == 1


async def test_timeouts_exhaust_as_timeout_errors(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """When every attempt times out, the last error is a PrefactorTimeoutError (a TimeoutError)."""
    client = make_client(request_timeout=0.1, max_retries=1)
    prefactor_api.faults.latency(1.0, n=2, route="ping")
    with pytest.raises(PrefactorRetryExhaustedError) as info:
        await client.ping()
    assert isinstance(info.value.last_error, PrefactorTimeoutError)
    assert isinstance(info.value.last_error, TimeoutError)


async def test_total_timeout_bounds_the_call(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """The total deadline cuts an attempt short even when request_timeout is longer."""
    client = make_client(request_timeout=10, total_timeout=0.3)
    prefactor_api.faults.latency(2.0, n=1, route="ping")
    loop = asyncio.get_running_loop()
    before = loop.time()
    with pytest.raises(PrefactorRetryExhaustedError) as info:
        await client.ping()
    assert isinstance(info.value.last_error, PrefactorTimeoutError)
    assert loop.time() - before < 2.0


async def test_lost_response_replayed_not_reapplied(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """A response lost after its effect is retried with the same key and replayed, not redone."""
    instance = await register(client)
    prefactor_api.faults.drop_after_effect(1, route="agent_instances.start")
    started = await client.agent_instances.start(instance.id)
    assert started.status == "active"
    first, second = on_route(prefactor_api, "agent_instances.start")
    assert (first.status, second.status, second.replayed) == (None, 200, True)
    assert first.body == second.body
    assert prefactor_api.instance(instance.id)["status"] == "active"


async def test_lost_register_response_creates_one_instance(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """A register whose response is lost still leaves exactly one instance on the server."""
    prefactor_api.faults.drop_after_effect(1, route="agent_instances.register")
    instance = await register(client)
    assert [i["id"] for i in prefactor_api.instances()] == [instance.id]


async def test_lost_finish_response_finishes_once(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """A finish whose response is lost is not reported as a conflict on its retry."""
    instance = await register(client)
    prefactor_api.faults.drop_after_effect(1, route="agent_instances.finish")
    finished = await client.agent_instances.finish(instance.id, "failed")
    assert finished.status == "failed"
    assert prefactor_api.instance(instance.id)["status"] == "failed"


async def test_lost_span_create_response_creates_one_span(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """A span create whose response is lost leaves exactly one span."""
    instance = await register(client)
    prefactor_api.faults.drop_after_effect(1, route="agent_spans.create")
    span = await client.agent_spans.create(instance.id, "agent:llm")
    assert [s["id"] for s in prefactor_api.spans(instance.id)] == [span.id]


async def test_non_json_502_retried(prefactor_api: LocalPrefactor, client: Client) -> None:
    """An HTML 502 from a proxy is retried like any 5xx."""
    instance = await register(client)
    prefactor_api.faults.non_json(1, status=502, route="agent_instances.get")
    fetched = await client.agent_instances.get(instance.id)
    assert fetched.id == instance.id
    assert [r.status for r in on_route(prefactor_api, "agent_instances.get")] == [502, 200]


async def test_non_json_exhausted_is_contract_error(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """Non-JSON 5xx answers on every attempt end in a contract error with status and snippet."""
    client = make_client(max_retries=1)
    prefactor_api.faults.non_json(2, status=502, route="ping")
    with pytest.raises(PrefactorRetryExhaustedError) as info:
        await client.ping()
    last = info.value.last_error
    assert isinstance(last, PrefactorResponseContractError)
    assert last.status_code == 502
    assert last.body_snippet


async def test_non_json_on_4xx_is_contract_error_at_once(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """A non-JSON 404 is a contract error with its status, not retried."""
    prefactor_api.faults.non_json(1, status=404, route="ping", body=b"<h1>Not Found</h1>")
    with pytest.raises(PrefactorResponseContractError) as info:
        await client.ping()
    assert info.value.status_code == 404
    assert len(prefactor_api.requests) == 1


async def test_custom_retry_statuses_on_the_wire(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """A 503 is raised at once when retry_statuses leaves it out."""
    client = make_client(retry_statuses={429})
    prefactor_api.faults.fail_next(1, 503, route="ping")
    with pytest.raises(PrefactorServerError):
        await client.ping()
    assert len(prefactor_api.requests) == 1


# --- the session -----------------------------------------------------------------------------


async def test_one_session_across_calls(prefactor_api: LocalPrefactor, client: Client) -> None:
    """Many calls share the client's one session, and the server sees all of them."""
    await client.ping()
    session = client._transport_obj._session
    instance = await register(client)
    await asyncio.gather(*(client.agent_instances.get(instance.id) for _ in range(10)))
    assert client._transport_obj._session is session
    assert len(prefactor_api.requests) == 12


async def test_closed_client_sends_nothing(prefactor_api: LocalPrefactor, client: Client) -> None:
    """A closed client refuses to be used and the server sees nothing more."""
    await client.ping()
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.ping()
    assert len(prefactor_api.requests) == 1
