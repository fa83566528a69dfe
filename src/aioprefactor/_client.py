"""The Client: owns the transport and the endpoint clients, and guards their lifecycle."""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, Any, Final, Self, Unpack, final

from aioprefactor._lifecycle import (
    DEFAULT_ENTER_TIMEOUT,
    DEFAULT_FINISH_TIMEOUT,
    InstanceScope,
)
from aioprefactor._wire.config import ClientOptions, Settings, make_settings
from aioprefactor._wire.endpoints import AgentInstanceClient, AgentSpanClient, BulkClient, ping
from aioprefactor._wire.transport import Transport

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import TracebackType

    from aioprefactor._wire.models import (
        AgentSchemaVersion,
        AgentVersion,
        InstancePurpose,
        SpanTypeSchema,
    )


class ClientState(enum.Enum):
    """Where a Client is in its life."""

    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


@final
class Client:
    """A connection to the Prefactor API: one aiohttp session, opened on first use.

    Use it as ``async with Client(...) as client:``, or call :meth:`aclose` yourself.
    A closed client cannot be reopened; a client belongs to the event loop it was
    opened on.

    Every setting after the token is keyword-only (see :class:`ClientOptions`).

    Args:
        api_url: The API's base URL; ``PREFACTOR_API_URL`` when omitted. ``https://``,
            or ``http://`` to a loopback host.
        api_token: The bearer token; ``PREFACTOR_API_TOKEN`` when omitted. It never
            appears in a ``repr``, a log line or an error message.
        allow_insecure_http: Allow ``http://`` to hosts that are not loopback (default
            False).
        connect_timeout: Seconds to establish a connection (default 5; not counting a
            wait for a free pooled connection, which only ``total_timeout`` bounds).
        request_timeout: Seconds an attempt waits for the API's answer once sent
            (default 10).
        total_timeout: Seconds for a call, retries and waits included (default 30).
        max_retries: Retries after the first attempt, for connection errors, timeouts
            and the statuses in ``retry_statuses`` (default 3). What ``agent_instance``
            and ``span`` send in the background is retried until ``total_timeout``.
        backoff_initial: First backoff delay in seconds (default 0.25); it doubles, with
            jitter.
        backoff_max: Largest backoff delay (default 5).
        retry_after_cap: Largest wait a ``Retry-After`` header may ask for (default 60).
        retry_statuses: Statuses to retry (default 429, 500, 502, 503, 504).
        max_response_bytes: Responses larger than this are refused (default 10 MiB).
        max_request_bytes: Requests larger than this are refused before sending, with
            a ``ValueError`` (default 5 MiB).
        max_connections: Connections kept open to the API at most (default 100).

    Raises:
        ValueError: A missing or bad URL or token, or a bad limit.
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_token: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self._settings: Settings = make_settings(api_url=api_url, api_token=api_token, **options)
        self._state = ClientState.UNOPENED
        self._transport_obj = Transport(self._settings)
        self._background: set[asyncio.Task[Any]] = set()
        self.agent_instances: Final = AgentInstanceClient(self._transport)
        """Register, start, finish and fetch agent instances."""
        self.agent_spans: Final = AgentSpanClient(self._transport)
        """Create and finish spans."""
        self.bulk: Final = BulkClient(self._transport)
        """Run several actions in one request."""
        # What runs and spans send goes on in the background, where a record matters more
        # than latency: it retries until the total deadline, not max_retries times.
        self._lifecycle_instances: Final = AgentInstanceClient(self._transport, persistent=True)
        self._lifecycle_spans: Final = AgentSpanClient(self._transport, persistent=True)

    def __repr__(self) -> str:
        return f"<Client {self._settings.api_url} {self._state.value}>"

    @property
    def api_url(self) -> str:
        """The API's base URL."""
        return str(self._settings.api_url)

    @property
    def state(self) -> ClientState:
        """Whether the client is unopened, open or closed."""
        return self._state

    def _transport(self) -> Transport:
        state = self._state
        if state is ClientState.OPEN:
            return self._transport_obj
        if state is ClientState.CLOSED:
            raise RuntimeError("this Client is closed; create a new one")
        self._transport_obj.open()
        self._state = ClientState.OPEN
        return self._transport_obj

    async def __aenter__(self) -> Self:
        if self._state is ClientState.CLOSED:
            raise RuntimeError("this Client is closed; create a new one")
        self._transport()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def ping(self) -> dict[str, Any]:
        """Check that the API answers and accepts the token.

        Raises:
            PrefactorAuthError: The token was refused.
            PrefactorRetryExhaustedError: The API could not be reached.
        """
        return await ping(self._transport())

    def agent_instance(
        self,
        *,
        agent_id: str | None = None,
        agent_version: AgentVersion | Mapping[str, Any],
        agent_schema_version: AgentSchemaVersion | Mapping[str, Any] | None = None,
        span_types: Iterable[SpanTypeSchema | Mapping[str, Any]] | None = None,
        environment_id: str | None = None,
        purpose: InstancePurpose | None = None,
        external_identifier: str | None = None,
        id: str | None = None,  # noqa: A002 - the API's own name for it
        update_current_version: bool = True,
        strict: bool = False,
        enter_timeout: float = DEFAULT_ENTER_TIMEOUT,
        finish_timeout: float = DEFAULT_FINISH_TIMEOUT,
    ) -> InstanceScope:
        """Record a run of an agent through this client; see :func:`aioprefactor.agent_instance`.

        Raises:
            TypeError: A missing ``agent_version`` or an argument of the wrong type.
            ValueError: A bad argument.
        """
        return InstanceScope(
            lambda: self,
            agent_id=agent_id,
            agent_version=agent_version,
            agent_schema_version=agent_schema_version,
            span_types=span_types,
            environment_id=environment_id,
            purpose=purpose,
            external_identifier=external_identifier,
            id=id,
            update_current_version=update_current_version,
            strict=strict,
            enter_timeout=enter_timeout,
            finish_timeout=finish_timeout,
        )

    def _keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a strong reference to background work until it is done."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait for what runs and spans are still sending in the background.

        Each of those requests is bounded by the client's ``total_timeout``, so the
        wait ends even when the API is down.

        Args:
            timeout: Seconds to wait at most; ``None`` waits until all is sent.

        Returns:
            Whether everything was sent (``False``: the timeout came first).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while pending := [task for task in self._background if not task.done()]:
            # Loop: a finish that waited for its run's start is spawned meanwhile.
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            await asyncio.wait(pending, timeout=remaining)
        return True

    async def aclose(self, timeout: float | None = None) -> None:
        """Send what is still in flight, then close the session. Safe to call twice.

        Args:
            timeout: Seconds to wait for background sends at most; ``None`` waits until
                all is sent (each request is bounded by ``total_timeout``).
        """
        if self._state is ClientState.CLOSED:
            return
        try:
            await self.flush(timeout)
        finally:
            self._state = ClientState.CLOSED
            await self._transport_obj.close()
