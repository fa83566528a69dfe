"""The default client behind module-level ``agent_instance()``: one per process.

It is made on first use, from :func:`configure` or the environment. Its delivery thread
serves every event loop and thread, so it is shared by all of them. Whatever it still
holds is delivered when an event loop that used it shuts down its async generators (as
``asyncio.run`` does), and at the process's exit, each within ``shutdown_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Unpack

from aioprefactor._client import Client, ClientState, engine_of
from aioprefactor._runs.scopes import InstanceOptions, InstanceScope
from aioprefactor._wire.config import ClientOptions, make_settings

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from aioprefactor._runs.engine import Engine

_options: dict[str, Any] = {}
_lock = threading.Lock()
_client: list[Client] = []
_lifetimes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncGenerator[None]] = (
    weakref.WeakKeyDictionary()
)


def configure(
    api_url: str | None = None,
    api_token: str | None = None,
    **options: Unpack[ClientOptions],
) -> None:
    """Set how the default client connects; the arguments are :class:`Client`'s.

    Omitted URL and token still come from ``PREFACTOR_API_URL`` / ``PREFACTOR_API_TOKEN``.
    Runs that start afterwards use the new settings; the previous default client
    delivers what it holds and closes, in the background.

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
    with _lock:
        _options.clear()
        _options.update(options, api_url=api_url, api_token=api_token)
        old = _client.pop() if _client else None
    if old is not None:
        threading.Thread(target=old.close, name="aioprefactor-close", daemon=True).start()


def reset() -> None:
    """Forget :func:`configure`'s settings and close the default client (for tests)."""
    with _lock:
        _options.clear()
        old = _client.pop() if _client else None
    if old is not None:
        old.close(0.0)


async def _lifetime(client: Client, loop: asyncio.AbstractEventLoop) -> AsyncGenerator[None]:
    try:
        yield
    finally:
        try:
            if client.state is not ClientState.CLOSED:
                await client.flush(client.shutdown_timeout)
        finally:
            # The generator refers back to its loop: drop it, or the loop is never collected.
            _lifetimes.pop(loop, None)


def _watch_loop() -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if loop in _lifetimes or not _client:
        return
    # The loop finalises unfinished async generators at shutdown; this one flushes the
    # default client there.
    lifetime = _lifetime(_client[0], loop)
    with contextlib.suppress(StopIteration):
        lifetime.asend(None).send(None)
    _lifetimes[loop] = lifetime


def default_client() -> Client:
    """Return the default client, making it on first use.

    Raises:
        ValueError: No API URL or token is configured.
    """
    with _lock:
        if not _client or _client[0].state is ClientState.CLOSED:
            _client[:] = [Client(**_options)]
        client = _client[0]
    _watch_loop()
    return client


def _engine() -> Engine:
    return engine_of(default_client())


def agent_instance(**options: Unpack[InstanceOptions]) -> InstanceScope:
    """Record a run of an agent around a block, or around each call of a decorated function.

    On enter the instance is registered and started; on exit it is finished as
    ``complete`` (the block ended normally), ``failed`` (it raised) or ``cancelled``
    (it was cancelled or interrupted), unless the block set a status with
    ``run.complete()``, ``run.fail()`` or ``run.cancel()``. The block's exception is
    always re-raised unchanged. By default nothing here waits for the API: the run is
    recorded and a delivery thread sends it. Works as ``with`` and ``async with``, and
    on ``def``, ``async def`` and generator functions. Uses the default client; see
    :meth:`Client.agent_instance` to use a client of your own.

    The options are :class:`InstanceOptions`'s; ``agent_version`` is required.

    Raises:
        TypeError: A missing ``agent_version`` or an argument of the wrong type.
        ValueError: A bad argument.
    """
    return InstanceScope(_engine, options)


async def flush(timeout: float | None = None) -> bool:
    """Wait until the default client has delivered everything queued so far.

    Returns:
        Whether everything was delivered (``False``: the timeout came first, or the API
        is down). True when there is no default client.
    """
    client = _client[0] if _client else None
    return True if client is None else await client.flush(timeout)


def flush_sync(timeout: float | None = None) -> bool:
    """:func:`flush` for sync code: blocks this thread."""
    client = _client[0] if _client else None
    return True if client is None else client.flush_sync(timeout)


async def shutdown(timeout: float | None = None) -> None:
    """Deliver what the default client holds (within ``timeout``), then close it.

    A run started afterwards makes a new default client.
    """
    with _lock:
        client = _client.pop() if _client else None
    if client is not None:
        await client.aclose(timeout)


def shutdown_sync(timeout: float | None = None) -> None:
    """:func:`shutdown` for sync code: blocks this thread."""
    with _lock:
        client = _client.pop() if _client else None
    if client is not None:
        client.close(timeout)
