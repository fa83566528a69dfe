"""The bench's local API, in its own process: a fixed latency per request, a control port.

    python bench/latency_server.py --token T [--latency SECONDS] [--record]

Starts `aioprefactor.testing.LocalPrefactor` with ``faults.latency(SECONDS)`` on every
request (none by default) and prints ``api: URL``, ``control: URL`` and ``token: T``. The
control port is never delayed and never under chaos. It answers:

- ``GET /requests``: how many API requests arrived so far, in all and by route (only with
  ``--record``: the request log costs the server time and memory, so it is off by default);
- ``GET /state``: every instance and span as the API holds them, and the faults injected;
- ``POST /chaos`` with ``{"rate", "seed", "kinds"}``: turn the fault plan's chaos on;
- ``POST /clear``: remove every fault rule (the fixed latency too) and stop chaos.

Stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections import Counter

from aiohttp import web

from aioprefactor.testing import LocalPrefactor


async def serve(token: str, latency: float, record: bool) -> None:
    async with LocalPrefactor(token=token, record_requests=record) as api:
        if latency > 0:
            api.faults.latency(latency)

        async def requests(_: web.Request) -> web.Response:
            if not record:
                raise web.HTTPConflict(text="the server was started without --record")
            routes = Counter(str(r.route) for r in api.requests)
            return web.json_response({"total": len(api.requests), "by_route": routes})

        async def state(_: web.Request) -> web.Response:
            return web.json_response(
                {
                    "instances": api.instances(),
                    "spans": api.spans(),
                    "injected": dict(api.faults.injected),
                }
            )

        async def chaos(request: web.Request) -> web.Response:
            spec = await request.json()
            api.faults.chaos(
                rate=float(spec["rate"]), seed=int(spec["seed"]), kinds=tuple(spec["kinds"])
            )
            return web.json_response({"ok": True})

        async def clear(_: web.Request) -> web.Response:
            api.faults.clear()
            return web.json_response({"ok": True})

        control = web.Application()
        control.add_routes(
            [
                web.get("/requests", requests),
                web.get("/state", state),
                web.post("/chaos", chaos),
                web.post("/clear", clear),
            ]
        )
        runner = web.AppRunner(control, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        print(f"api: {api.url}", flush=True)
        print(f"control: http://127.0.0.1:{port}", flush=True)
        print(f"token: {api.token}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token", required=True)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--record", action="store_true", help="keep the request log")
    args = parser.parse_args()
    if args.latency < 0:
        parser.error("--latency must not be negative")
    asyncio.run(serve(args.token, args.latency, args.record))


if __name__ == "__main__":
    main()
