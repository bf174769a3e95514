"""Immutable messages passed between actors (Pykka does not copy messages)."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Mutation:
    """A staged write (value = canonical JSON bytes) or delete (value = None)."""

    namespace: str
    agent_id: str
    key: str
    value: bytes | None

    @property
    def target(self) -> tuple[str, str, str]:
        return (self.namespace, self.agent_id, self.key)


@dataclass(frozen=True, slots=True)
class CommitIntent:
    """A transaction handed to the ledger; `reply` resolves to its commit_ts."""

    txn_id: str
    mutations: tuple[Mutation, ...]
    begun_at: float  # time.monotonic() at begin, for the duration in the commit log
    reply: Future[int]


@dataclass(frozen=True, slots=True)
class LedgerStatusQuery:
    """Ask the ledger for its status without blocking it."""

    reply: Future[dict[str, object]]


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """Ask the ledger for a snapshot between two commit groups.

    `reply` resolves to a storage.SnapshotInfo, or None for a periodic
    snapshot that nobody waits for.
    """

    reply: Future[Any] | None
    reason: str = "requested"


@dataclass(frozen=True, slots=True)
class RecoverRequest:
    """Ask the ledger to try reopening a store whose writes failed (sent by the reaper)."""
