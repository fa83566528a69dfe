"""What every side's worker shares: arguments, the request bodies, the timing loops, the output.

Standard library only: the official side imports this module too, from its own virtual
environment, which holds neither aioprefactor nor msgspec.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import os
import statistics
import sys
import time
import urllib.request
import uuid
from resource import RUSAGE_SELF, getrusage
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

AGENT_ID = "bench-agent"
AGENT_VERSION: dict[str, Any] = {
    "name": "Bench agent",
    "external_identifier": "1.0.0",
    "runtime_environment": {
        "os": "linux",
        "runtime": "cpython@3.11",
        "prefactor_sdk": ["bench@0"],
        "agent_sdk": [],
    },
}
SCHEMA_VERSION: dict[str, Any] = {
    "external_identifier": "bench-schema-1",
    "span_type_schemas": [
        {"name": "agent:llm", "params_schema": {"type": "object"}},
    ],
}
SPAN_PAYLOAD: dict[str, Any] = {"model": "m", "prompt": "p"}
SPAN_RESULT: dict[str, Any] = {"text": "t"}
SPANS_PER_RUN = 10

# A success envelope as the API returns it for an instance: every field of the contract,
# a few unknown ones (the API grows), the size of a real response.
SAMPLE_INSTANCE = json.dumps(
    {
        "status": "success",
        "details": {
            "type": "agent_instance",
            "id": "01JD7XK2M4Q8W3E5R7T9Y1U3I5",
            "account_id": "acc_01JD7XK2M4Q8W3E5R7T9Y1U3I6",
            "agent_id": "agt_01JD7XK2M4Q8W3E5R7T9Y1U3I7",
            "agent_version_id": "agv_01JD7XK2M4Q8W3E5R7T9Y1U3I8",
            "environment_id": "env_01JD7XK2M4Q8W3E5R7T9Y1U3I9",
            "agent_deployment_id": "dep_01JD7XK2M4Q8W3E5R7T9Y1U3J0",
            "status": "complete",
            "inserted_at": "2025-01-15T10:21:33.123456Z",
            "updated_at": "2025-01-15T10:21:35.654321Z",
            "started_at": "2025-01-15T10:21:33.200000Z",
            "finished_at": "2025-01-15T10:21:35.654321Z",
            "termination_reason": None,
            "external_identifier": "run-42",
            "span_counts": {
                "total": 10,
                "active": 0,
                "complete": 9,
                "failed": 1,
                "cancelled": 0,
                "finished": 10,
            },
            "purpose": "live",
            "quality_payloads": None,
            "region": "eu-west-1",
        },
    }
).encode()


@contextlib.contextmanager
def _profiled() -> Iterator[None]:
    """Profile the measured pass into the file ``BENCH_PROFILE`` names, if it names one."""
    path = os.environ.get("BENCH_PROFILE")
    if not path:
        yield
        return
    profiler = cProfile.Profile(time.process_time)  # CPU, not wall: idle waits cost nothing
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(path)


def new_key() -> str:
    """An idempotency key, generated per call as both clients do."""
    return uuid.uuid4().hex


def parse_args(figures: tuple[str, ...]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("figure", choices=figures)
    parser.add_argument("--url", default="")
    parser.add_argument("--token", default="")
    parser.add_argument("--control", default="", help="the local API's control port")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--gap", type=float, default=0.0, help="seconds between runs")
    # Ours only: the client's delivery options, and what the scale figure holds open.
    parser.add_argument("--delivery", choices=("background", "inline"), default="background")
    parser.add_argument("--batching", type=int, choices=(0, 1), default=1)
    parser.add_argument("--hold", choices=("runs", "nothing"), default="runs")
    parser.add_argument("--trace", type=int, choices=(0, 1), default=0)
    return parser.parse_args()


def _control_get(control: str, path: str) -> Any:
    with urllib.request.urlopen(control + path, timeout=120) as response:  # noqa: S310
        return json.loads(response.read())


def recorded(control: str) -> dict[str, int] | None:
    """How many instances and spans the local API holds, and how many are complete."""
    if not control:
        return None
    state = _control_get(control, "/state")
    return {
        "instances": len(state["instances"]),
        "complete": sum(i["status"] == "complete" for i in state["instances"]),
        "spans": len(state["spans"]),
        "spans complete": sum(s["status"] == "complete" for s in state["spans"]),
    }


def api_requests(control: str) -> int | None:
    """How many API requests the local API has received (None without a control port)."""
    if not control:
        return None
    total: int = _control_get(control, "/requests")["total"]
    return total


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line the harness reads."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def not_available(reason: str) -> None:
    emit({"na": reason})


async def measure(
    op: Callable[[], Awaitable[Any]],
    n: int,
    concurrency: int,
    settle: Callable[[], Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """Run ``op`` n times over ``concurrency`` lanes; client CPU and wall per operation.

    A warm-up pass at the same concurrency first opens the connections and fills caches,
    so the measured pass pays only the steady-state cost. ``settle`` (a flush, for a client
    that sends in the background) runs after each pass, inside the measured time.
    """
    await _lanes(op, min(max(2 * concurrency, 20), 500), concurrency, None)
    if settle is not None:
        await settle()
    latencies: list[float] = []
    gc.collect()
    with _profiled():
        cpu0, wall0, ru0 = time.process_time(), time.perf_counter(), getrusage(RUSAGE_SELF)
        await _lanes(op, n, concurrency, latencies)
        if settle is not None:
            await settle()
        cpu, wall, ru = (
            time.process_time() - cpu0,
            time.perf_counter() - wall0,
            getrusage(RUSAGE_SELF),
        )
    return {
        "n": n,
        "concurrency": concurrency,
        "cpu_us": cpu / n * 1e6,
        # The split: user time is the client's Python and C code; system time is mostly
        # the kernel's loopback TCP work, the same for every side.
        "user_us": (ru.ru_utime - ru0.ru_utime) / n * 1e6,
        "sys_us": (ru.ru_stime - ru0.ru_stime) / n * 1e6,
        "latency_ms": statistics.median(latencies) * 1e3,
        "ops_s": n / wall,
    }


async def _lanes(
    op: Callable[[], Awaitable[Any]], n: int, concurrency: int, latencies: list[float] | None
) -> None:
    remaining = n

    async def lane() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            await op()
            if latencies is not None:
                latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(lane() for _ in range(min(concurrency, n))))


def measure_decode(decode: Callable[[bytes], Any], seconds: float) -> dict[str, Any]:
    """Decode the sample response in batches for ``seconds`` of CPU; responses per second."""
    body = SAMPLE_INSTANCE
    batch = range(1000)
    for _ in batch:
        decode(body)
    gc.collect()
    n, cpu = 0, 0.0
    cpu0 = time.process_time()
    while cpu < seconds:
        for _ in batch:
            decode(body)
        n += len(batch)
        cpu = time.process_time() - cpu0
    return {"n": n, "per_s": n / cpu, "us": cpu / n * 1e6}


WARM_RUNS = 3


async def bare_block() -> None:
    """The run's block without telemetry: what ``block_ms`` is measured against."""
    async with contextlib.nullcontext():
        for _ in range(SPANS_PER_RUN):
            async with contextlib.nullcontext():
                pass


def bare_block_sync() -> None:
    """The sync run's block without telemetry."""
    with contextlib.nullcontext():
        for _ in range(SPANS_PER_RUN):
            with contextlib.nullcontext():
                pass


async def measure_runs(
    one: Callable[[], Awaitable[Any]],
    *,
    n: int,
    gap: float,
    drain: Callable[[], Awaitable[Any]],
    settle: Callable[[], Awaitable[Any]],
    control: str,
) -> dict[str, Any]:
    """Run ``one`` (a run with its spans) n times, ``gap`` seconds apart.

    Measured: the wall time each block takes, and the same for the block without
    telemetry; the API requests the runs cost, counted by the local API; the process's
    CPU (every thread) from the first run until ``settle`` (a flush and close) returned,
    so whatever is sent in the background is counted. ``drain`` ends the warm-up runs'
    sending before the count starts.
    """
    for _ in range(WARM_RUNS):
        await one()
        await asyncio.sleep(gap)
    await drain()
    bare: list[float] = []
    for _ in range(max(n, 100)):
        start = time.perf_counter()
        await bare_block()
        bare.append(time.perf_counter() - start)
    blocks: list[float] = []
    gc.collect()
    sent0 = api_requests(control)
    with _profiled():
        cpu0 = time.process_time()
        for _ in range(n):
            start = time.perf_counter()
            await one()
            blocks.append(time.perf_counter() - start)
            await asyncio.sleep(gap)
        await settle()
        cpu = time.process_time() - cpu0
    return _runs_result(n, blocks, bare, cpu, sent0, api_requests(control))


def measure_runs_sync(
    one: Callable[[], Any],
    *,
    n: int,
    gap: float,
    drain: Callable[[], Any],
    settle: Callable[[], Any],
    control: str,
) -> dict[str, Any]:
    """:func:`measure_runs` for a run in plain ``def`` code, with no event loop of its own."""
    for _ in range(WARM_RUNS):
        one()
        time.sleep(gap)
    drain()
    bare: list[float] = []
    for _ in range(max(n, 100)):
        start = time.perf_counter()
        bare_block_sync()
        bare.append(time.perf_counter() - start)
    blocks: list[float] = []
    gc.collect()
    sent0 = api_requests(control)
    with _profiled():
        cpu0 = time.process_time()
        for _ in range(n):
            start = time.perf_counter()
            one()
            blocks.append(time.perf_counter() - start)
            time.sleep(gap)
        settle()
        cpu = time.process_time() - cpu0
    return _runs_result(n, blocks, bare, cpu, sent0, api_requests(control))


def _runs_result(
    n: int, blocks: list[float], bare: list[float], cpu: float, sent0: int | None, sent: int | None
) -> dict[str, Any]:
    block, without = statistics.median(blocks), statistics.median(bare)
    result = {
        "n": n,
        "cpu_us": cpu / n * 1e6,
        "block_ms": block * 1e3,
        "bare_ms": without * 1e3,
        "added_ms": (block - without) * 1e3,
    }
    if sent0 is not None and sent is not None:
        result["requests"] = (sent - sent0) / n
    return result
