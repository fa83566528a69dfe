"""The `aiohttp.web` application: routes, bearer auth, the request log and fault injection."""

from __future__ import annotations

import asyncio
import hmac
import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from aioprefactor._version import __version__
from aioprefactor.testing import _routes as routes
from aioprefactor.testing._bulk import run_bulk
from aioprefactor.testing._errors import ApiError, error_body
from aioprefactor.testing._faults import FaultPlan
from aioprefactor.testing._log import RecordedRequest
from aioprefactor.testing._operations import Operations, success
from aioprefactor.testing._records import ACCOUNT_ID
from aioprefactor.testing._state import Store
from aioprefactor.testing._timeline import Timeline, is_timeline_route
from aioprefactor.testing._validate import Fields

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from aioprefactor.testing._faults import CannedReply
    from aioprefactor.testing._records import Instance
    from aioprefactor.testing._storage import Storage

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

logger = logging.getLogger("aioprefactor.testing")

_MAX_BODY = 16 * 1024 * 1024
# The record of the request being handled: the pipeline sets it, `_mutate` marks replays.
_current_record: ContextVar[RecordedRequest] = ContextVar("_current_record")


def _json_response(status: int, body: Mapping[str, Any]) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(body), content_type="application/json"
    )


def _canned_response(reply: CannedReply) -> web.Response:
    return web.Response(
        status=reply.status,
        body=reply.body,
        content_type=reply.content_type,
        headers=reply.headers,
    )


def _decode(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object (empty counts as `{}`)."""
    if not raw.strip():
        return {}
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


class LocalApp:
    """The local API's state, log and fault plan, and the web application that serves them."""

    def __init__(
        self, token: str, *, record_requests: bool = True, max_logged: int | None = None
    ) -> None:
        self.token = token
        self.record_requests = record_requests
        self.max_logged = max_logged
        self.store = Store()
        self.operations = Operations(self.store)
        self.faults = FaultPlan()
        self.log: list[RecordedRequest] = []
        self.bulk_item_types: frozenset[str] | None = None
        """The item types the bulk route takes; ``None``: all of them."""
        self._timeline = Timeline(self)

    def use(self, storage: Storage) -> None:
        """Keep the records in `storage` from now on, starting from what it holds.

        A storage whose records cannot be read is closed before the error propagates.
        """
        try:
            store = Store(storage)
        except BaseException:
            storage.close()
            raise
        self.store = store
        self.operations = Operations(self.store)

    def terminate(self, instance_id: str, reason: str) -> Instance:
        """Terminate a live instance and save it (`KeyError`, `ValueError`, `StorageError`)."""
        instance = self.store.terminate(instance_id, reason)
        self.store.commit()
        return instance

    def reset(self) -> None:
        """Forget every record, remembered reply, logged request and fault."""
        self.store.clear()
        self.faults.clear()
        self.faults.injected.clear()
        self.log.clear()

    def application(self) -> web.Application:
        """Build the `aiohttp.web.Application`."""
        app = web.Application(middlewares=[self._pipeline], client_max_size=_MAX_BODY)
        add = app.router.add_route
        prefix = "/api/v1"
        add("POST", f"{prefix}/agent_instance/register", self._register, name=routes.REGISTER)
        add("POST", f"{prefix}/agent_instance/{{id}}/start", self._start, name=routes.START)
        add("POST", f"{prefix}/agent_instance/{{id}}/finish", self._finish, name=routes.FINISH)
        add("GET", f"{prefix}/agent_instance/{{id}}", self._get, name=routes.GET)
        add(
            "POST",
            f"{prefix}/agent_instance/{{id}}/record_quality",
            self._record_quality,
            name=routes.RECORD_QUALITY,
        )
        add("POST", f"{prefix}/agent_spans", self._create_span, name=routes.SPAN_CREATE)
        add(
            "POST",
            f"{prefix}/agent_spans/{{id}}/finish",
            self._finish_span,
            name=routes.SPAN_FINISH,
        )
        add("POST", f"{prefix}/bulk", self._bulk, name=routes.BULK)
        add("GET", f"{prefix}/ping", self._ping, name=routes.PING)
        self._timeline.add_routes(app.router)
        return app

    # The pipeline: log the request, decide its faults as it arrives (so that concurrent
    # requests use up rules in arrival order), delay it, then answer it (or let a fault
    # answer it), and drop the connection after the effect when the plan says so.
    @web.middleware
    async def _pipeline(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name
        if is_timeline_route(route):
            # The page and its JSON are not the API: they are neither logged nor faulted.
            return await self._timeline.handle(request, handler)
        decision = self.faults.take(route if route in routes.ROUTE_NAMES else None)
        record = RecordedRequest(
            method=request.method,
            path=request.rel_url.raw_path,
            route=route if route in routes.ROUTE_NAMES else None,
            body=None,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            faults=decision.kinds,
        )
        if self.record_requests:
            self.log.append(record)
            if self.max_logged is not None and len(self.log) > 2 * self.max_logged:
                del self.log[: -self.max_logged]  # trimmed in chunks: appending stays O(1)
        _current_record.set(record)
        response = await self._answer(request, handler, record, decision.delay, decision.reply)
        if decision.drop and request.transport is not None:
            request.transport.close()
        else:
            record.status = response.status
        return response

    async def _answer(
        self,
        request: web.Request,
        handler: Handler,
        record: RecordedRequest,
        delay: float,
        canned: CannedReply | None,
    ) -> web.StreamResponse:
        try:
            raw = await request.read()
            if raw and self.record_requests:
                record.body = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            pass
        except web.HTTPException as exc:
            return self._http_error(exc)
        if delay:
            await asyncio.sleep(delay)
        if canned is not None:
            return _canned_response(canned)
        try:
            self._authenticate(request)
            self._check_content_type(request)
            return await handler(request)
        except ApiError as exc:
            response = _json_response(exc.status, exc.body)
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            return response
        except web.HTTPException as exc:
            return self._http_error(exc)
        except Exception:
            logger.exception("local API: unexpected error on %s %s", request.method, request.path)
            return _json_response(500, error_body(500, "unexpected error in the local API"))

    @staticmethod
    def _http_error(exc: web.HTTPException) -> web.Response:
        status = exc.status if exc.status >= 400 else 500
        response = _json_response(status, error_body(status, exc.reason))
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response

    def _authenticate(self, request: web.Request) -> None:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        expected = self.token.encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credentials.strip().encode(), expected
        ):
            raise ApiError(401, "missing or invalid bearer token")

    @staticmethod
    def _check_content_type(request: web.Request) -> None:
        if request.body_exists and request.content_type != "application/json":
            message = f"expected Content-Type application/json, got {request.content_type!r}"
            raise ApiError(415, message, code="unsupported_media_type")

    def _mutate(
        self,
        route: str,
        resource_id: str,
        body: Mapping[str, Any],
        prefix: str = "",
    ) -> web.Response:
        (status, answer), replayed = self.operations.run(route, resource_id, body, prefix)
        _current_record.get().replayed = replayed
        return _json_response(status, answer)

    async def _register(self, request: web.Request) -> web.Response:
        body = _decode(await request.read())
        return self._mutate(routes.REGISTER, "", body)

    async def _start(self, request: web.Request) -> web.Response:
        body = _decode(await request.read())
        return self._mutate(routes.START, request.match_info["id"], body)

    async def _finish(self, request: web.Request) -> web.Response:
        body = _decode(await request.read())
        return self._mutate(routes.FINISH, request.match_info["id"], body)

    async def _record_quality(self, request: web.Request) -> web.Response:
        body = _decode(await request.read())
        return self._mutate(routes.RECORD_QUALITY, request.match_info["id"], body)

    async def _finish_span(self, request: web.Request) -> web.Response:
        body = _decode(await request.read())
        return self._mutate(routes.SPAN_FINISH, request.match_info["id"], body)

    async def _create_span(self, request: web.Request) -> web.Response:
        body = _decode(await request.read())
        fields = Fields(body)
        fields.only({"details"})
        details = fields.mapping("details", required=True)
        fields.check()
        assert details is not None
        return self._mutate(routes.SPAN_CREATE, "", details, prefix="details.")

    async def _get(self, request: web.Request) -> web.Response:
        instance = self.store.instance(request.match_info["id"])
        return _json_response(200, success(instance.to_json()))

    async def _bulk(self, request: web.Request) -> web.Response:
        status, answer = run_bulk(
            self.operations, _decode(await request.read()), self.bulk_item_types
        )
        return _json_response(status, answer)

    async def _ping(self, _request: web.Request) -> web.Response:
        details = {
            "message": "pong",
            "account_id": ACCOUNT_ID,
            "server": f"aioprefactor-local@{__version__}",
        }
        return _json_response(200, success(details))
