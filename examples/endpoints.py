"""The endpoint clients, one call at a time: register, start, two spans, finish, get.

Run it with ``python examples/endpoints.py``. It talks to ``PREFACTOR_API_URL`` (with
``PREFACTOR_API_TOKEN``) when set, and otherwise to a local API it starts itself.
"""

from __future__ import annotations

import asyncio
import os

from _support import api_endpoint, table

from aioprefactor import Client

AGENT_VERSION = {"name": "Endpoints example", "external_identifier": "1.0.0"}
SCHEMA_VERSION = {
    "external_identifier": "endpoints-example-1",
    "span_type_schemas": [
        {"name": "agent:llm", "params_schema": {"type": "object"}},
        {"name": "agent:tool", "params_schema": {"type": "object"}},
    ],
}


async def main() -> None:
    """Drive one instance through its life with the endpoint clients."""
    async with api_endpoint() as (url, token), Client(url, token) as client:
        agent_id = os.environ.get("PREFACTOR_AGENT_ID", "endpoints-example")
        instance = await client.agent_instances.register(agent_id, AGENT_VERSION, SCHEMA_VERSION)
        steps: list[tuple[str, str]] = [("register", instance.status)]
        instance = await client.agent_instances.start(instance.id)
        steps.append(("start", instance.status))

        llm = await client.agent_spans.create(
            agent_instance_id=instance.id, schema_name="agent:llm", payload={"model": "m-1"}
        )
        tool = await client.agent_spans.create(
            agent_instance_id=instance.id,
            schema_name="agent:tool",
            payload={"tool": "search"},
            parent_span_id=llm.id,
        )
        steps.append(("create 2 spans", f"{llm.status}, {tool.status}"))
        tool = await client.agent_spans.finish(tool.id, "complete", {"hits": 3})
        llm = await client.agent_spans.finish(llm.id, "complete", {"text": "done"})
        steps.append(("finish 2 spans", f"{llm.status}, {tool.status}"))

        instance = await client.agent_instances.finish(instance.id, "complete")
        steps.append(("finish", instance.status))
        instance = await client.agent_instances.get(instance.id)
        counts = instance.span_counts
        steps.append(("get", f"{instance.status} ({counts.finished if counts else '?'} spans)"))

        print(f"instance {instance.id}\n")
        print(table(["step", "status"], [[step, status] for step, status in steps]))


if __name__ == "__main__":
    asyncio.run(main())
