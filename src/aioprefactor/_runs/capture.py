"""What a span records about the code it watches: payloads, arguments, outputs and errors.

Recording must never break the code it records, so by default a value is converted, not
refused: :func:`to_payload` (unless ``strict=True``), :func:`to_output`,
:func:`call_arguments`, :class:`YieldCollector` and :func:`error_info` never raise for
what they are given. Each returns a fresh structure of JSON values (later changes to the
caller's objects do not leak into it) whose JSON is at most ``max_bytes`` long.

Conversions, applied at any depth:

- ``str``, ``int``, ``bool``, ``None``: kept (a subclass becomes the plain value).
- ``float``: kept; NaN and the infinities become ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
- ``datetime``, ``date``, ``time``, ``UUID``: kept (they are sent as ISO 8601 / UUID text);
  a subclass of one becomes that text.
- ``Decimal``: its exact text, ``"1.10"``. ``timedelta``: its seconds as a float.
  ``Enum``: its value, converted. ``pathlib`` paths: their text.
- ``bytes``, ``bytearray``, ``memoryview``: the text, when they are UTF-8; otherwise
  ``{"_base64": "<base64 of the bytes>"}``.
- ``list``, ``tuple`` and other sequences: a list. ``set``, ``frozenset`` and other sets: a
  sorted list (sorted by each item's JSON when the items cannot be compared).
- ``dict`` and other mappings: a dict. A key that is not a string becomes ``str(key)``; should
  that name be taken by another key, it becomes ``"name (2)"``, ``"name (3)"``, ... in the
  mapping's order, so string keys always keep their names.
- dataclass instances: a dict of their fields. msgspec Structs: ``msgspec.to_builtins``.
  pydantic models: ``model_dump(mode="json")`` (v2) or ``.dict()`` (v1).
- anything else: its ``repr()``, cut to :data:`MAX_REPR_CHARS` characters.
- a container that contains itself: ``"[cycle]"`` where it reappears; in a value that needs
  converting, a container nested over :data:`MAX_DEPTH` levels deep: ``"[too deep]"``.

A value that is already valid JSON (and fits) comes back equal to what was given: it takes a
fast path, a round trip through msgspec's encoder and decoder, which also makes the copy.

Size limits. When a value's JSON is over ``max_bytes``, it is cut, not refused, and always the
same way for the same value: long strings keep their start, followed by
``"…[truncated N chars]"`` (``N bytes`` for bytes), long lists keep their first items and end
with a ``"[truncated N items]"`` item, and large mappings keep their first keys plus a ``"…"``
key whose value is ``"[truncated N keys]"``; the cut is tightened step by step until the value
fits. Should even the tightest cut not fit, the value is replaced by ``{"_truncated": true,
"_size": N, "_preview": "<the start of its JSON>"}``, where ``N`` is the size in bytes of its
JSON as far as it was converted.
"""

from __future__ import annotations

import base64
import codecs
import dataclasses
import inspect
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from itertools import islice
from pathlib import PurePath
from typing import Any, Final
from uuid import UUID

import msgspec

from aioprefactor._wire.codec import encode, scrub
from aioprefactor._wire.payloads import copy_json, json_object

DEFAULT_MAX_BYTES: Final = 256 * 1024
"""The default limit on the JSON of one payload, result, argument set or output."""
DEFAULT_MAX_MESSAGE: Final = 4096
"""The default limit, in characters, on a recorded exception's message."""
DEFAULT_MAX_YIELDS: Final = 1000
"""The default number of a generator's yields kept by :class:`YieldCollector`."""
MIN_MAX_BYTES: Final = 256
"""The smallest ``max_bytes`` accepted: room for the truncation marker and a preview."""
MAX_DEPTH: Final = 200
"""Containers nested deeper than this become ``"[too deep]"`` (the strict check's limit)."""
MAX_REPR_CHARS: Final = 1000
"""The longest ``repr()`` kept for an object that has no JSON form."""
PREVIEW_BYTES: Final = 1024
"""How much of an oversized value's JSON its ``_preview`` shows."""

CYCLE: Final = "[cycle]"
TOO_DEEP: Final = "[too deep]"
CUT_KEY: Final = "…"

# The tightest cut tried before a value is replaced by its preview.
_MIN_CHARS: Final = 64
_MIN_ITEMS: Final = 8
# Room for `{"value": ...}`, `{"output": ...}` and the collector's counters around a value.
_WRAPPER_BYTES: Final = 16
_COLLECTOR_BYTES: Final = 80
# Room for the preview marker's keys and its size, beside the preview itself.
_PREVIEW_OVERHEAD: Final = 96

# Exact types that are already JSON as they are, and need neither copy nor check.
_PLAIN: Final = frozenset({int, bool, type(None), datetime, date, time, UUID})
# After an encode failed: only these pass unchecked; big integers, lone surrogates and
# tzinfos that raise are looked at one by one.
_SAFE: Final = frozenset({bool, type(None), date, UUID})
_ENCODABLE_INTS: Final = range(-(2**63), 2**64)

_decode: Final = msgspec.json.Decoder().decode


class _Walk:
    """One conversion pass: how far it cuts, and the containers on the current path."""

    __slots__ = ("careful", "chars", "items", "left", "path", "plain")

    def __init__(self, chars: int, items: int, nodes: int, *, careful: bool) -> None:
        self.chars = chars  # strings longer than this are cut
        self.items = items  # containers with more entries than this are cut
        self.left = nodes  # entries still allowed in the whole value
        self.careful = careful
        self.plain = _SAFE if careful else _PLAIN
        self.path: set[int] = set()

    def take(self, count: int) -> int:
        """How many of a container's ``count`` entries to keep."""
        keep = min(count, self.items, max(self.left, 0))
        self.left -= keep
        return keep


def _cut(text: str, limit: int, unit: str = "chars") -> str:
    return f"{text[:limit]}…[truncated {len(text) - limit} {unit}]"


def _encodable(text: str) -> str:
    """``text``, with lone surrogates (which UTF-8 cannot hold) written as escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _text(value: str, walk: _Walk) -> str:
    text = str.__str__(value)
    if walk.careful:
        text = _encodable(text)
    return text if len(text) <= walk.chars else _cut(text, walk.chars)


def _repr(value: object, walk: _Walk) -> str:
    try:
        text = str.__str__(repr(value))
    except Exception:  # noqa: BLE001 - a broken __repr__ must not break the recording
        text = f"<{type(value).__qualname__} object; repr() failed>"
    if walk.careful:
        text = _encodable(text)
    limit = min(walk.chars, MAX_REPR_CHARS)
    return text if len(text) <= limit else _cut(text, limit)


def _float_name(value: float) -> str:
    if value != value:  # noqa: PLR0124 - NaN is the one float not equal to itself
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _convert(value: object, walk: _Walk, depth: int) -> Any:  # noqa: PLR0911 - one exit per type
    """Convert one value; the exact plain types go first, as most values are those."""
    kind = type(value)
    if kind is str:
        if len(value) <= walk.chars and not walk.careful:  # type: ignore[arg-type]
            return value
        return _text(value, walk)  # type: ignore[arg-type]
    if kind in walk.plain:
        return value
    if kind is float:
        return value if math.isfinite(value) else _float_name(value)  # type: ignore[arg-type]
    try:
        if kind is dict:
            return _mapping(value, walk, depth)  # type: ignore[arg-type]
        if kind is list or kind is tuple:
            return _sequence(value, walk, depth)  # type: ignore[arg-type]
        return _other(value, walk, depth)
    except Exception:  # noqa: BLE001 - whatever the caller's objects do, the recording goes on
        walk.path.discard(id(value))
        return _repr(value, walk)


def _key(key: object, taken: set[str], walk: _Walk) -> str:
    """The name of a key that is not a ``str``: its text, made unique among ``taken``."""
    try:
        text = str.__str__(str(key))
    except Exception:  # noqa: BLE001 - a broken __str__ must not break the recording
        text = _repr(key, walk)
    if len(text) > MAX_REPR_CHARS:
        text = _cut(text, MAX_REPR_CHARS)
    if walk.careful:
        text = _encodable(text)
    name, number = text, 2
    while name in taken:
        name, number = f"{text} ({number})", number + 1
    taken.add(name)
    return name


def _enter(value: object, walk: _Walk, depth: int) -> str | None:
    """Put a container on the path; or say why not: the marker that stands for it."""
    if depth > MAX_DEPTH:
        return TOO_DEEP
    ident = id(value)
    if ident in walk.path:
        return CYCLE
    walk.path.add(ident)
    return None


def _mapping(value: Mapping[Any, Any], walk: _Walk, depth: int) -> Any:
    marker = _enter(value, walk, depth)
    if marker is not None:
        return marker
    count = len(value)
    keep = walk.take(count)
    pairs = value.items() if keep == count else islice(value.items(), keep)
    taken: set[str] | None = None
    out: dict[str, Any] = {}
    for key, item in pairs:
        if type(key) is str and not walk.careful:
            name = key
        elif isinstance(key, str):
            name = _encodable(str.__str__(key)) if walk.careful else str.__str__(key)
        else:
            if taken is None:
                # String keys keep their names; converted keys give way to them.
                taken = {str.__str__(k) for k in value if isinstance(k, str)}
            name = _key(key, taken, walk)
        out[name] = _convert(item, walk, depth + 1)
    if keep < count:
        out[CUT_KEY] = f"[truncated {count - keep} keys]"
    walk.path.discard(id(value))
    return out


def _sequence(value: Sequence[Any], walk: _Walk, depth: int) -> Any:
    marker = _enter(value, walk, depth)
    if marker is not None:
        return marker
    count = len(value)
    keep = walk.take(count)
    out = [_convert(item, walk, depth + 1) for item in islice(value, keep)]
    if keep < count:
        out.append(f"[truncated {count - keep} items]")
    walk.path.discard(id(value))
    return out


def _set(value: AbstractSet[Any], walk: _Walk, depth: int) -> Any:
    if depth > MAX_DEPTH:
        return TOO_DEEP
    try:
        ordered = sorted(value)
    except Exception:  # noqa: BLE001 - items that do not compare are ordered by their JSON
        items = [_convert(item, walk, depth + 1) for item in value]
        items.sort(key=encode)
        keep = walk.take(len(items))
        if keep == len(items):
            return items
        return [*items[:keep], f"[truncated {len(items) - keep} items]"]
    return _sequence(ordered, walk, depth)


def _bytes(data: bytes, walk: _Walk) -> Any:
    limit = walk.chars
    head = data[:limit]
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        # Not final when cut: a character split by the cut is held back, not an error.
        text: str = decoder.decode(head, final=len(data) <= limit)
    except UnicodeDecodeError:
        head = data[: limit // 4 * 3]
        text = base64.b64encode(head).decode("ascii")
        if len(head) < len(data):
            text += f"…[truncated {len(data) - len(head)} bytes]"
        return {"_base64": text}
    if len(data) > limit:
        kept = len(head) - len(decoder.getstate()[0])
        text += f"…[truncated {len(data) - kept} bytes]"
    return text


def _record(value: object, fields: object, walk: _Walk, depth: int) -> Any:
    """Convert ``fields``, the plain form of ``value``, with ``value`` on the path."""
    marker = _enter(value, walk, depth)
    if marker is not None:
        return marker
    out = _convert(fields, walk, depth)
    walk.path.discard(id(value))
    return out


def _struct(value: msgspec.Struct, walk: _Walk, depth: int) -> Any:
    try:
        plain = msgspec.to_builtins(value)
    except Exception:  # noqa: BLE001 - a field msgspec cannot convert: field by field, here
        plain = {f.encode_name: getattr(value, f.name) for f in msgspec.structs.fields(value)}
    return _record(value, plain, walk, depth)


def _other(value: object, walk: _Walk, depth: int) -> Any:  # noqa: PLR0911, PLR0912 - one exit per type
    """Convert what is not an exact plain type: subclasses, other types, objects."""
    if isinstance(value, Enum):
        return _convert(value.value, walk, depth)
    if isinstance(value, str):
        return _text(value, walk)
    if isinstance(value, int):
        number = int.__int__(value)
        return str(number) if walk.careful and number not in _ENCODABLE_INTS else number
    if isinstance(value, float):
        return _convert(float.__float__(value), walk, depth)
    if isinstance(value, bytes | bytearray | memoryview):
        return _bytes(bytes(value), walk)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return _text(str(value), walk)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, PurePath):
        return _text(str(value), walk)
    if isinstance(value, Mapping):
        return _mapping(value, walk, depth)
    if isinstance(value, AbstractSet):
        return _set(value, walk, depth)
    if isinstance(value, list | tuple):
        return _sequence(value, walk, depth)
    if isinstance(value, msgspec.Struct):
        return _struct(value, walk, depth)
    kind = type(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _record(value, fields, walk, depth)
    if callable(getattr(kind, "model_dump", None)):
        return _record(value, value.model_dump(mode="json"), walk, depth)  # type: ignore[attr-defined]
    if callable(getattr(kind, "dict", None)) and hasattr(kind, "__fields__"):
        return _record(value, value.dict(), walk, depth)  # type: ignore[attr-defined]
    if isinstance(value, Sequence):
        return _sequence(value, walk, depth)
    return _repr(value, walk)


def _preview(data: bytes, max_bytes: int) -> tuple[dict[str, Any], int]:
    # Re-encoding JSON text at most doubles it (only quotes and backslashes get escaped).
    room = max(0, min(PREVIEW_BYTES, (max_bytes - _PREVIEW_OVERHEAD) // 2))
    marker = {
        "_truncated": True,
        "_size": len(data),
        "_preview": data[:room].decode("utf-8", "ignore"),
    }
    return marker, len(encode(marker))


def _round_trip(value: object, max_bytes: int) -> tuple[Any, int] | None:
    """The fast path: ``value``'s JSON read back, if that fits and equals ``value``.

    msgspec writes and reads in C, so for the common payload (plain dicts and lists of
    plain values) this is cheaper than a walk in Python, and yields the copy and the size
    at once. What msgspec would change on the way (NaN, a set, a tuple, a non-str key, a
    dataclass, a datetime) reads back unequal and takes the converting walk; what it cannot
    write at all (other objects, a cycle, a lone surrogate) raises and takes it too.
    """
    try:
        data = encode(value)
        if len(data) > max_bytes:
            return None
        copy = _decode(data)
        return (copy, len(data)) if copy == value else None
    except Exception:  # noqa: BLE001 - anything unusual is for the walk to handle
        return None


def _fit(value: object, max_bytes: int) -> tuple[Any, int]:
    """Convert ``value`` and cut it until its JSON fits; return it and that JSON's size."""
    fast = _round_trip(value, max_bytes)
    if fast is not None:
        return fast
    # A container entry costs at least two bytes, a character at least one: the first pass
    # cuts nothing that could fit, and bounds the work a huge value can cause.
    chars, items, nodes = max_bytes, max_bytes // 2, max_bytes // 2
    careful = False
    first: bytes | None = None
    while True:
        converted = _convert(value, _Walk(chars, items, nodes, careful=careful), 0)
        try:
            data = encode(converted)
        except Exception:
            if careful:
                raise
            careful = True
            continue
        if len(data) <= max_bytes:
            return converted, len(data)
        first = first or data
        if chars <= _MIN_CHARS and items <= _MIN_ITEMS:
            return _preview(first, max_bytes)
        # Tighten by about the factor the value is over, at least halving.
        factor = max(2, 1 << (len(data) // max_bytes).bit_length())
        chars, items = max(_MIN_CHARS, chars // factor), max(_MIN_ITEMS, items // factor)


def _safe_fit(value: object, max_bytes: int) -> tuple[Any, int]:
    try:
        return _fit(value, max_bytes)
    except Exception as exc:  # noqa: BLE001 - the last guard: recording never breaks the code
        marker = f"[unconvertible: {type(exc).__name__}]"
        return marker, len(marker) + 2


def _check_limit(max_bytes: int) -> None:
    if max_bytes < MIN_MAX_BYTES:
        raise ValueError(f"max_bytes must be at least {MIN_MAX_BYTES}, not {max_bytes}")


def _is_record(value: object) -> bool:
    """Whether ``value`` converts to a JSON object: a mapping, dataclass, Struct or model."""
    kind = type(value)
    return (
        kind is dict
        or isinstance(value, Mapping | msgspec.Struct)
        or (dataclasses.is_dataclass(value) and not isinstance(value, type))
        or callable(getattr(kind, "model_dump", None))
        or (callable(getattr(kind, "dict", None)) and hasattr(kind, "__fields__"))
    )


def to_payload(
    value: object,
    where: str = "payload",
    *,
    strict: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, Any]:
    """Return a fresh JSON object to record as a span's payload or result.

    By default the value is converted as the module docstring lists, and cut to fit
    ``max_bytes``; a value that does not convert to a JSON object (a list, a string, an
    object without fields) is recorded as ``{"value": ...}``. With ``strict=True`` nothing
    is converted: the value must be a JSON object as it is.

    Args:
        value: What the caller handed in.
        where: The name used in error messages (strict only), e.g. ``"payload"``.
        strict: Refuse what is not JSON, and what is over the limit, instead of converting.
        max_bytes: The limit on the value's JSON.

    Raises:
        TypeError: Strict only: not a mapping, or holding a value JSON cannot hold.
        ValueError: Strict only: NaN, an infinity, nesting over 200 levels, or JSON over
            ``max_bytes``. Always: ``max_bytes`` below :data:`MIN_MAX_BYTES`.
    """
    _check_limit(max_bytes)
    if strict:
        checked: dict[str, Any] = copy_json(json_object(value, where))
        try:
            size = len(encode(checked))
        except (ValueError, OverflowError, msgspec.EncodeError) as exc:
            # Lone surrogates in a str, or an integer this msgspec cannot write.
            raise ValueError(f"{where} cannot be encoded as JSON: {exc}") from None
        if size > max_bytes:
            raise ValueError(f"{where} is {size} bytes as JSON, over the limit of {max_bytes}")
        return checked
    if _is_record(value):
        converted, _ = _safe_fit(value, max_bytes)
        if type(converted) is dict:
            return converted
    return {"value": _safe_fit(value, max_bytes - _WRAPPER_BYTES)[0]}


def to_value(value: object, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Return any value converted to JSON and cut to fit ``max_bytes`` (never raises for it).

    Raises:
        ValueError: ``max_bytes`` is below :data:`MIN_MAX_BYTES`.
    """
    _check_limit(max_bytes)
    return _safe_fit(value, max_bytes)[0]


def to_output(value: object, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Return ``{"output": value}``, the value converted and cut to fit ``max_bytes``.

    Raises:
        ValueError: ``max_bytes`` is below :data:`MIN_MAX_BYTES`.
    """
    _check_limit(max_bytes)
    return {"output": _safe_fit(value, max_bytes - _WRAPPER_BYTES)[0]}


def error_info(
    exc: BaseException, *, secret: str | None = None, max_message: int = DEFAULT_MAX_MESSAGE
) -> dict[str, dict[str, str]]:
    """Describe an exception as ``{"error": {"type": ..., "message": ...}}``.

    ``type`` is the class's module and qualified name, builtins included:
    ``"builtins.ValueError"``, ``"app.tools.Outer.Error"``. ``message`` is ``str(exc)``
    with ``secret`` replaced by ``[redacted]``, cut to ``max_message`` characters; when
    ``str(exc)`` itself raises, it is ``"<exception str() failed>"``.

    Args:
        exc: The exception.
        secret: Text that must never be recorded, such as the API token.
        max_message: The longest message kept, in characters.

    Raises:
        ValueError: ``max_message`` is negative.
    """
    if max_message < 0:
        raise ValueError(f"max_message must not be negative, not {max_message}")
    kind = type(exc)
    module = getattr(kind, "__module__", None)
    name = f"{module}.{kind.__qualname__}" if isinstance(module, str) else kind.__qualname__
    try:
        message = str.__str__(str(exc))
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the failure itself
        message = "<exception str() failed>"
    # Scrub before cutting, so a cut never leaves the start of the secret behind.
    message = _encodable(scrub(message, secret))
    if len(message) > max_message:
        message = _cut(message, max_message)
    return {"error": {"type": _encodable(scrub(name, secret)), "message": message}}


def with_error(
    result: Mapping[str, Any] | None,
    exc: BaseException,
    *,
    secret: str | None = None,
    max_message: int = DEFAULT_MAX_MESSAGE,
) -> dict[str, Any]:
    """Return a new dict: ``result``'s keys with ``"error"`` from :func:`error_info` added.

    A key ``"error"`` already in ``result`` gives way to the exception.

    Raises:
        ValueError: ``max_message`` is negative.
    """
    merged = {} if result is None else dict(result)
    merged.update(error_info(exc, secret=secret, max_message=max_message))
    return merged


class _Shape:
    """What binding a function's arguments needs, worked out once per function."""

    __slots__ = ("drops_first", "signature")

    def __init__(self, fn: Callable[..., object]) -> None:
        self.signature = inspect.signature(fn)
        parameters = list(self.signature.parameters.values())
        # `self`/`cls` of a function defined in a class body: a decorator applied there
        # wraps the plain function, so the instance arrives as the first argument.
        qualname = str(getattr(fn, "__qualname__", ""))
        parts = qualname.split(".")
        in_class = len(parts) >= 2 and parts[-2] != "<locals>"
        self.drops_first = bool(
            in_class
            and parameters
            and parameters[0].name in {"self", "cls"}
            and parameters[0].kind
            in {inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD}
        )


_SHAPES: weakref.WeakKeyDictionary[Callable[..., object], _Shape | None] = (
    weakref.WeakKeyDictionary()
)


def _shape(fn: Callable[..., object]) -> _Shape | None:
    """The function's shape, from the cache; ``None`` when it has no signature."""
    try:
        return _SHAPES[fn]
    except KeyError:
        cacheable = True
    except TypeError:  # not weakly referable, such as some builtins
        cacheable = False
    try:
        shape: _Shape | None = _Shape(fn)
    except (TypeError, ValueError):
        shape = None
    if cacheable:
        _SHAPES[fn] = shape
    return shape


def call_arguments(
    fn: Callable[..., object] | staticmethod[..., object] | classmethod[Any, ..., object],
    args: Sequence[object],
    kwargs: Mapping[str, object],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> dict[str, Any]:
    """Return a call's arguments by parameter name, defaults applied, converted and cut.

    ``*args`` becomes a list and ``**kwargs`` a dict, each under its parameter's name. The
    first parameter of a function defined in a class body is left out when it is named
    ``self`` or ``cls`` (the instance or class a decorator there receives first), and so
    is a bound method's ``__self__``; a ``staticmethod`` object keeps its first parameter,
    whatever its name. A call that does not fit the signature (it will
    raise ``TypeError`` itself) is recorded as ``{"_args": [...], "_kwargs": {...}}``.

    Args:
        fn: The function called: a plain function, a bound method, a ``classmethod`` or
            ``staticmethod`` object, or any callable with a signature.
        args: The positional arguments, as the call received them.
        kwargs: The keyword arguments.
        max_bytes: The limit on the arguments' JSON.

    Raises:
        ValueError: ``max_bytes`` is below :data:`MIN_MAX_BYTES`.
    """
    _check_limit(max_bytes)
    drop_first: bool | None = None  # None: by the self/cls rule
    function: Callable[..., object]
    if isinstance(fn, staticmethod):
        function, drop_first = fn.__func__, False
    elif isinstance(fn, classmethod):
        function = fn.__func__
    else:
        function = fn
    if inspect.ismethod(function):
        args, function, drop_first = (function.__self__, *args), function.__func__, True
    shape = _shape(function)
    arguments: dict[str, Any] | None = None
    if shape is not None:
        if drop_first is None:
            drop_first = shape.drops_first
        try:
            bound = shape.signature.bind(*args, **kwargs)
        except TypeError:
            pass
        else:
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            if drop_first and arguments:
                del arguments[next(iter(arguments))]
    if arguments is None:
        arguments = {"_args": list(args[1:] if drop_first else args), "_kwargs": dict(kwargs)}
    converted, _ = _safe_fit(arguments, max_bytes)
    return converted if type(converted) is dict else {"_args": converted}


class YieldCollector:
    """Keep what a generator yields, converted, up to a number of items and a size.

    Items are kept whole (each cut to fit ``max_bytes`` on its own) while they fit; from
    the first that does not, items are only counted.
    """

    __slots__ = ("_items", "_max_items", "_room", "_truncated", "_used", "_yielded")

    def __init__(
        self, *, max_items: int = DEFAULT_MAX_YIELDS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        """Start empty.

        Args:
            max_items: The most items kept.
            max_bytes: The limit on the JSON of :meth:`result`.

        Raises:
            ValueError: ``max_items`` is negative, or ``max_bytes`` below
                :data:`MIN_MAX_BYTES`.
        """
        _check_limit(max_bytes)
        if max_items < 0:
            raise ValueError(f"max_items must not be negative, not {max_items}")
        self._items: list[Any] = []
        self._max_items = max_items
        self._room = max_bytes - _COLLECTOR_BYTES
        self._used = 2  # the list's brackets
        self._truncated = False
        self._yielded = 0

    @property
    def yielded(self) -> int:
        """How many items were added, kept or not."""
        return self._yielded

    def add(self, item: object) -> None:
        """Count an item, and keep it converted if the caps leave room."""
        self._yielded += 1
        if self._truncated:
            return
        if len(self._items) >= self._max_items:
            self._truncated = True
            return
        converted, size = _safe_fit(item, self._room)
        if self._used + size + 1 > self._room:
            self._truncated = True
            return
        self._items.append(converted)
        self._used += size + 1

    def result(self) -> dict[str, Any]:
        """Return ``{"output": [...], "yielded": N}``, with ``"truncated": True`` if cut."""
        out: dict[str, Any] = {"output": list(self._items), "yielded": self._yielded}
        if self._truncated:
            out["truncated"] = True
        return out


def without_secret(value: Any, secret: str | None) -> Any:
    """Return a converted value with every occurrence of ``secret`` replaced by a marker.

    A payload that does not hold the secret (the usual case) is returned as it is, after
    one encode to look; one that does is copied with the secret scrubbed from every string,
    keys included.
    """
    if not secret or secret.encode() not in encode(value):
        return value
    return _scrub_all(value, secret)


def _scrub_all(value: Any, secret: str) -> Any:
    if isinstance(value, str):
        return scrub(value, secret)
    if isinstance(value, dict):
        return {scrub(key, secret): _scrub_all(item, secret) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub_all(item, secret) for item in value]
    return value
