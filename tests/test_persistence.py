"""The local API's SQLite storage: runs survive restarts, answered requests survive a crash."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

import aioprefactor
from aioprefactor import span
from aioprefactor.__main__ import main
from aioprefactor.testing import LocalPrefactor, StorageError
from aioprefactor.testing._records import Instance, SchemaVersion, utcnow
from aioprefactor.testing._state import Store
from aioprefactor.testing._storage import MemoryStorage, Records

if TYPE_CHECKING:
    from pathlib import Path

VERSION = {"name": "Persisted bot", "external_identifier": "2.0.0"}
REGISTER_BODY = {"agent_version": VERSION, "agent_schema_version": {"external_identifier": "s1"}}


async def record_run(api: LocalPrefactor, name: str, *, fail: bool = False) -> str:
    """Record one run with two nested spans through a client of its own; return its id."""
    async with aioprefactor.Client(api_url=api.url, api_token=api.token) as client:
        run_scope = client.agent_instance(agent_id=name, agent_version=VERSION)
        try:
            async with run_scope as run:
                async with span("agent:plan", payload={"step": 1}) as outer:
                    async with span("agent:tool", payload={"q": name}) as inner:
                        inner.set_result({"ok": not fail})
                    outer.set_result({"plan": "done"})
                if fail:
                    raise RuntimeError(name)
        except RuntimeError:
            pass
        await client.flush()
    assert run.id is not None
    return run.id


async def test_a_restart_keeps_runs_spans_and_versions(tmp_path: Path) -> None:
    """Everything recorded with `db` is there, unchanged, after the server restarts."""
    db = tmp_path / "runs.sqlite"
    async with LocalPrefactor(db=db) as api:
        completed = await record_run(api, "bot-a")
        failed = await record_run(api, "bot-b", fail=True)
        api.terminate(await register(api), "stopped by hand")
        before = (api.instances(), api.spans(), api.agent_versions(), api.schema_versions())
    async with LocalPrefactor(db=db) as api:
        after = (api.instances(), api.spans(), api.agent_versions(), api.schema_versions())
        assert before == after
        assert "complete" == api.instance(completed)["status"]
        assert "failed" == api.instance(failed)["status"]
        assert 2 == api.instance(completed)["span_counts"]["complete"]
        # The restored store is live: the same state machine goes on from where it was.
        third = await record_run(api, "bot-c")
    async with LocalPrefactor(db=db) as api:
        assert [completed, failed, third] == [
            i["id"] for i in api.instances() if i["status"] != "terminated"
        ]


async def register(api: LocalPrefactor) -> str:
    """Register an instance (left `pending`) over HTTP; return its id."""
    headers = {"Authorization": f"Bearer {api.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{api.url}/api/v1/agent_instance/register", json=REGISTER_BODY, headers=headers
        ) as response,
    ):
        instance_id: str = (await response.json())["details"]["id"]
    return instance_id


async def test_idempotent_replies_are_replayed_after_a_restart(tmp_path: Path) -> None:
    """A request retried with its idempotency key after a restart gets the first answer."""
    db = tmp_path / "runs.sqlite"
    body = {**REGISTER_BODY, "idempotency_key": "key-register-1"}
    async with LocalPrefactor(db=db, token="t") as api, aiohttp.ClientSession() as http:
        headers = {"Authorization": "Bearer t"}
        async with http.post(
            f"{api.url}/api/v1/agent_instance/register", json=body, headers=headers
        ) as response:
            first = await response.json()
    async with LocalPrefactor(db=db, token="t") as api, aiohttp.ClientSession() as http:
        async with http.post(
            f"{api.url}/api/v1/agent_instance/register", json=body, headers=headers
        ) as response:
            assert 200 == response.status
            assert first == await response.json()
        assert [True] == [r.replayed for r in api.requests]
        assert 1 == len(api.instances())


async def test_a_hundred_concurrent_clients_lose_nothing(tmp_path: Path) -> None:
    """100 runs recorded at once by 100 clients are all saved, each with both spans."""
    db = tmp_path / "runs.sqlite"
    async with LocalPrefactor(db=db) as api:
        ids = await asyncio.gather(*(record_run(api, f"bot-{n}") for n in range(100)))
    assert 100 == len(set(ids))
    async with LocalPrefactor(db=db) as api:
        saved = {i["id"]: i for i in api.instances()}
        assert set(ids) == set(saved)
        assert {"complete"} == {i["status"] for i in saved.values()}
        assert {2} == {i["span_counts"]["complete"] for i in saved.values()}
        assert 200 == len(api.spans())


async def test_reset_empties_the_database(tmp_path: Path) -> None:
    """`reset()` forgets the records in the file too."""
    db = tmp_path / "runs.sqlite"
    async with LocalPrefactor(db=db) as api:
        await record_run(api, "bot")
        api.reset()
    async with LocalPrefactor(db=db) as api:
        assert [] == api.instances()


class FailingStorage(MemoryStorage):
    """Saves nothing and fails every save after the first `ok` ones."""

    def __init__(self, ok: int) -> None:
        self.ok = ok

    def save(self, changes: Records) -> None:
        """Fail once the allowance is spent."""
        if self.ok == 0:
            raise StorageError("disk full")
        self.ok -= 1


def test_a_failed_save_leaves_the_store_as_saved() -> None:
    """When the storage cannot save, the store goes back to what was saved, and says so."""
    store = Store(FailingStorage(ok=0))
    now = utcnow()
    schema = SchemaVersion(
        id="s", agent_id="a", external_identifier="s", document={}, span_titles={}, inserted_at=now
    )
    store.instances["i"] = Instance(
        id="i",
        agent_id="a",
        agent_version_id="v",
        schema_version=schema,
        environment_id="e",
        agent_deployment_id="d",
        external_identifier=None,
        purpose="live",
        inserted_at=now,
        updated_at=now,
    )
    store.start("i", None)
    with pytest.raises(StorageError, match="disk full"):
        store.commit()
    assert {} == store.instances  # what the (empty) storage holds


async def test_a_failed_save_is_answered_503_and_changes_nothing(tmp_path: Path) -> None:
    """A request whose change cannot be saved is answered 503 and may be retried."""
    async with LocalPrefactor(token="t") as api, aiohttp.ClientSession() as http:
        api._app.use(FailingStorage(ok=0))
        headers = {"Authorization": "Bearer t"}
        async with http.post(
            f"{api.url}/api/v1/agent_instance/register", json=REGISTER_BODY, headers=headers
        ) as response:
            assert 503 == response.status
            assert "storage_error" == (await response.json())["code"]
        assert [] == api.instances()


def make_database(path: Path) -> None:
    """Create a database holding one run."""

    async def fill() -> None:
        async with LocalPrefactor(db=path) as api:
            await record_run(api, "bot")

    asyncio.run(fill())


def corrupt_pages(path: Path) -> None:
    """Overwrite every page after the first with garbage."""
    data = bytearray(path.read_bytes())
    for offset in range(4096, len(data)):
        data[offset] = 0xA5
    path.write_bytes(bytes(data))


def set_pragma(path: Path, name: str, value: int) -> None:
    """Set an integer pragma of the file."""
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA {name} = {value}")
    db.commit()
    db.close()


def foreign_database(path: Path) -> None:
    """Replace the file with another program's SQLite database."""
    path.unlink()
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (body TEXT)")
    db.commit()
    db.close()


def damage_row(path: Path) -> None:
    """Replace an instance's document with text that is not JSON."""
    db = sqlite3.connect(path)
    db.execute("UPDATE instances SET doc = '{not json'")
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        pytest.param(
            lambda p: p.write_bytes(b"this is not a database " * 200),
            "damaged or not an SQLite file",
            id="garbage",
        ),
        pytest.param(corrupt_pages, "damaged", id="damaged-pages"),
        pytest.param(
            lambda p: set_pragma(p, "user_version", 2), "newer aioprefactor", id="newer-schema"
        ),
        pytest.param(foreign_database, "not an aioprefactor database", id="foreign"),
        pytest.param(damage_row, "damaged", id="bad-row"),
    ],
)
def test_serve_refuses_a_database_it_cannot_trust(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: Any, expected: str
) -> None:
    """A damaged, foreign or newer file: a clear error, exit 1, and the file left as it was."""
    path = tmp_path / "runs.sqlite"
    make_database(path)
    damage(path)
    before = path.read_bytes()
    assert 1 == main(["serve", "--port", "0", "--db", str(path)])
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err
    assert before == path.read_bytes()


def test_serve_refuses_a_database_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second server on the same file is refused while the first holds it."""
    path = tmp_path / "runs.sqlite"

    async def scenario() -> None:
        async with LocalPrefactor(db=path):
            assert 1 == await asyncio.to_thread(main, ["serve", "--port", "0", "--db", str(path)])

    asyncio.run(scenario())
    assert "in use by another server" in capsys.readouterr().err
