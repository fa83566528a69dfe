"""The local API for the soak, in its own process, with a control port beside it.

    python bench/soak_server.py --token T

Prints ``api: URL``, ``control: URL`` and ``token: T``. The control port (never under
chaos) turns the fault plan's chaos on (``POST /chaos`` with ``{"rate", "seed", "kinds"}``)
and off (``POST /clear``), and answers ``GET /state``: every instance and span as the API
holds them, and the faults injected by kind. Stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

from aioprefactor.testing import LocalPrefactor


async def serve(token: str) -> None:
    async with LocalPrefactor(token=token, record_requests=False) as api:

        async def chaos(request: web.Request) -> web.Response:
            spec = await request.json()
            api.faults.chaos(
                rate=float(spec["rate"]), seed=int(spec["seed"]), kinds=tuple(spec["kinds"])
            )
            return web.json_response({"ok": True})

        async def clear(_: web.Request) -> web.Response:
            api.faults.clear()
            return web.json_response({"ok": True})

        async def state(_: web.Request) -> web.Response:
            return web.json_response(
                {
                    "instances": api.instances(),
                    "spans": api.spans(),
                    "injected": dict(api.faults.injected),
                }
            )

        control = web.Application()
        control.add_routes(
            [web.post("/chaos", chaos), web.post("/clear", clear), web.get("/state", state)]
        )
        runner = web.AppRunner(control, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
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
    parser = argparse.ArgumentParser()
    parser.add_argument("--token", required=True)
    asyncio.run(serve(parser.parse_args().token))


if __name__ == "__main__":
    main()
