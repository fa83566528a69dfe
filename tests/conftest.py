from __future__ import annotations

import inspect
import os
from typing import TYPE_CHECKING, Any

import aiohttp
import aioresponses.core
import pytest
from aioresponses import aioresponses as Aioresponses  # noqa: N812 - a class, named as one

from aioprefactor import _default
from aioprefactor._runs import schema as _schema
from aioprefactor._runs import scopes as _scopes

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def _fresh_globals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Start and end every test with no default client, no span types, no warning given."""
    _default.reset()
    _schema.clear_span_types()
    _scopes.forget_warnings()
    yield
    _default.reset()
    _schema.clear_span_types()


@pytest.fixture(autouse=True)
def _no_prefactor_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test without the caller's PREFACTOR_* variables.

    Tests marked ``inline`` run with inline delivery (``PREFACTOR_DELIVERY=inline``): they
    pin the awaited semantics, where ids are known inside the block.
    """
    for name in list(os.environ):
        if name.startswith("PREFACTOR_"):
            monkeypatch.delenv(name)
    if request.node.get_closest_marker("inline") is not None:
        monkeypatch.setenv("PREFACTOR_DELIVERY", "inline")


class _SentRequest:
    output_size = 0


class _CompatResponse(aiohttp.ClientResponse):
    # aiohttp 3.14 added a required `stream_writer` that aioresponses 0.7.9 does not pass
    # (pnuckowski/aioresponses#289); its mocked responses are already sent, so a stand-in
    # that reports no output is all it needs.
    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _SentRequest())
        super().__init__(method, url, **kwargs)


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aioresponses]:
    """aioresponses, working on every aiohttp the project supports."""
    if "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters:
        monkeypatch.setattr(aioresponses.core, "ClientResponse", _CompatResponse)
    with Aioresponses() as mock:
        yield mock
