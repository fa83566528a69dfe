"""A small sync agent: plain functions and a thread pool, no asyncio in sight.

Each question is answered in a run (``with agent_instance(...)``): a plan, three searches
fanned out over a ``ContextThreadPoolExecutor``, then an answer. Every step is a span;
the searches run in pool threads yet nest under the fan-out span, because the executor
carries the context into them. Nothing here waits for the API: a background thread
delivers, ``flush_sync()`` waits for it before the runs are read back and printed, and
``shutdown_sync()`` closes the default client (the program's exit would do both).

Run it with ``python examples/sync_agent.py``. It talks to ``PREFACTOR_API_URL`` (with
``PREFACTOR_API_TOKEN``) when set, and otherwise to a local API it starts itself.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from _support import api_endpoint_sync, table

import aioprefactor
from aioprefactor import Client, ContextThreadPoolExecutor, InstanceRun, current_span, span

VERSION = {"name": "Sync agent", "external_identifier": "1.0.0"}
QUESTIONS = ["Who built the first compiler?", "Why is the sky blue?"]

# Where each search ran: (thread name, the span it nested under).
PLACES: list[tuple[str, str]] = []


@span("agent:search")
def search(query: str) -> list[str]:
    """Pretend to search, in whichever pool thread runs it."""
    here = current_span()
    parent = here.parent.schema_name if here is not None and here.parent is not None else "-"
    PLACES.append((threading.current_thread().name, parent))
    time.sleep(0.02)
    return [f"{query}: result {n}" for n in range(2)]


@span("agent:answer")
def write_answer(question: str, hits: list[str]) -> str:
    """Pretend to write an answer from the search results."""
    return f"{question} ({len(hits)} sources)"


def handle(question: str) -> InstanceRun:
    """Answer one question in a run of its own."""
    agent_id = os.environ.get("PREFACTOR_AGENT_ID", "sync-agent")
    with aioprefactor.agent_instance(agent_id=agent_id, agent_version=VERSION) as run:
        with span("agent:plan", payload={"question": question}) as plan:
            queries = [f"{question} {aspect}" for aspect in ("facts", "history", "sources")]
            plan.set_result({"queries": queries})
        with (
            span("agent:fan-out", payload={"queries": len(queries)}),
            ContextThreadPoolExecutor(max_workers=3, thread_name_prefix="search") as pool,
        ):
            hits = [hit for found in pool.map(search, queries) for hit in found]
        print(" ", write_answer(question, hits))
    return run


async def recorded(url: str, token: str, runs: list[InstanceRun]) -> list[list[str]]:
    """Read the runs back from the API."""
    rows = []
    async with Client(url, token) as client:
        for run in runs:
            assert run.id is not None
            instance = await client.agent_instances.get(run.id)
            spans = instance.span_counts.total if instance.span_counts is not None else "-"
            rows.append([instance.id, instance.status, str(spans)])
    return rows


def main() -> None:
    """Answer the questions, then print what the API recorded."""
    with api_endpoint_sync() as (url, token):
        aioprefactor.configure(url, token)
        print("Answers:")
        runs = [handle(question) for question in QUESTIONS]
        delivered = aioprefactor.flush_sync(timeout=10)
        print(f"\nEverything delivered: {delivered}\n")
        print(table(["instance", "status", "spans"], asyncio.run(recorded(url, token, runs))))
        print("\nWhere the searches ran:\n")
        print(table(["thread", "nested under"], [list(place) for place in sorted(PLACES)]))
        aioprefactor.shutdown_sync(timeout=10)


if __name__ == "__main__":
    main()
