"""The local API's instances, auth, errors and inspection, driven by plain aiohttp on loopback."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from yarl import URL

from aioprefactor.testing import LocalPrefactor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
VERSION = {"name": "Support bot", "external_identifier": "1.4.0"}
SCHEMA = {
    "external_identifier": "schema-1",
    "span_type_schemas": [
        {"name": "agent:llm", "title": "LLM call", "params_schema": {"type": "object"}}
    ],
}
INSTANCE_KEYS = {
    "type",
    "id",
    "account_id",
    "agent_id",
    "agent_version_id",
    "environment_id",
    "agent_deployment_id",
    "status",
    "inserted_at",
    "updated_at",
    "started_at",
    "finished_at",
    "termination_reason",
    "external_identifier",
    "span_counts",
    "purpose",
}


@dataclass
class Answer:
    """A response: status, decoded JSON body, headers."""

    status: int
    body: Any
    headers: dict[str, str]


if TYPE_CHECKING:
    Send = Callable[..., Awaitable[Answer]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def call(prefactor_api: LocalPrefactor, http: aiohttp.ClientSession) -> Send:
    async def send(
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> Answer:
        sent = {"Authorization": f"Bearer {token or prefactor_api.token}", **(headers or {})}
        url = URL(prefactor_api.url + path, encoded=True)
        async with http.request(method, url, json=body, data=data, headers=sent) as response:
            parsed = await response.json(content_type=None)
            return Answer(response.status, parsed, dict(response.headers))

    return send


async def register(call: Send, **fields: Any) -> dict[str, Any]:
    answer = await call(
        "POST",
        "/api/v1/agent_instance/register",
        {"agent_version": VERSION, "agent_schema_version": SCHEMA, **fields},
    )
    assert answer.status == 200, answer.body
    details: dict[str, Any] = answer.body["details"]
    return details


async def started(call: Send) -> str:
    instance_id: str = (await register(call))["id"]
    answer = await call("POST", f"/api/v1/agent_instance/{instance_id}/start", {})
    assert answer.status == 200
    return instance_id


def assert_error(answer: Answer, status: int, code: str) -> None:
    assert (status, "error", code) == (answer.status, answer.body["status"], answer.body["code"])
    assert isinstance(answer.body["message"], str)


# auth and transport-level errors


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer", "Token {token}"],
)
async def test_every_route_needs_the_bearer_token(
    prefactor_api: LocalPrefactor, http: aiohttp.ClientSession, authorization: str | None
) -> None:
    """A missing, wrong or non-Bearer credential gets 401 `unauthorized` in the error shape."""
    headers = {} if authorization is None else {"Authorization": authorization}
    headers = {k: v.format(token=prefactor_api.token) for k, v in headers.items()}
    async with http.get(f"{prefactor_api.url}/api/v1/ping", headers=headers) as response:
        body = await response.json()
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (response.status, body["status"], body["code"]) == (401, "error", "unauthorized")
    assert prefactor_api.token not in body["message"]


async def test_unauthorized_requests_have_no_effect(
    prefactor_api: LocalPrefactor, call: Send
) -> None:
    """A register with a bad token creates nothing."""
    body = {"agent_version": VERSION, "agent_schema_version": SCHEMA}
    answer = await call("POST", "/api/v1/agent_instance/register", body, token="nope")
    assert_error(answer, 401, "unauthorized")
    assert prefactor_api.instances() == []


async def test_ping_answers_success(call: Send) -> None:
    """GET /api/v1/ping with the token answers `{"status": "success", ...}`."""
    answer = await call("GET", "/api/v1/ping")
    assert (answer.status, answer.body["status"]) == (200, "success")


async def test_unknown_route_is_a_json_404(call: Send) -> None:
    """An unknown path answers 404 `not_found` as JSON, not an HTML page."""
    answer = await call("GET", "/api/v1/nothing-here")
    assert_error(answer, 404, "not_found")
    assert answer.headers["Content-Type"].startswith("application/json")


async def test_wrong_method_is_a_json_405(call: Send) -> None:
    """A known path with the wrong method answers 405 as JSON, with `Allow`."""
    answer = await call("GET", "/api/v1/bulk")
    assert_error(answer, 405, "method_not_allowed")
    assert "POST" in answer.headers["Allow"]


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b"[1, 2]", 400, "bad_request"),
        (b'"text"', 400, "bad_request"),
    ],
)
async def test_malformed_bodies_get_the_error_shape(
    call: Send, data: bytes, status: int, code: str
) -> None:
    """A body that is not a JSON object is a 400 in the API's error shape, never a 500."""
    headers = {"Content-Type": "application/json"}
    answer = await call("POST", "/api/v1/agent_instance/register", data=data, headers=headers)
    assert_error(answer, status, code)


async def test_a_body_that_is_not_declared_json_is_refused(
    call: Send,
) -> None:
    """A body sent without `Content-Type: application/json` is a 415."""
    headers = {"Content-Type": "text/plain"}
    answer = await call("POST", "/api/v1/agent_instance/register", data=b"{}", headers=headers)
    assert_error(answer, 415, "unsupported_media_type")


# register


async def test_register_renders_a_pending_instance(
    prefactor_api: LocalPrefactor, call: Send
) -> None:
    """Register answers a `pending` instance with every contract field, UTC timestamps."""
    instance = await register(call)
    assert instance.keys() >= INSTANCE_KEYS
    assert (
        instance["type"],
        instance["status"],
        instance["purpose"],
    ) == ("agent_instance", "pending", "live")
    assert ISO_UTC.match(instance["inserted_at"])
    assert ISO_UTC.match(instance["updated_at"])
    assert instance["started_at"] is None
    assert instance["finished_at"] is None
    counts = {"total": 0, "active": 0, "complete": 0, "failed": 0, "cancelled": 0, "finished": 0}
    assert counts == instance["span_counts"]
    assert [instance] == prefactor_api.instances()
    assert instance == prefactor_api.instance(instance["id"])


async def test_register_without_agent_or_environment_uses_the_token_defaults(
    call: Send,
) -> None:
    """Without `agent_id`/`environment_id` the instance gets defaults (a deployment token)."""
    instance = await register(call)
    assert instance["agent_id"]
    assert instance["environment_id"]


async def test_register_keeps_the_given_fields(call: Send) -> None:
    """`id`, `agent_id`, `environment_id`, `purpose` and `external_identifier` are kept."""
    instance = await register(
        call,
        id="run-1",
        agent_id="support-bot",
        environment_id="staging",
        purpose="smoke_test",
        external_identifier="ticket-9",
        update_current_version=False,
    )
    expected = ("run-1", "support-bot", "staging", "smoke_test", "ticket-9")
    assert expected == (
        instance["id"],
        instance["agent_id"],
        instance["environment_id"],
        instance["purpose"],
        instance["external_identifier"],
    )


async def test_register_with_an_existing_id_is_a_conflict(
    call: Send,
) -> None:
    """Registering an `id` that already exists answers 409."""
    await register(call, id="run-1")
    body = {"agent_version": VERSION, "agent_schema_version": SCHEMA, "id": "run-1"}
    answer = await call("POST", "/api/v1/agent_instance/register", body)
    assert_error(answer, 409, "conflict")


async def test_external_identifier_is_unique_per_agent(
    call: Send,
) -> None:
    """A second instance with the same agent and `external_identifier` is a 422."""
    await register(call, agent_id="a", external_identifier="x")
    await register(call, agent_id="b", external_identifier="x")
    body = {"agent_version": VERSION, "agent_schema_version": SCHEMA}
    answer = await call(
        "POST",
        "/api/v1/agent_instance/register",
        {**body, "agent_id": "a", "external_identifier": "x"},
    )
    assert_error(answer, 422, "validation_error")
    assert answer.body["errors"] == {"external_identifier": ["has already been taken"]}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"agent_version": None}, "agent_version"),
        ({"agent_version": "1.0"}, "agent_version"),
        ({"agent_version": {"name": "Bot"}}, "agent_version.external_identifier"),
        ({"agent_version": {"external_identifier": "1", "name": 3}}, "agent_version.name"),
        (
            {"agent_version": {**VERSION, "runtime_environment": {"agent_sdk": "x"}}},
            "agent_version.runtime_environment.agent_sdk",
        ),
        ({"agent_schema_version": {}}, "agent_schema_version.external_identifier"),
        (
            {"agent_schema_version": {"external_identifier": "s", "span_type_schemas": [{}]}},
            "agent_schema_version.span_type_schemas.0.name",
        ),
        (
            {
                "agent_schema_version": {
                    "external_identifier": "s",
                    "span_type_schemas": [{"name": "a", "params_schema": []}],
                }
            },
            "agent_schema_version.span_type_schemas.0.params_schema",
        ),
        ({"purpose": "production"}, "purpose"),
        ({"agent_id": 7}, "agent_id"),
        ({"id": ""}, "id"),
        ({"update_current_version": "yes"}, "update_current_version"),
        ({"idempotency_key": "k" * 65}, "idempotency_key"),
        ({"agent_schema": {}}, "agent_schema"),
    ],
)
async def test_register_validates_its_body(
    prefactor_api: LocalPrefactor,
    call: Send,
    change: dict[str, Any],
    field: str,
) -> None:
    """A bad register body is a 422 whose `errors` names the field path; nothing is created."""
    body = {"agent_version": VERSION, "agent_schema_version": SCHEMA, **change}
    answer = await call("POST", "/api/v1/agent_instance/register", body)
    assert_error(answer, 422, "validation_error")
    assert field in answer.body["errors"]
    assert all(isinstance(m, str) for m in answer.body["errors"][field])
    assert prefactor_api.instances() == []


async def test_versions_are_told_apart_by_external_identifier(
    prefactor_api: LocalPrefactor, call: Send
) -> None:
    """Same external identifiers reuse the agent and schema version; a new one adds a version."""
    first = await register(call)
    second = await register(call)
    other_schema = {"external_identifier": "schema-2"}
    third = await register(call, agent_schema_version=other_schema)
    fourth = await register(call, agent_version={"name": "Bot", "external_identifier": "2.0"})
    assert first["agent_version_id"] == second["agent_version_id"] == third["agent_version_id"]
    assert fourth["agent_version_id"] != first["agent_version_id"]
    assert first["agent_deployment_id"] == fourth["agent_deployment_id"]
    assert [s["external_identifier"] for s in prefactor_api.schema_versions()] == [
        "schema-1",
        "schema-2",
    ]
    assert [v["external_identifier"] for v in prefactor_api.agent_versions()] == ["1.4.0", "2.0"]


# start, finish, get, record_quality


@pytest.mark.parametrize("body", [None, {}, {"timestamp": None}])
async def test_start_moves_pending_to_active(call: Send, body: dict[str, Any] | None) -> None:
    """Start on a `pending` instance answers it `active` with `started_at` (no body needed)."""
    instance_id = (await register(call))["id"]
    answer = await call("POST", f"/api/v1/agent_instance/{instance_id}/start", body)
    assert answer.status == 200
    assert answer.body["details"]["status"] == "active"
    assert ISO_UTC.match(answer.body["details"]["started_at"])


async def test_start_uses_the_given_timestamp(call: Send) -> None:
    """A `timestamp` with an offset becomes `started_at`, rendered in UTC."""
    instance_id = (await register(call))["id"]
    body = {"timestamp": "2025-01-02T03:04:05+02:00"}
    answer = await call("POST", f"/api/v1/agent_instance/{instance_id}/start", body)
    assert answer.body["details"]["started_at"] == "2025-01-02T01:04:05.000000Z"


@pytest.mark.parametrize("timestamp", ["2025-01-02T03:04:05", "yesterday", 17])
async def test_start_refuses_a_bad_timestamp(call: Send, timestamp: Any) -> None:
    """A naive, unparsable or non-string `timestamp` is a 422 on `timestamp`."""
    instance_id = (await register(call))["id"]
    body = {"timestamp": timestamp}
    answer = await call("POST", f"/api/v1/agent_instance/{instance_id}/start", body)
    assert_error(answer, 422, "validation_error")
    assert list(answer.body["errors"]) == ["timestamp"]


async def test_start_twice_is_an_invalid_action(call: Send) -> None:
    """Start on an `active` instance answers 409 `invalid_action`."""
    instance_id = await started(call)
    answer = await call("POST", f"/api/v1/agent_instance/{instance_id}/start", {})
    assert_error(answer, 409, "invalid_action")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, "complete"),
        ({"status": None}, "complete"),
        ({"status": "complete"}, "complete"),
        ({"status": "failed"}, "failed"),
        ({"status": "cancelled"}, "cancelled"),
    ],
)
async def test_finish_moves_active_to_the_status(
    call: Send, body: dict[str, Any], status: str
) -> None:
    """Finish on an `active` instance sets the status (default `complete`) and `finished_at`."""
    instance_id = await started(call)
    answer = await call("POST", f"/api/v1/agent_instance/{instance_id}/finish", body)
    assert (200, status) == (answer.status, answer.body["details"]["status"])
    assert ISO_UTC.match(answer.body["details"]["finished_at"])


async def test_finish_a_pending_instance(call: Send) -> None:
    """A `pending` instance may be finished without being started."""
    instance_id = (await register(call))["id"]
    body = {"status": "cancelled"}
    answer = await call("POST", f"/api/v1/agent_instance/{instance_id}/finish", body)
    assert (answer.status, answer.body["details"]["status"]) == (200, "cancelled")
    assert answer.body["details"]["started_at"] is None


@pytest.mark.parametrize("status", ["terminated", "active", "pending", "done"])
async def test_finish_refuses_other_statuses(call: Send, status: str) -> None:
    """A finish status outside complete|failed|cancelled is a 422 on `status`."""
    instance_id = await started(call)
    body = {"status": status}
    answer = await call("POST", f"/api/v1/agent_instance/{instance_id}/finish", body)
    assert_error(answer, 422, "validation_error")
    assert list(answer.body["errors"]) == ["status"]


@pytest.mark.parametrize("action", ["start", "finish"])
async def test_start_or_finish_on_a_finished_instance_is_refused(call: Send, action: str) -> None:
    """Start and finish on a terminal instance answer 409 and change nothing."""
    instance_id = await started(call)
    await call("POST", f"/api/v1/agent_instance/{instance_id}/finish", {"status": "failed"})
    answer = await call("POST", f"/api/v1/agent_instance/{instance_id}/{action}", {})
    assert_error(answer, 409, "invalid_action")
    got = await call("GET", f"/api/v1/agent_instance/{instance_id}")
    assert got.body["details"]["status"] == "failed"


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("POST", "/start"), ("POST", "/finish"), ("GET", ""), ("POST", "/record_quality")],
)
async def test_unknown_instance_is_a_404(call: Send, method: str, suffix: str) -> None:
    """Every instance route answers 404 `not_found` for an unknown id."""
    body = {"name": "q"} if suffix == "/record_quality" else None
    answer = await call(method, f"/api/v1/agent_instance/missing{suffix}", body)
    assert_error(answer, 404, "not_found")


async def test_get_answers_the_instance(call: Send) -> None:
    """GET answers the instance as register rendered it, in the success envelope."""
    instance = await register(call)
    answer = await call("GET", f"/api/v1/agent_instance/{instance['id']}")
    assert {"status": "success", "details": instance} == answer.body


async def test_record_quality_sets_and_removes_payloads(
    call: Send,
) -> None:
    """record_quality stores a named payload; a null payload removes that name only."""
    instance_id = await started(call)
    path = f"/api/v1/agent_instance/{instance_id}/record_quality"
    await call("POST", path, {"name": "accuracy", "payload": {"score": 0.9}})
    answer = await call("POST", path, {"name": "tone", "payload": {"ok": True}})
    assert (answer.body["details"]["quality_payloads"]) == {
        "accuracy": {"score": 0.9},
        "tone": {"ok": True},
    }
    answer = await call("POST", path, {"name": "accuracy", "payload": None})
    assert answer.body["details"]["quality_payloads"] == {"tone": {"ok": True}}
    answer = await call("POST", path, {"payload": {}})
    assert_error(answer, 422, "validation_error")
    assert list(answer.body["errors"]) == ["name"]


@pytest.mark.parametrize("instance_id", ["a/b", "..", "a?b#c", "50%", "with space", "ü"])
async def test_ids_travel_as_one_percent_encoded_segment(
    prefactor_api: LocalPrefactor, call: Send, instance_id: str
) -> None:
    """An id with reserved characters works when percent-encoded as one path segment."""
    from urllib.parse import quote  # noqa: PLC0415

    await register(call, id=instance_id)
    segment = quote(instance_id, safe="")
    answer = await call("POST", f"/api/v1/agent_instance/{segment}/start", {})
    assert (200, instance_id) == (answer.status, answer.body["details"]["id"])
    assert f"/api/v1/agent_instance/{segment}/start" == prefactor_api.requests[-1].path


# idempotency


async def test_register_replays_the_first_answer_for_a_repeated_key(
    prefactor_api: LocalPrefactor, call: Send
) -> None:
    """A register repeated with the same key answers the first response and creates nothing."""
    first = await register(call, idempotency_key="reg-1")
    again = await register(call, idempotency_key="reg-1")
    assert first == again
    assert len(prefactor_api.instances()) == 1
    assert [r.replayed for r in prefactor_api.requests] == [False, True]


async def test_start_replay_answers_the_first_response_not_a_conflict(
    call: Send,
) -> None:
    """A retried start (same key) answers the first 200 even though the instance is active."""
    instance_id = (await register(call))["id"]
    path = f"/api/v1/agent_instance/{instance_id}/start"
    first = await call("POST", path, {"idempotency_key": "start-1"})
    again = await call("POST", path, {"idempotency_key": "start-1"})
    assert (first.status, first.body) == (again.status, again.body)
    other = await call("POST", path, {"idempotency_key": "start-2"})
    assert_error(other, 409, "invalid_action")


async def test_finish_replay_keeps_the_first_status(
    call: Send,
) -> None:
    """A repeated finish with the same key changes nothing, even with another status."""
    instance_id = await started(call)
    path = f"/api/v1/agent_instance/{instance_id}/finish"
    first = await call("POST", path, {"status": "failed", "idempotency_key": "fin"})
    again = await call("POST", path, {"status": "complete", "idempotency_key": "fin"})
    assert first.body == again.body
    got = await call("GET", f"/api/v1/agent_instance/{instance_id}")
    assert got.body["details"]["status"] == "failed"


async def test_an_error_answer_is_replayed_too(call: Send) -> None:
    """The first answer is replayed even when it was an error."""
    instance_id = await started(call)
    path = f"/api/v1/agent_instance/{instance_id}/start"
    first = await call("POST", path, {"idempotency_key": "again"})
    again = await call("POST", path, {"idempotency_key": "again"})
    assert_error(first, 409, "invalid_action")
    assert (first.status, first.body) == (again.status, again.body)


async def test_a_key_is_scoped_to_method_and_path(
    prefactor_api: LocalPrefactor, call: Send
) -> None:
    """The same key on two different instances' start applies both."""
    first = (await register(call))["id"]
    second = (await register(call))["id"]
    for instance_id in (first, second):
        body = {"idempotency_key": "shared-key"}
        answer = await call("POST", f"/api/v1/agent_instance/{instance_id}/start", body)
        assert (200, instance_id) == (answer.status, answer.body["details"]["id"])
    assert [i["status"] for i in prefactor_api.instances()] == ["active", "active"]


@pytest.mark.parametrize("key", ["", "k" * 65, 12])
async def test_a_bad_key_is_refused(call: Send, key: Any) -> None:
    """An empty, over-long (> 64) or non-string key is a 422 on `idempotency_key`."""
    instance_id = (await register(call))["id"]
    body = {"idempotency_key": key}
    answer = await call("POST", f"/api/v1/agent_instance/{instance_id}/start", body)
    assert_error(answer, 422, "validation_error")
    assert list(answer.body["errors"]) == ["idempotency_key"]


async def test_a_64_character_key_is_accepted(call: Send) -> None:
    """A key of exactly 64 characters is accepted."""
    instance = await register(call, idempotency_key="k" * 64)
    assert instance["status"] == "pending"


# inspection and lifecycle of the server


async def test_requests_are_logged_in_arrival_order(
    prefactor_api: LocalPrefactor, call: Send
) -> None:
    """The log keeps method, raw path, route name, decoded body, headers and status."""
    instance_id = (await register(call, idempotency_key="reg-1"))["id"]
    await call("GET", f"/api/v1/agent_instance/{instance_id}", headers={"X-Prefactor-SDK": "t@1"})
    await call("GET", "/api/v1/elsewhere")
    register_request, get_request, unknown = prefactor_api.requests
    assert (
        register_request.method,
        register_request.path,
        register_request.route,
        register_request.status,
    ) == ("POST", "/api/v1/agent_instance/register", "agent_instances.register", 200)
    assert register_request.body["idempotency_key"] == "reg-1"
    assert (
        get_request.route,
        get_request.body,
        get_request.headers["x-prefactor-sdk"],
    ) == ("agent_instances.get", None, "t@1")
    assert f"Bearer {prefactor_api.token}" == get_request.headers["Authorization"]
    assert (unknown.route, unknown.status) == (None, 404)


async def test_inspection_raises_key_error_for_unknown_ids(prefactor_api: LocalPrefactor) -> None:
    """`instance()`, `spans()` and `terminate()` raise `KeyError` for an unknown id."""
    with pytest.raises(KeyError):
        prefactor_api.instance("missing")
    with pytest.raises(KeyError):
        prefactor_api.spans("missing")
    with pytest.raises(KeyError):
        prefactor_api.terminate("missing")


async def test_reset_forgets_everything(prefactor_api: LocalPrefactor, call: Send) -> None:
    """`reset()` clears instances, versions, keys, the log and the fault plan."""
    await register(call, idempotency_key="reg-1")
    prefactor_api.faults.fail_next(5)
    await call("GET", "/api/v1/ping")
    prefactor_api.reset()
    assert (
        prefactor_api.instances(),
        prefactor_api.schema_versions(),
        prefactor_api.requests,
        prefactor_api.faults.injected.total(),
    ) == ([], [], [], 0)
    assert (await register(call, idempotency_key="reg-1"))["status"] == "pending"
    assert len(prefactor_api.instances()) == 1


async def test_start_and_stop_without_a_context_manager() -> None:
    """`start()`/`stop()` serve and release the port; `url` is refused when stopped."""
    api = LocalPrefactor(token="fixed-token")
    with pytest.raises(RuntimeError):
        _ = api.url
    await api.start()
    try:
        with pytest.raises(RuntimeError):
            await api.start()
        assert re.match(r"^http://127\.0\.0\.1:\d+$", api.url)
        assert api.token == "fixed-token"
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{api.url}/api/v1/ping", headers={"Authorization": "Bearer fixed-token"}
            ) as r,
        ):
            assert r.status == 200
    finally:
        await api.stop()
    await api.stop()
    with pytest.raises(RuntimeError):
        _ = api.url


async def test_tokens_are_random_by_default() -> None:
    """Without a token, each local API makes its own random one."""
    assert LocalPrefactor().token != LocalPrefactor().token


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com"])  # noqa: S104
def test_only_loopback_hosts_are_allowed(host: str) -> None:
    """A host that is not a loopback address is refused."""
    with pytest.raises(ValueError, match="loopback"):
        LocalPrefactor(host=host)


def test_an_empty_token_is_refused() -> None:
    """An empty token is refused."""
    with pytest.raises(ValueError, match="token"):
        LocalPrefactor(token="")


async def test_the_request_log_can_be_turned_off() -> None:
    """With `record_requests=False` requests are served but not logged."""
    async with (
        LocalPrefactor(record_requests=False) as api,
        aiohttp.ClientSession() as http,
        http.get(f"{api.url}/api/v1/ping", headers={"Authorization": f"Bearer {api.token}"}) as r,
    ):
        assert r.status == 200
        assert api.requests == []
