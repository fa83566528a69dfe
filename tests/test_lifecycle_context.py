from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any

import pytest

import aioprefactor

if TYPE_CHECKING:
    from aioprefactor import Client, InstanceRun, SpanRun
    from aioprefactor.testing import LocalPrefactor


pytestmark = pytest.mark.inline
VERSION: dict[str, Any] = {"name": "Context agent", "external_identifier": "1.0.0"}


def where() -> tuple[InstanceRun | None, SpanRun | None]:
    return aioprefactor.current_instance(), aioprefactor.current_span()


async def test_nothing_is_current_outside_a_run() -> None:
    """None and None: no run and no span outside any block."""
    assert where() == (None, None)


async def test_nested_runs_shadow_and_restore(prefactor_client: Client) -> None:
    """The inner run while it lasts, then the outer run and its span again."""
    outer_scope = prefactor_client.agent_instance(agent_id="outer", agent_version=VERSION)
    inner_scope = prefactor_client.agent_instance(agent_id="inner", agent_version=VERSION)
    async with outer_scope as outer, aioprefactor.span("agent:step") as step:
        assert where() == (outer, step)
        async with inner_scope as inner:
            assert where() == (inner, None)
            async with aioprefactor.span("agent:inner") as inner_step:
                assert where() == (inner, inner_step)
                assert inner_step.run is inner
                assert inner_step.parent is None
            assert where() == (inner, None)
        assert where() == (outer, step)
    assert where() == (None, None)


async def test_same_scope_nested_shadows_and_restores(prefactor_client: Client) -> None:
    """The same scope entered twice, nested: two runs, innermost current, restored in order."""
    scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
    async with scope as first:
        async with scope as second:
            assert aioprefactor.current_instance() is second
        assert aioprefactor.current_instance() is first
        assert second.status == "complete"
    assert first.id != second.id
    assert first.status == "complete"


@pytest.mark.parametrize("ending", ["return", "raise", "cancel"])
async def test_nothing_leaks_after_the_block(prefactor_client: Client, ending: str) -> None:
    """None and None after the block, however it ended."""
    inside = asyncio.Event()

    async def agent() -> None:
        scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
        async with scope, aioprefactor.span("agent:step"):
            inside.set()
            if ending == "raise":
                raise ValueError("x")
            if ending == "cancel":
                await asyncio.sleep(10)
        assert where() == (None, None)

    async def watch() -> None:
        try:
            await agent()
        except (ValueError, asyncio.CancelledError):
            assert where() == (None, None)
            raise

    task = asyncio.create_task(watch())
    await inside.wait()
    if ending == "cancel":
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert where() == (None, None)
    # The next run in this context starts clean as well.
    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        assert where() == (run, None)


async def test_tasks_created_inside_a_run_see_it(prefactor_client: Client) -> None:
    """The run and span current where they were created: create_task, gather, TaskGroup."""
    scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
    async with scope as run, aioprefactor.span("agent:step") as step:

        async def look() -> tuple[InstanceRun | None, SpanRun | None]:
            await asyncio.sleep(0)
            return where()

        task = asyncio.create_task(look())
        async with asyncio.TaskGroup() as group:
            grouped = [group.create_task(look()) for _ in range(3)]
        seen = [await task, *await asyncio.gather(look(), look()), *(t.result() for t in grouped)]
    assert seen == [(run, step)] * 6


async def test_to_thread_sees_the_run(prefactor_client: Client) -> None:
    """The run and span: asyncio.to_thread copies the context into the worker thread."""
    scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
    async with scope as run, aioprefactor.span("agent:step") as step:
        assert await asyncio.to_thread(where) == (run, step)
    assert await asyncio.to_thread(where) == (None, None)


async def test_copied_context_keeps_the_run_it_was_copied_in(prefactor_client: Client) -> None:
    """The run: a context copied inside the block (what executors do) still holds it."""
    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        copied = contextvars.copy_context()
    assert copied.run(aioprefactor.current_instance) is run
    assert aioprefactor.current_instance() is None


async def test_concurrent_runs_each_see_their_own_and_own_their_spans(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """100 concurrent runs: every span lands under its own run, nested under its own parent."""

    async def agent(i: int) -> tuple[InstanceRun, SpanRun, SpanRun]:
        scope = prefactor_client.agent_instance(
            agent_id="a", agent_version=VERSION, external_identifier=f"run-{i}"
        )
        async with scope as run:
            async with aioprefactor.span("agent:plan", {"i": i}) as plan:
                await asyncio.sleep(0.001 * (i % 7))
                async with aioprefactor.span("agent:tool", {"i": i}) as tool:
                    assert where() == (run, tool)
                    await asyncio.sleep(0.001 * (i % 5))
                assert where() == (run, plan)
            assert where() == (run, None)
            return run, plan, tool

    results = await asyncio.gather(*(agent(i) for i in range(100)))
    assert where() == (None, None)
    assert len({run.id for run, _, _ in results}) == 100
    for i, (run, plan, tool) in enumerate(results):
        assert run.id is not None
        assert run.status == "complete"
        instance = prefactor_api.instance(run.id)
        assert (instance["status"], instance["external_identifier"]) == ("complete", f"run-{i}")
        spans = {s["id"]: s for s in prefactor_api.spans(run.id)}
        assert set(spans) == {plan.id, tool.id}
        assert plan.id is not None
        assert tool.id is not None
        assert spans[plan.id]["parent_span_id"] is None
        assert spans[tool.id]["parent_span_id"] == plan.id
        for s in spans.values():
            assert (s["agent_instance_id"], s["payload"], s["status"]) == (
                run.id,
                {"i": i},
                "complete",
            )


async def test_spans_nest_under_the_current_span(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """parent_span_id = the current span's id; siblings share a parent; parent= overrides it."""
    scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
    async with scope as run, aioprefactor.span("agent:root") as root:
        async with aioprefactor.span("agent:a") as a:
            assert a.parent is root
            async with aioprefactor.span("agent:a1") as a1:
                assert a1.parent is a
        async with aioprefactor.span("agent:b") as b:
            async with aioprefactor.span("agent:explicit", parent=root) as explicit:
                assert aioprefactor.current_span() is explicit

            async def child() -> str | None:
                async with aioprefactor.span("agent:child") as c:
                    return c.id

            child_ids = await asyncio.gather(child(), child())
    assert run.id is not None
    parents = {s["id"]: s["parent_span_id"] for s in prefactor_api.spans(run.id)}
    assert parents == {
        root.id: None,
        a.id: root.id,
        a1.id: a.id,
        b.id: root.id,
        explicit.id: root.id,
        child_ids[0]: b.id,
        child_ids[1]: b.id,
    }


async def test_span_in_a_task_that_outlives_its_parent_span(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """The parent where the task was created, even when it has finished by then."""
    release = asyncio.Event()
    scope = prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
    async with scope as run:

        async def late() -> SpanRun:
            await release.wait()
            async with aioprefactor.span("agent:late") as late_span:
                return late_span

        async with aioprefactor.span("agent:parent") as parent:
            task = asyncio.create_task(late())
        release.set()
        late_span = await task
    assert late_span.parent is parent
    assert late_span.run is run
    assert late_span.id is not None
    assert prefactor_api.span(late_span.id)["parent_span_id"] == parent.id
