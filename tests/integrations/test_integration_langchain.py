from __future__ import annotations

import asyncio
import logging
import os
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest

if not os.environ.get("CI"):
    pytest.importorskip("langgraph", reason="needs pip install -e '.[test-integrations]'")

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

import aioprefactor
from aioprefactor.integrations.langchain import PrefactorCallbackHandler

if TYPE_CHECKING:
    from collections.abc import Callable

    from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
    from langgraph.graph.state import CompiledStateGraph

    from aioprefactor import Client, InstanceRun
    from aioprefactor.testing import LocalPrefactor

VERSION: dict[str, Any] = {"name": "Weather graph", "external_identifier": "1.0.0"}
USAGE: Any = {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}
GRAPH_TREE = (
    "langchain:agent(complete)["
    "langchain:node(complete)[langchain:llm(complete) langchain:chain(complete)] "
    "langchain:node(complete)[langchain:tool(complete)] "
    "langchain:node(complete)[langchain:llm(complete) langchain:chain(complete)]]"
)


class ModelDownError(RuntimeError):
    """The scripted model was asked to fail."""


class ScriptedChatModel(BaseChatModel):
    """Asks for the weather in the city it is given, then answers with the tool's result."""

    model: str = "scripted-1"
    delay: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        last = messages[-1]
        if isinstance(last, HumanMessage):
            if last.content == "Nowhere":
                raise ModelDownError("the model is down")
            reply = AIMessage(
                content="",
                tool_calls=[{"name": "lookup", "args": {"city": last.content}, "id": "call-1"}],
                usage_metadata=USAGE,
            )
        else:
            reply = AIMessage(content=f"answer: {last.content}", usage_metadata=USAGE)
        return ChatResult(generations=[ChatGeneration(message=reply)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.sleep(self.delay)
        return self._generate(messages, stop)


@tool
def lookup(city: str) -> str:
    """Look up the weather in a city."""
    if city == "Atlantis":
        raise ValueError("no weather under the sea")
    return f"sunny in {city}"


def build_graph(*, sync: bool, delay: float = 0.0) -> CompiledStateGraph[Any, Any, Any, Any]:
    """A model node and a tool node, looping until the model answers.

    The model node is a plain function, sync (for ``invoke``) or async (for ``ainvoke``).
    """
    model = ScriptedChatModel(delay=delay)

    def think(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    async def athink(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    if sync:
        graph.add_node("agent", think)
    else:
        graph.add_node("agent", athink)
    graph.add_node("tools", ToolNode([lookup]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


GRAPHS = {sync: build_graph(sync=sync) for sync in (False, True)}


async def run_graph(
    handler: PrefactorCallbackHandler, city: str, *, sync: bool, graph: Any = None
) -> Any:
    """Invoke the graph with the handler: ``ainvoke`` here, or ``invoke`` in a thread."""
    graph = graph if graph is not None else GRAPHS[sync]
    state = {"messages": [HumanMessage(city)]}
    config: Any = {"callbacks": [handler]}
    if sync:
        return await asyncio.to_thread(graph.invoke, state, config)
    return await graph.ainvoke(state, config)


def by_type(api: LocalPrefactor, instance_id: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for span in sorted(api.spans(instance_id), key=lambda s: s["started_at"]):
        found.setdefault(span["schema_name"], []).append(span)
    return found


@pytest.mark.parametrize("sync", [False, True], ids=["ainvoke", "invoke"])
async def test_a_graph_run_is_recorded_as_a_span_tree_under_the_current_span(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    span_tree: Callable[..., str],
    sync: bool,
) -> None:
    """The graph, its nodes, model, routing and tool calls nest under the caller's span."""
    handler = PrefactorCallbackHandler()
    scope = prefactor_client.agent_instance(agent_id="weather", agent_version=VERSION)
    async with scope as run, aioprefactor.span("app:request"):
        result = await run_graph(handler, "Paris", sync=sync)
    assert "answer: sunny in Paris" == result["messages"][-1].content
    assert await prefactor_client.flush(timeout=10)
    assert run.id is not None
    assert f"app:request(complete)[{GRAPH_TREE}]" == span_tree(run.id)

    spans = by_type(prefactor_api, run.id)
    agent = spans["langchain:agent"][0]
    assert "LangGraph" == agent["payload"]["agent_name"]
    assert [{"role": "human", "content": "Paris"}] == agent["payload"]["inputs"]["messages"]
    assert "answer: sunny in Paris" == agent["result_payload"]["outputs"]["messages"][-1]["content"]
    nodes = [(s["payload"]["node"], s["payload"]["step"]) for s in spans["langchain:node"]]
    assert [("agent", 1), ("tools", 2), ("agent", 3)] == nodes
    assert ["messages"] == spans["langchain:node"][0]["result_payload"]["updated_keys"]
    llm = spans["langchain:llm"][0]
    assert "scripted-1" == llm["payload"]["model_name"]
    assert "scriptedchatmodel" == llm["payload"]["provider"]  # LangChain's ls_provider
    assert [{"role": "human", "content": "Paris"}] == llm["payload"]["inputs"]["messages"]
    call = {"name": "lookup", "args": {"city": "Paris"}, "id": "call-1"}
    assert [call] == llm["result_payload"]["outputs"]["messages"][0]["tool_calls"]
    assert {
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "total_tokens": 8,
    } == llm["result_payload"]["token_usage"]
    used = spans["langchain:tool"][0]
    assert {"tool_name": "lookup", "inputs": {"city": "Paris"}} == used["payload"]
    assert "sunny in Paris" == used["result_payload"]["outputs"]["content"]
    assert ["tools_condition"] * 2 == [s["payload"]["name"] for s in spans["langchain:chain"]]


async def test_a_failing_tool_fails_its_spans_and_the_run_the_handler_opened(
    prefactor_api: LocalPrefactor, prefactor_client: Client, span_tree: Callable[..., str]
) -> None:
    """A tool's error: its span, its node and the graph fail; the handler's own run fails."""
    handler = PrefactorCallbackHandler(
        client=prefactor_client, agent_id="weather", agent_version=VERSION
    )
    with pytest.raises(ValueError, match="no weather under the sea"):
        await run_graph(handler, "Atlantis", sync=False)
    assert await prefactor_client.flush(timeout=10)
    [instance] = prefactor_api.instances()
    assert "failed" == instance["status"]
    assert (
        "langchain:agent(failed)["
        "langchain:node(complete)[langchain:llm(complete) langchain:chain(complete)] "
        "langchain:node(failed)[langchain:tool(failed)]]"
    ) == span_tree(instance["id"])
    failure = by_type(prefactor_api, instance["id"])["langchain:tool"][0]["result_payload"]
    assert failure["error"]["type"].endswith("ValueError")
    assert "no weather under the sea" == failure["error"]["message"]


async def test_a_failing_model_under_invoke_fails_the_run_the_handler_opened(
    prefactor_api: LocalPrefactor, prefactor_client: Client, span_tree: Callable[..., str]
) -> None:
    """A model's error under sync invoke: the model span, node, graph and run fail."""
    handler = PrefactorCallbackHandler(
        client=prefactor_client, agent_id="weather", agent_version=VERSION
    )
    with pytest.raises(ModelDownError):
        await run_graph(handler, "Nowhere", sync=True)
    assert await prefactor_client.flush(timeout=10)
    [instance] = prefactor_api.instances()
    assert "failed" == instance["status"]
    assert "langchain:agent(failed)[langchain:node(failed)[langchain:llm(failed)]]" == span_tree(
        instance["id"]
    )


async def test_a_cancelled_invocation_cancels_its_spans_and_the_run_the_handler_opened(
    prefactor_api: LocalPrefactor, prefactor_client: Client, span_tree: Callable[..., str]
) -> None:
    """Cancelled mid-model-call: the open spans and the handler's run are cancelled."""
    handler = PrefactorCallbackHandler(
        client=prefactor_client, agent_id="weather", agent_version=VERSION
    )
    task = asyncio.create_task(
        run_graph(handler, "Paris", sync=False, graph=build_graph(sync=False, delay=60))
    )
    while not prefactor_api.instances() and not task.done():  # noqa: ASYNC110 - the API has no event
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await prefactor_client.flush(timeout=10)
    [instance] = prefactor_api.instances()
    assert "cancelled" == instance["status"]
    assert (
        "langchain:agent(cancelled)[langchain:node(cancelled)[langchain:llm(cancelled)]]"
        == span_tree(instance["id"])
    )


async def test_fifty_concurrent_invocations_through_one_handler_never_mix(
    prefactor_api: LocalPrefactor, prefactor_client: Client, span_tree: Callable[..., str]
) -> None:
    """25 ainvoke tasks and 25 invoke threads at once: 50 runs, each with its own tree."""
    handler = PrefactorCallbackHandler()
    scope = prefactor_client.agent_instance(agent_id="weather", agent_version=VERSION)

    async def one(index: int) -> InstanceRun:
        async with scope as run:
            await run_graph(handler, f"city-{index}", sync=index % 2 == 1)
        return run

    runs = await asyncio.gather(*(one(i) for i in range(50)))
    assert await prefactor_client.flush(timeout=30)
    for index, run in enumerate(runs):
        instance_id = run.id
        assert instance_id is not None
        assert "complete" == prefactor_api.instance(instance_id)["status"]
        assert GRAPH_TREE == span_tree(instance_id)
        spans = by_type(prefactor_api, instance_id)
        city = f"city-{index}"
        assert city == spans["langchain:agent"][0]["payload"]["inputs"]["messages"][0]["content"]
        assert [{"city": city}] == [s["payload"]["inputs"] for s in spans["langchain:tool"]]
        assert (
            f"answer: sunny in {city}"
            == (spans["langchain:llm"][1]["result_payload"]["outputs"]["messages"][0]["content"])
        )


async def test_fifty_concurrent_invocations_each_get_a_run_of_their_own(
    prefactor_api: LocalPrefactor, prefactor_client: Client, span_tree: Callable[..., str]
) -> None:
    """With no current run, each of 50 concurrent invocations is one run, complete."""
    handler = PrefactorCallbackHandler(
        client=prefactor_client, agent_id="weather", agent_version=VERSION
    )
    await asyncio.gather(*(run_graph(handler, f"c{i}", sync=i % 2 == 0) for i in range(50)))
    assert await prefactor_client.flush(timeout=30)
    instances = prefactor_api.instances()
    assert 50 == len(instances)
    cities = set()
    for instance in instances:
        assert "complete" == instance["status"]
        assert GRAPH_TREE == span_tree(instance["id"])
        spans = by_type(prefactor_api, instance["id"])
        [city] = {s["payload"]["inputs"]["city"] for s in spans["langchain:tool"]}
        assert city == spans["langchain:agent"][0]["payload"]["inputs"]["messages"][0]["content"]
        cities.add(city)
    assert {f"c{i}" for i in range(50)} == cities


async def test_retrievers_and_text_models_are_recorded(
    prefactor_api: LocalPrefactor, prefactor_client: Client, span_tree: Callable[..., str]
) -> None:
    """A retriever query and a text completion, each a top-level span with its data."""

    class Shelf(BaseRetriever):
        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[Document]:
            return [Document(page_content=f"about {query}", metadata={"page": 1}, id="d1")]

    handler = PrefactorCallbackHandler()
    config: Any = {"callbacks": [handler]}
    async with prefactor_client.agent_instance(agent_version=VERSION) as run:
        await Shelf().ainvoke("tides", config)
        FakeListLLM(responses=["high at noon"]).invoke("When is high tide?", config)
    assert await prefactor_client.flush(timeout=10)
    assert run.id is not None
    assert "langchain:retriever(complete) langchain:llm(complete)" == span_tree(run.id)
    spans = by_type(prefactor_api, run.id)
    found = spans["langchain:retriever"][0]
    assert {"retriever_name": "Shelf", "query": "tides"} == found["payload"]
    assert [{"id": "d1", "page_content": "about tides", "metadata": {"page": 1}}] == found[
        "result_payload"
    ]["documents"]
    text = spans["langchain:llm"][0]
    assert {"prompts": ["When is high tide?"]} == text["payload"]["inputs"]
    assert {"texts": ["high at noon"]} == text["result_payload"]["outputs"]


async def test_span_types_are_declared_for_the_runs_schema(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """The langchain:* span types, with their schemas, are in the schema version registered."""
    handler = PrefactorCallbackHandler(
        client=prefactor_client, agent_id="weather", agent_version=VERSION
    )
    await run_graph(handler, "Oslo", sync=False)
    assert await prefactor_client.flush(timeout=10)
    [schema] = prefactor_api.schema_versions()
    types = {t["name"]: t for t in schema["span_type_schemas"]}
    expected = ["agent", "chain", "llm", "node", "retriever", "tool"]
    assert [f"langchain:{name}" for name in expected] == sorted(types)
    assert "integer" == types["langchain:node"]["params_schema"]["properties"]["step"]["type"]
    assert "object" == types["langchain:llm"]["result_schema"]["properties"]["token_usage"]["type"]


async def test_outside_any_run_nothing_is_recorded_and_the_graph_still_runs(
    prefactor_api: LocalPrefactor, caplog: pytest.LogCaptureFixture
) -> None:
    """No current run and no agent version: the graph answers, nothing is sent, one warning."""
    handler = PrefactorCallbackHandler()
    with caplog.at_level(logging.WARNING, logger="aioprefactor.integrations"):
        for _ in range(2):
            result = await run_graph(handler, "Rome", sync=False)
            assert "answer: sunny in Rome" == result["messages"][-1].content
    assert [] == prefactor_api.instances()
    assert 1 == sum("not recorded" in r.getMessage() for r in caplog.records)


async def test_a_failure_inside_the_handler_never_reaches_the_graph(
    prefactor_client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The recorder breaking: the graph still answers, and the handler logs why."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("recorder broken")

    monkeypatch.setattr(aioprefactor, "open_span", broken)
    handler = PrefactorCallbackHandler()
    with caplog.at_level(logging.WARNING, logger="aioprefactor.integrations"):
        async with prefactor_client.agent_instance(agent_version=VERSION):
            result = await run_graph(handler, "Lima", sync=False)
    assert "answer: sunny in Lima" == result["messages"][-1].content
    assert any("on_chain_start failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"agent_id": "weather"}, TypeError),
        ({"agent_version": {"external_identifier": "1"}}, ValueError),
        ({"agent_version": {"name": 3, "external_identifier": "1"}}, ValueError),
    ],
)
def test_bad_arguments_are_refused_when_the_handler_is_built(
    arguments: dict[str, Any], error: type[Exception]
) -> None:
    """An agent id without a version, or a bad version: an error before anything runs."""
    with pytest.raises(error):
        PrefactorCallbackHandler(**arguments)


EXIT_SCRIPT = textwrap.dedent(
    """
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.graph import START, MessagesState, StateGraph
    from aioprefactor.integrations.langchain import PrefactorCallbackHandler

    model = GenericFakeChatModel(messages=iter([AIMessage("done")]))
    graph = StateGraph(MessagesState)
    graph.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_edge(START, "agent")
    handler = PrefactorCallbackHandler(
        agent_id="exit", agent_version={"name": "Exit", "external_identifier": "1"})
    graph.compile().invoke({"messages": [HumanMessage("hi")]}, {"callbacks": [handler]})
    """
)


async def test_nothing_is_lost_when_the_program_ends_right_after(
    prefactor_api: LocalPrefactor, span_tree: Callable[..., str]
) -> None:
    """A sync program that invokes a graph and exits at once: its run and spans all land."""
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
    assert "langchain:agent(complete)[langchain:node(complete)[langchain:llm(complete)]]" == (
        span_tree(instance["id"])
    )
