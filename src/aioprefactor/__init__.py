"""aioprefactor: an asyncio client for the Prefactor agent-observability API."""

from __future__ import annotations

from aioprefactor._version import __version__

__all__ = ["__version__"]
