"""A msgspec mirror of the API's instance response, for the floor (and for our decode figure
until ``aioprefactor._wire.codec`` exists): what a hand-written msgspec client would decode into.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

Status = Literal["pending", "active", "complete", "failed", "cancelled", "terminated"]


class SpanCounts(msgspec.Struct, frozen=True, kw_only=True):
    total: int = 0
    active: int = 0
    complete: int = 0
    failed: int = 0
    cancelled: int = 0
    finished: int = 0


class AgentInstance(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    account_id: str
    agent_id: str
    agent_version_id: str
    environment_id: str
    agent_deployment_id: str
    status: Status
    inserted_at: datetime
    updated_at: datetime
    type: Literal["agent_instance"] = "agent_instance"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    termination_reason: str | None = None
    external_identifier: str | None = None
    span_counts: SpanCounts | None = None
    purpose: Literal["live", "smoke_test", "eval"] | None = None
    quality_payloads: dict[str, dict[str, Any]] | None = None
    quality_summaries: dict[str, str] | None = None


class InstanceEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal["success"]
    details: AgentInstance


decode_instance_envelope = msgspec.json.Decoder(InstanceEnvelope).decode
