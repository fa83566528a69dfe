"""How long a LangGraph run spends in the recorder's callbacks: ours against prefactor-langchain.

A graph whose fake model calls a tool 10 times, then answers, runs against a local API that
answers every request after 20 ms (in a process of its own). Each side times what LangChain
spends inside its callback handler (every on_* call, awaited ones included) per graph run,
and the graph run's own wall time; ours records with ``PrefactorCallbackHandler``,
the other side with prefactor-langchain 0.3.0's handler, in the venv given.

    python bench/langgraph.py --official-python /tmp/venv-pl/bin/python [--runs 20]

The official venv needs ``prefactor-langchain==0.3.0`` and ``langgraph``.
"""

# Each side imports only what its own interpreter has: the imports live in the functions.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOOL_CALLS = 10
LATENCY = 0.02
AGENT_VERSION = {"name": "Bench graph", "external_identifier": "1.0.0"}


def build_graph() -> Any:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    @tool
    def lookup(step: int) -> str:
        """Look something up."""
        return f"fact {step}"

    replies = [
        AIMessage(content="", tool_calls=[{"name": "lookup", "args": {"step": i}, "id": f"c{i}"}])
        for i in range(TOOL_CALLS)
    ]
    model = GenericFakeChatModel(messages=iter([*replies, AIMessage(content="done")]))

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([lookup]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


def timed(handler: Any, spent: list[float]) -> Any:
    """Wrap every on_* callback of the handler so the time inside it is added to spent."""
    for name in dir(handler):
        if not name.startswith("on_"):
            continue
        method = getattr(handler, name)
        if inspect.iscoroutinefunction(method):

            async def awaited(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await _method(*args, **kwargs)
                finally:
                    spent.append(time.perf_counter() - start)

            setattr(handler, name, functools.wraps(method)(awaited))
        else:

            def called(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return _method(*args, **kwargs)
                finally:
                    spent.append(time.perf_counter() - start)

            setattr(handler, name, functools.wraps(method)(called))
    return handler


async def run_ours(url: str, token: str, runs: int) -> list[tuple[float, float]]:
    from langchain_core.messages import HumanMessage

    import aioprefactor
    from aioprefactor.integrations.langchain import PrefactorCallbackHandler

    results = []
    async with aioprefactor.Client(url, token) as client:
        scope = client.agent_instance(agent_id="bench", agent_version=AGENT_VERSION)
        for _ in range(runs):
            spent: list[float] = []
            handler = timed(PrefactorCallbackHandler(), spent)
            graph = build_graph()
            start = time.perf_counter()
            async with scope:
                await graph.ainvoke({"messages": [HumanMessage("go")]}, {"callbacks": [handler]})
            results.append((sum(spent), time.perf_counter() - start))
        await client.flush(timeout=60)
    return results


async def run_official(url: str, token: str, runs: int) -> list[tuple[float, float]]:
    from langchain_core.messages import HumanMessage
    from prefactor_core import PrefactorCoreConfig, SchemaRegistry
    from prefactor_http import HttpClientConfig
    from prefactor_langchain import PrefactorCallbackHandler
    from prefactor_langchain.schemas import register_langchain_schemas

    registry = SchemaRegistry()
    tool_span_types = register_langchain_schemas(registry)
    config = PrefactorCoreConfig(
        http_config=HttpClientConfig(api_url=url, api_token=token), schema_registry=registry
    )
    client = PrefactorCallbackHandler.create_client(config)
    await client.initialize()
    results = []
    try:
        for _ in range(runs):
            spent: list[float] = []
            graph = build_graph()
            start = time.perf_counter()
            instance = await client.create_agent_instance(
                agent_id="bench", agent_version=AGENT_VERSION
            )
            await instance.start()
            handler = timed(
                PrefactorCallbackHandler(instance=instance, tool_span_types=tool_span_types),
                spent,
            )
            await graph.ainvoke({"messages": [HumanMessage("go")]}, {"callbacks": [handler]})
            await instance.finish()
            results.append((sum(spent), time.perf_counter() - start))
    finally:
        await client.close()
    return results


async def serve() -> None:
    from aioprefactor.testing import LocalPrefactor

    async with LocalPrefactor(record_requests=False) as api:
        api.faults.latency(LATENCY)
        print(json.dumps({"url": api.url, "token": api.token}), flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the driver closes our stdin


def side(python: str, name: str, url: str, token: str, runs: int) -> dict[str, float]:
    done = subprocess.run(
        [python, __file__, "--side", name, "--url", url, "--token", token, "--runs", str(runs)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{name} side failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(results: list[tuple[float, float]]) -> dict[str, float]:
    callbacks = [c for c, _ in results[1:] or results]  # the first run warms imports up
    walls = [w for _, w in results[1:] or results]
    return {
        "callbacks_ms": statistics.median(callbacks) * 1000,
        "run_ms": statistics.median(walls) * 1000,
    }


def main() -> None:
    # This file is named like the framework: run as a script, its folder must not shadow it.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-python", help="python of a venv with prefactor-langchain")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--side", choices=["ours", "official", "serve"])
    parser.add_argument("--url")
    parser.add_argument("--token")
    args = parser.parse_args()
    if args.side == "serve":
        asyncio.run(serve())
        return
    if args.side is not None:
        run = run_ours if args.side == "ours" else run_official
        print(json.dumps(summary(asyncio.run(run(args.url, args.token, args.runs)))))
        return

    server = subprocess.Popen(
        [sys.executable, __file__, "--side", "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        api = json.loads(server.stdout.readline())
        rows = {
            "ours (aioprefactor)": side(sys.executable, "ours", api["url"], api["token"], args.runs)
        }
        if args.official_python:
            rows["prefactor-langchain 0.3.0"] = side(
                args.official_python, "official", api["url"], api["token"], args.runs
            )
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    print(
        f"LangGraph run with {TOOL_CALLS} tool calls, local API at {LATENCY * 1000:.0f} ms a "
        f"request, median of {args.runs} runs ({Path(__file__).name})\n"
    )
    print(f"{'recorder':28} {'in callbacks':>14} {'graph run':>12}")
    for name, row in rows.items():
        print(f"{name:28} {row['callbacks_ms']:>11.2f} ms {row['run_ms']:>9.1f} ms")
    if len(rows) == 2:
        ours, theirs = rows.values()
        ratio = ours["callbacks_ms"] / theirs["callbacks_ms"]
        print(f"\nours / official, time in callbacks: {ratio:.4f}x")


if __name__ == "__main__":
    main()
