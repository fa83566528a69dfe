"""One typed method per API call: check the arguments, encode once, send, decode."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, get_args

import msgspec

from aioprefactor._wire import checks as _checks
from aioprefactor._wire.codec import (
    BULK_DECODER,
    INSTANCE_DECODER,
    PING_DECODER,
    SPAN_DECODER,
    encode,
)
from aioprefactor._wire.models import (
    AgentInstance,
    AgentSchemaVersion,
    AgentSpan,
    AgentVersion,
    BulkItem,
    BulkItemType,
    BulkResponse,
    ControlSignal,
    FinishRequest,
    FinishStatus,
    InstancePurpose,
    RecordQualityRequest,
    RegisterRequest,
    SpanCreateDetails,
    SpanCreateRequest,
    SpanCreateStatus,
    SpanFinishRequest,
    StartRequest,
)
from aioprefactor._wire.payloads import json_object, to_struct
from aioprefactor._wire.transport import path_segment

if TYPE_CHECKING:
    from datetime import datetime

    from aioprefactor._wire.transport import Transport

FINISH_STATUSES: Final = frozenset(get_args(FinishStatus))
SPAN_CREATE_STATUSES: Final = frozenset(get_args(SpanCreateStatus))
PURPOSES: Final = frozenset(get_args(InstancePurpose))
BULK_TYPES: Final = frozenset(get_args(BulkItemType))
BULK_KEY_MIN: Final = 8

_INSTANCE: Final = "/api/v1/agent_instance/"
_SPANS: Final = "/api/v1/agent_spans"


class AgentInstanceClient:
    """The agent instance calls: register, start, finish, get, record_quality.

    Reached as ``client.agent_instances``; never built directly.
    """

    __slots__ = ("_persistent", "_transport")

    def __init__(self, transport: Callable[[], Transport], *, persistent: bool = False) -> None:
        self._transport = transport
        self._persistent = persistent

    async def register(
        self,
        agent_id: str | None,
        agent_version: AgentVersion | Mapping[str, Any],
        agent_schema_version: AgentSchemaVersion | Mapping[str, Any],
        id: str | None = None,  # noqa: A002 - the API's own name for it
        idempotency_key: str | None = None,
        update_current_version: bool = True,
        *,
        environment_id: str | None = None,
        purpose: InstancePurpose | None = None,
        external_identifier: str | None = None,
    ) -> AgentInstance:
        """Register a new agent instance; it starts ``pending``.

        Args:
            agent_id: The agent; ``None`` with a deployment-scoped token.
            agent_version: The version running, a dict or :class:`AgentVersion`.
            agent_schema_version: The span types it declares, a dict or
                :class:`AgentSchemaVersion`.
            id: A client-chosen instance id.
            idempotency_key: At most 64 characters; one is generated when omitted.
            update_current_version: Whether this version becomes the current one.
            environment_id: The environment, with an account-scoped token.
            purpose: ``"live"``, ``"smoke_test"`` or ``"eval"``.
            external_identifier: The instance's id in another system.

        Raises:
            TypeError: An argument of the wrong type.
            ValueError: A bad argument, before anything is sent.
            PrefactorValidationError: The API rejected the registration.
            PrefactorApiError: Any other error answer.
        """
        return await self._send_register(
            RegisterRequest(
                agent_version=to_struct(agent_version, AgentVersion, "agent_version"),
                agent_schema_version=to_struct(
                    agent_schema_version, AgentSchemaVersion, "agent_schema_version"
                ),
                update_current_version=_checks.boolean(
                    update_current_version, "update_current_version"
                ),
                agent_id=_checks.optional_str(agent_id, "agent_id"),
                environment_id=_checks.optional_str(environment_id, "environment_id"),
                id=_checks.optional_str(id, "id"),
                external_identifier=_checks.optional_str(
                    external_identifier, "external_identifier"
                ),
                purpose=None if purpose is None else _checks.choice(purpose, PURPOSES, "purpose"),
                idempotency_key=_checks.key_or_new(idempotency_key),
            )
        )

    async def _send_register(self, request: RegisterRequest) -> AgentInstance:
        """Send a registration already built and checked (what ``register`` builds).

        Runs register through here with a request checked once per ``agent_instance``
        scope, not once per run.
        """
        envelope = await self._transport().call(
            "POST",
            _INSTANCE + "register",
            encode(request),
            INSTANCE_DECODER,
            "agent_instances.register",
            persistent=self._persistent,
        )
        return envelope.details

    async def start(
        self,
        agent_instance_id: str,
        timestamp: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> AgentInstance:
        """Mark a ``pending`` instance ``active``.

        Raises:
            ValueError: An empty id, a naive timestamp or a bad key.
            PrefactorNotFoundError: No such instance.
            PrefactorConflictError: The instance is not ``pending``.
        """
        path = _INSTANCE + path_segment(agent_instance_id, "agent_instance_id") + "/start"
        body = encode(
            StartRequest(
                timestamp=_checks.timestamp(timestamp),
                idempotency_key=_checks.key_or_new(idempotency_key),
            )
        )
        envelope = await self._transport().call(
            "POST",
            path,
            body,
            INSTANCE_DECODER,
            "agent_instances.start",
            persistent=self._persistent,
        )
        return envelope.details

    async def finish(
        self,
        agent_instance_id: str,
        status: FinishStatus | None = None,
        timestamp: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> AgentInstance:
        """Finish a ``pending`` or ``active`` instance.

        Args:
            agent_instance_id: The instance.
            status: ``"complete"``, ``"failed"`` or ``"cancelled"``; the API's
                default (``complete``) when omitted.
            timestamp: When it finished; now when omitted.
            idempotency_key: At most 64 characters; one is generated when omitted.

        Raises:
            ValueError: A status outside the three, an empty id, a bad key.
            PrefactorNotFoundError: No such instance.
            PrefactorConflictError: The instance already finished.
        """
        path = _INSTANCE + path_segment(agent_instance_id, "agent_instance_id") + "/finish"
        body = encode(
            FinishRequest(
                status=None
                if status is None
                else _checks.choice(status, FINISH_STATUSES, "status"),
                timestamp=_checks.timestamp(timestamp),
                idempotency_key=_checks.key_or_new(idempotency_key),
            )
        )
        envelope = await self._transport().call(
            "POST",
            path,
            body,
            INSTANCE_DECODER,
            "agent_instances.finish",
            persistent=self._persistent,
        )
        return envelope.details

    async def get(self, agent_instance_id: str) -> AgentInstance:
        """Fetch an instance.

        Raises:
            ValueError: An empty id.
            PrefactorNotFoundError: No such instance.
        """
        path = _INSTANCE + path_segment(agent_instance_id, "agent_instance_id")
        envelope = await self._transport().call(
            "GET", path, None, INSTANCE_DECODER, "agent_instances.get", persistent=self._persistent
        )
        return envelope.details

    async def record_quality(
        self,
        agent_instance_id: str,
        name: str,
        payload: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> AgentInstance:
        """Record (or, with ``payload=None``, clear) a named quality payload.

        Raises:
            TypeError: A payload that is not a JSON object.
            ValueError: An empty id or name, a bad key.
            PrefactorNotFoundError: No such instance.
        """
        path = _INSTANCE + path_segment(agent_instance_id, "agent_instance_id") + "/record_quality"
        body = encode(
            RecordQualityRequest(
                name=_checks.required_str(name, "name"),
                payload=None if payload is None else json_object(payload, "payload"),
                idempotency_key=_checks.key_or_new(idempotency_key),
            )
        )
        envelope = await self._transport().call(
            "POST",
            path,
            body,
            INSTANCE_DECODER,
            "agent_instances.record_quality",
            persistent=self._persistent,
        )
        return envelope.details


def _with_control(span: AgentSpan, control: ControlSignal | None) -> AgentSpan:
    if control is None:
        return span
    return msgspec.structs.replace(span, control=control)


class AgentSpanClient:
    """The agent span calls: create and finish.

    Reached as ``client.agent_spans``; never built directly. A span returned here carries
    the server's control signal in ``control`` when the response had one.
    """

    __slots__ = ("_persistent", "_transport")

    def __init__(self, transport: Callable[[], Transport], *, persistent: bool = False) -> None:
        self._transport = transport
        self._persistent = persistent

    async def create(
        self,
        agent_instance_id: str,
        schema_name: str,
        status: SpanCreateStatus = "active",
        payload: Mapping[str, Any] | None = None,
        result_payload: Mapping[str, Any] | None = None,
        id: str | None = None,  # noqa: A002 - the API's own name for it
        parent_span_id: str | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> AgentSpan:
        """Create a span in an instance (``active`` unless told otherwise).

        Raises:
            TypeError: A payload that is not a JSON object, an argument of the wrong type.
            ValueError: A bad status, an empty id, a bad key, NaN in a payload.
            PrefactorNotFoundError: No such instance.
            PrefactorValidationError: The API rejected the span.
        """
        body = encode(
            SpanCreateRequest(
                details=SpanCreateDetails(
                    agent_instance_id=_checks.required_str(agent_instance_id, "agent_instance_id"),
                    schema_name=_checks.required_str(schema_name, "schema_name"),
                    status=_checks.choice(status, SPAN_CREATE_STATUSES, "status"),
                    payload={} if payload is None else json_object(payload, "payload"),
                    result_payload=None
                    if result_payload is None
                    else json_object(result_payload, "result_payload"),
                    id=_checks.optional_str(id, "id"),
                    parent_span_id=_checks.optional_str(parent_span_id, "parent_span_id"),
                    started_at=_checks.timestamp(started_at, "started_at"),
                    finished_at=_checks.timestamp(finished_at, "finished_at"),
                    idempotency_key=_checks.key_or_new(idempotency_key),
                )
            )
        )
        envelope = await self._transport().call(
            "POST", _SPANS, body, SPAN_DECODER, "agent_spans.create", persistent=self._persistent
        )
        return _with_control(envelope.details, envelope.control)

    async def finish(
        self,
        agent_span_id: str,
        status: FinishStatus | None = None,
        result_payload: Mapping[str, Any] | None = None,
        timestamp: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> AgentSpan:
        """Finish an ``active`` span (a ``pending`` one may only be cancelled).

        Raises:
            TypeError: A result that is not a JSON object.
            ValueError: A bad status, an empty id, a bad key.
            PrefactorNotFoundError: No such span.
            PrefactorConflictError: The span already finished.
        """
        path = _SPANS + "/" + path_segment(agent_span_id, "agent_span_id") + "/finish"
        body = encode(
            SpanFinishRequest(
                status=None
                if status is None
                else _checks.choice(status, FINISH_STATUSES, "status"),
                result_payload=None
                if result_payload is None
                else json_object(result_payload, "result_payload"),
                timestamp=_checks.timestamp(timestamp),
                idempotency_key=_checks.key_or_new(idempotency_key),
            )
        )
        envelope = await self._transport().call(
            "POST", path, body, SPAN_DECODER, "agent_spans.finish", persistent=self._persistent
        )
        return _with_control(envelope.details, envelope.control)


def _bulk_item(item: BulkItem | Mapping[str, Any], index: int) -> dict[str, Any]:
    where = f"items[{index}]"
    if isinstance(item, BulkItem):
        kind, key, params = item.type, item.idempotency_key, dict(item.params)
    elif isinstance(item, Mapping):
        params = dict(item)
        kind = params.pop("_type", None)
        key = params.pop("idempotency_key", None)
    else:
        raise TypeError(f"{where} must be a BulkItem or a dict, not {type(item).__name__}")
    _checks.choice(kind, BULK_TYPES, f"{where}._type")
    if not isinstance(key, str):
        raise TypeError(f"{where}.idempotency_key is required and must be a str")
    if not BULK_KEY_MIN <= len(key) <= _checks.MAX_KEY_LENGTH:
        raise ValueError(
            f"{where}.idempotency_key must be {BULK_KEY_MIN} to {_checks.MAX_KEY_LENGTH} "
            f"characters, got {len(key)}"
        )
    for reserved in ("_type", "idempotency_key"):
        if reserved in params:
            raise ValueError(f"{where}.params must not hold {reserved!r}")
    json_object(params, f"{where}.params")
    return {"_type": kind, "idempotency_key": key, **params}


class BulkClient:
    """Several actions in one request. Reached as ``client.bulk``."""

    __slots__ = ("_persistent", "_transport")

    def __init__(self, transport: Callable[[], Transport], *, persistent: bool = False) -> None:
        self._transport = transport
        self._persistent = persistent

    async def execute(self, items: Sequence[BulkItem | Mapping[str, Any]]) -> BulkResponse:
        """Run the items in order; the API stops at the first that fails.

        Each item is a :class:`BulkItem` or a dict with ``_type``, ``idempotency_key``
        and the action's parameters.

        Raises:
            TypeError: An item of the wrong type.
            ValueError: No items, a bad type, a key not 8 to 64 characters, a repeated key.
            PrefactorValidationError: The API rejected the request.
        """
        if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
            raise TypeError("items must be a sequence of BulkItem or dict")
        if not items:
            raise ValueError("items must hold at least one item")
        wire = [_bulk_item(item, index) for index, item in enumerate(items)]
        keys = [item["idempotency_key"] for item in wire]
        if len(set(keys)) != len(keys):
            repeated = sorted({key for key in keys if keys.count(key) > 1})
            raise ValueError(f"idempotency keys must be unique; repeated: {repeated}")
        envelope = await self._transport().call(
            "POST",
            "/api/v1/bulk",
            encode({"items": wire}),
            BULK_DECODER,
            "bulk.execute",
            persistent=self._persistent,
        )
        return BulkResponse(status=envelope.status, outputs=envelope.outputs)


async def ping(transport: Transport) -> dict[str, Any]:
    """Check the API is reachable and the token valid; returns the API's answer.

    Raises:
        PrefactorResponseContractError: The answer is not a success envelope.
    """
    answer = await transport.call("GET", "/api/v1/ping", None, PING_DECODER, "ping")
    result: dict[str, Any] = msgspec.to_builtins(answer)
    return result
