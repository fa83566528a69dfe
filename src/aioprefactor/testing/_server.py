"""`LocalPrefactor`: the local API served on a loopback socket, with inspection for tests."""

from __future__ import annotations

import copy
import ipaddress
import secrets
import urllib.parse
from typing import TYPE_CHECKING, Any, Self

from aiohttp import web

from aioprefactor.testing._app import LocalApp
from aioprefactor.testing._bulk import ITEM_TYPES
from aioprefactor.testing._storage import MemoryStorage

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable
    from types import TracebackType

    from aioprefactor.testing._faults import FaultPlan
    from aioprefactor.testing._log import RecordedRequest

_SHUTDOWN_GRACE = 0.5  # seconds left to in-flight requests (a long latency fault) on stop


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LocalPrefactor:
    """An in-memory Prefactor API on a loopback socket, for tests and local development.

    It implements the API's wire contract: bearer auth, the instance and span state machines,
    idempotency replay, bulk, ping, and the terminate control signal, plus a fault plan. It
    also serves the timeline, a page over the runs at `timeline_url` (behind the same token).

    With `db`, every record (remembered idempotency replies included) is kept in that SQLite
    file, each change saved before it is answered, so runs survive a restart; the file is
    opened by `start()` and closed by `stop()`.

    ```python
    async with LocalPrefactor() as api:
        client = Client(api_url=api.url, api_token=api.token)
    ```

    Args:
        host: The loopback address to listen on.
        port: The port; `0` lets the operating system choose a free one.
        token: The bearer token to accept; `None` makes a random one.
        record_requests: Keep the log of `requests`.
        max_logged_requests: Keep only about this many of the latest requests in the log
            (`None`: all), for a long-running server.
        db: An SQLite file to keep the records in (created if missing); `None` keeps them in
            memory only.
        bulk_item_types: The item types the bulk route takes (`None`: all); an item of
            another type is answered `unsupported_type`, as by a server whose bulk takes
            fewer types.

    Raises:
        ValueError: If `host` is not a loopback address, or a bulk item type is unknown.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        *,
        record_requests: bool = True,
        max_logged_requests: int | None = None,
        db: str | os.PathLike[str] | None = None,
        bulk_item_types: Iterable[str] | None = None,
    ) -> None:
        if not _is_loopback(host):
            msg = f"the local API listens on loopback addresses only, not {host!r}"
            raise ValueError(msg)
        if token is not None and not token:
            msg = "token must not be empty"
            raise ValueError(msg)
        self._host = host
        self._port = port
        token = token if token is not None else f"pf-local-{secrets.token_urlsafe(24)}"
        if max_logged_requests is not None and max_logged_requests < 1:
            msg = f"max_logged_requests must be at least 1, got {max_logged_requests!r}"
            raise ValueError(msg)
        self._app = LocalApp(token, record_requests=record_requests, max_logged=max_logged_requests)
        if bulk_item_types is not None:
            types = frozenset(bulk_item_types)
            unknown = types - set(ITEM_TYPES)
            if unknown:
                msg = f"unknown bulk item types {sorted(unknown)}; known: {sorted(ITEM_TYPES)}"
                raise ValueError(msg)
            self._app.bulk_item_types = types
        self._db = db
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    def __repr__(self) -> str:
        state = self._url if self._url is not None else "stopped"
        return f"<LocalPrefactor {state}>"

    async def start(self) -> None:
        """Start serving; the port is known (`url`) when this returns.

        Raises:
            RuntimeError: If it is already running.
            StorageError: If `db` cannot be used (damaged, too new, in use by another server).
        """
        if self._runner is not None:
            msg = "the local API is already running"
            raise RuntimeError(msg)
        if self._db is not None:
            from aioprefactor.testing._sqlite import SqliteStorage  # noqa: PLC0415 - only for db

            self._app.use(SqliteStorage.open(self._db))
        runner = web.AppRunner(
            self._app.application(), access_log=None, shutdown_timeout=_SHUTDOWN_GRACE
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            self._release_storage()
            raise
        host, port = runner.addresses[0][:2]
        self._runner = runner
        self._url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop serving and close every connection (nothing happens if it is not running)."""
        runner, self._runner, self._url = self._runner, None, None
        if runner is not None:
            await runner.cleanup()
            self._release_storage()

    def _release_storage(self) -> None:
        # What was loaded stays readable in memory; changes from now on are not saved.
        store = self._app.store
        storage, store.storage = store.storage, MemoryStorage()
        storage.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The base URL, such as `http://127.0.0.1:54321` (`RuntimeError` when not running)."""
        if self._url is None:
            msg = "the local API is not running: use `async with LocalPrefactor()` or start()"
            raise RuntimeError(msg)
        return self._url

    @property
    def timeline_url(self) -> str:
        """The timeline page's address, with the token that signs the browser in."""
        return f"{self.url}/?token={urllib.parse.quote(self.token, safe='')}"

    @property
    def token(self) -> str:
        """The bearer token the API accepts."""
        return self._app.token

    @property
    def faults(self) -> FaultPlan:
        """The fault plan: failures to inject into the next requests."""
        return self._app.faults

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received since the start (or the last `reset()`), in arrival order."""
        return self._app.log

    # The inspection methods answer copies: a test that edits what it got back must not
    # change what the API will answer next.

    def instances(self) -> list[dict[str, Any]]:
        """Return every agent instance as the API renders it, in registration order."""
        return copy.deepcopy([i.to_json() for i in self._app.store.instances.values()])

    def instance(self, instance_id: str) -> dict[str, Any]:
        """Return one agent instance as the API renders it.

        Raises:
            KeyError: If there is no such instance.
        """
        return copy.deepcopy(self._app.store.instances[instance_id].to_json())

    def spans(self, instance_id: str | None = None) -> list[dict[str, Any]]:
        """Return the spans of one instance (or of all), in creation order.

        Raises:
            KeyError: If `instance_id` names no instance.
        """
        store = self._app.store
        if instance_id is None:
            return copy.deepcopy([span.to_json() for span in store.spans.values()])
        span_ids = store.instances[instance_id].span_ids
        return copy.deepcopy([store.spans[span_id].to_json() for span_id in span_ids])

    def span(self, span_id: str) -> dict[str, Any]:
        """Return one span as the API renders it.

        Raises:
            KeyError: If there is no such span.
        """
        return copy.deepcopy(self._app.store.spans[span_id].to_json())

    def agent_versions(self) -> list[dict[str, Any]]:
        """Return the agent versions registered, one per (agent, external identifier)."""
        return copy.deepcopy([v.to_json() for v in self._app.store.agent_versions.values()])

    def schema_versions(self) -> list[dict[str, Any]]:
        """Return the schema versions registered, one per (agent, external identifier)."""
        return copy.deepcopy([s.to_json() for s in self._app.store.schema_versions.values()])

    def terminate(self, instance_id: str, reason: str = "terminated by the server") -> None:
        """Terminate an instance from the server's side, as an operator would.

        Its status becomes `terminated` with `reason`; later span responses for it carry
        `"control": {"terminate": true, "reason": reason}`, and start and finish are refused.

        Raises:
            KeyError: If there is no such instance.
            ValueError: If the instance has already ended.
            StorageError: If `db` could not save it (nothing changed).
        """
        self._app.terminate(instance_id, reason)

    def reset(self) -> None:
        """Forget all instances, spans, versions, idempotency keys, logged requests and faults."""
        self._app.reset()
