"""The store of the local API's records and the state machines that move them.

Every transition marks the records it changed; `commit()` hands them to the storage in one
step, so a storage that keeps a file has saved an operation before the API answers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aioprefactor.testing._errors import ApiError, invalid, invalid_action, not_found
from aioprefactor.testing._records import (
    FINISH_STATUSES,
    INSTANCE_TERMINAL,
    AgentVersion,
    Deployment,
    Instance,
    SchemaVersion,
    Span,
    new_id,
    utcnow,
)
from aioprefactor.testing._storage import (
    MemoryStorage,
    Records,
    ReplyScope,
    Storage,
    StorageError,
    StoredReply,
)

if TYPE_CHECKING:
    from datetime import datetime


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

    def __init__(self, storage: Storage | None = None) -> None:
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        self.instances: dict[str, Instance] = {}
        self.spans: dict[str, Span] = {}
        self.agent_versions: dict[tuple[str, str], AgentVersion] = {}
        self.schema_versions: dict[tuple[str, str], SchemaVersion] = {}
        self.deployments: dict[tuple[str, str], Deployment] = {}
        self.replies: dict[ReplyScope, StoredReply] = {}
        self.version = 0  # counts commits: a reader compares it to see whether anything changed
        self._changes = Records()
        self._load()

    def _load(self) -> None:
        saved = self.storage.load()
        self.instances = dict(saved.instances)
        self.spans = dict(saved.spans)
        self.agent_versions = {
            (v.agent_id, v.external_identifier): v for v in saved.agent_versions.values()
        }
        self.schema_versions = {
            (v.agent_id, v.external_identifier): v for v in saved.schema_versions.values()
        }
        self.deployments = {(d.agent_id, d.environment_id): d for d in saved.deployments.values()}
        self.replies = dict(saved.replies)
        for span in self.spans.values():
            span.instance.span_ids.append(span.id)
            span.instance.span_statuses[span.status] += 1
        self._changes = Records()

    def commit(self) -> None:
        """Save what changed since the last commit, in one step.

        Raises:
            StorageError: The storage could not save it; the store is back at what was saved
                last, so the operation may be retried.
        """
        changes, self._changes = self._changes, Records()
        if not changes:
            return
        self.version += 1
        try:
            self.storage.save(changes)
        except StorageError:
            self._load()
            raise

    def clear(self) -> None:
        """Forget every record, in memory and in the storage."""
        self.storage.clear()
        self._load()
        self.version += 1

    def remember(self, scope: ReplyScope, reply: StoredReply) -> None:
        """Keep the answer given to an idempotency key, to replay it."""
        self.replies[scope] = reply
        self._changes.replies[scope] = reply

    def _changed(self, *records: Instance | Span) -> None:
        for record in records:
            if isinstance(record, Instance):
                self._changes.instances[record.id] = record
            else:
                self._changes.spans[record.id] = record

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
            deployment = Deployment(
                id=new_id(),
                agent_id=reg.agent_id,
                environment_id=reg.environment_id,
                current_version_id=version.id,
            )
            self.deployments[reg.agent_id, reg.environment_id] = deployment
        elif reg.update_current_version:
            deployment.current_version_id = version.id
        self._changes.deployments[deployment.id] = deployment
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
        self._changed(instance)
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
            self._changes.agent_versions[self.agent_versions[key].id] = self.agent_versions[key]
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
            self._changes.schema_versions[self.schema_versions[key].id] = self.schema_versions[key]
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
        self._changed(instance)
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
        self._changed(instance)
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
        self._changed(instance)
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
        self._changed(instance)
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
        self._changed(span, instance)
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
        self._changed(span, span.instance)
        return span
