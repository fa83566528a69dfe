"""Sync code: with-blocks, and decorators on def, methods and generator functions.

The sync code runs in a worker thread (``asyncio.to_thread``), where no event loop runs,
while the local API serves on the test's loop.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

import aioprefactor
from aioprefactor import span

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from tests.conftest import Scripts, SpanTree

    from aioprefactor import Client, InstanceRun
    from aioprefactor.testing import LocalPrefactor

VERSION: dict[str, Any] = {"name": "Sync agent", "external_identifier": "1.0.0"}


async def status_of(api: LocalPrefactor, client: Client, run: InstanceRun) -> str:
    """Flush, then return the run's status as the API recorded it."""
    assert await client.flush(timeout=10)
    assert run.id is not None
    status: str = api.instance(run.id)["status"]
    return status


async def test_sync_block_records_a_run_with_nested_spans(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    span_tree: SpanTree,
) -> None:
    """A sync with-block records the run and its nested spans, results included."""

    def agent() -> InstanceRun:
        with prefactor_client.agent_instance(agent_id="sync", agent_version=VERSION) as run:
            assert run is aioprefactor.current_instance()
            with span("agent:outer", payload={"step": 1}) as outer:
                assert outer is aioprefactor.current_span()
                with span("agent:inner") as inner:
                    assert outer is inner.parent
                    inner.set_result({"answer": 42})
            assert aioprefactor.current_span() is None
        assert aioprefactor.current_instance() is None
        return run

    run = await asyncio.to_thread(agent)
    assert "complete" == await status_of(prefactor_api, prefactor_client, run)
    assert Counter(
        [
            ("agent:outer", "complete", None),
            ("agent:inner", "complete", "agent:outer"),
        ]
    ) == span_tree(run.id)
    spans = {one["schema_name"]: one for one in prefactor_api.spans(run.id)}
    outer, inner = spans["agent:outer"], spans["agent:inner"]
    assert {"step": 1} == outer["payload"]
    assert {"answer": 42} == inner["result_payload"]


@pytest.mark.parametrize(
    ("ending", "expected"),
    [
        (ValueError("tool broke"), "failed"),
        (KeyboardInterrupt(), "cancelled"),
        (SystemExit(0), "complete"),
        (SystemExit(None), "complete"),
        (SystemExit(3), "failed"),
    ],
    ids=["exception", "keyboard-interrupt", "exit-0", "exit-none", "exit-3"],
)
async def test_sync_block_status_follows_how_it_ended(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    ending: BaseException,
    expected: str,
    span_tree: SpanTree,
) -> None:
    """Run and spans end as the table says, and the exception propagates unchanged."""

    def agent() -> InstanceRun:
        scope = prefactor_client.agent_instance(agent_id="sync", agent_version=VERSION)
        with (
            pytest.raises(type(ending)) as caught,
            scope as run,
            span("agent:outer"),
            span("agent:inner"),
        ):
            raise ending
        assert ending is caught.value
        return run

    run = await asyncio.to_thread(agent)
    assert expected == await status_of(prefactor_api, prefactor_client, run)
    assert Counter(
        [
            ("agent:outer", expected, None),
            ("agent:inner", expected, "agent:outer"),
        ]
    ) == span_tree(run.id)


class Agent:
    """An agent whose entrypoint and tool are methods."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.runs: list[InstanceRun] = []

    @span("agent:tool")
    def search(self, query: str, *, k: int = 3) -> list[str]:
        """Search for documents."""
        return [f"{query} {n}" for n in range(k)]

    def answer(self, question: str) -> str:
        """Answer a question in a run of its own."""

        @self.client.agent_instance(agent_id="sync", agent_version=VERSION)
        def run(question: str) -> str:
            current = aioprefactor.current_instance()
            assert current is not None
            self.runs.append(current)
            return " / ".join(self.search(question, k=2))

        return run(question)


async def test_decorated_def_keeps_its_signature_and_records_a_run_per_call(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    span_tree: SpanTree,
) -> None:
    """@agent_instance and @span on def: same name, doc, signature; one run per call."""

    def answer(question: str, *, retries: int = 2) -> str:
        """Answer a question."""
        with span("agent:llm"):
            return question * retries

    scope = prefactor_client.agent_instance(agent_id="sync", agent_version=VERSION)
    decorated = scope(answer)
    assert (answer.__name__, answer.__qualname__, "Answer a question.") == (
        decorated.__name__,
        decorated.__qualname__,
        decorated.__doc__,
    )
    assert inspect.signature(answer) == inspect.signature(decorated)
    assert not inspect.iscoroutinefunction(decorated)

    def calls() -> list[str]:
        return [decorated("ab", retries=3), decorated("c")]

    assert ["ababab", "cc"] == await asyncio.to_thread(calls)
    assert await prefactor_client.flush(timeout=10)
    instances = prefactor_api.instances()
    assert ["complete", "complete"] == [one["status"] for one in instances]
    for instance in instances:
        assert Counter([("agent:llm", "complete", None)]) == span_tree(instance["id"])


async def test_decorated_methods_record_their_spans_under_the_run(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    span_tree: SpanTree,
) -> None:
    """A @span method keeps its signature, gets self, and nests under the caller's run."""
    assert ["query", "k"] == list(inspect.signature(Agent.search).parameters)[1:]
    agent = Agent(prefactor_client)
    assert "q 0 / q 1" == await asyncio.to_thread(agent.answer, "q")
    (run,) = agent.runs
    assert "complete" == await status_of(prefactor_api, prefactor_client, run)
    assert Counter([("agent:tool", "complete", None)]) == span_tree(run.id)


def steps_of(client: Client) -> Callable[[int], Generator[int]]:
    """A decorated generator function: one run per iteration, one span per item."""

    @client.agent_instance(agent_id="sync", agent_version=VERSION)
    def steps(count: int) -> Generator[int]:
        """Yield the steps, each in a span."""
        for n in range(count):
            with span("agent:step", payload={"n": n}):
                yield n
        if count < 0:
            raise ValueError(count)

    return steps


async def test_decorated_generator_run_lasts_the_whole_iteration(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    span_tree: SpanTree,
) -> None:
    """The run of a generator starts at the first item and ends when it is exhausted."""
    steps = steps_of(prefactor_client)
    assert inspect.isgeneratorfunction(steps)
    assert (["count"], "Yield the steps, each in a span.") == (
        list(inspect.signature(steps).parameters),
        steps.__doc__,
    )
    runs: list[InstanceRun | None] = []

    def consume() -> list[int]:
        items = []
        for item in steps(3):
            runs.append(aioprefactor.current_instance())  # not current in the consumer
            items.append(item)
        return items

    assert [0, 1, 2] == await asyncio.to_thread(consume)
    assert [None, None, None] == runs
    assert await prefactor_client.flush(timeout=10)
    (instance,) = prefactor_api.instances()
    assert "complete" == instance["status"]
    assert Counter([("agent:step", "complete", None)] * 3) == span_tree(instance["id"])


@pytest.mark.parametrize("close", [True, False], ids=["closed", "dropped"])
async def test_decorated_generator_abandoned_early_is_cancelled(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    span_tree: SpanTree,
    close: bool,
) -> None:
    """A generator closed, or dropped, before it is exhausted ends its run and span cancelled."""
    steps = steps_of(prefactor_client)

    def consume() -> None:
        for item in (iterator := steps(5)):
            if item == 1:
                break
        if close:
            iterator.close()
        del iterator  # the last reference: CPython closes the generator here

    await asyncio.to_thread(consume)
    assert await prefactor_client.flush(timeout=10)
    (instance,) = prefactor_api.instances()
    assert "cancelled" == instance["status"]
    assert Counter(
        [
            ("agent:step", "complete", None),
            ("agent:step", "cancelled", None),
        ]
    ) == span_tree(instance["id"])


async def test_decorated_generator_that_raises_fails(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """A generator that raises ends its run failed; the consumer gets the exception."""
    steps = steps_of(prefactor_client)

    def consume() -> None:
        with pytest.raises(ValueError, match="-1"):
            list(steps(-1))

    await asyncio.to_thread(consume)
    assert await prefactor_client.flush(timeout=10)
    (instance,) = prefactor_api.instances()
    assert "failed" == instance["status"]


async def test_span_on_a_generator_function_lasts_the_iteration(
    prefactor_api: LocalPrefactor,
    prefactor_client: Client,
    span_tree: SpanTree,
) -> None:
    """@span on a generator function: one span for the whole iteration; send() still works."""

    @span("agent:stream")
    def echo() -> Generator[str, str | None]:
        received = yield "first"
        while received is not None:
            received = yield f"got {received}"

    def agent() -> tuple[InstanceRun, list[str]]:
        with prefactor_client.agent_instance(agent_id="sync", agent_version=VERSION) as run:
            stream = echo()
            seen = [next(stream), stream.send("a"), stream.send("b")]
            with pytest.raises(StopIteration):
                stream.send(None)
        return run, seen

    run, seen = await asyncio.to_thread(agent)
    assert ["first", "got a", "got b"] == seen
    assert "complete" == await status_of(prefactor_api, prefactor_client, run)
    assert Counter([("agent:stream", "complete", None)]) == span_tree(run.id)


# Whole scripts: how the process ends decides the status, and the exit flushes it.

ENDING = """
    import sys
    import aioprefactor
    from aioprefactor import span

    with aioprefactor.agent_instance(
        agent_id="script", agent_version={{"name": "S", "external_identifier": "1"}}
    ):
        with span("agent:step"):
            {ending}
"""


@pytest.mark.parametrize(
    ("ending", "returncode", "expected"),
    [
        ("pass", 0, "complete"),
        ("sys.exit(0)", 0, "complete"),
        ("sys.exit(3)", 3, "failed"),
        ("raise RuntimeError('broke')", 1, "failed"),
        ("raise KeyboardInterrupt", -2, "cancelled"),
    ],
    ids=["falls-off", "exit-0", "exit-3", "exception", "keyboard-interrupt"],
)
async def test_a_script_records_how_it_ended(
    prefactor_api: LocalPrefactor,
    scripts: Scripts,
    ending: str,
    returncode: int,
    expected: str,
    span_tree: SpanTree,
) -> None:
    """A script's run and span end with its ending's status, flushed as the process exits."""
    child = await scripts.run(ENDING.format(ending=ending), prefactor_api)
    assert returncode == child.returncode, child.stderr
    (instance,) = prefactor_api.instances()
    assert expected == instance["status"]
    assert Counter([("agent:step", expected, None)]) == span_tree(instance["id"])


SHORT_SCRIPT = """
    import json
    import aioprefactor
    from aioprefactor import span

    with aioprefactor.agent_instance(
        agent_id="script", agent_version={"name": "S", "external_identifier": "1"}
    ) as run:
        for n in range(3):
            with span("agent:step", payload={"n": n}) as step:
                step.set_result({"done": n})
    print(json.dumps({"id_at_block_end": run.id}), flush=True)
"""


async def test_a_script_that_ends_right_after_its_run_is_flushed_at_exit(
    prefactor_api: LocalPrefactor,
    scripts: Scripts,
    span_tree: SpanTree,
) -> None:
    """200 ms per request: the block ends before any answer, and the exit still sends all."""
    prefactor_api.faults.latency(0.2)
    child = await scripts.run(SHORT_SCRIPT, prefactor_api)
    assert 0 == child.returncode, child.stderr
    assert "" == child.stderr
    assert [{"id_at_block_end": None}] == [json.loads(line) for line in child.lines]
    (instance,) = prefactor_api.instances()
    assert "complete" == instance["status"]
    assert Counter([("agent:step", "complete", None)] * 3) == span_tree(instance["id"])
    assert [{"done": n} for n in range(3)] == [
        one["result_payload"] for one in prefactor_api.spans(instance["id"])
    ]
