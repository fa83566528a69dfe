from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, date, datetime, time, timedelta, timezone
from types import MappingProxyType
from typing import Any
from uuid import UUID

import msgspec
import pytest

from aioprefactor import (
    AgentSchemaVersion,
    AgentVersion,
    PrefactorResponseContractError,
    RuntimeEnvironment,
    SpanTypeSchema,
)
from aioprefactor._wire.checks import boolean, choice, key_or_new, new_key, timestamp
from aioprefactor._wire.codec import INSTANCE_DECODER, decode, snippet
from aioprefactor._wire.payloads import check_json, json_object, to_struct


class Opaque:
    """An object JSON cannot hold."""


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**63),
        1.5,
        "text",
        "",
        [],
        {},
        (1, "two"),
        {"a": [1, {"b": None}], "c": 2.0},
        datetime(2025, 1, 1, tzinfo=UTC),
        date(2025, 1, 1),
        time(12, 30),
        UUID(int=7),
        OrderedDict(a=1),
        AgentVersion(name="n", external_identifier="e"),
    ],
)
def test_check_json_accepts_json_values(value: object) -> None:
    """Values JSON can hold unchanged pass the check."""
    check_json(value, "payload")


@pytest.mark.parametrize(
    ("value", "exception", "path"),
    [
        (float("nan"), ValueError, "payload"),
        ({"a": float("inf")}, ValueError, "payload['a']"),
        ({"a": [1, 2, float("-inf")]}, ValueError, "payload['a'][2]"),
        ({"a": {1, 2}}, TypeError, "payload['a']"),
        ({"a": {"b": Opaque()}}, TypeError, "payload['a']['b']"),
        ({"a": b"bytes"}, TypeError, "payload['a']"),
        ({1: "x"}, TypeError, "payload"),
        ({"a": {(1, 2): "x"}}, TypeError, "payload['a']"),
        ({"a": frozenset()}, TypeError, "payload['a']"),
    ],
)
def test_check_json_refuses_non_json(value: object, exception: type[Exception], path: str) -> None:
    """NaN, infinities, sets, objects and non-str keys are refused, naming the path."""
    with pytest.raises(exception) as info:
        check_json(value, "payload")
    assert path in str(info.value)


def test_json_object_copies_a_mapping_into_a_dict() -> None:
    """A read-only mapping is accepted and handed on as a dict."""
    result = json_object(MappingProxyType({"a": 1}), "payload")
    assert type(result) is dict
    assert result == {"a": 1}


@pytest.mark.parametrize("value", [[1, 2], "text", 3, None])
def test_json_object_refuses_non_objects(value: object) -> None:
    """A payload must be a JSON object, not a list or a scalar."""
    with pytest.raises(TypeError, match="payload must be a dict"):
        json_object(value, "payload")


def test_to_struct_converts_a_dict() -> None:
    """A plain dict becomes the Struct, nested parts included."""
    value = {
        "name": "n",
        "external_identifier": "e",
        "runtime_environment": {"os": "linux", "prefactor_sdk": ["aioprefactor@1"]},
    }
    expected = AgentVersion(
        name="n",
        external_identifier="e",
        runtime_environment=RuntimeEnvironment(os="linux", prefactor_sdk=("aioprefactor@1",)),
    )
    assert to_struct(value, AgentVersion, "agent_version") == expected


@pytest.mark.parametrize(
    ("value", "exception", "fragment"),
    [
        ({"name": "n"}, ValueError, "external_identifier"),
        ({"name": 1, "external_identifier": "e"}, ValueError, "$.name"),
        ({"name": "n", "external_identifier": "e", "runtime_environment": 3}, ValueError, "$."),
        ({"name": float("nan"), "external_identifier": "e"}, ValueError, "agent_version"),
        ("name", TypeError, "agent_version must be a AgentVersion or a dict"),
        (["n", "e"], TypeError, "agent_version"),
        (AgentSchemaVersion(external_identifier="x"), TypeError, "agent_version"),
    ],
)
def test_to_struct_refuses_bad_values(
    value: object, exception: type[Exception], fragment: str
) -> None:
    """A value that does not fit the model is refused with a message naming the field."""
    with pytest.raises(exception) as info:
        to_struct(value, AgentVersion, "agent_version")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("value", "exception", "fragment"),
    [
        (AgentVersion(name=1, external_identifier="e"), ValueError, "$.name"),  # type: ignore[arg-type]
        (
            AgentVersion(name="n", external_identifier="e", runtime_environment="linux"),  # type: ignore[arg-type]
            ValueError,
            "$.runtime_environment",
        ),
        (
            AgentVersion(
                name="n",
                external_identifier="e",
                runtime_environment=RuntimeEnvironment(os=float("nan")),  # type: ignore[arg-type]
            ),
            ValueError,
            "agent_version.runtime_environment.os",
        ),
    ],
)
def test_to_struct_checks_a_struct_too(
    value: object, exception: type[Exception], fragment: str
) -> None:
    """A Struct built with wrong values gets the same checks as a dict."""
    with pytest.raises(exception) as info:
        to_struct(value, AgentVersion, "agent_version")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("schema", "exception", "path"),
    [
        ({"type": "object", "x": float("nan")}, ValueError, "params_schema['x']"),
        ({"type": "object", "enum": {1, 2}}, TypeError, "params_schema['enum']"),
    ],
)
def test_to_struct_checks_json_inside_a_struct(
    schema: dict[str, Any], exception: type[Exception], path: str
) -> None:
    """NaN or a set inside a Struct's JSON field is refused, not silently changed."""
    value = AgentSchemaVersion(
        external_identifier="s",
        span_type_schemas=(SpanTypeSchema(name="agent:llm", params_schema=schema),),
    )
    with pytest.raises(exception) as info:
        to_struct(value, AgentSchemaVersion, "agent_schema_version")
    assert path in str(info.value)


def test_to_struct_returns_a_good_struct_as_is() -> None:
    """A well-formed Struct is used unchanged."""
    value = AgentVersion(name="n", external_identifier="e")
    assert to_struct(value, AgentVersion, "agent_version") is value


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "not valid JSON"),
        (b'{"status": "success", "details": {"id": "x"', "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[]", "unexpected response shape"),
        (b'{"status": "success"}', "unexpected response shape"),
    ],
)
def test_decode_bad_body_is_contract_error(body: bytes, fragment: str) -> None:
    """A body that is not JSON or not the envelope is a contract error with status and snippet."""
    with pytest.raises(PrefactorResponseContractError, match=fragment) as info:
        decode(INSTANCE_DECODER, body, operation="agent_instances.get", status=200)
    assert info.value.status_code == 200
    assert info.value.operation == "agent_instances.get"
    assert info.value.body_snippet == snippet(body)


def test_decode_error_envelope_on_success_status() -> None:
    """A 200 carrying an error body is a contract error quoting the API's code and message."""
    body = b'{"status": "error", "code": "oops", "message": "went wrong"}'
    with pytest.raises(PrefactorResponseContractError) as info:
        decode(INSTANCE_DECODER, body, operation="agent_instances.start", status=200)
    assert "agent_instances.start" in str(info.value)
    assert "oops: went wrong" in str(info.value)


def test_snippet_is_short_and_collapsed() -> None:
    """A snippet collapses whitespace and stops after 200 characters."""
    assert snippet(b"  a \n\t b  ") == "a b"
    assert snippet(b"x" * 1000) == "x" * 200 + "..."
    assert snippet(b"\xff\xfe ok") == "\ufffd\ufffd ok"


def test_new_keys_are_fresh() -> None:
    """Generated idempotency keys are 32 hex characters and never repeat."""
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(key) == 32 and int(key, 16) >= 0 for key in keys)


@pytest.mark.parametrize("key", ["k", "k" * 64, "clé-ünïcode"])
def test_key_or_new_keeps_a_good_key(key: str) -> None:
    """A caller's key of 1 to 64 printable characters is used as given."""
    assert key_or_new(key) == key


@pytest.mark.parametrize(
    ("key", "exception"),
    [("", ValueError), ("k" * 65, ValueError), ("a\nb", ValueError), (12, TypeError)],
)
def test_key_or_new_refuses_a_bad_key(key: object, exception: type[Exception]) -> None:
    """An empty, over-long, control-character or non-str key is refused."""
    with pytest.raises(exception, match="idempotency_key"):
        key_or_new(key)


@pytest.mark.parametrize(
    ("value", "exception"),
    [
        (datetime(2025, 1, 1), ValueError),
        (date(2025, 1, 1), TypeError),
        ("2025-01-01T00:00:00Z", TypeError),
        (1735689600, TypeError),
    ],
)
def test_timestamp_refuses_naive_and_non_datetimes(
    value: object, exception: type[Exception]
) -> None:
    """A timestamp must be a timezone-aware datetime."""
    with pytest.raises(exception, match="timestamp"):
        timestamp(value)


def test_timestamp_keeps_a_whole_minute_offset() -> None:
    """An aware timestamp with a whole-minute offset is sent as given."""
    value = datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert timestamp(value) is value


@pytest.mark.parametrize(
    "offset", [timedelta(seconds=30), timedelta(minutes=19, seconds=32), timedelta(microseconds=1)]
)
def test_timestamp_with_sub_minute_offset_keeps_its_instant(offset: timedelta) -> None:
    """RFC 3339 offsets are whole minutes, so the encoded timestamp still names the same instant."""
    value = datetime(1900, 1, 1, 12, tzinfo=timezone(offset))
    checked = timestamp(value)
    assert checked is not None
    assert msgspec.json.decode(msgspec.json.encode(checked), type=datetime) == value


@pytest.mark.parametrize("value", [1, 0, "yes", None])
def test_boolean_refuses_truthy_values(value: object) -> None:
    """Only a real bool is accepted where a bool is expected."""
    with pytest.raises(TypeError, match="flag"):
        boolean(value, "flag")


@pytest.mark.parametrize("value", ["done", None, 1, ["complete"]])
def test_choice_refuses_values_outside_the_set(value: object) -> None:
    """A value outside the allowed set is a ValueError listing the options."""
    with pytest.raises(ValueError, match="cancelled, complete, failed"):
        choice(value, frozenset({"complete", "failed", "cancelled"}), "status")
