"""What each delivery operation sends, built from its record as it is when first sent.

A body is built once per operation and kept: every retry sends the same bytes under the
same idempotency key, even if the record changed meanwhile (the answer then tells the
engine what is left to send).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Final

import msgspec

from aioprefactor._runs.records import RunRecord, SpanRecord
from aioprefactor._wire.codec import INSTANCE_DECODER, SPAN_DECODER, encode
from aioprefactor._wire.models import (
    FinishRequest,
    SpanCreateDetails,
    SpanCreateRequest,
    SpanFinishRequest,
    StartRequest,
)
from aioprefactor._wire.transport import path_segment

if TYPE_CHECKING:
    from aioprefactor._runs.records import Record

_INSTANCE: Final = "/api/v1/agent_instance/"
_SPANS: Final = "/api/v1/agent_spans"


class Kind(enum.Enum):
    """A delivery operation, with the suffix of its idempotency key."""

    REGISTER = "r"
    START = "s"
    FINISH_RUN = "f"
    CREATE = "c"
    FINISH_SPAN = "e"
    POLL = "p"
    CHECK = "k"


NAMES: Final = {
    Kind.REGISTER: "agent_instances.register",
    Kind.START: "agent_instances.start",
    Kind.FINISH_RUN: "agent_instances.finish",
    Kind.POLL: "agent_instances.get",
    Kind.CHECK: "agent_instances.get",
    Kind.CREATE: "agent_spans.create",
    Kind.FINISH_SPAN: "agent_spans.finish",
}
BULK_TYPES: Final = {
    Kind.REGISTER: "agent_instances/register",
    Kind.CREATE: "agent_spans/create",
}


class Op:
    """One operation owed to the API, with its retry bookkeeping."""

    __slots__ = ("attempts", "body", "deadline", "details", "flying", "item", "kind", "record")

    def __init__(self, kind: Kind, record: Record, deadline: float) -> None:
        self.kind = kind
        self.record = record
        self.deadline = deadline
        self.attempts = 0
        self.body: bytes | None = None
        self.item: dict[str, Any] | None = None
        # A create's details, fixed when first built: a retry (in bulk or alone) carries
        # the same span under the same key.
        self.details: SpanCreateDetails | None = None
        # Whether a request carrying it is out, and nothing has settled or requeued it.
        self.flying = False

    def __repr__(self) -> str:
        return f"<Op {NAMES[self.kind]} {self.record.id or self.record.key}>"

    @property
    def key(self) -> str:
        """The operation's idempotency key, the same on every retry."""
        return self.record.op_key(self.kind.value)

    @property
    def run(self) -> RunRecord:
        """The run the operation belongs to."""
        record = self.record
        return record.run if isinstance(record, SpanRecord) else record  # type: ignore[return-value]


def _create_details(op: Op) -> SpanCreateDetails:
    if op.details is None:
        op.details = _build_create_details(op)
    return op.details


def _build_create_details(op: Op) -> SpanCreateDetails:
    span = op.record
    assert isinstance(span, SpanRecord)
    run_id = span.run.id
    assert run_id is not None
    end = span.end
    return SpanCreateDetails(
        agent_instance_id=run_id,
        schema_name=span.schema_name,
        # Ended before it was sent: one create carries the whole span.
        status="active" if end is None else end.status,
        payload=span.payload,
        result_payload=None if end is None else end.result,
        parent_span_id=None if span.parent is None else span.parent.id,
        started_at=span.started_at,
        finished_at=None if end is None else end.at,
        idempotency_key=op.key,
    )


def request(op: Op) -> tuple[str, str, bytes | None, msgspec.json.Decoder[Any]]:
    """The method, path, body and decoder of ``op`` sent on its own."""
    kind, record = op.kind, op.record
    if kind is Kind.CREATE:
        if op.body is None:
            op.body = encode(SpanCreateRequest(details=_create_details(op)))
        return "POST", _SPANS, op.body, SPAN_DECODER
    assert record.id is not None or kind is Kind.REGISTER
    if kind is Kind.FINISH_SPAN:
        path = f"{_SPANS}/{path_segment(record.id, 'agent_span_id')}/finish"
        if op.body is None:
            end = record.end
            assert end is not None
            op.body = encode(
                SpanFinishRequest(
                    status=end.status,
                    result_payload=end.result,
                    timestamp=end.at,
                    idempotency_key=op.key,
                )
            )
        return "POST", path, op.body, SPAN_DECODER
    assert isinstance(record, RunRecord)
    if kind is Kind.REGISTER:
        if op.body is None:
            op.body = encode(msgspec.structs.replace(record.registration, idempotency_key=op.key))
        return "POST", _INSTANCE + "register", op.body, INSTANCE_DECODER
    base = _INSTANCE + path_segment(record.id, "agent_instance_id")
    if kind is Kind.POLL or kind is Kind.CHECK:
        return "GET", base, None, INSTANCE_DECODER
    if op.body is None:
        if kind is Kind.START:
            op.body = encode(StartRequest(timestamp=record.started_at, idempotency_key=op.key))
        else:
            end = record.end
            assert end is not None
            op.body = encode(
                FinishRequest(status=end.status, timestamp=end.at, idempotency_key=op.key)
            )
    return "POST", base + ("/start" if kind is Kind.START else "/finish"), op.body, INSTANCE_DECODER


def bulk_item(op: Op) -> dict[str, Any]:
    """``op`` as one item of a bulk request (registers and creates only)."""
    if op.item is None:
        if op.kind is Kind.CREATE:
            params = msgspec.to_builtins(_create_details(op))
        else:
            record = op.record
            assert isinstance(record, RunRecord)
            params = msgspec.to_builtins(record.registration)
        params.pop("idempotency_key", None)
        op.item = {"_type": BULK_TYPES[op.kind], "idempotency_key": op.key, **params}
    return op.item
