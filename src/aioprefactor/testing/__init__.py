"""A local, in-memory Prefactor API for tests and local development.

```python
from aioprefactor.testing import LocalPrefactor

async with LocalPrefactor() as api:
    ...  # point a client at api.url with api.token
    api.faults.fail_next(2, status=503, route="agent_instances.finish")
    api.instances(), api.spans(instance_id), api.requests
    api.timeline_url  # the page over the runs, signed in by its token
```

`LocalPrefactor(db="runs.sqlite")` keeps the records in an SQLite file across restarts.

Route names, used by `RecordedRequest.route` and by the `route=` of `FaultPlan` methods:
`"agent_instances.register"`, `"agent_instances.start"`, `"agent_instances.finish"`,
`"agent_instances.get"`, `"agent_instances.record_quality"`, `"agent_spans.create"`,
`"agent_spans.finish"`, `"bulk"`, `"ping"`.

The pytest plugin (`aioprefactor.testing.pytest_plugin`, loaded automatically) provides the
`prefactor_api` and `prefactor_client` fixtures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aioprefactor.testing._app import RecordedRequest
    from aioprefactor.testing._faults import FaultPlan
    from aioprefactor.testing._server import LocalPrefactor
    from aioprefactor.testing._storage import StorageError

__all__ = ["FaultPlan", "LocalPrefactor", "RecordedRequest", "StorageError"]

# Imported on first use: the pytest plugin lives in this package and is loaded in every pytest
# session, which should not pay for importing aiohttp.web unless the local API is used.
_LAZY = {
    "FaultPlan": "aioprefactor.testing._faults",
    "LocalPrefactor": "aioprefactor.testing._server",
    "RecordedRequest": "aioprefactor.testing._app",
    "StorageError": "aioprefactor.testing._storage",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
