"""`python -m aioprefactor serve`: prints where it listens, serves, and stops cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import sys
from typing import TYPE_CHECKING

import aiohttp
import pytest

from aioprefactor.__main__ import main

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

URL_LINE = re.compile(r"^aioprefactor local API listening on (http://127\.0\.0\.1:(\d+))$")


@contextlib.asynccontextmanager
async def serve(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start the serve command in a subprocess; kill it afterwards if it is still running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioprefactor",
        "serve",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def read_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
    return line.decode().rstrip("\n")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_serve_prints_url_and_token_and_stops_on_a_signal(signum: signal.Signals) -> None:
    """With `--port 0` it prints the real URL and the token, serves ping, exits 0 on a signal."""
    async with serve("--port", "0", "--token", "cli-token") as process:
        match = URL_LINE.match(await read_line(process))
        assert match is not None
        assert int(match.group(2)) > 0
        assert await read_line(process) == "token: cli-token"
        headers = {"Authorization": "Bearer cli-token"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{match.group(1)}/api/v1/ping", headers=headers) as response,
        ):
            assert response.status == 200
        process.send_signal(signum)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    assert b"stopped" in stdout
    assert b"Traceback" not in stderr


async def test_serve_makes_a_random_token_when_none_is_given() -> None:
    """Without `--token` it prints a random token, and that token is the one accepted."""
    async with serve("--port", "0") as process:
        match = URL_LINE.match(await read_line(process))
        assert match is not None
        token = (await read_line(process)).removeprefix("token: ")
        assert len(token) >= 20
        async with aiohttp.ClientSession() as http:
            for sent, expected in ((token, 200), ("guess", 401)):
                headers = {"Authorization": f"Bearer {sent}"}
                async with http.get(f"{match.group(1)}/api/v1/ping", headers=headers) as response:
                    assert response.status == expected
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), timeout=60)
    assert process.returncode == 0


def test_serve_refuses_a_host_that_is_not_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    """A non-loopback `--host` exits 1 with a message, not a traceback."""
    assert main(["serve", "--host", "192.0.2.1", "--port", "0"]) == 1
    assert "loopback" in capsys.readouterr().err


def test_serve_reports_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    """A port already taken exits 1 with a message."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["unknown"], ["serve", "--port", "eighty"]])
def test_bad_command_lines_exit_2(argv: list[str]) -> None:
    """A missing or unknown command, or a bad option, is an argparse error (exit 2)."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
