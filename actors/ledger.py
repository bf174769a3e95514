"""The ledger actor: the sole writer, and the one place commit_ts is assigned.

Commits arrive as `CommitIntent` (or `CommitIntents`) tells, in mailbox order. While the ledger
writes and fsyncs one group, the next commits queue up in its mailbox; it
takes every commit already waiting (up to `max_group`) into the next group
and makes them durable with one WriteBatch and one fsync. Mailbox order is
commit_ts order.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import pykka
import structlog

from actors.errors import Unavailable
from actors.messages import CommitIntent, CommitIntents, LedgerStatusQuery, RecoverRequest, SnapshotRequest
from storage import Event, EventOp, SnapshotDirectory, SnapshotInfo, StorageError, Store, StoreFailedError
from storage.faults import crash_point

log = structlog.get_logger("statehouse.ledger")


class Ledger(pykka.ThreadingActor):
    """Assigns commit_ts and versions and writes commit groups durably."""

    def __init__(
        self,
        store: Store,
        max_group: int = 512,
        snapshots: SnapshotDirectory | None = None,
        snapshot_every_commits: int = 0,
    ) -> None:
        super().__init__()
        self._store = store
        self._max_group = max_group
        self._snapshots = snapshots
        self._snapshot_every = snapshot_every_commits
        self._since_snapshot = 0
        self._pending: list[CommitIntent] = []
        self._groups = 0
        self._grouped_commits = 0
        self._recent_group_sizes: collections.deque[int] = collections.deque(maxlen=64)
        self._recent_sync_ms: collections.deque[float] = collections.deque(maxlen=64)

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
            self._flush()
            message.reply.set_result(self._status())
        elif isinstance(message, SnapshotRequest):
            self._flush()
            self._snapshot(message)
        elif isinstance(message, RecoverRequest):
            self._flush()
            try:
                self._recover()
            except StorageError as exc:
                log.debug("store.not_reopened", reason=str(exc))

    def _recover(self) -> None:
        """Reopen a store whose writes failed, if it can be done now."""
        if not self._store.failed:
            return
        self._store.recover()  # raises StorageError while it cannot yet
        log.info("store.reopened", last_commit_ts=self._store.last_commit_ts)

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

    def on_stop(self) -> None:
        self._flush()

    def _flush(self) -> None:
        group, self._pending = self._pending, []
        if not group:
            return
        try:
            results = self._write(group)
        except StoreFailedError as exc:
            log.error("ledger.sync_failed", error=str(exc), commits=len(group))
            unknown = Unavailable(
                f"commit outcome unknown: {exc}. It may or may not survive the restart; read to find out"
            )
            for intent in group:
                intent.reply.set_exception(unknown)
            return
        except StorageError as exc:
            log.error("ledger.write_failed", error=str(exc), commits=len(group))
            failure = Unavailable(f"commit not written: {exc}")
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
        for n, (intent, commit_ts) in enumerate(zip(group, results, strict=True)):
            if n == half and n:
                crash_point("ledger.mid_ack")
            intent.reply.set_result(commit_ts)
        # `group`: how many commits shared this synced write (0 for an empty
        # commit in a group that wrote nothing).
        written = sum(1 for intent in group if intent.mutations)
        for intent, commit_ts in zip(group, results, strict=True):
            log.info(
                "txn.commit",
                txn_id=intent.txn_id,
                commit_ts=commit_ts,
                ops=len(intent.mutations),
                duration_ms=round((now - intent.begun_at) * 1000, 3),
                group=written,
            )
        if self._snapshot_every:
            self._since_snapshot += written
            if self._since_snapshot >= self._snapshot_every:
                self._snapshot(SnapshotRequest(None, reason="every_commits"))

    def _write(self, group: list[CommitIntent]) -> list[int]:
        """Assign commit_ts/versions, append durably; return each intent's commit_ts."""
        self._recover()
        commit_ts = self._store.last_commit_ts
        committed_at_ms = time.time_ns() // 1_000_000
        versions: dict[tuple[str, str, str], int] = {}
        events: list[Event] = []
        results: list[int] = []
        for intent in group:
            if not intent.mutations:
                # An empty commit writes nothing and is ordered after what came before.
                results.append(commit_ts)
                continue
            commit_ts += 1
            ops = []
            for mutation in intent.mutations:
                target = mutation.target
                version = versions.get(target)
                if version is None:
                    version = self._store.current_version(*target)
                version += 1
                versions[target] = version
                ops.append(EventOp(*target, version, mutation.value))
            events.append(Event(commit_ts, intent.txn_id, committed_at_ms, tuple(ops)))
            results.append(commit_ts)
        if events:
            started = time.perf_counter()
            self._store.append(events)
            self._recent_sync_ms.append((time.perf_counter() - started) * 1000)
            self._groups += 1
            self._grouped_commits += len(events)
            self._recent_group_sizes.append(len(events))
        return results

    def _status(self) -> dict[str, object]:
        return {
            "last_commit_ts": self._store.last_commit_ts,
            "queue_depth": self.actor_inbox.qsize(),
            "synced_writes": self._groups,
            "commits_written": self._grouped_commits,
            "commits_per_synced_write": (
                round(self._grouped_commits / self._groups, 3) if self._groups else 0.0
            ),
            "recent_group_sizes": list(self._recent_group_sizes),
            "recent_sync_ms": [round(ms, 3) for ms in self._recent_sync_ms],
        }
