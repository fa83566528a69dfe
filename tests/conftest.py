from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sys
import textwrap
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any, TypeAlias

import aiohttp
import aioresponses.core
import pytest
import pytest_asyncio
from aioresponses import aioresponses as Aioresponses  # noqa: N812 - a class, named as one

from aioprefactor import _default
from aioprefactor._runs import schema as _schema
from aioprefactor._runs import spans as _spans

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    from aioprefactor.testing import LocalPrefactor


@pytest.fixture(autouse=True)
def _fresh_globals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Start and end every test with no default client, no span types, no warning given."""
    _default.reset()
    _schema.clear_span_types()
    _spans.forget_warnings()
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


# Span trees and child processes, for the sync, thread, signal and fork tests.

if TYPE_CHECKING:
    SpanTree: TypeAlias = Callable[[str | None], Counter[tuple[str, str, str | None]]]


@pytest.fixture
def span_tree(prefactor_api: LocalPrefactor) -> SpanTree:
    """Count an instance's spans by (name, status, parent's name), in any delivery order."""

    def count(instance_id: str | None) -> Counter[tuple[str, str, str | None]]:
        assert instance_id is not None
        spans = prefactor_api.spans(instance_id)
        names = {one["id"]: one["schema_name"] for one in spans}
        return Counter(
            (one["schema_name"], one["status"], names.get(one["parent_span_id"])) for one in spans
        )

    return count


class Child:
    """A Python script running in a child process, its output read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self.stderr = ""

    @property
    def returncode(self) -> int | None:
        """The exit code (minus the signal number if a signal killed it), or `None`."""
        return self.process.returncode

    async def wait_for_line(self, expected: str) -> None:
        """Read the output until a line equals `expected`."""
        stdout = self.process.stdout
        assert stdout is not None
        async with asyncio.timeout(60):
            while expected not in self.lines:
                line = await stdout.readline()
                if not line:
                    await self.wait()
                    pytest.fail(f"the script ended before printing {expected!r}: {self.stderr}")
                self.lines.append(line.decode().rstrip("\n"))

    async def signal(self, *signals: int) -> None:
        """Send the signals in turn, each after the script prints the next `ready N`."""
        for index, signum in enumerate(signals):
            if index:
                await self.wait_for_line(f"ready {index}")
            self.process.send_signal(signum)

    async def wait(self) -> int:
        """Wait for the end; keep the rest of the output; return the exit code."""
        async with asyncio.timeout(60):
            stdout, stderr = await self.process.communicate()
        self.lines.extend(stdout.decode().splitlines())
        self.stderr = stderr.decode()
        assert self.process.returncode is not None
        return self.process.returncode

    async def stop(self) -> None:
        """Kill the process if it still runs (a failed test must not leave it behind)."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


class Scripts:
    """Runs Python scripts, written into a directory, in child processes.

    A script given `api` talks to it as the default client (`PREFACTOR_API_URL` and
    `PREFACTOR_API_TOKEN`); every script runs with warnings as errors.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Child] = []

    async def start(
        self, source: str, api: LocalPrefactor | None = None, *, ready: bool = True
    ) -> Child:
        """Start a script; with `ready`, wait until it prints `ready`."""
        path = self.directory / f"script{len(self.started)}.py"
        path.write_text(textwrap.dedent(source))
        env = dict(os.environ)
        if api is not None:
            env.update(PREFACTOR_API_URL=api.url, PREFACTOR_API_TOKEN=api.token)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-W",
            "error",
            str(path),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        child = Child(process)
        self.started.append(child)
        if ready:
            await child.wait_for_line("ready")
        return child

    async def run(self, source: str, api: LocalPrefactor | None = None) -> Child:
        """Run a script to its end."""
        child = await self.start(source, api, ready=False)
        await child.wait()
        return child


@pytest_asyncio.fixture
async def scripts(tmp_path: Path) -> AsyncIterator[Scripts]:
    """Run scripts in child processes; any still running afterwards are killed."""
    runner = Scripts(tmp_path)
    yield runner
    for child in runner.started:
        await child.stop()


@pytest.fixture
def prefactor_api_in_thread() -> Iterator[tuple[str, str, LocalPrefactor]]:
    """A local API on a loop of its own thread, for tests that run subprocesses."""
    from aioprefactor.testing import LocalPrefactor  # noqa: PLC0415 - loaded when used

    loop = asyncio.new_event_loop()
    api = LocalPrefactor()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(api.start(), loop).result(10)
    try:
        yield api.url, api.token, api
    finally:
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
