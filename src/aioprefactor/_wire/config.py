"""Client settings, from arguments and the environment, checked once at construction."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, TypedDict

import yarl

from aioprefactor._wire.checks import seconds

if TYPE_CHECKING:
    from collections.abc import Iterable

ENV_API_URL: Final = "PREFACTOR_API_URL"
ENV_API_TOKEN: Final = "PREFACTOR_API_TOKEN"  # noqa: S105 - a variable name, not a secret
ENV_AGENT_ID: Final = "PREFACTOR_AGENT_ID"
ENV_ENVIRONMENT_ID: Final = "PREFACTOR_ENVIRONMENT_ID"
ENV_DELIVERY: Final = "PREFACTOR_DELIVERY"
ENV_CAPTURE: Final = "PREFACTOR_CAPTURE"
DELIVERY_MODES: Final = frozenset({"background", "inline"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_TRUE: Final = frozenset({"1", "true", "yes", "on"})

DEFAULT_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})


class Secret:
    """A string that never shows itself in ``repr`` or ``str``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _is_loopback(host: str) -> bool:
    if host.lower() in {"localhost", "localhost."}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_api_url(raw: object, *, allow_insecure_http: bool) -> yarl.URL:
    """Check an API base URL and return it without a trailing slash.

    Raises:
        ValueError: Not an absolute http(s) URL, carries a query, fragment or
            credentials, or is plain http to a host that is not loopback.
    """
    # Messages name the URL's scheme and host only: a query or userinfo could hold a secret.
    if not isinstance(raw, str):
        raise TypeError(f"api_url must be a str, not {type(raw).__name__}")
    if not raw.strip():
        raise ValueError("api_url is empty: pass api_url= or set PREFACTOR_API_URL")
    try:
        url = yarl.URL(raw.strip())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"api_url is not a URL: {type(exc).__name__}") from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValueError(
            f"api_url must be an absolute http:// or https:// URL, not scheme {url.scheme!r}"
        )
    where = f"{url.scheme}://{url.host}"
    if url.query_string or url.fragment:
        raise ValueError(f"api_url ({where}/...) must not carry a query or a fragment")
    if url.user is not None or url.password is not None:
        raise ValueError("api_url must not carry credentials; pass api_token= instead")
    if isinstance(allow_insecure_http, bool) is False:
        raise TypeError(
            f"allow_insecure_http must be a bool, not {type(allow_insecure_http).__name__}"
        )
    if url.scheme == "http" and not allow_insecure_http and not _is_loopback(url.host):
        raise ValueError(
            f"api_url {where} uses plain http to a host that is not loopback; the token "
            "would travel in clear. Use https://, or pass allow_insecure_http=True."
        )
    # The raw path: decoding it first would turn an encoded "%2F" into a separator.
    return url.with_path(url.raw_path.rstrip("/"), encoded=True)


class ClientOptions(TypedDict, total=False):
    """How a :class:`Client` (or the default client, see ``configure``) connects.

    Every key is optional; see :class:`Client` for what each means and its default.
    """

    allow_insecure_http: bool
    connect_timeout: float
    request_timeout: float
    total_timeout: float
    max_retries: int
    backoff_initial: float
    backoff_max: float
    retry_after_cap: float
    retry_statuses: Iterable[int]
    max_response_bytes: int
    max_request_bytes: int
    max_connections: int
    delivery: Literal["background", "inline"]
    shutdown_timeout: float
    max_queue: int
    batching: bool
    termination_poll_interval: float | None
    capture: bool


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a Client needs, already checked. Built by :func:`make_settings`."""

    api_url: yarl.URL
    api_token: Secret = field(repr=False)
    connect_timeout: float
    request_timeout: float
    total_timeout: float
    max_retries: int
    backoff_initial: float
    backoff_max: float
    retry_after_cap: float
    retry_statuses: frozenset[int]
    max_response_bytes: int
    max_request_bytes: int
    max_connections: int
    delivery: Literal["background", "inline"] = "background"
    shutdown_timeout: float = 5.0
    max_queue: int = 100_000
    batching: bool = True
    termination_poll_interval: float | None = 30.0
    capture: bool = True


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _FALSE:
        return False
    if raw in _TRUE:
        return True
    raise ValueError(f"{name} must be true or false, not {raw!r}")


def _delivery(
    delivery: str | None, batching: object, capture: object, poll: float | None
) -> tuple[str, float | None]:
    mode = delivery if delivery is not None else os.environ.get(ENV_DELIVERY, "").strip()
    mode = mode or "background"
    if mode not in DELIVERY_MODES:
        raise ValueError(f"delivery must be 'background' or 'inline', not {mode!r}")
    for name, flag in (("batching", batching), ("capture", capture)):
        if flag is not None and not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, not {type(flag).__name__}")
    interval = None if poll is None else seconds(poll, "termination_poll_interval")
    if interval is not None and interval <= 0:
        raise ValueError("termination_poll_interval must be above 0, or None for no polling")
    return mode, interval


def make_settings(
    *,
    api_url: str | None,
    api_token: str | None,
    allow_insecure_http: bool = False,
    connect_timeout: float = 5.0,
    request_timeout: float = 10.0,
    total_timeout: float = 30.0,
    max_retries: int = 3,
    backoff_initial: float = 0.25,
    backoff_max: float = 5.0,
    retry_after_cap: float = 60.0,
    retry_statuses: Iterable[int] = DEFAULT_RETRY_STATUSES,
    max_response_bytes: int = 10 * 1024 * 1024,
    max_request_bytes: int = 5 * 1024 * 1024,
    max_connections: int = 100,
    delivery: Literal["background", "inline"] | None = None,
    shutdown_timeout: float = 5.0,
    max_queue: int = 100_000,
    batching: bool = True,
    termination_poll_interval: float | None = 30.0,
    capture: bool | None = None,
) -> Settings:
    """Check the arguments, fill the gaps from the environment, and return Settings.

    Raises:
        ValueError: A missing or bad URL or token, or a bad limit.
        TypeError: A limit of the wrong type.
    """
    url_text = api_url if api_url is not None else os.environ.get(ENV_API_URL, "")
    token = api_token if api_token is not None else os.environ.get(ENV_API_TOKEN, "")
    if not isinstance(token, str):
        raise TypeError(f"api_token must be a str, not {type(token).__name__}")
    if not token.strip():
        raise ValueError("api_token is empty: pass api_token= or set PREFACTOR_API_TOKEN")
    # Any control character, not only CR and LF: aiohttp refuses them all in a header,
    # and would do so on every request instead of once, here.
    if not token.isprintable() or token != token.strip():
        raise ValueError("api_token holds whitespace or control characters")
    for name, value in (
        ("max_retries", max_retries),
        ("max_response_bytes", max_response_bytes),
        ("max_request_bytes", max_request_bytes),
        ("max_connections", max_connections),
        ("max_queue", max_queue),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be 0 or more, not {max_retries}")
    if max_response_bytes < 1024:
        raise ValueError(f"max_response_bytes must be at least 1024, not {max_response_bytes}")
    if max_request_bytes < 1024:
        raise ValueError(f"max_request_bytes must be at least 1024, not {max_request_bytes}")
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1, not {max_connections}")
    if max_queue < 1:
        raise ValueError(f"max_queue must be at least 1, not {max_queue}")
    mode, poll = _delivery(delivery, batching, capture, termination_poll_interval)
    try:
        statuses = frozenset(retry_statuses)
    except TypeError:
        raise TypeError(
            f"retry_statuses must be an iterable of ints, not {type(retry_statuses).__name__}"
        ) from None
    if not all(type(s) is int and 400 <= s <= 599 for s in statuses):
        raise ValueError("retry_statuses must hold HTTP error statuses (400-599)")
    return Settings(
        api_url=parse_api_url(url_text, allow_insecure_http=allow_insecure_http),
        api_token=Secret(token),
        connect_timeout=seconds(connect_timeout, "connect_timeout"),
        request_timeout=seconds(request_timeout, "request_timeout"),
        total_timeout=seconds(total_timeout, "total_timeout"),
        max_retries=max_retries,
        backoff_initial=seconds(backoff_initial, "backoff_initial"),
        backoff_max=seconds(backoff_max, "backoff_max"),
        retry_after_cap=seconds(retry_after_cap, "retry_after_cap"),
        retry_statuses=statuses,
        max_response_bytes=max_response_bytes,
        max_request_bytes=max_request_bytes,
        max_connections=max_connections,
        delivery=mode,  # type: ignore[arg-type]
        shutdown_timeout=seconds(shutdown_timeout, "shutdown_timeout"),
        max_queue=max_queue,
        batching=batching,
        termination_poll_interval=poll,
        capture=_env_flag(ENV_CAPTURE, True) if capture is None else capture,
    )
