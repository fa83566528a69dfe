"""The official side: prefactor-http 0.4.3 and prefactor-core 0.5.3, run with the python of
``bench/.venv-official``. Only their public API is used, as their documentation shows it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from _worker import (
    AGENT_ID,
    AGENT_VERSION,
    SCHEMA_VERSION,
    SPAN_PAYLOAD,
    SPAN_RESULT,
    SPANS_PER_RUN,
    emit,
    measure,
    measure_decode,
    measure_runs,
    new_key,
    parse_args,
)
from prefactor_core import PrefactorCoreClient, PrefactorCoreConfig
from prefactor_http import HttpClientConfig, PrefactorHttpClient
from prefactor_http.models.agent_instance import AgentInstance
from prefactor_http.models.base import ApiResponse


async def lifecycle(url: str, token: str, n: int, concurrency: int) -> dict[str, Any]:
    async with PrefactorHttpClient(HttpClientConfig(api_url=url, api_token=token)) as client:
        instances = client.agent_instances

        async def op() -> None:
            inst = await instances.register(
                agent_version=AGENT_VERSION,
                agent_schema_version=SCHEMA_VERSION,
                agent_id=AGENT_ID,
                idempotency_key=new_key(),
            )
            await instances.start(inst.id, idempotency_key=new_key())
            await instances.finish(inst.id, status="complete", idempotency_key=new_key())

        return await measure(op, n, concurrency)


async def run(url: str, token: str, control: str, n: int, gap: float) -> dict[str, Any]:
    """prefactor-core's normal usage: an instance handle, started and finished, and spans
    through its ``instance.span()`` context manager (each span is created, awaited, when its
    block ends; starts and finishes are queued for its workers)."""
    config = PrefactorCoreConfig(http_config=HttpClientConfig(api_url=url, api_token=token))
    client = PrefactorCoreClient(config)
    await client.initialize()

    async def drain() -> None:
        # prefactor-core has no flush; its workers empty the queue within a gap.
        await asyncio.sleep(gap)

    async def one() -> None:
        inst = await client.create_agent_instance(
            agent_version=AGENT_VERSION, agent_schema_version=SCHEMA_VERSION, agent_id=AGENT_ID
        )
        await inst.start()
        for _ in range(SPANS_PER_RUN):
            async with inst.span("agent:llm", payload=SPAN_PAYLOAD) as span:
                span.set_result(SPAN_RESULT)
        await inst.finish()

    # Its close() drains the queue: the run's CPU counts all its sending.
    return await measure_runs(one, n=n, gap=gap, drain=drain, settle=client.close, control=control)


def decode(body: bytes) -> AgentInstance:
    # What prefactor-http does with every response: text -> json.loads -> pydantic model.
    return ApiResponse[AgentInstance](**json.loads(body.decode())).details


def main() -> None:
    args = parse_args(("lifecycle", "run", "decode"))
    if args.figure == "lifecycle":
        emit(asyncio.run(lifecycle(args.url, args.token, args.n, args.concurrency)))
    elif args.figure == "run":
        emit(asyncio.run(run(args.url, args.token, args.control, args.n, args.gap)))
    else:
        emit(measure_decode(decode, args.seconds))


if __name__ == "__main__":
    main()
