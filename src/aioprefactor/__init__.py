"""aioprefactor: an asyncio client for the Prefactor agent-observability API.

Record every run of an agent truthfully, exactly once, without slowing it down.
"""

from aioprefactor._client import Client, ClientState
from aioprefactor._default import (
    agent_instance,
    configure,
    flush,
    flush_sync,
    shutdown,
    shutdown_sync,
)
from aioprefactor._runs.context import current_instance, current_span
from aioprefactor._runs.engine import DeliveryStats
from aioprefactor._runs.handles import AgentTerminated, InstanceRun, SpanRun
from aioprefactor._runs.records import RecordingState
from aioprefactor._runs.schema import declare_span_type
from aioprefactor._runs.scopes import (
    InstanceOptions,
    InstanceScope,
    SpanScope,
    open_span,
    span,
    use_span,
)
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
    "AgentTerminated",
    "AgentVersion",
    "BulkItem",
    "BulkOutput",
    "BulkResponse",
    "Client",
    "ClientOptions",
    "ClientState",
    "ControlSignal",
    "DeliveryStats",
    "FinishStatus",
    "InstanceOptions",
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
    "flush",
    "flush_sync",
    "open_span",
    "shutdown",
    "shutdown_sync",
    "span",
    "use_span",
]
