from __future__ import annotations

from typing import Any

import pytest

from aioprefactor import Client
from aioprefactor._wire.config import Secret, make_settings, parse_api_url

TOKEN = "tok-3f9a1c0e5b7d"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://app.prefactorai.com", "https://app.prefactorai.com"),
        ("https://app.prefactorai.com/", "https://app.prefactorai.com"),
        ("https://example.com/base/path", "https://example.com/base/path"),
        ("https://example.com/base/path/", "https://example.com/base/path"),
        ("https://example.com/a%2Fb/", "https://example.com/a%2Fb"),
        ("https://example.com/a%20b", "https://example.com/a%20b"),
        ("  https://example.com:8443/x  ", "https://example.com:8443/x"),
        ("http://127.0.0.1:8787", "http://127.0.0.1:8787"),
        ("http://127.5.6.7", "http://127.5.6.7"),
        ("http://[::1]:8787", "http://[::1]:8787"),
        ("http://localhost:8787/", "http://localhost:8787"),
        ("http://LOCALHOST", "http://localhost"),
    ],
)
def test_api_url_accepted(raw: str, expected: str) -> None:
    """An https URL anywhere, or http to loopback, is kept with its base path, less a slash."""
    assert expected == str(parse_api_url(raw, allow_insecure_http=False))


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("example.com", "absolute"),
        ("/api", "absolute"),
        ("ftp://example.com", "absolute"),
        ("https://", "absolute"),
        ("http://example.com", "plain http"),
        ("http://10.0.0.1", "plain http"),
        ("http://128.0.0.1", "plain http"),
        ("http://localhost.example.com", "plain http"),
        ("https://example.com/?a=1", "query"),
        ("https://example.com/#top", "fragment"),
        ("https://user:pw@example.com", "credentials"),
        ("https://user@example.com", "credentials"),
    ],
)
def test_api_url_refused(raw: str, fragment: str) -> None:
    """A URL that is not absolute https (or http to loopback) or that carries extras is refused."""
    with pytest.raises(ValueError, match=fragment):
        parse_api_url(raw, allow_insecure_http=False)


@pytest.mark.parametrize("raw", ["http://example.com", "http://10.0.0.1:8080/base"])
def test_api_url_insecure_http_allowed_on_request(raw: str) -> None:
    """Plain http to another host is accepted when allow_insecure_http=True."""
    assert raw == str(parse_api_url(raw, allow_insecure_http=True))


def test_api_url_credentials_message_holds_no_password() -> None:
    """The error for a URL with credentials does not repeat the password."""
    with pytest.raises(ValueError, match="credentials") as info:
        parse_api_url("https://user:hunter2secret@example.com", allow_insecure_http=False)
    assert "hunter2secret" not in str(info.value)


@pytest.mark.parametrize(
    "token",
    ["", " ", "\t\n", "tok\n", " tok", "tok ", "to\rk", "to\0k", "to\tk", "to\x01k", "to\x7fk"],
)
def test_bad_token_refused(token: str) -> None:
    """An empty token, or one with whitespace or control characters, is a ValueError."""
    with pytest.raises(ValueError, match="api_token"):
        Client(api_url="https://example.com", api_token=token)


def test_token_of_wrong_type_refused() -> None:
    """A token that is not a str is a TypeError."""
    with pytest.raises(TypeError, match="api_token"):
        Client(api_url="https://example.com", api_token=b"tok")  # type: ignore[arg-type]


def test_url_and_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """PREFACTOR_API_URL and PREFACTOR_API_TOKEN fill in what the caller leaves out."""
    monkeypatch.setenv("PREFACTOR_API_URL", "https://env.example.com/base/")
    monkeypatch.setenv("PREFACTOR_API_TOKEN", TOKEN)
    settings = make_settings(api_url=None, api_token=None)
    assert str(settings.api_url) == "https://env.example.com/base"
    assert settings.api_token.reveal() == TOKEN


def test_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Explicit arguments take precedence over the environment."""
    monkeypatch.setenv("PREFACTOR_API_URL", "https://env.example.com")
    monkeypatch.setenv("PREFACTOR_API_TOKEN", "env-token")
    settings = make_settings(api_url="https://arg.example.com", api_token=TOKEN)
    assert str(settings.api_url) == "https://arg.example.com"
    assert settings.api_token.reveal() == TOKEN


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"PREFACTOR_API_TOKEN": TOKEN}, "PREFACTOR_API_URL"),
        ({"PREFACTOR_API_URL": "https://example.com"}, "PREFACTOR_API_TOKEN"),
    ],
)
def test_missing_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fragment: str
) -> None:
    """With neither argument nor variable, the error names the variable to set."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=fragment):
        Client()


def test_insecure_env_url_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain-http URL from the environment gets the same check as an argument."""
    monkeypatch.setenv("PREFACTOR_API_URL", "http://example.com")
    with pytest.raises(ValueError, match="plain http"):
        Client(api_token=TOKEN)


@pytest.mark.parametrize(
    "name",
    [
        "connect_timeout",
        "request_timeout",
        "total_timeout",
        "backoff_initial",
        "backoff_max",
        "retry_after_cap",
    ],
)
@pytest.mark.parametrize("value", [0, -1, 0.0, float("nan"), float("inf"), -0.5])
def test_bad_duration_refused(name: str, value: float) -> None:
    """A duration that is not a positive finite number is a ValueError."""
    kwargs: dict[str, Any] = {name: value}
    with pytest.raises(ValueError, match=name):
        Client(api_url="https://example.com", api_token=TOKEN, **kwargs)


@pytest.mark.parametrize(
    "name",
    [
        "connect_timeout",
        "request_timeout",
        "total_timeout",
        "backoff_initial",
        "backoff_max",
        "retry_after_cap",
        "max_retries",
        "max_response_bytes",
        "max_connections",
    ],
)
@pytest.mark.parametrize("value", ["1", True, None, [1]])
def test_limit_of_wrong_type_refused(name: str, value: object) -> None:
    """A limit of the wrong type (a bool included) is a TypeError."""
    kwargs: dict[str, Any] = {name: value}
    with pytest.raises(TypeError, match=name):
        Client(api_url="https://example.com", api_token=TOKEN, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_response_bytes": 1023}, "max_response_bytes"),
        ({"max_connections": 0}, "max_connections"),
        ({"retry_statuses": {200}}, "retry_statuses"),
        ({"retry_statuses": {600}}, "retry_statuses"),
        ({"retry_statuses": {"503"}}, "retry_statuses"),
        ({"retry_statuses": {503.0}}, "retry_statuses"),
    ],
)
def test_bad_limit_refused(kwargs: dict[str, Any], fragment: str) -> None:
    """A limit out of range is a ValueError naming it."""
    with pytest.raises(ValueError, match=fragment):
        Client(api_url="https://example.com", api_token=TOKEN, **kwargs)


def test_settings_keep_the_configured_values() -> None:
    """The settings hold what the caller passed, durations as floats."""
    settings = make_settings(
        api_url="https://example.com",
        api_token=TOKEN,
        connect_timeout=1,
        request_timeout=2,
        total_timeout=3,
        max_retries=0,
        retry_statuses=[503],
    )
    assert (
        settings.connect_timeout,
        settings.request_timeout,
        settings.total_timeout,
        settings.max_retries,
    ) == (1.0, 2.0, 3.0, 0)
    assert frozenset({503}) == settings.retry_statuses


def test_token_hidden_from_repr_and_str() -> None:
    """The token appears in no repr or str of the settings, the secret or the client."""
    settings = make_settings(api_url="https://example.com", api_token=TOKEN)
    client = Client(api_url="https://example.com", api_token=TOKEN)
    for text in (
        repr(settings),
        str(settings),
        repr(settings.api_token),
        str(settings.api_token),
        f"{settings.api_token}",
        repr(client),
        str(client),
    ):
        assert TOKEN not in text


def test_secret_compares_by_value() -> None:
    """Two secrets with the same value are equal; the value is revealed only on request."""
    assert Secret(TOKEN) == Secret(TOKEN)
    assert Secret(TOKEN) != Secret("other")
    assert Secret(TOKEN).reveal() == TOKEN
