"""aioprefactor: an asyncio client for the Prefactor agent-observability API.

Record every run of an agent truthfully, exactly once, without slowing it down.
"""

from aioprefactor._client import Client, ClientState
from aioprefactor._context import current_instance, current_span
from aioprefactor._default import agent_instance, configure
from aioprefactor._lifecycle import InstanceRun, InstanceScope
from aioprefactor._recording import RecordingState
from aioprefactor._schema import declare_span_type
from aioprefactor._spans import SpanRun, SpanScope, span
from aioprefactor._version import __version__
from aioprefactor._wire.config import ClientOptions
from aioprefactor._wire.errors import (
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
from aioprefactor._wire.models import (
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
    "ClientOptions",
    "ClientState",
    "ControlSignal",
    "FinishStatus",
    "InstancePurpose",
    "InstanceRun",
    "InstanceScope",
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
    "RecordingState",
    "RuntimeEnvironment",
    "SpanCounts",
    "SpanRun",
    "SpanScope",
    "SpanTypeSchema",
    "__version__",
    "agent_instance",
    "configure",
    "current_instance",
    "current_span",
    "declare_span_type",
    "span",
]
