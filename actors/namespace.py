"""The namespace actor: owns the open transactions of one namespace.

It stages writes and deletes, enforces deadlines, and hands a committing
transaction to the ledger with a `tell` -- it never waits for the ledger, so
one namespace's commits can share the ledger's synced writes. It retires
itself when it has been idle, or when the registry asks (too many actors
live); open transactions then wait in the registry, dormant, for the
namespace's next actor to adopt them.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pykka
import structlog

from actors.errors import (
    AlreadyCommitted,
    InvalidArgument,
    ResourceExhausted,
    Retired,
    TransactionClosed,
    TransactionNotFound,
    Unavailable,
)
from actors.finished import Finished, FinishedTransactions, shown
from actors.inbox import SimpleInboxActor
from actors.messages import (
    AbortCall,
    BeginCall,
    CommitCall,
    CommitCalls,
    CommitIntent,
    CommitIntents,
    Condition,
    Mutation,
    StageCall,
    TxnOpen,
)
from actors.metrics import Metrics
from actors.registry import Dormant
from actors.reply import Reply

if TYPE_CHECKING:
    from actors.system import ActorConfig

log = structlog.get_logger("statehouse.txn")


def new_txn_id(namespace: str) -> str:
    """A fresh id that names its owning namespace: "<namespace>:<24 hex>"."""
    return f"{namespace}:{secrets.token_hex(12)}"


_HEX = frozenset("0123456789abcdef")


def txn_namespace(txn_id: str) -> str:
    """The owning namespace of a transaction id; TransactionNotFound if malformed."""
    namespace, sep, token = txn_id.rpartition(":")
    if not sep or not namespace or len(token) != 24:
        raise TransactionNotFound(f"transaction {shown(txn_id)} not found (not an id this server issued)")
    return namespace


def new_client_txn_namespace(txn_id: str) -> str:
    """The namespace of an id a client chose to open a transaction with.

    InvalidArgument unless it is "<namespace>:<24 lowercase hex digits>".
    """
    namespace, sep, token = txn_id.rpartition(":")
    if not sep or not namespace or len(token) != 24 or not _HEX.issuperset(token):
        raise InvalidArgument(
            f"transaction id {shown(txn_id)} cannot open a transaction: it must be "
            '"<namespace>:<24 lowercase hex digits>", the hex random'
        )
    return namespace


# What a transaction opened by its commit holds before it: nothing.
_NOTHING_HELD: Mapping[tuple[str, str, str], Mutation] = MappingProxyType({})


def _mutation_bytes(mutation: Mutation) -> int:
    return len(mutation.key) + len(mutation.agent_id) + len(mutation.namespace) + len(mutation.value or b"")


class Activity:
    """What a namespace actor publishes for other threads to read without asking it
    (so an actor that is stuck can still be described). Only the actor writes
    it, replacing each field whole."""

    __slots__ = ("last_activity", "open_transactions")

    def __init__(self, now: float) -> None:
        self.open_transactions = 0
        self.last_activity = now  # clock() of the last client message


@dataclass
class OpenTransaction:
    txn_id: str
    begun_at: float
    deadline: float
    timeout_ms: int
    mutations: dict[tuple[str, str, str], Mutation] = field(default_factory=dict)
    staged_bytes: int = 0
    conditions: list[Condition] = field(default_factory=list)
    attempt: str = ""  # the opening call's token: later calls must carry the same


def _forward(target: Reply[int]) -> Callable[[Reply[int]], None]:
    """A callback passing an earlier commit's outcome on to a retry's reply."""

    def forward(source: Reply[int]) -> None:
        error = source.exception()
        if error is None:
            target.set_result(source.result())
        else:
            target.set_exception(error)

    return forward


def _answer(reply: Reply[Any], method: Callable[..., Any], *args: Any) -> None:
    """Set `reply` to what `method(*args)` returns, or to what it raises."""
    try:
        result = method(*args)
    except Exception as exc:
        reply.set_exception(exc)
        return
    reply.set_result(result)


class NamespaceActor(SimpleInboxActor):
    """Owns one namespace's open transactions. Use through its proxy."""

    def __init__(
        self,
        namespace: str,
        ledger: pykka.ActorRef,
        config: ActorConfig,
        retire: Callable[[str, pykka.ActorRef, int, Dormant | None], bool],
        finished: FinishedTransactions,
        clock: Callable[[], float] = time.monotonic,
        committed: Callable[[str], int | None] = lambda txn_id: None,
        metrics: Metrics | None = None,
        published: Activity | None = None,
        adopted: Dormant | None = None,
    ) -> None:
        """`adopted`: the open transactions a retired actor of this namespace left dormant."""
        super().__init__()
        self.namespace = namespace
        self._metrics = metrics or Metrics()
        self.published = published or Activity(clock())
        self._ledger = ledger
        self._config = config
        self._retire = retire
        self._clock = clock
        self._open: dict[str, OpenTransaction] = {}
        if adopted is not None:
            self._open = adopted.state
            self.published.open_transactions = len(self._open)
            self.published.last_activity = adopted.last_activity
        self._finished = finished
        # The commit_ts a transaction id durably committed at, if it did.
        self._committed = committed
        self._retired = False
        self._commits = 0

    # -- the transaction lifecycle -----------------------------------------

    def begin(self, timeout_ms: int | None) -> tuple[str, int]:
        """Open a transaction; returns (txn_id, applied timeout in ms)."""
        txn = self._open_txn(new_txn_id(self.namespace), timeout_ms)
        return txn.txn_id, txn.timeout_ms

    def stage(
        self,
        txn_id: str,
        mutations: Iterable[Mutation],
        open: TxnOpen | None = None,
        conditions: Iterable[Condition] = (),
        attempt: str = "",
    ) -> None:
        """Stage writes/deletes and conditions; a later write to the same key replaces an earlier one.

        With `open`, the transaction `txn_id` (chosen by the client) is
        opened first, for the client's `attempt` token (every later call
        must carry it); nothing is opened if staging fails.
        """
        if open is None:
            self._stage(self._live(txn_id, attempt), mutations, conditions)
        else:
            reopen = self._reopens(txn_id, attempt)
            self._open_and_stage(
                txn_id, mutations, conditions, open, log_begin=True, rerun=reopen, attempt=attempt
            )

    def _reopens(self, txn_id: str, attempt: str) -> bool:
        """Whether a chunk sent ahead may open `txn_id` again although it was seen before.

        Yes when nothing of it was written: its commit failed (a retry, or an
        idempotency key's redo, runs again), or it expired and the new
        attempt names itself with a token (so that late calls of the expired
        attempt, which may still be alive, cannot land in the new one). An id
        that committed raises AlreadyCommitted with its commit_ts; one
        aborted stays closed, so a late duplicate cannot commit after an abort.
        """
        overdue = self._open.get(txn_id)
        if overdue is not None and overdue.deadline <= self._clock():
            self._expire(overdue)  # past its timeout, whether the reaper has come by yet or not
        finished = self._finished.get(txn_id)
        if finished is None or txn_id in self._open:
            return False
        if finished.commit_failed or (finished.outcome == "expired" and attempt):
            return True
        reply = finished.reply
        if finished.outcome == "committed" and reply is not None and reply.done():
            commit_ts = reply.result()
            raise AlreadyCommitted(
                f"transaction id {shown(txn_id)} was used before: it committed at commit_ts {commit_ts}",
                commit_ts,
            )
        return False

    def on_receive(self, message: object) -> None:
        """The calls a client's request makes (BeginCall, StageCall, AbortCall, CommitCall,
        CommitCalls), told: each is answered through its reply, errors too, never raised."""
        kind = type(message)
        if kind is StageCall:
            stage: StageCall = message  # type: ignore[assignment]
            args = (stage.txn_id, stage.mutations, stage.open, stage.conditions, stage.attempt)
            _answer(stage.reply, self.stage, *args)
        elif kind is BeginCall:
            begin: BeginCall = message  # type: ignore[assignment]
            _answer(begin.reply, self.begin, begin.timeout_ms)
        elif kind is AbortCall:
            abort: AbortCall = message  # type: ignore[assignment]
            _answer(abort.reply, self.abort, abort.txn_id, abort.attempt)
        else:
            self._receive_commits(message)

    def _receive_commits(self, message: object) -> None:
        calls = message.calls if isinstance(message, CommitCalls) else (message,)
        intents = []
        for call in calls:
            if not isinstance(call, CommitCall):
                log.error("namespace.unexpected_message", message=repr(call)[:200])
                continue
            try:
                intent = self._commit(call)
            except Exception as exc:
                call.reply.set_exception(exc)
                continue
            if intent is not None:
                intents.append(intent)
        if len(intents) == 1:
            self._ledger_tell(intents[0])
        elif intents:
            self._ledger_tell(CommitIntents(tuple(intents)))

    def _commit(self, call: CommitCall) -> CommitIntent | None:
        """Close `call`'s transaction as committing; the intent still has to reach the ledger.

        None when the call is a retry answered by an earlier commit of the same id.
        """
        rerun = False
        if call.open is None:
            txn = self._live(call.txn_id, call.attempt)
            self._stage(txn, call.mutations, call.conditions)
        else:
            retry = self._retry(call)
            if retry == "answered":
                return None
            rerun = retry == "rerun"
            if retry == "fresh":
                return self._commit_at_once(call)
            # Opened and committed in one message: its txn.commit line says it all.
            txn = self._open_and_stage(
                call.txn_id,
                call.mutations,
                call.conditions,
                call.open,
                log_begin=False,
                rerun=rerun,
                checked=True,
                attempt=call.attempt,
            )
        self._close(call.txn_id)
        self._finished.remember(call.txn_id, Finished("committed", reply=call.reply))
        self._commits += 1
        return CommitIntent(
            call.txn_id, tuple(txn.mutations.values()), txn.begun_at, call.reply, tuple(txn.conditions)
        )

    def _commit_at_once(self, call: CommitCall) -> CommitIntent:
        """A commit that opens its transaction, whose id is new here: what opening, staging and
        closing it would leave, without holding it open in between (most commits are these)."""
        assert call.open is not None
        self._timeout_ms(call.open.timeout_ms)  # refused as opening it would refuse it
        begun_at = self._clock()
        batch, conditions, _size = self._checked(call.txn_id, call.mutations, call.conditions)
        self._finished.remember(call.txn_id, Finished("committed", reply=call.reply))
        self._commits += 1
        return CommitIntent(call.txn_id, tuple(batch.values()), begun_at, call.reply, tuple(conditions))

    def _retry(self, call: CommitCall) -> str:
        """Whether an opening commit repeats an earlier commit of its id (a client retry).

        "answered": the earlier commit succeeded, or is in progress, and
        `call.reply` gets its outcome; "rerun": it failed, so this one runs
        again; "fresh": the id was never used here and the namespace has room
        to open it (the common case, committed without being held open);
        "new": no commit of this id is known, but opening it may still be
        refused (the id is open, was aborted, or the namespace is full).
        Either way the ledger, which never writes one id twice, has the last word.
        """
        self._touch()
        txn_id = call.txn_id
        finished = self._finished.get(txn_id)
        if finished is None:
            if txn_id in self._open:
                return "new"  # opening it again fails: "used before"
            if len(self._open) < self._config.max_open_txns_per_namespace:
                # It opens: if the id committed before (forgotten here, or before a restart),
                # the ledger, which looks every id up before it writes, answers with the first
                # commit_ts. Looking it up here as well would cost every commit a read.
                return "fresh"
            commit_ts = self._committed(txn_id)
            if commit_ts is None:
                return "new"
            log.info("txn.commit_retried", txn_id=txn_id, commit_ts=commit_ts, known="on disk")
            call.reply.set_result(commit_ts)
            return "answered"
        earlier = finished.reply
        if finished.outcome == "expired":
            return "rerun"  # it never committed: nothing of it was written
        if finished.outcome != "committed" or earlier is None:
            return "new"  # aborted: opening it again fails
        if earlier.done() and earlier.exception() is not None:
            return "rerun"
        log.info("txn.commit_retried", txn_id=txn_id, known="in memory")
        earlier.add_done_callback(_forward(call.reply))
        return "answered"

    def _ledger_tell(self, message: CommitIntent | CommitIntents) -> None:
        try:
            self._ledger.tell(message)
        except pykka.ActorDeadError:
            intents = message.intents if isinstance(message, CommitIntents) else (message,)
            for intent in intents:
                intent.reply.set_exception(Unavailable("the ledger is not running (shutting down?)"))

    def abort(self, txn_id: str, attempt: str = "") -> None:
        """Discard a transaction. Aborting twice, or an unknown id, is not an error; aborting
        another attempt's transaction (see `stage`) is."""
        now = self._touch()
        txn = self._open.get(txn_id)
        if txn is not None and txn.deadline <= now:
            self._expire(txn)  # already past its timeout: it expired, whether reaped yet or not
            return
        if txn is not None and txn.attempt != attempt:
            raise TransactionClosed(
                f"transaction {shown(txn_id)} is held by another attempt (opened with another attempt "
                "token); this one cannot abort it"
            )
        if txn is not None:
            self._close(txn_id)
            self._metrics.aborts.inc()
            self._finished.remember(txn_id, Finished("aborted"))
            log.info("txn.abort", txn_id=txn_id, namespace=self.namespace, ops=len(txn.mutations))
            return
        self._finished.check_abort(txn_id)

    # -- housekeeping --------------------------------------------------------

    def tick(self, uses: int) -> None:
        """Expire overdue transactions; retire when idle. Sent by the reaper.

        `uses`: the registry's count of messages sent to this actor when the
        tick was sent (see `retire_if_idle`).
        """
        if self._retired:
            return
        now = self._clock()
        for txn in [t for t in self._open.values() if t.deadline <= now]:
            self._expire(txn)
        if now - self.published.last_activity >= self._config.idle_actor_seconds:
            self.retire_if_idle(uses)

    def retire_if_idle(self, uses: int) -> None:
        """Retire unless a message was sent after this request; open transactions stay dormant.

        The registry asks when too many actors live; `uses` is its count of
        messages sent to this actor at that moment, and it refuses the
        retirement if the count has moved since. Open transactions go to
        the registry with the actor's leaving (both under its lock), for the
        namespace's next actor to adopt.
        """
        if self._retired:
            return
        dormant = None
        if self._open:
            txns = self._open.values()
            due = min(txn.deadline for txn in txns)
            oldest = min(txn.begun_at for txn in txns)
            dormant = Dormant(self._open, len(self._open), due, oldest, self.published.last_activity)
        if self._retire(self.namespace, self.actor_ref, uses, dormant):
            self._retired = True
            self._open = {}  # the registry's now
            self.actor_ref.stop(block=False)

    def status(self) -> dict[str, object]:
        """This actor's state, as it answers through its mailbox."""
        now = self._clock()
        oldest = min((t.begun_at for t in self._open.values()), default=None)
        return {
            "namespace": self.namespace,
            "state": "ok",
            "open_transactions": len(self._open),
            "oldest_transaction_age_s": None if oldest is None else round(now - oldest, 3),
            "commits": self._commits,
            "idle_s": round(now - self.published.last_activity, 3),
        }

    # -- helpers ---------------------------------------------------------------

    def _touch(self) -> float:
        if self._retired:
            raise Retired(self.namespace)
        self.published.last_activity = now = self._clock()
        return now

    def _close(self, txn_id: str) -> None:
        del self._open[txn_id]
        self.published.open_transactions = len(self._open)

    def _open_txn(
        self,
        txn_id: str,
        timeout_ms: int | None,
        log_begin: bool = True,
        rerun: bool = False,
        attempt: str = "",
    ) -> OpenTransaction:
        """Open `txn_id` for `attempt`; `rerun` opens again an id that wrote nothing before."""
        now = self._touch()
        timeout_ms = self._timeout_ms(timeout_ms)
        if len(self._open) >= self._config.max_open_txns_per_namespace:
            raise self._full()
        if txn_id in self._open or (not rerun and self._finished.get(txn_id) is not None):
            raise TransactionClosed(
                f"transaction id {shown(txn_id)} was used before; open each transaction with a fresh id"
            )

        txn = OpenTransaction(txn_id, now, now + timeout_ms / 1000, timeout_ms, attempt=attempt)
        self._open[txn_id] = txn
        self.published.open_transactions = len(self._open)
        if log_begin:
            log.info("txn.begin", txn_id=txn_id, namespace=self.namespace, timeout_ms=timeout_ms)
        return txn

    def _full(self) -> ResourceExhausted:
        return ResourceExhausted(
            f"namespace {self.namespace!r} already has {len(self._open)} open transactions "
            f"(limit {self._config.max_open_txns_per_namespace}); commit or abort some first"
        )

    def _timeout_ms(self, timeout_ms: int | None) -> int:
        """A transaction's timeout: the default for None; InvalidArgument outside the bounds."""
        if timeout_ms is None:
            return self._config.default_txn_timeout_ms
        limit = self._config.max_txn_timeout_ms
        if not 1 <= timeout_ms <= limit:
            raise InvalidArgument(f"timeout_ms must be between 1 and {limit}, got {timeout_ms}")
        return timeout_ms

    def _open_and_stage(
        self,
        txn_id: str,
        mutations: Iterable[Mutation],
        conditions: Iterable[Condition],
        open: TxnOpen,
        log_begin: bool,
        rerun: bool = False,
        checked: bool = False,
        attempt: str = "",
    ) -> OpenTransaction:
        """Open a client-chosen id and stage into it, all or nothing.

        `checked`: the caller already knows the id has not committed.
        """
        if not (rerun or checked) and txn_id not in self._open and self._finished.get(txn_id) is None:
            commit_ts = self._committed(txn_id)  # it may have committed before a restart
            if commit_ts is not None:
                raise AlreadyCommitted(
                    f"transaction id {shown(txn_id)} was used before: it committed at commit_ts {commit_ts}",
                    commit_ts,
                )
        txn = self._open_txn(txn_id, open.timeout_ms, log_begin, rerun, attempt)
        try:
            self._stage(txn, mutations, conditions)
        except BaseException:
            self._close(txn_id)
            raise
        return txn

    def _live(self, txn_id: str, attempt: str) -> OpenTransaction:
        """The open transaction `txn_id`, if `attempt` is the one that opened it."""
        now = self._touch()
        txn = self._open.get(txn_id)
        if txn is None:
            raise self._finished.closed_error(txn_id)
        if txn.deadline <= now:
            self._expire(txn)
            raise self._finished.closed_error(txn_id)
        if txn.attempt != attempt:
            raise TransactionClosed(
                f"transaction {shown(txn_id)} is held by another attempt (opened with another attempt "
                "token, perhaps after this one's timeout passed); this attempt can no longer stage or commit"
            )
        return txn

    def _stage(
        self, txn: OpenTransaction, mutations: Iterable[Mutation], conditions: Iterable[Condition] = ()
    ) -> None:
        """Add mutations and conditions all-or-nothing, within the per-transaction bounds."""
        batch, new_conditions, size = self._checked(
            txn.txn_id, mutations, conditions, txn.mutations, len(txn.conditions), txn.staged_bytes
        )
        txn.mutations.update(batch)
        txn.conditions.extend(new_conditions)
        txn.staged_bytes = size

    def _checked(
        self,
        txn_id: str,
        mutations: Iterable[Mutation],
        conditions: Iterable[Condition],
        held: Mapping[tuple[str, str, str], Mutation] = _NOTHING_HELD,
        held_conditions: int = 0,
        held_bytes: int = 0,
    ) -> tuple[dict[tuple[str, str, str], Mutation], list[Condition], int]:
        """`mutations` by key (the last one of a key wins) and `conditions`, checked against
        the per-transaction bounds on top of what the transaction holds already (`held`:
        its mutations, how many conditions, its bytes); and the bytes it would hold then."""
        batch: dict[tuple[str, str, str], Mutation] = {}
        for mutation in mutations:
            batch[mutation.target] = mutation
        new_conditions = list(conditions)
        count = len(held) + held_conditions + len(new_conditions)
        size = held_bytes
        for target, mutation in batch.items():
            previous = held.get(target)
            if previous is None:
                count += 1
            else:
                size -= _mutation_bytes(previous)
            size += _mutation_bytes(mutation)
        config = self._config
        if count > config.max_ops_per_txn:
            raise ResourceExhausted(
                f"transaction {shown(txn_id)} would hold {count} operations (writes, deletes "
                f"and conditions; limit {config.max_ops_per_txn} per transaction)"
            )
        if size > config.max_txn_bytes:
            raise ResourceExhausted(
                f"transaction {shown(txn_id)} would hold {size} bytes "
                f"(limit {config.max_txn_bytes} per transaction)"
            )
        return batch, new_conditions, size

    def _expire(self, txn: OpenTransaction) -> None:
        self._close(txn.txn_id)
        self._metrics.expiries.inc()
        self._finished.remember(txn.txn_id, Finished("expired", timeout_ms=txn.timeout_ms))
        log.info("txn.expire", txn_id=txn.txn_id, namespace=self.namespace, timeout_ms=txn.timeout_ms)
