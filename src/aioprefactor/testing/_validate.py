"""Field-by-field checks of request bodies, gathering every problem into one 422 answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aioprefactor.testing._errors import invalid

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

MAX_KEY_LENGTH = 64
BLANK = "can't be blank"


class Fields:
    """A reader of one JSON object that records a message per bad field.

    Optional fields may be absent or `null`. Problems are collected under the field's path
    (`details.parent_span_id`, `agent_version.name`) and raised together by `check()`.
    """

    def __init__(
        self,
        body: Mapping[str, Any],
        prefix: str = "",
        errors: dict[str, list[str]] | None = None,
    ) -> None:
        self._body = body
        self._prefix = prefix
        self.errors: dict[str, list[str]] = {} if errors is None else errors

    @property
    def prefix(self) -> str:
        """The path of this object inside the request body (`""` at the top)."""
        return self._prefix

    def names(self) -> list[str]:
        """Return the names of the object's fields."""
        return list(self._body)

    def add(self, name: str, message: str) -> None:
        """Record `message` against the field `name`."""
        self.errors.setdefault(self._prefix + name, []).append(message)

    def only(self, allowed: Collection[str]) -> None:
        """Flag every field that is not in `allowed` (a typo must not pass silently)."""
        for name in self._body:
            if name not in allowed:
                self.add(name, "is not a known field")

    def _get(self, name: str, *, required: bool) -> Any:
        value = self._body.get(name)
        if value is None and required:
            self.add(name, BLANK)
        return value

    def string(
        self,
        name: str,
        *,
        required: bool = False,
        min_length: int = 0,
        max_length: int | None = None,
    ) -> str | None:
        """Read a string field; an empty string is blank when the field is required."""
        value = self._get(name, required=required)
        if value is None:
            return None
        if not isinstance(value, str):
            self.add(name, "must be a string")
            return None
        if required and not value:
            self.add(name, BLANK)
            return None
        if len(value) < min_length:
            self.add(name, f"should be at least {min_length} character(s)")
            return None
        if max_length is not None and len(value) > max_length:
            self.add(name, f"should be at most {max_length} character(s)")
            return None
        return value

    def choice(self, name: str, choices: Collection[str], *, required: bool = False) -> str | None:
        """Read a string field that must be one of `choices`."""
        value = self.string(name, required=required)
        if value is not None and value not in choices:
            self.add(name, f"must be one of: {', '.join(choices)}")
            return None
        return value

    def boolean(self, name: str, *, default: bool) -> bool:
        """Read a boolean field."""
        value = self._get(name, required=False)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.add(name, "must be a boolean")
            return default
        return value

    def mapping(self, name: str, *, required: bool = False) -> dict[str, Any] | None:
        """Read a JSON object field."""
        value = self._get(name, required=required)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.add(name, "must be an object")
            return None
        return value

    def child(self, name: str, *, required: bool = False) -> Fields | None:
        """Return a reader for the nested object `name`, sharing this reader's errors."""
        value = self.mapping(name, required=required)
        if value is None:
            return None
        return Fields(value, f"{self._prefix}{name}.", self.errors)

    def items(self, name: str) -> list[Fields]:
        """Return a reader per element of the optional list of objects `name`."""
        value = self._get(name, required=False)
        if value is None:
            return []
        if not isinstance(value, list):
            self.add(name, "must be a list")
            return []
        readers = []
        for index, element in enumerate(value):
            if isinstance(element, dict):
                readers.append(Fields(element, f"{self._prefix}{name}.{index}.", self.errors))
            else:
                self.add(f"{name}.{index}", "must be an object")
        return readers

    def strings(self, name: str) -> list[str] | None:
        """Read an optional list of strings."""
        value = self._get(name, required=False)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(name, "must be a list of strings")
            return None
        return value

    def timestamp(self, name: str) -> datetime | None:
        """Read an ISO 8601 timestamp that names its offset; returned in UTC."""
        value = self._get(name, required=False)
        if value is None:
            return None
        if not isinstance(value, str):
            self.add(name, "must be an ISO 8601 timestamp string")
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.add(name, "must be an ISO 8601 timestamp")
            return None
        if parsed.tzinfo is None:
            self.add(name, "must include a UTC offset")
            return None
        return parsed.astimezone(UTC)

    def idempotency_key(self) -> str | None:
        """Read the optional `idempotency_key` (1 to 64 characters)."""
        return self.string("idempotency_key", min_length=1, max_length=MAX_KEY_LENGTH)

    def check(self) -> None:
        """Raise the 422 `ApiError` if any field was flagged."""
        if self.errors:
            raise invalid(self.errors)
