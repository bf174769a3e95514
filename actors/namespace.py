"""The namespace actor: owns the open transactions of one namespace.

It stages writes and deletes, enforces deadlines, and hands a committing
transaction to the ledger with a `tell` -- it never waits for the ledger, so
one namespace's commits can share the ledger's synced writes. It retires
itself when it has been idle with no open transaction.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pykka
import structlog

from actors.errors import (
    InvalidArgument,
    ResourceExhausted,
    Retired,
    TransactionNotFound,
    Unavailable,
)
from actors.finished import Finished, FinishedTransactions, shown
from actors.messages import CommitIntent, Mutation

if TYPE_CHECKING:
    from actors.system import ActorConfig

log = structlog.get_logger("statehouse.txn")


def new_txn_id(namespace: str) -> str:
    """A fresh id that names its owning namespace: "<namespace>:<24 hex>"."""
    return f"{namespace}:{secrets.token_hex(12)}"


def txn_namespace(txn_id: str) -> str:
    """The owning namespace of a transaction id; TransactionNotFound if malformed."""
    namespace, sep, token = txn_id.rpartition(":")
    if not sep or not namespace or len(token) != 24:
        raise TransactionNotFound(f"transaction {shown(txn_id)} not found (not an id this server issued)")
    return namespace


def _mutation_bytes(mutation: Mutation) -> int:
    return len(mutation.key) + len(mutation.agent_id) + len(mutation.namespace) + len(mutation.value or b"")


@dataclass
class OpenTransaction:
    txn_id: str
    begun_at: float
    deadline: float
    timeout_ms: int
    mutations: dict[tuple[str, str, str], Mutation] = field(default_factory=dict)
    staged_bytes: int = 0


class NamespaceActor(pykka.ThreadingActor):
    """Owns one namespace's open transactions. Use through its proxy."""

    def __init__(
        self,
        namespace: str,
        ledger: pykka.ActorRef,
        config: ActorConfig,
        retire: Callable[[str, pykka.ActorRef], None],
        finished: FinishedTransactions,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.namespace = namespace
        self._ledger = ledger
        self._config = config
        self._retire = retire
        self._clock = clock
        self._open: dict[str, OpenTransaction] = {}
        self._finished = finished
        self._retired = False
        self._last_activity = clock()
        self._commits = 0

    # -- the transaction lifecycle -----------------------------------------

    def begin(self, timeout_ms: int | None) -> tuple[str, int]:
        """Open a transaction; returns (txn_id, applied timeout in ms)."""
        now = self._touch()
        if timeout_ms is None:
            timeout_ms = self._config.default_txn_timeout_ms
        limit = self._config.max_txn_timeout_ms
        if not 1 <= timeout_ms <= limit:
            raise InvalidArgument(f"timeout_ms must be between 1 and {limit}, got {timeout_ms}")
        if len(self._open) >= self._config.max_open_txns_per_namespace:
            raise ResourceExhausted(
                f"namespace {self.namespace!r} already has {len(self._open)} open transactions "
                f"(limit {self._config.max_open_txns_per_namespace}); commit or abort some first"
            )
        txn_id = new_txn_id(self.namespace)
        self._open[txn_id] = OpenTransaction(txn_id, now, now + timeout_ms / 1000, timeout_ms)
        log.info("txn.begin", txn_id=txn_id, namespace=self.namespace, timeout_ms=timeout_ms)
        return txn_id, timeout_ms

    def stage(self, txn_id: str, mutations: Iterable[Mutation]) -> None:
        """Stage writes/deletes; a later write to the same key replaces an earlier one."""
        self._stage(self._live(txn_id), mutations)

    def commit(self, txn_id: str, mutations: Iterable[Mutation] = ()) -> Future[int]:
        """Stage the last mutations and hand the transaction to the ledger.

        Returns a future of the commit_ts, resolved once the commit is durable.
        """
        txn = self._live(txn_id)
        self._stage(txn, mutations)
        del self._open[txn_id]
        reply: Future[int] = Future()
        self._finished.remember(txn_id, Finished("committed", reply=reply))
        self._commits += 1
        intent = CommitIntent(txn_id, tuple(txn.mutations.values()), txn.begun_at, reply)
        try:
            self._ledger.tell(intent)
        except pykka.ActorDeadError:
            reply.set_exception(Unavailable("the ledger is not running (shutting down?)"))
        return reply

    def abort(self, txn_id: str) -> None:
        """Discard a transaction. Aborting twice, or an unknown id, is not an error."""
        now = self._touch()
        txn = self._open.get(txn_id)
        if txn is not None and txn.deadline <= now:
            self._expire(txn)  # already past its timeout: it expired, whether reaped yet or not
            return
        if txn is not None:
            del self._open[txn_id]
            self._finished.remember(txn_id, Finished("aborted"))
            log.info("txn.abort", txn_id=txn_id, namespace=self.namespace, ops=len(txn.mutations))
            return
        self._finished.check_abort(txn_id)

    # -- housekeeping --------------------------------------------------------

    def tick(self) -> None:
        """Expire overdue transactions; retire when idle. Sent by the reaper."""
        if self._retired:
            return
        now = self._clock()
        for txn in [t for t in self._open.values() if t.deadline <= now]:
            self._expire(txn)
        if not self._open and now - self._last_activity >= self._config.idle_actor_seconds:
            self._retired = True
            self._retire(self.namespace, self.actor_ref)
            self.actor_ref.stop(block=False)

    def status(self) -> dict[str, object]:
        now = self._clock()
        oldest = min((t.begun_at for t in self._open.values()), default=None)
        return {
            "namespace": self.namespace,
            "open_transactions": len(self._open),
            "oldest_transaction_age_s": None if oldest is None else round(now - oldest, 3),
            "commits": self._commits,
            "idle_s": round(now - self._last_activity, 3),
        }

    # -- helpers ---------------------------------------------------------------

    def _touch(self) -> float:
        if self._retired:
            raise Retired(self.namespace)
        self._last_activity = now = self._clock()
        return now

    def _live(self, txn_id: str) -> OpenTransaction:
        now = self._touch()
        txn = self._open.get(txn_id)
        if txn is None:
            raise self._finished.closed_error(txn_id)
        if txn.deadline <= now:
            self._expire(txn)
            raise self._finished.closed_error(txn_id)
        return txn

    def _stage(self, txn: OpenTransaction, mutations: Iterable[Mutation]) -> None:
        """Add mutations all-or-nothing, within the per-transaction bounds."""
        batch: dict[tuple[str, str, str], Mutation] = {}
        for mutation in mutations:
            batch[mutation.target] = mutation
        count = len(txn.mutations)
        size = txn.staged_bytes
        for target, mutation in batch.items():
            previous = txn.mutations.get(target)
            if previous is None:
                count += 1
            else:
                size -= _mutation_bytes(previous)
            size += _mutation_bytes(mutation)
        config = self._config
        if count > config.max_ops_per_txn:
            raise ResourceExhausted(
                f"transaction {shown(txn.txn_id)} would hold {count} operations "
                f"(limit {config.max_ops_per_txn} per transaction)"
            )
        if size > config.max_txn_bytes:
            raise ResourceExhausted(
                f"transaction {shown(txn.txn_id)} would hold {size} bytes "
                f"(limit {config.max_txn_bytes} per transaction)"
            )
        txn.mutations.update(batch)
        txn.staged_bytes = size

    def _expire(self, txn: OpenTransaction) -> None:
        del self._open[txn.txn_id]
        self._finished.remember(txn.txn_id, Finished("expired", timeout_ms=txn.timeout_ms))
        log.info("txn.expire", txn_id=txn.txn_id, namespace=self.namespace, timeout_ms=txn.timeout_ms)
