"""The soak through prefactor-core 0.5.3: the same run shapes, one client, then drained.

prefactor-core has no instance context manager, so the run is written as a careful user
would write it with its API: start, then finish ``cancelled`` on a cancellation, ``failed``
on an exception or an explicit failure, ``complete`` otherwise. Spans use its
``instance.span()`` context manager as documented.
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
from prefactor_core import PrefactorCoreClient, PrefactorCoreConfig
from prefactor_http import HttpClientConfig


async def soak(url: str, token: str, endings: list[str], concurrency: int) -> dict[str, Any]:
    config = PrefactorCoreConfig(http_config=HttpClientConfig(api_url=url, api_token=token))
    client = PrefactorCoreClient(config)
    await client.initialize()

    async def one_run(
        i: int, ending: str, in_last_span: asyncio.Event, deadline: asyncio.Timeout
    ) -> None:
        instance = await client.create_agent_instance(
            agent_version=AGENT_VERSION,
            agent_schema_version=SCHEMA_VERSION,
            agent_id=AGENT_ID,
            external_identifier=external_id(i),
        )
        await instance.start()
        status = {"value": "complete"}
        try:
            await body(
                ending,
                in_last_span,
                deadline,
                lambda: instance.span("agent:llm", payload=SPAN_PAYLOAD),
                lambda: status.update(value="failed"),
            )
        except asyncio.CancelledError:
            await instance.finish(status="cancelled")
            raise
        except Exception:
            await instance.finish(status="failed")
            raise
        await instance.finish(status=status["value"])  # type: ignore[arg-type]

    started = time.perf_counter()
    records = await drive(endings, concurrency, one_run)
    close_error = None
    try:
        await client.close()  # drains the queue of starts and finishes
    except Exception as exc:
        close_error = repr(exc)
    return {"records": records, "seconds": time.perf_counter() - started, "close": close_error}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    result = asyncio.run(soak(args.url, args.token, plan(args.runs, args.seed), args.concurrency))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
