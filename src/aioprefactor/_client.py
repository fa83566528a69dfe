"""The Client: owns the wire objects and the delivery engine, and guards their lifecycle."""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, Any, Final, Self, Unpack, final

from aioprefactor._runs.engine import DeliveryStats, Engine, EngineOptions
from aioprefactor._runs.scopes import InstanceOptions, InstanceScope
from aioprefactor._wire.config import ClientOptions, Settings, make_settings
from aioprefactor._wire.endpoints import AgentInstanceClient, AgentSpanClient, BulkClient, ping
from aioprefactor._wire.transport import Transport

if TYPE_CHECKING:
    from types import TracebackType


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
        delivery: ``"background"`` (default; ``PREFACTOR_DELIVERY``): runs and spans
            only record and enqueue, and a delivery thread sends; ``"inline"``: entering
            and leaving wait for the API, within their budgets.
        shutdown_timeout: Seconds closing the client (or the process's exit) waits to
            deliver what is queued (default 5).
        max_queue: Operations queued at most before new spans are dropped (default
            100,000; a run's own operations are never dropped).
        batching: Send span creates and registrations together through the bulk
            endpoint when several are ready (default True).
        termination_poll_interval: Seconds between checks of quiet runs for a
            termination by the server (default 30; ``None`` turns polling off).
        capture: Record exceptions, and the arguments and results of decorated
            functions (default True; ``PREFACTOR_CAPTURE=false`` turns it off).

    Raises:
        ValueError: A missing or bad URL or token, or a bad limit.
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_token: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        settings = make_settings(api_url=api_url, api_token=api_token, **options)
        self._settings: Settings = settings
        self._state = ClientState.UNOPENED
        self._transport_obj = Transport(settings)
        self._opened_transport = False
        self._engine = Engine(
            settings,
            EngineOptions(
                max_queue=settings.max_queue,
                batching=settings.batching,
                termination_poll_interval=settings.termination_poll_interval,
                inline=settings.delivery == "inline",
                capture=settings.capture,
                shutdown_timeout=settings.shutdown_timeout,
            ),
            owner=self,
        )
        self.agent_instances: Final = AgentInstanceClient(self._transport)
        """Register, start, finish and fetch agent instances."""
        self.agent_spans: Final = AgentSpanClient(self._transport)
        """Create and finish spans."""
        self.bulk: Final = BulkClient(self._transport)
        """Run several actions in one request."""

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
        if self._state is ClientState.CLOSED:
            raise RuntimeError("this Client is closed; create a new one")
        if not self._opened_transport:
            self._transport_obj.open()
            self._opened_transport = True
        self._state = ClientState.OPEN
        return self._transport_obj

    def _lifecycle(self) -> Engine:
        # What scopes record through: handed to them as a callable, never read from outside.
        if self._state is ClientState.CLOSED:
            raise RuntimeError("this Client is closed; create a new one")
        if self._state is ClientState.UNOPENED:
            self._state = ClientState.OPEN
        return self._engine

    @property
    def shutdown_timeout(self) -> float:
        """Seconds closing waits to deliver what is queued."""
        return self._settings.shutdown_timeout

    @property
    def delivery(self) -> str:
        """``"background"`` or ``"inline"``: how runs and spans are delivered."""
        return self._settings.delivery

    async def __aenter__(self) -> Self:
        if self._state is ClientState.CLOSED:
            raise RuntimeError("this Client is closed; create a new one")
        self._state = ClientState.OPEN
        return self

    def __enter__(self) -> Self:
        if self._state is ClientState.CLOSED:
            raise RuntimeError("this Client is closed; create a new one")
        self._state = ClientState.OPEN
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

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

    def agent_instance(self, **options: Unpack[InstanceOptions]) -> InstanceScope:
        """Record a run of an agent through this client; see :func:`aioprefactor.agent_instance`.

        The options are :class:`InstanceOptions`'s; ``agent_version`` is required.

        Raises:
            TypeError: A missing ``agent_version`` or an argument of the wrong type.
            ValueError: A bad argument.
        """
        return InstanceScope(self._lifecycle, options)

    def stats(self) -> DeliveryStats:
        """Counts of what background delivery has queued, sent, retried and dropped."""
        return self._engine.stats()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything runs and spans queued so far is delivered.

        The wait ends early when the API refuses connections (it is down).

        Args:
            timeout: Seconds to wait at most; ``None`` waits until delivery settles
                (each operation is bounded by ``total_timeout``).

        Returns:
            Whether everything was delivered (``False``: the timeout came first, or the
            API is down).
        """
        future = asyncio.wrap_future(self._engine.flush_future(timeout))
        return await asyncio.shield(future)

    def flush_sync(self, timeout: float | None = None) -> bool:
        """:meth:`flush` for sync code and other threads: blocks this thread."""
        return self._engine.flush_future(timeout).result()

    async def aclose(self, timeout: float | None = None) -> None:
        """Deliver what is queued (within ``timeout``), then close. Safe to call twice.

        Args:
            timeout: Seconds to wait for delivery at most; ``shutdown_timeout`` when
                omitted.
        """
        if self._state is ClientState.CLOSED:
            return
        wait = self._settings.shutdown_timeout if timeout is None else timeout
        try:
            await asyncio.shield(asyncio.wrap_future(self._engine.flush_future(wait)))
        finally:
            self._state = ClientState.CLOSED
            await asyncio.to_thread(self._engine.close, 0.0)
            await self._transport_obj.close()

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued (within ``timeout``), then close, from sync code.

        Args:
            timeout: Seconds to wait for delivery at most; ``shutdown_timeout`` when
                omitted.
        """
        if self._state is ClientState.CLOSED:
            return
        self._state = ClientState.CLOSED
        self._engine.close(self._settings.shutdown_timeout if timeout is None else timeout)
        self._transport_obj.close_soon()


def engine_of(client: Client) -> Engine:
    """The engine a client's runs are delivered by (for the default client's scopes).

    Raises:
        RuntimeError: The client is closed.
    """
    return client._lifecycle()
