"""Record OpenAI Agents SDK traces: ``PrefactorTracingProcessor``.

```python
from agents import add_trace_processor
from aioprefactor.integrations.openai_agents import PrefactorTracingProcessor

add_trace_processor(PrefactorTracingProcessor(agent_id="bot", agent_version=version))
result = await Runner.run(agent, "question")
```

A trace is an ``openai_agents:trace`` span, in the run current where it started or in a run
of its own; its spans become ``openai_agents:agent``, ``openai_agents:llm`` (generations and
responses), ``openai_agents:tool`` (function calls), ``openai_agents:handoff``,
``openai_agents:guardrail`` and ``openai_agents:custom`` spans with the SDK's own start and
end times. ``set_trace_processors([processor])`` instead of ``add_trace_processor`` also
stops the SDK's default export to OpenAI. Needs ``pip install 'aioprefactor[openai-agents]'``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from agents.tracing import TracingProcessor

import aioprefactor
from aioprefactor import declare_span_type
from aioprefactor.integrations._bridge import (
    Anchor,
    RunSource,
    drop_none,
    from_iso,
    guarded,
    json_object,
    to_json,
    utc_now,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agents.tracing import Span, Trace

    from aioprefactor import AgentVersion, Client, FinishStatus, SpanRun

__all__ = ["PrefactorTracingProcessor", "declare_span_types"]

TRACE: Final = "openai_agents:trace"
AGENT: Final = "openai_agents:agent"
LLM: Final = "openai_agents:llm"
TOOL: Final = "openai_agents:tool"
HANDOFF: Final = "openai_agents:handoff"
GUARDRAIL: Final = "openai_agents:guardrail"
CUSTOM: Final = "openai_agents:custom"

_TYPES: Final = {
    "agent": AGENT,
    "generation": LLM,
    "response": LLM,
    "function": TOOL,
    "handoff": HANDOFF,
    "guardrail": GUARDRAIL,
}
# An error on one of these (or on a top-level span) means the workflow itself failed; a
# tool's error the model was told about does not.
_RUNS: Final = frozenset({"agent", "task"})
_NO_OP: Final = "no-op"
_OBJECT: Final = {"type": "object"}
_STRING: Final = {"type": "string"}
_ERROR: Final = {
    "type": "object",
    "properties": {"type": _STRING, "message": _STRING, "data": _OBJECT},
}


def _schema(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def declare_span_types() -> None:
    """Declare the ``openai_agents:*`` span types for the schema version runs register."""
    strings = {"type": "array", "items": _STRING}
    for name, params, result, title in (
        (
            TRACE,
            _schema(workflow_name=_STRING, group_id=_STRING, metadata=_OBJECT),
            _schema(error=_ERROR),
            "Agents workflow",
        ),
        (
            AGENT,
            _schema(agent_name=_STRING, tools=strings, handoffs=strings, output_type=_STRING),
            _schema(tools=strings, handoffs=strings, output_type=_STRING, error=_ERROR),
            "Agent",
        ),
        (
            LLM,
            _schema(kind=_STRING, model=_STRING, model_config=_OBJECT, inputs=_OBJECT),
            _schema(
                model=_STRING,
                response_id=_STRING,
                inputs=_OBJECT,
                model_config=_OBJECT,
                outputs=_OBJECT,
                usage=_OBJECT,
                error=_ERROR,
            ),
            "Model call",
        ),
        (
            TOOL,
            _schema(tool_name=_STRING, inputs=_OBJECT),
            _schema(inputs=_OBJECT, outputs=_OBJECT, mcp_data=_OBJECT, error=_ERROR),
            "Function tool call",
        ),
        (
            HANDOFF,
            _schema(from_agent=_STRING, to_agent=_STRING),
            _schema(to_agent=_STRING, error=_ERROR),
            "Handoff",
        ),
        (
            GUARDRAIL,
            _schema(name=_STRING),
            _schema(triggered={"type": "boolean"}, error=_ERROR),
            "Guardrail",
        ),
        (
            CUSTOM,
            _schema(name=_STRING, data=_OBJECT),
            _schema(data=_OBJECT, error=_ERROR),
            "Custom span",
        ),
    ):
        declare_span_type(name, params, result_schema=result, title=title)


declare_span_types()


@dataclass(slots=True, eq=False)
class _TraceState:
    span: SpanRun | None  # None: the trace is not recorded (no run to record it in)
    anchor: Anchor
    failed: bool = False


class PrefactorTracingProcessor(TracingProcessor):
    """An OpenAI Agents SDK tracing processor that records traces as Prefactor spans.

    Register it with ``agents.add_trace_processor`` (or ``set_trace_processors`` to
    replace the SDK's export to OpenAI). A trace is recorded in the ``agent_instance`` run
    current where it started, under the current span; with none current and an
    ``agent_version`` given, each trace is a run of its own, finished ``failed`` when an
    agent (or a top-level span) reported an error and ``complete`` otherwise. Its methods
    only record and enqueue: none waits for the network, and none raises into the SDK.

    Args:
        client: The client runs of the processor's own are recorded with, and that
            ``force_flush`` and ``shutdown`` flush; the default client when omitted.
        agent_id: The agent those runs belong to (``PREFACTOR_AGENT_ID`` when omitted).
        agent_version: The agent version those runs register; without it the processor
            records only inside a current run.
        flush_timeout: Seconds ``force_flush`` and ``shutdown`` wait at most; ``None``
            for the client's own bound.

    Raises:
        TypeError: ``agent_id`` without ``agent_version``, or a bad ``agent_version``.
        ValueError: A bad ``agent_id`` or ``agent_version``.
    """

    def __init__(
        self,
        *,
        client: Client | None = None,
        agent_id: str | None = None,
        agent_version: AgentVersion | Mapping[str, Any] | None = None,
        flush_timeout: float | None = None,
    ) -> None:
        declare_span_types()  # so runs registered from now on list them, even if cleared
        self._runs = RunSource(client, agent_id, agent_version)
        self._flush_timeout = flush_timeout
        self._lock = threading.Lock()
        self._traces: dict[str, _TraceState] = {}
        self._spans: dict[str, SpanRun] = {}

    @guarded
    def on_trace_start(self, trace: Trace) -> None:
        """Record a trace: find its run (or open one) and open its span."""
        if trace.trace_id == _NO_OP:
            return
        started_at = utc_now()
        anchor = self._runs.anchor_here(started_at)
        if anchor.run is None:
            with self._lock:
                self._traces[trace.trace_id] = _TraceState(None, anchor)
            return
        exported = trace.export() or {}
        span = aioprefactor.open_span(
            TRACE,
            payload=drop_none(
                {
                    "workflow_name": trace.name,
                    "group_id": exported.get("group_id"),
                    "metadata": to_json(exported.get("metadata")),
                }
            ),
            parent=anchor.parent,
            run=anchor.run,
            started_at=started_at,
        )
        with self._lock:
            self._traces[trace.trace_id] = _TraceState(span, anchor)

    @guarded
    def on_trace_end(self, trace: Trace) -> None:
        """Finish a trace's span, and its run when the trace has one of its own."""
        ended_at = utc_now()
        with self._lock:
            state = self._traces.pop(trace.trace_id, None)
        if state is None:
            return
        status: FinishStatus = "failed" if state.failed else "complete"
        if state.span is not None:
            state.span.end(status, ended_at=ended_at)
        state.anchor.end_with_status(status, ended_at)

    @guarded
    def on_span_start(self, span: Span[Any]) -> None:
        """Open a span with the SDK's start time, under its parent or its trace."""
        if _NO_OP in (span.span_id, span.trace_id):
            return
        with self._lock:
            parent = self._spans.get(span.parent_id) if span.parent_id else None
            trace = self._traces.get(span.trace_id)
        if trace is not None and trace.span is None:
            return  # the trace is not recorded, nor are its spans
        if parent is None and trace is not None:
            parent = trace.span
        data = span.span_data
        kind = data.type
        schema_name = _TYPES.get(kind, CUSTOM)
        started_at = from_iso(span.started_at) or utc_now()
        opened = aioprefactor.open_span(
            schema_name,
            payload=_params(kind, data),
            parent=parent,
            started_at=started_at,
        )
        with self._lock:
            self._spans[span.span_id] = opened

    @guarded
    def on_span_end(self, span: Span[Any]) -> None:
        """Finish a span with the SDK's end time, its data and its error."""
        with self._lock:
            opened = self._spans.pop(span.span_id, None)
            if opened is None:
                return
            error = span.error
            if error is not None and (span.parent_id is None or span.span_data.type in _RUNS):
                trace = self._traces.get(span.trace_id)
                if trace is not None:
                    trace.failed = True
        kind = span.span_data.type
        result = _later(opened.payload, _params(kind, span.span_data)) | _result(
            kind, span.span_data
        )
        if error is not None:
            result["error"] = drop_none(
                {
                    "type": "SpanError",
                    "message": str(error.get("message", "")),
                    "data": to_json(error.get("data")),
                }
            )
        opened.end(
            "failed" if error is not None else "complete",
            result=result,
            ended_at=from_iso(span.ended_at) or utc_now(),
        )

    def force_flush(self) -> None:
        """Wait until what was recorded is delivered, within ``flush_timeout``."""
        self._runs.flush(self._flush_timeout)

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush before the SDK shuts down, within ``timeout`` (or ``flush_timeout``)."""
        self._runs.flush(timeout if timeout is not None else self._flush_timeout)


def _params(kind: str, data: Any) -> dict[str, Any]:  # noqa: PLR0911 - one shape per kind
    exported = _export(data)
    if kind == "agent":
        return drop_none(
            {
                "agent_name": exported.get("name"),
                "tools": to_json(exported.get("tools")),
                "handoffs": to_json(exported.get("handoffs")),
                "output_type": exported.get("output_type"),
            }
        )
    if kind == "generation":
        return drop_none(
            {
                "kind": kind,
                "model": exported.get("model"),
                "model_config": to_json(exported.get("model_config")),
                "inputs": _messages(exported.get("input")),
            }
        )
    if kind == "response":
        return drop_none({"kind": kind, "inputs": _messages(getattr(data, "input", None))})
    if kind == "function":
        return drop_none({"tool_name": exported.get("name"), "inputs": _arguments(data.input)})
    if kind == "handoff":
        return drop_none(
            {"from_agent": exported.get("from_agent"), "to_agent": exported.get("to_agent")}
        )
    if kind == "guardrail":
        return drop_none({"name": exported.get("name")})
    if exported.get("type") == "custom":  # custom spans, and the SDK's own (task, turn)
        return drop_none({"name": exported.get("name"), "data": json_object(exported.get("data"))})
    return {"name": kind, "data": json_object(exported)}


def _result(kind: str, data: Any) -> dict[str, Any]:  # noqa: PLR0911 - one shape per kind
    exported = _export(data)
    if kind == "generation":
        return drop_none(
            {
                "model": exported.get("model"),
                "outputs": _messages(exported.get("output")),
                "usage": to_json(exported.get("usage")),
            }
        )
    if kind == "response":
        response = getattr(data, "response", None)
        return drop_none(
            {
                "model": getattr(response, "model", None),
                "response_id": exported.get("response_id"),
                "outputs": _messages(getattr(response, "output", None)),
                "usage": to_json(exported.get("usage")),
            }
        )
    if kind == "function":
        return drop_none(
            {
                "outputs": {"output": to_json(getattr(data, "output", None))},
                "mcp_data": to_json(exported.get("mcp_data")),
            }
        )
    if kind == "handoff":
        return drop_none({"to_agent": exported.get("to_agent")})
    if kind == "guardrail":
        return {"triggered": bool(exported.get("triggered"))}
    if exported.get("type") == "custom":
        return {"data": json_object(exported.get("data"))}
    return {"data": json_object(exported)}


def _later(payload: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    # The SDK fills some of a span's data in after it started (a tool's input, the
    # agent's tools, a generation's input): what was not known at the start goes in the
    # result.
    return {k: v for k, v in params.items() if payload.get(k) != v}


def _export(data: Any) -> dict[str, Any]:
    exported = data.export()
    return exported if isinstance(exported, dict) else {}


def _messages(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"text": value}
    return {"messages": to_json(value)}


def _arguments(text: str | None) -> dict[str, Any] | None:
    # A function tool's input is the model's JSON arguments; kept as text when not JSON.
    if text is None:
        return None
    try:
        return json_object(json.loads(text))
    except ValueError:
        return {"input": text}
