"""The payloads and span types LangChain work is recorded with.

Span type names and field names follow the ``langchain:*`` types the Prefactor UI knows
(``langchain:agent``, ``langchain:node``, ``langchain:llm``, ``langchain:tool``), plus
``langchain:chain`` for other chains and ``langchain:retriever``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from aioprefactor import declare_span_type
from aioprefactor.integrations._bridge import drop_none, json_object, to_json

AGENT: Final = "langchain:agent"
NODE: Final = "langchain:node"
CHAIN: Final = "langchain:chain"
LLM: Final = "langchain:llm"
TOOL: Final = "langchain:tool"
RETRIEVER: Final = "langchain:retriever"

_OBJECT: Final = {"type": "object"}
_STRING: Final = {"type": "string"}
_INTEGER: Final = {"type": "integer"}
_ERROR: Final = {
    "type": "object",
    "properties": {"type": _STRING, "message": _STRING},
    "description": "Why the work failed: the exception's type and message",
}
_TOKEN_USAGE: Final = {
    "type": "object",
    "properties": {
        "prompt_tokens": _INTEGER,
        "completion_tokens": _INTEGER,
        "total_tokens": _INTEGER,
    },
}


def _schema(properties: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties)}


def declare_span_types() -> None:
    """Declare the ``langchain:*`` span types for the schema version runs register."""
    declare_span_type(
        AGENT,
        _schema({"agent_name": _STRING, "inputs": _OBJECT}),
        result_schema=_schema({"outputs": _OBJECT, "error": _ERROR}),
        title="LangChain agent",
        description="One top-level LangChain or LangGraph invocation",
        template="{{agent_name}}",
    )
    declare_span_type(
        NODE,
        _schema({"node": _STRING, "step": _INTEGER, "inputs": _OBJECT}),
        result_schema=_schema(
            {"updated_keys": {"type": "array", "items": _STRING}, "outputs": _OBJECT}
            | {"error": _ERROR}
        ),
        title="LangGraph node",
        description="One node of a LangGraph graph, in one step",
        template="{{node}}",
    )
    declare_span_type(
        CHAIN,
        _schema({"name": _STRING, "inputs": _OBJECT}),
        result_schema=_schema({"outputs": _OBJECT, "error": _ERROR}),
        title="LangChain chain",
        description="A runnable inside an invocation (a routing function, a sequence step)",
        template="{{name}}",
    )
    declare_span_type(
        LLM,
        _schema(
            {"model_name": _STRING, "provider": _STRING, "temperature": {"type": "number"}}
            | {"inputs": _OBJECT}
        ),
        result_schema=_schema({"outputs": _OBJECT, "token_usage": _TOKEN_USAGE, "error": _ERROR}),
        title="LLM call",
        description="A call to a chat model or a text completion model",
        template="{{model_name}}",
    )
    declare_span_type(
        TOOL,
        _schema({"tool_name": _STRING, "inputs": _OBJECT}),
        result_schema=_schema({"outputs": _OBJECT, "error": _ERROR}),
        title="Tool call",
        description="A LangChain tool run",
        template="{{tool_name}}",
    )
    declare_span_type(
        RETRIEVER,
        _schema({"retriever_name": _STRING, "query": _STRING}),
        result_schema=_schema({"documents": {"type": "array", "items": _OBJECT}, "error": _ERROR}),
        title="Retriever",
        description="A LangChain retriever query",
        template="{{retriever_name}}",
    )


def message(value: Any) -> dict[str, Any]:
    """Describe a LangChain message compactly: role, content, tool calls, ids."""
    fields: dict[str, Any] = {
        "role": getattr(value, "type", type(value).__name__),
        "content": to_json(getattr(value, "content", None)),
    }
    calls = getattr(value, "tool_calls", None)
    if calls:
        fields["tool_calls"] = [
            drop_none({"name": c.get("name"), "args": to_json(c.get("args")), "id": c.get("id")})
            for c in calls
            if isinstance(c, Mapping)
        ]
    for name in ("name", "tool_call_id", "status"):
        extra = getattr(value, name, None)
        if isinstance(extra, str) and extra:
            fields[name] = extra
    return fields


def state(value: Any) -> dict[str, Any]:
    """Describe chain inputs or outputs (usually a graph's state) as a JSON object."""
    if isinstance(value, Mapping):
        return {
            str(key): [message(m) for m in item]
            if key == "messages" and isinstance(item, list)
            else to_json(item)
            for key, item in value.items()
        }
    if isinstance(value, list) and all(hasattr(m, "content") for m in value):
        return {"messages": [message(m) for m in value]}
    if hasattr(value, "content") and hasattr(value, "type"):
        return {"messages": [message(value)]}
    return json_object(value)


def model_fields(
    metadata: Mapping[str, Any] | None, invocation: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The model's name, provider and temperature, from invocation params and metadata."""
    meta = metadata or {}
    params = invocation or {}
    name = next(
        (
            v
            for v in (params.get("model"), params.get("model_name"), meta.get("ls_model_name"))
            if isinstance(v, str) and v
        ),
        None,
    )
    provider = meta.get("ls_provider") or params.get("_type")
    temperature = params.get("temperature", meta.get("ls_temperature"))
    return drop_none(
        {
            "model_name": name,
            "provider": provider if isinstance(provider, str) else None,
            "temperature": temperature if isinstance(temperature, int | float) else None,
        }
    )


def generations(response: Any) -> dict[str, Any]:
    """The result of an LLM call: its output messages (or texts) and token usage."""
    messages: list[dict[str, Any]] = []
    texts: list[str] = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    counted = False
    for batch in getattr(response, "generations", None) or []:
        for generation in batch:
            reply = getattr(generation, "message", None)
            if reply is None:
                texts.append(str(getattr(generation, "text", "")))
                continue
            messages.append(message(reply))
            tokens = getattr(reply, "usage_metadata", None)
            if isinstance(tokens, Mapping):
                counted = True
                usage["prompt_tokens"] += int(tokens.get("input_tokens") or 0)
                usage["completion_tokens"] += int(tokens.get("output_tokens") or 0)
                usage["total_tokens"] += int(tokens.get("total_tokens") or 0)
    if not counted:
        reported = (getattr(response, "llm_output", None) or {}).get("token_usage")
        if isinstance(reported, Mapping):
            counted = True
            for key in usage:
                value = reported.get(key)
                usage[key] = value if isinstance(value, int) else 0
    outputs: dict[str, Any] = {"messages": messages} if messages else {"texts": texts}
    return {"outputs": outputs, "token_usage": usage} if counted else {"outputs": outputs}


def tool_output(output: Any) -> dict[str, Any]:
    """The result of a tool run."""
    if hasattr(output, "content") and hasattr(output, "type"):
        return {"outputs": message(output)}
    return {"outputs": {"output": to_json(output)}}


def documents(found: Sequence[Any]) -> dict[str, Any]:
    """The result of a retriever query."""
    return {
        "documents": [
            drop_none(
                {
                    "id": getattr(d, "id", None),
                    "page_content": to_json(getattr(d, "page_content", None)),
                    "metadata": to_json(getattr(d, "metadata", None)),
                }
            )
            for d in found
        ]
    }
