"""Result types returned by the SDK (plain dataclasses, no gRPC types)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar


@dataclass(slots=True)
class StateResult:
    """A key's value at some version. `exists` is False for a missing or deleted key."""

    value: Any
    version: int
    commit_ts: int
    exists: bool
    # Not part of equality, so results compare as the original client's did.
    key: str | None = field(default=None, compare=False)


@dataclass(slots=True)
class Operation:
    """One write (value set) or delete (`deleted` True, value None) in a commit, or a purge
    (`purged` True: the agent's keys starting with `key` were removed with their history;
    version 0, value None)."""

    key: str
    value: Any
    version: int
    deleted: bool = False
    purged: bool = False


@dataclass(slots=True)
class ReplayEvent:
    """One committed transaction as seen by one agent, in commit_ts order."""

    txn_id: str
    commit_ts: int
    operations: list[Operation] = field(default_factory=list)
    namespace: str = ""
    agent_id: str = ""
    committed_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """An online snapshot: a directory on the daemon's machine holding every commit up to commit_ts."""

    path: str
    commit_ts: int


T = TypeVar("T")


@dataclass(slots=True)
class Page(Generic[T]):
    """One page of a paged read.

    `commit_ts` is the commit the page is as of; `next_page_token` is None
    on the last page, else the token that asks for the next page (read as
    of the same commit_ts).
    """

    items: list[T]
    next_page_token: str | None
    commit_ts: int


@dataclass(slots=True)
class KeyVersion:
    """One version of a key: its value, or a tombstone (`deleted` True, value None)."""

    version: int
    commit_ts: int
    value: Any
    deleted: bool
    committed_at_ms: int = 0


@dataclass(slots=True)
class StateSet:
    """What `get_many` read: one StateResult per (agent_id, key) asked, in that order, each
    carrying its key, all as of the one commit `commit_ts`. Iterates, indexes and sizes as
    its `results` list does."""

    commit_ts: int
    results: list[StateResult] = field(default_factory=list)

    def __iter__(self) -> Iterator[StateResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> StateResult:
        return self.results[index]


@dataclass(slots=True)
class AgentState:
    """Every live key of an agent as of `commit_ts` (now, or a past commit)."""

    commit_ts: int
    entries: dict[str, StateResult] = field(default_factory=dict)

    @property
    def values(self) -> dict[str, Any]:
        """key -> value of every live key."""
        return {key: entry.value for key, entry in self.entries.items()}
