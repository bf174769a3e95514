"""`statehoused rebuild`: write the derived tables again from the event log alone.

In place (`rebuild`): delete STATE, VERSIONS, AGENT_EVENTS, TXNS and
last_commit_ts and write them again from EVENTS, in bounded batches,
synced at the end. A marker in META is set before anything is deleted and
removed by the last, synced write, so an interrupted rebuild is visible to
`verify` and refused by the daemon; running `rebuild` again finishes it.

Into a new directory (`rebuild_into`): the source is opened read-only and
never changed; the log is copied and the derived tables written beside it
in `<into>.partial`, renamed to `<into>` once whole and synced. This is the
way out when the derived tables themselves hold damaged blocks: a rebuild
in place would leave those blocks in the table files, where RocksDB's next
compaction of them would fail, so the in-place rebuild refuses then.

Both refuse, changing nothing, if the log itself is damaged or
inconsistent: a rebuild can only reproduce what the log says.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rocksdict import Rdict, WriteBatch, WriteOptions

from storage import durable, keys, opening, reading
from storage.derive import agent_ops, derived_records
from storage.errors import DataLossError, StorageError
from storage.logwalk import (
    Damage,
    Fold,
    LogDamagedError,
    ProgressCallback,
    Report,
    Ticker,
    log_end,
    walk_log,
)
from storage.records import Event, decode_event
from storage.upgrade import require_current

DERIVED_TABLES = (keys.STATE, keys.VERSIONS, keys.AGENT_EVENTS, keys.TXNS, keys.AGENTS)


class TablesDamagedError(StorageError):
    """The derived tables hold damaged blocks: rebuild into a new directory instead."""


@dataclass(frozen=True, slots=True)
class RebuildResult:
    events: int
    state_records: int
    versions: int
    agent_events: int
    last_commit_ts: int
    previous_last_commit_ts: int | None  # what META said before the rebuild
    seconds: float
    into: Path | None = None  # the new directory, for rebuild_into

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        was = "missing" if self.previous_last_commit_ts is None else self.previous_last_commit_ts
        where = "" if self.into is None else f" into {self.into}"
        return (
            f"rebuilt{where} from {self.events} events: {self.state_records} keys, {self.versions} versions, "
            f"{self.agent_events} agent events, last commit_ts {self.last_commit_ts} (was {was}) "
            f"in {self.seconds:.2f} s ({self.events_per_second:,.0f} events/s)"
        )


def _check_log(
    db: Any, path: Path, progress: ProgressCallback | None, progress_every: int
) -> tuple[Report, Fold]:
    """Walk the whole log; LogDamagedError if it is damaged or inconsistent, or ends before
    the store's durable mark (a rebuild would accept that loss without saying so)."""
    report = Report()
    latest: Fold = {}  # to write each STATE record once, from the op of its latest version
    ticker = Ticker(progress, "checking log", log_end(db), progress_every)
    for _ in walk_log(db, report, ticker, latest):
        pass
    try:  # the values are the other half of the log
        for _ in reading.scan(db, keys.VALUES, "the VALUES table"):
            pass
    except DataLossError as exc:
        report.table_damaged("VALUES", exc, "the values of the log")
    mark = durable.read_mark(path)
    if mark is not None and mark > report.last_commit_ts:
        report._damaged(
            Damage(
                "STORE",
                f"the log ends at commit_ts {report.last_commit_ts}, but commits up to {mark} were on "
                f"disk before (its durable mark): to accept losing them, run statehoused recover-wal "
                f"--data-dir {path} --accept-loss first",
                "a write-ahead log file was removed or cut short",
            )
        )
    if report.divergence is not None or report.damage:
        raise LogDamagedError(report)
    return report, latest


def _previous(db: Any) -> int | None:
    try:
        raw = reading.get(db, keys.META_LAST_COMMIT_TS)
    except DataLossError:
        return None
    return None if raw is None or len(raw) != 8 else keys.read_u64(raw)


def _events(db: Any) -> Iterator[tuple[bytes, Event]]:
    for raw_key, data in reading.scan(db, keys.EVENTS, "the event log"):
        yield data, decode_event(keys.read_u64(raw_key, 1), data, None)  # heads: pointers need no value


class _Writer:
    """Writes the records a rebuild derives into `db`, in bounded unsynced batches."""

    def __init__(self, db: Rdict, latest: Fold, batch_bytes: int, batch_ops: int) -> None:
        self._db = db
        self._latest = latest
        self._batch_bytes = batch_bytes
        self._batch_ops = batch_ops
        self._unsynced = WriteOptions()
        self._batch = WriteBatch(raw_mode=True)
        self.events = self.versions = self.agent_events = 0

    def add(self, event: Event, raw_event: bytes | None = None) -> None:
        if raw_event is not None:
            self._batch.put(keys.event_key(event.commit_ts), raw_event)
        latest = self._latest
        # Each key's STATE record is written once, from its latest version.
        is_latest = lambda op: latest[(op.namespace, op.agent_id, op.key)][0] == op.version  # noqa: E731
        for key, value in derived_records(event, state_for=is_latest):
            self._batch.put(key, value)
        self.versions += sum(1 for op in event.ops if not op.purge)
        self.agent_events += len(agent_ops(event))
        self.events += 1
        if len(self._batch) >= self._batch_ops or self._batch.size_in_bytes() >= self._batch_bytes:
            self._db.write(self._batch, self._unsynced)
            self._batch = WriteBatch(raw_mode=True)

    def result(
        self,
        keys_written: int,
        last_commit_ts: int,
        previous: int | None,
        started: float,
        into: Path | None = None,
    ) -> RebuildResult:
        return RebuildResult(
            events=self.events,
            state_records=keys_written,
            versions=self.versions,
            agent_events=self.agent_events,
            last_commit_ts=last_commit_ts,
            previous_last_commit_ts=previous,
            seconds=time.monotonic() - started,
            into=into,
        )

    def finish(self, last_commit_ts: int) -> None:
        """Write the rest, make it durable, then (synced, after it in the WAL) the last
        write, which declares the rebuild complete."""
        if len(self._batch):
            self._db.write(self._batch, self._unsynced)
        self._db.flush_wal(True)
        batch = WriteBatch(raw_mode=True)
        batch.put(keys.META_SCHEMA, keys.u64(keys.SCHEMA_VERSION))
        batch.put(keys.META_LAST_COMMIT_TS, keys.u64(last_commit_ts))
        batch.delete(keys.META_REBUILD_IN_PROGRESS)
        synced = WriteOptions()
        synced.sync = True
        self._db.write(batch, synced)


def _copy_retention(source: Any, target: Rdict) -> None:
    """What retention recorded beside the log (horizons and cursors): the log alone does not
    say what was let go."""
    data = reading.get(source, keys.META_RETAINED_THROUGH)
    if data is not None:
        target.put(keys.META_RETAINED_THROUGH, data)
    for raw_key, data in reading.scan(source, keys.HORIZONS, "the HORIZONS table"):
        target.put(raw_key, data)


def _copy_values(source: Any, target: Rdict, batch_bytes: int) -> None:
    """The log's values (VALUES), copied as they are, in bounded batches."""
    batch = WriteBatch(raw_mode=True)
    for raw_key, data in reading.scan(source, keys.VALUES, "the VALUES table"):
        batch.put(raw_key, data)
        if batch.size_in_bytes() >= batch_bytes:
            target.write(batch, WriteOptions())
            batch = WriteBatch(raw_mode=True)
    target.write(batch, WriteOptions())


def _open_existing(path: Path) -> Rdict:
    if not opening.holds_store(path):
        raise StorageError(f"{path} is not a Statehouse data directory (no store there)")
    return opening.open_read_write(path)


def rebuild(
    path: str | os.PathLike[str],
    progress: ProgressCallback | None = None,
    progress_every: int = 10_000,
    batch_bytes: int = 4 * 1024 * 1024,
    batch_ops: int = 20_000,
) -> RebuildResult:
    """Rewrite STATE, VERSIONS, AGENT_EVENTS, TXNS, AGENTS and META last_commit_ts from EVENTS alone.

    Refuses, changing nothing: LogDamagedError if the log itself is damaged,
    TablesDamagedError if the derived tables hold damaged blocks (use
    `rebuild_into`). Safe to run again after an interruption.
    """
    path = Path(path)
    started = time.monotonic()
    # Everything that can refuse reads only: a refused rebuild changes no file.
    with opening.open_read_only(path) as db:
        require_current(db, path)
        log_report, latest = _check_log(db, path, progress, progress_every)
        for table in DERIVED_TABLES:
            name = keys.TABLE_NAMES[table]
            try:
                for _ in reading.scan(db, table, f"the {name} table"):
                    pass
            except DataLossError as exc:
                raise TablesDamagedError(
                    f"the {name} table holds damaged blocks ({exc.detail}); the event log is whole, but a "
                    "rebuild in place would leave the damaged blocks in the table files. Nothing was "
                    f"changed: rebuild into a new directory instead (statehoused rebuild --data-dir {path} "
                    "--into NEW_DIR) and start the daemon on that"
                ) from exc
        previous = _previous(db)
    last_commit_ts = log_report.last_commit_ts
    db = _open_existing(path)
    try:
        # First write: mark the rebuild, drop the derived tables, and set
        # last_commit_ts to the log's end at once, so that even a daemon
        # started on an interrupted rebuild could never overwrite an event.
        batch = WriteBatch(raw_mode=True)
        batch.put(keys.META_REBUILD_IN_PROGRESS, keys.u64(time.time_ns() // 1_000_000))
        for table in DERIVED_TABLES:
            end = keys.prefix_end(table)
            assert end is not None
            batch.delete_range(table, end)
        batch.put(keys.META_LAST_COMMIT_TS, keys.u64(last_commit_ts))
        synced = WriteOptions()
        synced.sync = True
        db.write(batch, synced)

        writer = _Writer(db, latest, batch_bytes, batch_ops)
        ticker = Ticker(progress, "rebuilding", last_commit_ts, progress_every)
        for _raw, event in _events(db):
            writer.add(event)
            ticker.tick(writer.events)
        writer.finish(last_commit_ts)
        ticker.finish(writer.events)
    finally:
        db.close()
    return writer.result(len(latest), last_commit_ts, previous, started)


def rebuild_into(
    path: str | os.PathLike[str],
    into: str | os.PathLike[str],
    progress: ProgressCallback | None = None,
    progress_every: int = 10_000,
    batch_bytes: int = 4 * 1024 * 1024,
    batch_ops: int = 20_000,
) -> RebuildResult:
    """Write a new store at `into` from the event log of the store at `path` (left unchanged).

    `into` must not exist. Refuses with LogDamagedError if the log is damaged.
    """
    path, into = Path(path), Path(into)
    started = time.monotonic()
    if into.exists():
        raise StorageError(f"{into} exists already; name a directory that does not exist yet")
    partial = into.with_name(into.name + ".partial")
    if partial.exists():
        raise StorageError(
            f"{partial} exists: an earlier rebuild into {into} was interrupted; remove it and run again"
        )
    with opening.open_read_only(path) as source:
        require_current(source, path)
        log_report, latest = _check_log(source, path, progress, progress_every)
        last_commit_ts = log_report.last_commit_ts
        previous = _previous(source)
        partial.parent.mkdir(parents=True, exist_ok=True)
        target = opening.open_read_write(partial)
        try:
            target.put(keys.META_REBUILD_IN_PROGRESS, keys.u64(time.time_ns() // 1_000_000))
            _copy_retention(source, target)
            _copy_values(source, target, batch_bytes)
            writer = _Writer(target, latest, batch_bytes, batch_ops)
            ticker = Ticker(progress, "rebuilding", last_commit_ts, progress_every)
            for raw, event in _events(source):
                writer.add(event, raw)
                ticker.tick(writer.events)
            writer.finish(last_commit_ts)
            ticker.finish(writer.events)
        except BaseException:
            target.close()
            shutil.rmtree(partial, ignore_errors=True)  # ours, half made
            raise
        target.close()
    durable.write_mark(partial, last_commit_ts)
    partial.rename(into)
    durable.fsync_directory(into.parent)
    return writer.result(len(latest), last_commit_ts, previous, started, into)
