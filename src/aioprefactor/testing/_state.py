"""The in-memory records of the local API and the state machines that move them."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aioprefactor.testing._errors import ApiError, invalid, invalid_action, not_found

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


@dataclass(slots=True)
class Registration:
    """The checked parameters of a register call."""

    agent_id: str
    environment_id: str
    agent_version: dict[str, Any]
    schema_version: dict[str, Any]
    id: str | None
    external_identifier: str | None
    purpose: str
    update_current_version: bool


@dataclass(slots=True)
class NewSpan:
    """The checked parameters of a span create call."""

    agent_instance_id: str
    schema_name: str
    status: str
    payload: dict[str, Any]
    result_payload: dict[str, Any] | None
    id: str | None
    parent_span_id: str | None
    started_at: datetime | None
    finished_at: datetime | None


class Store:
    """Every record the local API holds, and the transitions allowed between states."""

    def __init__(self) -> None:
        self.instances: dict[str, Instance] = {}
        self.spans: dict[str, Span] = {}
        self.agent_versions: dict[tuple[str, str], AgentVersion] = {}
        self.schema_versions: dict[tuple[str, str], SchemaVersion] = {}
        self.deployments: dict[tuple[str, str], Deployment] = {}

    def instance(self, instance_id: str) -> Instance:
        """Return the instance, or raise the 404."""
        try:
            return self.instances[instance_id]
        except KeyError:
            raise not_found("agent instance", instance_id) from None

    def span(self, span_id: str) -> Span:
        """Return the span, or raise the 404."""
        try:
            return self.spans[span_id]
        except KeyError:
            raise not_found("agent span", span_id) from None

    def register(self, reg: Registration) -> Instance:
        """Create a `pending` instance, with its agent version, schema version and deployment."""
        if reg.id is not None and reg.id in self.instances:
            raise ApiError(409, f"agent instance {reg.id!r} already exists", code="conflict")
        if reg.external_identifier is not None and any(
            other.agent_id == reg.agent_id and other.external_identifier == reg.external_identifier
            for other in self.instances.values()
        ):
            raise invalid({"external_identifier": ["has already been taken"]})
        now = utcnow()
        version = self._agent_version(reg.agent_id, reg.agent_version, now)
        schema = self._schema_version(reg.agent_id, reg.schema_version, now)
        deployment = self.deployments.get((reg.agent_id, reg.environment_id))
        if deployment is None:
            deployment = Deployment(id=new_id(), current_version_id=version.id)
            self.deployments[reg.agent_id, reg.environment_id] = deployment
        elif reg.update_current_version:
            deployment.current_version_id = version.id
        instance = Instance(
            id=reg.id if reg.id is not None else new_id(),
            agent_id=reg.agent_id,
            agent_version_id=version.id,
            schema_version=schema,
            environment_id=reg.environment_id,
            agent_deployment_id=deployment.id,
            external_identifier=reg.external_identifier,
            purpose=reg.purpose,
            inserted_at=now,
            updated_at=now,
        )
        self.instances[instance.id] = instance
        return instance

    def _agent_version(self, agent_id: str, doc: dict[str, Any], now: datetime) -> AgentVersion:
        key = (agent_id, doc["external_identifier"])
        if key not in self.agent_versions:
            self.agent_versions[key] = AgentVersion(
                id=new_id(),
                agent_id=agent_id,
                external_identifier=doc["external_identifier"],
                name=doc["name"],
                description=doc.get("description"),
                runtime_environment=doc.get("runtime_environment"),
                inserted_at=now,
            )
        return self.agent_versions[key]

    def _schema_version(self, agent_id: str, doc: dict[str, Any], now: datetime) -> SchemaVersion:
        key = (agent_id, doc["external_identifier"])
        if key not in self.schema_versions:
            titles = {
                item["name"]: item["title"]
                for item in doc.get("span_type_schemas") or ()
                if isinstance(item.get("title"), str)
            }
            self.schema_versions[key] = SchemaVersion(
                id=new_id(),
                agent_id=agent_id,
                external_identifier=doc["external_identifier"],
                document=doc,
                span_titles=titles,
                inserted_at=now,
            )
        return self.schema_versions[key]

    def start(self, instance_id: str, at: datetime | None) -> Instance:
        """Move an instance from `pending` to `active`."""
        instance = self.instance(instance_id)
        if instance.status != "pending":
            msg = f"cannot start agent instance {instance_id!r}: it is {instance.status}"
            raise invalid_action(msg)
        now = utcnow()
        instance.status = "active"
        instance.started_at = at or now
        instance.updated_at = now
        return instance

    def finish(self, instance_id: str, status: str, at: datetime | None) -> Instance:
        """Move a `pending` or `active` instance to a terminal status."""
        instance = self.instance(instance_id)
        if instance.status in INSTANCE_TERMINAL:
            msg = f"cannot finish agent instance {instance_id!r}: it is already {instance.status}"
            raise invalid_action(msg)
        now = utcnow()
        instance.status = status
        instance.finished_at = at or now
        instance.updated_at = now
        return instance

    def terminate(self, instance_id: str, reason: str) -> Instance:
        """Terminate a live instance from the server's side (`KeyError` if unknown)."""
        instance = self.instances[instance_id]
        if instance.status in INSTANCE_TERMINAL:
            msg = f"agent instance {instance_id!r} is already {instance.status}"
            raise ValueError(msg)
        now = utcnow()
        instance.status = "terminated"
        instance.termination_reason = reason
        instance.finished_at = now
        instance.updated_at = now
        return instance

    def record_quality(
        self, instance_id: str, name: str, payload: dict[str, Any] | None
    ) -> Instance:
        """Set (or, with `None`, remove) one named quality payload of an instance."""
        instance = self.instance(instance_id)
        if payload is None:
            instance.quality_payloads.pop(name, None)
        else:
            instance.quality_payloads[name] = payload
        instance.updated_at = utcnow()
        return instance

    def create_span(self, new: NewSpan, prefix: str) -> Span:
        """Create a span in a live instance; `prefix` locates the fields in error messages."""
        instance = self.instance(new.agent_instance_id)
        if instance.status in FINISH_STATUSES:
            msg = f"cannot add a span to agent instance {instance.id!r}: it is {instance.status}"
            raise invalid_action(msg)
        if new.id is not None and new.id in self.spans:
            raise ApiError(409, f"agent span {new.id!r} already exists", code="conflict")
        if new.parent_span_id is not None:
            parent = self.spans.get(new.parent_span_id)
            if parent is None or parent.instance is not instance:
                message = "does not exist in this agent instance"
                raise invalid({f"{prefix}parent_span_id": [message]})
        now = utcnow()
        started_at = new.started_at or now
        finished_at = new.finished_at
        if new.status in FINISH_STATUSES and finished_at is None:
            finished_at = max(now, started_at)
        if finished_at is not None and finished_at < started_at:
            raise invalid({f"{prefix}finished_at": ["must not be before started_at"]})
        span = Span(
            id=new.id if new.id is not None else new_id(),
            instance=instance,
            parent_span_id=new.parent_span_id,
            schema_name=new.schema_name,
            status=new.status,
            payload=new.payload,
            result_payload=new.result_payload,
            started_at=started_at,
            finished_at=finished_at,
            inserted_at=now,
            updated_at=now,
        )
        self.spans[span.id] = span
        instance.span_ids.append(span.id)
        instance.span_statuses[span.status] += 1
        instance.updated_at = now
        return span

    def finish_span(
        self,
        span_id: str,
        status: str,
        result_payload: dict[str, Any] | None,
        at: datetime | None,
    ) -> Span:
        """Move an `active` span to a terminal status (a `pending` one only to `cancelled`)."""
        span = self.span(span_id)
        if span.status in FINISH_STATUSES:
            raise invalid_action(
                f"cannot finish agent span {span_id!r}: it is already {span.status}"
            )
        if span.status == "pending" and status != "cancelled":
            msg = f"agent span {span_id!r} is pending: it can only be cancelled, not {status}"
            raise invalid_action(msg)
        now = utcnow()
        span.instance.span_statuses[span.status] -= 1
        span.instance.span_statuses[status] += 1
        span.status = status
        if result_payload is not None:
            span.result_payload = result_payload
        span.finished_at = at or now
        span.updated_at = now
        span.instance.updated_at = now
        return span
