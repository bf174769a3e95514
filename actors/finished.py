"""What became of recently finished transactions, shared by all namespace actors.

It outlives a retiring actor, so a late request for a transaction gets the
same answer ("expired", "already committed") whatever happened to its actor
since. Bounded: the oldest entries are forgotten first, after which the
answer is "not found".
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import NamedTuple

from actors.errors import (
    OutcomeUnknown,
    TransactionClosed,
    TransactionExpired,
    TransactionNotFound,
    Unavailable,
)
from actors.reply import Reply

DEFAULT_MEMORY = 100_000


def shown(txn_id: str) -> str:
    """A transaction id for an error message, cut short if a client sent a huge one."""
    return repr(txn_id) if len(txn_id) <= 80 else repr(txn_id[:80]) + "..."


class Finished(NamedTuple):
    outcome: str  # "committed", "aborted" or "expired"
    timeout_ms: int = 0
    reply: Reply[int] | None = None  # a commit's outcome, once the ledger answers

    @property
    def commit_failed(self) -> bool:
        reply = self.reply
        return reply is not None and reply.done() and reply.exception() is not None

    @property
    def outcome_unknown(self) -> bool:
        """Its commit failed after the write, before the fsync was known to succeed."""
        return self.commit_failed and isinstance(self.reply.exception(), OutcomeUnknown)  # type: ignore[union-attr]


class FinishedTransactions:
    """A thread-safe, bounded map txn_id -> Finished.

    `committed(txn_id)` looks an id up in the durable index of commits, for
    ids this memory does not hold (forgotten, or from before a restart).
    """

    def __init__(
        self,
        memory: int = DEFAULT_MEMORY,
        committed: Callable[[str], int | None] = lambda txn_id: None,
        unsettled: Callable[[], bool] = lambda: False,
    ) -> None:
        self._committed = committed
        # True while a failed write's outcome is not on record yet (the store reopens).
        self._unsettled = unsettled
        self._memory = memory
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[str, Finished] = collections.OrderedDict()

    def remember(self, txn_id: str, finished: Finished) -> None:
        with self._lock:
            self._entries[txn_id] = finished
            if len(self._entries) > self._memory:
                self._entries.popitem(last=False)

    def get(self, txn_id: str) -> Finished | None:
        with self._lock:
            return self._entries.get(txn_id)

    def closed_error(self, txn_id: str) -> Exception:
        """The error for using `txn_id`, which is not open."""
        finished = self.get(txn_id)
        name = shown(txn_id)
        if finished is None:
            commit_ts = self._committed(txn_id)
            if commit_ts is not None:
                return TransactionClosed(f"transaction {name} was already committed (commit_ts {commit_ts})")
            return TransactionNotFound(
                f"transaction {name} not found (never begun here, or finished long ago)"
            )
        if finished.outcome == "expired":
            return TransactionExpired(
                f"transaction {name} expired: not committed within its "
                f"{finished.timeout_ms} ms timeout; begin a new transaction"
            )
        if finished.outcome == "aborted":
            return TransactionClosed(f"transaction {name} was aborted")
        reply = finished.reply
        if reply is not None and reply.done():
            if reply.exception() is not None:
                return TransactionClosed(
                    f"the commit of transaction {name} failed ({reply.exception()}); begin a new transaction"
                )
            return TransactionClosed(f"transaction {name} was already committed (commit_ts {reply.result()})")
        return TransactionClosed(f"transaction {name} is being committed")

    def check_abort(self, txn_id: str) -> None:
        """Abort `txn_id`, which is not open: raise if it committed or is being committed.

        The disk has the last word for an id not remembered here, and for one
        whose commit's outcome is unknown: a commit whose fsync failed may
        have survived it (Unavailable until the store has reopened and knows). Any other
        failed commit wrote nothing, and aborting it is fine. An id seen nowhere is
        remembered as aborted, so that a late commit of it (a request still
        on its way) cannot commit it after its client was told it aborted.
        """
        finished = self.get(txn_id)
        if finished is not None and finished.outcome_unknown and self._unsettled():
            raise Unavailable(
                f"the outcome of transaction {shown(txn_id)}'s commit is not known until the store "
                "reopens after the failed write (in a moment); abort again"
            )
        if finished is None or finished.outcome_unknown:
            commit_ts = self._committed(txn_id)
            if commit_ts is not None:
                raise TransactionClosed(
                    f"transaction {shown(txn_id)} was already committed (commit_ts {commit_ts}); "
                    "it cannot be aborted"
                )
            if finished is None:
                self.remember(txn_id, Finished("aborted"))
            return
        if finished.outcome == "committed" and not finished.commit_failed:
            reply = finished.reply
            if reply is not None and not reply.done():
                raise TransactionClosed(
                    f"transaction {shown(txn_id)} is being committed; it cannot be aborted "
                    "(its commit succeeds or fails in a moment: read, or abort again)"
                )
            raise TransactionClosed(
                f"transaction {shown(txn_id)} was already committed; it cannot be aborted"
            )
