"""The records the local API keeps, and how the API renders them as JSON."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ACCOUNT_ID = "local-account"
DEFAULT_AGENT_ID = "local-agent"
DEFAULT_ENVIRONMENT_ID = "local-environment"

FINISH_STATUSES = ("complete", "failed", "cancelled")
INSTANCE_TERMINAL = frozenset({*FINISH_STATUSES, "terminated"})
SPAN_CREATE_STATUSES = ("pending", "active", *FINISH_STATUSES)
PURPOSES = ("live", "smoke_test", "eval")


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def render_time(moment: datetime | None) -> str | None:
    """Render a timestamp as the API does: ISO 8601 in UTC with a `Z`."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_id() -> str:
    """Return a fresh random identifier."""
    return str(uuid.uuid4())


@dataclass(slots=True)
class AgentVersion:
    """One version of an agent, told apart from others by its external identifier."""

    id: str
    agent_id: str
    external_identifier: str
    name: str
    description: str | None
    runtime_environment: dict[str, Any] | None
    inserted_at: datetime

    def to_json(self) -> dict[str, Any]:
        """Render the version as a JSON-like dict."""
        return {
            "type": "agent_version",
            "id": self.id,
            "agent_id": self.agent_id,
            "external_identifier": self.external_identifier,
            "name": self.name,
            "description": self.description,
            "runtime_environment": self.runtime_environment,
            "inserted_at": render_time(self.inserted_at),
        }


@dataclass(slots=True)
class SchemaVersion:
    """One schema version of an agent, kept as sent, keyed by its external identifier."""

    id: str
    agent_id: str
    external_identifier: str
    document: dict[str, Any]
    span_titles: dict[str, str]
    inserted_at: datetime

    def to_json(self) -> dict[str, Any]:
        """Render the schema version as a JSON-like dict (the document's fields included)."""
        return {
            **self.document,
            "type": "agent_schema_version",
            "id": self.id,
            "agent_id": self.agent_id,
            "external_identifier": self.external_identifier,
            "inserted_at": render_time(self.inserted_at),
        }


@dataclass(slots=True)
class Deployment:
    """Where an agent runs: one per (agent, environment), pointing at its current version."""

    id: str
    agent_id: str
    environment_id: str
    current_version_id: str


@dataclass(slots=True)
class Instance:
    """One agent instance (a run)."""

    id: str
    agent_id: str
    agent_version_id: str
    schema_version: SchemaVersion
    environment_id: str
    agent_deployment_id: str
    external_identifier: str | None
    purpose: str
    inserted_at: datetime
    updated_at: datetime
    status: str = "pending"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    termination_reason: str | None = None
    quality_payloads: dict[str, Any] = field(default_factory=dict)
    span_ids: list[str] = field(default_factory=list)
    span_statuses: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        """Render the instance as the API does."""
        counts = self.span_statuses
        finished = sum(counts[status] for status in FINISH_STATUSES)
        return {
            "type": "agent_instance",
            "id": self.id,
            "account_id": ACCOUNT_ID,
            "agent_id": self.agent_id,
            "agent_version_id": self.agent_version_id,
            "environment_id": self.environment_id,
            "agent_deployment_id": self.agent_deployment_id,
            "status": self.status,
            "inserted_at": render_time(self.inserted_at),
            "updated_at": render_time(self.updated_at),
            "started_at": render_time(self.started_at),
            "finished_at": render_time(self.finished_at),
            "termination_reason": self.termination_reason,
            "external_identifier": self.external_identifier,
            "purpose": self.purpose,
            "span_counts": {
                "total": len(self.span_ids),
                "active": counts["active"],
                "complete": counts["complete"],
                "failed": counts["failed"],
                "cancelled": counts["cancelled"],
                "finished": finished,
            },
            "quality_payloads": dict(self.quality_payloads),
        }


@dataclass(slots=True)
class Span:
    """One span of an agent instance."""

    id: str
    instance: Instance
    parent_span_id: str | None
    schema_name: str
    status: str
    payload: dict[str, Any]
    result_payload: dict[str, Any] | None
    started_at: datetime
    finished_at: datetime | None
    inserted_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        """Render the span as the API does."""
        return {
            "type": "agent_span",
            "id": self.id,
            "account_id": ACCOUNT_ID,
            "agent_id": self.instance.agent_id,
            "agent_instance_id": self.instance.id,
            "parent_span_id": self.parent_span_id,
            "schema_name": self.schema_name,
            "schema_title": self.instance.schema_version.span_titles.get(self.schema_name),
            "status": self.status,
            "payload": self.payload,
            "result_payload": self.result_payload,
            "summary": None,
            "started_at": render_time(self.started_at),
            "inserted_at": render_time(self.inserted_at),
            "updated_at": render_time(self.updated_at),
            "finished_at": render_time(self.finished_at),
        }
