"""Microseconds per conversion of a typical span payload: capture's paths against the strict check.

Run: python bench/capture.py. Prints figures only.
"""

from __future__ import annotations

import timeit
from datetime import UTC, datetime
from typing import Any

from aioprefactor._runs.capture import to_output, to_payload
from aioprefactor._wire.payloads import check_json, copy_json

ROUNDS = 50_000


def typical() -> dict[str, Any]:
    """A plain dict of 20 keys: strings, ints, floats, booleans and None."""
    kinds = [lambda i: f"value number {i}", lambda i: i * 7, lambda i: i / 3, bool, lambda i: None]
    return {f"key_{i}": kinds[i % len(kinds)](i) for i in range(20)}


def timed(label: str, call: Any) -> None:
    seconds = min(timeit.repeat(call, number=ROUNDS, repeat=5)) / ROUNDS
    print(f"{label:<48} {seconds * 1e6:8.2f} µs")


def main() -> None:
    payload = typical()
    odd = {**payload, "when": datetime(2025, 1, 1, tzinfo=UTC), "tags": {"b", "a"}, "n": (1, 2)}

    def today() -> object:
        check_json(payload, "payload")
        return copy_json(payload)

    timed("check_json + copy_json (strict, today)", today)
    timed("to_payload(strict=True)", lambda: to_payload(payload, strict=True))
    timed("to_payload (best effort, plain payload)", lambda: to_payload(payload))
    timed("to_payload (best effort, datetime/set/tuple)", lambda: to_payload(odd))
    timed("to_output('a short string')", lambda: to_output("a short string"))


if __name__ == "__main__":
    main()
