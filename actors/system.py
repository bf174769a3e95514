"""The actor system: starts the ledger and namespace actors and is the one
door the rpc layer uses for transactions and reads.

Start order: ledger, registry, reaper. Stop order is the reverse, in
`stop()`. Every wait on an actor is bounded by the caller's deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pykka
import structlog

from actors.errors import DeadlineExceeded, Retired, StatehouseFault, Unavailable
from actors.finished import FinishedTransactions, shown
from actors.ledger import Ledger
from actors.messages import (
    AbortCall,
    BeginCall,
    CommitCall,
    CommitCalls,
    Condition,
    LedgerStatusQuery,
    Mutation,
    PurgeRequest,
    ReopenRequest,
    RetainRequest,
    SnapshotRequest,
    StageCall,
    TxnOpen,
)
from actors.metrics import Metrics
from actors.namespace import Activity, NamespaceActor, new_client_txn_namespace, txn_namespace
from actors.registry import Dormant, LiveActor, NamespaceRegistry
from actors.reply import Reply
from actors.retainer import Retainer
from actors.watch import Watcher, WatchFilter, WatchHub
from storage import PurgeResult, ReadView, SnapshotDirectory, SnapshotInfo, StorageError, Store
from storage.retention import Applied, Plan, Policies

log = structlog.get_logger("statehouse.actors")

_ATTEMPTS = 4  # a retiring actor is replaced; more than a few races means a bug


@dataclass(frozen=True)
class ActorConfig:
    default_txn_timeout_ms: int = 30_000
    max_txn_timeout_ms: int = 600_000
    idle_actor_seconds: float = 60.0
    tick_seconds: float = 0.5
    max_group: int = 512
    # Bounds a runaway agent cannot blow through (RESOURCE_EXHAUSTED past them).
    max_open_txns_per_namespace: int = 10_000
    max_ops_per_txn: int = 10_000
    max_txn_bytes: int = 64 * 1024 * 1024
    # Past this many live namespace actors, the least recently used idle ones retire.
    max_idle_actors: int = 64
    # A watcher with more than this many events, or bytes, waiting for it is cut off.
    watch_max_events: int = 10_000
    watch_max_bytes: int = 16 * 1024 * 1024
    # Which history is let go (storage/retention.py; default: none), and how often that is done.
    retention: Policies = field(default_factory=Policies)
    retention_every_seconds: float = 60.0


def _owner(txn_id: str, open: TxnOpen | None) -> str:
    """The namespace owning `txn_id`; a client-chosen id being opened is checked strictly."""
    return new_client_txn_namespace(txn_id) if open is not None else txn_namespace(txn_id)


def _teller(message: object) -> Callable[[pykka.ActorProxy], bool]:
    def tell(proxy: pykka.ActorProxy) -> bool:
        proxy.actor_ref.tell(message)
        return True

    return tell


class CommitRequest(NamedTuple):
    """One transaction of a `commit_batch`: its last mutations and conditions and, for a
    client-chosen id, `open`."""

    txn_id: str
    mutations: tuple[Mutation, ...] = ()
    open: TxnOpen | None = None
    conditions: tuple[Condition, ...] = ()
    attempt: str = ""


def _late_commit(txn_id: str) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"commit of {shown(txn_id)} was not confirmed durable before the deadline; it may still complete"
    )


class Asked(NamedTuple):
    """An answer on its way from an actor: `reply` is settled when it comes (see
    `rpc.aio.answer` to await it); `wait` raises `late()` if it does not come in time
    (made only then: a commit's names its transaction, which costs formatting)."""

    reply: Reply[Any]
    late: Callable[[], Exception]

    def wait(self, timeout: float) -> Any:
        try:
            return self.reply.result(timeout=timeout)
        except FutureTimeout:
            raise self.late() from None


@dataclass(frozen=True)
class SnapshotPolicy:
    """Where snapshots go, how many to keep (0 = all), and how often to take them (0 = never)."""

    directory: Path
    keep: int = 0
    every_commits: int = 0
    every_seconds: float = 0.0


class ActorSystem:
    """Owns the ledger, the namespace actors and the reaper thread."""

    def __init__(
        self,
        store: Store,
        config: ActorConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        snapshots: SnapshotPolicy | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.config = config or ActorConfig()
        self.metrics = metrics or Metrics()
        self.snapshots = snapshots
        self._clock = clock  # deadlines and idleness; tests pass a fake one
        self._ledger: pykka.ActorRef | None = None
        self._registry: NamespaceRegistry | None = None
        self._finished = FinishedTransactions(committed=store.commit_ts_of, unsettled=lambda: store.failed)
        self._stopping = threading.Event()
        self._reaper: threading.Thread | None = None
        every = self.config.retention_every_seconds
        self.retainer = Retainer(store, self.config.retention, self._retain, every)
        self.watches = WatchHub(
            store.last_commit_ts, self.config.watch_max_events, self.config.watch_max_bytes
        )

    # -- start / stop ------------------------------------------------------

    def start(self) -> ActorSystem:
        policy = self.snapshots
        self._ledger = Ledger.start(
            self.store,
            self.config.max_group,
            None if policy is None else SnapshotDirectory(policy.directory, policy.keep),
            0 if policy is None else policy.every_commits,
            self.watches,
            self.metrics,
        )
        self._registry = NamespaceRegistry(self._start_namespace, self.config.max_idle_actors)
        self._reaper = threading.Thread(target=self._reap, name="statehouse-reaper", daemon=True)
        self._reaper.start()
        self.retainer.start()
        return self

    def stop(self) -> None:
        """End the watches; stop the reaper, the namespace actors, then the ledger (which flushes)."""
        self.watches.close()
        self._stopping.set()
        self.retainer.stop()
        try:
            if self._reaper is not None:
                self._reaper.join()
            if self._registry is not None:
                self._registry.stop_all()
        finally:
            if self._ledger is not None:
                self._ledger.stop(block=True)

    def _start_namespace(self, namespace: str, adopted: Dormant | None) -> tuple[pykka.ActorProxy, Activity]:
        assert self._ledger is not None and self._registry is not None
        published = Activity(self._clock())
        proxy = NamespaceActor.start(
            namespace,
            self._ledger,
            self.config,
            self._registry.retire,
            self._finished,
            self._clock,
            self.store.commit_ts_of,
            self.metrics,
            published,
            adopted,
        ).proxy()
        return proxy, published

    def _reap(self) -> None:
        every = 0.0 if self.snapshots is None else self.snapshots.every_seconds
        last_snapshot = time.monotonic()
        while not self._stopping.wait(self.config.tick_seconds):
            self.tick_all()
            if self.store.failed:  # reopen it without waiting for a commit to try
                self._tell_ledger_quietly(ReopenRequest())
            if every and time.monotonic() - last_snapshot >= every:
                last_snapshot = time.monotonic()
                self._tell_ledger_quietly(SnapshotRequest(None, reason="every_seconds"))

    def _tell_ledger_quietly(self, message: object) -> None:
        try:
            self._tell_ledger(message)
        except Unavailable:
            pass  # stopping

    def _tell_ledger(self, message: object) -> None:
        if self._ledger is None:
            raise Unavailable("the ledger is not running")
        try:
            self._ledger.tell(message)
        except pykka.ActorDeadError:
            raise Unavailable("the ledger is not running (shutting down?)") from None

    def tick_all(self, wait: float | None = None) -> None:
        """Expire overdue transactions and retire idle actors now; dormant transactions
        that are due get an actor to expire them.

        The reaper does not wait (`wait=None`); tests wait for the ticks.
        """
        futures = []
        for actor in self._live():
            try:
                futures.append(actor.proxy.tick(actor.uses))
            except pykka.ActorDeadError:
                pass
        if self._registry is not None:
            futures.extend(self._registry.wake_due(self._clock(), lambda proxy, uses: proxy.tick(uses)))
        if wait is not None:
            for future in futures:
                try:
                    future.get(timeout=wait)
                except pykka.ActorDeadError:
                    pass

    def _live(self) -> list[LiveActor]:
        return [] if self._registry is None else self._registry.live()

    # -- transactions ------------------------------------------------------

    def begin(self, namespace: str, timeout_ms: int | None, wait: float) -> tuple[str, int]:
        """Open a transaction owned by `namespace`; returns (txn_id, timeout_ms)."""
        return self.ask_begin(namespace, timeout_ms).wait(wait)  # type: ignore[no-any-return]

    def ask_begin(self, namespace: str, timeout_ms: int | None) -> Asked:
        """`begin` without waiting: its answer is (txn_id, timeout_ms)."""
        return self._asked(namespace, True, lambda reply: BeginCall(timeout_ms, reply))

    def stage(
        self,
        txn_id: str,
        mutations: Iterable[Mutation],
        wait: float,
        open: TxnOpen | None = None,
        conditions: Iterable[Condition] = (),
        attempt: str = "",
    ) -> None:
        """Stage into an open transaction, or open `txn_id` (client-chosen) with `open`."""
        self.ask_stage(txn_id, tuple(mutations), open, tuple(conditions), attempt).wait(wait)

    def ask_stage(
        self,
        txn_id: str,
        mutations: tuple[Mutation, ...],
        open: TxnOpen | None = None,
        conditions: tuple[Condition, ...] = (),
        attempt: str = "",
    ) -> Asked:
        """`stage` without waiting: its answer is None."""
        return self._asked(
            _owner(txn_id, open),
            open is not None,
            lambda reply: StageCall(txn_id, mutations, open, conditions, attempt, reply),
            txn_id,
        )

    def commit(
        self,
        txn_id: str,
        mutations: Iterable[Mutation],
        wait: float,
        open: TxnOpen | None = None,
        conditions: Iterable[Condition] = (),
        attempt: str = "",
    ) -> int:
        """Commit and wait (at most `wait` seconds) until it is durable; returns commit_ts.

        With `open`, `txn_id` is a client-chosen id opened by this same call,
        and a retry of a commit of that id gets the first one's commit_ts.
        Conflict if a condition does not hold. `attempt`: the token of the
        call that opened the transaction, if it gave one.
        """
        request = CommitRequest(txn_id, tuple(mutations), open, tuple(conditions), attempt)
        return self.ask_commit(request).wait(wait)  # type: ignore[no-any-return]

    def ask_commit(self, request: CommitRequest) -> Asked:
        """`commit` without waiting: its answer is the commit_ts, once the commit is durable."""
        txn_id, mutations, open, conditions, attempt = request
        return self._asked(
            _owner(txn_id, open),
            open is not None,
            lambda reply: CommitCall(txn_id, mutations, open, reply, conditions, attempt),
            txn_id,
            late=lambda: _late_commit(txn_id),
        )

    def commit_batch(self, requests: Sequence[CommitRequest], wait: float) -> list[int | Exception]:
        """Commit independent transactions together; each outcome is a commit_ts or its error.

        The calls for one namespace go to its actor as one message, and the
        ledger groups them into shared synced writes.
        """
        deadline = time.monotonic() + wait
        outcomes: list[int | Exception] = []
        for asked in self.ask_commits(requests):
            try:
                outcomes.append(asked.wait(max(0.0, deadline - time.monotonic())))
            except (StatehouseFault, StorageError) as exc:  # StorageError: a failed index read
                outcomes.append(exc)
        return outcomes

    def ask_commits(self, requests: Sequence[CommitRequest]) -> list[Asked]:
        """`commit_batch` without waiting: each request's answer on its way, in order."""
        asked = [self.commit_asked(request) for request in requests]
        self.tell_commits(requests, [one.reply for one in asked])
        return asked

    def commit_asked(self, request: CommitRequest) -> Asked:
        """The `Asked` that `tell_commits` will answer for `request`, made before it is told."""
        txn_id = request.txn_id
        return Asked(Reply(), lambda: _late_commit(txn_id))

    def tell_commits(self, requests: Sequence[CommitRequest], answers: Sequence[Reply[Any]]) -> None:
        """Tell each request's commit to its namespace's actor, one message per namespace;
        each answer is settled with its outcome (see `ask_commits`)."""
        by_namespace: dict[str, list[tuple[Reply[Any], CommitCall]]] = {}
        for (txn_id, mutations, open, conditions, attempt), answer in zip(requests, answers, strict=True):
            try:
                namespace = _owner(txn_id, open)
            except StatehouseFault as exc:
                answer.set_exception(exc)
                continue
            call = CommitCall(txn_id, mutations, open, Reply(), conditions, attempt)
            by_namespace.setdefault(namespace, []).append((answer, call))
        for namespace, calls in by_namespace.items():
            opening = any(call.open is not None for _, call in calls)
            message = calls[0][1] if len(calls) == 1 else CommitCalls(tuple(call for _, call in calls))
            try:
                sent = self._send(namespace, opening, _teller(message))
            except Unavailable as exc:
                for answer, _call in calls:
                    answer.set_exception(exc)
                continue
            for answer, call in calls:
                if sent is None:
                    # No actor and nothing dormant: none of the namespace's transactions is open.
                    answer.set_exception(self._finished.closed_error(call.txn_id))
                    continue
                again = lambda reply, c=call: c._replace(reply=reply)  # noqa: E731
                resend = (namespace, call.open is not None, again, call.txn_id, False)
                self._forward(call.reply, answer, resend)

    def abort(self, txn_id: str, wait: float, attempt: str = "") -> None:
        self.ask_abort(txn_id, attempt).wait(wait)

    def ask_abort(self, txn_id: str, attempt: str = "") -> Asked:
        """`abort` without waiting: its answer is None."""
        call = lambda reply: AbortCall(txn_id, attempt, reply)  # noqa: E731
        return self._asked(txn_namespace(txn_id), False, call, txn_id, missing_ok=True)

    def purge(self, namespace: str, agent_id: str, prefix: str, wait: float) -> PurgeResult:
        """Purge the agent's keys under `prefix` and their history as the next commit."""
        late = DeadlineExceeded("the purge did not finish before the deadline; it may still complete")
        request = lambda reply: PurgeRequest(namespace, agent_id, prefix, reply)  # noqa: E731
        return self._through_ledger(request, wait, late)

    def compact(self) -> float:
        """Apply the retention policies now, then rewrite every data file so that what was
        purged, deleted or let go leaves them; the seconds it took.

        Runs on the caller's thread beside commits (RocksDB compacts on threads of its own).
        """
        if self._stopping.is_set():
            raise Unavailable("the daemon is shutting down")
        started = time.perf_counter()
        try:
            retained = self.retainer.run()
            self.store.compact(None)
        except StorageError as exc:
            raise Unavailable(str(exc)) from exc
        log.info("compact.requested", retained_ops=retained.ops, events_emptied=retained.events_emptied)
        return time.perf_counter() - started

    def _retain(self, found: Plan) -> Applied:
        """Have the ledger drop what a retention pass found (the retainer's thread waits)."""
        late = Unavailable("the ledger did not apply retention within 120 s")
        return self._through_ledger(lambda reply: RetainRequest(found, reply), 120.0, late)

    def snapshot(self, wait: float) -> SnapshotInfo:
        """Take a snapshot now (between two commit groups) and return where it is."""
        late = DeadlineExceeded("the snapshot did not finish before the deadline; it may still complete")
        return self._through_ledger(SnapshotRequest, wait, late)

    def _through_ledger(self, request: Callable[[Reply[Any]], object], wait: float, late: Exception) -> Any:
        """Tell the ledger `request(reply)` and wait up to `wait` s for the reply (`late` if none)."""
        if self._stopping.is_set():
            raise Unavailable("the daemon is shutting down")
        reply: Reply[Any] = Reply()
        self._tell_ledger(request(reply))
        try:
            return reply.result(timeout=wait)
        except FutureTimeout:
            raise late from None

    # -- reads and status ----------------------------------------------------

    def view(self) -> ReadView:
        """A consistent view of everything durably committed so far."""
        return self.store.view()

    def watch(self, watch: WatchFilter) -> tuple[Watcher, int]:
        """Follow commits live: a registered watcher, and the commit_ts up to which
        the log (read through `view()`) holds what came before it."""
        return self.watches.subscribe(watch)

    def status(self, wait: float) -> dict[str, Any]:
        """The ledger's and every live namespace actor's state.

        Each actor answers through its mailbox, so what it says is true
        between two of its messages; all are asked at once and together get
        `wait` seconds. One that does not answer in time shows as
        `"state": "stuck"`, with what it last published. Nothing here holds
        a lock an actor needs: asking never stalls commits. A namespace
        whose transactions wait without an actor shows as `"dormant"`.
        """
        deadline = time.monotonic() + wait
        assert self._ledger is not None
        ledger_depth = self._ledger.actor_inbox.qsize()
        query = self._ask_ledger()
        asked = []
        for actor in self._live():
            depth = actor.proxy.actor_ref.actor_inbox.qsize()
            try:
                asked.append((actor, depth, actor.proxy.status()))
            except pykka.ActorDeadError:
                continue  # retired meanwhile
        state, answer = self._ledger_answer(query, max(0.0, deadline - time.monotonic()))
        ledger: dict[str, Any] = {"state": state, **answer}
        if state != "ok":
            ledger.update(last_commit_ts=self.store.last_commit_ts, queue_depth=ledger_depth)
        namespaces = []
        for actor, depth, future in asked:
            try:
                answer = future.get(timeout=max(0.0, deadline - time.monotonic()))
            except pykka.Timeout:
                published = actor.published
                answer = {
                    "namespace": actor.namespace,
                    "state": "stuck",
                    "open_transactions": published.open_transactions,
                    "idle_s": round(self._clock() - published.last_activity, 3),
                }
            except (pykka.ActorDeadError, Retired):
                continue
            answer["mailbox_depth"] = depth
            namespaces.append(answer)
        namespaces.extend(self._dormant_status())
        return {"ledger": ledger, "namespaces": namespaces, "not_ready": self._not_ready(state, wait)}

    def _dormant_status(self) -> list[dict[str, Any]]:
        if self._registry is None:
            return []
        now = self._clock()
        return [
            {
                "namespace": namespace,
                "state": "dormant",
                "open_transactions": dormant.open_transactions,
                "oldest_transaction_age_s": round(now - dormant.oldest, 3),
                "idle_s": round(now - dormant.last_activity, 3),
                "mailbox_depth": 0,
            }
            for namespace, dormant in self._registry.dormant()
        ]

    def gauges(self) -> dict[str, int]:
        """Present-tense figures read from what the actors publish, without asking them."""
        live = self._live()
        ledger = self._ledger
        dormant = [] if self._registry is None else self._registry.dormant()
        return {
            "live_actors": len(live),
            "open_transactions": sum(actor.published.open_transactions for actor in live)
            + sum(record.open_transactions for _, record in dormant),
            "ledger_queue_depth": 0 if ledger is None else ledger.actor_inbox.qsize(),
            "last_commit_ts": self.store.last_commit_ts,
        }

    def ready(self, wait: float) -> str | None:
        """None when the store is open and the ledger answers within `wait` s, else why not."""
        if self._ledger is None:
            return "the daemon is shutting down"
        state, _answer = self._ledger_answer(self._ask_ledger(), wait)
        return self._not_ready(state, wait)

    def _not_ready(self, ledger_state: str, wait: float) -> str | None:
        """Why the daemon cannot take work, given how the ledger answered (None: it can)."""
        if self._stopping.is_set():
            return "the daemon is shutting down"
        if self.store.failed:
            return "the store refuses writes since a failed write to disk; it reopens when it can"
        if ledger_state == "stopped":
            return "the ledger is not running"
        if ledger_state == "stuck":
            return f"the ledger did not answer within {wait:g} s"
        return None

    def _ask_ledger(self) -> LedgerStatusQuery:
        """Ask the ledger for its status; the reply fails at once if it is not running."""
        query = LedgerStatusQuery(Reply())
        try:
            if self._ledger is None:
                raise pykka.ActorDeadError("not started")
            self._ledger.tell(query)
        except pykka.ActorDeadError:
            query.reply.set_exception(Unavailable("the ledger is not running"))
        return query

    def _ledger_answer(self, query: LedgerStatusQuery, wait: float) -> tuple[str, dict[str, Any]]:
        """("ok", its status), or ("stuck", {}) after `wait` s, or ("stopped", {})."""
        try:
            return "ok", query.reply.result(timeout=wait)
        except FutureTimeout:
            return "stuck", {}
        except Unavailable:
            return "stopped", {}

    def _send(self, namespace: str, start: bool, send: Callable[[Any], Any]) -> Any:
        """Enqueue a message to the namespace's actor; None if it has none and `start` is false."""
        if self._registry is None or self._stopping.is_set():
            raise Unavailable("the daemon is shutting down")
        try:
            return self._registry.send(namespace, start, send)
        except pykka.ActorDeadError:
            raise Unavailable("the daemon is shutting down") from None

    def _asked(
        self,
        namespace: str,
        start: bool,
        call: Callable[[Reply[Any]], object],
        txn_id: str = "",
        missing_ok: bool = False,
        late: Callable[[], Exception] | None = None,
    ) -> Asked:
        """Tell the namespace's actor `call(reply)`; the answer on its way. A retiring actor's
        `Retired` is not an answer: the call goes again to a fresh actor."""
        answer: Reply[Any] = Reply()
        self._attempt(namespace, start, call, txn_id, missing_ok, answer, 1)
        if late is None:
            late = lambda: DeadlineExceeded(  # noqa: E731
                f"namespace {namespace!r} did not answer before the request deadline"
            )
        return Asked(answer, late)

    def _attempt(
        self,
        namespace: str,
        start: bool,
        call: Callable[[Reply[Any]], object],
        txn_id: str,
        missing_ok: bool,
        answer: Reply[Any],
        attempt: int,
    ) -> None:
        """One sending of `_asked`'s call; settles `answer`, now or from the actor's thread."""
        reply: Reply[Any] = Reply()
        try:
            sent = self._send(namespace, start, _teller(call(reply)))
            if sent is None:
                # No actor and nothing dormant: none of the namespace's transactions is open.
                if not missing_ok:
                    raise self._finished.closed_error(txn_id)
                self._finished.check_abort(txn_id)
                answer.set_result(None)
                return
        except Exception as exc:  # the caller's answer (a retry runs on an actor's thread)
            answer.set_exception(exc)
            return

        self._forward(reply, answer, (namespace, start, call, txn_id, missing_ok), attempt)

    def _forward(
        self,
        reply: Reply[Any],
        answer: Reply[Any],
        resend: tuple[str, bool, Callable[[Reply[Any]], object], str, bool],
        attempt: int = 1,
    ) -> None:
        """Settle `answer` with what `reply` gets, unless that is a retiring actor's `Retired`:
        then `_attempt` the call again with `resend` (namespace, start, call, txn_id, missing_ok)."""

        def settled(done: Reply[Any]) -> None:
            if not isinstance(done.error(), Retired):
                answer.settle_from(done)
            elif attempt < _ATTEMPTS:
                self._attempt(*resend, answer, attempt + 1)
            else:
                answer.set_exception(Unavailable(f"namespace {resend[0]!r} kept restarting; try again"))

        reply.add_done_callback(settled)
