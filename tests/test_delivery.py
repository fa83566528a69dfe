"""Background delivery: the agent never waits for the API, and nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

import aioprefactor
from aioprefactor import Client, RecordingState, span

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from aioprefactor import SpanRun
    from aioprefactor.testing import LocalPrefactor

VERSION = {"name": "Delivery", "external_identifier": "1.0.0"}


def routes(api: LocalPrefactor) -> list[str | None]:
    return [r.route for r in api.requests]


def answered(api: LocalPrefactor) -> list[Any]:
    return [r for r in api.requests if r.status is not None]


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
async def client(prefactor_api: LocalPrefactor) -> AsyncIterator[Client]:
    """A background-delivery client bound to the local API, closed after the test."""
    async with Client(prefactor_api.url, prefactor_api.token) as made:
        yield made


async def test_slow_api_does_not_hold_the_block(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """The block with 10 spans ends before the API has answered anything; all lands later."""
    prefactor_api.faults.latency(0.1)
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        for n in range(10):
            async with span("agent:step", {"n": n}) as step:
                step.set_result({"n": n})
        id_inside = run.id
    assert id_inside is None
    assert [] == answered(prefactor_api)
    assert run.status == "complete"
    assert run.state in {RecordingState.QUEUED, RecordingState.REGISTERING}
    assert await client.flush() is True
    assert run.id is not None
    assert "complete" == prefactor_api.instance(run.id)["status"]
    assert ["complete"] * 10 == [s["status"] for s in prefactor_api.spans(run.id)]


async def test_a_run_with_ten_spans_takes_four_requests_with_bulk(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """Register, start, one bulk of ten creates carrying their ends, finish: no span finish."""
    prefactor_api.faults.latency(0.05)
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        for n in range(10):
            async with span("agent:step", {"n": n}):
                pass
    await client.flush()
    expected = ["agent_instances.register", "agent_instances.start", "bulk"]
    assert [*expected, "agent_instances.finish"] == routes(prefactor_api)
    assert run.id is not None
    assert ["complete"] * 10 == [s["status"] for s in prefactor_api.spans(run.id)]
    stats = client.stats()
    assert (0, 4, 0, 0) == (stats.pending, stats.sent_requests, stats.dropped, stats.abandoned)


async def test_without_batching_each_ended_span_is_one_create(
    prefactor_api: LocalPrefactor,
) -> None:
    """batching=False: 13 requests for a run of ten spans that ended before they were sent."""
    prefactor_api.faults.latency(0.05)
    async with Client(prefactor_api.url, prefactor_api.token, batching=False) as client:
        async with client.agent_instance(agent_id="a", agent_version=VERSION):
            for n in range(10):
                async with span("agent:step", {"n": n}):
                    pass
        await client.flush()
    counts = Counter(routes(prefactor_api))
    assert {"agent_spans.create": 10, "agent_instances.register": 1} == {
        k: v for k, v in counts.items() if k in {"agent_spans.create", "agent_instances.register"}
    }
    assert 13 == len(prefactor_api.requests)
    assert "agent_spans.finish" not in counts


async def test_server_without_bulk_falls_back_to_single_requests_for_good(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """A 404 on the bulk route: its items go singly, every later batch too, nothing lost."""
    prefactor_api.faults.fail_next(1000, 404, route="bulk")
    prefactor_api.faults.latency(0.05)
    for _ in range(2):
        async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            for n in range(5):
                async with span("agent:step", {"n": n}):
                    pass
        assert await client.flush() is True
        assert run.id is not None
        assert ["complete"] * 5 == [s["status"] for s in prefactor_api.spans(run.id)]
    assert 1 == routes(prefactor_api).count("bulk")
    assert 10 == routes(prefactor_api).count("agent_spans.create")


async def test_bulk_envelope_refused_with_422_falls_back(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """A 422 answer to the bulk request as a whole: singles from then on, all recorded."""
    prefactor_api.faults.fail_next(1000, 422, route="bulk")
    prefactor_api.faults.latency(0.05)
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        for n in range(4):
            async with span("agent:step", {"n": n}):
                pass
    assert await client.flush() is True
    assert run.id is not None
    assert 4 == len(prefactor_api.spans(run.id))
    assert 1 == routes(prefactor_api).count("bulk")


async def test_spans_carry_their_blocks_own_times(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """started_at and finished_at are when the blocks ran, not when the requests went out."""
    prefactor_api.faults.latency(0.1)
    before = datetime.now(UTC)
    async with (
        client.agent_instance(agent_id="a", agent_version=VERSION) as run,
        span("agent:step"),
    ):
        pass
    after = datetime.now(UTC)
    await client.flush()
    assert run.id is not None
    [server_span] = prefactor_api.spans(run.id)
    instance = prefactor_api.instance(run.id)
    for moment in (
        server_span["started_at"],
        server_span["finished_at"],
        instance["started_at"],
        instance["finished_at"],
    ):
        assert before <= parse(moment) <= after


async def test_span_still_open_when_sent_is_created_active_then_finished(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """A long span: created active while it runs, finished once with its result."""
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        recorded = await run.wait_recorded()
        async with span("agent:long") as long:
            await client.flush()
            assert long.id is not None
            assert "active" == prefactor_api.span(long.id)["status"]
            long.set_result({"done": True})
    await client.flush()
    assert recorded == run.id
    assert long.id is not None
    assert "complete" == prefactor_api.span(long.id)["status"]
    assert {"done": True} == prefactor_api.span(long.id)["result_payload"]
    assert 1 == routes(prefactor_api).count("agent_spans.finish")


async def test_nested_spans_keep_their_parents_with_server_ids(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """Children hang from their parents' server-assigned ids, however late those land."""
    prefactor_api.faults.latency(0.05)
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:  # noqa: SIM117
        async with span("agent:outer") as outer:
            async with span("agent:middle") as middle, span("agent:inner") as inner:
                pass
    await client.flush()
    assert run.id is not None
    by_id = {s["id"]: s for s in prefactor_api.spans(run.id)}
    assert by_id[inner.id]["parent_span_id"] == middle.id
    assert by_id[middle.id]["parent_span_id"] == outer.id
    assert by_id[outer.id]["parent_span_id"] is None


async def test_generator_spans_after_a_yield_get_the_right_parent(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """A span opened in a decorated async generator after a yield parents the next span in it."""

    @span("agent:stream")
    async def stream() -> AsyncIterator[int]:
        for n in range(2):
            yield n
            async with span("agent:chunk", {"n": n}), span("agent:token", {"n": n}):
                await asyncio.sleep(0)

    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        async for _ in stream():
            await asyncio.sleep(0)
    await client.flush()
    assert run.id is not None
    spans = prefactor_api.spans(run.id)
    by_id = {s["id"]: s for s in spans}
    [root] = [s for s in spans if s["schema_name"] == "agent:stream"]
    chunks = [s for s in spans if s["schema_name"] == "agent:chunk"]
    tokens = [s for s in spans if s["schema_name"] == "agent:token"]
    assert [root["id"]] * 2 == [c["parent_span_id"] for c in chunks]
    assert ["agent:chunk"] * 2 == [by_id[t["parent_span_id"]]["schema_name"] for t in tokens]
    for token in tokens:
        assert by_id[token["parent_span_id"]]["payload"] == token["payload"]


async def test_one_span_scope_shared_by_concurrent_streams_keeps_each_status(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """Two tasks through one shared span(...): each span ends with its own task's status."""
    shared = span("agent:shared")
    gate = asyncio.Event()
    handles: dict[str, SpanRun] = {}

    async def worker(name: str, fail: bool) -> None:
        async with shared as handle:
            handles[name] = handle
            await gate.wait()
            if fail:
                raise ValueError(name)

    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        good = asyncio.create_task(worker("good", fail=False))
        bad = asyncio.create_task(worker("bad", fail=True))
        await asyncio.sleep(0.01)
        gate.set()
        await good
        with pytest.raises(ValueError, match="bad"):
            await bad
    await client.flush()
    assert ("complete", "failed") == (handles["good"].status, handles["bad"].status)
    assert run.id is not None
    server = {s["id"]: s["status"] for s in prefactor_api.spans(run.id)}
    assert "complete" == server[handles["good"].id]
    assert "failed" == server[handles["bad"].id]


async def test_settings_are_read_at_first_call_not_at_decoration(
    prefactor_api: LocalPrefactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agent id, environment and span types set after decoration are what the run registers."""

    @aioprefactor.agent_instance(agent_version=VERSION)
    async def job() -> None:
        await asyncio.sleep(0)

    monkeypatch.setenv("PREFACTOR_AGENT_ID", "late-agent")
    monkeypatch.setenv("PREFACTOR_ENVIRONMENT_ID", "late-env")
    aioprefactor.declare_span_type("agent:late", {"type": "object"})
    aioprefactor.configure(prefactor_api.url, prefactor_api.token)
    await job()
    assert await aioprefactor.flush() is True
    [register] = [r for r in prefactor_api.requests if r.route == "agent_instances.register"]
    assert "late-agent" == register.body["agent_id"]
    assert "late-env" == register.body["environment_id"]
    types = register.body["agent_schema_version"]["span_type_schemas"]
    assert ["agent:late"] == [t["name"] for t in types]


async def test_queue_full_drops_spans_never_the_run(prefactor_api: LocalPrefactor) -> None:
    """max_queue reached: spans dropped and counted, warned once; the run is still recorded."""
    prefactor_api.faults.latency(0.2)
    async with Client(prefactor_api.url, prefactor_api.token, max_queue=3) as client:
        async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            for n in range(20):
                async with span("agent:step", {"n": n}):
                    pass
        assert await client.flush() is True
        stats = client.stats()
    assert stats.dropped > 0
    assert run.id is not None
    assert "complete" == prefactor_api.instance(run.id)["status"]
    assert 20 == stats.dropped + len(prefactor_api.spans(run.id))


async def test_queue_full_warns_once(
    prefactor_api: LocalPrefactor, caplog: pytest.LogCaptureFixture
) -> None:
    """One warning however many spans are dropped."""
    prefactor_api.faults.latency(0.2)
    async with Client(prefactor_api.url, prefactor_api.token, max_queue=2) as client:
        async with client.agent_instance(agent_id="a", agent_version=VERSION):
            for _ in range(20):
                async with span("agent:step"):
                    pass
        await client.flush()
    warnings = [r for r in caplog.records if "queue is full" in r.getMessage()]
    assert 1 == len(warnings)


async def test_retries_keep_one_key_and_record_once(
    prefactor_api: LocalPrefactor,
) -> None:
    """Lost answers and 503s are retried under one key: one instance, one span, one finish."""
    prefactor_api.faults.drop_after_effect(1, route="agent_instances.register")
    prefactor_api.faults.fail_next(2, 503, route="agent_instances.finish")
    prefactor_api.faults.drop_after_effect(1, route="bulk")
    options: dict[str, Any] = {"backoff_initial": 0.01, "backoff_max": 0.02}
    async with Client(prefactor_api.url, prefactor_api.token, **options) as client:
        async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
            for _ in range(3):
                async with span("agent:step"):
                    pass
        assert await client.flush() is True
        stats = client.stats()
    assert 1 == len(prefactor_api.instances())
    assert run.id is not None
    assert "complete" == prefactor_api.instance(run.id)["status"]
    assert 3 == len(prefactor_api.spans(run.id))
    assert stats.retried >= 3
    keys = [r.body.get("idempotency_key") for r in prefactor_api.requests if r.route and r.body]
    registers = [r for r in prefactor_api.requests if r.route == "agent_instances.register"]
    assert 1 == len({r.body["idempotency_key"] for r in registers})
    assert keys


async def test_flush_with_a_timeout_says_false_until_delivered(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """False when the timeout comes first, True once everything landed."""
    prefactor_api.faults.latency(0.3, n=1)
    async with client.agent_instance(agent_id="a", agent_version=VERSION):
        pass
    assert await client.flush(0.05) is False
    assert await client.flush() is True
    assert 0 == client.stats().pending


async def test_wait_recorded_returns_the_id(prefactor_api: LocalPrefactor, client: Client) -> None:
    """wait_recorded() inside the block gives the id the server assigned."""
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        assert run.id is None
        recorded = await run.wait_recorded()
        assert recorded is not None
        assert "active" == prefactor_api.instance(recorded)["status"]
    assert recorded == run.id


async def test_wait_recorded_is_none_when_the_run_is_refused(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """None, and telemetry_error says why, when the API refuses the registration."""
    prefactor_api.faults.fail_next(1, 422, route="agent_instances.register")
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        assert await run.wait_recorded() is None
        assert isinstance(run.telemetry_error, aioprefactor.PrefactorValidationError)
        async with span("agent:step") as step:
            pass
    await client.flush()
    assert step.id is None
    assert [] == prefactor_api.instances()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _env(url: str, token: str, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFACTOR_")}
    return {**base, "PREFACTOR_API_URL": url, "PREFACTOR_API_TOKEN": token, **extra}


SCRIPT = textwrap.dedent(
    """
    import asyncio, json
    import aioprefactor
    from aioprefactor import span

    @aioprefactor.agent_instance(agent_id="exit", agent_version={
        "name": "Exit", "external_identifier": "1"})
    async def main():
        for n in range(3):
            async with span("agent:step", {"n": n}):
                await asyncio.sleep(0)
        return aioprefactor.current_instance().id

    print(json.dumps({"id_at_end": asyncio.run(main())}), flush=True)
    """
)


def test_a_process_that_exits_right_after_its_run_loses_nothing(
    prefactor_api_in_thread: tuple[str, str, LocalPrefactor],
) -> None:
    """At 100 ms a request the script ends at once; at exit every request is delivered."""
    url, token, api = prefactor_api_in_thread
    api.faults.latency(0.1)
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", SCRIPT],
        env=_env(url, token),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    assert "" == done.stderr
    result = json.loads(done.stdout)
    assert result["id_at_end"] is None  # the block did not wait for the register
    [instance] = api.instances()
    assert "complete" == instance["status"]
    assert ["complete"] * 3 == [s["status"] for s in api.spans(instance["id"])]


DOWN_SCRIPT = textwrap.dedent(
    """
    import asyncio, time
    import aioprefactor

    async def main():
        async with aioprefactor.agent_instance(agent_id="down", agent_version={
                "name": "Down", "external_identifier": "1"}):
            async with aioprefactor.span("agent:step"):
                await asyncio.sleep(0.02)

    asyncio.run(main())
    print(time.monotonic(), flush=True)
    """
)


def test_a_program_whose_api_is_down_exits_promptly_and_says_what_was_lost() -> None:
    """Connection refused: the exit does not wait out retries; one warning names the loss."""
    url = f"http://127.0.0.1:{_closed_port()}"
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", DOWN_SCRIPT],
        env=_env(url, "token"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    assert "refused connections" in done.stderr
    assert "instance None" not in done.stderr
    assert "Traceback" not in done.stderr
    assert 1 == done.stderr.count("not delivered")


async def test_stats_count_what_was_sent(prefactor_api: LocalPrefactor, client: Client) -> None:
    """Delivered operations and requests sent, nothing pending, dropped or abandoned."""
    async with client.agent_instance(agent_id="a", agent_version=VERSION), span("agent:step"):
        pass
    await client.flush()
    stats = client.stats()
    assert 0 == stats.pending
    assert stats.delivered >= 4
    assert len(prefactor_api.requests) == stats.sent_requests
    assert (0, 0) == (stats.dropped, stats.abandoned)


async def test_inline_delivery_knows_the_id_inside_the_block(prefactor_api: LocalPrefactor) -> None:
    """delivery='inline': the instance is started before the block runs."""
    async with (
        Client(prefactor_api.url, prefactor_api.token, delivery="inline") as client,
        client.agent_instance(agent_id="a", agent_version=VERSION) as run,
    ):
        assert run.id is not None
        assert "active" == prefactor_api.instance(run.id)["status"]


async def test_strict_implies_inline(prefactor_api: LocalPrefactor, client: Client) -> None:
    """strict=True waits for the start on a background client, and raises when refused."""
    async with client.agent_instance(agent_id="a", agent_version=VERSION, strict=True) as run:
        assert run.id is not None
    prefactor_api.faults.fail_next(1, 422, route="agent_instances.register")
    with pytest.raises(aioprefactor.PrefactorValidationError):
        async with client.agent_instance(agent_id="a", agent_version=VERSION, strict=True):
            pass


def test_delivery_mode_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """PREFACTOR_DELIVERY picks the mode; a bad value is a clear error."""
    monkeypatch.setenv("PREFACTOR_DELIVERY", "inline")
    assert "inline" == Client("https://api.example.com", "t").delivery
    monkeypatch.setenv("PREFACTOR_DELIVERY", "sometimes")
    with pytest.raises(ValueError, match="delivery must be"):
        Client("https://api.example.com", "t")


async def test_span_after_its_run_ended_sends_nothing(
    prefactor_api: LocalPrefactor, client: Client
) -> None:
    """A task that outlives its run: its span is not recorded, the run's finish is not held."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def straggler() -> None:
        started.set()
        await release.wait()
        async with span("agent:late"):
            pass

    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        task = asyncio.create_task(straggler())
        await started.wait()
    release.set()
    await task
    await client.flush()
    assert run.id is not None
    assert "complete" == prefactor_api.instance(run.id)["status"]
    assert [] == prefactor_api.spans(run.id)


async def test_payload_json_cannot_hold_is_recorded_converted(
    prefactor_api: LocalPrefactor, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Sets, bytes and int keys are recorded converted; an oversized result is cut, not lost."""
    caplog.set_level(logging.WARNING, logger="aioprefactor")
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:  # noqa: SIM117
        async with span("agent:odd", {"tags": {"b", "a"}, "raw": b"hi", "by_id": {1: "x"}}) as odd:
            odd.set_result({"text": "x" * 400_000})
    await client.flush()
    assert run.id is not None
    assert odd.id is not None
    server = prefactor_api.span(odd.id)
    assert {"tags": ["a", "b"], "raw": "hi", "by_id": {"1": "x"}} == server["payload"]
    assert "complete" == server["status"]
    assert "truncated" in json.dumps(server["result_payload"])
    assert [] == [r for r in caplog.records if r.levelno >= logging.WARNING]


PROCESSES_SCRIPT = textwrap.dedent(
    """
    import multiprocessing
    import aioprefactor

    def child(n):
        with aioprefactor.agent_instance(agent_id="child", agent_version={
                "name": "Child", "external_identifier": "1"}):
            with aioprefactor.span("agent:step", {"n": n}):
                pass

    if __name__ == "__main__":
        context = multiprocessing.get_context("fork")
        with aioprefactor.agent_instance(agent_id="parent", agent_version={
                "name": "Parent", "external_identifier": "1"}):
            pass
        children = [context.Process(target=child, args=(n,)) for n in range(2)]
        for process in children:
            process.start()
        for process in children:
            process.join()
    """
)


def test_multiprocessing_children_deliver_their_runs_before_they_end(
    prefactor_api_in_thread: tuple[str, str, LocalPrefactor], tmp_path: Path
) -> None:
    """Forked multiprocessing children end with os._exit; their runs are delivered anyway."""
    url, token, api = prefactor_api_in_thread
    script = tmp_path / "processes.py"
    script.write_text(PROCESSES_SCRIPT)
    done = subprocess.run(  # noqa: S603 - this interpreter, a script of this test
        [sys.executable, str(script)],
        env=_env(url, token),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    runs = sorted((i["agent_id"], i["status"], len(api.spans(i["id"]))) for i in api.instances())
    assert [("child", "complete", 1), ("child", "complete", 1), ("parent", "complete", 0)] == runs


async def test_flush_after_close_says_whether_all_was_delivered(
    prefactor_api: LocalPrefactor,
) -> None:
    """flush() and flush_sync() on a closed client answer at once instead of raising."""
    client = Client(prefactor_api.url, prefactor_api.token)
    async with client.agent_instance(agent_id="a", agent_version=VERSION):
        pass
    await client.aclose()
    assert await client.flush() is True
    assert client.flush_sync(0.1) is True


NO_SHUTDOWN_SCRIPT = textwrap.dedent(
    """
    import asyncio, gc
    from aioprefactor import agent_instance, span

    async def main():
        async with agent_instance(agent_id="bare", agent_version={
                "name": "Bare", "external_identifier": "1"}):
            async with span("agent:step"):
                await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()  # no shutdown_asyncgens: the loop never says it is ending
    del loop
    gc.collect()
    """
)


def test_a_loop_closed_without_shutdown_asyncgens_still_delivers_quietly(
    prefactor_api_in_thread: tuple[str, str, LocalPrefactor],
) -> None:
    """No 'Unclosed client session' or other noise; the run is delivered at exit."""
    url, token, api = prefactor_api_in_thread
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-W", "error", "-X", "dev", "-c", NO_SHUTDOWN_SCRIPT],
        env=_env(url, token),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    assert "" == done.stderr
    [instance] = api.instances()
    assert "complete" == instance["status"]
    assert ["complete"] == [s["status"] for s in api.spans(instance["id"])]


async def test_a_bulk_that_refuses_span_creates_sends_them_singly() -> None:
    """An item answered unsupported_type: creates go singly from then on; registers stay bulk."""
    from aioprefactor.testing import LocalPrefactor  # noqa: PLC0415 - a server made for this test

    async with LocalPrefactor(bulk_item_types={"agent_instances/register"}) as api:
        # A slow bulk: the second run's creates wait for a batch while the first is refused.
        api.faults.latency(0.3, route="bulk")
        async with Client(api.url, api.token) as client:
            runs = []
            for _ in range(2):
                async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
                    for n in range(3):
                        async with span("agent:step", {"n": n}):
                            pass
                runs.append(run)
            assert await client.flush() is True
        for run in runs:
            assert run.id is not None
            assert ["complete"] * 3 == [s["status"] for s in api.spans(run.id)]
        bulks = [r for r in api.requests if r.route == "bulk"]
        refused = [
            r for r in bulks if any(i["_type"] == "agent_spans/create" for i in r.body["items"])
        ]
        assert 1 == len(refused)
        assert 6 == routes(api).count("agent_spans.create")


async def test_a_bulk_item_type_the_local_api_does_not_know_is_refused() -> None:
    """ValueError naming the known types, before the server starts."""
    from aioprefactor.testing import LocalPrefactor  # noqa: PLC0415 - the option under test

    with pytest.raises(ValueError, match="unknown bulk item types"):
        LocalPrefactor(bulk_item_types={"agent_spans/delete"})
