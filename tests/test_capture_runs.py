"""What spans record about the code they watch, end to end: errors, arguments, outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

import aioprefactor
from aioprefactor import Client, span
from aioprefactor._runs.capture import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGE, DEFAULT_MAX_YIELDS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from aioprefactor.testing import LocalPrefactor

VERSION: dict[str, Any] = {"name": "Captured agent", "external_identifier": "1.0.0"}


class ToolError(Exception):
    """A failure of the agent's own code."""


class Tools:
    """Methods decorated in a class body."""

    class RefusedError(Exception):
        """A nested exception class: its qualified name is recorded."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @span("agent:tool")
    def search(self, query: str, k: int = 3) -> list[str]:
        """A method: ``self`` is not recorded."""
        return [f"{self.prefix}{query}"] * k

    @span("agent:tool")
    async def fetch(self, url: str) -> dict[str, str]:
        """An async method."""
        return {"url": url}

    @classmethod
    @span("agent:tool")
    def build(cls, name: str) -> str:
        """A classmethod: ``cls`` is not recorded."""
        return f"{cls.__name__}:{name}"

    @staticmethod
    @span("agent:tool")
    def add(a: int, b: int) -> int:
        """A staticmethod: every argument is recorded."""
        return a + b


@dataclass
class Query:
    """A dataclass argument: recorded as its fields."""

    text: str
    tags: set[str]


class Opaque:
    """An object with no JSON form: recorded as its repr."""

    def __repr__(self) -> str:
        return "<Opaque>"


@pytest.fixture
async def make_client(prefactor_api: LocalPrefactor) -> AsyncIterator[Callable[..., Client]]:
    """Build clients bound to the local API; all closed afterwards."""
    made: list[Client] = []

    def make(**options: Any) -> Client:
        client = Client(api_url=prefactor_api.url, api_token=prefactor_api.token, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


def qualified(kind: type) -> str:
    """The type name error capture records."""
    return f"{kind.__module__}.{kind.__qualname__}"


def only_span(api: LocalPrefactor, instance_id: str | None) -> dict[str, Any]:
    """The one span of an instance."""
    assert instance_id is not None
    spans = api.spans(instance_id)
    assert 1 == len(spans)
    return spans[0]


# --- errors -----------------------------------------------------------------------------------


async def test_a_failed_span_records_the_error_type_and_message(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """{'error': {'type': 'module.QualName', 'message': str(exc)}} in the failed span's result."""
    client = make_client()
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        with pytest.raises(ToolError):
            async with span("agent:tool"):
                raise ToolError("search is down")
        with pytest.raises(Tools.RefusedError):
            async with span("agent:tool"):
                raise Tools.RefusedError("no")
        with pytest.raises(KeyError):
            async with span("agent:tool"):
                raise KeyError("k")
    assert await client.flush()
    assert run.id is not None
    assert [
        ("failed", {"error": {"type": qualified(ToolError), "message": "search is down"}}),
        ("failed", {"error": {"type": qualified(Tools.RefusedError), "message": "no"}}),
        ("failed", {"error": {"type": "builtins.KeyError", "message": "'k'"}}),
    ] == [(s["status"], s["result_payload"]) for s in prefactor_api.spans(run.id)]
    assert qualified(Tools.RefusedError).endswith(".Tools.RefusedError")


async def test_the_error_is_merged_with_the_result_the_block_set(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """A result set before the exception keeps its keys; 'error' is added beside them."""
    client = make_client()

    async def tool() -> None:
        async with span("agent:tool") as handle:
            handle.set_result({"partial": [1, 2], "error": "replaced by the exception"})
            raise ToolError("halfway")

    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        with pytest.raises(ToolError):
            await tool()
    assert await client.flush()
    result = only_span(prefactor_api, run.id)["result_payload"]
    assert {
        "partial": [1, 2],
        "error": {"type": qualified(ToolError), "message": "halfway"},
    } == result


async def test_a_long_error_message_is_capped(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """A message over the cap keeps its start and says how much was cut."""
    client = make_client()
    message = "x" * (DEFAULT_MAX_MESSAGE * 5)
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        with pytest.raises(ToolError):
            async with span("agent:tool"):
                raise ToolError(message)
    assert await client.flush()
    recorded = only_span(prefactor_api, run.id)["result_payload"]["error"]["message"]
    cut = len(message) - DEFAULT_MAX_MESSAGE
    assert f"{'x' * DEFAULT_MAX_MESSAGE}…[truncated {cut} chars]" == recorded


async def test_the_token_is_scrubbed_from_error_messages(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """The client's token in an exception's message is recorded as [redacted], never sent."""
    client = make_client()
    token = prefactor_api.token
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        with pytest.raises(ToolError):
            async with span("agent:tool"):
                raise ToolError(f"bad header: Bearer {token}!")
    assert await client.flush()
    error = only_span(prefactor_api, run.id)["result_payload"]["error"]
    assert "bad header: Bearer [redacted]!" == error["message"]
    bodies = [msgspec.json.encode(r.body) for r in prefactor_api.requests if r.body is not None]
    assert [] == [body for body in bodies if token.encode() in body]


async def test_a_cancelled_span_records_no_error(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """Only a failure records its exception: a span ended by GeneratorExit is 'cancelled'."""
    client = make_client()

    async def tool() -> None:
        async with span("agent:tool") as handle:
            handle.set_result({"kept": True})
            raise GeneratorExit

    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        with pytest.raises(GeneratorExit):
            await tool()
    assert await client.flush()
    recorded = only_span(prefactor_api, run.id)
    assert ("cancelled", {"kept": True}) == (recorded["status"], recorded["result_payload"])


async def test_a_decorated_run_records_its_call_in_a_root_span(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """capture=True: 'agent:run' holds the bound arguments, then the output or the error."""
    client = make_client()

    @client.agent_instance(agent_id="a", agent_version=VERSION, capture=True)
    async def agent(ticket: str, retries: int = 2) -> dict[str, str]:
        if ticket == "broken":
            raise ToolError(f"cannot handle {ticket}")
        async with span("agent:llm"):
            pass
        return {"answer": ticket.upper()}

    assert {"answer": "HI"} == await agent("hi")
    with pytest.raises(ToolError):
        await agent("broken", retries=0)
    assert await client.flush()
    done, failed = prefactor_api.instances()
    assert ("complete", "failed") == (done["status"], failed["status"])
    root, llm = prefactor_api.spans(done["id"])
    assert ("agent:run", "agent:llm") == (root["schema_name"], llm["schema_name"])
    assert root["id"] == llm["parent_span_id"]
    assert ({"ticket": "hi", "retries": 2}, {"output": {"answer": "HI"}}) == (
        root["payload"],
        root["result_payload"],
    )
    (root,) = prefactor_api.spans(failed["id"])
    assert ("failed", {"ticket": "broken", "retries": 0}) == (root["status"], root["payload"])
    error = {"type": qualified(ToolError), "message": "cannot handle broken"}
    assert {"error": error} == root["result_payload"]


async def test_a_decorated_run_without_capture_has_no_root_span(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """agent_instance's capture is off by default: no 'agent:run' span is added."""
    client = make_client()

    @client.agent_instance(agent_id="a", agent_version=VERSION)
    async def agent(ticket: str) -> str:
        return ticket

    assert "hi" == await agent("hi")
    assert await client.flush()
    (instance,) = prefactor_api.instances()
    assert [] == prefactor_api.spans(instance["id"])


async def test_a_decorated_sync_run_records_its_call_in_a_root_span(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """A decorated def entrypoint and a generator entrypoint get their root span too."""
    client = make_client()

    @client.agent_instance(agent_id="a", agent_version=VERSION, capture=True)
    def agent(ticket: str) -> str:
        return ticket * 2

    @client.agent_instance(agent_id="a", agent_version=VERSION, capture=True)
    def stream(n: int) -> Iterator[int]:
        yield from range(n)

    assert "abab" == agent("ab")  # nothing here waits for the API
    assert [0, 1, 2] == list(stream(3))
    assert await client.flush()
    first, second = prefactor_api.instances()
    (root,) = prefactor_api.spans(first["id"])
    assert ({"ticket": "ab"}, {"output": "abab"}) == (root["payload"], root["result_payload"])
    (root,) = prefactor_api.spans(second["id"])
    assert ({"n": 3}, {"output": [0, 1, 2], "yielded": 3}) == (
        root["payload"],
        root["result_payload"],
    )


# --- arguments and results ----------------------------------------------------------------------


async def test_a_decorated_coroutine_records_arguments_and_output(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """Bound arguments with defaults applied, merged over the span's own payload."""
    client = make_client()

    @span("agent:tool", payload={"tool": "search"})
    async def search(query: str, k: int = 3, *rest: int, scope: str = "all") -> list[str]:
        return [query] * k

    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        assert ["q", "q"] == await search("q", 2, 7, 8)
    assert await client.flush()
    tool = only_span(prefactor_api, run.id)
    assert {"tool": "search", "query": "q", "k": 2, "rest": [7, 8], "scope": "all"} == tool[
        "payload"
    ]
    assert {"output": ["q", "q"]} == tool["result_payload"]


async def test_a_decorated_function_records_arguments_and_output(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """A def function called inside an async run: keyword arguments bound by name."""
    client = make_client()

    @span("agent:tool")
    def lookup(key: str, *, default: int | None = None, **extra: object) -> int | None:
        return default

    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        assert 5 == lookup("k", default=5, trace=True)
    assert await client.flush()
    tool = only_span(prefactor_api, run.id)
    assert {"key": "k", "default": 5, "extra": {"trace": True}} == tool["payload"]
    assert {"output": 5} == tool["result_payload"]


async def test_methods_leave_self_and_cls_out(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """Methods, async methods and classmethods drop self/cls; staticmethods keep every argument."""
    client = make_client()
    tools = Tools("p-")
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        assert ["p-q"] == tools.search("q", k=1)
        assert {"url": "u"} == await tools.fetch("u")
        assert "Tools:n" == Tools.build("n")
        assert 5 == Tools.add(2, 3)
    assert await client.flush()
    assert run.id is not None
    assert [
        ({"query": "q", "k": 1}, {"output": ["p-q"]}),
        ({"url": "u"}, {"output": {"url": "u"}}),
        ({"name": "n"}, {"output": "Tools:n"}),
        ({"a": 2, "b": 3}, {"output": 5}),
    ] == [(s["payload"], s["result_payload"]) for s in prefactor_api.spans(run.id)]


async def test_generators_record_what_they_yielded(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """A generator's and an async generator's span results list their yields and count them."""
    client = make_client()

    @span("agent:stream")
    def words(text: str) -> Iterator[str]:
        yield from text.split()

    @span("agent:stream")
    async def tokens(n: int) -> AsyncIterator[dict[str, int]]:
        for i in range(n):
            yield {"token": i}

    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        assert ["a", "b"] == list(words("a b"))
        assert [{"token": 0}, {"token": 1}] == [item async for item in tokens(2)]
    assert await client.flush()
    assert run.id is not None
    assert [
        ({"text": "a b"}, {"output": ["a", "b"], "yielded": 2}),
        ({"n": 2}, {"output": [{"token": 0}, {"token": 1}], "yielded": 2}),
    ] == [(s["payload"], s["result_payload"]) for s in prefactor_api.spans(run.id)]


async def test_generator_yields_are_capped(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """Past the item cap (or the size limit) yields are counted, not kept, and marked cut."""
    client = make_client()
    many = DEFAULT_MAX_YIELDS + 50

    @span("agent:stream")
    async def counting() -> AsyncIterator[int]:
        for i in range(many):
            yield i

    @span("agent:stream")
    def chunks() -> Iterator[str]:
        for _ in range(8):
            yield "y" * (DEFAULT_MAX_BYTES // 4)

    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        assert many == len([item async for item in counting()])
        assert 8 == len(list(chunks()))
    assert await client.flush()
    assert run.id is not None
    by_count, by_size = (s["result_payload"] for s in prefactor_api.spans(run.id))
    assert list(range(DEFAULT_MAX_YIELDS)) == by_count["output"]
    assert (many, True) == (by_count["yielded"], by_count["truncated"])
    assert (8, True) == (by_size["yielded"], by_size["truncated"])
    assert 0 < len(by_size["output"]) < 8
    assert len(msgspec.json.encode(by_size)) <= DEFAULT_MAX_BYTES


async def test_arguments_and_outputs_are_converted_and_cut(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """What JSON cannot hold is converted, what is too big is cut: the call itself is untouched."""
    client = make_client()
    huge = "z" * (DEFAULT_MAX_BYTES * 2)

    @span("agent:tool")
    def use(query: Query, raw: bytes, thing: object, big: str) -> object:
        return thing

    thing = Opaque()
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        assert thing is use(Query("q", {"b", "a"}), b"\xff", thing, huge)
    assert await client.flush()
    tool = only_span(prefactor_api, run.id)
    payload = tool["payload"]
    assert {"text": "q", "tags": ["a", "b"]} == payload["query"]
    assert {"_base64": "/w=="} == payload["raw"]
    assert "<Opaque>" == payload["thing"]
    assert payload["big"].startswith("zzz")
    assert "…[truncated " in payload["big"]
    assert len(msgspec.json.encode(payload)) <= DEFAULT_MAX_BYTES
    assert {"output": "<Opaque>"} == tool["result_payload"]


async def test_a_decorated_span_that_raises_records_its_arguments_and_error(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """The arguments as payload, the error (no output) as result."""
    client = make_client()

    @span("agent:tool")
    async def fail(reason: str) -> None:
        raise ToolError(reason)

    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        with pytest.raises(ToolError):
            await fail("nope")
    assert await client.flush()
    tool = only_span(prefactor_api, run.id)
    assert ({"reason": "nope"}, {"error": {"type": qualified(ToolError), "message": "nope"}}) == (
        tool["payload"],
        tool["result_payload"],
    )


# --- turning capture off ------------------------------------------------------------------------


@span("agent:tool", payload={"tool": "search"})
async def captured(query: str) -> str:
    """A decorated tool that fails on 'boom'."""
    if query == "boom":
        raise ToolError(f"failed on {query}")
    return query.upper()


@span("agent:tool", payload={"tool": "search"}, capture=False)
async def uncaptured(query: str) -> str:
    """The same tool with capture off."""
    if query == "boom":
        raise ToolError(f"failed on {query}")
    return query.upper()


async def call_both(tool: Callable[[str], Any]) -> None:
    """Call ``tool`` once successfully and once failing."""
    assert "OK" == await tool("ok")
    with pytest.raises(ToolError):
        await tool("boom")


UNCAPTURED = [
    ("complete", {"tool": "search"}, None),
    ("failed", {"tool": "search"}, None),
]


async def test_capture_false_on_a_span_keeps_everything_out(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """span(capture=False): neither arguments, output nor the error's message is recorded."""
    client = make_client()
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        await call_both(uncaptured)
        with pytest.raises(ToolError):
            async with span("agent:block", capture=False):
                raise ToolError("secret detail")
    assert await client.flush()
    assert run.id is not None
    assert [*UNCAPTURED, ("failed", {}, None)] == [
        (s["status"], s["payload"], s["result_payload"]) for s in prefactor_api.spans(run.id)
    ]


async def test_capture_false_on_the_client_keeps_everything_out(
    prefactor_api: LocalPrefactor, make_client: Callable[..., Client]
) -> None:
    """Client(capture=False): no arguments, outputs or errors, and no root span for a run."""
    client = make_client(capture=False)

    @client.agent_instance(agent_id="a", agent_version=VERSION, capture=True)
    async def agent() -> str:
        await call_both(captured)
        return "done"

    assert "done" == await agent()
    assert await client.flush()
    (instance,) = prefactor_api.instances()
    assert UNCAPTURED == [
        (s["status"], s["payload"], s["result_payload"])
        for s in prefactor_api.spans(instance["id"])
    ]


async def test_capture_false_in_configure_keeps_everything_out(
    prefactor_api: LocalPrefactor,
) -> None:
    """configure(capture=False) turns capture off for the default client's runs."""
    aioprefactor.configure(api_url=prefactor_api.url, api_token=prefactor_api.token, capture=False)
    async with aioprefactor.agent_instance(agent_id="a", agent_version=VERSION) as run:
        await call_both(captured)
    assert await aioprefactor.flush()
    assert run.id is not None
    assert UNCAPTURED == [
        (s["status"], s["payload"], s["result_payload"]) for s in prefactor_api.spans(run.id)
    ]


@pytest.mark.parametrize("value", ["false", "0", "no", "off"])
async def test_the_environment_turns_capture_off(
    prefactor_api: LocalPrefactor,
    make_client: Callable[..., Client],
    monkeypatch: pytest.MonkeyPatch,
    value: str,
) -> None:
    """PREFACTOR_CAPTURE=false turns capture off for a client that does not set it."""
    monkeypatch.setenv("PREFACTOR_CAPTURE", value)
    client = make_client()
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        await call_both(captured)
    assert await client.flush()
    assert run.id is not None
    assert UNCAPTURED == [
        (s["status"], s["payload"], s["result_payload"]) for s in prefactor_api.spans(run.id)
    ]


async def test_the_client_setting_wins_over_the_environment(
    prefactor_api: LocalPrefactor,
    make_client: Callable[..., Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Client(capture=True) records even with PREFACTOR_CAPTURE=false."""
    monkeypatch.setenv("PREFACTOR_CAPTURE", "false")
    client = make_client(capture=True)
    async with client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        await call_both(captured)
    assert await client.flush()
    assert run.id is not None
    assert [
        ("complete", {"tool": "search", "query": "ok"}, {"output": "OK"}),
        (
            "failed",
            {"tool": "search", "query": "boom"},
            {"error": {"type": qualified(ToolError), "message": "failed on boom"}},
        ),
    ] == [(s["status"], s["payload"], s["result_payload"]) for s in prefactor_api.spans(run.id)]


async def test_the_token_never_reaches_a_payload_or_a_result(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """Arguments, return values, payloads and results holding the token are scrubbed."""
    token = prefactor_api.token

    @span("agent:login")
    def login(user: str, secret: str) -> dict[str, str]:
        return {"header": f"Bearer {secret}"}

    async with prefactor_client.agent_instance(agent_id="a", agent_version=VERSION) as run:
        login("ada", token)
        async with span("agent:call", {"auth": token, token: "as a key"}) as call:
            call.set_result({"echo": [f"got {token}"]})
    await prefactor_client.flush()
    assert run.id is not None
    spans = prefactor_api.spans(run.id)
    assert 2 == len(spans)
    recorded = msgspec.json.encode([[s["payload"], s["result_payload"]] for s in spans])
    assert token.encode() not in recorded
    by_name = {s["schema_name"]: s for s in spans}
    assert "ada" == by_name["agent:login"]["payload"]["user"]
    assert by_name["agent:login"]["result_payload"]["output"]["header"].startswith("Bearer ")


async def test_a_capturing_entrypoint_declares_its_root_span_type(
    prefactor_api: LocalPrefactor, prefactor_client: Client
) -> None:
    """agent:run is in the registered schema version with capture=True, and only then."""
    aioprefactor.declare_span_type("agent:step")

    @prefactor_client.agent_instance(agent_id="a", agent_version=VERSION, capture=True)
    async def capturing() -> None:
        pass

    @prefactor_client.agent_instance(agent_id="a", agent_version=VERSION)
    async def plain() -> None:
        pass

    await capturing()
    await plain()
    await prefactor_client.flush()
    registrations = [  # sent alone or in a bulk request
        body
        for r in prefactor_api.requests
        for body in (
            [r.body]
            if r.route == "agent_instances.register"
            else [i for i in r.body["items"] if i["_type"] == "agent_instances/register"]
            if r.route == "bulk"
            else []
        )
    ]
    names = sorted(
        [t["name"] for t in body["agent_schema_version"]["span_type_schemas"]]
        for body in registrations
    )
    assert [["agent:run", "agent:step"], ["agent:step"]] == names
