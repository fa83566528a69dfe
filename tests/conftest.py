from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_prefactor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test without the caller's PREFACTOR_* variables."""
    for name in list(os.environ):
        if name.startswith("PREFACTOR_"):
            monkeypatch.delenv(name)
