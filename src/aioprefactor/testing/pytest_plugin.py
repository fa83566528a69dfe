"""pytest fixtures for testing code against the local Prefactor API.

Loaded automatically (a `pytest11` entry point) in every pytest session where aioprefactor is
installed, so it imports nothing heavy at load time and never breaks a session: without
pytest-asyncio the fixtures exist but fail with a clear message when used.

- `prefactor_api`: a running `aioprefactor.testing.LocalPrefactor`, stopped afterwards.
- `prefactor_client`: an `aioprefactor.Client` bound to `prefactor_api`, closed afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aioprefactor import Client
    from aioprefactor.testing import LocalPrefactor

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised in a subprocess
    _HAVE_PYTEST_ASYNCIO = False
else:
    _HAVE_PYTEST_ASYNCIO = True

_NO_ASYNCIO = (
    "the aioprefactor fixtures `prefactor_api` and `prefactor_client` need pytest-asyncio: "
    "pip install pytest-asyncio (or aioprefactor[test])"
)

if _HAVE_PYTEST_ASYNCIO:

    @pytest_asyncio.fixture
    async def prefactor_api() -> AsyncIterator[LocalPrefactor]:
        """A running local Prefactor API on loopback, stopped after the test."""
        from aioprefactor.testing import LocalPrefactor  # noqa: PLC0415

        async with LocalPrefactor() as api:
            yield api

    @pytest_asyncio.fixture
    async def prefactor_client(prefactor_api: LocalPrefactor) -> AsyncIterator[Client]:
        """An `aioprefactor.Client` bound to `prefactor_api`, closed after the test."""
        from aioprefactor import Client  # noqa: PLC0415

        async with Client(api_url=prefactor_api.url, api_token=prefactor_api.token) as client:
            yield client

else:  # pragma: no cover - exercised in a subprocess

    @pytest.fixture
    def prefactor_api() -> Any:
        """Unavailable: pytest-asyncio is not installed."""
        pytest.fail(_NO_ASYNCIO, pytrace=False)

    @pytest.fixture
    def prefactor_client() -> Any:
        """Unavailable: pytest-asyncio is not installed."""
        pytest.fail(_NO_ASYNCIO, pytrace=False)
