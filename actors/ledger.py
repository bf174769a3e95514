"""The ledger actor: the sole writer, and the one place commit_ts is assigned.

Commits arrive as `CommitIntent` (or `CommitIntents`) tells, in mailbox order. While the ledger
writes and fsyncs one group, the next commits queue up in its mailbox; it
takes every commit already waiting (up to `max_group`) into the next group
and makes them durable with one WriteBatch and one fsync. Mailbox order is
commit_ts order.
"""

from __future__ import annotations

import collections
import secrets
import time
from typing import Any, NamedTuple

import pykka
import structlog

from actors import loglines
from actors.compactor import Compactor
from actors.errors import Conflict, OutcomeUnknown, Unavailable
from actors.inbox import SimpleInboxActor
from actors.messages import (
    CommitIntent,
    CommitIntents,
    CompactionSettled,
    Condition,
    LedgerStatusQuery,
    PurgeRequest,
    ReopenRequest,
    RetainRequest,
    SnapshotRequest,
)
from actors.metrics import Metrics
from actors.watch import WatchHub
from storage import (
    DataLossError,
    Event,
    EventOp,
    SnapshotDirectory,
    SnapshotInfo,
    StorageError,
    Store,
    StoreFailedError,
)
from storage.faults import crash_point
from storage.store import purge_ranges

log = structlog.get_logger("statehouse.ledger")


class Repeat(NamedTuple):
    """The outcome of an intent whose transaction id was already written: its first commit_ts."""

    commit_ts: int


class Ledger(SimpleInboxActor):
    """Assigns commit_ts and versions and writes commit groups durably."""

    def __init__(
        self,
        store: Store,
        max_group: int = 512,
        snapshots: SnapshotDirectory | None = None,
        snapshot_every_commits: int = 0,
        watches: WatchHub | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__()
        self._watches = watches
        self._metrics = metrics or Metrics()
        self._store = store
        self._max_group = max_group
        self._snapshots = snapshots
        self._snapshot_every = snapshot_every_commits
        self._since_snapshot = 0
        self._pending: list[CommitIntent] = []
        self._written = 0  # commits written by the last group
        self._synced_seconds = 0.0  # how long the last group's write and sync took
        self._groups = 0
        self._grouped_commits = 0
        self._recent_group_sizes: collections.deque[int] = collections.deque(maxlen=64)
        self._recent_sync_ms: collections.deque[float] = collections.deque(maxlen=64)
        self._last_group_at: float | None = None  # time.monotonic() of the last synced write
        # Compactions purges owe; it reports back through the mailbox, where the store is written.
        self._compactor = Compactor(store, self._compacted)

    # Only tells arrive here. An exception escaping a tell would kill the
    # sole writer, so every failure is turned into a reply instead.
    def on_receive(self, message: Any) -> None:
        try:
            self._receive(message)
        except Exception:  # a bug; the futures concerned were already failed where possible
            log.exception("ledger.unexpected_error")

    def _receive(self, message: Any) -> None:
        if isinstance(message, (CommitIntent, CommitIntents)):
            if isinstance(message, CommitIntent):
                self._pending.append(message)
            else:
                self._pending.extend(message.intents)
            if len(self._pending) >= self._max_group or self.actor_inbox.empty():
                self._flush()
        elif isinstance(message, LedgerStatusQuery):
            # Answered from what is durable, without flushing: a question must
            # not split the commits waiting around it into two synced writes.
            message.reply.set_result(self._status())
            if self._pending and self.actor_inbox.empty():
                self._flush()
        elif isinstance(message, SnapshotRequest):
            self._flush()
            self._snapshot(message)
        elif isinstance(message, PurgeRequest):
            self._flush()  # the commits before it in the mailbox come first
            self._purge(message)
        elif isinstance(message, RetainRequest):
            self._flush()  # the commits before it in the mailbox come first
            self._retain(message)
        elif isinstance(message, CompactionSettled):
            # Commits that waited behind this message go first (it arrived between them).
            self._flush()
            try:
                self._store.settle_compaction(message.purge_ts)
            except StorageError as exc:
                log.warning("compact.unrecorded", error=str(exc))
        elif isinstance(message, ReopenRequest):
            self._flush()
            try:
                self._reopen()
            except StorageError as exc:
                log.debug("store.not_reopened", reason=str(exc))

    def _reopen(self) -> None:
        """Reopen a store whose writes failed, if it can be done now."""
        if not self._store.failed:
            return
        self._store.reopen()  # raises StorageError while it cannot yet
        log.info("store.reopened", last_commit_ts=self._store.last_commit_ts)
        if self._watches is not None:
            # A group whose fsync failed may have survived the reopen: it is
            # durable now, so watchers get it before anything after it.
            missed = list(self._store.view().events(self._watches.routed_ts + 1))
            if missed:
                self._watches.publish(missed)

    def _purge(self, request: PurgeRequest) -> None:
        """Write a purge as the next commit: its event, and the removal of what it purges."""
        started = time.perf_counter()
        try:
            self._reopen()
            commit_ts = self._store.last_commit_ts + 1
            op = EventOp(request.namespace, request.agent_id, request.prefix, 0, None, purge=True)
            txn_id = f"{request.namespace}:purge:{secrets.token_hex(12)}"
            event = Event(commit_ts, txn_id, time.time_ns() // 1_000_000, (op,))
            result = self._store.purge(event)
        except StoreFailedError as exc:  # the WAL fsync failed: the purge may survive the reopen
            log.error(
                "purge.sync_failed", namespace=request.namespace, agent_id=request.agent_id, error=str(exc)
            )
            request.reply.set_exception(
                OutcomeUnknown(f"purge outcome unknown: {exc}. Read the agent to find out, or purge again")
            )
            return
        except (StorageError, OSError) as exc:
            log.error("purge.failed", namespace=request.namespace, agent_id=request.agent_id, error=str(exc))
            failure = exc if isinstance(exc, DataLossError) else Unavailable(f"nothing was purged: {exc}")
            request.reply.set_exception(failure)
            return
        except Exception as exc:  # a bug, or a record that does not decode: answer, do not hang
            log.exception("purge.failed", namespace=request.namespace, agent_id=request.agent_id)
            request.reply.set_exception(Unavailable(f"nothing was purged: {exc!r}"))
            return
        self._metrics.commits.inc()
        if self._watches is not None:
            self._watches.publish([event])
        log.info(
            "purge.done",
            namespace=request.namespace,
            agent_id=request.agent_id,
            prefix=request.prefix,
            commit_ts=commit_ts,
            keys=result.keys,
            events_rewritten=result.events,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        request.reply.set_result(result)
        # The purged bytes leave the data files soon, without stalling commits (see
        # actors/compactor.py): once older readers are done, on RocksDB's threads.
        self._compactor.owe(purge_ranges(request.namespace, request.agent_id, result), commit_ts)

    def _retain(self, request: RetainRequest) -> None:
        """Drop what a retention pass found, in one write between commit groups."""
        started = time.perf_counter()
        try:
            self._reopen()
            applied = self._store.retain(request.plan)
        except Exception as exc:  # a failed write, a bug: answer, never hang the retainer
            log.error("retain.failed", error=repr(exc))
            request.reply.set_exception(exc)
            return
        if applied.ops:
            log.info(
                "retain.done",
                ops=applied.ops,
                events_emptied=applied.events_emptied,
                horizons=applied.horizons,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
        request.reply.set_result(applied)

    def _snapshot(self, request: SnapshotRequest) -> None:
        """Checkpoint the store now: between groups, so it holds only durable commits."""
        try:
            if self._snapshots is None:
                raise Unavailable("snapshots are not configured")
            started = time.perf_counter()
            commit_ts = self._store.last_commit_ts
            path = self._store.checkpoint(self._snapshots.new_path(commit_ts))
            removed = self._snapshots.prune(keep_path=path)
        except (StorageError, OSError, Unavailable) as exc:
            log.error("snapshot.failed", error=str(exc), reason=request.reason)
            if request.reply is not None:
                request.reply.set_exception(exc if isinstance(exc, Unavailable) else Unavailable(str(exc)))
            return
        self._since_snapshot = 0
        log.info(
            "snapshot.created",
            path=str(path),
            commit_ts=commit_ts,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            reason=request.reason,
            pruned=len(removed),
        )
        if request.reply is not None:
            request.reply.set_result(SnapshotInfo(path, commit_ts))

    def _compacted(self, purge_ts: int) -> None:
        """Called by the compactor's thread: record it through the mailbox (the writer's thread)."""
        try:
            self.actor_ref.tell(CompactionSettled(purge_ts))
        except pykka.ActorDeadError:
            pass  # stopped meanwhile: the store still says it is owed, and the next start pays it

    def on_start(self) -> None:
        self._compactor.start()

    def on_stop(self) -> None:
        self._flush()
        self._compactor.stop()

    def _flush(self) -> None:
        group, self._pending = self._pending, []
        if not group:
            return
        try:
            results = self._write(group)
        except StoreFailedError as exc:
            log.error("ledger.sync_failed", error=str(exc), commits=len(group))
            unknown = OutcomeUnknown(
                f"commit outcome unknown: {exc}. It may or may not have reached the disk; read to find out"
            )
            for intent in group:
                intent.reply.set_exception(unknown)
            return
        except DataLossError as exc:  # the store was refused when reopened: damaged
            log.error("ledger.write_failed", error=str(exc), commits=len(group), code="DATA_LOSS")
            for intent in group:
                intent.reply.set_exception(exc)
            return
        except StorageError as exc:
            log.error("ledger.write_failed", error=str(exc), commits=len(group))
            said = str(exc)
            if not said.startswith("nothing was committed"):
                said = f"nothing was committed: {said}"
            failure = Unavailable(said)
            for intent in group:
                intent.reply.set_exception(failure)
            return
        except BaseException as exc:  # a bug: fail the group, keep the writer alive
            log.exception("ledger.unexpected_error", commits=len(group))
            for intent in group:
                intent.reply.set_exception(Unavailable(f"internal error in the ledger: {exc!r}"))
            return
        now = time.monotonic()
        half = len(group) // 2
        for n, (intent, outcome) in enumerate(zip(group, results, strict=True)):
            if n == half and n:
                crash_point("ledger.mid_ack")
            if isinstance(outcome, Exception):
                intent.reply.set_exception(outcome)
            elif isinstance(outcome, Repeat):
                intent.reply.set_result(outcome.commit_ts)
            else:
                intent.reply.set_result(outcome)
        if len(group) == 1:
            # A lone commit: its reply woke the server's loop, which needs the GIL that this
            # thread would otherwise hold through the group's metrics and log lines
            # (docs/performance.md, "Handing the GIL on"). A larger group means load, where
            # the loop has its turn soon enough and a switch costs more than it saves.
            time.sleep(0)
        self._settle()
        # `group`: how many commits shared this synced write (0 for an empty
        # commit in a group that wrote nothing).
        written = self._written
        commit_seconds = self._metrics.commit_seconds
        with loglines.together():  # one write for the group's lines (actors.loglines)
            for intent, outcome in zip(group, results, strict=True):
                if isinstance(outcome, DataLossError):
                    log.error("txn.failed", txn_id=intent.txn_id, code="DATA_LOSS", error=str(outcome))
                    continue
                if isinstance(outcome, Conflict):
                    self._metrics.conflicts.inc()
                    log.info("txn.conflict", txn_id=intent.txn_id, **outcome.fields())
                    continue
                if isinstance(outcome, Repeat):
                    log.info(
                        "txn.commit_retried",
                        txn_id=intent.txn_id,
                        commit_ts=outcome.commit_ts,
                        known="ledger",
                    )
                    continue
                duration = now - intent.begun_at
                if intent.mutations:  # as statehouse_commits_total counts them: commits that wrote
                    commit_seconds.observe(duration)
                loglines.info(
                    log,
                    "txn.commit",
                    txn_id=intent.txn_id,
                    commit_ts=outcome,
                    ops=len(intent.mutations),
                    duration_ms=round(duration * 1000, 3),
                    group=written,
                )
        if self._snapshot_every:
            self._since_snapshot += written
            if self._since_snapshot >= self._snapshot_every:
                self._snapshot(SnapshotRequest(None, reason="every_commits"))

    def _write(self, group: list[CommitIntent]) -> list[int | Conflict | Repeat | DataLossError]:
        """Check conditions, assign commit_ts/versions, append durably.

        Returns each intent's commit_ts, the Conflict that stopped it,
        Repeat(first commit_ts) for a transaction id already written, or the
        DataLossError of a read it needed (a key's version, a condition, its
        id) that met damaged data: that commit fails, the rest go on.
        """
        self._reopen()
        commit_ts = self._store.last_commit_ts
        committed_at_ms = time.time_ns() // 1_000_000
        # Keys written by this group so far: target -> (version, live).
        versions: dict[tuple[str, str, str], tuple[int, bool]] = {}
        events: list[Event] = []
        results: list[int | Conflict | Repeat | DataLossError] = []
        # One transaction id is written at most once, whatever the namespace
        # actors let through (a retry whose first attempt they forgot, one
        # that survived a failed fsync): a repeat gets the first commit_ts.
        earlier = self._earlier([intent.txn_id for intent in group])
        written: dict[str, int] = {}
        for intent, first in zip(group, earlier, strict=True):
            if isinstance(first, DataLossError):
                results.append(first)
                continue
            if first is None:
                first = written.get(intent.txn_id)
            if first is not None:
                results.append(Repeat(first))
                continue
            staged: dict[tuple[str, str, str], tuple[int, bool]] = {}
            ops = []
            try:
                if intent.conditions:
                    conflict = self._check(intent.conditions, versions)
                    if conflict is not None:
                        results.append(conflict)
                        continue
                for mutation in intent.mutations:
                    target = mutation.target
                    known = staged.get(target) or versions.get(target) or self._store.current_version(*target)
                    if mutation.if_absent and known[1] and mutation.value is not None:
                        continue  # insert-if-absent: the key has a live value, so this write is skipped
                    version = known[0] + 1
                    staged[target] = (version, mutation.value is not None)
                    ops.append(EventOp(*target, version, mutation.value))
            except DataLossError as exc:
                results.append(DataLossError(f"nothing was committed: {exc}", detail=exc.detail))
                continue
            if not ops:
                # An empty commit (or one whose every write was skipped as present)
                # writes nothing and is ordered after what came before.
                results.append(commit_ts)
                continue
            versions.update(staged)
            commit_ts += 1
            events.append(Event(commit_ts, intent.txn_id, committed_at_ms, tuple(ops)))
            results.append(commit_ts)
            written[intent.txn_id] = commit_ts
        self._written = len(events)
        if events:
            started = time.perf_counter()
            # The store's bookkeeping of the write waits until the commits are acknowledged
            # (`_settle`), as do the metrics: neither is the writers' to wait for.
            self._store.append(events, settle=False)
            self._synced_seconds = time.perf_counter() - started
            self._last_group_at = time.monotonic()
            if self._watches is not None:
                # Durable now: watchers get it no later than its writer's acknowledgement.
                self._watches.publish(events)
        return results

    def _settle(self) -> None:
        """After a group's acknowledgements: the store's bookkeeping and the metrics of its write."""
        self._store.settle()
        written = self._written
        if not written:
            return
        synced = self._synced_seconds
        self._recent_sync_ms.append(synced * 1000)
        self._metrics.fsync_seconds.observe(synced)
        self._metrics.group_size.observe(written)
        self._metrics.commits.inc(written)
        self._groups += 1
        self._grouped_commits += written
        self._recent_group_sizes.append(written)

    def _earlier(self, txn_ids: list[str]) -> list[int | DataLossError | None]:
        """The commit_ts of each id already written (None if not): one multi-get, or, where
        that meets damage, one read per id, so that only the commits it hides fail."""
        try:
            return list(self._store.committed_many(txn_ids))
        except DataLossError:
            pass
        found: list[int | DataLossError | None] = []
        for txn_id in txn_ids:
            try:
                found.append(self._store.committed_many([txn_id])[0])
            except DataLossError as exc:
                found.append(DataLossError(f"nothing was committed: {exc}", detail=exc.detail))
        return found

    def _check(
        self, conditions: tuple[Condition, ...], versions: dict[tuple[str, str, str], tuple[int, bool]]
    ) -> Conflict | None:
        """The first condition that does not hold as of the commits before this one, if any."""
        for condition in conditions:
            target = (condition.namespace, condition.agent_id, condition.key)
            version, live = versions.get(target) or self._store.current_version(*target)
            expected = condition.expected_version
            if (expected == 0 and live) or (expected != 0 and version != expected):
                return Conflict(*target, expected, version, live)
        return None

    def _status(self) -> dict[str, object]:
        last = self._last_group_at
        return {
            "last_commit_ts": self._store.last_commit_ts,
            "queue_depth": self.actor_inbox.qsize(),
            "last_synced_write_s_ago": None if last is None else round(time.monotonic() - last, 3),
            "synced_writes": self._groups,
            "commits_written": self._grouped_commits,
            "commits_per_synced_write": (
                round(self._grouped_commits / self._groups, 3) if self._groups else 0.0
            ),
            "recent_group_sizes": list(self._recent_group_sizes),
            "recent_sync_ms": [round(ms, 3) for ms in self._recent_sync_ms],
        }
