"""Bad input to the public API, catalogued: each gets a clear local error, nothing is sent."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pytest

import aioprefactor
from aioprefactor import AgentVersion, BulkItem, Client, PrefactorNotFoundError, _default

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from _pytest.mark.structures import ParameterSet

    from aioprefactor.testing import LocalPrefactor

# The calls below break the public types on purpose; mypy is told so once, here.
pf: Any = aioprefactor

VERSION: dict[str, Any] = {"name": "Bad input agent", "external_identifier": "1.0.0"}
SCHEMA: dict[str, Any] = {"external_identifier": "schema-1"}
NAIVE = datetime(2024, 1, 1, 12, 0)  # naive on purpose: it is the bad input
AWARE = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
KEY_65 = "k" * 65
BAD_TOKEN = "s3cr3t-token-never-echoed"  # the messages must never show it
NAN = float("nan")
INF = float("inf")


@dataclass(frozen=True)
class Ctx:
    """What a case may use: open clients bound to the local API, its URL and token.

    ``small`` caps requests at 1024 bytes.
    """

    client: Any
    small: Any
    url: str
    token: str


def untyped(value: object) -> Any:
    """``value``, hidden from mypy: for a Struct field given the wrong type on purpose."""
    return value


def _cyclic() -> dict[str, Any]:
    payload: dict[str, Any] = {"name": "loop"}
    payload["self"] = payload
    return payload


def bad(
    case_id: str,
    error: type[Exception],
    fragment: str,
    call: Callable[[Ctx], object],
    *,
    bug: str | None = None,
) -> ParameterSet:
    """One row of the catalogue; ``bug`` marks a case the library fails today."""
    marks = [] if bug is None else [pytest.mark.xfail(reason=bug, strict=True)]
    return pytest.param(call, error, fragment, id=case_id, marks=marks)


BAD_INPUTS = [
    # --- Client: URL ----------------------------------------------------------------------
    bad("url-ftp", ValueError, "http://", lambda c: pf.Client("ftp://127.0.0.1/", c.token)),
    bad("url-no-scheme", ValueError, "api_url", lambda c: pf.Client("127.0.0.1:8080", c.token)),
    bad("url-empty", ValueError, "api_url is empty", lambda c: pf.Client("", c.token)),
    bad("url-blank", ValueError, "api_url is empty", lambda c: pf.Client("   ", c.token)),
    bad(
        "url-http-remote",
        ValueError,
        "plain http",
        lambda c: pf.Client("http://api.example.com", c.token),
    ),
    bad(
        "url-fragment",
        ValueError,
        "fragment",
        lambda c: pf.Client("https://api.example.com/#top", c.token),
    ),
    bad(
        "url-query-with-token",
        ValueError,
        "query",
        lambda c: pf.Client(f"https://api.example.com/?api_key={c.token}", c.token),
    ),
    bad(
        "url-credentials",
        ValueError,
        "credentials",
        lambda c: pf.Client(f"https://bot:{c.token}@api.example.com", c.token),
    ),
    bad(
        "url-int",
        TypeError,
        "api_url",
        lambda c: pf.Client(8080, c.token),
    ),
    bad(
        "url-insecure-flag-str",
        TypeError,
        "allow_insecure_http",
        lambda c: pf.Client("http://api.example.com", c.token, allow_insecure_http="false"),
    ),
    # --- Client: token and limits -----------------------------------------------------------
    bad("token-empty", ValueError, "api_token is empty", lambda c: pf.Client(c.url, "")),
    bad("token-blank", ValueError, "api_token is empty", lambda c: pf.Client(c.url, " \t ")),
    bad(
        "token-padded",
        ValueError,
        "whitespace",
        lambda c: pf.Client(c.url, f" {BAD_TOKEN} "),
    ),
    bad(
        "token-header-injection",
        ValueError,
        "control characters",
        lambda c: pf.Client(c.url, f"{BAD_TOKEN}\r\nX-Evil: 1"),
    ),
    bad("token-int", TypeError, "api_token must be a str", lambda c: pf.Client(c.url, 12345)),
    bad(
        "max-retries-str",
        TypeError,
        "max_retries",
        lambda c: pf.Client(c.url, c.token, max_retries="3"),
    ),
    bad(
        "max-retries-negative",
        ValueError,
        "max_retries",
        lambda c: pf.Client(c.url, c.token, max_retries=-1),
    ),
    bad(
        "max-response-bytes-tiny",
        ValueError,
        "max_response_bytes",
        lambda c: pf.Client(c.url, c.token, max_response_bytes=10),
    ),
    bad(
        "total-timeout-nan",
        ValueError,
        "total_timeout",
        lambda c: pf.Client(c.url, c.token, total_timeout=NAN),
    ),
    bad(
        "connect-timeout-str",
        TypeError,
        "connect_timeout",
        lambda c: pf.Client(c.url, c.token, connect_timeout="5"),
    ),
    bad(
        "retry-statuses-200",
        ValueError,
        "retry_statuses",
        lambda c: pf.Client(c.url, c.token, retry_statuses=[200]),
    ),
    bad(
        "retry-statuses-int",
        TypeError,
        "retry_statuses",
        lambda c: pf.Client(c.url, c.token, retry_statuses=503),
    ),
    bad(
        "max-connections-zero",
        ValueError,
        "max_connections",
        lambda c: pf.Client(c.url, c.token, max_connections=0),
    ),
    bad(
        "configure-url-alone",
        ValueError,
        "api_url",
        lambda c: pf.configure(api_url="ftp://127.0.0.1/"),
    ),
    bad(
        "configure-url-and-token",
        ValueError,
        "http://",
        lambda c: pf.configure("ftp://127.0.0.1/", c.token),
    ),
    # --- agent_instances.register ----------------------------------------------------------
    bad(
        "register-agent-id-int",
        TypeError,
        "agent_id must be a str",
        lambda c: c.client.agent_instances.register(5, VERSION, SCHEMA),
    ),
    bad(
        "register-agent-id-empty",
        ValueError,
        "agent_id must not be empty",
        lambda c: c.client.agent_instances.register("", VERSION, SCHEMA),
    ),
    bad(
        "register-version-str",
        TypeError,
        "agent_version must be",
        lambda c: c.client.agent_instances.register("a", "1.0.0", SCHEMA),
    ),
    bad(
        "register-version-missing-fields",
        ValueError,
        "agent_version is not a valid AgentVersion",
        lambda c: c.client.agent_instances.register("a", {"name": "x"}, SCHEMA),
    ),
    bad(
        "register-version-name-int",
        ValueError,
        "$.name",
        lambda c: c.client.agent_instances.register(
            "a", {"name": 5, "external_identifier": "1"}, SCHEMA
        ),
    ),
    bad(
        "register-version-struct-built-wrong",
        ValueError,
        "agent_version",
        lambda c: c.client.agent_instances.register(
            "a", AgentVersion(name=untyped(5), external_identifier="1"), SCHEMA
        ),
    ),
    bad(
        "register-runtime-sdk-str-for-list",
        ValueError,
        "prefactor_sdk",
        lambda c: c.client.agent_instances.register(
            "a",
            {**VERSION, "runtime_environment": {"prefactor_sdk": "aioprefactor"}},
            SCHEMA,
        ),
    ),
    bad(
        "register-schema-list-for-dict",
        TypeError,
        "agent_schema_version must be",
        lambda c: c.client.agent_instances.register("a", VERSION, ["schema-1"]),
    ),
    bad(
        "register-span-types-dict-for-list",
        ValueError,
        "span_type_schemas",
        lambda c: c.client.agent_instances.register(
            "a",
            VERSION,
            {**SCHEMA, "span_type_schemas": {"name": "agent:llm", "params_schema": {}}},
        ),
    ),
    bad(
        "register-id-int",
        TypeError,
        "id must be a str",
        lambda c: c.client.agent_instances.register("a", VERSION, SCHEMA, 7),
    ),
    bad(
        "register-key-65",
        ValueError,
        "idempotency_key must be 1 to 64 characters, got 65",
        lambda c: c.client.agent_instances.register("a", VERSION, SCHEMA, None, KEY_65),
    ),
    bad(
        "register-key-empty",
        ValueError,
        "idempotency_key must be 1 to 64 characters, got 0",
        lambda c: c.client.agent_instances.register("a", VERSION, SCHEMA, None, ""),
    ),
    bad(
        "register-key-int",
        TypeError,
        "idempotency_key must be a str",
        lambda c: c.client.agent_instances.register("a", VERSION, SCHEMA, None, 123),
    ),
    bad(
        "register-key-control-char",
        ValueError,
        "control characters",
        lambda c: c.client.agent_instances.register("a", VERSION, SCHEMA, None, "key\nline"),
    ),
    bad(
        "register-update-current-str",
        TypeError,
        "update_current_version must be a bool",
        lambda c: c.client.agent_instances.register("a", VERSION, SCHEMA, None, None, "true"),
    ),
    bad(
        "register-update-current-int",
        TypeError,
        "update_current_version must be a bool",
        lambda c: c.client.agent_instances.register("a", VERSION, SCHEMA, None, None, 1),
    ),
    bad(
        "register-purpose-unknown",
        ValueError,
        "purpose must be one of",
        lambda c: c.client.agent_instances.register("a", VERSION, SCHEMA, purpose="prod"),
    ),
    bad(
        "register-environment-list",
        TypeError,
        "environment_id must be a str",
        lambda c: c.client.agent_instances.register("a", VERSION, SCHEMA, environment_id=[]),
    ),
    bad(
        "register-external-id-bytes",
        TypeError,
        "external_identifier must be a str",
        lambda c: c.client.agent_instances.register("a", VERSION, SCHEMA, external_identifier=b"x"),
    ),
    # --- agent_instances.start / finish / get / record_quality --------------------------------
    bad(
        "start-id-empty",
        ValueError,
        "agent_instance_id must not be empty",
        lambda c: c.client.agent_instances.start(""),
    ),
    bad(
        "start-id-none",
        TypeError,
        "agent_instance_id must be a str",
        lambda c: c.client.agent_instances.start(None),
    ),
    bad(
        "start-timestamp-naive",
        ValueError,
        "timezone-aware",
        lambda c: c.client.agent_instances.start("i", NAIVE),
    ),
    bad(
        "start-timestamp-str",
        TypeError,
        "timestamp must be a datetime",
        lambda c: c.client.agent_instances.start("i", "2024-01-01T12:00:00Z"),
    ),
    bad(
        "start-timestamp-epoch",
        TypeError,
        "timestamp must be a datetime",
        lambda c: c.client.agent_instances.start("i", 1_700_000_000),
    ),
    bad(
        "start-key-65",
        ValueError,
        "got 65",
        lambda c: c.client.agent_instances.start("i", idempotency_key=KEY_65),
    ),
    bad(
        "finish-status-unknown",
        ValueError,
        "status must be one of cancelled, complete, failed; got 'done'",
        lambda c: c.client.agent_instances.finish("i", "done"),
    ),
    bad(
        "finish-status-uppercase",
        ValueError,
        "'COMPLETE'",
        lambda c: c.client.agent_instances.finish("i", "COMPLETE"),
    ),
    bad(
        "finish-status-terminated",
        ValueError,
        "'terminated'",
        lambda c: c.client.agent_instances.finish("i", "terminated"),
    ),
    bad(
        "finish-status-active",
        ValueError,
        "'active'",
        lambda c: c.client.agent_instances.finish("i", "active"),
    ),
    bad(
        "finish-status-empty",
        ValueError,
        "got ''",
        lambda c: c.client.agent_instances.finish("i", ""),
    ),
    bad(
        "finish-status-list",
        ValueError,
        "['complete']",
        lambda c: c.client.agent_instances.finish("i", ["complete"]),
    ),
    bad(
        "finish-timestamp-naive",
        ValueError,
        "timezone-aware",
        lambda c: c.client.agent_instances.finish("i", "complete", NAIVE),
    ),
    bad(
        "finish-id-empty",
        ValueError,
        "agent_instance_id must not be empty",
        lambda c: c.client.agent_instances.finish("", "complete"),
    ),
    bad(
        "finish-key-65",
        ValueError,
        "got 65",
        lambda c: c.client.agent_instances.finish("i", "complete", None, KEY_65),
    ),
    bad(
        "get-id-empty",
        ValueError,
        "agent_instance_id must not be empty",
        lambda c: c.client.agent_instances.get(""),
    ),
    bad(
        "get-id-int",
        TypeError,
        "agent_instance_id must be a str, not int",
        lambda c: c.client.agent_instances.get(42),
    ),
    bad(
        "quality-name-empty",
        ValueError,
        "name must not be empty",
        lambda c: c.client.agent_instances.record_quality("i", "", {"score": 1}),
    ),
    bad(
        "quality-payload-list",
        TypeError,
        "payload must be a dict",
        lambda c: c.client.agent_instances.record_quality("i", "q", [1, 2]),
    ),
    # --- agent_spans.create ---------------------------------------------------------------
    bad(
        "span-create-instance-empty",
        ValueError,
        "agent_instance_id must not be empty",
        lambda c: c.client.agent_spans.create("", "agent:llm"),
    ),
    bad(
        "span-create-schema-none",
        TypeError,
        "schema_name is required",
        lambda c: c.client.agent_spans.create("i", None),
    ),
    bad(
        "span-create-schema-int",
        TypeError,
        "schema_name must be a str",
        lambda c: c.client.agent_spans.create("i", 3),
    ),
    bad(
        "span-create-status-unknown",
        ValueError,
        "got 'running'",
        lambda c: c.client.agent_spans.create("i", "agent:llm", "running"),
    ),
    bad(
        "span-create-status-terminated",
        ValueError,
        "got 'terminated'",
        lambda c: c.client.agent_spans.create("i", "agent:llm", "terminated"),
    ),
    bad(
        "span-create-status-bool",
        ValueError,
        "got True",
        lambda c: c.client.agent_spans.create("i", "agent:llm", True),
    ),
    bad(
        "payload-nan",
        ValueError,
        "payload['score'] is nan",
        lambda c: c.client.agent_spans.create("i", "agent:llm", payload={"score": NAN}),
    ),
    bad(
        "payload-inf",
        ValueError,
        "payload['limit'] is inf",
        lambda c: c.client.agent_spans.create("i", "agent:llm", payload={"limit": INF}),
    ),
    bad(
        "payload-minus-inf-deep",
        ValueError,
        "payload['a'][0]['b'][1]['c'] is -inf",
        lambda c: c.client.agent_spans.create(
            "i", "agent:llm", payload={"a": [{"b": [0, {"c": -INF}]}]}
        ),
    ),
    bad(
        "payload-set",
        TypeError,
        "payload['tags'] holds",
        lambda c: c.client.agent_spans.create("i", "agent:llm", payload={"tags": {"a", "b"}}),
    ),
    bad(
        "payload-object",
        TypeError,
        "of type object",
        lambda c: c.client.agent_spans.create("i", "agent:llm", payload={"o": object()}),
    ),
    bad(
        "payload-bytes",
        TypeError,
        "payload['raw'] holds b'\\x00\\x01' of type bytes",
        lambda c: c.client.agent_spans.create("i", "agent:llm", payload={"raw": b"\x00\x01"}),
    ),
    bad(
        "payload-decimal",
        TypeError,
        "of type Decimal",
        lambda c: c.client.agent_spans.create("i", "agent:llm", payload={"p": Decimal("1.1")}),
    ),
    bad(
        "payload-int-key",
        TypeError,
        "payload has a key 1 of type int",
        lambda c: c.client.agent_spans.create("i", "agent:llm", payload={1: "x"}),
    ),
    bad(
        "payload-tuple-key-deep",
        TypeError,
        "payload['a'][0][0] has a key (1, 2) of type tuple",
        lambda c: c.client.agent_spans.create("i", "agent:llm", payload={"a": [[{(1, 2): "x"}]]}),
    ),
    bad(
        "payload-list-for-dict",
        TypeError,
        "payload must be a dict, not list",
        lambda c: c.client.agent_spans.create("i", "agent:llm", payload=[("a", 1)]),
    ),
    bad(
        "payload-str",
        TypeError,
        "payload must be a dict, not str",
        lambda c: c.client.agent_spans.create("i", "agent:llm", payload="text"),
    ),
    bad(
        "payload-cycle",
        ValueError,
        "payload",
        lambda c: c.client.agent_spans.create("i", "agent:llm", payload=_cyclic()),
    ),
    bad(
        "payload-over-default-cap",
        ValueError,
        "over the max_request_bytes limit of 5242880",
        lambda c: c.client.agent_spans.create(
            "i", "agent:llm", payload={"blob": "x" * (5 * 1024 * 1024)}
        ),
    ),
    bad(
        "payload-over-set-cap",
        ValueError,
        "max_request_bytes limit of 1024",
        lambda c: c.small.agent_spans.create("i", "agent:llm", payload={"blob": "x" * 2000}),
    ),
    bad(
        "result-payload-nan",
        ValueError,
        "result_payload['x'] is nan",
        lambda c: c.client.agent_spans.create(
            "i", "agent:llm", "complete", result_payload={"x": NAN}
        ),
    ),
    bad(
        "span-create-id-int",
        TypeError,
        "id must be a str",
        lambda c: c.client.agent_spans.create("i", "agent:llm", id=5),
    ),
    bad(
        "span-create-parent-empty",
        ValueError,
        "parent_span_id must not be empty",
        lambda c: c.client.agent_spans.create("i", "agent:llm", parent_span_id=""),
    ),
    bad(
        "span-create-started-naive",
        ValueError,
        "started_at must be timezone-aware",
        lambda c: c.client.agent_spans.create("i", "agent:llm", started_at=NAIVE),
    ),
    bad(
        "span-create-finished-str",
        TypeError,
        "finished_at must be a datetime",
        lambda c: c.client.agent_spans.create("i", "agent:llm", finished_at="yesterday"),
    ),
    bad(
        "span-create-key-65",
        ValueError,
        "got 65",
        lambda c: c.client.agent_spans.create("i", "agent:llm", idempotency_key=KEY_65),
    ),
    # --- agent_spans.finish ---------------------------------------------------------------
    bad(
        "span-finish-id-empty",
        ValueError,
        "agent_span_id must not be empty",
        lambda c: c.client.agent_spans.finish(""),
    ),
    bad(
        "span-finish-id-int",
        TypeError,
        "agent_span_id must be a str",
        lambda c: c.client.agent_spans.finish(9),
    ),
    bad(
        "span-finish-status-unknown",
        ValueError,
        "got 'ok'",
        lambda c: c.client.agent_spans.finish("s", "ok"),
    ),
    bad(
        "span-finish-status-pending",
        ValueError,
        "got 'pending'",
        lambda c: c.client.agent_spans.finish("s", "pending"),
    ),
    bad(
        "span-finish-result-str",
        TypeError,
        "result_payload must be a dict, not str",
        lambda c: c.client.agent_spans.finish("s", "complete", "done"),
    ),
    bad(
        "span-finish-result-set",
        TypeError,
        "result_payload['ids'] holds",
        lambda c: c.client.agent_spans.finish("s", "complete", {"ids": frozenset({1})}),
    ),
    bad(
        "span-finish-timestamp-naive",
        ValueError,
        "timezone-aware",
        lambda c: c.client.agent_spans.finish("s", "complete", None, NAIVE),
    ),
    bad(
        "span-finish-key-empty",
        ValueError,
        "got 0",
        lambda c: c.client.agent_spans.finish("s", "complete", None, AWARE, ""),
    ),
    # --- bulk.execute ---------------------------------------------------------------------
    bad("bulk-empty", ValueError, "at least one item", lambda c: c.client.bulk.execute([])),
    bad(
        "bulk-str",
        TypeError,
        "items must be a sequence",
        lambda c: c.client.bulk.execute("agent_instances/start"),
    ),
    bad(
        "bulk-dict-for-list",
        TypeError,
        "items must be a sequence",
        lambda c: c.client.bulk.execute(
            {"_type": "agent_instances/start", "idempotency_key": "key-0001"}
        ),
    ),
    bad(
        "bulk-duplicate-keys",
        ValueError,
        "repeated: ['key-0001']",
        lambda c: c.client.bulk.execute(
            [
                {"_type": "agent_instances/start", "idempotency_key": "key-0001", "id": "a"},
                {"_type": "agent_instances/finish", "idempotency_key": "key-0001", "id": "a"},
            ]
        ),
    ),
    bad(
        "bulk-short-key",
        ValueError,
        "items[0].idempotency_key must be 8 to 64 characters, got 5",
        lambda c: c.client.bulk.execute(
            [{"_type": "agent_instances/start", "idempotency_key": "short"}]
        ),
    ),
    bad(
        "bulk-long-key",
        ValueError,
        "got 65",
        lambda c: c.client.bulk.execute(
            [{"_type": "agent_instances/start", "idempotency_key": KEY_65}]
        ),
    ),
    bad(
        "bulk-missing-key",
        TypeError,
        "items[0].idempotency_key is required",
        lambda c: c.client.bulk.execute([{"_type": "agent_instances/start"}]),
    ),
    bad(
        "bulk-unknown-type",
        ValueError,
        "items[1]._type must be one of",
        lambda c: c.client.bulk.execute(
            [
                {"_type": "agent_instances/start", "idempotency_key": "key-0001"},
                {"_type": "agent_instances/delete", "idempotency_key": "key-0002"},
            ]
        ),
    ),
    bad(
        "bulk-missing-type",
        ValueError,
        "items[0]._type must be one of",
        lambda c: c.client.bulk.execute([{"idempotency_key": "key-0001"}]),
    ),
    bad(
        "bulk-item-int",
        TypeError,
        "items[0] must be a BulkItem or a dict, not int",
        lambda c: c.client.bulk.execute([5]),
    ),
    bad(
        "bulk-item-struct-bad-type",
        ValueError,
        "items[0]._type",
        lambda c: c.client.bulk.execute(
            [BulkItem(type=untyped("bogus"), idempotency_key="key-0001")]
        ),
    ),
    bad(
        "bulk-params-nan",
        ValueError,
        "items[0].params['score'] is nan",
        lambda c: c.client.bulk.execute(
            [{"_type": "agent_spans/finish", "idempotency_key": "key-0001", "score": NAN}]
        ),
    ),
    # --- agent_instance (module-level and on a client) ------------------------------------
    bad("run-no-version", TypeError, "agent_version", lambda c: pf.agent_instance(agent_id="a")),
    bad(
        "run-version-none",
        TypeError,
        "agent_version is required",
        lambda c: pf.agent_instance(agent_version=None),
    ),
    bad(
        "run-version-str",
        TypeError,
        "agent_version must be",
        lambda c: c.client.agent_instance(agent_version="1.0.0"),
    ),
    bad(
        "run-agent-id-int",
        TypeError,
        "agent_id must be a str",
        lambda c: pf.agent_instance(agent_id=5, agent_version=VERSION),
    ),
    bad(
        "run-purpose-unknown",
        ValueError,
        "got 'production'",
        lambda c: c.client.agent_instance(agent_version=VERSION, purpose="production"),
    ),
    bad(
        "run-strict-str",
        TypeError,
        "strict must be a bool",
        lambda c: c.client.agent_instance(agent_version=VERSION, strict="yes"),
    ),
    bad(
        "run-update-current-str",
        TypeError,
        "update_current_version must be a bool",
        lambda c: pf.agent_instance(agent_version=VERSION, update_current_version="no"),
    ),
    bad(
        "run-schema-and-span-types",
        TypeError,
        "not both",
        lambda c: c.client.agent_instance(
            agent_version=VERSION, agent_schema_version=SCHEMA, span_types=[]
        ),
    ),
    bad(
        "run-span-types-str",
        TypeError,
        "span_types[] must be",
        lambda c: c.client.agent_instance(agent_version=VERSION, span_types="agent:llm"),
    ),
    bad(
        "run-enter-zero",
        ValueError,
        "enter_timeout must be a positive number",
        lambda c: c.client.agent_instance(agent_version=VERSION, enter_timeout=0),
    ),
    bad(
        "run-enter-negative",
        ValueError,
        "enter_timeout must be a positive number",
        lambda c: pf.agent_instance(agent_version=VERSION, enter_timeout=-1.0),
    ),
    bad(
        "run-enter-bool",
        TypeError,
        "enter_timeout must be a number",
        lambda c: pf.agent_instance(agent_version=VERSION, enter_timeout=True),
    ),
    bad(
        "run-finish-nan",
        ValueError,
        "finish_timeout must be a positive number",
        lambda c: c.client.agent_instance(agent_version=VERSION, finish_timeout=NAN),
    ),
    bad(
        "run-finish-str",
        TypeError,
        "finish_timeout must be a number",
        lambda c: c.client.agent_instance(agent_version=VERSION, finish_timeout="10"),
    ),
    # --- span -----------------------------------------------------------------------------
    bad("span-schema-empty", ValueError, "schema_name must not be empty", lambda c: pf.span("")),
    bad("span-schema-none", TypeError, "schema_name is required", lambda c: pf.span(None)),
    bad(
        "span-payload-nan",
        ValueError,
        "payload['t'] is nan",
        lambda c: pf.span("agent:llm", {"t": NAN}, strict=True),
    ),
    bad(
        "span-payload-list",
        TypeError,
        "payload must be a dict",
        lambda c: pf.span("agent:llm", ["a"], strict=True),
    ),
    bad(
        "span-parent-str",
        TypeError,
        "parent must be a span handle, not str",
        lambda c: pf.span("agent:llm", parent="span-id"),
    ),
    bad(
        "span-strict-str",
        TypeError,
        "strict must be a bool",
        lambda c: pf.span("agent:llm", strict="no"),
    ),
    bad(
        "span-enter-negative",
        ValueError,
        "enter_timeout",
        lambda c: pf.span("agent:llm", enter_timeout=-1.0),
    ),
    bad(
        "span-finish-str",
        TypeError,
        "finish_timeout",
        lambda c: pf.span("agent:llm", finish_timeout="soon"),
    ),
]


async def attempt(call: Callable[[Ctx], object], ctx: Ctx) -> None:
    """Make the call, and await it when it is a coroutine."""
    result = call(ctx)
    if inspect.isawaitable(result):
        await result


@pytest.fixture(autouse=True)
def _no_default_client() -> Iterator[None]:
    """Start and end every test with no configured default client."""
    _default.reset()
    yield
    _default.reset()


@pytest.mark.parametrize(("call", "error", "fragment"), BAD_INPUTS)
async def test_bad_input_raises_before_sending(
    prefactor_api: LocalPrefactor,
    call: Callable[[Ctx], object],
    error: type[Exception],
    fragment: str,
) -> None:
    """`error` naming the bad argument, without the token, and no request sent."""
    url, token = prefactor_api.url, prefactor_api.token
    async with Client(url, token) as client, Client(url, token, max_request_bytes=1024) as small:
        ctx = Ctx(client=client, small=small, url=url, token=token)
        with pytest.raises(Exception) as info:  # noqa: PT011 - the exact type is checked below
            await attempt(call, ctx)
    assert error is type(info.value), repr(info.value)
    message = str(info.value)
    assert fragment in message
    for secret in (prefactor_api.token, BAD_TOKEN):
        assert secret not in message
        assert secret not in repr(info.value)
    assert prefactor_api.requests == []


ODD_IDS = [
    "a/b",
    "/",
    "..",
    ".",
    "../register",
    "../../ping",
    "x/../../agent_spans",
    "x?status=complete",
    "?",
    "x#frag",
    "#",
    "100%",
    "%2F",
    "%2e%2e",
    "%252F",
    "a b+c",
    "ünï/..",
]

OPERATIONS: list[tuple[str, str, str, Callable[[Client, str], Awaitable[object]]]] = [
    (
        "agent_instances.get",
        "/api/v1/agent_instance/",
        "",
        lambda client, i: client.agent_instances.get(i),
    ),
    (
        "agent_instances.start",
        "/api/v1/agent_instance/",
        "/start",
        lambda client, i: client.agent_instances.start(i),
    ),
    (
        "agent_instances.finish",
        "/api/v1/agent_instance/",
        "/finish",
        lambda client, i: client.agent_instances.finish(i, "failed"),
    ),
    (
        "agent_instances.record_quality",
        "/api/v1/agent_instance/",
        "/record_quality",
        lambda client, i: client.agent_instances.record_quality(i, "q", {"score": 1}),
    ),
    (
        "agent_spans.finish",
        "/api/v1/agent_spans/",
        "/finish",
        lambda client, i: client.agent_spans.finish(i, "complete"),
    ),
]


@pytest.mark.parametrize("odd_id", ODD_IDS)
async def test_odd_id_lands_on_its_own_resource(prefactor_api: LocalPrefactor, odd_id: str) -> None:
    """404 for exactly that id, on the intended route, with the id kept in one path segment."""
    async with Client(prefactor_api.url, prefactor_api.token) as client:
        for _, _, _, send in OPERATIONS:
            with pytest.raises(PrefactorNotFoundError) as info:
                await send(client, odd_id)
            assert f"{odd_id!r} not found" in str(info.value)
    assert [r.route for r in prefactor_api.requests] == [op[0] for op in OPERATIONS]
    for request, (_, prefix, suffix, _) in zip(prefactor_api.requests, OPERATIONS, strict=True):
        assert request.status == 404
        assert request.path.startswith(prefix)
        assert request.path.endswith(suffix)
        segment = request.path[len(prefix) : len(request.path) - len(suffix)]
        assert not set(segment) & set("/?#"), segment
        assert unquote(segment) == odd_id
