from __future__ import annotations

import asyncio
import json
import platform
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest

import aioprefactor
from aioprefactor._runs import schema as _schema

if TYPE_CHECKING:
    from aioprefactor.testing import LocalPrefactor


pytestmark = pytest.mark.inline
VERSION: dict[str, Any] = {"name": "Default agent", "external_identifier": "1.0.0"}


def registrations(api: LocalPrefactor) -> list[dict[str, Any]]:
    return [r.body for r in api.requests if r.route == "agent_instances.register"]


async def test_module_level_agent_instance_uses_configure(prefactor_api: LocalPrefactor) -> None:
    """Complete: a run through the default client that configure() points at the API."""
    aioprefactor.configure(prefactor_api.url, prefactor_api.token)
    scope = aioprefactor.agent_instance(agent_id="a", agent_version=VERSION)
    async with scope as run, aioprefactor.span("agent:step") as step:
        pass
    assert run.id is not None
    assert prefactor_api.instance(run.id)["status"] == "complete"
    assert prefactor_api.span(step.id or "")["status"] == "complete"


async def test_module_level_decorator_uses_configure(prefactor_api: LocalPrefactor) -> None:
    """Complete, per call: the module-level decorator records each call."""
    aioprefactor.configure(prefactor_api.url, prefactor_api.token)

    @aioprefactor.agent_instance(agent_id="a", agent_version=VERSION)
    async def main(x: int) -> int:
        return x + 1

    assert [await main(1), await main(2)] == [2, 3]
    assert [i["status"] for i in prefactor_api.instances()] == ["complete", "complete"]


async def test_module_level_agent_instance_reads_the_environment(
    prefactor_api: LocalPrefactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URL, token, agent id and environment id come from PREFACTOR_* variables."""
    monkeypatch.setenv("PREFACTOR_API_URL", prefactor_api.url)
    monkeypatch.setenv("PREFACTOR_API_TOKEN", prefactor_api.token)
    monkeypatch.setenv("PREFACTOR_AGENT_ID", "env-agent")
    monkeypatch.setenv("PREFACTOR_ENVIRONMENT_ID", "env-staging")
    async with aioprefactor.agent_instance(agent_version=VERSION) as run:
        pass
    assert run.id is not None
    [body] = registrations(prefactor_api)
    assert (body["agent_id"], body["environment_id"]) == ("env-agent", "env-staging")
    instance = prefactor_api.instance(run.id)
    assert (instance["agent_id"], instance["environment_id"], instance["status"]) == (
        "env-agent",
        "env-staging",
        "complete",
    )


async def test_arguments_win_over_the_environment(
    prefactor_api: LocalPrefactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent_id and environment_id given as arguments, not the variables'."""
    monkeypatch.setenv("PREFACTOR_AGENT_ID", "env-agent")
    monkeypatch.setenv("PREFACTOR_ENVIRONMENT_ID", "env-staging")
    aioprefactor.configure(prefactor_api.url, prefactor_api.token)
    scope = aioprefactor.agent_instance(
        agent_id="arg-agent", environment_id="arg-env", agent_version=VERSION
    )
    async with scope:
        pass
    [body] = registrations(prefactor_api)
    assert (body["agent_id"], body["environment_id"]) == ("arg-agent", "arg-env")


async def test_unconfigured_default_client_is_a_clear_error() -> None:
    """ValueError naming the missing setting when neither configure() nor the env gives one."""
    with pytest.raises(ValueError, match=r"PREFACTOR_API_(URL|TOKEN)"):
        async with aioprefactor.agent_instance(agent_id="a", agent_version=VERSION):
            pass


async def test_runtime_environment_is_filled_in(
    prefactor_api: LocalPrefactor, prefactor_client: aioprefactor.Client
) -> None:
    """os, runtime (e.g. cpython@3.11) and aioprefactor@<version>, when none is given."""
    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION):
        pass
    [body] = registrations(prefactor_api)
    runtime = (
        f"{platform.python_implementation().lower()}@{sys.version_info[0]}.{sys.version_info[1]}"
    )
    environment = body["agent_version"]["runtime_environment"]
    assert environment["os"] == sys.platform
    assert environment["runtime"] == runtime
    assert environment["prefactor_sdk"] == [f"aioprefactor@{aioprefactor.__version__}"]
    assert body["agent_version"]["name"] == VERSION["name"]


async def test_runtime_environment_given_is_kept(
    prefactor_api: LocalPrefactor, prefactor_client: aioprefactor.Client
) -> None:
    """The caller's runtime environment, sent as given."""
    given = {"os": "plan9", "runtime": "cpython@3.99", "prefactor_sdk": [], "agent_sdk": ["x@1"]}
    version = {**VERSION, "runtime_environment": given}
    async with prefactor_client.agent_instance(agent_id="a", agent_version=version):
        pass
    [body] = registrations(prefactor_api)
    assert body["agent_version"]["runtime_environment"] == given


def schema_id(body: dict[str, Any]) -> str:
    identifier: str = body["agent_schema_version"]["external_identifier"]
    return identifier


async def test_schema_version_is_named_by_its_content(
    prefactor_api: LocalPrefactor, prefactor_client: aioprefactor.Client
) -> None:
    """The same id for the same span types (in any order), a new one when a type changes."""

    async def register(**kwargs: Any) -> None:
        async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION, **kwargs):
            pass

    llm = {"name": "agent:llm", "params_schema": {"type": "object"}}
    tool = {"name": "agent:tool", "params_schema": {"type": "object"}, "title": "Tool"}
    changed_tool = {**tool, "title": "A tool"}
    await register(span_types=[llm, tool])
    await register(span_types=[tool, llm])
    await register(span_types=[llm, changed_tool])
    aioprefactor.declare_span_type("agent:tool", {"type": "object"}, title="Tool")
    aioprefactor.declare_span_type("agent:llm", {"type": "object"})
    await register()
    ids = [schema_id(body) for body in registrations(prefactor_api)]
    assert ids[0] == ids[1] == ids[3]
    assert ids[2] != ids[0]
    names = [
        s["name"]
        for s in registrations(prefactor_api)[3]["agent_schema_version"]["span_type_schemas"]
    ]
    assert names == ["agent:llm", "agent:tool"]
    assert len({s["external_identifier"] for s in prefactor_api.schema_versions()}) == 2


async def test_declared_span_type_change_changes_the_schema_version(
    prefactor_api: LocalPrefactor, prefactor_client: aioprefactor.Client
) -> None:
    """A new id after a declared span type is redeclared with another schema."""
    aioprefactor.declare_span_type("agent:llm", {"type": "object"})
    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION):
        pass
    aioprefactor.declare_span_type(
        "agent:llm", {"type": "object", "properties": {"model": {"type": "string"}}}
    )
    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION):
        pass
    first, second = (schema_id(body) for body in registrations(prefactor_api))
    assert first != second


SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, warnings
    import aioprefactor
    from aioprefactor import _default

    aioprefactor.declare_span_type("agent:step", {"type": "object"})
    seen = []

    @aioprefactor.agent_instance(agent_id="proc", agent_version={
        "name": "Default agent", "external_identifier": "1.0.0"})
    async def main(n):
        async with aioprefactor.span("agent:step", {"n": n}):
            await asyncio.sleep(0)
        client = _default.default_client()
        seen.append(client)
        return aioprefactor.current_instance().id

    ids = [asyncio.run(main(1)), asyncio.run(main(2))]
    states = [client.state.value for client in seen]
    print(json.dumps({"ids": ids, "states": states, "same": seen[0] is seen[1]}))
    """
)


async def test_default_client_works_across_event_loops_and_closes_cleanly(
    prefactor_api: LocalPrefactor,
) -> None:
    """Two asyncio.run calls: two runs through the one default client, no warning."""
    env = {
        "PREFACTOR_API_URL": prefactor_api.url,
        "PREFACTOR_API_TOKEN": prefactor_api.token,
        "PYTHONDEVMODE": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "error",
        "-c",
        SCRIPT,
        env={**_base_env(), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    assert stderr.decode() == ""
    result = json.loads(stdout)
    assert result["states"] == ["open", "open"]
    assert result["same"] is True
    assert [prefactor_api.instance(i)["status"] for i in result["ids"]] == ["complete"] * 2
    for instance_id in result["ids"]:
        assert [s["status"] for s in prefactor_api.spans(instance_id)] == ["complete"]
    first, second = (schema_id(body) for body in registrations(prefactor_api))
    assert first == second
    here = _schema.schema_version_for(
        [aioprefactor.declare_span_type("agent:step", {"type": "object"})]
    )
    assert here.external_identifier == first


def _base_env() -> dict[str, str]:
    import os  # noqa: PLC0415 - only the subprocess test needs the environment

    # These scripts read ids inside their blocks: inline delivery.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFACTOR_")}
    return {**env, "PREFACTOR_DELIVERY": "inline"}


SHUTDOWN_SCRIPT = textwrap.dedent(
    """
    import asyncio, json
    import aioprefactor

    async def main():
        scope = aioprefactor.agent_instance(
            agent_id="proc", agent_version={"name": "n", "external_identifier": "1"},
            finish_timeout=0.05)
        async with scope as run:
            pass
        return run.id

    print(json.dumps(asyncio.run(main())))
    """
)


async def test_finish_in_flight_when_asyncio_run_ends_still_lands(
    prefactor_api: LocalPrefactor,
) -> None:
    """Complete, once: asyncio.run returns while the finish is in flight; it is not lost."""
    prefactor_api.faults.latency(0.5, route="agent_instances.finish", n=1)
    env = {"PREFACTOR_API_URL": prefactor_api.url, "PREFACTOR_API_TOKEN": prefactor_api.token}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "error",
        "-c",
        SHUTDOWN_SCRIPT,
        env={**_base_env(), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    for noise in ("Unclosed", "Traceback", "Exception ignored", "Task was destroyed"):
        assert noise not in stderr.decode()
    instance_id = json.loads(stdout)
    await asyncio.sleep(0.6)  # the first finish may still be held by the latency fault
    assert prefactor_api.instance(instance_id)["status"] == "complete"
    finishes = [r for r in prefactor_api.requests if r.route == "agent_instances.finish"]
    assert len([r for r in finishes if not r.replayed and r.status == 200]) == 1
