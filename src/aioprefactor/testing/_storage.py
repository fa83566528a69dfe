"""Where the local API keeps its records: the interface, and the in-memory storage.

The store (`_state.Store`) holds every record in memory and owns the state machines; a storage
only loads what was saved before and saves what one operation changed, as one atomic step. The
in-memory storage keeps nothing (the default, for tests); `_sqlite.SqliteStorage` keeps
everything in a file, so that runs survive a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aioprefactor.testing._records import (
        AgentVersion,
        Deployment,
        Instance,
        SchemaVersion,
        Span,
    )

# An idempotency key's scope: (route, the resource id in the path, the key).
ReplyScope = tuple[str, str, str]
# A remembered answer: (HTTP status, JSON body).
StoredReply = tuple[int, dict[str, Any]]


class StorageError(RuntimeError):
    """The local API's database cannot be used: damaged, too new, in use, or unwritable."""


@dataclass(slots=True)
class Records:
    """A set of records: everything saved (on load), or what one operation changed (on save).

    Every mapping is keyed by the record's id (replies by their scope) and keeps insertion
    order, which is the order the records were first made.
    """

    agent_versions: dict[str, AgentVersion] = field(default_factory=dict)
    schema_versions: dict[str, SchemaVersion] = field(default_factory=dict)
    deployments: dict[str, Deployment] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    spans: dict[str, Span] = field(default_factory=dict)
    replies: dict[ReplyScope, StoredReply] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(
            (
                self.agent_versions,
                self.schema_versions,
                self.deployments,
                self.instances,
                self.spans,
                self.replies,
            )
        )


class Storage(Protocol):
    """What the store needs from where it keeps its records."""

    def load(self) -> Records:
        """Return every record saved so far, linked (a span's instance is the loaded one)."""
        ...

    def save(self, changes: Records) -> None:
        """Save the changed records in one atomic, durable step (`StorageError` if it fails)."""
        ...

    def clear(self) -> None:
        """Forget every record saved."""
        ...

    def close(self) -> None:
        """Release the storage; it is not used afterwards."""
        ...


class MemoryStorage:
    """Keeps nothing: the store's memory is all there is."""

    def load(self) -> Records:
        """Return no records."""
        return Records()

    def save(self, changes: Records) -> None:
        """Do nothing: the records live in the store's memory."""

    def clear(self) -> None:
        """Do nothing: there is nothing saved."""

    def close(self) -> None:
        """Do nothing."""
