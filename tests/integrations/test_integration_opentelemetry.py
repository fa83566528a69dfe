from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import textwrap
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

if not os.environ.get("CI"):
    pytest.importorskip("opentelemetry.sdk", reason="needs pip install -e '.[test-integrations]'")
    pytest.importorskip("pydantic_ai", reason="needs pip install -e '.[test-integrations]'")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode
from pydantic_ai import Agent
from pydantic_ai.capabilities.instrumentation import Instrumentation
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.models.test import TestModel

import aioprefactor
from aioprefactor.integrations.opentelemetry import PrefactorSpanProcessor

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from opentelemetry.trace import Tracer

    from aioprefactor import Client
    from aioprefactor.testing import LocalPrefactor

VERSION: dict[str, Any] = {"name": "GenAI agent", "external_identifier": "1.0.0"}
MESSAGES = [{"role": "user", "parts": [{"type": "text", "content": "weather in Paris?"}]}]


@pytest.fixture
def providers() -> Iterator[Callable[[PrefactorSpanProcessor], TracerProvider]]:
    """Tracer providers with a processor each, shut down after the test."""
    made: list[TracerProvider] = []

    def make(processor: PrefactorSpanProcessor) -> TracerProvider:
        provider = TracerProvider()
        provider.add_span_processor(processor)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.shutdown()


@contextlib.contextmanager
def recording_errors(span: Any) -> Iterator[None]:
    """Record any exception on the span, cancellations included, as GenAI instrumentations do."""
    try:
        yield
    except BaseException as error:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, str(error)))
        raise


def agent_turn(tracer: Tracer, city: str, *, fail: BaseException | None = None) -> None:
    """An agent invocation following the GenAI conventions, with an HTTP span in between."""
    quiet: Any = {"record_exception": False, "set_status_on_exception": False}
    with (
        tracer.start_as_current_span(
            "invoke_agent weather",
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "weather"},
            **quiet,
        ) as agent,
        recording_errors(agent),
    ):
        with (
            tracer.start_as_current_span("POST /chat", attributes={"http.method": "POST"}),
            tracer.start_as_current_span(
                "chat m-1",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "acme",
                    "gen_ai.request.model": "m-1",
                    "gen_ai.input.messages": json.dumps(
                        [{"role": "user", "parts": [{"type": "text", "content": city}]}]
                    ),
                },
            ) as chat,
        ):
            chat.set_attribute("gen_ai.usage.input_tokens", 7)
            chat.set_attribute("gen_ai.usage.output_tokens", 2)
            chat.set_attribute("gen_ai.response.model", "m-1-0613")
        with (
            tracer.start_as_current_span(
                "execute_tool lookup",
                attributes={
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "lookup",
                    "gen_ai.tool.call.arguments": json.dumps({"city": city}),
                },
                **quiet,
            ) as tool,
            recording_errors(tool),
        ):
            if fail is not None:
                raise fail
            tool.set_attribute("gen_ai.tool.call.result", f"sunny in {city}")


def known(span: dict[str, Any], field: str) -> Any:
    """A field of the span's data: from its payload, or its result when set after it began."""
    return span["result_payload"].get(field, span["payload"].get(field))


def by_type(api: LocalPrefactor, instance_id: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for span in sorted(api.spans(instance_id), key=lambda s: s["started_at"]):
        found.setdefault(span["schema_name"], []).append(span)
    return found


async def test_genai_spans_nest_by_their_parents_under_the_current_span(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    providers: Callable[[PrefactorSpanProcessor], TracerProvider],
    span_tree: Callable[..., str],
) -> None:
    """invoke_agent, chat (through an HTTP span) and execute_tool, with their data and times."""
    tracer = providers(PrefactorSpanProcessor()).get_tracer("test")
    scope = prefactor_client.agent_instance(agent_version=VERSION)
    async with scope as run, aioprefactor.span("app:request"):
        agent_turn(tracer, "Paris")
    assert await prefactor_client.flush(timeout=10)
    assert run.id is not None
    assert (
        "app:request(complete)[otel:agent(complete)[otel:llm(complete) otel:tool(complete)]]"
        == (span_tree(run.id))
    )
    spans = by_type(prefactor_api, run.id)
    chat = spans["otel:llm"][0]
    assert {"provider": "acme", "model": "m-1", "name": "chat m-1", "operation": "chat"} == {
        k: chat["payload"][k] for k in ("provider", "model", "name", "operation")
    }
    sent = [{"role": "user", "parts": [{"type": "text", "content": "Paris"}]}]
    assert {"messages": sent} == chat["payload"]["inputs"]
    assert {"input_tokens": 7, "output_tokens": 2} == chat["result_payload"]["token_usage"]
    assert "m-1-0613" == chat["result_payload"]["response_model"]
    tool = spans["otel:tool"][0]
    assert ("lookup", {"arguments": {"city": "Paris"}}) == (
        tool["payload"]["tool_name"],
        tool["payload"]["inputs"],
    )
    assert {"output": "sunny in Paris"} == tool["result_payload"]["outputs"]
    assert "weather" == spans["otel:agent"][0]["payload"]["agent_name"]


async def test_span_times_are_the_opentelemetry_spans_own(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    providers: Callable[[PrefactorSpanProcessor], TracerProvider],
) -> None:
    """A span started and ended at given times is recorded with those times."""
    tracer = providers(PrefactorSpanProcessor()).get_tracer("test")
    start = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    end = datetime(2030, 1, 2, 3, 4, 6, 123456, tzinfo=UTC)
    async with prefactor_client.agent_instance(agent_version=VERSION) as run:
        chat = tracer.start_span(
            "chat", attributes={"gen_ai.operation.name": "chat"}, start_time=_ns(start)
        )
        chat.end(end_time=_ns(end))
    assert await prefactor_client.flush(timeout=10)
    assert run.id is not None
    [span] = prefactor_api.spans(run.id)
    assert (start, end) == (_time(span["started_at"]), _time(span["finished_at"]))


@pytest.mark.parametrize(
    ("fail", "status"),
    [(ValueError("no such city"), "failed"), (asyncio.CancelledError(), "cancelled")],
)
async def test_an_error_status_ends_the_span_and_the_run_the_processor_opened(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    providers: Callable[[PrefactorSpanProcessor], TracerProvider],
    span_tree: Callable[..., str],
    fail: BaseException,
    status: str,
) -> None:
    """A tool's recorded exception: failed (or cancelled) span, agent span and own run."""
    processor = PrefactorSpanProcessor(client=prefactor_client, agent_version=VERSION)
    tracer = providers(processor).get_tracer("test")
    with pytest.raises(type(fail)):
        agent_turn(tracer, "Atlantis", fail=fail)
    assert await prefactor_client.flush(timeout=10)
    [instance] = prefactor_api.instances()
    assert status == instance["status"]
    assert f"otel:agent({status})[otel:llm(complete) otel:tool({status})]" == span_tree(
        instance["id"]
    )
    error = by_type(prefactor_api, instance["id"])["otel:tool"][0]["result_payload"]["error"]
    assert type(fail).__name__ == error["type"].rpartition(".")[2]
    assert str(fail) == error["message"]


async def test_a_span_marked_genai_after_it_started_is_recorded_with_its_times(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    providers: Callable[[PrefactorSpanProcessor], TracerProvider],
) -> None:
    """gen_ai.operation.name set late: the span is still recorded, from its own start."""
    tracer = providers(PrefactorSpanProcessor()).get_tracer("test")
    async with prefactor_client.agent_instance(agent_version=VERSION) as run:
        with tracer.start_as_current_span("embed") as embed:
            started = embed.start_time  # type: ignore[attr-defined]
            embed.set_attribute("gen_ai.operation.name", "embeddings")
            embed.set_attribute("gen_ai.request.model", "e-1")
            embed.set_status(Status(StatusCode.OK))
    assert await prefactor_client.flush(timeout=10)
    assert run.id is not None
    [span] = prefactor_api.spans(run.id)
    assert ("otel:embeddings", "complete", "e-1") == (
        span["schema_name"],
        span["status"],
        span["payload"]["model"],
    )
    assert started // 1000 == int(_time(span["started_at"]).timestamp() * 1_000_000)


async def test_genai_spans_outside_any_run_are_not_recorded(
    prefactor_api: LocalPrefactor,
    providers: Callable[[PrefactorSpanProcessor], TracerProvider],
) -> None:
    """No current run: a chat span is not recorded; an invoke_agent needs an agent version."""
    tracer = providers(PrefactorSpanProcessor()).get_tracer("test")
    agent_turn(tracer, "Rome")
    with tracer.start_as_current_span("chat", attributes={"gen_ai.operation.name": "chat"}):
        pass
    assert [] == prefactor_api.instances()


async def test_fifty_concurrent_agent_turns_through_one_processor_never_mix(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    providers: Callable[[PrefactorSpanProcessor], TracerProvider],
    span_tree: Callable[..., str],
) -> None:
    """25 threads and 25 tasks at once, each invoking an agent: 50 runs, each its own tree."""
    processor = PrefactorSpanProcessor(client=prefactor_client, agent_version=VERSION)
    tracer = providers(processor).get_tracer("test")

    async def in_task(city: str) -> None:
        await asyncio.sleep(0)
        agent_turn(tracer, city)

    await asyncio.gather(
        *(asyncio.to_thread(agent_turn, tracer, f"t{i}") for i in range(25)),
        *(in_task(f"a{i}") for i in range(25)),
    )
    assert await prefactor_client.flush(timeout=30)
    instances = prefactor_api.instances()
    assert 50 == len(instances)
    cities = set()
    for instance in instances:
        assert "complete" == instance["status"]
        assert "otel:agent(complete)[otel:llm(complete) otel:tool(complete)]" == span_tree(
            instance["id"]
        )
        spans = by_type(prefactor_api, instance["id"])
        city = spans["otel:tool"][0]["payload"]["inputs"]["arguments"]["city"]
        sent = spans["otel:llm"][0]["payload"]["inputs"]["messages"][0]["parts"][0]["content"]
        assert city == sent
        cities.add(city)
    assert {f"t{i}" for i in range(25)} | {f"a{i}" for i in range(25)} == cities


@pytest.mark.parametrize("sync", [False, True], ids=["run", "run_sync"])
async def test_a_pydantic_ai_agent_is_recorded_through_its_instrumentation(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    providers: Callable[[PrefactorSpanProcessor], TracerProvider],
    span_tree: Callable[..., str],
    sync: bool,
    in_thread: Callable[[Callable[[], Any]], Awaitable[Any]],
) -> None:
    """pydantic-ai's TestModel calling a tool: agent, model calls and tool, one run."""
    processor = PrefactorSpanProcessor(
        client=prefactor_client, agent_id="pyd", agent_version=VERSION
    )
    settings = InstrumentationSettings(tracer_provider=providers(processor))
    agent = Agent(TestModel(), capabilities=[Instrumentation(settings)])

    @agent.tool_plain
    def lookup(city: str) -> str:
        """Look up the weather in a city."""
        return f"sunny in {city}"

    if sync:
        result = await in_thread(lambda: agent.run_sync("weather?"))
    else:
        result = await agent.run("weather?")
    assert "sunny in a" in result.output
    assert await prefactor_client.flush(timeout=10)
    [instance] = prefactor_api.instances()
    assert "complete" == instance["status"]
    assert "otel:agent(complete)[otel:llm(complete) otel:tool(complete) otel:llm(complete)]" == (
        span_tree(instance["id"])
    )
    spans = by_type(prefactor_api, instance["id"])
    assert "test" == known(spans["otel:llm"][0], "model")
    assert "lookup" == spans["otel:tool"][0]["payload"]["tool_name"]
    assert {"input_tokens", "output_tokens"} == set(
        spans["otel:llm"][0]["result_payload"]["token_usage"]
    )


def test_force_flush_hands_its_timeout_to_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """force_flush waits timeout_millis at most and says whether all was delivered."""
    asked: list[float | None] = []

    def flush_sync(timeout: float | None = None) -> bool:
        asked.append(timeout)
        return True

    monkeypatch.setattr(aioprefactor, "flush_sync", flush_sync)
    processor = PrefactorSpanProcessor()
    assert processor.force_flush(1500) is True
    processor.shutdown()
    assert [1.5, None] == asked


EXIT_SCRIPT = textwrap.dedent(
    """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from aioprefactor.integrations.opentelemetry import PrefactorSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(PrefactorSpanProcessor(
        agent_id="exit", agent_version={"name": "Exit", "external_identifier": "1"}))
    tracer = provider.get_tracer("exit")
    with tracer.start_as_current_span("invoke_agent", attributes={
            "gen_ai.operation.name": "invoke_agent"}):
        with tracer.start_as_current_span("chat", attributes={"gen_ai.operation.name": "chat"}):
            pass
    """
)


async def test_nothing_is_lost_when_the_program_ends_right_after(
    prefactor_api: LocalPrefactor, span_tree: Callable[..., str]
) -> None:
    """A program that records an agent turn and exits at once: its run and spans all land."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFACTOR_")}
    env |= {"PREFACTOR_API_URL": prefactor_api.url, "PREFACTOR_API_TOKEN": prefactor_api.token}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        EXIT_SCRIPT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert 0 == process.returncode, stderr.decode()
    [instance] = prefactor_api.instances()
    assert "complete" == instance["status"]
    assert "otel:agent(complete)[otel:llm(complete)]" == span_tree(instance["id"])


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
