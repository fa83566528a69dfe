"""Checks on what callers hand in (payloads, versions, schemas), before anything is sent.

A payload must reach the wire exactly as given: NaN, a set or an object is refused here,
with the path of the bad value, instead of being changed by the encoder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime, time
from typing import Any, Final, TypeVar
from uuid import UUID

import msgspec

T = TypeVar("T")

# Deeper than any real payload, shallow enough to stop a payload that contains itself.
_MAX_DEPTH: Final = 200

_SCALARS: Final = (str, int, bool, type(None), datetime, date, time, UUID)
_SCALAR_TYPES: Final = frozenset(_SCALARS)


def _plainly_json(value: object, depth: int) -> bool:  # noqa: PLR0911 - one exit per type
    """Whether ``value`` is built of plain JSON types only; fast, and says nothing of why.

    Exact types only, so anything unusual (a subclass, a Mapping, a Struct) falls to
    the slow, precise check. No path strings are built here: most payloads are fine.
    """
    kind = type(value)
    if kind in _SCALAR_TYPES:
        return True
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if depth > _MAX_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                return False
            if type(item) not in _SCALAR_TYPES and not _plainly_json(item, depth + 1):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:  # type: ignore[attr-defined]
            if type(item) not in _SCALAR_TYPES and not _plainly_json(item, depth + 1):
                return False
        return True
    return False


def check_json(value: object, where: str) -> None:
    """Raise if ``value`` would not survive a JSON round trip unchanged.

    msgspec would write NaN as ``null`` and a set as an array; a payload must never be
    changed on its way out, so both are refused here, naming the path of the bad value.

    Raises:
        TypeError: A value of a type JSON cannot hold, or a non-string key.
        ValueError: A float that is NaN or infinite, or nesting over 200 levels deep.
    """
    if not _plainly_json(value, 0):
        _explain(value, where, 0)


def _explain(value: object, where: str, depth: int) -> None:
    """Walk ``value`` as check_json does, naming the path of the first bad value."""
    if isinstance(value, _SCALARS):
        return
    if depth > _MAX_DEPTH:
        raise ValueError(
            f"{where} is nested over {_MAX_DEPTH} levels deep (does it contain itself?)"
        )
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}, which JSON cannot represent")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where} has a key {key!r} of type {type(key).__name__}; JSON keys are strings"
                )
            _explain(item, f"{where}[{key!r}]", depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _explain(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, msgspec.Struct):
        # Field by field: to_builtins would quietly turn a set into a list.
        for name in value.__struct_fields__:
            _explain(getattr(value, name), f"{where}.{name}", depth + 1)
        return
    raise TypeError(
        f"{where} holds {value!r} of type {type(value).__name__}, which is not JSON "
        "(use dict, list, str, int, float, bool, None, datetime or UUID)"
    )


def copy_json(value: Any) -> Any:
    """Copy the containers of a checked JSON value, so later changes to it do not leak in."""
    if type(value) is dict:
        return {key: copy_json(item) for key, item in value.items()}
    if type(value) is list or type(value) is tuple:
        return [copy_json(item) for item in value]
    return value


def to_struct(value: object, model: type[T], where: str) -> T:
    """Accept a Struct of ``model`` or a plain mapping, and return the Struct.

    Raises:
        TypeError: ``value`` is neither.
        ValueError: The mapping does not fit the model; the message names the field.
    """
    if not isinstance(value, model | Mapping):
        raise TypeError(f"{where} must be a {model.__name__} or a dict, not {type(value).__name__}")
    check_json(value, where)
    try:
        if isinstance(value, model):
            # A Struct's constructor checks no types, so one built by hand gets the same
            # check as a dict: what would be sent must convert back to the model.
            msgspec.convert(msgspec.to_builtins(value), model)
            return value
        return msgspec.convert(value, model)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{where} is not a valid {model.__name__}: {exc}") from None


def json_object(value: object, where: str) -> dict[str, Any]:
    """Check a user payload is a JSON object and return it as a dict.

    Raises:
        TypeError: Not a mapping, or holding something JSON cannot hold.
        ValueError: Holding NaN or an infinity.
    """
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a dict, not {type(value).__name__}")
    check_json(value, where)
    return value if type(value) is dict else dict(value)
