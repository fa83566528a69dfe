"""The mutating operations: request bodies checked, applied to the store, replies remembered.

Every operation is synchronous, so two requests never interleave inside one, and a reply is
remembered under its idempotency key before the next request is looked at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from aioprefactor.testing import _routes as routes
from aioprefactor.testing._errors import ApiError
from aioprefactor.testing._records import (
    DEFAULT_AGENT_ID,
    DEFAULT_ENVIRONMENT_ID,
    FINISH_STATUSES,
    PURPOSES,
    SPAN_CREATE_STATUSES,
    Span,
)
from aioprefactor.testing._state import NewSpan, Registration, Store
from aioprefactor.testing._storage import StorageError
from aioprefactor.testing._validate import Fields

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

MAX_ID_LENGTH = 255


class Reply(NamedTuple):
    """An answer to one operation: the HTTP status and the JSON body."""

    status: int
    body: dict[str, Any]


def success(details: dict[str, Any]) -> dict[str, Any]:
    """Wrap `details` in the success envelope."""
    return {"status": "success", "details": details}


def _span_reply(span: Span) -> dict[str, Any]:
    body = success(span.to_json())
    if span.instance.status == "terminated":
        body["control"] = {"terminate": True, "reason": span.instance.termination_reason}
    return body


def _check_register_schema(schema: Fields) -> None:
    schema.string("external_identifier", required=True)
    for item in schema.items("span_type_schemas"):
        item.string("name", required=True)
        item.mapping("params_schema", required=True)
        item.mapping("result_schema")
        for name in ("title", "description", "template"):
            item.string(name)
    for name in ("span_schemas", "span_result_schemas"):
        schemas = schema.child(name)
        if schemas is not None:
            for span_type in schemas.names():
                schemas.mapping(span_type)


def _register(store: Store, _resource: str, f: Fields) -> dict[str, Any]:
    f.only(
        {
            "agent_id",
            "environment_id",
            "agent_version",
            "agent_schema_version",
            "id",
            "external_identifier",
            "purpose",
            "update_current_version",
            "idempotency_key",
        }
    )
    agent_id = f.string("agent_id", min_length=1, max_length=MAX_ID_LENGTH)
    environment_id = f.string("environment_id", min_length=1, max_length=MAX_ID_LENGTH)
    version = f.child("agent_version", required=True)
    if version is not None:
        version.string("name", required=True)
        version.string("external_identifier", required=True)
        version.string("description")
        runtime = version.child("runtime_environment")
        if runtime is not None:
            runtime.string("os")
            runtime.string("runtime")
            runtime.strings("prefactor_sdk")
            runtime.strings("agent_sdk")
    schema = f.child("agent_schema_version", required=True)
    if schema is not None:
        _check_register_schema(schema)
    registration = Registration(
        agent_id=agent_id or DEFAULT_AGENT_ID,
        environment_id=environment_id or DEFAULT_ENVIRONMENT_ID,
        agent_version=f.mapping("agent_version") or {},
        schema_version=f.mapping("agent_schema_version") or {},
        id=f.string("id", min_length=1, max_length=MAX_ID_LENGTH),
        external_identifier=f.string("external_identifier", max_length=MAX_ID_LENGTH),
        purpose=f.choice("purpose", PURPOSES) or "live",
        update_current_version=f.boolean("update_current_version", default=True),
    )
    f.check()
    return success(store.register(registration).to_json())


def _start(store: Store, instance_id: str, f: Fields) -> dict[str, Any]:
    f.only({"timestamp", "idempotency_key"})
    at = f.timestamp("timestamp")
    f.check()
    return success(store.start(instance_id, at).to_json())


def _finish(store: Store, instance_id: str, f: Fields) -> dict[str, Any]:
    f.only({"status", "timestamp", "idempotency_key"})
    status = f.choice("status", FINISH_STATUSES) or "complete"
    at = f.timestamp("timestamp")
    f.check()
    return success(store.finish(instance_id, status, at).to_json())


def _record_quality(store: Store, instance_id: str, f: Fields) -> dict[str, Any]:
    f.only({"name", "payload", "idempotency_key"})
    name = f.string("name", required=True)
    payload = f.mapping("payload")
    f.check()
    assert name is not None
    return success(store.record_quality(instance_id, name, payload).to_json())


def _create_span(store: Store, _resource: str, f: Fields) -> dict[str, Any]:
    f.only(
        {
            "agent_instance_id",
            "schema_name",
            "status",
            "payload",
            "result_payload",
            "id",
            "parent_span_id",
            "started_at",
            "finished_at",
            "idempotency_key",
        }
    )
    instance_id = f.string("agent_instance_id", required=True)
    schema_name = f.string("schema_name", required=True)
    status = f.choice("status", SPAN_CREATE_STATUSES, required=True)
    new = NewSpan(
        agent_instance_id=instance_id or "",
        schema_name=schema_name or "",
        status=status or "",
        payload=f.mapping("payload") or {},
        result_payload=f.mapping("result_payload"),
        id=f.string("id", min_length=1, max_length=MAX_ID_LENGTH),
        parent_span_id=f.string("parent_span_id", min_length=1),
        started_at=f.timestamp("started_at"),
        finished_at=f.timestamp("finished_at"),
    )
    if new.finished_at is not None and status is not None and status not in FINISH_STATUSES:
        f.add("finished_at", "must be null unless the status is complete, failed or cancelled")
    f.check()
    return _span_reply(store.create_span(new, f.prefix))


def _finish_span(store: Store, span_id: str, f: Fields) -> dict[str, Any]:
    f.only({"status", "result_payload", "timestamp", "idempotency_key"})
    status = f.choice("status", FINISH_STATUSES) or "complete"
    result_payload = f.mapping("result_payload")
    at = f.timestamp("timestamp")
    f.check()
    return _span_reply(store.finish_span(span_id, status, result_payload, at))


OPERATIONS: dict[str, Callable[[Store, str, Fields], dict[str, Any]]] = {
    routes.REGISTER: _register,
    routes.START: _start,
    routes.FINISH: _finish,
    routes.RECORD_QUALITY: _record_quality,
    routes.SPAN_CREATE: _create_span,
    routes.SPAN_FINISH: _finish_span,
}


class Operations:
    """Runs mutating operations against a store, replaying answers by idempotency key.

    A key is scoped to the route and the resource in its path (the same scope as the API's
    method and path), so a bulk item and a direct request with the same key share one answer.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def run(
        self, route: str, resource_id: str, body: Mapping[str, Any], prefix: str = ""
    ) -> tuple[Reply, bool]:
        """Apply one operation; return its reply and whether that reply is a replay."""
        fields = Fields(body, prefix)
        key = fields.idempotency_key()
        if fields.errors:
            error = ApiError(422, "the request body is invalid", errors=fields.errors)
            return Reply(error.status, error.body), False
        scope = (route, resource_id, key or "")
        if key is not None and scope in self.store.replies:
            return Reply(*self.store.replies[scope]), True
        try:
            reply = Reply(200, OPERATIONS[route](self.store, resource_id, fields))
        except ApiError as error:
            reply = Reply(error.status, error.body)
        if key is not None:
            self.store.remember(scope, reply)
        # Saved before the answer leaves: an answered request survives a crash of the server.
        try:
            self.store.commit()
        except StorageError as error:
            failure = ApiError(503, f"the change was not saved: {error}", code="storage_error")
            return Reply(failure.status, failure.body), False
        return reply, False
