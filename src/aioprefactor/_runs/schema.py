"""Defaults for registration: the runtime environment and a content-addressed schema version.

The schema version's external identifier is a hash of the declared span types, so the
same code registers the same schema version on every start, and a change to a span type
registers a new one.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from typing import TYPE_CHECKING, Any, Final

import msgspec

from aioprefactor._version import __version__
from aioprefactor._wire.models import (
    AgentSchemaVersion,
    AgentVersion,
    RuntimeEnvironment,
    SpanTypeSchema,
)
from aioprefactor._wire.payloads import to_struct

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

_REGISTRY: dict[str, SpanTypeSchema] = {}
_GENERATION = [0]  # bumped on every change, so scopes know to rebuild their registration
_canonical = msgspec.json.Encoder(order="deterministic").encode

RUNTIME_ENVIRONMENT: Final = RuntimeEnvironment(
    os=sys.platform,
    runtime=f"{platform.python_implementation().lower()}@{sys.version_info[0]}.{sys.version_info[1]}",
    prefactor_sdk=(f"aioprefactor@{__version__}",),
)


def declare_span_type(
    name: str,
    params_schema: Mapping[str, Any] | None = None,
    *,
    result_schema: Mapping[str, Any] | None = None,
    title: str | None = None,
    description: str | None = None,
    template: str | None = None,
) -> SpanTypeSchema:
    """Declare a span type for the schema version that runs register by default.

    Declaring the same name again replaces the earlier declaration.

    Args:
        name: The span's schema name, e.g. ``"agent:llm"``.
        params_schema: JSON schema of the span's payload (any object when omitted).
        result_schema: JSON schema of its result payload.
        title: A human title.
        description: What the span records.
        template: A display template.

    Returns:
        The declared span type.
    """
    span_type = to_struct(
        {
            "name": name,
            "params_schema": dict(params_schema)
            if params_schema is not None
            else {"type": "object"},
            "result_schema": dict(result_schema) if result_schema is not None else None,
            "title": title,
            "description": description,
            "template": template,
        },
        SpanTypeSchema,
        f"span type {name!r}",
    )
    _REGISTRY[span_type.name] = span_type
    _GENERATION[0] += 1
    return span_type


def declared_span_types() -> tuple[SpanTypeSchema, ...]:
    """Return the span types declared so far, sorted by name."""
    return tuple(_REGISTRY[name] for name in sorted(_REGISTRY))


def clear_span_types() -> None:
    """Forget every declared span type (for tests)."""
    _REGISTRY.clear()
    _GENERATION[0] += 1


def span_types_generation() -> int:
    """A number that changes whenever the declared span types change."""
    return _GENERATION[0]


def schema_version_for(
    span_types: Iterable[SpanTypeSchema | Mapping[str, Any]],
) -> AgentSchemaVersion:
    """Build a schema version from span types, named by a hash of its content."""
    types = sorted(
        (to_struct(t, SpanTypeSchema, "span_types[]") for t in span_types), key=lambda t: t.name
    )
    digest = hashlib.sha256(_canonical(types)).hexdigest()[:24]
    return AgentSchemaVersion(
        external_identifier=f"sha256:{digest}", span_type_schemas=tuple(types)
    )


def with_runtime_environment(version: AgentVersion) -> AgentVersion:
    """Fill in the runtime environment when the caller gave none."""
    if version.runtime_environment is not None:
        return version
    return msgspec.structs.replace(version, runtime_environment=RUNTIME_ENVIRONMENT)


# The schema version built from the declared span types, for the generation it was built
# at: every run entered meanwhile shares it.
_DECLARED: list[tuple[int, AgentSchemaVersion]] = []
# Equal versions are one object: scopes made per run do not each keep their own copy.
_VERSIONS: dict[AgentVersion, AgentVersion] = {}
_MAX_VERSIONS: Final = 256


def declared_schema_version() -> AgentSchemaVersion:
    """The schema version of the span types declared now (built once per change)."""
    generation = _GENERATION[0]
    if _DECLARED and _DECLARED[0][0] == generation:
        return _DECLARED[0][1]
    built = schema_version_for(declared_span_types())
    _DECLARED[:] = [(generation, built)]
    return built


def shared_version(version: AgentVersion) -> AgentVersion:
    """The one object standing for versions equal to ``version``, runtime filled in."""
    filled = with_runtime_environment(version)
    shared = _VERSIONS.get(filled)
    if shared is None:
        if len(_VERSIONS) >= _MAX_VERSIONS:
            _VERSIONS.clear()
        shared = _VERSIONS[filled] = filled
    return shared
