"""Checks on arguments, run before anything is sent."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, TypeVar

if TYPE_CHECKING:
    from collections.abc import Collection

MAX_KEY_LENGTH: Final = 64
_MINUTE: Final = timedelta(minutes=1)

S = TypeVar("S", bound=str)


def new_key() -> str:
    """A fresh idempotency key: 32 random hex characters."""
    return os.urandom(16).hex()


def key_or_new(key: object, name: str = "idempotency_key") -> str:
    """Check a caller's idempotency key, or make one when there is none.

    Raises:
        TypeError: Not a str.
        ValueError: Empty, over 64 characters, or holding control characters.
    """
    if key is None:
        return new_key()
    if not isinstance(key, str):
        raise TypeError(f"{name} must be a str, not {type(key).__name__}")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"{name} must be 1 to {MAX_KEY_LENGTH} characters, got {len(key)}")
    if not key.isprintable():
        raise ValueError(f"{name} must not hold control characters")
    return key


def optional_str(value: object, name: str) -> str | None:
    """Check an optional, non-empty string argument.

    Raises:
        TypeError: Neither None nor a str.
        ValueError: An empty str.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty (pass None to leave it out)")
    return value


def required_str(value: object, name: str) -> str:
    """Check a required, non-empty string argument."""
    checked = optional_str(value, name)
    if checked is None:
        raise TypeError(f"{name} is required")
    return checked


def choice(value: object, allowed: Collection[S], name: str) -> S:
    """Check that ``value`` is one of ``allowed``.

    Raises:
        ValueError: It is not.
    """
    # Tested as a str first: an unhashable value would fail the lookup with a bare TypeError.
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(sorted(allowed))
        raise ValueError(f"{name} must be one of {options}; got {value!r}")
    return value  # type: ignore[return-value]


def timestamp(value: object, name: str = "timestamp") -> datetime | None:
    """Check an optional timestamp: a timezone-aware datetime.

    Raises:
        TypeError: Not a datetime.
        ValueError: A naive datetime, which would be read in the server's zone.
    """
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    offset = value.utcoffset()
    if offset is None:
        raise ValueError(f"{name} must be timezone-aware (e.g. datetime.now(UTC))")
    if offset % _MINUTE:
        # RFC 3339 offsets are whole minutes and the encoder rounds the rest away, which
        # would move the instant (historical zones have offsets like +00:19:32).
        return value.astimezone(UTC)
    return value


def boolean(value: object, name: str) -> bool:
    """Check a bool argument (``1`` and ``"yes"`` are refused, not guessed at)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def seconds(value: object, name: str) -> float:
    """Check a positive, finite number of seconds.

    Raises:
        TypeError: Not a number.
        ValueError: Zero, negative, NaN or infinite.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)
