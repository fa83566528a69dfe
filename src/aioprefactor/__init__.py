"""aioprefactor: an asyncio client for the Prefactor agent-observability API.

Record every run of an agent truthfully, exactly once, without slowing it down.
"""

from __future__ import annotations

from aioprefactor._client import Client, ClientState
from aioprefactor._errors import (
    PrefactorApiError,
    PrefactorAuthError,
    PrefactorConflictError,
    PrefactorError,
    PrefactorNotFoundError,
    PrefactorRateLimitError,
    PrefactorResponseContractError,
    PrefactorRetryExhaustedError,
    PrefactorServerError,
    PrefactorTimeoutError,
    PrefactorTransportError,
    PrefactorValidationError,
)
from aioprefactor._models import (
    AgentInstance,
    AgentSchemaVersion,
    AgentSpan,
    AgentStatus,
    AgentVersion,
    BulkItem,
    BulkOutput,
    BulkResponse,
    ControlSignal,
    FinishStatus,
    InstancePurpose,
    RuntimeEnvironment,
    SpanCounts,
    SpanTypeSchema,
)
from aioprefactor._version import __version__

__all__ = [
    "AgentInstance",
    "AgentSchemaVersion",
    "AgentSpan",
    "AgentStatus",
    "AgentVersion",
    "BulkItem",
    "BulkOutput",
    "BulkResponse",
    "Client",
    "ClientState",
    "ControlSignal",
    "FinishStatus",
    "InstancePurpose",
    "PrefactorApiError",
    "PrefactorAuthError",
    "PrefactorConflictError",
    "PrefactorError",
    "PrefactorNotFoundError",
    "PrefactorRateLimitError",
    "PrefactorResponseContractError",
    "PrefactorRetryExhaustedError",
    "PrefactorServerError",
    "PrefactorTimeoutError",
    "PrefactorTransportError",
    "PrefactorValidationError",
    "RuntimeEnvironment",
    "SpanCounts",
    "SpanTypeSchema",
    "__version__",
]
