"""Recovery: the global event log is the source of truth.

Every other table is derived from EVENTS: folding the log from empty in
commit_ts order gives STATE (the latest version of each key, tombstones
included), VERSIONS (one record per op), AGENT_EVENTS (each event's slice
per agent), TXNS (each event's transaction id) and META last_commit_ts (the last event's commit_ts; empty
commits write no event, so the log has no gaps).

`verify(path)` folds the log and compares the result with what is stored;
it reports the first divergence, in this order of precedence: the log
itself (EVENTS: decodable, commit_ts 1, 2, 3, ... without gaps, every
key's versions 1, 2, 3, ...), then META, STATE (in key order), VERSIONS,
AGENT_EVENTS and TXNS (records the log implies, in commit_ts order, then
records it does not imply, in key order). It opens RocksDB read-only,
holding a shared lock on the data directory's LOCK file so that no daemon
(or rebuild) can start meanwhile, and refuses with StoreLockedError if one
holds the directory.

`rebuild(path)` deletes STATE, VERSIONS, AGENT_EVENTS, TXNS and last_commit_ts
and writes them again from EVENTS alone, in bounded batches, synced at the
end. It first checks the log and refuses (changing nothing) if the log
itself is damaged, since a rebuild can only reproduce what the log says.
A marker in META is set before anything is deleted and removed by the last,
synced write, so an interrupted rebuild is visible to `verify`; running
`rebuild` again finishes the job.

Memory: one small entry per key (latest version, commit_ts and, for
verify, a digest of the value); tables are streamed, never loaded whole.
Rebuild writes each STATE record once, from the op of the key's latest
version (the log check before it has found which that is).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rocksdict import AccessType, Options, Rdict, ReadOptions, WriteBatch, WriteOptions

from storage import keys
from storage.errors import StorageError, StoreLockedError
from storage.records import (
    Event,
    StateRecord,
    VersionRecord,
    decode_agent_event,
    decode_event,
    decode_state,
    decode_version,
    encode_agent_event,
    encode_event,
    encode_state,
    encode_version,
)
from storage.store import agent_slices, derived_records

# Set (to the rebuild's start time in ms) before a rebuild deletes anything,
# removed by its last write. `verify` reports it. The daemon does not read it
# (yet): do not start the daemon on an interrupted rebuild, run it again.
META_REBUILD_IN_PROGRESS = keys.META_REBUILD_IN_PROGRESS

# The order in which divergences take precedence (see the module docstring).
PRECEDENCE = ("EVENTS", "META", "STATE", "VERSIONS", "AGENT_EVENTS", "TXNS")

_U16 = struct.Struct(">H")
_U64_SIZE = 8
_DECODE_ERRORS = (struct.error, UnicodeDecodeError, ValueError, IndexError)
_SHOW_VALUE = 60  # characters of a value shown in a message


class LogDamagedError(StorageError):
    """The event log itself is inconsistent; a rebuild from it would not repair anything."""

    def __init__(self, divergence: Divergence) -> None:
        super().__init__(f"the event log itself is damaged: {divergence}")
        self.divergence = divergence


@dataclass(frozen=True, slots=True)
class Divergence:
    """One place where the store differs from what the log implies."""

    table: str  # "EVENTS", "META", "STATE", "VERSIONS", "AGENT_EVENTS" or "TXNS"
    where: str  # the key in human terms, e.g. "namespace='ns' agent='a' key='k' version=3"
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.table} {self.where}: expected {self.expected}, found {self.found}"


@dataclass
class Report:
    """What `verify` checked and the first divergence it found (None if the store is consistent)."""

    events: int = 0
    keys: int = 0  # STATE records the log implies, tombstones included
    deleted: int = 0  # of which tombstones
    versions: int = 0
    agent_events: int = 0
    last_commit_ts: int = 0  # of the log
    other_keys: int = 0  # keys outside the six tables (not checked)
    divergences: int = 0
    by_table: dict[str, int] = field(default_factory=dict)
    divergence: Divergence | None = None
    seconds: float = 0.0
    _missing_agent_events: int = field(default=0, repr=False)
    _first: dict[str, Divergence] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.divergences == 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def counts(self) -> str:
        text = (
            f"{self.events} events, {self.keys} keys ({self.deleted} deleted), {self.versions} versions, "
            f"{self.agent_events} agent events, last commit_ts {self.last_commit_ts}"
        )
        if self.other_keys:
            text += f", {self.other_keys} keys outside the known tables (not checked)"
        return text

    def firsts(self) -> list[Divergence]:
        """The first divergence of each table, in order of precedence."""
        return [self._first[table] for table in PRECEDENCE if table in self._first]

    def summary(self) -> str:
        if self.ok:
            return f"ok: {self.counts()}"
        lines = [f"DIVERGENCE: {self.divergence}"]
        lines += [f"  first in {d.table}: {d}" for d in self.firsts()[1:]]
        tables = ", ".join(
            f"{table} {self.by_table[table]}" for table in PRECEDENCE if table in self.by_table
        )
        lines.append(f"{self.divergences} divergences ({tables}); the log has {self.counts()}")
        return "\n".join(lines)

    def _add(self, divergence: Divergence) -> None:
        self.divergences += 1
        self.by_table[divergence.table] = self.by_table.get(divergence.table, 0) + 1
        self._first.setdefault(divergence.table, divergence)
        for table in PRECEDENCE:
            if table in self._first:
                self.divergence = self._first[table]
                break


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a long pass over the log has got."""

    phase: str
    done: int
    total: int
    elapsed: float

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def __str__(self) -> str:
        percent = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"{self.phase}: {self.done}/{self.total} events ({percent:.0f}%), "
            f"{self.rate:,.0f} events/s, {self.elapsed:.1f} s"
        )


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True, slots=True)
class RebuildResult:
    events: int
    state_records: int
    versions: int
    agent_events: int
    last_commit_ts: int
    previous_last_commit_ts: int | None  # what META said before the rebuild
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        was = "missing" if self.previous_last_commit_ts is None else self.previous_last_commit_ts
        return (
            f"rebuilt from {self.events} events: {self.state_records} keys, {self.versions} versions, "
            f"{self.agent_events} agent events, last commit_ts {self.last_commit_ts} (was {was}) "
            f"in {self.seconds:.2f} s ({self.events_per_second:,.0f} events/s)"
        )


class _Ticker:
    """Calls `progress` every `every` events and at least once a second, and at the end."""

    def __init__(self, progress: ProgressCallback | None, phase: str, total: int, every: int) -> None:
        self._progress = progress
        self._phase = phase
        self._total = total
        self._every = max(1, every)
        self._started = self._last = time.monotonic()
        self._next = self._every
        self._reported = -1

    def tick(self, done: int) -> None:
        if self._progress is None:
            return
        if done >= self._next or time.monotonic() - self._last >= 1.0:
            self._report(done)

    def finish(self, done: int) -> None:
        """A last line with the final rate, if this pass was long enough to report before."""
        if self._progress is not None and self._reported not in (-1, done):
            self._report(done)

    def _report(self, done: int) -> None:
        assert self._progress is not None
        self._next = done + self._every
        self._last = time.monotonic()
        self._reported = done
        self._progress(Progress(self._phase, done, self._total, self._last - self._started))


# --- describing keys and records to a person -------------------------------------------------


def _read_name(raw: bytes, pos: int) -> tuple[str, int]:
    (size,) = _U16.unpack_from(raw, pos)
    end = pos + 2 + size
    if end > len(raw):
        raise ValueError("name runs past the end of the key")
    return raw[pos + 2 : end].decode("utf-8"), end


def _read_ts(raw: bytes, pos: int) -> int:
    if len(raw) != pos + _U64_SIZE:
        raise ValueError("bad counter length")
    return keys.read_u64(raw, pos)


def split_state_key(raw: bytes) -> tuple[str, str, str]:
    namespace, pos = _read_name(raw, 1)
    agent_id, pos = _read_name(raw, pos)
    return namespace, agent_id, raw[pos:].decode("utf-8")


def split_version_key(raw: bytes) -> tuple[str, str, str, int]:
    namespace, pos = _read_name(raw, 1)
    agent_id, pos = _read_name(raw, pos)
    key, pos = _read_name(raw, pos)
    return namespace, agent_id, key, _read_ts(raw, pos)


def split_agent_event_key(raw: bytes) -> tuple[str, str, int]:
    namespace, pos = _read_name(raw, 1)
    agent_id, pos = _read_name(raw, pos)
    return namespace, agent_id, _read_ts(raw, pos)


def describe_key(raw: bytes) -> str:
    """A storage key in human terms: namespace/agent/key/version, or commit_ts."""
    table = raw[:1]
    try:
        if table == keys.META:
            return f"name={raw[1:].decode('utf-8')!r}"
        if table == keys.STATE:
            ns, agent, key = split_state_key(raw)
            return f"namespace={ns!r} agent={agent!r} key={key!r}"
        if table == keys.VERSIONS:
            ns, agent, key, version = split_version_key(raw)
            return f"namespace={ns!r} agent={agent!r} key={key!r} version={version}"
        if table == keys.EVENTS:
            return f"commit_ts={_read_ts(raw, 1)}"
        if table == keys.AGENT_EVENTS:
            ns, agent, ts = split_agent_event_key(raw)
            return f"namespace={ns!r} agent={agent!r} commit_ts={ts}"
    except _DECODE_ERRORS:
        pass
    return f"undecodable key 0x{raw.hex()}"


def _show_value(value: bytes | None) -> str:
    if value is None:
        return "deleted"
    text = value.decode("utf-8", errors="replace")
    if len(text) > _SHOW_VALUE:
        text = text[:_SHOW_VALUE] + f"... ({len(value)} bytes)"
    return f"value {text}"


def _show_state(record: StateRecord) -> str:
    return f"version {record.version}, commit_ts {record.commit_ts}, {_show_value(record.value)}"


def _show_version(record: VersionRecord) -> str:
    return f"commit_ts {record.commit_ts}, {_show_value(record.value)}"


def _show_slice(event: Event) -> str:
    ops = ", ".join(f"{op.key!r} v{op.version} {_show_value(op.value)}" for op in event.ops)
    return f"txn {event.txn_id!r} at {event.committed_at_ms} ms with {len(event.ops)} ops [{ops}]"


def _show_raw(data: bytes | None, decode: Callable[[bytes], Any], show: Callable[[Any], str]) -> str:
    """A stored record for a message: decoded if it decodes canonically, else its bytes."""
    if data is None:
        return "nothing"
    try:
        return show(decode(data))
    except _DECODE_ERRORS:
        return f"an undecodable record 0x{data[:32].hex()}{'...' if len(data) > 32 else ''}"


# --- opening the data directory ---------------------------------------------------------------


def _require_store(path: Path) -> None:
    if not (path / "CURRENT").is_file():
        raise StorageError(f"{path} is not a Statehouse data directory (no RocksDB store there)")


def _locked_message(path: Path, detail: str) -> str:
    return f"data directory {path} is in use by another statehoused process ({detail})"


@contextlib.contextmanager
def _shared_lock(path: Path) -> Iterator[None]:
    """Hold a shared lock on RocksDB's LOCK file, so no writer can open the store meanwhile.

    RocksDB locks LOCK with a POSIX (fcntl) write lock. We take an
    open-file-description read lock, which conflicts with it even within one
    process. POSIX locks have a trap: closing *any* descriptor of a file
    drops every POSIX lock the process holds on it, so if the lock turns out
    to be held by this very process (a Store open here), the descriptor is
    deliberately never closed.
    """
    import fcntl

    # A snapshot (checkpoint) has no LOCK file yet; RocksDB would create the same empty one.
    fd = os.open(path / "LOCK", os.O_RDONLY | os.O_CREAT, 0o644)
    ofd = getattr(fcntl, "F_OFD_SETLK", None)
    try:
        if ofd is not None:
            fcntl.fcntl(fd, ofd, struct.pack("hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0))
        else:  # no OFD locks (not Linux): a plain POSIX lock, blind to this process's own lock
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise StorageError(f"cannot lock data directory {path}: {exc}") from exc
        holder = _lock_holder(fd)
        if holder == os.getpid():
            _NEVER_CLOSED.append(fd)
            raise StoreLockedError(_locked_message(path, "it is open in this process")) from exc
        os.close(fd)
        detail = f"pid {holder}" if holder and holder > 0 else str(exc)
        raise StoreLockedError(_locked_message(path, detail)) from exc
    try:
        yield
    finally:
        os.close(fd)  # releases our lock


_NEVER_CLOSED: list[int] = []


def _lock_holder(fd: int) -> int | None:
    import fcntl

    getlk = getattr(fcntl, "F_OFD_GETLK", None)
    if getlk is None:
        return None
    try:
        result = fcntl.fcntl(fd, getlk, struct.pack("hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0))
    except OSError:
        return None
    _type, _whence, _start, _len, pid = struct.unpack("hhqqi4x", result)
    return int(pid)


@contextlib.contextmanager
def open_read_only(path: str | os.PathLike[str]) -> Iterator[Any]:
    """The store at `path` opened read-only, with writers locked out meanwhile."""
    path = Path(path)
    _require_store(path)
    with _shared_lock(path):
        try:
            db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only(False))
        except Exception as exc:
            raise StorageError(f"cannot open data directory {path} read-only: {exc}") from exc
        try:
            yield db
        finally:
            db.close()


@contextlib.contextmanager
def _open_read_write(path: Path) -> Iterator[Any]:
    _require_store(path)
    options = Options(raw_mode=True)
    options.create_if_missing(False)
    try:
        db = Rdict(str(path), options)
    except Exception as exc:
        text = str(exc)
        if "lock" in text.lower():
            raise StoreLockedError(_locked_message(path, text)) from exc
        raise StorageError(f"cannot open data directory {path}: {text}") from exc
    try:
        yield db
    finally:
        db.close()


# --- reading ----------------------------------------------------------------------------------


def _range(db: Any, table: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of one table, in key order."""
    options = ReadOptions()
    end = keys.prefix_end(table)
    assert end is not None
    options.set_iterate_upper_bound(end)
    it = db.iter(options)
    it.seek(table)
    while it.valid():
        yield it.key(), it.value()
        it.next()


def _last_event_ts(db: Any) -> int:
    """The commit_ts of the last EVENTS record (0 if none), without reading the log."""
    it = db.iter(ReadOptions())
    it.seek_for_prev(keys.prefix_end(keys.EVENTS))
    while it.valid():
        raw = it.key()
        if raw[:1] != keys.EVENTS:
            return 0
        if len(raw) == 1 + _U64_SIZE:
            return keys.read_u64(raw, 1)
        it.prev()
    return 0


def _count_outside(db: Any) -> int:
    """Keys whose first byte names no table (not checked, only counted)."""
    it = db.iter(ReadOptions())
    it.seek(keys.prefix_end(keys.TXNS))
    count = 0
    while it.valid():
        count += 1
        it.next()
    return count


@dataclass(slots=True)
class _LogEvent:
    commit_ts: int
    event: Event | None  # None: the record is undecodable


# (namespace, agent_id, key) -> [latest version, its commit_ts, digest of its value or None]
Fold = dict[tuple[str, str, str], list[Any]]


def _walk_log(
    db: Any, report: Report, ticker: _Ticker, latest: Fold, digests: bool = True
) -> Iterator[_LogEvent]:
    """Yield the log in commit_ts order, checking the log's own invariants into `report`.

    `latest` is updated with every op (with value digests if `digests`); the
    fold is also what checks each key's versions.
    """
    versions = latest
    previous = 0
    count = 0
    for raw_key, data in _range(db, keys.EVENTS):
        count += 1
        ticker.tick(count)
        if len(raw_key) != 1 + _U64_SIZE:
            report._add(Divergence("EVENTS", describe_key(raw_key), "an 8-byte commit_ts key", "another key"))
            continue
        commit_ts = keys.read_u64(raw_key, 1)
        where = f"commit_ts={commit_ts}"
        if commit_ts != previous + 1:
            expected = f"commit_ts {previous + 1} after {previous}" if previous else "the log to start at 1"
            report._add(Divergence("EVENTS", where, expected, f"commit_ts {commit_ts}"))
        previous = commit_ts
        report.events += 1
        report.last_commit_ts = commit_ts
        try:
            event = decode_event(commit_ts, data)
            canonical = encode_event(event) == data
        except _DECODE_ERRORS as exc:
            report._add(Divergence("EVENTS", where, "a decodable event", f"an undecodable record ({exc})"))
            yield _LogEvent(commit_ts, None)
            continue
        if not canonical:
            report._add(
                Divergence("EVENTS", where, "a well-formed event", "a record with trailing or missing bytes")
            )
        if not event.ops:
            report._add(Divergence("EVENTS", where, "at least one op (empty commits write no event)", "none"))
        seen: set[tuple[str, str, str]] = set()
        for op in event.ops:
            state_key = (op.namespace, op.agent_id, op.key)
            entry = versions.get(state_key)
            expected_version = 1 if entry is None else entry[0] + 1
            if op.version != expected_version or state_key in seen:
                report._add(
                    Divergence(
                        "EVENTS",
                        f"{where} namespace={op.namespace!r} agent={op.agent_id!r} key={op.key!r}",
                        f"version {expected_version}"
                        + (" (the key appears twice in this event)" if state_key in seen else ""),
                        f"version {op.version}",
                    )
                )
            seen.add(state_key)
            digest = _digest(op.value) if digests else None
            if entry is None:
                versions[state_key] = [op.version, commit_ts, digest]
            else:
                entry[0], entry[1], entry[2] = op.version, commit_ts, digest
        yield _LogEvent(commit_ts, event)
    ticker.finish(count)


def _digest(value: bytes | None) -> bytes | None:
    return None if value is None else hashlib.blake2b(value, digest_size=16).digest()


# --- verify -----------------------------------------------------------------------------------


def verify(
    path: str | os.PathLike[str], progress: ProgressCallback | None = None, progress_every: int = 10_000
) -> Report:
    """Fold the log from empty and compare every derived table with it (read-only)."""
    started = time.monotonic()
    report = Report()
    with open_read_only(path) as db:
        ticker = _Ticker(progress, "verifying", _last_event_ts(db), progress_every)
        latest: Fold = {}
        for item in _walk_log(db, report, ticker, latest):
            if item.event is not None:
                _check_event_records(db, item.event, report)
        _check_meta(db, report)
        _check_state(db, latest, report)
        _check_extra_versions(db, latest, report)
        _check_extra_agent_events(db, report)
        _check_extra_txns(db, report)
        report.keys = len(latest)
        report.deleted = sum(1 for entry in latest.values() if entry[2] is None)
        report.other_keys = _count_outside(db)
    report.seconds = time.monotonic() - started
    return report


def _check_event_records(db: Any, event: Event, report: Report) -> None:
    """The VERSIONS records and AGENT_EVENTS slices this event implies exist, exactly."""
    version_keys = [keys.version_key(op.namespace, op.agent_id, op.key, op.version) for op in event.ops]
    slices = agent_slices(event)
    slice_keys = [keys.agent_event_key(ns, agent, event.commit_ts) for ns, agent in slices]
    txn_key = keys.txn_key(event.txn_id)
    found = db.get([*version_keys, *slice_keys, txn_key])
    report.versions += len(version_keys)
    report.agent_events += len(slice_keys)
    for op, raw_key, data in zip(event.ops, version_keys, found, strict=False):
        expected = VersionRecord(event.commit_ts, op.value)
        if data != encode_version(expected):
            report._add(
                Divergence(
                    "VERSIONS",
                    describe_key(raw_key),
                    _show_version(expected),
                    _show_raw(data, decode_version, _show_version),
                )
            )
    if found[-1] != keys.u64(event.commit_ts):
        shown = "nothing" if found[-1] is None else _show_raw(found[-1], keys.read_u64, str)
        report._add(
            Divergence(
                "TXNS", f"txn_id={event.txn_id!r}", f"commit_ts {event.commit_ts}", f"commit_ts {shown}"
            )
        )
    for (ns, agent), raw_key, data in zip(slices, slice_keys, found[len(version_keys) : -1], strict=True):
        expected_slice = slices[(ns, agent)]
        if data is None:
            report._missing_agent_events += 1
        if data != encode_agent_event(expected_slice):
            report._add(
                Divergence(
                    "AGENT_EVENTS",
                    describe_key(raw_key),
                    _show_slice(expected_slice),
                    _show_raw(
                        data, functools.partial(decode_agent_event, ns, agent, event.commit_ts), _show_slice
                    ),
                )
            )


def _check_meta(db: Any, report: Report) -> None:
    raw = db.get(keys.META_LAST_COMMIT_TS)
    found = None if raw is None or len(raw) != _U64_SIZE else keys.read_u64(raw)
    if found != report.last_commit_ts and not (found is None and raw is None and report.last_commit_ts == 0):
        shown = "nothing" if raw is None else (str(found) if found is not None else f"0x{raw.hex()}")
        report._add(Divergence("META", "name='last_commit_ts'", str(report.last_commit_ts), shown))
    raw = db.get(keys.META_SCHEMA)
    if raw != keys.u64(keys.SCHEMA_VERSION):
        shown = "nothing" if raw is None else (str(keys.read_u64(raw)) if len(raw) == 8 else f"0x{raw.hex()}")
        report._add(Divergence("META", "name='schema_version'", str(keys.SCHEMA_VERSION), shown))
    if db.get(META_REBUILD_IN_PROGRESS) is not None:
        report._add(
            Divergence(
                "META",
                "name='rebuild_in_progress'",
                "nothing",
                "the marker of an interrupted rebuild (run statehoused rebuild again)",
            )
        )


def _expected_state(db: Any, target: tuple[str, str, str], entry: list[Any]) -> str:
    """The expected STATE record of a key, with its value fetched back from the log."""
    version, commit_ts, digest = entry
    value: bytes | None = None
    if digest is not None:
        data = db.get(keys.event_key(commit_ts))
        if data is not None:
            with contextlib.suppress(*_DECODE_ERRORS):
                for op in decode_event(commit_ts, data).ops:
                    if (op.namespace, op.agent_id, op.key) == target:
                        value = op.value
        if value is None:
            return f"version {version}, commit_ts {commit_ts}, a value"
    return _show_state(StateRecord(version, commit_ts, value))


def _check_state(db: Any, latest: Fold, report: Report) -> None:
    """Merge the STATE table with the fold, both in storage key order."""

    def missing(want: tuple[bytes, tuple[str, str, str]]) -> None:
        raw_key, target = want
        report._add(
            Divergence("STATE", describe_key(raw_key), _expected_state(db, target, latest[target]), "nothing")
        )

    expected = iter(sorted((keys.state_key(*target), target) for target in latest))
    want = next(expected, None)
    for raw_key, data in _range(db, keys.STATE):
        while want is not None and want[0] < raw_key:
            missing(want)
            want = next(expected, None)
        if want is None or want[0] != raw_key:
            report._add(
                Divergence(
                    "STATE", describe_key(raw_key), "nothing", _show_raw(data, decode_state, _show_state)
                )
            )
            continue
        target = want[1]
        want = next(expected, None)
        version, commit_ts, digest = latest[target]
        try:
            record = decode_state(data)
            good = (
                encode_state(record) == data
                and (record.version, record.commit_ts) == (version, commit_ts)
                and _digest(record.value) == digest
            )
        except _DECODE_ERRORS:
            good = False
        if not good:
            report._add(
                Divergence(
                    "STATE",
                    describe_key(raw_key),
                    _expected_state(db, target, latest[target]),
                    _show_raw(data, decode_state, _show_state),
                )
            )
    while want is not None:
        missing(want)
        want = next(expected, None)


def _check_extra_versions(db: Any, latest: Fold, report: Report) -> None:
    """VERSIONS records the log does not imply (those it implies were checked one by one)."""
    for raw_key, data in _range(db, keys.VERSIONS):
        try:
            ns, agent, key, version = split_version_key(raw_key)
            entry = latest.get((ns, agent, key))
            implied = entry is not None and 1 <= version <= entry[0]
        except _DECODE_ERRORS:
            implied = False
        if not implied:
            report._add(
                Divergence(
                    "VERSIONS",
                    describe_key(raw_key),
                    "nothing",
                    _show_raw(data, decode_version, _show_version),
                )
            )


def _check_extra_agent_events(db: Any, report: Report) -> None:
    """AGENT_EVENTS records the log does not imply; only searched for if there are too many."""
    stored = sum(1 for _ in _range(db, keys.AGENT_EVENTS))
    if stored == report.agent_events - report._missing_agent_events:
        return  # every stored record is one the log implies (each was looked up)
    for raw_key, data in _range(db, keys.AGENT_EVENTS):
        try:
            ns, agent, commit_ts = split_agent_event_key(raw_key)
            event_data = db.get(keys.event_key(commit_ts))
            implied = event_data is not None and (ns, agent) in agent_slices(
                decode_event(commit_ts, event_data)
            )
        except _DECODE_ERRORS:
            implied = False
        if not implied:
            report._add(Divergence("AGENT_EVENTS", describe_key(raw_key), "nothing", f"{len(data)} bytes"))


def _check_extra_txns(db: Any, report: Report) -> None:
    """TXNS records beyond one per event (each event's own was checked where it was read)."""
    stored = sum(1 for _ in _range(db, keys.TXNS))
    if stored > report.events:
        report._add(
            Divergence(
                "TXNS", "the whole table", f"at most {report.events} records (one per event)", str(stored)
            )
        )


# --- rebuild ----------------------------------------------------------------------------------


def rebuild(
    path: str | os.PathLike[str],
    progress: ProgressCallback | None = None,
    progress_every: int = 10_000,
    batch_bytes: int = 4 * 1024 * 1024,
    batch_ops: int = 20_000,
) -> RebuildResult:
    """Rewrite STATE, VERSIONS, AGENT_EVENTS, TXNS and META last_commit_ts from EVENTS alone.

    Refuses (LogDamagedError, nothing changed) if the log itself is damaged.
    Safe to run again after an interruption: it only reads EVENTS.
    """
    path = Path(path)
    started = time.monotonic()
    with _open_read_write(path) as db:
        log_report = Report()
        latest: Fold = {}  # to write each STATE record once, from the op of its latest version
        ticker = _Ticker(progress, "checking log", _last_event_ts(db), progress_every)
        for _ in _walk_log(db, log_report, ticker, latest, digests=False):
            pass
        if log_report.divergence is not None:
            raise LogDamagedError(log_report.divergence)
        last_commit_ts = log_report.last_commit_ts
        raw = db.get(keys.META_LAST_COMMIT_TS)
        previous = None if raw is None or len(raw) != _U64_SIZE else keys.read_u64(raw)

        synced = WriteOptions()
        synced.sync = True
        # First write: mark the rebuild, drop the derived tables, and set
        # last_commit_ts to the log's end at once, so that even a daemon
        # started on an interrupted rebuild could never overwrite an event.
        batch = WriteBatch(raw_mode=True)
        batch.put(META_REBUILD_IN_PROGRESS, keys.u64(time.time_ns() // 1_000_000))
        for table in (keys.STATE, keys.VERSIONS, keys.AGENT_EVENTS, keys.TXNS):
            end = keys.prefix_end(table)
            assert end is not None
            batch.delete_range(table, end)
        batch.put(keys.META_LAST_COMMIT_TS, keys.u64(last_commit_ts))
        db.write(batch, synced)

        unsynced = WriteOptions()
        batch = WriteBatch(raw_mode=True)
        versions = agent_events = done = 0
        ticker = _Ticker(progress, "rebuilding", last_commit_ts, progress_every)
        for raw_key, data in _range(db, keys.EVENTS):
            event = decode_event(keys.read_u64(raw_key, 1), data)
            # Each key's STATE record is written once, from its latest version.
            is_latest = lambda op: latest[(op.namespace, op.agent_id, op.key)][0] == op.version  # noqa: E731
            for key, value in derived_records(event, state_for=is_latest):
                batch.put(key, value)
            versions += len(event.ops)
            agent_events += len(agent_slices(event))
            done += 1
            if len(batch) >= batch_ops or batch.size_in_bytes() >= batch_bytes:
                db.write(batch, unsynced)
                batch = WriteBatch(raw_mode=True)
            ticker.tick(done)
        if len(batch):
            db.write(batch, unsynced)
        ticker.finish(done)
        # Everything above is in the WAL; make it durable, then (synced, after
        # it in the WAL) the last write, which declares the rebuild complete.
        db.flush_wal(True)
        batch = WriteBatch(raw_mode=True)
        batch.put(keys.META_SCHEMA, keys.u64(keys.SCHEMA_VERSION))
        batch.put(keys.META_LAST_COMMIT_TS, keys.u64(last_commit_ts))
        batch.delete(META_REBUILD_IN_PROGRESS)
        db.write(batch, synced)
    return RebuildResult(
        events=done,
        state_records=len(latest),
        versions=versions,
        agent_events=agent_events,
        last_commit_ts=last_commit_ts,
        previous_last_commit_ts=previous,
        seconds=time.monotonic() - started,
    )
