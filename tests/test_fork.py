"""os.fork(): the child starts with a fresh delivery state and sends only its own work."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.conftest import Scripts

    from aioprefactor.testing import LocalPrefactor, RecordedRequest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

FORKING = """
    import json, os, sys, warnings
    import aioprefactor
    from aioprefactor import span

    # The delivery thread makes this process multi-threaded; forking it anyway is the point.
    warnings.filterwarnings("ignore", r".*fork\\(\\) may lead to deadlocks", DeprecationWarning)

    def record(who):
        with aioprefactor.agent_instance(
            agent_id=who, agent_version={{"name": "F", "external_identifier": "1"}}
        ) as run:
            with span("agent:step", payload={{"who": who}}):
                pass
        return run

    parent = record("parent")  # still in flight at the fork: every request takes 200 ms
    pending_at_fork = parent.id is None
    pid = os.fork()
    if pid == 0:
        record("child")
        sys.exit(0 if {flush} else 1)
    _, status = os.waitpid(pid, 0)
    delivered = {flush}
    child_exit = os.waitstatus_to_exitcode(status)
    print(json.dumps({{"pending": pending_at_fork, "child": child_exit, "parent": delivered}}))
"""


def idempotency_keys(requests: list[RecordedRequest]) -> Counter[str]:
    """Count how often each idempotency key was sent, bulk items included."""
    keys: Counter[str] = Counter()
    for request in requests:
        body: Any = request.body
        items = body.get("items", [body]) if isinstance(body, dict) else []
        keys.update(item["idempotency_key"] for item in items if "idempotency_key" in item)
    return keys


# Each side flushes explicitly, or leaves its work to the exit flush ("True").
@pytest.mark.parametrize(
    "flush", ["aioprefactor.flush_sync(10)", "True"], ids=["flush-sync", "exit-flush"]
)
async def test_a_forked_child_records_its_own_run_and_not_the_parents(
    prefactor_api: LocalPrefactor, scripts: Scripts, flush: str
) -> None:
    """Parent and child each record one run; no request of the parent is sent twice."""
    prefactor_api.faults.latency(0.2)
    child = await scripts.run(FORKING.format(flush=flush), prefactor_api)
    assert 0 == child.returncode, child.stderr
    assert "" == child.stderr
    expected = {"pending": True, "child": 0, "parent": True}
    assert [expected] == [json.loads(line) for line in child.lines]
    instances = prefactor_api.instances()
    assert [("child", "complete"), ("parent", "complete")] == sorted(
        (one["agent_id"], one["status"]) for one in instances
    )
    for instance in instances:
        spans = prefactor_api.spans(instance["id"])
        assert [("agent:step", "complete", {"who": instance["agent_id"]})] == [
            (one["schema_name"], one["status"], one["payload"]) for one in spans
        ]
    keys = idempotency_keys(prefactor_api.requests)
    assert keys
    assert {} == {key: count for key, count in keys.items() if count > 1}
    assert [] == [r.path for r in prefactor_api.requests if r.replayed]
