"""Command line: `python -m aioprefactor serve` runs the local Prefactor API.

`python -m aioprefactor terminate ID` terminates a run on a running local API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import urllib.parse
from typing import TYPE_CHECKING

import aiohttp
import yarl

from aioprefactor._version import __version__
from aioprefactor.testing._storage import StorageError

if TYPE_CHECKING:
    from collections.abc import Sequence


_LOGGED_REQUESTS = 1000  # the request log of a served API keeps about this many


async def _serve(host: str, port: int, token: str | None, db: str | None) -> None:
    from aioprefactor.testing import LocalPrefactor  # noqa: PLC0415 - only this command needs it

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    api = LocalPrefactor(
        host=host, port=port, token=token, db=db, max_logged_requests=_LOGGED_REQUESTS
    )
    async with api:
        signals = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
                loop.add_signal_handler(signum, stop.set)
                signals.append(signum)
        print(f"aioprefactor local API listening on {api.url}", flush=True)
        print(f"token: {api.token}", flush=True)
        print(f"export PREFACTOR_API_URL={api.url} PREFACTOR_API_TOKEN={api.token}", flush=True)
        if db is not None:
            print(f"database: {db} ({len(api.instances())} runs)", flush=True)
        print(f"timeline: {api.timeline_url}", flush=True)
        try:
            await stop.wait()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
    print("aioprefactor local API stopped", flush=True)


async def _terminate(url: str, token: str, instance_id: str, reason: str) -> str:
    segment = urllib.parse.quote(instance_id, safe="")
    target = yarl.URL(url.rstrip("/") + f"/_local/instances/{segment}/terminate", encoded=True)
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(target, json={"reason": reason}, headers=headers) as response,
    ):
        body = await response.json(content_type=None)
    if response.status != 200:
        message = body.get("message") if isinstance(body, dict) else None
        raise _CommandError(f"{response.status}: {message or 'the local API refused'}")
    status: str = body["details"]["status"]
    return status


class _CommandError(Exception):
    """A command failed for a reason its message explains."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aioprefactor", description="aioprefactor command line tools."
    )
    parser.add_argument("--version", action="version", version=f"aioprefactor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the local in-memory Prefactor API",
        description="Run the local in-memory Prefactor API until Ctrl-C or SIGTERM.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="loopback address (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8787, help="port, 0 for any free one (8787)")
    serve.add_argument(
        "--token",
        default=os.environ.get("PREFACTOR_API_TOKEN") or None,
        help="bearer token to accept (default: $PREFACTOR_API_TOKEN, else random)",
    )
    serve.add_argument(
        "--db",
        default=None,
        metavar="FILE",
        help="keep runs in this SQLite file across restarts (default: in memory)",
    )
    terminate = commands.add_parser(
        "terminate",
        help="terminate a run on a local API",
        description="Terminate a live agent instance on a running local API, as an operator.",
    )
    terminate.add_argument("instance_id", metavar="ID", help="the agent instance to terminate")
    terminate.add_argument(
        "--url",
        default=os.environ.get("PREFACTOR_API_URL") or None,
        help="the local API's URL (default: $PREFACTOR_API_URL)",
    )
    terminate.add_argument(
        "--token",
        default=os.environ.get("PREFACTOR_API_TOKEN") or None,
        help="its token (default: $PREFACTOR_API_TOKEN)",
    )
    terminate.add_argument(
        "--reason", default="terminated by an operator", help="why, as the run will record it"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status.

    Args:
        argv: The arguments, without the program name (default: `sys.argv[1:]`).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "terminate":
        if not args.url or not args.token:
            parser.error("terminate needs --url and --token (or PREFACTOR_API_URL/_TOKEN)")
        try:
            status = asyncio.run(_terminate(args.url, args.token, args.instance_id, args.reason))
        except (_CommandError, OSError, ValueError, aiohttp.ClientError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{args.instance_id}: {status}")
        return 0
    try:
        asyncio.run(_serve(args.host, args.port, args.token, args.db))
    except KeyboardInterrupt:  # Ctrl-C where signal handlers are unavailable
        pass
    except (OSError, ValueError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
