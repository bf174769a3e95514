"""The RocksDB store: opening the data directory and the atomic commit write.

`append` writes a whole commit group -- state, version history, the global
event, the per-agent event index and the last commit_ts -- in one
WriteBatch, makes it durable, and only then publishes a new `ReadView`.
It is called by the ledger actor alone.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from rocksdict import BottommostLevelCompaction, Checkpoint, CompactOptions, Rdict, WriteBatch, WriteOptions

from storage import keys, opening, reading, retention, upgrade, wal
from storage.derive import add_event
from storage.durable import DurableMark, read_mark
from storage.errors import DataLossError, StorageError, StoreFailedError, StoreRefusedError
from storage.faults import crash_point
from storage.records import (
    Event,
    EventOp,
    StatePointer,
    decode_event,
    decode_slice,
    decode_state,
    emptied,
    encode_event,
    encode_slice,
    op_count,
    slots,
)
from storage.view import Fence, ReadView

# How a commit group is made durable (see docs/design.md for measurements):
#   "flush_wal":  write the batch unsynced, then fsync the WAL. flush_wal
#                 releases the GIL, so new commits reach the ledger meanwhile.
#   "sync_write": one write with sync=True (holds the GIL throughout).
SYNC_METHODS = ("flush_wal", "sync_write")
# The writer's version cache is emptied when it grows past this many keys.
VERSION_CACHE_KEYS = 100_000


class Store:
    """An open data directory. Create with `Store.open(path)`."""

    def __init__(self, db: Rdict, path: Path, sync_method: str, last_commit_ts: int) -> None:
        if sync_method not in SYNC_METHODS:
            raise ValueError(f"sync_method must be one of {SYNC_METHODS}, got {sync_method!r}")
        self._db = db
        self.path = path
        self._sync_method = sync_method
        self._unsynced = WriteOptions()
        self._synced = WriteOptions()
        self._synced.sync = True
        self.last_commit_ts = last_commit_ts
        schema = reading.get(db, keys.META_SCHEMA)
        if schema is None:
            db.put(keys.META_SCHEMA, keys.u64(keys.SCHEMA_VERSION), self._synced)
        elif keys.read_u64(schema) < keys.SCHEMA_VERSION:
            upgrade.upgrade(db, path, keys.read_u64(schema))
        self._mark = DurableMark(path, self.last_commit_ts)
        self._views: weakref.WeakSet[ReadView] = weakref.WeakSet()
        self._fence = Fence()  # marked before a purge or retention pass (storage/view.py)
        self._view: ReadView | None = None
        self._reopened = threading.Condition()
        self._compacting = threading.Lock()  # held by a compaction, and by close and reopen
        self._retry_after = 0.0
        self._publish()
        self._closed = False
        self._failed: str | None = None
        self._refused: str | None = None  # a reopen found the store damaged
        # Latest version of keys written through this store:
        # (ns, agent, key) -> (version, whether that version is a live value).
        self._versions: dict[tuple[str, str, str], tuple[int, bool]] = {}
        # Events durably written whose bookkeeping (the version cache, the durable mark) waits
        # for `settle`: the ledger acknowledges its commits first (`append(settle=False)`).
        self._unsettled: list[Event] = []

    @classmethod
    def open(cls, path: str | os.PathLike[str], sync_method: str = "flush_wal") -> Store:
        """Open the store at `path`, recovering from its write-ahead log, or create one
        if the directory is new or empty.

        Raises StoreRefusedError (changing nothing) for a directory that holds
        something else than a whole store: missing or damaged files, a damaged
        write-ahead log, or a store that ends before its durable mark.
        """
        path = Path(path)
        db, last_commit_ts = _open_checked(path)
        try:
            return cls(db, path, sync_method, last_commit_ts)
        except BaseException:
            db.close()
            raise

    def view(self, wait: float = 5.0) -> ReadView:
        """The view of the last durable commit group.

        While the store reopens after a failed write (milliseconds), this
        waits for the new view rather than failing the read.
        """
        view = self._view
        if view is not None:
            return view
        if self._refused is not None:  # no reopen is coming soon: do not make readers wait
            raise DataLossError(f"the store is unavailable: {self._refused}")
        with self._reopened:
            self._reopened.wait_for(lambda: self._view is not None, timeout=wait)
            view = self._view
        if view is None:
            if self._refused is not None:
                raise DataLossError(f"the store is unavailable: {self._refused}")
            raise StorageError(f"the store is unavailable: {self._failed}")
        return view

    def _publish(self, view: ReadView | None = None) -> None:
        if view is None:
            view = ReadView(self._db.snapshot(), self.last_commit_ts, self._fence, self.view)
            self._views.add(view)
        with self._reopened:
            self._view = view
            self._reopened.notify_all()

    @property
    def failed(self) -> bool:
        return self._failed is not None

    def reopen(self, drain_seconds: float = 0.5, backoff_seconds: float = 5.0) -> None:
        """After a failed write, reopen RocksDB so that writes work again.

        RocksDB keeps a failed WAL write as a sticky error until the database
        is reopened (rocksdict has no Resume). Reopening needs every reader's
        snapshot released, and room on the disk for RocksDB to flush its WAL,
        so this reopens only when the disk has room, holds new reads back
        (they wait in `view()`) while the open ones finish, for at most
        `drain_seconds`, and raises StorageError while it cannot reopen yet.
        When long-lived readers (replay streams) prevent it, it does not hold
        reads back again for `backoff_seconds`. Called by the writer's thread only.
        """
        if self._failed is None:
            return
        self._versions.clear()  # the failed group may be in it, or half in RocksDB
        self._unsettled = []  # the new mark below starts from last_commit_ts
        if self._refused is not None and time.monotonic() < self._retry_after:
            raise DataLossError(f"nothing was committed: {self._refused}")
        if time.monotonic() < self._retry_after:
            raise StorageError(
                f"the store refuses writes since an earlier failure ({self._failed}); "
                "open readers (replay streams?) keep it from reopening; it will try again"
            )
        wal_bytes = sum(file.size for file in wal.wal_files(self.path, read=False))
        free = shutil.disk_usage(self.path).free
        if free < wal_bytes + _RECOVERY_HEADROOM:
            raise StorageError(
                f"the store refuses writes since an earlier failure ({self._failed}); "
                f"{free} bytes free, need {wal_bytes + _RECOVERY_HEADROOM} to reopen"
            )
        if self._view is not None:
            last = self._view
            self._view = None  # new reads wait in view()
            deadline = time.monotonic() + drain_seconds
            # `last` is referenced here and by the getrefcount argument; more means readers.
            while (len(self._views) > 1 or sys.getrefcount(last) > 2) and time.monotonic() < deadline:
                time.sleep(0.002)
            if len(self._views) > 1 or sys.getrefcount(last) > 2:
                # Put the same view back: a new snapshot of the failed handle
                # could show a batch whose fsync failed.
                self._publish(last)
                self._retry_after = time.monotonic() + backoff_seconds
                raise StorageError(
                    f"the store refuses writes since an earlier failure ({self._failed}); "
                    "open readers (replay streams?) keep it from reopening; it will try again"
                )
            del last
            with self._compacting:  # a compaction must not run on a handle being closed
                try:
                    self._db.close()
                except Exception:
                    pass  # the old handle is in error; what is on disk is what counts
        try:
            self._db, self.last_commit_ts = _open_checked(self.path, create=False)
        except (StoreRefusedError, DataLossError) as exc:
            # Damage found on the way: nothing will be read or written until an operator acts.
            self._refused = self._failed = f"reopening the store was refused: {exc}"
            self._retry_after = time.monotonic() + backoff_seconds
            raise DataLossError(f"nothing was committed: {self._refused}") from exc
        except Exception as exc:
            self._failed = f"reopening the store failed: {exc}"
            raise StorageError(f"{self._failed}; it will try again") from exc
        self._failed = self._refused = None
        self._mark.close()
        self._mark = DurableMark(self.path, self.last_commit_ts)
        self._publish()

    def current(self, namespace: str, agent_id: str, key: str) -> StatePointer | None:
        """The latest STATE record of a key, read directly (the ledger's own writes)."""
        data = reading.get(self._db, keys.state_key(namespace, agent_id, key))
        return None if data is None else decode_state(data)

    def current_version(self, namespace: str, agent_id: str, key: str) -> tuple[int, bool]:
        """(latest version number, whether it is a live value) of a key, for the writer.

        (0, False) if the key was never written. Served from a cache of the
        versions this store wrote itself, so the commit path does not read
        RocksDB for keys it wrote recently.
        """
        if self._unsettled:
            self.settle()  # a cached version the last write replaced must not be read
        target = (namespace, agent_id, key)
        known = self._versions.get(target)
        if known is None:
            record = self.current(namespace, agent_id, key)
            known = (0, False) if record is None else (record.version, not record.deleted)
        return known

    def commit_ts_of(self, txn_id: str) -> int | None:
        """The commit_ts of the transaction `txn_id` if it durably committed (and wrote something).

        Read from the last published view, which holds only commits on disk.
        """
        data = self.view()._get(keys.txn_key(txn_id))
        return None if data is None else keys.read_u64(data)

    def committed_many(self, txn_ids: Sequence[str]) -> list[int | None]:
        """For the writer, between its writes: the commit_ts of each id that committed, else None."""
        if len(txn_ids) == 1:  # a lone commit: a point read costs half a multi-get of one
            data = reading.get(self._db, keys.txn_key(txn_ids[0]), "the transaction-id index")
            return [None if data is None else keys.read_u64(data)]
        wanted = [keys.txn_key(txn_id) for txn_id in txn_ids]
        found = reading.get_many(self._db, wanted, "the transaction-id index")
        return [None if data is None else keys.read_u64(data) for data in found]

    def append(self, events: Sequence[Event], settle: bool = True) -> None:
        """Durably write committed events (ascending commit_ts, versions assigned).

        Nothing becomes visible to readers before the write is on disk. On
        failure nothing from this call is visible, and StorageError is raised.
        With `settle=False` the writer's bookkeeping of the write is left for
        `settle` (the ledger acknowledges the commits first); whatever needs it
        settles it first, so it cannot be forgotten.
        """
        batch = WriteBatch(raw_mode=True)
        for event in events:
            add_event(batch, event)
        self._write(batch, events)
        if settle:
            self.settle()

    def settle(self) -> None:
        """The bookkeeping of the writes made since the last call: the version cache that
        `current_version` reads, and the durable mark (which only ever lags the log)."""
        events, self._unsettled = self._unsettled, []
        if not events:
            return
        versions = self._versions
        if len(versions) > VERSION_CACHE_KEYS:
            versions.clear()
        for event in events:
            for op in event.ops:
                if not op.purge:
                    versions[(op.namespace, op.agent_id, op.key)] = (op.version, op.value is not None)
        self._mark.advance(events[-1].commit_ts)

    def purge(self, event: Event) -> PurgeResult:
        """Durably write a purge event (one op with `purge` set, the next commit_ts) and
        remove, in the same write, the agent's keys under its prefix with their history:
        STATE and VERSIONS records, their ops in earlier events (rewritten, marked scrubbed)
        and in the agent's event index, and the agent from AGENTS if no key is left.

        Atomic like `append`: all of it or nothing. The bytes stay in the table files
        and the write-ahead log until `compact` (or RocksDB's own compactions) rewrites them.
        """
        [op] = event.ops
        batch = WriteBatch(raw_mode=True)
        result = _purge_records(self._db, batch, op.namespace, op.agent_id, op.key)
        add_event(batch, event)
        batch.put(keys.META_COMPACTION_OWED, keys.u64(event.commit_ts))
        self._fence.mark((op.namespace,))  # open views' scans must not take what follows as theirs
        self._write(batch, [event])
        self._versions.clear()  # cheaper than finding the purged keys in it
        return result._replace(commit_ts=event.commit_ts)

    def retain(self, found: retention.Plan) -> retention.Applied:
        """Drop what a retention pass found (storage/retention.py), in one durable write,
        checking each op is still there and still not its key's latest."""
        batch = WriteBatch(raw_mode=True)
        applied = retention.apply(self._db, batch, found)
        if applied.ops:
            self._fence.mark(applied.horizons)  # open views' scans must not take what follows as theirs
        self._write(batch, [])
        return applied

    def compaction_owed(self) -> int:
        """The commit_ts of the last purge whose bytes may still be in the files (0: none)."""
        data = reading.get(self._db, keys.META_COMPACTION_OWED)
        return 0 if data is None else keys.read_u64(data)

    def settle_compaction(self, purge_ts: int) -> None:
        """Record that everything up to the purge at `purge_ts` was compacted (writer's thread)."""
        if self._closed or self._failed is not None:
            return
        if self.compaction_owed() == purge_ts:
            self._db.delete(keys.META_COMPACTION_OWED, self._synced)

    def reading_before(self, commit_ts: int) -> bool:
        """Whether a read view older than `commit_ts` is still open (its snapshot pins what a
        compaction would otherwise drop)."""
        return any(view.last_commit_ts < commit_ts for view in list(self._views))

    @property
    def closed(self) -> bool:
        return self._closed

    def compact(self, ranges: Sequence[tuple[bytes | None, bytes | None]] | None = None) -> None:
        """Flush the memtable and rewrite the table files holding `ranges` (None: all of them),
        so that what was deleted or purged leaves every file: the write-ahead log
        that held it is dropped after the flush, the table files by the compaction.
        Safe beside commits (RocksDB runs it on its own threads)."""
        options = CompactOptions()
        options.set_bottommost_level_compaction(BottommostLevelCompaction.force())
        options.set_exclusive_manual_compaction(False)
        with self._compacting:
            if self._closed:
                raise StorageError("store is closed")
            try:
                self._db.flush(True)
                for begin, end in ranges or [(None, None)]:
                    self._db.compact_range(begin, end, options)
            except Exception as exc:
                raise StorageError(f"compaction failed: {exc}") from exc

    def _write(self, batch: WriteBatch, events: Sequence[Event]) -> None:
        """Write `batch` (whose last event is `events[-1]`; none for retention) durably, then
        publish it."""
        if self._closed:
            raise StorageError("store is closed")
        self.settle()  # the cache and the mark follow the writes in order
        if self._refused is not None:
            raise DataLossError(f"nothing was committed: {self._refused}")
        if self._failed is not None:
            raise StorageError(
                f"nothing was committed: the store refuses writes since an earlier failure "
                f"({self._failed}) until it is reopened"
            )
        if events:
            batch.put(keys.META_LAST_COMMIT_TS, keys.u64(events[-1].commit_ts))
        sync_write = self._sync_method == "sync_write"
        crash_point("ledger.before_write")
        try:
            self._db.write(batch, self._synced if sync_write else self._unsynced)
        except Exception as exc:
            # RocksDB keeps a failed WAL write as a sticky error (rocksdict has
            # no Resume), so later writes would fail too: say so, and how to recover.
            self._failed = f"write failed: {exc}"
            raise StorageError(
                f"nothing was committed: {self._failed}; if the disk is full, free space: "
                "the first commit after that reopens the store"
            ) from exc
        crash_point("ledger.after_write")
        if not sync_write:
            try:
                self._db.flush_wal(True)
            except Exception as exc:
                # The batch is in the memtable but maybe not on disk: refuse all
                # further writes rather than build on a commit we cannot vouch for.
                self._failed = f"WAL fsync failed: {exc}"
                raise StoreFailedError(
                    f"{self._failed}; the store is reopened before the next commit, and a retry of "
                    "this commit is answered with its commit_ts if it survived"
                ) from exc
        crash_point("ledger.after_sync")
        if events:
            self.last_commit_ts = events[-1].commit_ts
            self._unsettled.extend(events)
        self._publish()

    def checkpoint(self, directory: Path) -> Path:
        """Write a consistent copy of the store (a RocksDB checkpoint) into `directory`.

        Call it from the writer's thread between writes, so the copy holds
        whole commit groups that are all durable. The checkpoint is built
        under a ".partial" name and renamed into place, so a crash leaves no
        half-made snapshot under the final name.
        """
        directory.parent.mkdir(parents=True, exist_ok=True)
        partial = directory.with_name(directory.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        try:
            Checkpoint(self._db).create_checkpoint(str(partial))
        except Exception as exc:
            raise StorageError(f"snapshot into {directory} failed: {exc}") from exc
        crash_point("snapshot.mid")
        partial.rename(directory)
        return directory

    def disk_bytes(self) -> int:
        """Bytes of the files in the data directory (tables, WAL, manifest), as on disk now."""
        total = 0
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue  # removed meanwhile (a compaction)
        return total

    def close(self) -> None:
        """Flush and close RocksDB. Safe to call twice."""
        if self._closed:
            return
        self.settle()
        self._closed = True
        self._view = None  # release the snapshot
        self._mark.close()
        with self._compacting:  # waits for a compaction under way to end
            try:
                self._db.close()
            except Exception as exc:
                if "closed" in str(exc):  # a failed reopen left no open handle
                    return
                raise StorageError(f"closing the store failed: {exc}") from exc


# Free space, beyond the WAL's size, that a reopen after a failed write wants.
_RECOVERY_HEADROOM = 4 * 1024 * 1024


def _open_checked(path: Path, create: bool = True) -> tuple[Rdict, int]:
    """Open (or, with `create`, create) the store at `path` read-write, after checking it;
    and its last commit_ts.

    An existing store is checked read-only first, its write-ahead log files
    included: a read-write open replays them into the tables and deletes
    them, so a store refused after that would have lost them.
    """
    if not create and not opening.holds_store(path):
        raise StoreRefusedError(f"data directory {path} no longer holds the store it held")
    if opening.holds_store(path):
        with opening.open_read_only(path) as existing:
            _check_consistent(existing, path, wal_files=True)
    db = opening.open_read_write(path)
    try:
        return db, _check_consistent(db, path)
    except BaseException:
        db.close()
        raise


def _check_consistent(db: Rdict, path: Path, wal_files: bool = False) -> int:
    """The last commit_ts, after checking the store is safe to write to.

    A wrong last_commit_ts would make the next commit overwrite an event of
    the log, the source of truth, so a mismatch refuses to start; so does a
    store that ends before its durable mark (commits made durable are gone).
    Damage met on the way refuses it too (StoreRefusedError).
    """
    try:
        return _check_readable(db, path, wal_files)
    except DataLossError as exc:
        raise StoreRefusedError(f"{exc}. {opening.DAMAGED_ADVICE}") from exc


def _check_readable(db: Rdict, path: Path, wal_files: bool) -> int:
    if reading.get(db, keys.META_REBUILD_IN_PROGRESS) is not None:
        raise StorageError(
            "an interrupted `statehoused rebuild` left this data directory half rebuilt; run it again"
        )
    schema = reading.get(db, keys.META_SCHEMA)
    if schema is not None and keys.read_u64(schema) > keys.SCHEMA_VERSION:
        raise StorageError(
            f"data directory has schema version {keys.read_u64(schema)}, written by a newer statehoused; "
            f"this one knows up to {keys.SCHEMA_VERSION}: run the newer version, or restore a snapshot "
            "taken before the upgrade"
        )
    raw = reading.get(db, keys.META_LAST_COMMIT_TS)
    recorded = 0 if raw is None else keys.read_u64(raw)
    last = reading.last_key(db, keys.EVENTS, "the end of the event log")
    if last is not None and len(last) != 1 + 8:
        raise StoreRefusedError(
            f"data directory {path} holds a key in the event log's table that is not a commit_ts "
            f"({keys.describe_key(last)}): it is damaged, or not a Statehouse store; nothing was changed"
        )
    logged = keys.read_u64(last, 1) if last is not None else 0
    if schema is None and last is None and next(reading.scan(db, b"", "the store"), None) is not None:
        raise StoreRefusedError(
            f"data directory {path} holds a RocksDB database that is not a Statehouse store (no schema "
            "version, no event log); nothing in it was changed: give a new or empty directory"
        )
    if recorded != logged:
        raise StorageError(
            f"data directory is inconsistent: last_commit_ts is {recorded} but the event log ends at "
            f"{logged}; run `statehoused verify`, then `statehoused rebuild`"
        )
    mark = read_mark(path)
    if mark is not None and mark > recorded:
        raise StoreRefusedError(
            f"data directory {path} ends at commit_ts {recorded}, but commits up to {mark} were on disk "
            f"before (its durable mark, {path / 'DURABLE_COMMIT_TS'}): commits {recorded + 1} to {mark} "
            "are gone. A write-ahead log file (*.log) was removed or cut short, or older files were "
            "copied in. Nothing was changed. Put the missing files back, restore a snapshot (into an "
            f"empty directory), or accept the loss: statehoused recover-wal --data-dir {path} --accept-loss"
        )
    if wal_files:
        check_no_gap(db, path, wal.logs_begin_at(path), recorded)
    return recorded


def check_no_gap(db: Rdict, path: Path, begin: int, end: int) -> None:
    """The log holds every commit from just before where the write-ahead log files begin to
    its end. RocksDB replays the log files it finds, dropping a cut-short end of each: a log
    file removed or cut short, other than the last, leaves a gap nothing else notices."""
    if begin <= 0 or begin > end:
        return
    expected = max(begin - 1, 1)
    for raw_key, _data in reading.scan(db, keys.EVENTS, "the event log", keys.event_key(expected)):
        found = keys.read_u64(raw_key, 1) if len(raw_key) == 9 else -1
        if found != expected:
            missing = f"{expected} to {found - 1}" if found - 1 > expected else f"{expected}"
            raise StoreRefusedError(
                f"the event log of data directory {path} has a gap: commit_ts {missing} (at least) missing, "
                f"though its write-ahead log files hold commits from commit_ts {begin} on. A "
                "write-ahead log file (*.log) was removed or cut short. Nothing was changed. Put the "
                "missing file back, or restore a snapshot"
            )
        expected += 1


class PurgeResult(NamedTuple):
    """What a purge removed: `keys` (live or deleted) and the earlier `events` it rewrote,
    the first and last of which have commit_ts `first_ts` and `last_ts` (0 if none)."""

    commit_ts: int
    keys: int
    events: int
    first_ts: int = 0
    last_ts: int = 0


def purged(op: EventOp, namespace: str, agent_id: str, prefix: str) -> bool:
    """Whether a purge of (namespace, agent_id, prefix) removes `op` (never another purge)."""
    return (
        not op.purge and op.namespace == namespace and op.agent_id == agent_id and op.key.startswith(prefix)
    )


def purge_ranges(
    namespace: str, agent_id: str, result: PurgeResult
) -> list[tuple[bytes | None, bytes | None]]:
    """The key ranges a purge of the agent deleted from or rewrote, for `compact`: the agent's
    records, and the stretch of the log it rewrote."""
    ranges: list[tuple[bytes | None, bytes | None]] = []
    for table in (keys.STATE, keys.VERSIONS, keys.AGENT_EVENTS):
        begin = keys.agent_prefix(table, namespace, agent_id)
        ranges.append((begin, keys.prefix_end(begin)))
    if result.events:
        ranges.append((keys.event_key(result.first_ts), keys.event_key(result.last_ts + 1)))
        ranges.append((keys.value_key(result.first_ts, 0), keys.value_key(result.last_ts + 1, 0)))
    return ranges


def _purge_records(db: Rdict, batch: WriteBatch, namespace: str, agent_id: str, prefix: str) -> PurgeResult:
    """Add to `batch` the deletes and rewrites of a purge of the agent's keys under `prefix`."""
    agent = keys.agent_prefix(keys.STATE, namespace, agent_id)
    lower = agent + prefix.encode("utf-8")
    upper = keys.prefix_end(lower)
    what = f"the keys of agent {agent_id!r} in namespace {namespace!r}"
    found = reading.scan(db, lower, what)
    # The names are needed for a prefix (each key's versions are a range of their own).
    names = [raw[len(agent) :].decode("utf-8") for raw, _ in found] if prefix else []
    count = len(names) if prefix else sum(1 for _ in found)
    # Earlier events that hold an op of those keys: rewritten without it.
    slices = keys.agent_prefix(keys.AGENT_EVENTS, namespace, agent_id)
    rewritten = first = last = 0
    for raw_key, data in reading.scan(db, slices, f"the event index of agent {agent_id!r}"):
        commit_ts = keys.read_u64(raw_key, len(slices))
        logged = reading.get(db, keys.event_key(commit_ts))
        if logged is None:
            raise DataLossError(
                f"commit_ts {commit_ts} is in the event index of agent {agent_id!r} but not in the log"
            )
        mine = op_count(data)
        if not prefix and mine > 1 and op_count(logged) == mine:
            # The agent's own event, of writes (a purge's event has one op): all of it goes, and
            # its values with one range delete, read from the heads' counts alone.
            batch.put(keys.event_key(commit_ts), encode_event(emptied(commit_ts, logged)))
            batch.delete_range(keys.value_key(commit_ts, 0), keys.value_key(commit_ts + 1, 0))
            batch.delete(raw_key)
            rewritten += 1
            first, last = first or commit_ts, commit_ts
            continue
        part = decode_slice(namespace, agent_id, commit_ts, data, None)  # heads: slots and keys
        gone = [purged(op, namespace, agent_id, prefix) for op in part.ops]
        if not any(gone):
            continue
        event = decode_event(commit_ts, logged, None)
        kept = tuple(  # with their slots: their positions change, their values' places do not
            op._replace(slot=slot)
            for slot, op in zip(slots(event), event.ops, strict=True)
            if not purged(op, namespace, agent_id, prefix)
        )
        scrubbed = event._replace(ops=kept, scrubbed=True)
        batch.put(keys.event_key(commit_ts), encode_event(scrubbed))
        for op, dropped in zip(part.ops, gone, strict=True):
            if dropped:
                batch.delete(keys.value_key(commit_ts, op.slot))
        left = [(op.slot, op) for op, dropped in zip(part.ops, gone, strict=True) if not dropped]
        if left:
            batch.put(raw_key, encode_slice(scrubbed, left))
        else:
            batch.delete(raw_key)
        rewritten += 1
        first, last = first or commit_ts, commit_ts
    batch.delete_range(lower, upper if upper is not None else keys.prefix_end(keys.STATE))
    versions = keys.agent_prefix(keys.VERSIONS, namespace, agent_id)
    if not prefix:
        batch.delete_range(versions, keys.prefix_end(versions))
    else:
        for name in names:
            history = keys.version_key(namespace, agent_id, name, 0)[: -len(keys.u64(0))]
            batch.delete_range(history, keys.prefix_end(history))
    if not _keeps_keys(db, agent, lower, upper):
        batch.delete(keys.agent_key(namespace, agent_id))
    return PurgeResult(0, count, rewritten, first, last)


def _keeps_keys(db: Rdict, agent: bytes, lower: bytes, upper: bytes | None) -> bool:
    """Whether the agent has a STATE record outside [lower, upper)."""
    what = "the keys of an agent"
    for raw, _ in reading.scan(db, agent, what):
        if raw < lower or (upper is not None and raw >= upper):
            return True
        break
    if upper is None:
        return False
    return any(True for _ in reading.scan(db, agent, what, upper))
