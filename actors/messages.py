"""Immutable messages passed between actors (Pykka does not copy messages).

Every request that waits for an answer carries a `Reply`, which the actor
sets (result or exception) and never raises to the sender: one reply path
from the namespace actors and the ledger to whoever waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from actors.reply import Reply


class Mutation(NamedTuple):
    """A staged write (value = canonical JSON bytes, or a storage.Blob of raw bytes) or
    delete (value = None). `if_absent`: the ledger skips the write if the key has a live value."""

    namespace: str
    agent_id: str
    key: str
    value: bytes | None
    if_absent: bool = False

    @property
    def target(self) -> tuple[str, str, str]:
        return (self.namespace, self.agent_id, self.key)


class Condition(NamedTuple):
    """Commit only if the key's latest version is `expected_version` (0: no live value)."""

    namespace: str
    agent_id: str
    key: str
    expected_version: int


class TxnOpen(NamedTuple):
    """Open the transaction with the request that carries this (client-chosen id).

    `timeout_ms` None means the configured default.
    """

    timeout_ms: int | None = None


class BeginCall(NamedTuple):
    """Told to a namespace actor: open a transaction with an id of its own.

    `reply` resolves to (txn_id, the timeout applied in ms), or to the error."""

    timeout_ms: int | None
    reply: Reply[tuple[str, int]]


class StageCall(NamedTuple):
    """Told to a namespace actor: stage into `txn_id` (opening it first if `open`).

    `reply` resolves to None once staged, or to the error."""

    txn_id: str
    mutations: tuple[Mutation, ...]
    open: TxnOpen | None
    conditions: tuple[Condition, ...]
    attempt: str
    reply: Reply[None]


class AbortCall(NamedTuple):
    """Told to a namespace actor: abort `txn_id`. `reply` resolves to None, or to the error."""

    txn_id: str
    attempt: str
    reply: Reply[None]


class CommitCall(NamedTuple):
    """Told to a namespace actor: commit `txn_id` (opening it first if `open`).

    `reply` resolves to the commit_ts once durable, or to the error; the actor
    never raises to the sender, who does not wait on the tell.
    """

    txn_id: str
    mutations: tuple[Mutation, ...]
    open: TxnOpen | None
    reply: Reply[int]
    conditions: tuple[Condition, ...] = ()
    attempt: str = ""  # the client's token for this attempt at the transaction (see the proto)


class CommitCalls(NamedTuple):
    """Several CommitCalls for one namespace, told as one message."""

    calls: tuple[CommitCall, ...]


class CommitIntents(NamedTuple):
    """Several CommitIntents told to the ledger as one message."""

    intents: tuple[CommitIntent, ...]


class CommitIntent(NamedTuple):
    """A transaction handed to the ledger; `reply` resolves to its commit_ts.

    The ledger checks `conditions` first, all or nothing.
    """

    txn_id: str
    mutations: tuple[Mutation, ...]
    begun_at: float  # time.monotonic() at begin, for the duration in the commit log
    reply: Reply[int]
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True, slots=True)
class LedgerStatusQuery:
    """Ask the ledger for its status without blocking it."""

    reply: Reply[dict[str, object]]


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """Ask the ledger for a snapshot between two commit groups.

    `reply` resolves to a storage.SnapshotInfo, or None for a periodic
    snapshot that nobody waits for.
    """

    reply: Reply[Any] | None
    reason: str = "requested"


@dataclass(frozen=True, slots=True)
class PurgeRequest:
    """Ask the ledger to purge an agent's keys under `prefix`, with their history, as the
    next commit. `reply` resolves to a storage.PurgeResult, or to the error."""

    namespace: str
    agent_id: str
    prefix: str
    reply: Reply[Any]


@dataclass(frozen=True, slots=True)
class RetainRequest:
    """Ask the ledger to drop what a retention pass found (storage/retention.py) between two
    commit groups. `reply` resolves to a storage.retention.Applied, or to the error."""

    plan: Any
    reply: Reply[Any]


@dataclass(frozen=True, slots=True)
class CompactionSettled:
    """Told by the compactor: every purge up to `purge_ts` has been compacted out of the files."""

    purge_ts: int


@dataclass(frozen=True, slots=True)
class ReopenRequest:
    """Ask the ledger to try reopening a store whose writes failed (sent by the reaper)."""
