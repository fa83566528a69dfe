"""Our side: aioprefactor, run with the project's interpreter."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import importlib
import resource
import time
import tracemalloc
from typing import TYPE_CHECKING, Any

from _mirror import decode_instance_envelope
from _worker import (
    AGENT_ID,
    AGENT_VERSION,
    SCHEMA_VERSION,
    SPAN_PAYLOAD,
    SPAN_RESULT,
    SPANS_PER_RUN,
    WARM_RUNS,
    emit,
    measure,
    measure_decode,
    measure_runs,
    measure_runs_sync,
    not_available,
    parse_args,
    recorded,
)

import aioprefactor

if TYPE_CHECKING:
    from collections.abc import Callable

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: RSS as it is
    _LIBC = None


def _rss_bytes() -> int:
    gc.collect()
    # Give freed heap back to the system first, so RSS shows what is held, not the
    # high-water mark of the requests that were in flight meanwhile.
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
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


def _open_run(client: aioprefactor.Client) -> Any:
    return client.agent_instance(
        agent_id=AGENT_ID, agent_version=AGENT_VERSION, agent_schema_version=SCHEMA_VERSION
    )


def _check_delivered(client: aioprefactor.Client, flushed: bool) -> None:
    """Fail the figure when the client did not deliver everything it was given."""
    stats = client.stats()
    if not flushed or stats.pending or stats.dropped or stats.abandoned:
        msg = f"not all delivered (flush returned {flushed}): {stats}"
        raise RuntimeError(msg)


def _check_recorded(control: str, before: dict[str, int] | None, runs: int) -> None:
    """Fail the figure unless the server gained every run complete, with all its spans.

    ``before`` is what the server held before (the other sides of the round share it).
    """
    after = recorded(control)
    if before is None or after is None:
        return
    gained = {key: after[key] - before[key] for key in after}
    spans = runs * SPANS_PER_RUN
    expected = {"instances": runs, "complete": runs, "spans": spans, "spans complete": spans}
    if gained != expected:
        msg = f"{runs} runs with {spans} spans sent; the server gained {gained}"
        raise RuntimeError(msg)


async def run(
    url: str, token: str, control: str, n: int, gap: float, delivery: str, batching: bool
) -> dict[str, Any]:
    """Runs of 10 spans, one after another, as an agent's entrypoint records them."""
    before = recorded(control)
    client = aioprefactor.Client(api_url=url, api_token=token, delivery=delivery, batching=batching)

    async def one() -> None:
        async with _open_run(client):
            for _ in range(SPANS_PER_RUN):
                async with aioprefactor.span("agent:llm", payload=SPAN_PAYLOAD) as s:
                    s.set_result(SPAN_RESULT)

    async def settle() -> None:
        _check_delivered(client, await client.flush())
        await client.aclose()

    result = await measure_runs(
        one, n=n, gap=gap, drain=client.flush, settle=settle, control=control
    )
    _check_recorded(control, before, WARM_RUNS + n)
    return result


def sync_run(url: str, token: str, control: str, n: int, gap: float) -> dict[str, Any]:
    """The same runs in plain ``def`` code: ``with`` blocks, no event loop in this thread."""
    before = recorded(control)
    client = aioprefactor.Client(api_url=url, api_token=token)

    def one() -> None:
        with _open_run(client):
            for _ in range(SPANS_PER_RUN):
                with aioprefactor.span("agent:llm", payload=SPAN_PAYLOAD) as s:
                    s.set_result(SPAN_RESULT)

    def settle() -> None:
        _check_delivered(client, client.flush_sync())
        client.close()

    result = measure_runs_sync(
        one, n=n, gap=gap, drain=client.flush_sync, settle=settle, control=control
    )
    _check_recorded(control, before, WARM_RUNS + n)
    return result


async def scale_open(url: str, token: str, n: int, hold: str, trace: bool) -> dict[str, Any]:
    """N tasks held at once, each inside a registered and started run (or holding nothing).

    Memory is measured once every task is holding: the RSS growth since before the tasks
    were made, and with ``trace`` the growth of what ``tracemalloc`` sees (every thread).
    """
    async with _scale_client(url, token) as client:
        for _ in range(20):
            async with _open_run(client) as warm:
                await warm.wait_recorded()
        await client.flush()
        gate, all_in = asyncio.Event(), asyncio.Event()
        settled = 0
        not_recorded = 0

        def one_settled() -> None:
            nonlocal settled
            settled += 1
            if settled == n:
                all_in.set()

        async def hold_run() -> None:
            nonlocal not_recorded
            try:
                async with _open_run(client) as handle:
                    if await handle.wait_recorded() is None:
                        not_recorded += 1
                    one_settled()
                    await gate.wait()
            except BaseException:
                if not gate.is_set():  # failed to enter: count it, or the wait never ends
                    one_settled()
                raise

        async def hold_nothing() -> None:
            one_settled()
            await gate.wait()

        gc.collect()
        if trace:
            tracemalloc.start()
        baseline, traced0 = _rss_bytes(), tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        holder = hold_run if hold == "runs" else hold_nothing
        tasks = [asyncio.create_task(holder()) for _ in range(n)]
        await all_in.wait()
        t_enter = time.perf_counter() - t0
        gc.collect()
        held, traced = _rss_bytes(), tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        t1 = time.perf_counter()
        gate.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        flushed = await client.flush()
        t_exit = time.perf_counter() - t1
        _check_delivered(client, flushed)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures or not_recorded:
        first = repr(failures[0]) if failures else "wait_recorded() returned None"
        return {"error": f"{len(failures) + not_recorded} of {n} runs failed: {first}"}
    result = {
        "n": n,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_growth": held - baseline,
        "enter_s": t_enter,
        "exit_s": t_exit,
    }
    if trace:
        result["traced_growth"] = traced - traced0
    return result


async def scale_throughput(url: str, token: str, n: int, concurrency: int) -> dict[str, Any]:
    """Complete runs (an empty block) per second, until the flush after the last returned."""
    async with _scale_client(url, token) as client:

        async def op() -> None:
            async with _open_run(client):
                pass

        async def settle() -> None:
            _check_delivered(client, await client.flush())

        result = await measure(op, n, concurrency, settle)
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


FIGURES = ("lifecycle", "run", "sync_run", "decode", "scale_open", "scale_throughput")
# What each figure uses beyond the endpoint calls: a figure whose API is not there yet
# reports "not available" instead of failing.
_RUNS = ("agent_instance", "span", "Client.flush", "Client.stats")
NEEDS = {
    "run": _RUNS,
    "sync_run": (*_RUNS, "Client.flush_sync", "Client.close"),
    "scale_open": _RUNS,
    "scale_throughput": _RUNS,
}


def _has(dotted: str) -> bool:
    target: Any = aioprefactor
    for name in dotted.split("."):
        if not hasattr(target, name):
            return False
        target = getattr(target, name)
    return True


def main() -> None:
    args = parse_args(FIGURES)
    if args.figure == "decode":
        decode, label = _decoder()
        emit({**measure_decode(decode, args.seconds), "label": label})
        return
    missing = [name for name in NEEDS.get(args.figure, ()) if not _has(name)]
    if missing:
        not_available(f"not available ({', '.join(missing)})")
        return
    if args.figure == "lifecycle":
        emit(asyncio.run(lifecycle(args.url, args.token, args.n, args.concurrency)))
    elif args.figure == "run":
        batching = bool(args.batching)
        emit(
            asyncio.run(
                run(args.url, args.token, args.control, args.n, args.gap, args.delivery, batching)
            )
        )
    elif args.figure == "sync_run":
        emit(sync_run(args.url, args.token, args.control, args.n, args.gap))
    elif args.figure == "scale_open":
        trace = bool(args.trace)
        emit(asyncio.run(scale_open(args.url, args.token, args.n, args.hold, trace)))
    else:
        emit(asyncio.run(scale_throughput(args.url, args.token, args.n, args.concurrency)))


if __name__ == "__main__":
    main()
