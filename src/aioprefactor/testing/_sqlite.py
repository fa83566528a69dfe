"""`SqliteStorage`: the local API's records in an SQLite file, so runs survive a restart.

One table per kind of record, each row the record as a JSON document; rows keep the order the
records were made in (`rowid`). Every save is one transaction, committed before the API
answers, in WAL mode: a server killed at any moment loses at most the request it had not yet
answered. The file's layout is versioned with `PRAGMA user_version` and marked as ours with
`PRAGMA application_id`; a file that is damaged, foreign or written by a newer version is
refused with a `StorageError`, never overwritten. The file is locked for one server at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from aioprefactor.testing._records import (
    AgentVersion,
    Deployment,
    Instance,
    SchemaVersion,
    Span,
    render_time,
)
from aioprefactor.testing._storage import Records, StorageError

if TYPE_CHECKING:
    import os
    from collections.abc import Iterator

APPLICATION_ID: Final = 0x6170_6678  # "apfx": marks the file as an aioprefactor database
SCHEMA_VERSION: Final = 1
_TABLES: Final = ("agent_versions", "schema_versions", "deployments", "instances", "spans")
_SCHEMA: Final = """
CREATE TABLE agent_versions (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE schema_versions (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE deployments (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE instances (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE spans (id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE replies (
    route TEXT NOT NULL,
    resource TEXT NOT NULL,
    key TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (route, resource, key)
);
"""
# Fields that are links to other records (saved as their ids) or are rebuilt on load.
_INSTANCE_SKIP: Final = frozenset({"schema_version", "span_ids", "span_statuses"})
_SPAN_SKIP: Final = frozenset({"instance"})
_TIME_FIELDS: Final = frozenset({"inserted_at", "updated_at", "started_at", "finished_at"})


def _document(record: Any, skip: frozenset[str] = frozenset(), **links: str) -> bytes:
    doc: dict[str, Any] = {}
    for item in dataclasses.fields(record):
        if item.name not in skip:
            value = getattr(record, item.name)
            doc[item.name] = render_time(value) if isinstance(value, datetime) else value
    return msgspec.json.encode({**doc, **links})


def _fields(raw: str | bytes, table: str) -> dict[str, Any]:
    try:
        doc = msgspec.json.decode(raw)
        if not isinstance(doc, dict):
            raise TypeError("not a JSON object")
        for name in _TIME_FIELDS & doc.keys():
            if doc[name] is not None:
                doc[name] = datetime.fromisoformat(doc[name])
    except (msgspec.DecodeError, TypeError, ValueError) as error:
        msg = f"a row of table {table!r} is damaged: {error}"
        raise StorageError(msg) from None
    return doc


class SqliteStorage:
    """Keeps the local API's records in an SQLite file.

    Raises:
        StorageError: From `open()`, if the file cannot be used.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SqliteStorage:
        """Open (or create) the database at `path`, checking it is whole and ours.

        Raises:
            StorageError: The file is damaged, is not an aioprefactor database, was written
                by a newer aioprefactor, or is in use by another server.
        """
        where = Path(path)
        if where.is_dir():
            msg = f"{where} is a directory, not a database file"
            raise StorageError(msg)
        try:
            db = sqlite3.connect(where, isolation_level=None, timeout=0.2)
        except sqlite3.Error as error:
            msg = f"cannot open the database {where}: {error}"
            raise StorageError(msg) from None
        try:
            _prepare(db, where)
        except BaseException:
            db.close()
            raise
        return cls(db, where)

    def load(self) -> Records:
        """Read every record, linking spans to their instances and those to their schemas."""
        records = Records()
        try:
            for doc in self._rows("agent_versions"):
                records.agent_versions[doc["id"]] = AgentVersion(**doc)
            for doc in self._rows("schema_versions"):
                records.schema_versions[doc["id"]] = SchemaVersion(**doc)
            for doc in self._rows("deployments"):
                records.deployments[doc["id"]] = Deployment(**doc)
            for doc in self._rows("instances"):
                schema = records.schema_versions[doc.pop("schema_version_id")]
                records.instances[doc["id"]] = Instance(**doc, schema_version=schema)
            for doc in self._rows("spans"):
                instance = records.instances[doc.pop("instance_id")]
                records.spans[doc["id"]] = Span(**doc, instance=instance)
            for route, resource, key, status, body in self._db.execute(
                "SELECT route, resource, key, status, body FROM replies ORDER BY rowid"
            ):
                records.replies[route, resource, key] = (status, _fields(body, "replies"))
        except (KeyError, TypeError) as error:
            msg = f"the database {self.path} is inconsistent: {error!r}"
            raise StorageError(msg) from None
        except sqlite3.Error as error:
            msg = f"cannot read the database {self.path}: {error}"
            raise StorageError(msg) from None
        return records

    def _rows(self, table: str) -> Iterator[dict[str, Any]]:
        # `table` is one of the fixed names above, never user input.
        for (raw,) in self._db.execute(f"SELECT doc FROM {table} ORDER BY rowid"):  # noqa: S608
            yield _fields(raw, table)

    def save(self, changes: Records) -> None:
        """Write the changed records in one transaction and commit it."""
        upsert = (
            "INSERT INTO {} (id, doc) VALUES (?, ?)"
            " ON CONFLICT (id) DO UPDATE SET doc = excluded.doc"
        )
        simple = (
            ("agent_versions", changes.agent_versions),
            ("schema_versions", changes.schema_versions),
            ("deployments", changes.deployments),
        )
        instances = [
            (key, _document(i, _INSTANCE_SKIP, schema_version_id=i.schema_version.id))
            for key, i in changes.instances.items()
        ]
        spans = [
            (key, s.instance.id, _document(s, _SPAN_SKIP, instance_id=s.instance.id))
            for key, s in changes.spans.items()
        ]
        replies = [
            (*scope, status, msgspec.json.encode(body))
            for scope, (status, body) in changes.replies.items()
        ]
        try:
            with _transaction(self._db):
                for table, records in simple:
                    rows = [(key, _document(record)) for key, record in records.items()]
                    self._db.executemany(upsert.format(table), rows)
                self._db.executemany(upsert.format("instances"), instances)
                self._db.executemany(
                    "INSERT INTO spans (id, instance_id, doc) VALUES (?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
                    spans,
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO replies (route, resource, key, status, body)"
                    " VALUES (?, ?, ?, ?, ?)",
                    replies,
                )
        except sqlite3.Error as error:
            msg = f"cannot write the database {self.path}: {error}"
            raise StorageError(msg) from None

    def clear(self) -> None:
        """Delete every record, in one transaction."""
        try:
            with _transaction(self._db):
                for table in (*_TABLES, "replies"):
                    self._db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed names
        except sqlite3.Error as error:
            msg = f"cannot write the database {self.path}: {error}"
            raise StorageError(msg) from None

    def close(self) -> None:
        """Close the file (the write-ahead log is folded back into it)."""
        self._db.close()


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _prepare(db: sqlite3.Connection, where: Path) -> None:
    """Lock the file and check it, then switch to WAL (and lay out a new file).

    Nothing is written before the checks pass: a file that is refused is left as it was.
    """
    try:
        # One server per file: the store is a cache of the file, so a second writer would
        # be silently overwritten. The lock is held from the first access to the close.
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        fresh = application_id == 0 and version == 0 and tables == 0
        if not fresh:
            _check_version(where, application_id, version)
            problems = [row[0] for row in db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                msg = f"the database {where} is damaged: {'; '.join(problems[:3])}"
                raise StorageError(msg)
        db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode is durable against the process dying (what `kill -9` does);
        # only a power cut may lose the last commits.
        db.execute("PRAGMA synchronous = NORMAL")
        if fresh:
            with _transaction(db):
                for statement in _SCHEMA.split(";"):
                    db.execute(statement)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        else:
            with _transaction(db):  # takes the write lock now, not at the first request
                pass
    except sqlite3.OperationalError as error:
        if "locked" in str(error):
            msg = f"the database {where} is in use by another server"
            raise StorageError(msg) from None
        msg = f"cannot use the database {where}: {error}"
        raise StorageError(msg) from None
    except sqlite3.DatabaseError as error:
        msg = f"the database {where} is damaged or not an SQLite file: {error}"
        raise StorageError(msg) from None


def _check_version(where: Path, application_id: int, version: int) -> None:
    if application_id != APPLICATION_ID:
        msg = f"{where} is an SQLite file, but not an aioprefactor database"
        raise StorageError(msg)
    if version > SCHEMA_VERSION:
        msg = (
            f"the database {where} was written by a newer aioprefactor (schema version "
            f"{version}; this one reads up to {SCHEMA_VERSION}): upgrade aioprefactor"
        )
        raise StorageError(msg)
    if version < 1:
        msg = f"the database {where} has no schema version: it was not fully created"
        raise StorageError(msg)
