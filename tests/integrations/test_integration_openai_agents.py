from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if not os.environ.get("CI"):
    pytest.importorskip("agents", reason="needs pip install -e '.[test-integrations]'")

from agents import (
    Agent,
    GuardrailFunctionOutput,
    Runner,
    Usage,
    custom_span,
    function_tool,
    input_guardrail,
    set_trace_processors,
    set_tracing_disabled,
)
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.tracing import generation_span
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

import aioprefactor
from aioprefactor.integrations.openai_agents import PrefactorTracingProcessor

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from agents import RunContextWrapper

    from aioprefactor import Client
    from aioprefactor.testing import LocalPrefactor

ROOT = Path(__file__).parents[2]
VERSION: dict[str, Any] = {"name": "Weather agents", "external_identifier": "1.0.0"}
WEATHER_TREE = (
    "openai_agents:trace(complete)[openai_agents:agent(complete)["
    "openai_agents:llm(complete) openai_agents:tool(complete)[openai_agents:custom(complete)] "
    "openai_agents:llm(complete)]]"
)


class ModelDownError(RuntimeError):
    """The scripted model was asked to fail."""


class ScriptedModel(Model):
    """Calls ``lookup`` with the user's city, then answers with what it returned.

    Like the SDK's own models it records each call in a generation span.
    """

    def __init__(self, *, hand_off_to: str | None = None) -> None:
        self.hand_off_to = hand_off_to

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        """Answer one turn, as the script says."""
        items = args[1] if len(args) > 1 else kwargs["input"]
        history = [items] if isinstance(items, str) else list(items)
        city = str(history[0] if isinstance(history[0], str) else history[0]["content"])
        results = [
            i
            for i in history
            if isinstance(i, dict)
            and i.get("call_id") == "lookup-1"
            and i.get("type") == "function_call_output"
        ]
        with generation_span(input=[{"role": "user", "content": city}], model="scripted-1") as gen:
            await asyncio.sleep(0)
            if city == "Nowhere":
                raise ModelDownError("the model is down")
            output: list[Any]
            if self.hand_off_to is not None:
                output = [_call(f"transfer_to_{self.hand_off_to}", {}, "handoff-1")]
            elif not results:
                output = [_call("lookup", {"city": city}, "lookup-1")]
            else:
                output = [_say(f"answer: {results[-1]['output']}")]
            gen.span_data.output = [item.model_dump() for item in output]
            gen.span_data.usage = {"input_tokens": 5, "output_tokens": 3}
        usage = Usage(requests=1, input_tokens=5, output_tokens=3, total_tokens=8)
        return ModelResponse(output=output, usage=usage, response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Not scripted: these tests do not stream."""
        raise NotImplementedError


def _call(name: str, arguments: dict[str, Any], call_id: str) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        type="function_call", name=name, arguments=json.dumps(arguments), call_id=call_id
    )


def _say(text: str) -> ResponseOutputMessage:
    content = ResponseOutputText(type="output_text", text=text, annotations=[])
    return ResponseOutputMessage(
        type="message", id="m1", role="assistant", status="completed", content=[content]
    )


@function_tool
def lookup(city: str) -> str:
    """Look up the weather in a city."""
    with custom_span("weather-cache", {"city": city, "hit": False}):
        return f"sunny in {city}"


def weather_agent() -> Agent[Any]:
    return Agent(name="weather", instructions="Answer.", model=ScriptedModel(), tools=[lookup])


@pytest.fixture
def processors() -> Iterator[Callable[[PrefactorTracingProcessor], None]]:
    """Install a processor as the SDK's only one (no export to OpenAI); none afterwards."""
    set_tracing_disabled(False)
    yield lambda processor: set_trace_processors([processor])
    set_trace_processors([])


def known(span: dict[str, Any], field: str) -> Any:
    """A field of the span's data: from its payload, or its result when set after it began."""
    return span["result_payload"].get(field, span["payload"].get(field))


def by_type(api: LocalPrefactor, instance_id: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for span in sorted(api.spans(instance_id), key=lambda s: s["started_at"]):
        found.setdefault(span["schema_name"], []).append(span)
    return found


def sdk_steps_hidden(span: dict[str, Any]) -> str | None:
    """Label spans by type, leaving out the SDK's own task and turn spans (new in 0.2x)."""
    internal = span["schema_name"] == "openai_agents:custom" and span["payload"].get("name") in (
        "task",
        "turn",
    )
    return None if internal else span["schema_name"]


@pytest.mark.parametrize("sync", [False, True], ids=["run", "run_sync"])
async def test_a_trace_is_recorded_under_the_current_span(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    processors: Callable[[PrefactorTracingProcessor], None],
    span_tree: Callable[..., str],
    sync: bool,
    in_thread: Callable[[Callable[[], Any]], Awaitable[Any]],
) -> None:
    """The trace, agent, model calls, tool and custom span nest under the caller's span."""
    processors(PrefactorTracingProcessor())
    scope = prefactor_client.agent_instance(agent_id="weather", agent_version=VERSION)
    async with scope as run, aioprefactor.span("app:request"):
        if sync:
            result = await in_thread(lambda: Runner.run_sync(weather_agent(), "Paris"))
        else:
            result = await Runner.run(weather_agent(), "Paris")
    assert "answer: sunny in Paris" == result.final_output
    assert await prefactor_client.flush(timeout=10)
    assert run.id is not None
    tree = span_tree(run.id, sdk_steps_hidden)
    assert f"app:request(complete)[{WEATHER_TREE}]" == tree

    spans = by_type(prefactor_api, run.id)
    assert "Agent workflow" == spans["openai_agents:trace"][0]["payload"]["workflow_name"]
    agent = spans["openai_agents:agent"][0]
    assert ("weather", "str") == (agent["payload"]["agent_name"], agent["payload"]["output_type"])
    assert ["lookup"] == known(agent, "tools")
    llm = spans["openai_agents:llm"][0]
    assert "scripted-1" == llm["payload"]["model"]
    assert {"messages": [{"role": "user", "content": "Paris"}]} == llm["payload"]["inputs"]
    assert {"input_tokens": 5, "output_tokens": 3} == llm["result_payload"]["usage"]
    assert "lookup" == llm["result_payload"]["outputs"]["messages"][0]["name"]
    tool = spans["openai_agents:tool"][0]
    assert ("lookup", {"city": "Paris"}) == (tool["payload"]["tool_name"], known(tool, "inputs"))
    assert {"output": "sunny in Paris"} == tool["result_payload"]["outputs"]
    cache = next(
        s for s in spans["openai_agents:custom"] if s["payload"]["name"] == "weather-cache"
    )
    assert {"city": "Paris", "hit": False} == cache["payload"]["data"]


async def test_handoffs_and_guardrails_are_recorded(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    processors: Callable[[PrefactorTracingProcessor], None],
) -> None:
    """A guardrail and a handoff to a second agent, each a span with its data."""

    @input_guardrail
    def polite(context: RunContextWrapper[Any], agent: Agent[Any], text: Any) -> Any:
        return GuardrailFunctionOutput(output_info={"checked": True}, tripwire_triggered=False)

    weather = weather_agent()
    router = Agent(
        name="router",
        model=ScriptedModel(hand_off_to="weather"),
        handoffs=[weather],
        input_guardrails=[polite],
    )
    processors(PrefactorTracingProcessor())
    async with prefactor_client.agent_instance(agent_version=VERSION) as run:
        result = await Runner.run(router, "Oslo")
    assert "answer: sunny in Oslo" == result.final_output
    assert await prefactor_client.flush(timeout=10)
    assert run.id is not None
    spans = by_type(prefactor_api, run.id)
    [guardrail] = spans["openai_agents:guardrail"]
    assert ({"name": "polite"}, {"triggered": False}) == (
        guardrail["payload"],
        guardrail["result_payload"],
    )
    [handoff] = spans["openai_agents:handoff"]
    assert "router" == handoff["payload"]["from_agent"]
    assert "weather" == handoff["result_payload"]["to_agent"]
    assert ["router", "weather"] == [
        s["payload"]["agent_name"] for s in spans["openai_agents:agent"]
    ]
    assert {"complete"} == {s["status"] for s in prefactor_api.spans(run.id)}


async def test_a_failing_model_fails_the_run_the_processor_opened(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    processors: Callable[[PrefactorTracingProcessor], None],
) -> None:
    """The model raises: the agent span carries the SDK's error, the trace and run fail."""
    processors(
        PrefactorTracingProcessor(client=prefactor_client, agent_id="w", agent_version=VERSION)
    )
    with pytest.raises(ModelDownError):
        await Runner.run(weather_agent(), "Nowhere")
    assert await prefactor_client.flush(timeout=10)
    [instance] = prefactor_api.instances()
    assert "failed" == instance["status"]
    spans = by_type(prefactor_api, instance["id"])
    assert "failed" == spans["openai_agents:trace"][0]["status"]
    agent = spans["openai_agents:agent"][0]
    assert "failed" == agent["status"]
    assert "SpanError" == agent["result_payload"]["error"]["type"]
    assert agent["result_payload"]["error"]["message"]


async def test_fifty_concurrent_runs_through_one_processor_never_mix(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    processors: Callable[[PrefactorTracingProcessor], None],
    span_tree: Callable[..., str],
    in_thread: Callable[[Callable[[], Any]], Awaitable[Any]],
) -> None:
    """25 Runner.run tasks and 25 run_sync threads at once: 50 runs, each its own tree."""
    processors(
        PrefactorTracingProcessor(client=prefactor_client, agent_id="w", agent_version=VERSION)
    )

    async def one(index: int) -> Any:
        if index % 2:
            return await in_thread(lambda: Runner.run_sync(weather_agent(), f"c{index}"))
        return await Runner.run(weather_agent(), f"c{index}")

    results = await asyncio.gather(*(one(i) for i in range(50)))
    assert [f"answer: sunny in c{i}" for i in range(50)] == [r.final_output for r in results]
    assert await prefactor_client.flush(timeout=30)
    instances = prefactor_api.instances()
    assert 50 == len(instances)
    cities = set()
    for instance in instances:
        assert "complete" == instance["status"]
        assert WEATHER_TREE == span_tree(instance["id"], sdk_steps_hidden)
        spans = by_type(prefactor_api, instance["id"])
        [city] = {known(s, "inputs")["city"] for s in spans["openai_agents:tool"]}
        assert {city} == {
            s["payload"]["inputs"]["messages"][0]["content"] for s in spans["openai_agents:llm"]
        }
        cities.add(city)
    assert {f"c{i}" for i in range(50)} == cities


async def test_outside_any_run_nothing_is_recorded(
    prefactor_api: LocalPrefactor, processors: Callable[[PrefactorTracingProcessor], None]
) -> None:
    """No current run and no agent version: the agent answers and nothing is sent."""
    processors(PrefactorTracingProcessor())
    result = await Runner.run(weather_agent(), "Rome")
    assert "answer: sunny in Rome" == result.final_output
    assert [] == prefactor_api.instances()


def test_force_flush_and_shutdown_flush_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """force_flush and shutdown hand the client's flush their timeout."""
    asked: list[float | None] = []
    monkeypatch.setattr(aioprefactor, "flush_sync", lambda timeout=None: asked.append(timeout))
    processor = PrefactorTracingProcessor(flush_timeout=2.5)
    processor.force_flush()
    processor.shutdown()
    processor.shutdown(timeout=1.0)
    assert [2.5, 2.5, 1.0] == asked


EXIT_SCRIPT = textwrap.dedent(
    """
    from agents import Agent, Runner, set_trace_processors
    from tests.integrations.test_integration_openai_agents import ScriptedModel, lookup
    from aioprefactor.integrations.openai_agents import PrefactorTracingProcessor

    set_trace_processors([PrefactorTracingProcessor(
        agent_id="exit", agent_version={"name": "Exit", "external_identifier": "1"})])
    agent = Agent(name="weather", model=ScriptedModel(), tools=[lookup])
    print(Runner.run_sync(agent, "Lima").final_output)
    """
)


async def test_nothing_is_lost_when_the_program_ends_right_after(
    prefactor_api: LocalPrefactor, span_tree: Callable[..., str]
) -> None:
    """A program that runs an agent and exits at once: its run and spans all land."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFACTOR_")}
    env |= {"PREFACTOR_API_URL": prefactor_api.url, "PREFACTOR_API_TOKEN": prefactor_api.token}
    env["PYTHONPATH"] = str(ROOT)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        EXIT_SCRIPT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert 0 == process.returncode, stderr.decode()
    assert "answer: sunny in Lima" == stdout.decode().strip()
    [instance] = prefactor_api.instances()
    assert "complete" == instance["status"]
    assert WEATHER_TREE == span_tree(instance["id"], sdk_steps_hidden)
