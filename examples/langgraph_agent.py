"""A LangGraph agent with a tool, recorded through ``PrefactorCallbackHandler``.

The graph has a model node and a tool node; the model (a fake chat model, no network)
asks for the weather, the tool answers, and the model replies. Every node, model call,
routing decision and tool call becomes a span, nested under the run; then the span tree is
printed as the API recorded it.

Run it with ``python examples/langgraph_agent.py`` (needs ``pip install -e
'.[test-integrations]'``). It talks to ``PREFACTOR_API_URL`` (with ``PREFACTOR_API_TOKEN``)
when set, and otherwise to a local API it starts itself.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from _support import table
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

import aioprefactor
from aioprefactor.integrations.langchain import PrefactorCallbackHandler
from aioprefactor.testing import LocalPrefactor

VERSION = {"name": "Weather graph", "external_identifier": "1.0.0"}


@tool
def weather(city: str) -> str:
    """Look up the weather in a city."""
    return f"sunny and 21 degrees in {city}"


def build_graph() -> Any:
    """A model node and a tool node, looping until the model answers."""
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    content="",
                    tool_calls=[{"name": "weather", "args": {"city": "Lisbon"}, "id": "call-1"}],
                ),
                AIMessage(content="It is sunny and 21 degrees in Lisbon."),
            ]
        )
    )

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([weather]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


def tree(spans: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of the span tree, indented by depth, in the order the spans began."""
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in sorted(spans, key=lambda s: s["started_at"]):
        children.setdefault(span["parent_span_id"], []).append(span)
    rows: list[list[str]] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in children.get(parent, []):
            payload = span["payload"]
            what = next(
                (payload[k] for k in ("node", "tool_name", "provider", "name") if k in payload), ""
            )
            rows.append(["  " * depth + span["schema_name"], str(what), span["status"]])
            walk(span["id"], depth + 1)

    walk(None, 0)
    return rows


async def record(url: str, token: str, api: LocalPrefactor | None) -> None:
    """Run the graph once in a recorded run, and print what was recorded."""
    handler = PrefactorCallbackHandler()
    async with aioprefactor.Client(url, token) as client:
        scope = client.agent_instance(
            agent_id=os.environ.get("PREFACTOR_AGENT_ID", "langgraph-example"),
            agent_version=VERSION,
        )
        async with scope as run:
            state = await build_graph().ainvoke(
                {"messages": [HumanMessage("What is the weather in Lisbon?")]},
                {"callbacks": [handler]},
            )
        print("answer:", state["messages"][-1].content)
        await client.flush(timeout=10)
        assert run.id is not None
        instance = await client.agent_instances.get(run.id)
        print(f"run {instance.id}: {instance.status}")
    if api is not None:
        print("\nWhat the API recorded:\n")
        print(table(["span", "what", "status"], tree(api.spans(run.id))))


async def main() -> None:
    """Record against ``PREFACTOR_API_URL``, or a local API started here."""
    url = os.environ.get("PREFACTOR_API_URL")
    if url:
        await record(url, os.environ.get("PREFACTOR_API_TOKEN", ""), None)
        return
    async with LocalPrefactor() as api:
        print(f"(no PREFACTOR_API_URL set: using a local API at {api.url})\n")
        await record(api.url, api.token, api)


if __name__ == "__main__":
    asyncio.run(main())
