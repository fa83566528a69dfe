"""The default client behind module-level ``agent_instance()``: one per event loop.

An aiohttp session belongs to one loop, so each loop gets its own client, made on first
use from :func:`configure` or the environment, and closed (after sending what is still
in flight) when the loop shuts down its async generators, as ``asyncio.run`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Unpack

from aioprefactor._client import Client, ClientState
from aioprefactor._lifecycle import (
    DEFAULT_ENTER_TIMEOUT,
    DEFAULT_FINISH_TIMEOUT,
    InstanceScope,
)
from aioprefactor._wire.config import ClientOptions, make_settings

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Mapping

    from aioprefactor._wire.models import (
        AgentSchemaVersion,
        AgentVersion,
        InstancePurpose,
        SpanTypeSchema,
    )

_options: dict[str, Any] = {}
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Client] = weakref.WeakKeyDictionary()
_lifetimes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[AsyncGenerator[None]]] = (
    weakref.WeakKeyDictionary()
)


def configure(
    api_url: str | None = None,
    api_token: str | None = None,
    **options: Unpack[ClientOptions],
) -> None:
    """Set how the default client connects; the arguments are :class:`Client`'s.

    Omitted URL and token still come from ``PREFACTOR_API_URL`` / ``PREFACTOR_API_TOKEN``.
    Runs that start afterwards use the new settings.

    Raises:
        TypeError: An option of the wrong type, or one that does not exist.
        ValueError: A bad URL, token or limit (checked now, not at first use).
    """
    statuses = options.get("retry_statuses")
    if isinstance(statuses, Iterable):
        options["retry_statuses"] = tuple(statuses)  # an iterator is read once
    # Check everything given now; what is left out comes from the environment at first use.
    make_settings(
        api_url="https://placeholder.invalid" if api_url is None else api_url,
        api_token="placeholder" if api_token is None else api_token,
        **options,
    )
    _options.clear()
    _options.update(options, api_url=api_url, api_token=api_token)
    _clients.clear()


def reset() -> None:
    """Forget :func:`configure`'s settings and the default clients (for tests)."""
    _options.clear()
    _clients.clear()


async def _lifetime(client: Client, loop: asyncio.AbstractEventLoop) -> AsyncGenerator[None]:
    try:
        yield
    finally:
        try:
            await client.aclose()
        finally:
            # Both maps hold values that refer back to the loop: drop them, or no loop
            # that ever used the default client could be collected.
            if _clients.get(loop) is client:
                del _clients[loop]
            _lifetimes.pop(loop, None)


def default_client() -> Client:
    """Return this event loop's default client, making it on first use.

    Raises:
        RuntimeError: No event loop is running.
        ValueError: No API URL or token is configured.
    """
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.state is ClientState.CLOSED:
        client = Client(**_options)
        _clients[loop] = client
        # The loop finalises unfinished async generators at shutdown; this one closes
        # the client there, after its background finishes are sent.
        lifetime = _lifetime(client, loop)
        with contextlib.suppress(StopIteration):
            lifetime.asend(None).send(None)
        _lifetimes.setdefault(loop, []).append(lifetime)
    return client


def agent_instance(
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
    """Record a run of an agent around a block, or around each call of a decorated function.

    On enter the instance is registered and started; on exit it is finished as
    ``complete`` (the block ended normally), ``failed`` (it raised) or ``cancelled``
    (it was cancelled or interrupted), unless the block set a status with
    ``run.complete()``, ``run.fail()`` or ``run.cancel()``. The block's exception is
    always re-raised unchanged. Uses this event loop's default client; see
    :meth:`Client.agent_instance` to use a client of your own.

    Args:
        agent_id: The agent; ``PREFACTOR_AGENT_ID`` when omitted.
        agent_version: The version running, e.g. ``{"name": ..., "external_identifier":
            ...}``; its runtime environment is filled in when missing.
        agent_schema_version: The schema version to register; by default one is built
            from ``span_types`` (or the declared span types), named by its content hash.
        span_types: The span types this agent uses.
        environment_id: The environment; ``PREFACTOR_ENVIRONMENT_ID`` when omitted.
        purpose: ``"live"``, ``"smoke_test"`` or ``"eval"``.
        external_identifier: The run's id in another system.
        id: A client-chosen instance id.
        update_current_version: Whether this version becomes the agent's current one.
        strict: Raise when the run cannot be recorded, instead of running the block
            without telemetry (one warning, ``run.telemetry_error``).
        enter_timeout: Seconds the block waits for register and start at most.
        finish_timeout: Seconds the end of the block waits for the finish at most; a
            slower finish goes on in the background.

    Raises:
        TypeError: A missing ``agent_version`` or an argument of the wrong type.
        ValueError: A bad argument.
    """
    return InstanceScope(
        default_client,
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
