"""The command line around the timeline: serve's token, database and page link, and terminate."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

import aioprefactor
from aioprefactor.__main__ import main
from aioprefactor.testing import LocalPrefactor

if TYPE_CHECKING:
    from collections.abc import Mapping

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
VERSION = {"name": "CLI bot", "external_identifier": "1"}


async def start(
    *args: str, env: Mapping[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    """Start `serve` and read its banner up to the timeline line, as `label -> value`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioprefactor",
        "serve",
        "--port",
        "0",
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    banner: dict[str, str] = {}
    while "timeline" not in banner:
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=60)).decode()
        assert line, "serve ended before printing its timeline address"
        label, _, value = line.strip().partition(": ")
        banner[label] = value
        if label.startswith("aioprefactor local API listening on "):
            banner["url"] = label.removeprefix("aioprefactor local API listening on ")
    return process, banner


async def stop(process: asyncio.subprocess.Process) -> bytes:
    """Stop `serve` with SIGINT; return its remaining output."""
    process.send_signal(signal.SIGINT)
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert 0 == process.returncode
    return stdout


async def test_serve_prints_a_signed_in_timeline_link() -> None:
    """The banner ends with the page's address, carrying the token."""
    process, banner = await start("--token", "link token/+")
    try:
        assert f"{banner['url']}/?token=link%20token%2F%2B" == banner["timeline"]
        jar = aiohttp.CookieJar(unsafe=True)
        async with (
            aiohttp.ClientSession(cookie_jar=jar) as http,
            http.get(banner["timeline"]) as response,
        ):
            assert 200 == response.status
            assert f"{banner['url']}/" == str(response.url)
    finally:
        await stop(process)


async def test_serve_takes_the_token_from_the_environment() -> None:
    """Without `--token`, `PREFACTOR_API_TOKEN` is the token (a restart keeps agents working)."""
    process, banner = await start(env={"PREFACTOR_API_TOKEN": "from-env"})
    try:
        assert "from-env" == banner["token"]
    finally:
        await stop(process)


async def test_serve_with_a_database_reports_and_keeps_its_runs(tmp_path: Path) -> None:
    """`--db` says how many runs the file holds; runs recorded before a restart are there after."""
    db = tmp_path / "runs.sqlite"
    process, banner = await start("--db", str(db), "--token", "t")
    try:
        assert f"{db} (0 runs)" == banner["database"]
        async with aioprefactor.Client(api_url=banner["url"], api_token="t") as client:
            async with client.agent_instance(agent_id="bot", agent_version=VERSION):
                pass
            await client.flush()
    finally:
        await stop(process)
    process, banner = await start("--db", str(db), "--token", "t")
    await stop(process)
    assert f"{db} (1 runs)" == banner["database"]


async def test_terminate_command_terminates_a_run(capsys: pytest.CaptureFixture[str]) -> None:
    """`terminate ID --url --token --reason` stops a live run; a second time exits 1."""
    async with LocalPrefactor() as api:
        async with aioprefactor.Client(api_url=api.url, api_token=api.token) as client:
            registered = await client.agent_instances.register(
                agent_id="bot",
                agent_version=VERSION,
                agent_schema_version={"external_identifier": "s"},
            )
        argv = ["terminate", registered.id, "--url", api.url, "--token", api.token]
        argv += ["--reason", "looping"]
        assert 0 == await asyncio.to_thread(main, argv)
        assert f"{registered.id}: terminated" == capsys.readouterr().out.strip()
        assert ("terminated", "looping") == (
            api.instance(registered.id)["status"],
            api.instance(registered.id)["termination_reason"],
        )
        assert 1 == await asyncio.to_thread(main, argv)
        assert "409" in capsys.readouterr().err
        wrong = ["terminate", registered.id, "--url", api.url, "--token", "nope"]
        assert 1 == await asyncio.to_thread(main, wrong)
        assert "401" in capsys.readouterr().err


def test_terminate_needs_a_url_and_a_token() -> None:
    """Without `--url`/`--token` (or their variables) terminate is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exited:
        main(["terminate", "some-id"])
    assert 2 == exited.value.code


async def test_quickstart_keep_leaves_the_local_api_up_until_ctrl_c() -> None:
    """`quickstart.py --keep` prints the page's address, serves it, and exits 0 on Ctrl-C."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "quickstart.py"),
        "--keep",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        address = None
        while address is None:
            line = (await asyncio.wait_for(process.stdout.readline(), timeout=120)).decode()
            assert line, "the quickstart ended before printing the timeline's address"
            match = re.search(r"See these runs on the timeline: (\S+)", line)
            address = match.group(1) if match else None
        line = ""
        while "Ctrl-C" not in line:  # the API is up once it says how to end it
            line = (await asyncio.wait_for(process.stdout.readline(), timeout=60)).decode()
            assert line, "the quickstart ended instead of keeping the local API up"
        base, _, token = address.partition("/?token=")
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{base}/_local/instances", headers={"Authorization": f"Bearer {token}"}
            ) as response,
        ):
            runs = (await response.json())["instances"]
        assert ["cancelled", "failed", "complete"] == [run["status"] for run in runs]
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert 0 == process.returncode, stderr.decode()
        assert b"Traceback" not in stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
