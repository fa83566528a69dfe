"""configure() takes every Client setting and checks it at once."""

from __future__ import annotations

import pytest

import aioprefactor
from aioprefactor import _default


@pytest.fixture(autouse=True)
def _forget_configuration() -> None:
    """Each test starts with no configuration."""
    _default.reset()


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_connections", 0), ("max_request_bytes", 10), ("max_response_bytes", 10)],
)
def test_configure_checks_the_limits_now(option: str, value: int) -> None:
    """ValueError naming the limit, raised by configure() itself."""
    with pytest.raises(ValueError, match=option):
        aioprefactor.configure("https://api.example.com", "t", **{option: value})  # type: ignore[arg-type]


def test_configure_reads_an_iterator_of_statuses_once() -> None:
    """The statuses of a one-shot iterator are kept for the default client."""
    aioprefactor.configure("https://api.example.com", "t", retry_statuses=iter([503]))
    assert (503,) == _default._options["retry_statuses"]


def test_configure_refuses_statuses_that_are_not_iterable() -> None:
    """TypeError naming retry_statuses."""
    with pytest.raises(TypeError, match="retry_statuses"):
        aioprefactor.configure("https://api.example.com", "t", retry_statuses=503)  # type: ignore[arg-type]
