"""Benchmarks: aioprefactor against the official SDK and a bare aiohttp + msgspec floor.

    python bench/run.py [--quick]

Every client runs in a fresh worker process against the local API, which runs in a process
of its own, so ``time.process_time()`` in the worker counts the client's CPU alone. Sides
are interleaved round by round; the table quotes medians over the rounds. The table is
printed and written, with the date, Python and machine, to ``bench/RESULTS.md``.
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
    run_n: int
    decode_s: float  # CPU seconds of decoding per side and round
    import_rounds: int
    open_n: int
    throughput: dict[int, int]  # concurrency -> runs


QUICK = Params(
    rounds=3,
    lifecycle_n={1: 150, 50: 400},
    run_n=20,
    decode_s=0.4,
    import_rounds=5,
    open_n=1_000,
    throughput={100: 1_000, 1_000: 2_000},
)
FULL = Params(
    rounds=7,
    lifecycle_n={1: 1_000, 50: 3_000},
    run_n=200,
    decode_s=2.0,
    import_rounds=15,
    open_n=10_000,
    throughput={100: 5_000, 1_000: 10_000, 10_000: 20_000},
)


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


def verdict(value: float | None, limit: float, at_most: bool = True) -> str:
    if value is None:
        return "n/a"
    met = value <= limit if at_most else value >= limit
    return f"{'met' if met else 'MISSED'} ({'<=' if at_most else '>='} {limit:.2f}x)"


def xfmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


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


def whole_run(official: Path, p: Params) -> list[Row]:
    kw = {"n": p.run_n}
    res = interleave(
        p.rounds,
        {
            "ours": partial(worker, PY, "side_ours.py", "run", **kw),
            "official": partial(worker, official, "side_official.py", "run", **kw),
        },
        api=True,
    )
    return [
        Row(
            "whole run (10 spans): CPU µs/run",
            cell(res["ours"], "cpu_us"),
            cell(res["official"], "cpu_us"),
            vs_official=xfmt(ratio(res["ours"], res["official"], "cpu_us")),
        ),
        Row(
            "whole run (10 spans): wall ms added per block",
            cell(res["ours"], "block_ms", 2),
            cell(res["official"], "block_ms", 2),
            vs_official=xfmt(ratio(res["ours"], res["official"], "block_ms")),
        ),
    ]


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
            "ours": partial(import_time_us, PY, "aioprefactor"),
            "official": partial(import_time_us, official, "prefactor_http"),
        },
    )
    ours, theirs = median(res["ours"], "us"), median(res["official"], "us")
    return [
        Row(
            "import time ms (aioprefactor vs prefactor_http)",
            fmt(ours / 1000, 1) if ours is not None else why(res["ours"]),
            fmt(theirs / 1000, 1) if theirs is not None else why(res["official"]),
            vs_official=xfmt(ratio(res["ours"], res["official"], "us")),
        )
    ]


def scale(p: Params) -> list[Row]:
    with local_api() as (url, token):
        held = worker(PY, "side_ours.py", "scale_open", url=url, token=token, n=p.open_n)
    rows = [
        Row(f"{p.open_n:,} runs open at once: peak RSS MiB", cell([held], "peak_rss_mib", 1)),
        Row(f"{p.open_n:,} runs open at once: bytes per open run", cell([held], "bytes_per_run")),
        Row(
            f"{p.open_n:,} runs open at once: s to enter all / exit all",
            f"{cell([held], 'enter_s', 2)} / {cell([held], 'exit_s', 2)}",
        ),
    ]
    for c, n in p.throughput.items():
        with local_api() as (url, token):
            res = worker(
                PY, "side_ours.py", "scale_throughput", url=url, token=token, n=n, concurrency=c
            )
        rows.append(
            Row(
                f"complete runs/s, one client, c={c:,} ({n:,} runs)",
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
    parser.add_argument("--quick", action="store_true", help="small numbers, under a minute")
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
- The local API (`python -m aioprefactor serve`) runs in its own process, a fresh one each
  round; each side runs in a fresh worker process; CPU is `time.process_time()` of the
  worker alone. Medians of {rounds} interleaved rounds (import time: {import_rounds}).
- "official" is prefactor-http 0.4.3 for the lifecycle, decode and import rows, and
  prefactor-core 0.5.3 for the whole run, installed in `bench/.venv-official`.
- The floor is bare aiohttp + msgspec: one session, the same three POSTs with the same JSON
  bodies and headers as ours, the response decoded into a msgspec mirror of the instance.
- "of which user CPU": the kernel's split of the same CPU time into user and system, which
  it samples at each clock tick; indicative only.
- Lifecycle: register + start + finish per operation ({lc} operations per round); every
  side sends an idempotency key with each call (ours generates its own).
- Whole run: enter, 10 spans, exit, one run after another ({run_n} per round), in the
  default (fail-open) mode of each; CPU per run includes closing the client (prefactor-core
  drains its queue there). Ours fails the bench if a run was not recorded.
- Decode: one instance response decoded for {decode_s} s of CPU per side and round;
  ours: {decode_label};
  theirs: `ApiResponse[AgentInstance](**json.loads(body))`, as prefactor-http does.
- Scale: ours only, one round; all runs in one client (100 pooled connections) with
  `connect_timeout=300, request_timeout=300, total_timeout=900` and run budgets of 600 s,
  so that no run queued behind thousands of others runs out of time before being sent.
- Total bench time: {elapsed:.0f} s.
"""


if __name__ == "__main__":
    main()
