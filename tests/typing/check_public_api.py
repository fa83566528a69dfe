"""Pins the types of the public API. Type-checked by mypy, never run."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from datetime import UTC, datetime
from typing import Any, assert_type

import aioprefactor
from aioprefactor import (
    AgentInstance,
    AgentSchemaVersion,
    AgentSpan,
    AgentVersion,
    BulkItem,
    BulkOutput,
    BulkResponse,
    Client,
    ClientState,
    ControlSignal,
    PrefactorApiError,
    PrefactorError,
    PrefactorRateLimitError,
    PrefactorResponseContractError,
    PrefactorRetryExhaustedError,
    PrefactorTimeoutError,
    PrefactorValidationError,
    SpanCounts,
)


async def endpoints(client: Client) -> None:
    version = AgentVersion(name="n", external_identifier="1")
    schema = AgentSchemaVersion(external_identifier="s")
    instance = await client.agent_instances.register("a", version, schema)
    assert_type(instance, AgentInstance)
    assert_type(
        await client.agent_instances.register(
            None,
            {"name": "n", "external_identifier": "1"},
            {"external_identifier": "s"},
            "id",
            "key",
            False,
            environment_id="e",
            purpose="eval",
            external_identifier="x",
        ),
        AgentInstance,
    )
    now = datetime.now(UTC)
    assert_type(await client.agent_instances.start(instance.id, now, "key"), AgentInstance)
    assert_type(await client.agent_instances.finish(instance.id, "failed", now), AgentInstance)
    assert_type(await client.agent_instances.finish(instance.id), AgentInstance)
    assert_type(await client.agent_instances.get(instance.id), AgentInstance)
    assert_type(
        await client.agent_instances.record_quality(instance.id, "q", {"v": 1}), AgentInstance
    )
    span = await client.agent_spans.create(instance.id, "agent:llm", payload={"m": 1})
    assert_type(span, AgentSpan)
    assert_type(span.control, ControlSignal | None)
    assert_type(await client.agent_spans.finish(span.id, "complete", {"r": 1}), AgentSpan)
    result = await client.bulk.execute(
        [BulkItem(type="agent_instances/start", idempotency_key="k" * 8)]
    )
    assert_type(result, BulkResponse)
    assert_type(result.outputs, dict[str, BulkOutput])
    assert_type(result.outputs["k" * 8].ok, bool)
    assert_type(await client.ping(), dict[str, Any])


async def client_lifecycle() -> None:
    client = Client(api_url="https://example.com", api_token="t", max_retries=0)
    async with client as entered:
        assert_type(entered, Client)
    assert_type(client.state, ClientState)
    assert_type(client.api_url, str)
    await client.aclose()


def models(instance: AgentInstance, span: AgentSpan) -> None:
    assert_type(instance.id, str)
    assert_type(instance.status, aioprefactor.AgentStatus)
    assert_type(instance.started_at, datetime | None)
    assert_type(instance.inserted_at, datetime)
    assert_type(instance.span_counts, SpanCounts | None)
    assert_type(span.payload, dict[str, Any])
    assert_type(span.result_payload, dict[str, Any] | None)
    assert_type(span.parent_span_id, str | None)


def errors(error: PrefactorError) -> None:
    if isinstance(error, PrefactorApiError):
        assert_type(error.status_code, int)
        assert_type(error.code, str)
        assert_type(error.message, str)
    if isinstance(error, PrefactorValidationError):
        assert_type(error.errors, dict[str, Any])
    if isinstance(error, PrefactorRateLimitError):
        assert_type(error.retry_after, float | None)
    if isinstance(error, PrefactorResponseContractError):
        assert_type(error.status_code, int | None)
        assert_type(error.body_snippet, str | None)
    if isinstance(error, PrefactorRetryExhaustedError):
        assert_type(error.last_error, PrefactorError)
        assert_type(error.attempts, int)
    timeout: TimeoutError = PrefactorTimeoutError("late")
    assert_type(timeout, TimeoutError)


async def misuse(client: Client) -> None:
    await client.agent_instances.finish("i", "active")  # type: ignore[arg-type]
    await client.agent_instances.register("a", {}, {}, purpose="prod")  # type: ignore[arg-type]
    await client.agent_instances.start("i", "2025-01-01")  # type: ignore[arg-type]
    AgentVersion("n", "1")  # type: ignore[call-arg]


VERSION = {"name": "n", "external_identifier": "1"}


async def lifecycle(client: Client) -> None:
    scope = aioprefactor.agent_instance(agent_id="a", agent_version=VERSION)
    assert_type(scope, aioprefactor.InstanceScope)
    assert_type(client.agent_instance(agent_version=VERSION), aioprefactor.InstanceScope)
    async with scope as run:
        assert_type(run, aioprefactor.InstanceRun)
        assert_type(run.id, str | None)
        assert_type(run.instance, AgentInstance | None)
        assert_type(run.status, aioprefactor.FinishStatus | None)
        assert_type(run.telemetry_error, BaseException | None)
        assert_type(run.terminated, bool)
        assert_type(run.termination_reason, str | None)
        assert_type(run.complete(), None)
        assert_type(aioprefactor.current_instance(), aioprefactor.InstanceRun | None)
        async with aioprefactor.span("agent:llm", {"model": "m"}) as step:
            assert_type(step, aioprefactor.SpanRun)
            assert_type(step.id, str | None)
            assert_type(step.span, AgentSpan | None)
            assert_type(step.set_result({"text": "t"}), None)
            assert_type(aioprefactor.current_span(), aioprefactor.SpanRun | None)
    await client.flush()


async def decorated() -> None:
    @aioprefactor.agent_instance(agent_version=VERSION)
    async def entry(question: str, *, retries: int = 1) -> int:
        return len(question) + retries

    assert_type(await entry("q", retries=2), int)

    @aioprefactor.span("agent:tool")
    async def stream(n: int) -> AsyncGenerator[str]:
        for i in range(n):
            yield str(i)

    assert_type(stream(3), AsyncGenerator[str, None])
    await entry(1)  # type: ignore[arg-type]


def decorated_sync() -> None:
    @aioprefactor.agent_instance(agent_version=VERSION)
    def entry(question: str, *, retries: int = 1) -> int:
        return len(question) + retries

    assert_type(entry("q", retries=2), int)
    entry(1)  # type: ignore[arg-type]

    @aioprefactor.span("agent:tool")
    def numbers(n: int) -> Generator[int, str, bool]:
        got = yield n
        return got == "ok"

    assert_type(numbers(3), Generator[int, str, bool])
    numbers("3")  # type: ignore[arg-type]

    class Tools:
        @aioprefactor.span("agent:tool", capture=False)
        def search(self, query: str, k: int = 3) -> list[str]:
            return [query] * k

    assert_type(Tools().search("q", k=2), list[str])

    with aioprefactor.agent_instance(agent_version=VERSION) as run:
        assert_type(run, aioprefactor.InstanceRun)
        with aioprefactor.span("agent:step") as step:
            assert_type(step, aioprefactor.SpanRun)
        assert_type(run.wait_recorded_sync(1.0), str | None)


async def delivery(client: Client) -> None:
    assert_type(await client.flush(1.0), bool)
    assert_type(client.flush_sync(), bool)
    assert_type(client.stats(), aioprefactor.DeliveryStats)
    assert_type(await aioprefactor.flush(), bool)
    assert_type(aioprefactor.flush_sync(), bool)
    manual = aioprefactor.open_span("agent:cb", {"k": 1}, started_at=datetime.now(UTC))
    assert_type(manual, aioprefactor.SpanRun)
    assert_type(manual.end("failed", error=ValueError("x")), aioprefactor.FinishStatus)
    with aioprefactor.use_span(manual) as current:
        assert_type(current, aioprefactor.SpanRun)
    run = client.agent_instance(agent_version=VERSION).start()
    assert_type(await run.wait_recorded(), str | None)
    assert_type(run.end(error=KeyboardInterrupt()), aioprefactor.FinishStatus)
    wrapped = aioprefactor.wrap(len)
    assert_type(wrapped([1]), int)
