"""Record OpenTelemetry GenAI spans: ``PrefactorSpanProcessor``.

```python
from opentelemetry.sdk.trace import TracerProvider
from aioprefactor.integrations.opentelemetry import PrefactorSpanProcessor

provider = TracerProvider()
provider.add_span_processor(PrefactorSpanProcessor(agent_id="bot", agent_version=version))
```

Spans that follow the OpenTelemetry GenAI semantic conventions (``gen_ai.operation.name``)
become Prefactor spans: ``invoke_agent`` and ``create_agent`` are ``otel:agent``,
``chat``, ``text_completion`` and ``generate_content`` are ``otel:llm``, ``embeddings`` is
``otel:embeddings``, ``execute_tool`` is ``otel:tool`` and any other operation
``otel:genai``, each with the OpenTelemetry span's own start and end times. Other spans are
not recorded, but the spans below them still nest through them. Needs ``pip install
'aioprefactor[opentelemetry]'``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import StatusCode

import aioprefactor
from aioprefactor import declare_span_type
from aioprefactor.integrations._bridge import (
    Anchor,
    RunSource,
    drop_none,
    error_result,
    from_epoch_ns,
    guarded,
    status_for_type_name,
    to_json,
    utc_now,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan, Span
    from opentelemetry.util.types import Attributes

    from aioprefactor import AgentVersion, Client, FinishStatus, InstanceRun, SpanRun

__all__ = ["PrefactorSpanProcessor", "declare_span_types"]

AGENT: Final = "otel:agent"
LLM: Final = "otel:llm"
EMBEDDINGS: Final = "otel:embeddings"
TOOL: Final = "otel:tool"
GENAI: Final = "otel:genai"

OPERATION: Final = "gen_ai.operation.name"
_TYPES: Final = {
    "invoke_agent": AGENT,
    "create_agent": AGENT,
    "chat": LLM,
    "text_completion": LLM,
    "generate_content": LLM,
    "embeddings": EMBEDDINGS,
    "execute_tool": TOOL,
}
# Attribute -> payload field, known when the span starts (or set later, then in the result).
_PARAMS: Final = {
    "gen_ai.provider.name": "provider",
    "gen_ai.system": "provider",
    "gen_ai.request.model": "model",
    "gen_ai.agent.name": "agent_name",
    "gen_ai.agent.id": "agent_id",
    "gen_ai.tool.name": "tool_name",
    "gen_ai.tool.call.id": "tool_call_id",
    "gen_ai.tool.type": "tool_type",
    "gen_ai.conversation.id": "conversation_id",
    "gen_ai.request.temperature": "temperature",
    "gen_ai.request.max_tokens": "max_tokens",
}
# Attribute -> the field its (JSON-decoded) value is kept under in "inputs" or "outputs".
_INPUTS: Final = {
    "gen_ai.system_instructions": "system",
    "gen_ai.input.messages": "messages",
    "gen_ai.tool.call.arguments": "arguments",
    "gen_ai.prompt": "prompt",
}
_OUTPUTS: Final = {
    "gen_ai.output.messages": "messages",
    "gen_ai.tool.call.result": "output",
    "gen_ai.completion": "completion",
}
_RESULTS: Final = {
    "gen_ai.response.model": "response_model",
    "gen_ai.response.id": "response_id",
    "gen_ai.response.finish_reasons": "finish_reasons",
}
_TOKENS: Final = {
    "gen_ai.usage.input_tokens": "input_tokens",
    "gen_ai.usage.output_tokens": "output_tokens",
}
_STRING: Final = {"type": "string"}
_OBJECT: Final = {"type": "object"}


def declare_span_types() -> None:
    """Declare the ``otel:*`` span types for the schema version runs register."""
    params = {
        "type": "object",
        "properties": {field: {} for field in _PARAMS.values()}
        | {"name": _STRING, "operation": _STRING, "inputs": _OBJECT, "attributes": _OBJECT},
    }
    result = {
        "type": "object",
        "properties": {field: {} for field in _RESULTS.values()}
        | {field: {} for field in _PARAMS.values()}
        | {"inputs": _OBJECT, "outputs": _OBJECT, "token_usage": _OBJECT, "attributes": _OBJECT}
        | {"error": {"type": "object", "properties": {"type": _STRING, "message": _STRING}}},
    }
    for name, title, template in (
        (AGENT, "GenAI agent", "{{agent_name}}"),
        (LLM, "GenAI model call", "{{model}}"),
        (EMBEDDINGS, "GenAI embeddings", "{{model}}"),
        (TOOL, "GenAI tool call", "{{tool_name}}"),
        (GENAI, "GenAI operation", "{{name}}"),
    ):
        declare_span_type(name, params, result_schema=result, title=title, template=template)


declare_span_types()


@dataclass(slots=True, eq=False)
class _Tracked:
    """One OpenTelemetry span the processor is following."""

    span: SpanRun | None  # None: not GenAI; followed only so its children nest correctly
    host: SpanRun | None  # what spans below nest under
    run: InstanceRun | None  # the run spans below are recorded in, once one is known
    anchor: Anchor | None = None  # set where a run was found (or opened) for this span
    attributes: frozenset[str] = frozenset()  # the attribute names present at start


class PrefactorSpanProcessor(SpanProcessor):
    """An OpenTelemetry ``SpanProcessor`` that records GenAI spans as Prefactor spans.

    Spans are nested by their OpenTelemetry parents. The first GenAI span of a tree is
    recorded in the ``agent_instance`` run current where it started; with none current
    and an ``agent_version`` given, each top ``invoke_agent`` span is a run of its own,
    finished as the span ended (``failed`` on an error status, ``cancelled`` when the
    recorded exception was a cancellation). ``on_start`` and ``on_end`` only record and
    enqueue: neither waits for the network, nor raises into OpenTelemetry.

    Args:
        client: The client runs of the processor's own are recorded with, and that
            ``force_flush`` and ``shutdown`` flush; the default client when omitted.
        agent_id: The agent those runs belong to (``PREFACTOR_AGENT_ID`` when omitted).
        agent_version: The agent version those runs register; without it the processor
            records only inside a current run.

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
    ) -> None:
        declare_span_types()  # so runs registered from now on list them, even if cleared
        self._runs = RunSource(client, agent_id, agent_version)
        self._lock = threading.Lock()
        self._tracked: dict[tuple[int, int], _Tracked] = {}

    @guarded
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Open a Prefactor span for a GenAI span, or follow a span for nesting."""
        key = _key(span)
        if key is None:
            return
        parent_key = (key[0], span.parent.span_id) if span.parent is not None else None
        with self._lock:
            parent = self._tracked.get(parent_key) if parent_key is not None else None
        attributes = dict(span.attributes or {})
        operation = attributes.get(OPERATION)
        if not isinstance(operation, str):
            if parent is not None:
                host, run = parent.host, parent.run
            else:
                # A root that is not GenAI (yet): spans below it, or itself if it turns
                # out to be GenAI, belong to the run current here, if any.
                here = self._runs.anchor_here(
                    from_epoch_ns(span.start_time) or utc_now(), own=False
                )
                host, run = here.parent, here.run
            tracked = _Tracked(None, host, run, attributes=frozenset(attributes))
        else:
            tracked = self._open(span, operation, attributes, parent)
        with self._lock:
            self._tracked[key] = tracked

    @guarded
    def on_end(self, span: ReadableSpan) -> None:
        """Finish the span's Prefactor span with its end time, outputs, usage and status."""
        key = _key(span)
        if key is None:
            return
        with self._lock:
            tracked = self._tracked.pop(key, None)
        attributes = dict(span.attributes or {})
        if tracked is None:
            return
        opened = tracked.span
        if opened is None:
            operation = attributes.get(OPERATION)
            if not isinstance(operation, str) or tracked.run is None:
                return
            # Marked GenAI only after it started: recorded now, with its true times.
            opened = aioprefactor.open_span(
                _TYPES.get(operation, GENAI),
                payload=_params(span, operation, attributes),
                parent=tracked.host,
                run=tracked.run,
                started_at=from_epoch_ns(span.start_time),
            )
        status, failure = _status(span)
        operation = attributes.get(OPERATION)
        later = _params(span, operation if isinstance(operation, str) else "", attributes)
        result = (
            {k: v for k, v in later.items() if k != "attributes" and k not in opened.payload}
            | _result(attributes, tracked.attributes)
            | failure
        )
        ended_at = from_epoch_ns(span.end_time) or utc_now()
        opened.end(status, result=result, ended_at=ended_at)
        if tracked.anchor is not None:
            tracked.anchor.end_with_status(status, ended_at)

    def shutdown(self) -> None:
        """Flush what was recorded before the tracer provider shuts down."""
        self._runs.flush(None)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until what was recorded is delivered, ``timeout_millis`` at most."""
        return self._runs.flush(timeout_millis / 1000)

    def _open(
        self,
        span: Span,
        operation: str,
        attributes: dict[str, Any],
        parent: _Tracked | None,
    ) -> _Tracked:
        started_at = from_epoch_ns(span.start_time) or utc_now()
        anchor = None
        host: SpanRun | None
        run: InstanceRun | None
        if parent is not None and parent.run is not None:
            host, run = parent.host, parent.run
        else:
            # The first GenAI span of its tree: its run is the one current here, or one
            # of its own when it invokes an agent.
            anchor = self._runs.anchor_here(started_at, own=operation == "invoke_agent")
            host, run = anchor.parent, anchor.run
            if run is None:
                return _Tracked(None, None, None, attributes=frozenset(attributes))
        opened = aioprefactor.open_span(
            _TYPES.get(operation, GENAI),
            payload=_params(span, operation, attributes),
            parent=host,
            run=run,
            started_at=started_at,
        )
        return _Tracked(opened, opened, run, anchor, frozenset(attributes))


def _key(span: ReadableSpan) -> tuple[int, int] | None:
    context = span.context
    return (context.trace_id, context.span_id) if context is not None else None


def _params(span: ReadableSpan, operation: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {"name": span.name, "operation": operation}
    for attribute, name in _PARAMS.items():
        if attribute in attributes and name not in fields:
            fields[name] = to_json(attributes[attribute])
    inputs = _decoded(attributes, _INPUTS)
    if inputs:
        fields["inputs"] = inputs
    fields["attributes"] = _attributes(attributes)
    return fields


def _result(attributes: Mapping[str, Any], at_start: frozenset[str]) -> dict[str, Any]:
    fields = {name: to_json(attributes[a]) for a, name in _RESULTS.items() if a in attributes}
    outputs = _decoded(attributes, _OUTPUTS)
    if outputs:
        fields["outputs"] = outputs
    tokens = {name: attributes[a] for a, name in _TOKENS.items() if a in attributes}
    if tokens:
        fields["token_usage"] = to_json(tokens)
    later = {k: v for k, v in attributes.items() if k not in at_start}
    if later:
        fields["attributes"] = _attributes(later)
    return fields


def _status(span: ReadableSpan) -> tuple[FinishStatus, dict[str, Any]]:
    if span.status.status_code is not StatusCode.ERROR:
        return "complete", {}
    type_name: str | None = None
    message = span.status.description or ""
    for event in span.events:
        if event.name == "exception" and event.attributes:
            found = event.attributes.get("exception.type")
            type_name = str(found) if found is not None else type_name
            message = str(event.attributes.get("exception.message", message))
    if type_name is None:
        error_type = (span.attributes or {}).get("error.type")
        type_name = str(error_type) if error_type is not None else "Error"
    return status_for_type_name(type_name), error_result(type_name, message)


def _decoded(attributes: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    return {name: _json_value(attributes[a]) for a, name in fields.items() if a in attributes}


def _json_value(value: Any) -> Any:
    # The conventions carry messages, arguments and results as JSON text; text that is
    # not JSON is kept as it is.
    if isinstance(value, str):
        try:
            return to_json(json.loads(value))
        except ValueError:
            return to_json(value)
    return to_json(value)


def _attributes(attributes: Attributes | Mapping[str, Any]) -> dict[str, Any]:
    return drop_none({str(k): to_json(v) for k, v in (attributes or {}).items()})
