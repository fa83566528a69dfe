from __future__ import annotations

import inspect
import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal, get_args, get_origin, get_type_hints

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioprefactor import PrefactorResponseContractError
from aioprefactor._wire.codec import INSTANCE_DECODER, SPAN_DECODER, decode
from aioprefactor._wire.models import (
    AgentInstance,
    AgentSchemaVersion,
    AgentSpan,
    AgentVersion,
    BulkItem,
    BulkOutput,
    BulkResponse,
    ControlSignal,
    Envelope,
    ErrorBody,
    FinishRequest,
    RecordQualityRequest,
    RegisterRequest,
    RuntimeEnvironment,
    SpanCounts,
    SpanCreateDetails,
    SpanCreateRequest,
    SpanFinishRequest,
    SpanTypeSchema,
    StartRequest,
)

MODELS: list[type[msgspec.Struct]] = [
    AgentInstance,
    AgentSchemaVersion,
    AgentSpan,
    AgentVersion,
    BulkItem,
    BulkOutput,
    BulkResponse,
    ControlSignal,
    ErrorBody,
    FinishRequest,
    RecordQualityRequest,
    RegisterRequest,
    RuntimeEnvironment,
    SpanCounts,
    SpanCreateDetails,
    SpanCreateRequest,
    SpanFinishRequest,
    SpanTypeSchema,
    StartRequest,
]

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
JSON_OBJECTS = st.dictionaries(st.text(max_size=5), JSON_VALUES, max_size=3)

# RFC 3339 offsets are whole minutes; aware datetimes only.
OFFSETS = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
AWARE_DATETIMES = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 31), timezones=OFFSETS
)


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:  # noqa: PLR0911 - one per kind
    """A strategy for any annotation the wire models use."""
    if annotation == dict[str, Any]:
        return JSON_OBJECTS
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy_for(arg) for arg in args])
    if origin is tuple:
        return st.lists(strategy_for(args[0]), max_size=3).map(tuple)
    if origin is dict:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=3)
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return struct_strategy(annotation)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        type(None): st.none(),
        str: st.text(max_size=10),
        bool: st.booleans(),
        int: st.integers(min_value=0, max_value=2**31),
        datetime: AWARE_DATETIMES,
    }
    return simple[annotation]


def struct_strategy(model: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    """Every field of ``model`` drawn, optional ones included."""
    hints = get_type_hints(model)
    fields = {name: strategy_for(hints[name]) for name in model.__struct_fields__}
    return st.fixed_dictionaries(fields).map(lambda kwargs: model(**kwargs))


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_model_round_trip(model: type[msgspec.Struct], data: st.DataObject) -> None:
    """Every wire model survives JSON encode then decode unchanged."""
    value = data.draw(struct_strategy(model))
    assert value == msgspec.json.decode(msgspec.json.encode(value), type=model)


@pytest.mark.parametrize(
    "model", [Envelope[AgentInstance], Envelope[AgentSpan]], ids=["instance", "span"]
)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_envelope_round_trip(model: Any, data: st.DataObject) -> None:
    """Success envelopes of instances and spans survive encode then decode unchanged."""
    envelope = data.draw(
        st.builds(
            model,
            status=st.just("success"),
            details=struct_strategy(get_args(model)[0]),
            control=st.none() | struct_strategy(ControlSignal),
        )
    )
    assert envelope == msgspec.json.decode(msgspec.json.encode(envelope), type=model)


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_models_are_frozen_and_keyword_only(model: type[msgspec.Struct]) -> None:
    """Every wire model is immutable and takes its fields by keyword only."""
    parameters = inspect.signature(model).parameters.values()
    assert [p.name for p in parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY] == []
    assert model.__struct_config__.frozen


def test_none_fields_left_off_the_wire() -> None:
    """A request field left at None is omitted from the encoded body."""
    assert msgspec.json.encode(FinishRequest()) == b"{}"
    assert msgspec.json.encode(FinishRequest(status="failed")) == b'{"status":"failed"}'


INSTANCE: dict[str, Any] = {
    "type": "agent_instance",
    "id": "inst-1",
    "account_id": "acc-1",
    "agent_id": "agent-1",
    "agent_version_id": "ver-1",
    "environment_id": "env-1",
    "agent_deployment_id": "dep-1",
    "status": "pending",
    "inserted_at": "2025-01-02T03:04:05.123456Z",
    "updated_at": "2025-01-02T03:04:05+02:00",
}


def test_instance_decodes_with_aware_datetimes() -> None:
    """Instance timestamps decode as timezone-aware datetimes."""
    body = msgspec.json.encode({"status": "success", "details": INSTANCE})
    instance = decode(INSTANCE_DECODER, body, operation="agent_instances.get", status=200).details
    assert datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC) == instance.inserted_at
    assert timedelta(hours=2) == instance.updated_at.utcoffset()


@pytest.mark.parametrize(
    "extra",
    [
        {"brand_new_field": 1},
        {"nested": {"deep": [1, 2, {"x": None}]}},
        {"span_counts": {"total": 3, "unexpected": 9}},
    ],
)
def test_unknown_fields_ignored(extra: dict[str, Any]) -> None:
    """Fields the client does not know are ignored, at any depth."""
    details = {**INSTANCE, **extra}
    body = msgspec.json.encode({"status": "success", "details": details, "also_new": True})
    instance = decode(INSTANCE_DECODER, body, operation="agent_instances.get", status=200).details
    assert instance.id == "inst-1"


def test_span_with_control_signal_decodes() -> None:
    """A span envelope's sibling control signal is decoded."""
    span = {
        "id": "sp-1",
        "agent_instance_id": "inst-1",
        "schema_name": "agent:llm",
        "status": "active",
    }
    body = msgspec.json.encode(
        {"status": "success", "details": span, "control": {"terminate": True, "reason": "stop"}}
    )
    envelope = decode(SPAN_DECODER, body, operation="agent_spans.create", status=201)
    assert ControlSignal(terminate=True, reason="stop") == envelope.control


@pytest.mark.parametrize(
    ("details", "path"),
    [
        ({k: v for k, v in INSTANCE.items() if k != "account_id"}, "$.details"),
        ({**INSTANCE, "id": 12}, "$.details.id"),
        ({**INSTANCE, "status": "exploded"}, "$.details.status"),
        ({**INSTANCE, "inserted_at": "yesterday"}, "$.details.inserted_at"),
        ({**INSTANCE, "span_counts": {"total": "3"}}, "$.details.span_counts.total"),
        ({**INSTANCE, "type": "agent_span"}, "$.details.type"),
    ],
)
def test_wrong_shape_is_contract_error(details: dict[str, Any], path: str) -> None:
    """A missing field or a wrong type is a contract error naming the operation and field path."""
    body = msgspec.json.encode({"status": "success", "details": details})
    with pytest.raises(PrefactorResponseContractError) as info:
        decode(INSTANCE_DECODER, body, operation="agent_instances.get", status=200)
    message = str(info.value)
    assert "agent_instances.get" in message
    assert path in message
    assert info.value.operation == "agent_instances.get"
    assert info.value.status_code == 200
