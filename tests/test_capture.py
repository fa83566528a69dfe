from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum, IntEnum
from pathlib import PurePosixPath
from typing import Any
from uuid import UUID

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioprefactor._runs.capture import (
    CUT_KEY,
    CYCLE,
    MAX_DEPTH,
    MAX_REPR_CHARS,
    MIN_MAX_BYTES,
    TOO_DEEP,
    YieldCollector,
    call_arguments,
    error_info,
    to_output,
    to_payload,
    with_error,
)
from aioprefactor._wire.payloads import json_object

encode = msgspec.json.encode


class Color(Enum):
    """A plain enum."""

    RED = "red"


class Level(IntEnum):
    """An int enum."""

    HIGH = 3


class Name(str):
    """A str subclass."""

    __slots__ = ()


class Count(int):
    """An int subclass."""


class Ratio(float):
    """A float subclass."""


class Stamp(datetime):
    """A datetime subclass."""


class Id(UUID):
    """A UUID subclass."""


class Opaque:
    """An object with no JSON form and a fixed repr."""

    def __repr__(self) -> str:
        return "<Opaque>"


class Broken:
    """An object whose repr and str raise."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    def __str__(self) -> str:
        raise RuntimeError("no str")


@dataclass
class Point:
    """A dataclass with a set field."""

    x: int
    tags: set[str] = field(default_factory=set)


@dataclass
class Node:
    """A dataclass that can point at itself."""

    child: object = None


class Row(msgspec.Struct, rename="camel"):
    """A Struct with a renamed field."""

    row_id: int
    label: str = "x"


class Holder(msgspec.Struct):
    """A Struct holding what msgspec cannot convert."""

    thing: object


class ModelV2:
    """Shaped like a pydantic v2 model."""

    def model_dump(self, *, mode: str = "python") -> dict[str, Any]:
        """Dump as pydantic does, in the mode asked for."""
        return {"mode": mode, "when": "2025-01-01T00:00:00"}


class ModelV1:
    """Shaped like a pydantic v1 model."""

    __fields__: dict[str, object] = {"name": None}  # noqa: RUF012 - the v1 marker

    def dict(self) -> dict[str, Any]:
        """Dump as pydantic v1 does."""
        return {"name": "v1"}


class BadMapping(Mapping[str, int]):
    """A mapping whose items cannot be read."""

    def __getitem__(self, key: str) -> int:
        raise RuntimeError("unreadable")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("unreadable")

    def __len__(self) -> int:
        return 1


WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expected", "value"),
    [
        ("text", "text"),
        (7, 7),
        (True, True),
        (None, None),
        (1.5, 1.5),
        ("NaN", math.nan),
        ("Infinity", math.inf),
        ("-Infinity", -math.inf),
        ("hi", b"hi"),
        ("hé", bytearray("hé", "utf-8")),
        ("hi", memoryview(b"hi")),
        ({"_base64": "/wA="}, b"\xff\x00"),
        ([1, 2, 3], {3, 1, 2}),
        (["a", "b"], frozenset({"b", "a"})),
        (['"a"', 1], {1, '"a"'}),
        ([1, [2, "x"]], (1, (2, "x"))),
        ({"1": "a", "2": "b"}, {1: "a", 2: "b"}),
        ({"1 (2)": "int", "1": "str"}, {1: "int", "1": "str"}),
        ({"None": 1, "(1, 2)": 2}, {None: 1, (1, 2): 2}),
        ({"x": 1, "tags": ["a", "b"]}, Point(1, {"b", "a"})),
        ({"rowId": 1, "label": "x"}, Row(row_id=1)),
        ({"thing": "<Opaque>"}, Holder(thing=Opaque())),
        ({"mode": "json", "when": "2025-01-01T00:00:00"}, ModelV2()),
        ({"name": "v1"}, ModelV1()),
        (WHEN, WHEN),
        (date(2025, 1, 2), date(2025, 1, 2)),
        (time(3, 4), time(3, 4)),
        (UUID(int=7), UUID(int=7)),
        ("2025-01-02T03:04:05", Stamp(2025, 1, 2, 3, 4, 5)),
        ("1.10", Decimal("1.10")),
        ("NaN", Decimal("NaN")),
        (90.5, timedelta(seconds=90.5)),
        ("red", Color.RED),
        (3, Level.HIGH),
        ("/tmp/x", PurePosixPath("/tmp/x")),  # noqa: S108 - a path's text, never opened
        ("<Opaque>", Opaque()),
        ("<Broken object; repr() failed>", Broken()),
        ([{"1": "<Opaque>"}], [{1: Opaque()}]),
        ({"<Broken object; repr() failed>": 1}, {Broken(): 1}),
        ("Infinity", Ratio("inf")),
        ([1, 2], deque([1, 2])),
        ([0, 1, 2], range(3)),
        ("00000000-0000-0000-0000-000000000007", Id(int=7)),
    ],
)
def test_values_convert_to_json(expected: object, value: object) -> None:
    """Each kind of value is recorded as the documented JSON value."""
    assert {"output": expected} == to_output(value)


@pytest.mark.parametrize(("expected", "value"), [(str, Name("n")), (int, Count(5))])
def test_subclasses_become_the_plain_type(expected: type, value: object) -> None:
    """A str or int subclass is recorded as a plain str or int."""
    assert expected is type(to_output([value])["output"][0])


def test_non_mappings_are_wrapped_and_records_are_not() -> None:
    """A payload that is not a JSON object goes under "value"; records become the object."""
    assert {"value": [1, 2]} == to_payload([1, 2])
    assert {"value": "text"} == to_payload("text")
    assert {"x": 1, "tags": []} == to_payload(Point(1))
    assert {"rowId": 2, "label": "y"} == to_payload(Row(row_id=2, label="y"))


def test_an_unreadable_mapping_falls_back_to_its_repr() -> None:
    """A mapping that raises while read is recorded by its repr, wrapped."""
    result = to_payload(BadMapping())
    assert ["value"] == list(result)
    assert result["value"].startswith("<")


def test_a_long_repr_is_capped() -> None:
    """The repr of an object without a JSON form is cut to MAX_REPR_CHARS."""
    text = to_output(Box("b" * 5_000))["output"]
    cut = len(repr(Box("b" * 5_000))) - MAX_REPR_CHARS
    assert repr(Box("b" * 5_000))[:MAX_REPR_CHARS] + f"…[truncated {cut} chars]" == text


def test_the_payload_is_a_fresh_copy() -> None:
    """Changing the caller's objects later does not change what was recorded."""
    inner = [1, 2]
    value: dict[str, Any] = {"inner": inner, "odd": {3}}
    plain: dict[str, Any] = {"inner": [1, 2]}
    recorded, recorded_plain = to_payload(value), to_payload(plain)
    inner.append(3)
    value["new"] = 1
    plain["inner"].append(3)
    assert {"inner": [1, 2], "odd": [3]} == recorded
    assert {"inner": [1, 2]} == recorded_plain


def test_cycles_become_a_marker() -> None:
    """A container that contains itself is cut where it reappears."""
    items: list[Any] = [1]
    items.append(items)
    table: dict[str, Any] = {}
    table["self"] = table
    node = Node()
    node.child = [node]
    assert [1, CYCLE] == to_output(items)["output"]
    assert {"self": CYCLE} == to_payload(table)
    assert {"child": [CYCLE]} == to_payload(node)


def test_shared_values_are_not_cycles() -> None:
    """The same list twice, side by side, is recorded twice."""
    shared = [1, {2}]
    assert {"a": [1, [2]], "b": [1, [2]]} == to_payload({"a": shared, "b": shared})


def _nested(depth: int, leaf: object) -> list[Any]:
    value: list[Any] = [leaf]
    for _ in range(depth):
        value = [value]
    return value


def test_over_deep_nesting_becomes_a_marker() -> None:
    """Containers beyond MAX_DEPTH become "[too deep]" instead of a RecursionError."""
    result: Any = to_output(_nested(MAX_DEPTH + 50, {1}))["output"]
    for _ in range(MAX_DEPTH):
        result = result[0]
    assert [TOO_DEEP] == result


def test_over_deep_mappings_become_a_marker() -> None:
    """Mappings beyond MAX_DEPTH become "[too deep]" too."""
    value: dict[str, Any] = {"leaf": {1}}
    for _ in range(MAX_DEPTH + 5):
        value = {"d": value}
    result: Any = to_payload(value)
    for _ in range(MAX_DEPTH):
        result = result["d"]
    assert {"d": TOO_DEEP} == result


def test_a_long_non_string_key_is_capped() -> None:
    """A key made from an object is cut to MAX_REPR_CHARS."""
    (key,) = to_payload({Box("k" * 5_000): 1})
    assert key.endswith("chars]")
    assert MAX_REPR_CHARS < len(key) < MAX_REPR_CHARS + 30


def test_nesting_the_strict_check_accepts_is_kept() -> None:
    """A value as deep as strict mode accepts is kept whole when converted."""
    value = {"deep": _nested(MAX_DEPTH - 1, "leaf")}
    assert value == to_payload(value, strict=True)
    assert value == to_payload(value)


def test_a_long_string_is_cut_with_a_marker() -> None:
    """A string too long for the limit keeps its start and says how much was cut."""
    result = to_payload({"text": "x" * 10_000, "n": 1}, max_bytes=1024)
    text = result["text"]
    kept = text.index("…")
    assert "x" * kept + f"…[truncated {10_000 - kept} chars]" == text
    assert 1 == result["n"]
    assert len(encode(result)) <= 1024


def test_a_long_list_is_cut_with_a_marker_item() -> None:
    """A list too long for the limit keeps its first items and a marker item."""
    items = to_payload({"items": list(range(10_000))}, max_bytes=1024)["items"]
    kept = len(items) - 1
    assert [*range(kept), f"[truncated {10_000 - kept} items]"] == items


def test_a_large_mapping_is_cut_with_a_marker_key() -> None:
    """A mapping with too many keys keeps its first keys and a marker key."""
    result = to_payload({f"k{i}": i for i in range(5_000)}, max_bytes=1024)
    kept = len(result) - 1
    assert f"[truncated {5_000 - kept} keys]" == result[CUT_KEY]
    assert [f"k{i}" for i in range(kept)] == list(result)[:-1]


def test_long_bytes_are_cut_counting_bytes() -> None:
    """Long UTF-8 bytes keep their start as text; binary keeps its start as base64."""
    text = to_output("é".encode() * 5_000, max_bytes=1024)["output"]
    assert re.fullmatch(r"é+…\[truncated \d+ bytes\]", text)
    assert 10_000 == 2 * text.count("é") + int(re.findall(r"\d+", text)[0])
    binary = to_output(b"\xff" * 5_000, max_bytes=1024)["output"]["_base64"]
    assert re.fullmatch(r"[A-Za-z0-9+/]+…\[truncated \d+ bytes\]", binary)


def test_what_cannot_be_cut_enough_becomes_a_preview() -> None:
    """A value still too big at the tightest cut is replaced by its size and JSON's start."""
    value = {"k" * 5_000: 1}
    full = encode(value)
    result = to_output(value, max_bytes=1024)["output"]
    assert {"_truncated", "_size", "_preview"} == set(result)
    assert len(full) == result["_size"]
    assert full.decode().startswith(result["_preview"])
    assert 0 < len(result["_preview"])


@pytest.mark.parametrize("max_bytes", [MIN_MAX_BYTES, 1000, 4096, 65_536])
def test_truncation_is_deterministic_and_under_the_limit(max_bytes: int) -> None:
    """The same oversized value is cut the same way every time, to fit the limit."""
    value = {
        "text": "y" * 100_000,
        "items": [{"n": i, "s": "z" * 50} for i in range(2_000)],
        "tags": {f"t{i}" for i in range(500)},
    }
    first, second = to_payload(value, max_bytes=max_bytes), to_payload(value, max_bytes=max_bytes)
    assert first == second
    assert len(encode(first)) <= max_bytes


def test_unencodable_text_is_escaped() -> None:
    """Lone surrogates in keys and values are written as escapes, the rest kept."""
    result = to_payload({"a\ud800": "b\udfff", "big": 2**70, "n": 1})
    assert {"a\\ud800": "b\\udfff", "big": str(2**70), "n": 1} == result
    encode(result)


def test_max_bytes_below_the_minimum_is_refused() -> None:
    """A limit too small for the truncation marker is a ValueError."""
    with pytest.raises(ValueError, match="max_bytes must be at least"):
        to_payload({}, max_bytes=MIN_MAX_BYTES - 1)


@pytest.mark.parametrize(
    "value",
    [
        {"x": math.nan},
        {"x": [1, math.inf]},
        {"x": {1}},
        {1: "a"},
        {"x": Opaque()},
        [1],
        "text",
        {"deep": _nested(MAX_DEPTH + 1, 1)},
    ],
)
def test_strict_mode_refuses_exactly_like_json_object(value: object) -> None:
    """strict=True raises the error json_object raises, with the same message."""
    with pytest.raises((TypeError, ValueError)) as expected:
        json_object(value, "payload")
    with pytest.raises(type(expected.value)) as caught:
        to_payload(value, "payload", strict=True)
    assert str(expected.value) == str(caught.value)


def test_strict_mode_refuses_what_is_over_the_limit() -> None:
    """strict=True raises ValueError for a payload whose JSON is over max_bytes."""
    with pytest.raises(ValueError, match=r"result is \d+ bytes as JSON, over the limit of 300"):
        to_payload({"text": "x" * 400}, "result", strict=True, max_bytes=300)


def test_strict_mode_refuses_what_cannot_be_encoded() -> None:
    """strict=True raises ValueError for text UTF-8 cannot hold."""
    with pytest.raises(ValueError, match="payload cannot be encoded as JSON"):
        to_payload({"x": "\ud800"}, strict=True)


def test_strict_mode_returns_a_copy() -> None:
    """strict=True returns an equal dict that later changes do not reach."""
    inner = [1]
    value = {"a": inner, "when": WHEN}
    result = to_payload(value, strict=True)
    inner.append(2)
    assert {"a": [1], "when": WHEN} == result


class Outer:
    """Holds a nested exception class."""

    class InnerError(Exception):
        """A nested exception."""


class UnprintableError(Exception):
    """An exception whose str raises."""

    def __str__(self) -> str:
        raise RuntimeError("no str")


@pytest.mark.parametrize(
    ("expected", "exc"),
    [
        ({"type": "builtins.ValueError", "message": "bad"}, ValueError("bad")),
        ({"type": "builtins.KeyError", "message": "'k'"}, KeyError("k")),
        (
            {"type": f"{Outer.InnerError.__module__}.Outer.InnerError", "message": "inner"},
            Outer.InnerError("inner"),
        ),
        (
            {"type": f"{__name__}.UnprintableError", "message": "<exception str() failed>"},
            UnprintableError(),
        ),
    ],
)
def test_error_info_names_the_type_and_message(expected: object, exc: BaseException) -> None:
    """error_info gives module.QualName and str(exc), even when str(exc) raises."""
    assert {"error": expected} == error_info(exc)


def test_error_info_caps_the_message() -> None:
    """A message over max_message keeps its start and says how much was cut."""
    message = error_info(ValueError("m" * 100), max_message=10)["error"]["message"]
    assert "m" * 10 + "…[truncated 90 chars]" == message


@pytest.mark.parametrize(
    ("expected", "exc"),
    [
        ("token [redacted] refused", ValueError("token sk-123 refused")),
        ("'[redacted]'", KeyError("sk-123")),
        ("[Errno 1] denied: '[redacted]'", OSError(1, "denied", "sk-123")),
        ("m" * 35 + "[reda…[truncated 5 chars]", ValueError("m" * 35 + "sk-123")),
    ],
)
def test_error_info_scrubs_the_secret(expected: str, exc: BaseException) -> None:
    """The secret is replaced wherever the exception holds it, before the message is cut."""
    assert expected == error_info(exc, secret="sk-123", max_message=40)["error"]["message"]


def test_error_info_without_a_secret_keeps_the_message() -> None:
    """An empty or missing secret changes nothing."""
    assert "a b" == error_info(ValueError("a b"), secret="")["error"]["message"]
    assert "a b" == error_info(ValueError("a b"))["error"]["message"]


def test_error_info_refuses_a_negative_cap() -> None:
    """max_message below zero is a ValueError."""
    with pytest.raises(ValueError, match="max_message"):
        error_info(ValueError("x"), max_message=-1)


def test_with_error_keeps_the_result_and_adds_the_error() -> None:
    """The block's result keys stay; "error" is added (and wins over a result's own)."""
    info = error_info(ValueError("x"))
    assert {"text": "t", **info} == with_error({"text": "t"}, ValueError("x"))
    assert info == with_error({"error": "mine"}, ValueError("x"))
    assert info == with_error(None, ValueError("x"))


def search(query: str, k: int = 3, *rest: int, scope: str = "all", **extra: object) -> None:
    """A module-level function."""


def handler(self: object, event: str) -> None:
    """A module-level function whose first parameter happens to be called self."""


class Tools:
    """Functions defined in a class body, as a decorator there sees them."""

    def lookup(self, key: str, default: object = None) -> None:
        """A method."""

    @classmethod
    def build(cls, size: int) -> None:
        """A classmethod."""

    @staticmethod
    def pure(value: int) -> None:
        """A staticmethod."""

    @staticmethod
    def odd(self: int) -> None:  # noqa: PLW0211 - a static method, oddly named parameter
        """A staticmethod whose parameter is called self."""


@pytest.mark.parametrize(
    ("expected", "fn", "args", "kwargs"),
    [
        ({"query": "q", "k": 3, "rest": [], "scope": "all", "extra": {}}, search, ("q",), {}),
        (
            {"query": "q", "k": 5, "rest": [6, 7], "scope": "s", "extra": {"x": [1]}},
            search,
            ("q", 5, 6, 7),
            {"scope": "s", "x": (1,)},
        ),
        ({"self": 1, "event": "e"}, handler, (1, "e"), {}),
        ({"key": "k", "default": None}, Tools.lookup, (Tools(), "k"), {}),
        ({"key": "k", "default": 2}, Tools().lookup, ("k",), {"default": 2}),
        ({"size": 4}, Tools.__dict__["build"].__func__, (Tools, 4), {}),
        ({"size": 4}, Tools.build, (4,), {}),
        ({"size": 4}, Tools.__dict__["build"], (Tools, 4), {}),
        ({"obj": [1]}, len, ([1],), {}),
        ({"value": 4}, Tools.pure, (4,), {}),
        ({"self": 4}, Tools.__dict__["odd"], (4,), {}),
    ],
)
def test_call_arguments_binds_by_name(
    expected: object, fn: Any, args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    """Arguments are bound by name with defaults; self/cls of class-body functions go."""
    assert expected == call_arguments(fn, args, kwargs)


def test_call_arguments_of_nested_functions_keep_self() -> None:
    """A function nested in a function keeps a first parameter named self."""

    def inner(self: int) -> None:
        """A nested function."""

    assert {"self": 1} == call_arguments(inner, (1,), {})


@pytest.mark.parametrize(
    ("expected", "fn", "args", "kwargs"),
    [
        ({"_args": [], "_kwargs": {}}, search, (), {}),
        ({"_args": ["q"], "_kwargs": {"query": "again"}}, search, ("q",), {"query": "again"}),
        ({"_args": [], "_kwargs": {}}, Tools.lookup, (Tools(),), {}),
        ({"_args": [1], "_kwargs": {}}, dict, (1,), {}),
    ],
)
def test_call_arguments_of_an_unbindable_call(
    expected: object, fn: Any, args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    """A call that does not fit the signature is recorded as raw args and kwargs."""
    assert expected == call_arguments(fn, args, kwargs)


def test_call_arguments_are_converted_and_cut() -> None:
    """Argument values are converted best-effort and cut to the limit."""
    result = call_arguments(search, ("q" * 5_000,), {"tags": {"b", "a"}}, max_bytes=1024)
    assert ["a", "b"] == result["extra"]["tags"]
    assert result["query"].endswith("chars]")
    assert len(encode(result)) <= 1024


def test_collector_keeps_everything_under_the_caps() -> None:
    """Yields within the caps are all kept, converted, and counted."""
    collector = YieldCollector()
    for item in ["a", {1}, math.nan]:
        collector.add(item)
    assert {"output": ["a", [1], "NaN"], "yielded": 3} == collector.result()


def test_collector_stops_keeping_at_the_item_cap() -> None:
    """Past max_items, yields are counted but not kept."""
    collector = YieldCollector(max_items=2)
    for item in range(5):
        collector.add(item)
    assert {"output": [0, 1], "yielded": 5, "truncated": True} == collector.result()
    assert 5 == collector.yielded


def test_collector_stops_keeping_at_the_byte_cap() -> None:
    """Once an item would pass max_bytes, it and later yields are only counted."""
    collector = YieldCollector(max_bytes=1024)
    for _ in range(10):
        collector.add("x" * 300)
    result = collector.result()
    assert ["x" * 300] * 3 == result["output"]
    assert (10, True) == (result["yielded"], result["truncated"])
    assert len(encode(result)) <= 1024


def test_collector_refuses_a_negative_item_cap() -> None:
    """max_items below zero is a ValueError."""
    with pytest.raises(ValueError, match="max_items"):
        YieldCollector(max_items=-1)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_json_values_come_back_unchanged(value: object) -> None:
    """Whatever is already valid JSON is recorded exactly as given."""
    assert {"k": value} == to_payload({"k": value})
    assert {"output": value} == to_output(value)


class Box:
    """An object holding another, with no JSON form."""

    def __init__(self, content: object) -> None:
        self.content = content

    def __repr__(self) -> str:
        return f"Box({self.content!r})"


odd_leaves = (
    json_values
    | st.integers()
    | st.floats()
    | st.binary()
    | st.sampled_from(["\ud800", "a\udfffb", Color.RED, Level.HIGH])
    | st.builds(Opaque)
    | st.builds(Broken)
    | st.decimals()
    | st.datetimes()
    | st.timedeltas()
    | st.uuids()
    | st.builds(Point, st.integers(), st.sets(st.text(max_size=3)))
)
odd_values = st.recursive(
    odd_leaves,
    lambda children: (
        st.lists(children)
        | st.tuples(children, children)
        | st.frozensets(st.integers() | st.text(max_size=5) | st.none())
        | st.dictionaries(st.text(max_size=5) | st.integers() | st.none(), children)
        | st.builds(Box, children)
        | st.builds(Node, children)
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(odd_values, st.integers(min_value=MIN_MAX_BYTES, max_value=4096))
def test_any_value_encodes_within_the_limit(value: object, max_bytes: int) -> None:
    """Whatever is given, the result encodes as JSON within max_bytes."""
    for result in (to_payload(value, max_bytes=max_bytes), to_output(value, max_bytes=max_bytes)):
        assert len(encode(result)) <= max_bytes
