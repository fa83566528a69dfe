"""The fault plan: failures the local API injects so that clients are tested on a real socket."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from aioprefactor.testing._errors import error_body
from aioprefactor.testing._routes import check_route

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

_JSON = "application/json"
_HTML_502 = b"<html>502 Bad Gateway</html>"
_CHAOS_KINDS = ("503", "429", "latency", "drop", "non_json")


@dataclass(frozen=True, slots=True)
class CannedReply:
    """A response the plan sends instead of the API's own (the request has no effect)."""

    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the plan does to one request: delay it, answer it itself, or drop its response."""

    delay: float = 0.0
    reply: CannedReply | None = None
    drop: bool = False
    kinds: tuple[str, ...] = ()


@dataclass(slots=True)
class _Rule:
    kind: str  # "latency", "drop" or the label of a canned reply ("503", "non_json")
    route: str | None
    remaining: int | None
    seconds: float = 0.0
    reply: CannedReply | None = None

    def matches(self, route: str | None) -> bool:
        return self.route is None or self.route == route


@dataclass(slots=True)
class _Chaos:
    rate: float
    rng: random.Random
    kinds: tuple[str, ...]
    retry_after: float
    latency: float
    route: str | None


def _retry_after(value: float | str) -> str:
    if isinstance(value, str):
        return value
    if value < 0:
        msg = f"retry_after must not be negative, got {value!r}"
        raise ValueError(msg)
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _status_reply(
    status: int, retry_after: float | str | None, body: dict[str, Any] | None
) -> CannedReply:
    if not 400 <= status <= 599:
        msg = f"status must be a 4xx or 5xx code, got {status!r}"
        raise ValueError(msg)
    if body is None:
        body = error_body(status, f"injected fault: HTTP {status}")
    headers = {} if retry_after is None else {"Retry-After": _retry_after(retry_after)}
    return CannedReply(status, msgspec.json.encode(body), _JSON, headers)


def _count(n: int | None) -> int | None:
    if n is not None and n < 1:
        msg = f"n must be at least 1 (or None where allowed), got {n!r}"
        raise ValueError(msg)
    return n


def _check_kind(kind: str) -> str:
    if kind in {"latency", "drop", "non_json"} or (kind.isdigit() and 400 <= int(kind) <= 599):
        return kind
    msg = f"unknown fault kind {kind!r}: use a 4xx/5xx status, 'latency', 'drop' or 'non_json'"
    raise ValueError(msg)


class FaultPlan:
    """Failures to inject into the local API's answers, in the order requests arrive.

    Each method adds a rule; a rule limited to `n` requests is used up by the first `n`
    requests that match its `route` (any route when `None`). A request takes at most one
    latency rule and at most one answering rule (status, drop or non-JSON), the earliest added
    first. Requests that no answering rule claims are left to `chaos()`, if enabled.

    Attributes:
        injected: How many faults were applied, by kind: the status as a string (`"503"`,
            `"429"`), `"latency"`, `"drop"` or `"non_json"`. `clear()` keeps the counts.
    """

    def __init__(self) -> None:
        self.injected: Counter[str] = Counter()
        self._rules: list[_Rule] = []
        self._chaos: _Chaos | None = None

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        *,
        retry_after: float | str | None = None,
        route: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next `n` matching requests with `status` and an error body; no effect.

        Args:
            n: How many requests to fail.
            status: The 4xx or 5xx status to answer with.
            retry_after: Seconds (or an HTTP date) for a `Retry-After` header.
            route: Only requests to this route (see `aioprefactor.testing` for the names).
            body: The JSON body to send instead of the API's error body.
        """
        reply = _status_reply(status, retry_after, body)
        self._rules.append(_Rule(str(status), check_route(route), _count(n), reply=reply))

    def latency(self, seconds: float, *, n: int | None = None, route: str | None = None) -> None:
        """Delay matching requests by `seconds` (the next `n`, or all until `clear()`)."""
        if seconds < 0:
            msg = f"seconds must not be negative, got {seconds!r}"
            raise ValueError(msg)
        self._rules.append(_Rule("latency", check_route(route), _count(n), seconds=seconds))

    def drop_after_effect(self, n: int = 1, *, route: str | None = None) -> None:
        """Apply the next `n` matching requests, then close the connection without answering.

        The client sees a disconnect, although the request took effect: a lost response.
        """
        self._rules.append(_Rule("drop", check_route(route), _count(n)))

    def non_json(
        self,
        n: int = 1,
        *,
        status: int = 502,
        route: str | None = None,
        body: bytes = _HTML_502,
    ) -> None:
        """Answer the next `n` matching requests with a non-JSON `body`; no effect applied."""
        reply = CannedReply(status, body, "text/html")
        self._rules.append(_Rule("non_json", check_route(route), _count(n), reply=reply))

    def chaos(
        self,
        rate: float = 0.2,
        *,
        seed: int | None = None,
        kinds: Iterable[str] = _CHAOS_KINDS,
        retry_after: float = 0.05,
        latency: float = 0.05,
        route: str | None = None,
    ) -> None:
        """Give each request, with probability `rate`, one random fault of `kinds`.

        The draws come from a `random.Random(seed)`, so the same requests in the same order get
        the same faults. A `"429"` carries `Retry-After: retry_after`; `"latency"` waits
        `latency` seconds; `"drop"` applies the request and drops the connection.

        Args:
            rate: The probability, from 0 to 1, that a request gets a fault.
            seed: The seed of the random draws.
            kinds: Any of `"503"`, `"429"` (or another 4xx/5xx status), `"latency"`, `"drop"`,
                `"non_json"`.
            retry_after: The `Retry-After` seconds sent with a 429.
            latency: The delay of a `"latency"` fault, in seconds.
            route: Only requests to this route.
        """
        if not 0 <= rate <= 1:
            msg = f"rate must be between 0 and 1, got {rate!r}"
            raise ValueError(msg)
        chosen = tuple(_check_kind(kind) for kind in kinds)
        if not chosen:
            msg = "kinds must name at least one fault"
            raise ValueError(msg)
        self._chaos = _Chaos(
            rate,
            random.Random(seed),  # noqa: S311 - reproducible draws, not secrets
            chosen,
            retry_after,
            latency,
            check_route(route),
        )

    def clear(self) -> None:
        """Remove every rule and stop chaos; the `injected` counts stay."""
        self._rules.clear()
        self._chaos = None

    def take(self, route: str | None) -> Decision:
        """Decide the faults of one request to `route` and use up the rules it matches.

        The local API calls this once per request, as it arrives.
        """
        slow = next((r for r in self._rules if r.kind == "latency" and r.matches(route)), None)
        answer = next((r for r in self._rules if r.kind != "latency" and r.matches(route)), None)
        for rule in (slow, answer):
            if rule is not None and rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining == 0:
                    self._rules.remove(rule)
        if answer is None and self._chaos is not None and self._chaos.route in {None, route}:
            rolled = self._roll(self._chaos)
            if rolled is not None and rolled.kind == "latency":
                slow = slow or rolled  # an explicit latency rule wins over a rolled one
            else:
                answer = rolled
        if slow is not None:
            self.injected["latency"] += 1
        if answer is not None:
            self.injected[answer.kind] += 1
        return Decision(
            delay=0.0 if slow is None else slow.seconds,
            reply=None if answer is None else answer.reply,
            drop=answer is not None and answer.kind == "drop",
            kinds=tuple(rule.kind for rule in (slow, answer) if rule is not None),
        )

    @staticmethod
    def _roll(chaos: _Chaos) -> _Rule | None:
        if chaos.rng.random() >= chaos.rate:
            return None
        kind = chaos.rng.choice(chaos.kinds)
        if kind == "latency":
            return _Rule(kind, None, 1, seconds=chaos.latency)
        if kind == "drop":
            return _Rule(kind, None, 1)
        if kind == "non_json":
            return _Rule(kind, None, 1, reply=CannedReply(502, _HTML_502, "text/html"))
        retry_after = chaos.retry_after if kind == "429" else None
        return _Rule(kind, None, 1, reply=_status_reply(int(kind), retry_after, None))
