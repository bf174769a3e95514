"""Result types returned by the SDK (plain dataclasses, no gRPC types)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    """One write (value set) or delete (`deleted` True, value None) in a commit."""

    key: str
    value: Any
    version: int
    deleted: bool = False


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
