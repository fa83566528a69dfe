"""The pytest plugin: its fixtures, and that it never breaks a session that cannot use them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from pathlib import Path

    from aioprefactor import Client
    from aioprefactor.testing import LocalPrefactor

INI = """\
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""


def run_pytest(directory: Path, *args: str, pythonpath: Path | None = None) -> str:
    """Run pytest in a fresh process in `directory`; its output (it must exit 0 or 1)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PREFACTOR_"))}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    result = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in {0, 1}, result.stdout + result.stderr
    return result.stdout + result.stderr


async def test_prefactor_api_fixture_is_a_running_local_api(prefactor_api: LocalPrefactor) -> None:
    """`prefactor_api` is a running local API that accepts its token."""
    headers = {"Authorization": f"Bearer {prefactor_api.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{prefactor_api.url}/api/v1/ping", headers=headers) as response,
    ):
        assert response.status == 200


async def test_prefactor_client_fixture_is_bound_to_the_local_api(
    prefactor_client: Client, prefactor_api: LocalPrefactor
) -> None:
    """`prefactor_client` is a `Client` whose requests reach `prefactor_api`."""
    await prefactor_client.ping()
    assert [r.route for r in prefactor_api.requests] == ["ping"]
    assert prefactor_client.api_url.rstrip("/") == prefactor_api.url


def test_the_fixtures_stop_what_they_started(tmp_path: Path) -> None:
    """In a user's session the fixtures work and the API is stopped after each test."""
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import aiohttp
            import pytest

            seen = []

            async def test_first(prefactor_api, prefactor_client):
                await prefactor_client.ping()
                seen.append(prefactor_api.url)

            async def test_second():
                async with aiohttp.ClientSession() as http:
                    with pytest.raises(aiohttp.ClientConnectionError):
                        await http.get(seen[0] + "/api/v1/ping")
            """
        )
    )
    output = run_pytest(tmp_path)
    assert "2 passed" in output, output


def test_without_pytest_asyncio_only_the_fixtures_fail(tmp_path: Path) -> None:
    """Without pytest-asyncio the session runs; using a fixture fails with a clear message."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "pytest_asyncio.py").write_text("raise ImportError('not installed')\n")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "project" / "test_user.py").write_text(
        textwrap.dedent(
            """
            def test_plain():
                pass

            def test_uses_the_api(prefactor_api):
                pass
            """
        )
    )
    output = run_pytest(tmp_path / "project", "-p", "no:asyncio", pythonpath=shadow)
    assert "1 passed, 1 error" in output, output
    assert "need pytest-asyncio" in output


def test_loading_the_plugin_does_not_load_the_server() -> None:
    """Importing the plugin (done in every pytest session) does not import the local API."""
    code = (
        "import sys, aioprefactor.testing.pytest_plugin;"
        "print('aioprefactor.testing._server' in sys.modules)"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


def test_plugin_loads_without_aiohttp_or_the_client() -> None:
    """Loading the pytest plugin imports neither aiohttp nor the client (every session pays)."""
    code = (
        "import sys, pytest\n"
        "import aioprefactor.testing.pytest_plugin\n"
        "heavy = sorted(m for m in ('aiohttp', 'aioprefactor._client', 'msgspec') "
        "if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "" == done.stdout.strip()
