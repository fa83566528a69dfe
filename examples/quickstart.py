"""A small simulated agent, recorded three times: it completes, it fails, it is cancelled.

Each run plans, calls two tools at once, and writes an answer; every step is a span.
The second run's search tool raises; the third run is cut short by a timeout. Then the
instances are printed as the API recorded them, with the address of the local API's
timeline page, which shows them.

Run it with ``python examples/quickstart.py``. It talks to ``PREFACTOR_API_URL`` (with
``PREFACTOR_API_TOKEN``) when set, and otherwise to a local API it starts itself;
``--keep`` leaves that local API up (until Ctrl-C) to look at the runs in a browser.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from _support import api_endpoint, table, timeline_of

import aioprefactor
from aioprefactor import AgentInstance, InstanceRun, SpanRun, current_instance, span

aioprefactor.declare_span_type("agent:plan", title="Plan the answer")
aioprefactor.declare_span_type("agent:act", title="Use the tools")
aioprefactor.declare_span_type("agent:tool", title="Call a tool")
aioprefactor.declare_span_type("agent:answer", title="Write the answer")

RUNS: list[InstanceRun] = []
SPANS: dict[int, list[SpanRun]] = {}  # by id() of the run: a run's id may come later


class ToolError(RuntimeError):
    """A tool failed."""


def remember(handle: SpanRun) -> SpanRun:
    """Keep a span handle, so the span tree can be printed at the end."""
    run = current_instance()
    if run is not None:
        SPANS.setdefault(id(run), []).append(handle)
    return handle


async def call_tool(name: str, query: str, *, fail: bool, delay: float) -> str:
    """Pretend to call a tool."""
    async with span("agent:tool", payload={"tool": name, "query": query}) as step:
        remember(step)
        await asyncio.sleep(delay)
        if fail:
            raise ToolError(f"{name} is down")
        step.set_result({"text": f"{name} results for {query!r}"})
        return f"{name}: ok"


@aioprefactor.agent_instance(
    agent_id=os.environ.get("PREFACTOR_AGENT_ID", "quickstart-agent"),
    agent_version={"name": "Quickstart agent", "external_identifier": "1.0.0"},
)
async def answer(question: str, *, search_fails: bool = False, slow: bool = False) -> str:
    """Answer a question: plan, call two tools at once, write the answer."""
    run = current_instance()
    assert run is not None
    RUNS.append(run)
    async with span("agent:plan", payload={"question": question}) as step:
        remember(step)
        step.set_result({"plan": ["search", "calculator"]})
    async with span("agent:act", payload={"tools": ["search", "calculator"]}) as step:
        remember(step)
        async with asyncio.TaskGroup() as tools:
            search = tools.create_task(call_tool("search", question, fail=search_fails, delay=0.05))
            calculate = tools.create_task(
                call_tool("calculator", "6 * 7", fail=False, delay=5.0 if slow else 0.02)
            )
    async with span("agent:answer", payload={"inputs": 2}) as step:
        remember(step)
        text = f"{search.result()} / {calculate.result()}"
        step.set_result({"text": text})
        return text


def tree(spans: list[SpanRun]) -> str:
    """Render a run's spans as a one-line tree: name(status), children in brackets."""
    children: dict[str | None, list[SpanRun]] = {}
    for handle in spans:
        parent = handle.parent.id if handle.parent is not None else None
        children.setdefault(parent, []).append(handle)

    def render(parent: str | None) -> str:
        parts = []
        for handle in children.get(parent, []):
            status = handle.status or "not ended"
            inner = render(handle.id)
            parts.append(f"{handle.schema_name}({status})" + (f"[{inner}]" if inner else ""))
        return " ".join(parts)

    return render(None)


def duration(instance: AgentInstance) -> str:
    """How long the instance ran, as the API recorded it."""
    if instance.started_at is None or instance.finished_at is None:
        return "-"
    return f"{(instance.finished_at - instance.started_at).total_seconds() * 1000:.0f} ms"


async def main(*, keep: bool = False) -> None:
    """Run the agent three times, print what the API recorded and where to see it."""
    async with api_endpoint(keep=keep) as (url, token):
        aioprefactor.configure(url, token)
        print("1. a run that completes:", await answer("What is 6 * 7?"))
        try:
            await answer("What is the weather?", search_fails=True)
        except* ToolError as failure:
            print("2. a run whose tool fails:", failure.exceptions[0])
        try:
            async with asyncio.timeout(0.5):
                await answer("Summarise everything", slow=True)
        except TimeoutError:
            print("3. a run cut short by a timeout: cancelled after 0.5 s")

        # Runs are delivered in the background: wait until everything queued has been sent.
        await aioprefactor.flush()
        rows = []
        async with aioprefactor.Client(url, token) as client:
            for run in RUNS:
                run_id = await run.wait_recorded()
                assert run_id is not None
                instance = await client.agent_instances.get(run_id)
                spans = tree(SPANS[id(run)])
                rows.append([instance.id, instance.status, duration(instance), spans])
        print("\nWhat the API recorded:\n")
        print(table(["instance", "status", "duration", "spans"], rows))
        timeline = await timeline_of(url, token)
        if timeline is not None:
            print(f"\nSee these runs on the timeline: {timeline}")
            if not keep and not os.environ.get("PREFACTOR_API_URL"):
                print("(the local API stops now: run with --keep to leave it up and look)")


def parse_args() -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the local API up (until Ctrl-C) to look at the runs on its timeline",
    )
    return parser.parse_args()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(keep=parse_args().keep))
