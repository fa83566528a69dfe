"""Wire models: one msgspec Struct per request and response of the API.

Responses decode straight from bytes into these types; unknown fields are ignored so
that a newer server does not break an older client. Requests omit fields left at their
default, so ``None`` never reaches the wire.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

import msgspec

AgentStatus = Literal["pending", "active", "complete", "failed", "cancelled", "terminated"]
"""Every status an instance or span can have."""
FinishStatus = Literal["complete", "failed", "cancelled"]
"""The statuses a client may finish an instance or span with."""
SpanCreateStatus = Literal["pending", "active", "complete", "failed", "cancelled"]
"""The statuses a span may be created with."""
InstancePurpose = Literal["live", "smoke_test", "eval"]
"""Why an instance ran."""
BulkItemType = Literal[
    "agent_instances/register",
    "agent_instances/start",
    "agent_instances/finish",
    "agent_spans/create",
    "agent_spans/finish",
]
"""The actions the bulk endpoint runs."""

JsonObject = dict[str, Any]

T = TypeVar("T")


class _Model(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Base of every model: immutable, keyword-only, defaults left off the wire.

    ``gc=False``: a model never takes part in a reference cycle, so the garbage collector
    need not track it; decoding and building one is cheaper for it.
    """


# msgspec applies ``kw_only`` only to the fields a class defines itself, so every model
# repeats it; otherwise their fields would be positional after all.


# --- parts of a registration -------------------------------------------------------------


class RuntimeEnvironment(_Model, frozen=True, kw_only=True):
    """Where an agent version runs: OS, language runtime, SDK packages."""

    os: str | None = None
    runtime: str | None = None
    prefactor_sdk: tuple[str, ...] | None = None
    agent_sdk: tuple[str, ...] | None = None


class AgentVersion(_Model, frozen=True, kw_only=True):
    """The version of the agent an instance runs."""

    name: str
    external_identifier: str
    description: str | None = None
    runtime_environment: RuntimeEnvironment | None = None


class SpanTypeSchema(_Model, frozen=True, kw_only=True):
    """One span type an agent declares: its name and JSON schemas."""

    name: str
    params_schema: JsonObject
    result_schema: JsonObject | None = None
    title: str | None = None
    description: str | None = None
    template: str | None = None


class AgentSchemaVersion(_Model, frozen=True, kw_only=True):
    """The set of span types an agent version declares."""

    external_identifier: str
    span_type_schemas: tuple[SpanTypeSchema, ...] | None = None
    span_schemas: dict[str, JsonObject] | None = None
    span_result_schemas: dict[str, JsonObject] | None = None


# --- request bodies ------------------------------------------------------------------------


class RegisterRequest(_Model, frozen=True, kw_only=True):
    """Body of ``POST /api/v1/agent_instance/register``."""

    agent_version: AgentVersion
    agent_schema_version: AgentSchemaVersion
    # No default: it is always sent, so the server never has to guess.
    update_current_version: bool
    agent_id: str | None = None
    environment_id: str | None = None
    id: str | None = None
    external_identifier: str | None = None
    purpose: InstancePurpose | None = None
    idempotency_key: str | None = None


class StartRequest(_Model, frozen=True, kw_only=True):
    """Body of ``POST /api/v1/agent_instance/{id}/start``."""

    timestamp: datetime | None = None
    idempotency_key: str | None = None


class FinishRequest(_Model, frozen=True, kw_only=True):
    """Body of ``POST /api/v1/agent_instance/{id}/finish``."""

    status: FinishStatus | None = None
    timestamp: datetime | None = None
    idempotency_key: str | None = None


class RecordQualityRequest(_Model, frozen=True, kw_only=True):
    """Body of ``POST /api/v1/agent_instance/{id}/record_quality``."""

    name: str
    # No default: an explicit null clears the payload recorded under ``name``.
    payload: JsonObject | None
    idempotency_key: str | None = None


class SpanCreateDetails(_Model, frozen=True, kw_only=True):
    """The ``details`` of ``POST /api/v1/agent_spans``."""

    agent_instance_id: str
    schema_name: str
    status: SpanCreateStatus
    payload: JsonObject
    result_payload: JsonObject | None = None
    id: str | None = None
    parent_span_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    idempotency_key: str | None = None


class SpanCreateRequest(_Model, frozen=True, kw_only=True):
    """Body of ``POST /api/v1/agent_spans``."""

    details: SpanCreateDetails


class SpanFinishRequest(_Model, frozen=True, kw_only=True):
    """Body of ``POST /api/v1/agent_spans/{id}/finish``."""

    status: FinishStatus | None = None
    result_payload: JsonObject | None = None
    timestamp: datetime | None = None
    idempotency_key: str | None = None


class BulkItem(_Model, frozen=True, kw_only=True):
    """One action of a bulk request.

    Args:
        type: The action, e.g. ``"agent_spans/create"``.
        idempotency_key: Unique within the request, 8 to 64 characters.
        params: The action's parameters, flattened into the item on the wire.
    """

    type: BulkItemType
    idempotency_key: str
    params: JsonObject = msgspec.field(default_factory=dict)


# --- responses ---------------------------------------------------------------------------


class SpanCounts(_Model, frozen=True, kw_only=True):
    """How many spans of an instance are in each state."""

    total: int = 0
    active: int = 0
    complete: int = 0
    failed: int = 0
    cancelled: int = 0
    finished: int = 0


class ControlSignal(_Model, frozen=True, kw_only=True):
    """A request from the server to the agent, sent beside span responses."""

    terminate: bool = False
    reason: str | None = None


class AgentInstance(_Model, frozen=True, kw_only=True):
    """One run of an agent, as the API records it."""

    id: str
    account_id: str
    agent_id: str
    agent_version_id: str
    environment_id: str
    agent_deployment_id: str
    status: AgentStatus
    inserted_at: datetime
    updated_at: datetime
    type: Literal["agent_instance"] = "agent_instance"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    termination_reason: str | None = None
    external_identifier: str | None = None
    span_counts: SpanCounts | None = None
    purpose: InstancePurpose | None = None
    quality_payloads: dict[str, JsonObject] | None = None
    quality_summaries: dict[str, str] | None = None


class AgentSpan(_Model, frozen=True, kw_only=True):
    """One unit of work inside an instance, as the API records it.

    ``control`` is copied from the response envelope: when it says ``terminate``, the
    server has stopped the instance and asks the agent to stop too.
    """

    id: str
    agent_instance_id: str
    schema_name: str
    status: AgentStatus
    type: Literal["agent_span"] = "agent_span"
    account_id: str | None = None
    agent_id: str | None = None
    parent_span_id: str | None = None
    schema_title: str | None = None
    payload: JsonObject = msgspec.field(default_factory=dict)
    result_payload: JsonObject | None = None
    summary: str | None = None
    started_at: datetime | None = None
    inserted_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    control: ControlSignal | None = None


class Envelope(_Model, Generic[T], frozen=True, kw_only=True):
    """A successful response: ``{"status": "success", "details": ...}``."""

    status: Literal["success"]
    details: T
    control: ControlSignal | None = None


class ErrorBody(_Model, frozen=True, kw_only=True):
    """An error response: ``{"status": "error", "code": ..., "message": ...}``."""

    status: str = "error"
    code: str = "unknown"
    message: str = ""
    errors: JsonObject | None = None


class BulkOutput(_Model, frozen=True, kw_only=True):
    """The result of one bulk item: a success envelope or an error body."""

    status: Literal["success", "error"]
    details: JsonObject | None = None
    code: str | None = None
    message: str | None = None
    errors: JsonObject | None = None
    control: ControlSignal | None = None

    @property
    def ok(self) -> bool:
        """Whether the item succeeded."""
        return self.status == "success"


class BulkResponse(_Model, frozen=True, kw_only=True):
    """The result of a bulk request, keyed by each item's idempotency key.

    Items after the first failing one are not processed and have no output.
    """

    outputs: dict[str, BulkOutput]
    status: str = "success"
