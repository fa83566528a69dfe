"""The timeline: a page over the local API's runs, the read-only JSON behind it, and admin routes.

Routes (all behind the API's token, as a bearer header or the session cookie):

- `GET /` and `GET /instances/{id}`: the page (static HTML; its script reads the JSON below).
  `?token=...` on either sets the session cookie and redirects to the same page without it.
- `GET /_local/instances` (`?limit=`, newest first), `GET /_local/instances/{id}` (with spans).
- `GET /_local/requests` (`?limit=`): the request log, newest last, tokens left out.
- `POST /_local/instances/{id}/terminate` `{"reason": "..."}`: terminate a live instance.

The page builds its DOM from text nodes only, and the responses forbid inline script (CSP):
span payloads are untrusted and must render as text.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.resources
from functools import cache
from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import web

from aioprefactor.testing._errors import ApiError
from aioprefactor.testing._records import Instance, Span, render_time
from aioprefactor.testing._storage import StorageError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aioprefactor.testing._app import LocalApp, RecordedRequest

ROUTE_PREFIX: Final = "timeline."
DEFAULT_LIMIT: Final = 200
DEFAULT_REASON: Final = "terminated by an operator"
_STATIC: Final = {"timeline.js": "text/javascript", "timeline.css": "text/css"}
_HIDDEN_HEADERS: Final = frozenset({"authorization", "cookie"})
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_LOGIN_PAGE: Final = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>aioprefactor: sign in</title>
<link rel="icon" href="data:,"></head>
<body><h1>Not signed in</h1>
<p>Open the link with <code>?token=</code> that <code>python -m aioprefactor serve</code>
printed when it started.</p></body></html>
"""


@cache
def _static(name: str) -> bytes:
    return (importlib.resources.files("aioprefactor.testing") / "_static" / name).read_bytes()


def session_value(token: str) -> str:
    """Return the session cookie's value for `token` (the token itself never goes in a cookie)."""
    return hmac.new(token.encode(), b"aioprefactor timeline session", hashlib.sha256).hexdigest()


def cookie_name(request: web.Request) -> str:
    """Return the session cookie's name: one per port, as cookies are shared across ports."""
    return f"aioprefactor_session_{request.url.port}"


def _json(status: int, body: Mapping[str, Any]) -> web.Response:
    return web.Response(
        status=status,
        body=msgspec.json.encode(body),
        content_type="application/json",
        headers=_SECURITY_HEADERS,
    )


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or int(raw) < 1:
        raise ApiError(422, "the request is invalid", errors={"limit": ["must be an integer >= 1"]})
    return int(raw)


def instance_summary(instance: Instance) -> dict[str, Any]:
    """Return what the list of runs shows of an instance."""
    return {
        "id": instance.id,
        "agent_id": instance.agent_id,
        "status": instance.status,
        "inserted_at": render_time(instance.inserted_at),
        "started_at": render_time(instance.started_at),
        "finished_at": render_time(instance.finished_at),
        "span_count": len(instance.span_ids),
        "termination_reason": instance.termination_reason,
    }


def ending(instance: Instance, spans: list[Span]) -> dict[str, Any] | None:
    """Say why a run ended badly: the termination reason, or the error of its first failed span."""
    if instance.status == "terminated":
        return {"text": f"Terminated: {instance.termination_reason}", "span_id": None}
    if instance.status != "failed":
        return None
    failed = sorted((s for s in spans if s.status == "failed"), key=lambda s: s.started_at)
    for span in failed:
        error = (span.result_payload or {}).get("error")
        if isinstance(error, dict):
            kind, message = error.get("type"), error.get("message")
            text = f"{kind}: {message}" if kind and message else str(kind or message or error)
            return {"text": f"Failed in {span.schema_name}: {text}", "span_id": span.id}
    if failed:
        return {"text": f"Failed in {failed[0].schema_name}", "span_id": failed[0].id}
    return {"text": "Failed (no span recorded an error)", "span_id": None}


def request_entry(record: RecordedRequest) -> dict[str, Any]:
    """Render one logged request as JSON, without its credentials."""
    headers = {k: v for k, v in record.headers.items() if k.lower() not in _HIDDEN_HEADERS}
    return {
        "method": record.method,
        "path": record.path,
        "route": record.route,
        "status": record.status,
        "replayed": record.replayed,
        "faults": list(record.faults),
        "headers": headers,
        "body": record.body,
    }


class Timeline:
    """The timeline's routes over one `LocalApp`."""

    def __init__(self, app: LocalApp) -> None:
        self._app = app

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add the page, JSON and admin routes, named with `ROUTE_PREFIX`."""
        add = router.add_route
        add("GET", "/", self._page, name=ROUTE_PREFIX + "page")
        add("GET", "/instances/{id}", self._page, name=ROUTE_PREFIX + "instance_page")
        add("GET", "/_local/static/{name}", self._static, name=ROUTE_PREFIX + "static")
        add("GET", "/_local/instances", self._instances, name=ROUTE_PREFIX + "instances")
        add("GET", "/_local/instances/{id}", self._instance, name=ROUTE_PREFIX + "instance")
        add(
            "POST",
            "/_local/instances/{id}/terminate",
            self._terminate,
            name=ROUTE_PREFIX + "terminate",
        )
        add("GET", "/_local/requests", self._requests, name=ROUTE_PREFIX + "requests")

    async def handle(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Answer a timeline request: authenticate it and turn errors into JSON bodies."""
        try:
            if not self._signed_in(request):
                raise ApiError(401, "missing or invalid token")
            response: web.StreamResponse = await handler(request)
        except ApiError as error:
            if error.status == 401 and not request.path.startswith("/_local/"):
                return web.Response(
                    status=401,
                    body=_LOGIN_PAGE,
                    content_type="text/html",
                    headers=_SECURITY_HEADERS,
                )
            return _json(error.status, error.body)
        return response

    def _signed_in(self, request: web.Request) -> bool:
        token = self._app.token
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), token.encode()
        ):
            return True
        on_page = not request.path.startswith("/_local/")
        if request.method == "GET" and on_page and "token" in request.query:
            return hmac.compare_digest(request.query["token"].encode(), token.encode())
        cookie = request.cookies.get(cookie_name(request), "")
        return hmac.compare_digest(cookie.encode(), session_value(token).encode())

    async def _page(self, request: web.Request) -> web.Response:
        if "token" in request.query:
            # Signed in by the link: keep the session in a cookie and drop the token from the
            # address bar (and so from the history).
            query = {k: v for k, v in request.query.items() if k != "token"}
            response = web.HTTPSeeOther(request.rel_url.with_query(query))
            response.set_cookie(
                cookie_name(request),
                session_value(self._app.token),
                httponly=True,
                samesite="Strict",
                path="/",
            )
            response.headers.update(_SECURITY_HEADERS)
            raise response
        return web.Response(
            body=_static("timeline.html"), content_type="text/html", headers=_SECURITY_HEADERS
        )

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise ApiError(404, f"no static file {name!r}")
        headers = {**_SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return web.Response(body=_static(name), content_type=_STATIC[name], headers=headers)

    async def _instances(self, request: web.Request) -> web.Response:
        limit = _limit(request)
        store = self._app.store
        newest = list(reversed(store.instances.values()))[:limit]
        body = {
            "version": store.version,
            "total": len(store.instances),
            "instances": [instance_summary(instance) for instance in newest],
        }
        return _json(200, body)

    async def _instance(self, request: web.Request) -> web.Response:
        store = self._app.store
        instance = store.instance(request.match_info["id"])
        spans = [store.spans[span_id] for span_id in instance.span_ids]
        versions = {v.id: v for v in store.agent_versions.values()}
        version = versions.get(instance.agent_version_id)
        body = {
            "version": store.version,
            "instance": instance.to_json(),
            "agent_version": version.to_json() if version is not None else None,
            "ending": ending(instance, spans),
            "spans": [span.to_json() for span in spans],
        }
        return _json(200, body)

    async def _terminate(self, request: web.Request) -> web.Response:
        # A JSON body is required: a cross-site form cannot send one, so the session cookie
        # alone cannot be used to terminate runs from another site.
        if request.content_type != "application/json":
            message = f"expected Content-Type application/json, got {request.content_type!r}"
            raise ApiError(415, message, code="unsupported_media_type")
        try:
            body = msgspec.json.decode(await request.read()) if request.body_exists else {}
        except msgspec.DecodeError:
            raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None
        reason = body.get("reason", DEFAULT_REASON) if isinstance(body, dict) else None
        if not isinstance(reason, str) or not reason.strip():
            raise ApiError(422, "the request is invalid", errors={"reason": ["must be a text"]})
        instance_id = request.match_info["id"]
        store = self._app.store
        store.instance(instance_id)  # the 404
        try:
            instance = self._app.terminate(instance_id, reason)
        except ValueError as error:
            raise ApiError(409, str(error), code="invalid_action") from None
        except StorageError as error:
            raise ApiError(503, f"not saved: {error}", code="storage_error") from None
        return _json(200, {"status": "success", "details": instance.to_json()})

    async def _requests(self, request: web.Request) -> web.Response:
        limit = _limit(request)
        log = self._app.log[-limit:]
        return _json(200, {"requests": [request_entry(record) for record in log]})


def is_timeline_route(name: str | None) -> bool:
    """Whether a route name belongs to the timeline (not logged, no faults applied)."""
    return name is not None and name.startswith(ROUTE_PREFIX)
