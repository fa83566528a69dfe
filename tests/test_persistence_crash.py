"""`serve --db` killed with SIGKILL under load keeps every request it had answered."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

URL_LINE = re.compile(r"^aioprefactor local API listening on (http://127\.0\.0\.1:\d+)$")
TOKEN = "crash-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
VERSION = {"name": "Crash bot", "external_identifier": "1"}
WORKERS = 8
RUNS_PER_WORKER = 40  # bounds the load: at most 320 runs, 1,280 requests


@contextlib.asynccontextmanager
async def serve_db(db: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Run `serve --db` in a subprocess; yield it and its URL; kill it afterwards."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioprefactor",
        "serve",
        "--port",
        "0",
        "--token",
        TOKEN,
        "--db",
        str(db),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        match = URL_LINE.match(line.decode().strip())
        assert match is not None, line
        yield process, match.group(1)
    finally:
        if process.returncode is None:
            process.kill()
        await process.communicate()


@dataclass
class Answered:
    """What the server confirmed: each instance's last answered step, and the spans created."""

    steps: dict[str, str] = field(default_factory=dict)
    spans: dict[str, str] = field(default_factory=dict)


async def post(http: aiohttp.ClientSession, url: str, body: Mapping[str, object]) -> dict[str, str]:
    """POST and return the details of a 200 answer."""
    async with http.post(url, json=body, headers=HEADERS) as response:
        assert 200 == response.status, await response.text()
        details: dict[str, str] = (await response.json())["details"]
    return details


async def worker(base: str, answered: Answered, enough: asyncio.Event) -> None:
    """Record runs step by step, noting each answer, until the server dies."""
    api = f"{base}/api/v1"
    schema = {"external_identifier": "s1"}
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            for _ in range(RUNS_PER_WORKER):
                body = {"agent_version": VERSION, "agent_schema_version": schema}
                run = await post(http, f"{api}/agent_instance/register", body)
                answered.steps[run["id"]] = "pending"
                await post(http, f"{api}/agent_instance/{run['id']}/start", {})
                answered.steps[run["id"]] = "active"
                details = {"agent_instance_id": run["id"], "schema_name": "a:b", "status": "active"}
                created = await post(http, f"{api}/agent_spans", {"details": details})
                answered.spans[created["id"]] = run["id"]
                await post(http, f"{api}/agent_instance/{run['id']}/finish", {})
                answered.steps[run["id"]] = "complete"
                if len(answered.steps) >= 60:
                    enough.set()


async def test_sigkill_under_load_loses_only_requests_in_flight(tmp_path: Path) -> None:
    """After a SIGKILL mid-load and a restart, every answered request's effect is there."""
    db = tmp_path / "runs.sqlite"
    answered = Answered()
    enough = asyncio.Event()
    async with serve_db(db) as (process, url):
        workers = [asyncio.create_task(worker(url, answered, enough)) for _ in range(WORKERS)]
        await asyncio.wait_for(enough.wait(), timeout=120)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        await asyncio.wait_for(asyncio.gather(*workers), timeout=60)
    assert -signal.SIGKILL == process.returncode
    assert len(answered.steps) >= 60

    allowed = {"pending": {"pending", "active", "complete"}, "active": {"active", "complete"}}
    async with serve_db(db) as (_, url), aiohttp.ClientSession() as http:
        for instance_id, step in answered.steps.items():
            address = f"{url}/api/v1/agent_instance/{instance_id}"
            async with http.get(address, headers=HEADERS) as response:
                assert 200 == response.status
                status = (await response.json())["details"]["status"]
            assert status in allowed.get(step, {step}), (instance_id, step, status)
        address = f"{url}/_local/instances?limit=1000"
        async with http.get(address, headers=HEADERS) as response:
            saved = {i["id"]: i for i in (await response.json())["instances"]}
        for span_id, instance_id in answered.spans.items():
            async with http.get(f"{url}/_local/instances/{instance_id}", headers=HEADERS) as r:
                assert span_id in {s["id"] for s in (await r.json())["spans"]}
        assert set(answered.steps) <= set(saved)
