"""Command line: `python -m aioprefactor serve` runs the local Prefactor API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING

from aioprefactor._version import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence


async def _serve(host: str, port: int, token: str | None) -> None:
    from aioprefactor.testing import LocalPrefactor  # noqa: PLC0415 - only this command needs it

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Nobody can read the request log of a served API: keeping it would only grow memory.
    async with LocalPrefactor(host=host, port=port, token=token, record_requests=False) as api:
        signals = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
                loop.add_signal_handler(signum, stop.set)
                signals.append(signum)
        print(f"aioprefactor local API listening on {api.url}", flush=True)
        print(f"token: {api.token}", flush=True)
        print(f"export PREFACTOR_API_URL={api.url} PREFACTOR_API_TOKEN={api.token}", flush=True)
        try:
            await stop.wait()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
    print("aioprefactor local API stopped", flush=True)


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
    serve.add_argument("--token", default=None, help="bearer token to accept (default: random)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status.

    Args:
        argv: The arguments, without the program name (default: `sys.argv[1:]`).
    """
    args = _parser().parse_args(argv)
    if args.command == "serve":
        try:
            asyncio.run(_serve(args.host, args.port, args.token))
        except KeyboardInterrupt:  # Ctrl-C where signal handlers are unavailable
            pass
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
