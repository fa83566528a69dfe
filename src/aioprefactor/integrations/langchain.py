"""Record LangChain and LangGraph runs: ``PrefactorCallbackHandler``.

```python
from aioprefactor.integrations.langchain import PrefactorCallbackHandler

handler = PrefactorCallbackHandler()   # records into the current agent_instance run
async with client.agent_instance(agent_id="bot", agent_version=version):
    await graph.ainvoke(state, config={"callbacks": [handler]})
```

Each top-level invocation is a ``langchain:agent`` span; LangGraph nodes are
``langchain:node`` spans (with their node name and step), chat and text models
``langchain:llm``, tools ``langchain:tool``, retrievers ``langchain:retriever`` and other
chains ``langchain:chain``, each with the time its callback reported its start and end.
Needs ``pip install 'aioprefactor[langchain]'``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from langchain_core.callbacks import BaseCallbackHandler

import aioprefactor
from aioprefactor.integrations import _langchain_payloads as payloads
from aioprefactor.integrations._bridge import (
    Anchor,
    RunSource,
    drop_none,
    guarded,
    utc_now,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from uuid import UUID

    from langchain_core.documents import Document
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult

    from aioprefactor import AgentVersion, Client, SpanRun

__all__ = ["PrefactorCallbackHandler", "declare_span_types"]

declare_span_types: Final = payloads.declare_span_types
declare_span_types()

_HIDDEN: Final = "langsmith:hidden"


@dataclass(slots=True, eq=False)
class _Open:
    """One LangChain run the handler is following."""

    span: SpanRun | None  # None: followed only so its children nest correctly
    parent: UUID | None
    root: UUID
    recorded: bool  # whether its invocation is recorded in a run at all
    anchor: Anchor | None = None  # roots only
    children: set[UUID] = field(default_factory=set)  # those still open


class PrefactorCallbackHandler(BaseCallbackHandler):
    """A LangChain callback handler that records every run as a Prefactor span.

    One handler may serve any number of concurrent invocations, from ``invoke`` in many
    threads and ``ainvoke`` in many tasks: each LangChain run is followed by its
    ``run_id``, nested by its ``parent_run_id``, and an invocation's top-level span nests
    under the span current where the invocation started. Callbacks only record and
    enqueue; none waits for the network, and none raises into LangChain.

    With no ``agent_instance`` run current, and an ``agent_version`` given, each top-level
    invocation is recorded as a run of its own, finished ``complete``, ``failed`` or
    ``cancelled`` as the invocation ended. With neither, nothing is recorded (logged once).

    Args:
        client: The client runs of the handler's own are recorded with; the default
            client when omitted.
        agent_id: The agent those runs belong to (``PREFACTOR_AGENT_ID`` when omitted).
        agent_version: The agent version those runs register; without it the handler
            records only inside a current run.

    Raises:
        TypeError: ``agent_id`` without ``agent_version``, or a bad ``agent_version``.
        ValueError: A bad ``agent_id`` or ``agent_version``.
    """

    # Called on the event loop's thread under ``ainvoke`` (not in an executor): in order,
    # at the moment of the event, in the invocation's own context.
    run_inline = True

    def __init__(
        self,
        *,
        client: Client | None = None,
        agent_id: str | None = None,
        agent_version: AgentVersion | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        declare_span_types()  # so runs registered from now on list them, even if cleared
        self._runs = RunSource(client, agent_id, agent_version)
        self._lock = threading.Lock()
        self._open: dict[UUID, _Open] = {}

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until what the handler recorded is delivered; ``True`` if everything was.

        For short-lived programs and tests; a long-running process needs no flush.
        """
        return self._runs.flush(timeout)

    # Chains: the top-level invocation, LangGraph nodes, other runnables.

    @guarded
    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Record a chain: the invocation itself, a graph node, or another runnable."""
        name = _name(serialized, kwargs)
        meta = metadata or {}
        node = meta.get("langgraph_node")
        if self._is_root(parent_run_id):
            self._start(run_id, parent_run_id, payloads.AGENT, lambda: _agent(name, inputs))
        elif node is not None and node == name:
            step = meta.get("langgraph_step")
            self._start(
                run_id,
                parent_run_id,
                payloads.NODE,
                lambda: drop_none(
                    {"node": name, "step": step if isinstance(step, int) else None}
                    | {"inputs": payloads.state(inputs)}
                ),
            )
        elif _HIDDEN in (tags or ()):
            self._start(run_id, parent_run_id, None, dict)
        else:
            self._start(
                run_id,
                parent_run_id,
                payloads.CHAIN,
                lambda: {"name": name, "inputs": payloads.state(inputs)},
            )

    @guarded
    def on_chain_end(
        self,
        outputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Finish a chain's span with its outputs."""
        self._end(run_id, lambda span: _chain_result(span, outputs))

    @guarded
    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Finish a chain's span as failed (or cancelled), with the error."""
        self._end(run_id, None, error)

    # Models.

    @guarded
    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Record a chat model call with the model, provider and messages in."""

        def payload() -> dict[str, Any]:
            sent = [[payloads.message(m) for m in batch] for batch in messages]
            inputs = {"messages": sent[0]} if len(sent) == 1 else {"batches": sent}
            fields = payloads.model_fields(metadata, kwargs.get("invocation_params"))
            return fields | {"inputs": inputs}

        self._start(run_id, parent_run_id, payloads.LLM, payload)

    @guarded
    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Record a text completion call with the model, provider and prompts."""
        self._start(
            run_id,
            parent_run_id,
            payloads.LLM,
            lambda: (
                payloads.model_fields(metadata, kwargs.get("invocation_params"))
                | {"inputs": {"prompts": list(prompts)}}
            ),
        )

    @guarded
    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Finish a model call's span with the generations and the token usage."""
        self._end(run_id, lambda _: payloads.generations(response))

    @guarded
    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Finish a model call's span as failed (or cancelled), with the error."""
        self._end(run_id, None, error)

    # Tools and retrievers.

    @guarded
    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Record a tool run with the tool's name and input."""
        self._start(
            run_id,
            parent_run_id,
            payloads.TOOL,
            lambda: {
                "tool_name": _name(serialized, kwargs),
                "inputs": payloads.state(inputs) if inputs is not None else {"input": input_str},
            },
        )

    @guarded
    def on_tool_end(
        self,
        output: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Finish a tool's span with its output."""
        self._end(run_id, lambda _: payloads.tool_output(output))

    @guarded
    def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Finish a tool's span as failed (or cancelled), with the error."""
        self._end(run_id, None, error)

    @guarded
    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Record a retriever query."""
        self._start(
            run_id,
            parent_run_id,
            payloads.RETRIEVER,
            lambda: {"retriever_name": _name(serialized, kwargs), "query": query},
        )

    @guarded
    def on_retriever_end(
        self,
        documents: Sequence[Document],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Finish a retriever's span with the documents found."""
        self._end(run_id, lambda _: payloads.documents(documents))

    @guarded
    def on_retriever_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Finish a retriever's span as failed (or cancelled), with the error."""
        self._end(run_id, None, error)

    # Following runs.

    def _is_root(self, parent_run_id: UUID | None) -> bool:
        # A run whose parent the handler does not follow starts an invocation of its own
        # (the handler may have been given to an inner runnable only).
        with self._lock:
            return parent_run_id is None or parent_run_id not in self._open

    def _start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        schema_name: str | None,
        payload: Callable[[], dict[str, Any]],
    ) -> None:
        started_at = utc_now()
        with self._lock:
            parent = self._open.get(parent_run_id) if parent_run_id is not None else None
            parent_span = self._nearest_span(parent)
        if parent is None:
            # The invocation's first callback runs in the caller's context: the current
            # run and span there are where it belongs.
            anchor = self._runs.anchor_here(started_at)
            recorded = anchor.run is not None
            span = None
            if recorded:
                span = aioprefactor.open_span(
                    schema_name or payloads.AGENT,
                    payload=payload(),
                    parent=anchor.parent,
                    run=anchor.run,
                    started_at=started_at,
                )
            with self._lock:
                self._open[run_id] = _Open(span, None, run_id, recorded, anchor)
            return
        span = None
        if schema_name is not None and parent.recorded and parent_span is not None:
            span = aioprefactor.open_span(
                schema_name, payload=payload(), parent=parent_span, started_at=started_at
            )
        with self._lock:
            parent.children.add(run_id)
            self._open[run_id] = _Open(span, parent_run_id, parent.root, parent.recorded)

    def _nearest_span(self, entry: _Open | None) -> SpanRun | None:
        while entry is not None:
            if entry.span is not None:
                return entry.span
            entry = self._open.get(entry.parent) if entry.parent is not None else None
        return None

    def _end(
        self,
        run_id: UUID,
        result: Callable[[SpanRun], dict[str, Any]] | None,
        error: BaseException | None = None,
    ) -> None:
        ended_at = utc_now()
        with self._lock:
            entry = self._open.pop(run_id, None)
            if entry is None:
                return
            parent = self._open.get(entry.parent) if entry.parent is not None else None
            if parent is not None:
                parent.children.discard(run_id)
            # Runs below it that have not reported their end (a stream left unfinished, a
            # cancellation reported parent first) end with it: a span never outlives its
            # parent.
            leftovers = self._take_below(entry)
        if entry.span is not None:
            entry.span.end(
                result=result(entry.span) if result is not None else None,
                error=error,
                ended_at=ended_at,
            )
        for left in leftovers:
            if left.span is not None:
                left.span.end("cancelled", ended_at=ended_at)
        if entry.anchor is not None:
            entry.anchor.end(error, ended_at)

    def _take_below(self, entry: _Open) -> list[_Open]:
        """Remove the runs still open below ``entry``, deepest first."""
        taken: list[_Open] = []
        for child_id in entry.children:
            child = self._open.pop(child_id, None)
            if child is not None:
                taken.extend(self._take_below(child))
                taken.append(child)
        entry.children.clear()
        return taken


def _name(serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> str:
    name = kwargs.get("name") or (serialized or {}).get("name")
    if not name:
        ids = (serialized or {}).get("id")
        name = ids[-1] if isinstance(ids, list) and ids else None
    return str(name) if name else "unknown"


def _agent(name: str, inputs: Any) -> dict[str, Any]:
    return {"agent_name": name, "inputs": payloads.state(inputs)}


def _chain_result(span: SpanRun, outputs: Any) -> dict[str, Any]:
    if span.schema_name == payloads.NODE:
        if isinstance(outputs, dict):
            return {"updated_keys": sorted(map(str, outputs)), "outputs": payloads.state(outputs)}
        return {"outputs": payloads.state(outputs)}
    return {"outputs": payloads.state(outputs)}
