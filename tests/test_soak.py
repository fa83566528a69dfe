"""A small fault soak: runs ending every way while the local API injects faults.

The same soak as ``python bench/soak.py`` (which runs thousands of runs, and the official
SDK beside ours), kept small here so it runs with every test run. Afterwards the server
must hold exactly one instance per run, finished once with the status its ending
implies, and no span left open.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

    from aioprefactor.testing import LocalPrefactor


BENCH = Path(__file__).resolve().parent.parent / "bench"
FAULT_KINDS = ("503", "429", "latency", "drop", "non_json")


@pytest.fixture
def bench() -> Iterator[dict[str, ModuleType]]:
    """The soak's plan, driver and judge, from bench/."""
    sys.path.insert(0, str(BENCH))
    try:
        yield {name: importlib.import_module(name) for name in ("soak", "soak_ours")}
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("delivery", ["background", "inline"])
@pytest.mark.parametrize("seed", [1, 2])
async def test_soak_loses_duplicates_and_misreports_nothing(
    prefactor_api: LocalPrefactor, bench: dict[str, ModuleType], seed: int, delivery: str
) -> None:
    """Zero lost, duplicated, wrong, stuck or open after 60 runs under a 20% fault rate."""
    soak: Any = bench["soak"]
    plan: Any = importlib.import_module("_soak_plan")
    prefactor_api.faults.chaos(rate=0.2, seed=seed, kinds=FAULT_KINDS)
    endings = plan.plan(60, seed)
    worker = await bench["soak_ours"].soak(
        prefactor_api.url, prefactor_api.token, delivery, endings, 20
    )
    prefactor_api.faults.clear()
    state: dict[str, Any] = {
        "instances": prefactor_api.instances(),
        "spans": prefactor_api.spans(),
        "injected": dict(prefactor_api.faults.injected),
    }
    # Leaks here surface as warnings, which the test run turns into errors.
    judged = soak.judge({"worker": worker, "state": state, "leaks": 0})

    assert 60 == judged["runs"]
    assert {} == {row: judged["counts"][row] for row in soak.ROWS if judged["counts"][row]}
    assert sum(state["injected"].values()) > 0
    assert set(endings) == set(plan.ENDINGS)
