"""Benchmarks: aioprefactor against the official SDK and a bare aiohttp + msgspec floor.

    python bench/run.py [--quick] [--only FIGURE ...]

Every client runs in a fresh worker process against the local API, which runs in a process
of its own (``latency_server.py``, with a fixed latency per request where a figure says
so), so ``time.process_time()`` in the worker counts the client's CPU alone, background
threads included. Sides are interleaved round by round; the table quotes medians over the
rounds. The table is printed and written, with the date, Python, machine and commit, to
``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from _harness import (
    BENCH,
    Result,
    checkout,
    import_time_us,
    interleave,
    local_api,
    machine,
    median,
    official_python,
    problem,
    soak_section,
    worker,
)

if TYPE_CHECKING:
    from pathlib import Path

PY = sys.executable
FIGURES = ("lifecycle", "run", "decode", "scale", "import")


@dataclass(frozen=True)
class Params:
    rounds: int
    lifecycle_n: dict[int, int]  # concurrency -> operations per round
    latencies: tuple[float, ...]  # seconds the API adds per request, for the run figures
    run_rounds: int
    run_n: int  # runs per side and round
    decode_s: float  # CPU seconds of decoding per side and round
    import_rounds: int
    open_n: int
    open_rounds: int
    throughput: dict[int, int]  # concurrency -> runs


QUICK = Params(
    rounds=3,
    lifecycle_n={1: 150, 50: 400},
    latencies=(0.020, 0.050),
    run_rounds=3,
    run_n=8,
    decode_s=0.4,
    import_rounds=5,
    open_n=10_000,
    open_rounds=1,
    throughput={100: 1_000, 1_000: 2_000},
)
FULL = Params(
    rounds=7,
    lifecycle_n={1: 1_000, 50: 3_000},
    latencies=(0.0, 0.020, 0.050),
    run_rounds=5,
    run_n=20,
    decode_s=2.0,
    import_rounds=15,
    open_n=10_000,
    open_rounds=3,
    throughput={100: 5_000, 1_000: 10_000, 10_000: 20_000},
)


def gap_for(latency: float) -> float:
    """Seconds between runs: ample for every side to have sent a run before the next."""
    return max(0.02, 10 * latency)


@dataclass(frozen=True)
class Row:
    figure: str
    ours: str
    official: str = "—"
    floor: str = "—"
    vs_official: str = ""
    vs_floor: str = ""
    target: str = ""


def fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def cell(results: list[Result], key: str, digits: int = 0) -> str:
    value = median(results, key)
    return fmt(value, digits) if value is not None else why(results)


def why(results: list[Result]) -> str:
    reason = problem(results) or "n/a"
    return reason if len(reason) <= 48 else reason[:45] + "..."


def ratio(ours: list[Result], other: list[Result], key: str) -> float | None:
    a, b = median(ours, key), median(other, key)
    return None if a is None or b is None or b == 0 else a / b


def verdict(value: float | None, limit: float, at_most: bool = True, unit: str = "x") -> str:
    if value is None:
        return "n/a"
    met = value <= limit if at_most else value >= limit
    shown = f"{limit:.2f}x" if unit == "x" else f"{limit:,g}{unit}"
    return f"{'met' if met else 'MISSED'} ({'<=' if at_most else '>='} {shown})"


def xfmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.4f}x"


def lifecycle(official: Path, p: Params) -> list[Row]:
    rows = []
    for c, n in p.lifecycle_n.items():
        kw = {"n": n, "concurrency": c}
        res = interleave(
            p.rounds,
            {
                "ours": partial(worker, PY, "side_ours.py", "lifecycle", **kw),
                "official": partial(worker, official, "side_official.py", "lifecycle", **kw),
                "floor": partial(worker, PY, "side_floor.py", "lifecycle", **kw),
            },
            api=True,
        )
        vs_off = ratio(res["ours"], res["official"], "cpu_us")
        vs_floor = ratio(res["ours"], res["floor"], "cpu_us")
        rows.append(
            Row(
                f"lifecycle CPU µs (c={c})",
                cell(res["ours"], "cpu_us"),
                cell(res["official"], "cpu_us"),
                cell(res["floor"], "cpu_us"),
                xfmt(vs_off),
                xfmt(vs_floor),
                f"http {verdict(vs_off, 0.85)}; floor {verdict(vs_floor, 1.10)}",
            )
        )
        rows.append(
            Row(
                f"  of which user CPU µs (c={c})",
                cell(res["ours"], "user_us"),
                cell(res["official"], "user_us"),
                cell(res["floor"], "user_us"),
                xfmt(ratio(res["ours"], res["official"], "user_us")),
                xfmt(ratio(res["ours"], res["floor"], "user_us")),
            )
        )
        rows.append(
            Row(
                f"lifecycle wall ms p50 (c={c})",
                cell(res["ours"], "latency_ms", 2),
                cell(res["official"], "latency_ms", 2),
                cell(res["floor"], "latency_ms", 2),
                xfmt(ratio(res["ours"], res["official"], "latency_ms")),
                xfmt(ratio(res["ours"], res["floor"], "latency_ms")),
            )
        )
        rows.append(
            Row(
                f"lifecycles/s (c={c})",
                cell(res["ours"], "ops_s"),
                cell(res["official"], "ops_s"),
                cell(res["floor"], "ops_s"),
                xfmt(ratio(res["ours"], res["official"], "ops_s")),
                xfmt(ratio(res["ours"], res["floor"], "ops_s")),
            )
        )
    return rows


# Our run variants, beside prefactor-core's normal usage: (label, worker figure, options).
RUN_VARIANTS: tuple[tuple[str, str, dict[str, object]], ...] = (
    ("background, bulk", "run", {"delivery": "background", "batching": 1}),
    ("background, batching=False", "run", {"delivery": "background", "batching": 0}),
    ('delivery="inline"', "run", {"delivery": "inline", "batching": 1}),
    ("sync `with`, background, bulk", "sync_run", {}),
)
# Targets for the default (background, bulk) variant, and the requests without batching.
RUN_TARGETS = {"added_ms": 0.02, "cpu_us": 0.35}
REQUEST_TARGETS = {"background, bulk": 4.0, "background, batching=False": 13.0}


def runs_at(official: Path, p: Params, latency: float) -> list[Row]:
    """Runs of 10 spans against an API that takes ``latency`` seconds per request."""
    kw = {"n": p.run_n, "gap": gap_for(latency)}
    sides = {
        label: partial(worker, PY, "side_ours.py", figure, **kw, **options)
        for label, figure, options in RUN_VARIANTS
    }
    sides["official"] = partial(worker, official, "side_official.py", "run", **kw)
    res = interleave(p.run_rounds, sides, api=True, latency=latency, record=True)
    core = res["official"]
    at = f"API {latency * 1000:g} ms"
    rows = []
    for key, what, digits in (
        ("added_ms", "wall ms added per run", 2),
        ("requests", "requests per run", 1),
        ("cpu_us", "client CPU µs per run", 0),
    ):
        for label, _, _ in RUN_VARIANTS:
            ours = res[label]
            vs = ratio(ours, core, key)
            target = ""
            if label == RUN_VARIANTS[0][0] and key in RUN_TARGETS:
                target = verdict(vs, RUN_TARGETS[key])
            elif key == "requests" and label in REQUEST_TARGETS:
                target = verdict(median(ours, key), REQUEST_TARGETS[label], unit="")
            rows.append(
                Row(
                    f"run, {at}: {what} — {label}",
                    cell(ours, key, digits),
                    cell(core, key, digits),
                    vs_official=xfmt(vs),
                    target=target,
                )
            )
    return rows


def whole_run(official: Path, p: Params) -> list[Row]:
    rows = []
    for latency in p.latencies:
        rows += runs_at(official, p, latency)
    return rows


def decode(official: Path, p: Params) -> tuple[list[Row], str]:
    kw = {"seconds": p.decode_s}
    res = interleave(
        p.rounds,
        {
            "ours": partial(worker, PY, "side_ours.py", "decode", **kw),
            "official": partial(worker, official, "side_official.py", "decode", **kw),
        },
    )
    vs = ratio(res["ours"], res["official"], "per_s")
    label = next((str(r["label"]) for r in res["ours"] if "label" in r), "n/a")
    row = Row(
        "decode: AgentInstance responses/s",
        cell(res["ours"], "per_s"),
        cell(res["official"], "per_s"),
        vs_official=xfmt(vs),
        target=verdict(vs, 10.0, at_most=False),
    )
    return [row], label


def imports(official: Path, p: Params) -> list[Row]:
    res = interleave(
        p.import_rounds,
        {
            # What a user's first line costs: the client and the lifecycle, loaded.
            "ours": partial(
                import_time_us, PY, "from aioprefactor import Client, agent_instance, span"
            ),
            "official": partial(import_time_us, official, "from prefactor_http import *"),
        },
    )
    ours, theirs = median(res["ours"], "us"), median(res["official"], "us")
    return [
        Row(
            "import time ms, the client ready to use (aioprefactor vs prefactor_http)",
            fmt(ours / 1000, 1) if ours is not None else why(res["ours"]),
            fmt(theirs / 1000, 1) if theirs is not None else why(res["official"]),
            vs_official=xfmt(ratio(res["ours"], res["official"], "us")),
        )
    ]


def open_runs(p: Params) -> list[Row]:
    """Memory per open run: tasks inside registered and started runs, against bare tasks."""
    n = p.open_n
    sides = {
        f"{hold}{' traced' if trace else ''}": partial(
            worker, PY, "side_ours.py", "scale_open", n=n, hold=hold, trace=trace
        )
        for hold in ("runs", "nothing")
        for trace in (0, 1)
    }
    res = interleave(p.open_rounds, sides, api=True)

    def per_run(key: str, runs: str, bare: str) -> float | None:
        held, without = median(res[runs], key), median(res[bare], key)
        return None if held is None or without is None else (held - without) / n

    def mib(side: str, key: str) -> str:
        value = median(res[side], key)
        return fmt(value / 2**20, 1) if value is not None else why(res[side])

    per_rss = per_run("rss_growth", "runs", "nothing")
    per_traced = per_run("traced_growth", "runs traced", "nothing traced")
    both = f"{n:,} tasks, each in an open run / holding nothing"
    return [
        Row(
            f"{both}: RSS growth MiB",
            f"{mib('runs', 'rss_growth')} / {mib('nothing', 'rss_growth')}",
        ),
        Row(
            f"{n:,} runs open at once: bytes per open run (RSS, difference)",
            fmt(per_rss),
            target=verdict(per_rss, 4096, unit=" B"),
        ),
        Row(
            f"{both}: tracemalloc growth MiB",
            f"{mib('runs traced', 'traced_growth')} / {mib('nothing traced', 'traced_growth')}",
        ),
        Row(
            f"{n:,} runs open at once: bytes per open run (tracemalloc, difference)",
            fmt(per_traced),
            target=verdict(per_traced, 4096, unit=" B"),
        ),
        Row(
            f"{n:,} runs open at once: s to enter all (recorded) / exit all and flush",
            f"{cell(res['runs'], 'enter_s', 2)} / {cell(res['runs'], 'exit_s', 2)}",
        ),
        Row(f"{n:,} runs open at once: peak RSS MiB", cell(res["runs"], "peak_rss_mib", 1)),
    ]


def scale(p: Params) -> list[Row]:
    rows = open_runs(p)
    for c, n in p.throughput.items():
        with local_api() as api:
            res = worker(
                PY,
                "side_ours.py",
                "scale_throughput",
                url=api.url,
                token=api.token,
                n=n,
                concurrency=c,
            )
        rows.append(
            Row(
                f"complete runs/s, one client, c={c:,} ({n:,} runs, until flushed)",
                f"{cell([res], 'ops_s')} ({cell([res], 'cpu_us')} µs CPU/run, "
                f"peak RSS {cell([res], 'peak_rss_mib', 1)} MiB)",
            )
        )
    return rows


def render(rows: list[Row]) -> str:
    head = ("figure", "aioprefactor", "official", "floor", "ours/official", "ours/floor", "target")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [
        f"| {r.figure} | {r.ours} | {r.official} | {r.floor} | {r.vs_official} | "
        f"{r.vs_floor} | {r.target} |"
        for r in rows
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small numbers, a few minutes")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=FIGURES,
        help="measure only these figures (bench/RESULTS.md is then left alone)",
    )
    args = parser.parse_args()
    p = QUICK if args.quick else FULL
    only = set(args.only or FIGURES)
    started = time.perf_counter()
    measured = checkout()  # before the long run, while the tree is what is being measured

    official = official_python()
    rows: list[Row] = []
    decode_label = "n/a"
    if "lifecycle" in only:
        rows += lifecycle(official, p)
    if "run" in only:
        rows += whole_run(official, p)
    if "scale" in only:
        rows += scale(p)
    if "decode" in only:
        decode_rows, decode_label = decode(official, p)
        rows += decode_rows
    if "import" in only:
        rows += imports(official, p)
    print(file=sys.stderr)

    info = machine()
    table = render(rows)
    notes = NOTES.format(
        rounds=p.rounds,
        lc=", ".join(f"c={c}: {n:,}" for c, n in p.lifecycle_n.items()),
        run_n=p.run_n,
        run_rounds=p.run_rounds,
        gaps=", ".join(f"{gap_for(x) * 1000:g} ms at {x * 1000:g} ms" for x in p.latencies),
        open_rounds=p.open_rounds,
        decode_s=p.decode_s,
        decode_label=decode_label,
        import_rounds=p.import_rounds,
        elapsed=time.perf_counter() - started,
    )
    command = "python bench/run.py" + (" --quick" if args.quick else "")
    text = (
        f"# Benchmark results\n\n`{command}` — {info['date']}\n\n"
        f"- aioprefactor: commit {measured}\n"
        f"- Python: {info['python']}\n- Machine: {info['machine']}\n\n{table}\n\n{notes}"
    )
    print(text)
    if args.only is None:
        results = BENCH / "RESULTS.md"
        # The soak's figures come from bench/soak.py: keep them.
        kept = soak_section(results.read_text()) if results.exists() else ""
        results.write_text(text + ("\n" + kept + "\n" if kept else ""))


NOTES = """\
How it was measured:
- The local API (`bench/latency_server.py`, `aioprefactor.testing.LocalPrefactor` with
  `faults.latency(x)` for a fixed latency) runs in its own process, a fresh one each round;
  each side runs in a fresh worker process; CPU is `time.process_time()` of the worker: the
  whole process, the delivery engine's thread included. Medians of {rounds} interleaved
  rounds (runs: {run_rounds}; open runs: {open_rounds}; import time: {import_rounds}).
- "official" is prefactor-http 0.4.3 for the lifecycle, decode and import rows, and
  prefactor-core 0.5.3 for the run rows, installed in `bench/.venv-official`.
- The floor is bare aiohttp + msgspec: one session, the same three POSTs with the same JSON
  bodies and headers as ours, the response decoded into a msgspec mirror of the instance.
- "of which user CPU": the kernel's split of the same CPU time into user and system, which
  it samples at each clock tick; indicative only.
- Lifecycle: register + start + finish per operation, direct endpoint calls; operations
  per round: {lc}; every side sends an idempotency key with each call (ours generates its
  own).
- Runs: enter a run, 10 spans (payload in, result set), leave it; {run_n} runs per side and
  round, one after another with a pause between them so that each run's sending is done
  before the next, as when runs are seconds apart; pauses: {gaps}. Ours: `async with
  client.agent_instance(...)` and `async with span(...)`, in the default background
  delivery with bulk, with `batching=False`, with `delivery="inline"`, and in plain `def`
  code with `with` blocks (no event loop in that thread). prefactor-core: its normal
  usage, `create_agent_instance()` (awaits the register), `start()`, `instance.span()`
  (awaits each span's create when its block ends; queues the finishes), `finish()`.
  "Wall ms added": the median block time minus the median of the same block with no
  telemetry. "Requests": API requests the local API received during the measured runs,
  per run. "CPU": from the first measured run until our `flush()` and close returned
  (prefactor-core: until its `close()` returned, which drains its queue), per run. Ours
  fails the figure unless the server holds every run `complete` with its 10 spans.
- Open runs: {open_rounds} round(s) of four worker processes: N tasks each inside
  `async with client.agent_instance(...)`, having awaited `run.wait_recorded()` (registered and
  started), and N tasks holding nothing; RSS (and, in two more processes, `tracemalloc`)
  growth from before the tasks were made until all hold, each RSS read after
  `gc.collect()` and `malloc_trim(0)` so that it shows what is held rather than the
  high-water mark of the requests in flight meanwhile. Per open run: the difference
  divided by N.
- Throughput: ours only, one round; all runs in one client, timed until `flush()` returned.
- Decode: one instance response decoded for {decode_s} s of CPU per side and round;
  ours: {decode_label};
  theirs: `ApiResponse[AgentInstance](**json.loads(body))`, as prefactor-http does.
- Total bench time: {elapsed:.0f} s.
"""


if __name__ == "__main__":
    main()
