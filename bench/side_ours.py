"""Our side: aioprefactor, run with the project's interpreter."""

from __future__ import annotations

import asyncio
import gc
import importlib
import resource
import time
from typing import TYPE_CHECKING, Any

from _mirror import decode_instance_envelope
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
    not_available,
    parse_args,
)

import aioprefactor

if TYPE_CHECKING:
    from collections.abc import Callable


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


async def lifecycle(url: str, token: str, n: int, concurrency: int) -> dict[str, Any]:
    async with aioprefactor.Client(api_url=url, api_token=token) as client:
        instances = client.agent_instances

        async def op() -> None:
            inst = await instances.register(AGENT_ID, AGENT_VERSION, SCHEMA_VERSION)
            await instances.start(inst.id)
            await instances.finish(inst.id, status="complete")

        return await measure(op, n, concurrency)


# Strict, so a run that is not recorded fails the figure instead of passing unseen; with
# budgets wide enough that thousands of runs queued behind one connection pool still enter.
_BUDGETS = {"enter_timeout": 600.0, "finish_timeout": 600.0}


# aiohttp's connect timeout (ClientTimeout.connect) counts the wait for a pooled
# connection: with thousands of runs queued on 100 connections, the default 5 s expires
# before the request is sent.
def _scale_client(url: str, token: str) -> aioprefactor.Client:
    return aioprefactor.Client(
        api_url=url,
        api_token=token,
        connect_timeout=300.0,
        request_timeout=300.0,
        total_timeout=900.0,
    )


def _open_run(client: Any, **budgets: float) -> Any:
    return client.agent_instance(
        agent_id=AGENT_ID,
        agent_version=AGENT_VERSION,
        agent_schema_version=SCHEMA_VERSION,
        **budgets,
    )


async def run(url: str, token: str, n: int) -> dict[str, Any]:
    client = aioprefactor.Client(api_url=url, api_token=token)
    await client.__aenter__()

    async def one() -> None:
        # The default, fail-open mode, as users run it; a run not recorded fails the bench.
        async with _open_run(client) as handle:
            for _ in range(SPANS_PER_RUN):
                async with aioprefactor.span("agent:llm", payload=SPAN_PAYLOAD) as s:
                    s.set_result(SPAN_RESULT)
        if handle.telemetry_error is not None:
            raise RuntimeError(f"run not recorded: {handle.telemetry_error}")

    return await measure_runs(one, n, client.aclose)


async def scale_open(url: str, token: str, n: int) -> dict[str, Any]:
    """N runs entered at once and held open, then all exited."""
    async with _scale_client(url, token) as client:
        for _ in range(20):
            async with _open_run(client):
                pass
        gc.collect()
        baseline = _rss_bytes()
        gate, all_in = asyncio.Event(), asyncio.Event()
        settled = 0

        def one_settled() -> None:
            nonlocal settled
            settled += 1
            if settled == n:
                all_in.set()

        async def hold() -> None:
            try:
                async with _open_run(client, **_BUDGETS):
                    one_settled()
                    await gate.wait()
            except BaseException:
                if not gate.is_set():  # failed to enter: count it, or the wait never ends
                    one_settled()
                raise

        t0 = time.perf_counter()
        tasks = [asyncio.create_task(hold()) for _ in range(n)]
        await all_in.wait()
        t_enter = time.perf_counter() - t0
        gc.collect()
        open_rss = _rss_bytes()
        t1 = time.perf_counter()
        gate.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        t_exit = time.perf_counter() - t1
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        return {"error": f"{len(failures)} of {n} runs failed: {failures[0]!r}"}
    return {
        "n": n,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bytes_per_run": (open_rss - baseline) / n,
        "enter_s": t_enter,
        "exit_s": t_exit,
    }


async def scale_throughput(url: str, token: str, n: int, concurrency: int) -> dict[str, Any]:
    """Complete runs (register, start, finish around an empty block) per second."""
    async with _scale_client(url, token) as client:

        async def op() -> None:
            async with _open_run(client, **_BUDGETS):
                pass

        result = await measure(op, n, concurrency)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _decoder() -> tuple[Callable[[bytes], Any], str]:
    """Our real decode function when ``aioprefactor._wire.codec`` has one, else a mirror."""
    try:
        codec = importlib.import_module("aioprefactor._wire.codec")
    except ImportError:
        return decode_instance_envelope, "msgspec mirror (aioprefactor._wire.codec not available)"
    decode = codec.INSTANCE_DECODER.decode

    def ours(body: bytes) -> Any:
        # The path every instance success body takes in the transport (the codec's
        # decode() is called only to explain a body that fails to decode).
        return decode(body).details

    return ours, "INSTANCE_DECODER.decode(body).details, as the transport decodes success bodies"


def main() -> None:
    args = parse_args(("lifecycle", "run", "decode", "scale_open", "scale_throughput"))
    if args.figure == "decode":
        decode, label = _decoder()
        emit({**measure_decode(decode, args.seconds), "label": label})
        return
    needed = ("Client",) if args.figure == "lifecycle" else ("Client", "span", "agent_instance")
    missing = [name for name in needed if not hasattr(aioprefactor, name)]
    if missing:
        not_available(f"not available ({', '.join(missing)})")
        return
    if args.figure == "lifecycle":
        emit(asyncio.run(lifecycle(args.url, args.token, args.n, args.concurrency)))
    elif args.figure == "run":
        emit(asyncio.run(run(args.url, args.token, args.n)))
    elif args.figure == "scale_open":
        emit(asyncio.run(scale_open(args.url, args.token, args.n)))
    else:
        emit(asyncio.run(scale_throughput(args.url, args.token, args.n, args.concurrency)))


if __name__ == "__main__":
    main()
