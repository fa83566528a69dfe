"""The timeline's routes: sign-in by token link and cookie, the JSON behind the page, terminate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

import aioprefactor
from aioprefactor import span
from aioprefactor.testing import LocalPrefactor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

VERSION = {"name": "Timeline bot", "external_identifier": "3.1.0"}
TOKEN = "timeline-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def api() -> AsyncIterator[LocalPrefactor]:
    """A local API with a known token."""
    async with LocalPrefactor(token=TOKEN) as local:
        yield local


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A session that keeps cookies for 127.0.0.1 and does not follow redirects by itself."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def record(api: LocalPrefactor, name: str, *, fail: bool = False) -> str:
    """Record a run with a nested span; a failing one raises in the inner span."""
    async with aioprefactor.Client(api_url=api.url, api_token=api.token) as client:
        try:
            async with (
                client.agent_instance(agent_id=name, agent_version=VERSION) as run,
                span("agent:outer", payload={"n": 1}),
                span("agent:inner", payload={"n": 2}) as inner,
            ):
                if fail:
                    inner.set_result({"error": {"type": "KeyError", "message": "k"}})
                    inner.fail()
                else:
                    inner.set_result({"ok": True})
        finally:
            await client.flush()
    assert run.id is not None
    return run.id


async def get(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    """GET and return the status and the decoded JSON body."""
    async with http.get(url, allow_redirects=False, **kwargs) as response:
        return response.status, await response.json(content_type=None)


@pytest.mark.parametrize("path", ["/_local/instances", "/_local/instances/x", "/_local/requests"])
async def test_json_routes_need_the_token(
    api: LocalPrefactor, http: aiohttp.ClientSession, path: str
) -> None:
    """Without the token (or with a wrong one, or in the query) the JSON routes answer 401."""
    for kwargs in ({}, {"headers": {"Authorization": "Bearer nope"}}, {"params": {"token": TOKEN}}):
        status, body = await get(http, api.url + path, **kwargs)
        assert 401 == status
        assert "unauthorized" == body["code"]


async def test_the_token_link_sets_a_strict_httponly_cookie_and_redirects(
    api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """`/?token=` sets the session cookie and redirects to the page without the token."""
    async with http.get(api.timeline_url, allow_redirects=False) as response:
        assert 303 == response.status
        assert "/" == response.headers["Location"]
        cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert TOKEN not in cookie
    async with http.get(api.url + "/") as response:
        assert 200 == response.status
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert "no-referrer" == response.headers["Referrer-Policy"]
    status, _ = await get(http, api.url + "/_local/instances")
    assert 200 == status


async def test_the_page_without_a_session_asks_for_the_token_link(
    api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """The page answers 401 with an explanation when not signed in or with a wrong token."""
    for url in (api.url + "/", api.url + "/?token=wrong", api.url + "/instances/x"):
        async with http.get(url, allow_redirects=False) as response:
            assert 401 == response.status
            assert "?token=" in await response.text()


async def test_instances_are_listed_newest_first_with_a_limit(
    api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """The list holds a summary of each run, newest first, and `limit` cuts it."""
    first = await record(api, "bot-1")
    second = await record(api, "bot-2", fail=True)
    status, body = await get(http, api.url + "/_local/instances", headers=BEARER)
    assert 200 == status
    assert 2 == body["total"]
    assert [second, first] == [i["id"] for i in body["instances"]]
    newest = body["instances"][0]
    assert ("bot-2", "complete", 2) == (newest["agent_id"], newest["status"], newest["span_count"])
    _, limited = await get(http, api.url + "/_local/instances?limit=1", headers=BEARER)
    assert [second] == [i["id"] for i in limited["instances"]]
    status, _ = await get(http, api.url + "/_local/instances?limit=zero", headers=BEARER)
    assert 422 == status


async def test_the_version_changes_only_when_something_was_saved(
    api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """The page polls `version`: reads leave it alone, a new run moves it."""
    _, before = await get(http, api.url + "/_local/instances", headers=BEARER)
    _, again = await get(http, api.url + "/_local/instances", headers=BEARER)
    assert before["version"] == again["version"]
    await record(api, "bot")
    _, after = await get(http, api.url + "/_local/instances", headers=BEARER)
    assert before["version"] != after["version"]


async def test_an_instance_comes_with_its_spans_and_version(
    api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """The instance route gives the instance, its agent version and its spans, parents linked."""
    run_id = await record(api, "bot")
    status, body = await get(http, f"{api.url}/_local/instances/{run_id}", headers=BEARER)
    assert 200 == status
    assert run_id == body["instance"]["id"]
    assert "Timeline bot" == body["agent_version"]["name"]
    outer, inner = body["spans"]
    assert ("agent:outer", None) == (outer["schema_name"], outer["parent_span_id"])
    assert ("agent:inner", outer["id"]) == (inner["schema_name"], inner["parent_span_id"])
    assert body["ending"] is None
    status, _ = await get(http, f"{api.url}/_local/instances/missing", headers=BEARER)
    assert 404 == status


async def test_a_failed_run_says_which_span_failed_and_why(
    api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """A failed run's `ending` names its first failed span and that span's error."""
    async with aioprefactor.Client(api_url=api.url, api_token=api.token) as client:
        scope = client.agent_instance(agent_id="bot", agent_version=VERSION)

        async def agent() -> None:
            async with scope, span("agent:tool") as tool:
                handles.append(tool)
                raise ValueError("bad input")  # recorded as the span's error

        handles: list[aioprefactor.SpanRun] = []
        with pytest.raises(ValueError, match="bad input"):
            await agent()
        await client.flush()
    (tool,) = handles
    run = tool.run
    assert run is not None
    _, body = await get(http, f"{api.url}/_local/instances/{run.id}", headers=BEARER)
    assert "failed" == body["instance"]["status"]
    expected = {"text": "Failed in agent:tool: builtins.ValueError: bad input", "span_id": tool.id}
    assert expected == body["ending"]


async def test_terminate_route_terminates_a_live_run_once(
    api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """POST terminate stops a live run with the reason; a second time is 409, unknown is 404."""
    url = f"{api.url}/api/v1/agent_instance/register"
    body = {"agent_version": VERSION, "agent_schema_version": {"external_identifier": "s"}}
    async with http.post(url, json=body, headers=BEARER) as response:
        run_id = (await response.json())["details"]["id"]
    terminate = f"{api.url}/_local/instances/{run_id}/terminate"
    reason = {"reason": "runaway loop"}
    async with http.post(terminate, json=reason, headers=BEARER) as response:
        assert 200 == response.status
        assert "terminated" == (await response.json())["details"]["status"]
    assert ("terminated", "runaway loop") == (
        api.instance(run_id)["status"],
        api.instance(run_id)["termination_reason"],
    )
    _, detail = await get(http, f"{api.url}/_local/instances/{run_id}", headers=BEARER)
    assert "Terminated: runaway loop" == detail["ending"]["text"]
    async with http.post(terminate, json=reason, headers=BEARER) as response:
        assert 409 == response.status
    missing = f"{api.url}/_local/instances/missing/terminate"
    async with http.post(missing, json=reason, headers=BEARER) as response:
        assert 404 == response.status


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": {"reason": "x"}}, 415),  # a form, as another site could send
        ({"json": {"reason": ""}}, 422),
        ({"json": {"reason": 3}}, 422),
        ({"json": {}, "headers": {}}, 401),
    ],
    ids=["form", "empty-reason", "number", "no-token"],
)
async def test_terminate_refuses_bad_requests(
    api: LocalPrefactor, http: aiohttp.ClientSession, kwargs: dict[str, Any], expected: int
) -> None:
    """Terminate wants the token, a JSON body and a text reason; the run stays as it was."""
    url = f"{api.url}/api/v1/agent_instance/register"
    body = {"agent_version": VERSION, "agent_schema_version": {"external_identifier": "s"}}
    async with http.post(url, json=body, headers=BEARER) as response:
        run_id = (await response.json())["details"]["id"]
    kwargs = {"headers": BEARER, **kwargs}
    terminate = f"{api.url}/_local/instances/{run_id}/terminate"
    async with http.post(terminate, **kwargs) as response:
        assert expected == response.status
    assert "pending" == api.instance(run_id)["status"]


async def test_the_request_log_hides_credentials_and_leaves_out_the_page(
    api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """`/_local/requests` lists API requests only, without Authorization or Cookie headers."""
    await record(api, "bot")
    await get(http, api.url + "/_local/instances", headers=BEARER)
    status, body = await get(http, api.url + "/_local/requests", headers=BEARER)
    assert 200 == status
    entries = body["requests"]
    assert entries
    assert all(e["path"].startswith("/api/v1/") for e in entries)
    assert all("authorization" not in {h.lower() for h in e["headers"]} for e in entries)
    assert TOKEN not in str(entries)
    _, last = await get(http, api.url + "/_local/requests?limit=1", headers=BEARER)
    assert [entries[-1]] == last["requests"]


async def test_static_files_are_served_and_others_are_not(
    api: LocalPrefactor, http: aiohttp.ClientSession
) -> None:
    """The script and stylesheet are served from the package; any other name is 404."""
    for name, kind in (("timeline.js", "text/javascript"), ("timeline.css", "text/css")):
        async with http.get(f"{api.url}/_local/static/{name}", headers=BEARER) as response:
            assert (200, kind) == (response.status, response.content_type)
            assert "innerHTML" not in await response.text()
    for name in ("timeline.html", "..%2F_server.py", "other.js"):
        async with http.get(f"{api.url}/_local/static/{name}", headers=BEARER) as response:
            assert 404 == response.status


def test_the_request_log_limit_must_be_positive() -> None:
    """`max_logged_requests` below 1 is a `ValueError`."""
    with pytest.raises(ValueError, match="max_logged_requests"):
        LocalPrefactor(max_logged_requests=0)


async def test_a_bounded_request_log_keeps_the_latest_requests(
    http: aiohttp.ClientSession,
) -> None:
    """With `max_logged_requests`, the log stays bounded and keeps the newest entries."""
    async with LocalPrefactor(token=TOKEN, max_logged_requests=5) as api:
        for n in range(30):
            async with http.get(f"{api.url}/api/v1/ping?n={n}", headers=BEARER):
                pass
        assert 5 <= len(api.requests) <= 10
        assert "/api/v1/ping" == api.requests[-1].path
