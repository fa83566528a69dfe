"""The soak through aioprefactor: one client, the run shapes of ``_soak_plan``.

The client delivers as ``--delivery`` says (``background``, the default, or ``inline``) and
is flushed before it closes, so the server's state is read once all was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from _soak_plan import body, drive, external_id, plan
from _worker import AGENT_ID, AGENT_VERSION, SCHEMA_VERSION, SPAN_PAYLOAD

import aioprefactor

# What the soak reports of the client's own delivery counts, after the flush.
STATS = ("pending", "sent_requests", "delivered", "retried", "dropped", "abandoned")


async def soak(
    url: str, token: str, delivery: str, endings: list[str], concurrency: int
) -> dict[str, Any]:
    client = aioprefactor.Client(api_url=url, api_token=token, delivery=delivery)
    await client.__aenter__()

    async def one_run(
        i: int, ending: str, in_last_span: asyncio.Event, deadline: asyncio.Timeout
    ) -> None:
        async with client.agent_instance(
            agent_id=AGENT_ID,
            agent_version=AGENT_VERSION,
            agent_schema_version=SCHEMA_VERSION,
            external_identifier=external_id(i),
        ) as run:
            await body(
                ending,
                in_last_span,
                deadline,
                lambda: aioprefactor.span("agent:llm", payload=SPAN_PAYLOAD),
                run.fail,
            )

    started = time.perf_counter()
    records = await drive(endings, concurrency, one_run)
    close_error = None
    delivered: bool | None = None
    stats: dict[str, int] | None = None
    try:
        delivered = await client.flush()
        snapshot = client.stats()
        stats = {name: getattr(snapshot, name) for name in STATS}
        await client.aclose()
    except Exception as exc:
        close_error = repr(exc)
    return {
        "records": records,
        "seconds": time.perf_counter() - started,
        "close": close_error,
        "delivered": delivered,
        "stats": stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--delivery", choices=("background", "inline"), default="background")
    args = parser.parse_args()
    endings = plan(args.runs, args.seed)
    result = asyncio.run(soak(args.url, args.token, args.delivery, endings, args.concurrency))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
