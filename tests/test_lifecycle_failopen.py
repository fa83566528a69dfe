from __future__ import annotations

import asyncio
import logging
import math
import socket
from typing import TYPE_CHECKING, Any

import pytest

import aioprefactor
from aioprefactor import Client, PrefactorError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from aioprefactor import InstanceRun
    from aioprefactor.testing import LocalPrefactor


pytestmark = pytest.mark.inline
VERSION: dict[str, Any] = {"name": "Fail-open agent", "external_identifier": "1.0.0"}
ENTER = 0.3  # the enter budget of these tests, in seconds
DOWN = 10_000  # failures in a row: the API stays down past every call's deadline
# Generous slack for a loaded machine: the bound checked is the budget, not speed.
SLACK = 3.0


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Client]]:
    """Build clients with quick retries; every one is closed after the test."""
    made: list[Client] = []

    def make(url: str, token: str, **options: Any) -> Client:
        # Runs retry until the call's deadline: keep it short, so "down" means down.
        settings: dict[str, Any] = {
            "max_retries": 1,
            "backoff_initial": 0.01,
            "backoff_max": 0.02,
            "total_timeout": 0.5,
        }
        client = Client(api_url=url, api_token=token, **{**settings, **options})
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture
def closed_port_url() -> str:
    """The URL of a loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("aioprefactor")
        and r.levelno >= logging.WARNING
        and not r.name.startswith("aioprefactor.testing")
    ]


def span_requests(api: LocalPrefactor) -> list[Any]:
    return [r for r in api.requests if r.route is not None and r.route.startswith("agent_spans")]


async def run_block(scope: aioprefactor.InstanceScope) -> tuple[InstanceRun, list[str]]:
    """Enter ``scope``, open a span inside, and report the run and what the block saw."""
    seen: list[str] = []
    async with scope as run:
        seen.append("ran")
        async with aioprefactor.span("agent:step", {"k": 1}) as s:
            assert aioprefactor.current_span() is s
            s.set_result({"ok": True})
        assert s.id is None
        assert s.telemetry_error is None
    return run, seen


async def test_unreachable_api_fails_open(
    make_client: Callable[..., Client], closed_port_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The block runs: one warning, telemetry_error set, spans are no-ops, no error raised."""
    client = make_client(closed_port_url, "t")
    loop = asyncio.get_running_loop()
    started = loop.time()
    scope = client.agent_instance(agent_id="a", agent_version=VERSION, enter_timeout=ENTER)
    run, seen = await run_block(scope)
    assert loop.time() - started < ENTER + SLACK
    assert seen == ["ran"]
    assert isinstance(run.telemetry_error, PrefactorError)
    assert run.id is None
    assert not run.recording
    assert len(warnings_of(caplog)) == 1


@pytest.mark.parametrize(
    ("route", "fault"),
    [
        (None, "500"),
        ("agent_instances.register", "500"),
        ("agent_instances.start", "500"),
        (None, "non-json"),
    ],
)
async def test_500_api_fails_open(
    prefactor_api: LocalPrefactor,
    make_client: Callable[..., Client],
    caplog: pytest.LogCaptureFixture,
    route: str | None,
    fault: str,
) -> None:
    """The block runs: one warning, telemetry_error set, no span request, nothing left open."""
    if fault == "500":
        prefactor_api.faults.fail_next(DOWN, 500, route=route)
    else:
        prefactor_api.faults.non_json(DOWN, route=route)
    client = make_client(prefactor_api.url, prefactor_api.token)
    scope = client.agent_instance(agent_id="a", agent_version=VERSION, enter_timeout=ENTER)
    run, seen = await run_block(scope)
    await client.flush()
    assert seen == ["ran"]
    assert isinstance(run.telemetry_error, PrefactorError)
    assert span_requests(prefactor_api) == []
    assert len(warnings_of(caplog)) == 1
    live = [i for i in prefactor_api.instances() if i["status"] in {"pending", "active"}]
    assert live == []


async def test_slow_api_lets_the_block_run_within_the_enter_budget(
    prefactor_api: LocalPrefactor,
    make_client: Callable[..., Client],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The block starts after the enter budget; the late run is still finished once."""
    prefactor_api.faults.latency(1.0, route="agent_instances.register", n=1)
    client = make_client(
        prefactor_api.url, prefactor_api.token, request_timeout=5.0, total_timeout=5.0
    )
    scope = client.agent_instance(agent_id="a", agent_version=VERSION, enter_timeout=ENTER)
    async with scope as run:
        # The block runs before the registration lands (state, not a stopwatch).
        registered_on_entry = prefactor_api.instances()
        assert registered_on_entry == []
        assert isinstance(run.telemetry_error, PrefactorError)
    assert len(warnings_of(caplog)) == 1
    await client.flush()
    [instance] = prefactor_api.instances()
    assert instance["status"] == "complete"
    finishes = [r for r in prefactor_api.requests if r.route == "agent_instances.finish"]
    assert len(finishes) == 1


async def test_run_whose_start_was_refused_is_not_recording(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """False: run.recording in a run that failed open after its start was refused."""
    prefactor_api.faults.fail_next(DOWN, 500, route="agent_instances.start")
    client = make_client(prefactor_api.url, prefactor_api.token)
    scope = client.agent_instance(agent_id="a", agent_version=VERSION, enter_timeout=ENTER)
    async with scope as run:
        assert run.telemetry_error is not None
        assert not run.recording


@pytest.mark.parametrize("where", ["unreachable", "500", "500-on-start", "slow"])
async def test_strict_raises_on_enter_and_the_block_does_not_run(
    prefactor_api: LocalPrefactor,
    make_client: Callable[..., Client],
    closed_port_url: str,
    where: str,
) -> None:
    """PrefactorError on enter in strict mode; the block never runs; nothing is left open."""
    url = closed_port_url if where == "unreachable" else prefactor_api.url
    if where == "500":
        prefactor_api.faults.fail_next(DOWN, 500)
    elif where == "500-on-start":
        prefactor_api.faults.fail_next(DOWN, 500, route="agent_instances.start")
    elif where == "slow":
        prefactor_api.faults.latency(1.0, route="agent_instances.register", n=1)
    client = make_client(url, prefactor_api.token, request_timeout=5.0, total_timeout=5.0)
    scope = client.agent_instance(
        agent_id="a", agent_version=VERSION, strict=True, enter_timeout=ENTER
    )
    ran = False

    async def agent() -> None:
        nonlocal ran
        async with scope:
            ran = True

    with pytest.raises(PrefactorError):
        await agent()
    assert not ran
    assert aioprefactor.current_instance() is None
    prefactor_api.faults.clear()
    await client.flush()
    assert [i["status"] for i in prefactor_api.instances()] in ([], ["cancelled"])


@pytest.mark.parametrize("strict", [False, True])
async def test_failed_finish_after_a_clean_block(
    prefactor_api: LocalPrefactor,
    make_client: Callable[..., Client],
    caplog: pytest.LogCaptureFixture,
    strict: bool,
) -> None:
    """PrefactorError in strict mode; fail-open: a warning and telemetry_error, no raise."""
    prefactor_api.faults.fail_next(DOWN, 500, route="agent_instances.finish")
    client = make_client(prefactor_api.url, prefactor_api.token)
    scope = client.agent_instance(agent_id="a", agent_version=VERSION, strict=strict)
    runs: list[InstanceRun] = []

    async def agent() -> None:
        async with scope as run:
            runs.append(run)

    if strict:
        with pytest.raises(PrefactorError):
            await agent()
    else:
        await agent()
        assert len(warnings_of(caplog)) == 1
    assert isinstance(runs[0].telemetry_error, PrefactorError)


@pytest.mark.parametrize("strict", [False, True])
async def test_failed_finish_never_hides_the_block_exception(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client], strict: bool
) -> None:
    """The block's exception, not the finish's error, reaches the caller."""
    prefactor_api.faults.fail_next(DOWN, 500, route="agent_instances.finish")
    client = make_client(prefactor_api.url, prefactor_api.token)
    error = ValueError("the block's own")

    async def agent() -> None:
        async with client.agent_instance(agent_id="a", agent_version=VERSION, strict=strict):
            raise error

    with pytest.raises(ValueError, match="the block's own") as caught:
        await agent()
    assert caught.value is error


LOCAL_MISTAKES: list[tuple[str, dict[str, Any], type[Exception]]] = [
    ("no-version", {"agent_version": None}, TypeError),
    ("version-not-a-mapping", {"agent_version": 5}, TypeError),
    ("version-without-name", {"agent_version": {"external_identifier": "1"}}, ValueError),
    ("bad-purpose", {"purpose": "production"}, ValueError),
    ("agent-id-not-str", {"agent_id": 7}, TypeError),
    ("zero-enter-budget", {"enter_timeout": 0}, ValueError),
    ("nan-finish-budget", {"finish_timeout": math.nan}, ValueError),
    (
        "schema-and-span-types",
        {"agent_schema_version": {"external_identifier": "s"}, "span_types": []},
        TypeError,
    ),
]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [(kwargs, error) for _, kwargs, error in LOCAL_MISTAKES],
    ids=[name for name, _, _ in LOCAL_MISTAKES],
)
async def test_local_mistakes_raise_before_anything_is_sent(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    kwargs: dict[str, Any],
    error: type[Exception],
    strict: bool,
) -> None:
    """TypeError or ValueError at once, in both modes, and no request."""
    arguments = {"agent_id": "a", "agent_version": VERSION, "strict": strict, **kwargs}
    with pytest.raises(error):
        prefactor_client.agent_instance(**arguments)
    assert prefactor_api.requests == []


SPAN_MISTAKES: list[tuple[str, Callable[[], object], type[Exception]]] = [
    ("empty-name", lambda: aioprefactor.span(""), ValueError),
    ("name-not-str", lambda: aioprefactor.span(3), TypeError),  # type: ignore[arg-type]
    ("parent-not-span", lambda: aioprefactor.span("s", parent="p"), TypeError),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(
    ("make", "error"),
    [(make, error) for _, make, error in SPAN_MISTAKES],
    ids=[name for name, _, _ in SPAN_MISTAKES],
)
async def test_span_mistakes_raise_inside_a_run(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    make: Callable[[], object],
    error: type[Exception],
    strict: bool,
) -> None:
    """TypeError or ValueError at once, in both modes, and no span request."""
    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION, strict=strict):
        with pytest.raises(error):
            make()
    assert span_requests(prefactor_api) == []


BAD_PAYLOADS: list[tuple[str, Any, type[Exception], Any]] = [
    ("not-object", [1], TypeError, {"value": [1]}),
    ("set", {"x": {2, 1}}, TypeError, {"x": [1, 2]}),
    ("nan", {"x": math.nan}, ValueError, {"x": "NaN"}),
]


@pytest.mark.parametrize(
    ("payload", "error", "recorded"),
    [(payload, error, recorded) for _, payload, error, recorded in BAD_PAYLOADS],
    ids=[name for name, _, _, _ in BAD_PAYLOADS],
)
async def test_payload_json_cannot_hold_is_converted_or_raised_when_strict(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    payload: Any,
    error: type[Exception],
    recorded: Any,
) -> None:
    """Converted and recorded in the default mode; raised at entry in a strict run."""
    scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
    async with scope as run, aioprefactor.span("s", payload) as converted:
        pass
    assert converted.id is not None
    assert recorded == prefactor_api.span(converted.id)["payload"]
    strict = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION, strict=True)
    before = len(span_requests(prefactor_api))
    async with strict:
        with pytest.raises(error):
            async with aioprefactor.span("s", payload):
                pass
    assert before == len(span_requests(prefactor_api))
    assert run.id is not None


@pytest.mark.parametrize("strict", [False, True])
async def test_bad_result_is_converted_or_raised_when_strict(
    prefactor_api: LocalPrefactor, prefactor_client: Client, strict: bool
) -> None:
    """Strict: TypeError for a result that is not a JSON object, ValueError for an infinity.

    Default: both recorded, converted; the last one set wins.
    """
    scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION, strict=strict)
    async with scope, aioprefactor.span("agent:step") as s:
        if strict:
            with pytest.raises(TypeError):
                s.set_result(["not", "an", "object"])  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="inf"):
                s.complete({"x": math.inf})
            s.complete({"x": 1})
        else:
            s.set_result(["not", "an", "object"])  # type: ignore[arg-type]
            assert {"value": ["not", "an", "object"]} == s.result
            s.complete({"x": math.inf})
    assert s.id is not None
    expected = {"x": 1} if strict else {"x": "Infinity"}
    assert expected == prefactor_api.span(s.id)["result_payload"]


async def test_span_outside_a_run_is_a_noop_with_one_warning(
    prefactor_api: LocalPrefactor, caplog: pytest.LogCaptureFixture
) -> None:
    """One warning for two spans outside any run; the block runs; nothing is sent."""
    ran = 0
    for _ in range(2):
        async with aioprefactor.span("agent:step", {"k": 1}) as s:
            ran += 1
            assert aioprefactor.current_span() is s
            assert s.run is None
        assert s.id is None
    assert ran == 2
    assert len(warnings_of(caplog)) == 1
    assert prefactor_api.requests == []


async def test_span_outside_a_run_strict_raises(prefactor_api: LocalPrefactor) -> None:
    """RuntimeError for a strict span outside any run; the block does not run."""
    ran = False

    async def step() -> None:
        nonlocal ran
        async with aioprefactor.span("agent:step", strict=True):
            ran = True

    with pytest.raises(RuntimeError, match="outside"):
        await step()
    assert not ran
    assert aioprefactor.current_span() is None
    assert prefactor_api.requests == []


@pytest.mark.parametrize("strict", [False, True])
async def test_terminated_run_records_it_and_sends_no_finish(
    prefactor_api: LocalPrefactor, prefactor_client: Client, strict: bool
) -> None:
    """run.terminated and its reason after a span answer carries the signal; no finish sent."""
    scope = prefactor_client.agent_instance(
        agent_id="a", agent_version=VERSION, strict=strict, on_terminate="record"
    )
    async with scope as run:
        assert run.id is not None
        prefactor_api.terminate(run.id, "budget exceeded")
        assert (run.terminated, run.termination_reason) == (False, None)
        async with aioprefactor.span("agent:step"):
            assert run.terminated
            assert run.termination_reason == "budget exceeded"
            assert not run.recording
        before = len(prefactor_api.requests)
        async with aioprefactor.span("agent:after") as after:
            pass
        assert after.id is None
        assert len(prefactor_api.requests) == before
    await prefactor_client.flush()
    assert run.terminated
    assert run.telemetry_error is None
    assert prefactor_api.instance(run.id)["status"] == "terminated"
    assert [r for r in prefactor_api.requests if r.route == "agent_instances.finish"] == []


async def test_span_open_when_the_run_is_terminated_is_still_finished(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """'complete' on the server for a span created before the terminate signal arrived."""
    scope = prefactor_client.agent_instance(
        agent_id="a", agent_version=VERSION, on_terminate="record"
    )
    async with scope as run:
        assert run.id is not None
        prefactor_api.terminate(run.id, "budget exceeded")
        async with aioprefactor.span("agent:step") as step:
            assert run.terminated
    await prefactor_client.flush()
    assert step.id is not None
    assert "complete" == prefactor_api.span(step.id)["status"]
    assert [] == [s for s in prefactor_api.spans(run.id) if s["status"] == "active"]


@pytest.mark.parametrize("strict", [False, True])
async def test_terminated_run_without_spans_learns_it_at_the_finish(
    prefactor_api: LocalPrefactor, prefactor_client: Client, strict: bool
) -> None:
    """run.terminated and its reason, no error, when the refused finish is the first sign."""
    scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION, strict=strict)
    async with scope as run:
        assert run.id is not None
        prefactor_api.terminate(run.id, "operator stop")
    assert run.terminated
    assert run.termination_reason == "operator stop"
    assert run.telemetry_error is None
    assert prefactor_api.instance(run.id)["status"] == "terminated"


async def test_terminate_signal_on_a_span_finish_stops_the_instance_finish(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """run.terminated once the span's finish answer carries the signal; no instance finish."""
    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        assert run.id is not None
        async with aioprefactor.span("agent:step"):
            prefactor_api.terminate(run.id, "policy")
    assert run.termination_reason == "policy"
    assert run.terminated
    assert [r for r in prefactor_api.requests if r.route == "agent_instances.finish"] == []


async def test_strict_span_finish_is_awaited_so_the_signal_is_known_after_the_block(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """run.termination_reason right after a strict span's block whose finish carried it."""
    scope = prefactor_client.agent_instance(
        agent_id="a", agent_version=VERSION, strict=True, on_terminate="record"
    )
    async with scope as run:
        assert run.id is not None
        async with aioprefactor.span("agent:step"):
            prefactor_api.terminate(run.id, "policy")
        assert run.termination_reason == "policy"
    assert run.terminated
    assert [r for r in prefactor_api.requests if r.route == "agent_instances.finish"] == []


async def test_span_not_created_fails_open_and_its_children_are_noops(
    prefactor_api: LocalPrefactor,
    make_client: Callable[..., Client],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The span's block runs: one warning, span.telemetry_error, no request for its child."""
    prefactor_api.faults.fail_next(DOWN, 500, route="agent_spans.create")
    client = make_client(prefactor_api.url, prefactor_api.token)
    ran = []
    scope = client.agent_instance(agent_id="a", agent_version=VERSION)
    async with scope as run, aioprefactor.span("agent:step") as step:
        ran.append("step")
        prefactor_api.faults.clear()
        async with aioprefactor.span("agent:child") as child:
            ran.append("child")
    assert ran == ["step", "child"]
    assert isinstance(step.telemetry_error, PrefactorError)
    assert (step.id, child.id) == (None, None)
    assert run.telemetry_error is None
    assert len(warnings_of(caplog)) == 1
    assert [r for r in span_requests(prefactor_api) if r.route == "agent_spans.finish"] == []
    assert prefactor_api.instance(run.id or "")["status"] == "complete"


async def test_strict_span_not_created_raises_and_its_block_does_not_run(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """PrefactorError from a strict span whose create fails; the run then finishes failed."""
    prefactor_api.faults.fail_next(DOWN, 500, route="agent_spans.create")
    client = make_client(prefactor_api.url, prefactor_api.token)
    runs: list[InstanceRun] = []
    ran = False

    async def agent() -> None:
        nonlocal ran
        async with client.agent_instance(agent_id="a", agent_version=VERSION, strict=True) as run:
            runs.append(run)
            async with aioprefactor.span("agent:step"):
                ran = True

    with pytest.raises(PrefactorError):
        await agent()
    assert not ran
    prefactor_api.faults.clear()
    await client.flush()
    assert prefactor_api.instance(runs[0].id or "")["status"] == "failed"
