"""aioprefactor: an asyncio client for the Prefactor agent-observability API.

Record every run of an agent truthfully, exactly once, without slowing it down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from aioprefactor._runs.scopes import InstanceOptions, InstanceScope
    from aioprefactor._runs.signals import SignalInterrupt, handle_signals
    from aioprefactor._runs.spans import SpanScope, open_span, span, use_span
    from aioprefactor._runs.threads import ContextThreadPoolExecutor, wrap
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
    "ContextThreadPoolExecutor",
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
    "SignalInterrupt",
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
    "handle_signals",
    "open_span",
    "shutdown",
    "shutdown_sync",
    "span",
    "use_span",
    "wrap",
]

# Names are imported on first use, so that importing a submodule (the pytest plugin, loaded
# in every pytest session where the package is installed) does not load aiohttp.
_LAZY: dict[str, str] = {
    "AgentInstance": "aioprefactor._wire.models",
    "AgentSchemaVersion": "aioprefactor._wire.models",
    "AgentSpan": "aioprefactor._wire.models",
    "AgentStatus": "aioprefactor._wire.models",
    "AgentTerminated": "aioprefactor._runs.handles",
    "AgentVersion": "aioprefactor._wire.models",
    "BulkItem": "aioprefactor._wire.models",
    "BulkOutput": "aioprefactor._wire.models",
    "BulkResponse": "aioprefactor._wire.models",
    "Client": "aioprefactor._client",
    "ClientOptions": "aioprefactor._wire.config",
    "ClientState": "aioprefactor._client",
    "ContextThreadPoolExecutor": "aioprefactor._runs.threads",
    "ControlSignal": "aioprefactor._wire.models",
    "DeliveryStats": "aioprefactor._runs.engine",
    "FinishStatus": "aioprefactor._wire.models",
    "InstanceOptions": "aioprefactor._runs.scopes",
    "InstancePurpose": "aioprefactor._wire.models",
    "InstanceRun": "aioprefactor._runs.handles",
    "InstanceScope": "aioprefactor._runs.scopes",
    "PrefactorApiError": "aioprefactor._wire.errors",
    "PrefactorAuthError": "aioprefactor._wire.errors",
    "PrefactorConflictError": "aioprefactor._wire.errors",
    "PrefactorError": "aioprefactor._wire.errors",
    "PrefactorNotFoundError": "aioprefactor._wire.errors",
    "PrefactorRateLimitError": "aioprefactor._wire.errors",
    "PrefactorResponseContractError": "aioprefactor._wire.errors",
    "PrefactorRetryExhaustedError": "aioprefactor._wire.errors",
    "PrefactorServerError": "aioprefactor._wire.errors",
    "PrefactorTimeoutError": "aioprefactor._wire.errors",
    "PrefactorTransportError": "aioprefactor._wire.errors",
    "PrefactorValidationError": "aioprefactor._wire.errors",
    "RecordingState": "aioprefactor._runs.records",
    "RuntimeEnvironment": "aioprefactor._wire.models",
    "SignalInterrupt": "aioprefactor._runs.signals",
    "SpanCounts": "aioprefactor._wire.models",
    "SpanRun": "aioprefactor._runs.handles",
    "SpanScope": "aioprefactor._runs.spans",
    "SpanTypeSchema": "aioprefactor._wire.models",
    "__version__": "aioprefactor._version",
    "agent_instance": "aioprefactor._default",
    "configure": "aioprefactor._default",
    "current_instance": "aioprefactor._runs.context",
    "current_span": "aioprefactor._runs.context",
    "declare_span_type": "aioprefactor._runs.schema",
    "flush": "aioprefactor._default",
    "flush_sync": "aioprefactor._default",
    "handle_signals": "aioprefactor._runs.signals",
    "open_span": "aioprefactor._runs.spans",
    "shutdown": "aioprefactor._default",
    "shutdown_sync": "aioprefactor._default",
    "span": "aioprefactor._runs.spans",
    "use_span": "aioprefactor._runs.spans",
    "wrap": "aioprefactor._runs.threads",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib  # noqa: PLC0415

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
