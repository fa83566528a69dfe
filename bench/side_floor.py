"""The floor: bare aiohttp + msgspec, one session, the same three POSTs, nothing else.

Same JSON bodies and headers (set once, on the session) as our client sends; responses
decoded into a msgspec mirror of the instance. Whatever a client costs above this is the
client's own overhead.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgspec
from _mirror import decode_instance_envelope
from _worker import AGENT_ID, AGENT_VERSION, SCHEMA_VERSION, emit, measure, new_key, parse_args
from yarl import URL

_encode = msgspec.json.encode


async def lifecycle(url: str, token: str, n: int, concurrency: int) -> dict[str, Any]:
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "X-Prefactor-SDK": "aioprefactor@0",
    }
    base = url.rstrip("/") + "/api/v1/agent_instance"
    register_url = URL(base + "/register", encoded=True)

    async with aiohttp.ClientSession(headers=headers) as session:

        async def post(target: URL, body: dict[str, Any]) -> Any:
            async with session.post(target, data=_encode(body)) as resp:
                data = await resp.read()
                if resp.status >= 400:
                    raise RuntimeError(f"{resp.status}: {data[:200]!r}")
                return decode_instance_envelope(data).details

        async def op() -> None:
            inst = await post(
                register_url,
                {
                    "agent_id": AGENT_ID,
                    "agent_version": AGENT_VERSION,
                    "agent_schema_version": SCHEMA_VERSION,
                    "update_current_version": True,
                    "idempotency_key": new_key(),
                },
            )
            await post(URL(f"{base}/{inst.id}/start", encoded=True), {"idempotency_key": new_key()})
            await post(
                URL(f"{base}/{inst.id}/finish", encoded=True),
                {"status": "complete", "idempotency_key": new_key()},
            )

        return await measure(op, n, concurrency)


def main() -> None:
    args = parse_args(("lifecycle",))
    emit(asyncio.run(lifecycle(args.url, args.token, args.n, args.concurrency)))


if __name__ == "__main__":
    main()
