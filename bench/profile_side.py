"""Profile one side's measured pass with cProfile and show where its CPU goes.

    python bench/profile_side.py [--side ours|floor|official] [--figure lifecycle|run]
                            [--n 2000] [--concurrency 1] [--top 30]

The worker runs as in the bench (its own process, the local API in another); only the
measured pass is profiled. Printed: CPU per package, then the functions that cost most.
"""

from __future__ import annotations

import argparse
import os
import pstats
import sys
from collections import defaultdict

from _harness import WORK, local_api, official_python, worker

SCRIPTS = {"ours": "side_ours.py", "floor": "side_floor.py", "official": "side_official.py"}


def package(filename: str) -> str:
    """The package a profiled function belongs to, from its file name."""
    if filename.startswith("~") or filename == "<built-in>":
        return "builtins"
    parts = filename.replace("\\\\", "/").split("/")
    for marker in ("site-packages", "src", "lib"):
        if marker in parts[:-1]:
            rest = parts[len(parts) - 1 - parts[::-1].index(marker) + 1 :]
            name = rest[0].removesuffix(".py") if rest else filename
            return "stdlib:" + name if marker == "lib" else name
    return os.path.basename(filename)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=SCRIPTS, default="ours")
    parser.add_argument("--figure", choices=("lifecycle", "run"), default="lifecycle")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()

    python = official_python() if args.side == "official" else sys.executable
    out = WORK / f"profile-{args.side}-{args.figure}.pstats"
    kw: dict[str, object] = {"n": args.n}
    if args.figure == "lifecycle":
        kw["concurrency"] = args.concurrency
    os.environ["BENCH_PROFILE"] = str(out)
    try:
        with local_api() as api:
            result = worker(
                python, SCRIPTS[args.side], args.figure, url=api.url, token=api.token, **kw
            )
    finally:
        del os.environ["BENCH_PROFILE"]
    print(f"{args.side} {args.figure} (n={args.n}): {result}")
    print("(times below include cProfile's own overhead)\n")

    stats = pstats.Stats(str(out))
    raw = stats.stats  # type: ignore[attr-defined]
    per_package: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        per_package[package(filename)] += tottime
        total += tottime
    print("own CPU by package (µs per operation):")
    for name, seconds in sorted(per_package.items(), key=lambda kv: -kv[1])[:15]:
        print(f"  {seconds / args.n * 1e6:9.1f}  {100 * seconds / total:5.1f}%  {name}")
    print()
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
