"""Walking the event log from the first commit, as `verify` and `rebuild` both do.

`walk_log` yields the log in commit_ts order and checks the log's own
invariants (commit_ts 1, 2, 3, ... without gaps, every key's versions 1, 2,
3, ...) into a `Report`. Where the log cannot be read (a damaged block) it
does not stop as if the log ended: it records a `Damage` naming the
first and last commit_ts it could not read, finds the next commit it can
read by point reads, and carries on from there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from storage import keys, reading
from storage.errors import DataLossError, StorageError
from storage.records import (
    TOMBSTONE,
    Event,
    StatePointer,
    VersionPointer,
    decode_event,
    encode_event,
    encode_state,
    slots,
    value_flags,
)
from storage.retention import horizons

# The order in which divergences take precedence (see storage/verify.py).
PRECEDENCE = ("EVENTS", "VALUES", "META", "STATE", "VERSIONS", "AGENT_EVENTS", "TXNS", "AGENTS")


@dataclass(frozen=True, slots=True)
class Divergence:
    """One place where the store differs from what the log implies."""

    table: str  # one of PRECEDENCE
    where: str  # the key in human terms, e.g. "namespace='ns' agent='a' key='k' version=3"
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.table} {self.where}: expected {self.expected}, found {self.found}"


@dataclass(slots=True)
class Damage:
    """A part of the store that could not be read at all.

    `table` is one of PRECEDENCE, "STORE" when the data directory could
    not be opened or lost commits, or "MARK" for a durable mark file that
    cannot be read. For EVENTS, `first_ts`..`last_ts` are the commits that
    could not be read (`last_ts` None: up to the end of the log). Records
    found unreadable one by one are counted into one Damage per table and
    block (`count`, from `where` to `last`).
    """

    table: str
    where: str  # what could not be read, in human terms
    detail: str  # what RocksDB said
    first_ts: int | None = None
    last_ts: int | None = None
    count: int = 0  # records found unreadable one by one (0: a region)
    last: str = ""  # the last of them

    def __str__(self) -> str:
        if self.count > 1:
            what = f"{self.count} records from {self.where} to {self.last} could not be read"
        elif self.count == 1:
            what = f"{self.where} could not be read"
        else:
            what = self.where
        return f"{self.table}: {what} ({self.detail})"


@dataclass
class Report:
    """What a pass over the store checked, the first divergence it found, and the damage it met."""

    events: int = 0
    keys: int = 0  # STATE records the log implies, tombstones included
    deleted: int = 0  # of which tombstones
    versions: int = 0
    agent_events: int = 0
    values: int = 0  # VALUES records the log implies
    last_commit_ts: int = 0  # of the log
    other_keys: int = 0  # keys outside the seven tables (not checked)
    divergences: int = 0
    by_table: dict[str, int] = field(default_factory=dict)
    divergence: Divergence | None = None
    damage: list[Damage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not checked, and why
    seconds: float = 0.0
    _missing_agent_events: int = field(default=0, repr=False)
    _missing_values: int = field(default=0, repr=False)
    _first: dict[str, Divergence] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.divergences == 0 and not self.damage

    @property
    def log_damaged(self) -> bool:
        """Whether part of the log itself could not be read (or the store not opened)."""
        return any(d.table in ("EVENTS", "STORE") for d in self.damage)

    def damaged(self, table: str) -> bool:
        return any(d.table == table for d in self.damage)

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
        lines = [f"DAMAGE: {d}" for d in self.damage]
        lines += [f"note: {note}" for note in self.notes]
        if self.divergence is not None:
            lines.append(f"DIVERGENCE: {self.divergence}")
            lines += [f"  first in {d.table}: {d}" for d in self.firsts()[1:]]
            tables = ", ".join(
                f"{table} {self.by_table[table]}" for table in PRECEDENCE if table in self.by_table
            )
            lines.append(f"{self.divergences} divergences ({tables}); the log has {self.counts()}")
        elif self.events or not self.damaged("STORE"):
            lines.append(f"the log has {self.counts()}")
        return "\n".join(lines)

    def _add(self, divergence: Divergence) -> None:
        self.divergences += 1
        self.by_table[divergence.table] = self.by_table.get(divergence.table, 0) + 1
        self._first.setdefault(divergence.table, divergence)
        for table in PRECEDENCE:
            if table in self._first:
                self.divergence = self._first[table]
                break

    def _damaged(self, damage: Damage) -> None:
        self.damage.append(damage)

    def record_damaged(self, raw_key: bytes, detail: str) -> None:
        """Record one record that could not be read (merged with the last one of its block)."""
        table = keys.TABLE_NAMES.get(raw_key[:1], "OTHER")
        where = keys.describe_key(raw_key)
        last = self.damage[-1] if self.damage else None
        if last is not None and last.count and last.table == table and last.detail == detail:
            last.count += 1
            last.last = where
            return
        self.damage.append(Damage(table, where, detail, count=1, last=where))

    def table_damaged(self, table: str, exc: DataLossError, what: str) -> None:
        """Record that a scan of `table` stopped at damage; the rest of it was not checked."""
        where = "from its start" if exc.after is None else f"after {keys.describe_key(exc.after)}"
        self._damaged(
            Damage(table, f"{what} could not be read {where}; the rest was not checked", exc.detail)
        )


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


class Ticker:
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


# --- describing records to a person ---------------------------------------------------------


def _show_pointer(commit_ts: int, slot: int, deleted: bool) -> str:
    return f"commit_ts {commit_ts}, " + ("deleted" if deleted else f"the value of op {slot} of that event")


def show_state(record: StatePointer) -> str:
    return f"version {record.version}, " + _show_pointer(record.commit_ts, record.slot, record.deleted)


def show_version(record: VersionPointer) -> str:
    return _show_pointer(record.commit_ts, record.slot, bool(record.flags & TOMBSTONE))


def show_slice(event: Event) -> str:
    ops = ", ".join(
        f"{op.key!r} v{op.version} {'deleted' if op.value is None else 'written'} at slot {op.slot}"
        for op in event.ops
    )
    return f"txn {event.txn_id!r} at {event.committed_at_ms} ms with {len(event.ops)} ops [{ops}]"


def show_raw(data: bytes | None, decode: Callable[[bytes], Any], show: Callable[[Any], str]) -> str:
    """A stored record for a message: decoded if it decodes canonically, else its bytes."""
    if data is None:
        return "nothing"
    try:
        return show(decode(data))
    except keys.DECODE_ERRORS:
        return f"an undecodable record 0x{data[:32].hex()}{'...' if len(data) > 32 else ''}"


# --- the log's end and its damaged regions ----------------------------------------------------


def log_end(db: Any) -> int:
    """The commit_ts the log should reach: its last readable key, or META last_commit_ts
    if that is further (or the end cannot be read); 0 for an empty log (or unknown)."""
    return _log_end(db)[0]


def _log_end(db: Any) -> tuple[int, bool]:
    """(log_end, whether that end could be read at all: META or the log's last key)."""
    end, known = 0, False
    try:
        last = reading.last_key(db, keys.EVENTS, "the end of the event log")
        known = True
        if last is not None and len(last) == 1 + 8:
            end = keys.read_u64(last, 1)
    except StorageError:
        pass
    try:
        raw = reading.get(db, keys.META_LAST_COMMIT_TS)
        known = True
        if raw is not None and len(raw) == 8:
            end = max(end, keys.read_u64(raw))
    except StorageError:
        pass
    return end, known


def _read(db: Any, commit_ts: int) -> bytes | None:
    """The event at `commit_ts` read by a point read, or None if it cannot be read (or is not there)."""
    try:
        return reading.get(db, keys.event_key(commit_ts))
    except DataLossError:
        return None


def next_readable(db: Any, after: int, end: int) -> int | None:
    """The first commit_ts after `after` (and up to `end`) whose event can be read, or None.

    The log scan stopped at damage just after `after`; point reads step
    over it, doubling the stride, bisect back to the first readable commit
    found, and then make sure, one by one, that no commit before that one
    can be read (two damaged regions close together could hide one).
    """
    damaged, stride = after, 1
    probe = after + 1
    while probe <= end:
        if _read(db, probe) is not None:
            break
        damaged = probe
        stride *= 2
        probe = after + stride
    else:
        if end <= damaged or _read(db, end) is None:
            return None
        probe = end
    while probe - damaged > 1:
        middle = (damaged + probe) // 2
        if _read(db, middle) is not None:
            probe = middle
        else:
            damaged = middle
    for commit_ts in range(after + 1, probe):
        if _read(db, commit_ts) is not None:
            return commit_ts
    return probe


# After stepping over damage, this many commits are read by point reads before a scan is tried
# again: a scan merges every table file and can fail where point reads of the newest one work.
_POINT_READS = 256


def log_records(db: Any, report: Report, start_ts: int = 1) -> Iterator[tuple[bytes, bytes]]:
    """Every readable (key, value) of EVENTS from `start_ts`, in order; each damaged
    region met on the way is recorded in `report` (as EVENTS damage) and stepped over.

    Every pass either reads a commit or ends, so this always finishes, and no
    commit is both skipped and unreported.
    """
    end, known = _log_end(db)
    after = start_ts - 1  # every commit up to here was yielded or reported
    while True:
        try:
            for raw_key, data in reading.scan(db, keys.EVENTS, "the event log", keys.event_key(after + 1)):
                if len(raw_key) == 1 + 8:
                    after = keys.read_u64(raw_key, 1)
                yield raw_key, data
            return
        except DataLossError as exc:
            detail = exc.detail
            if exc.after is not None and len(exc.after) == 1 + 8:
                after = max(after, keys.read_u64(exc.after, 1))
        resume = next_readable(db, after, end)
        if resume is None and known and after >= end:
            return  # the log is whole up to its recorded end; the damage lies past it, in another table
        if resume is None:
            where = (
                f"commit_ts {after + 1} to the end of the log ({end})"
                if end > after
                else (f"the log after commit_ts {after}")
            )
            report._damaged(Damage("EVENTS", f"{where} could not be read", detail, after + 1, None))
            return
        if resume > after + 1:
            shown = f"commit_ts {after + 1} to {resume - 1}"
            report._damaged(Damage("EVENTS", f"{shown} could not be read", detail, after + 1, resume - 1))
        # Step on by point reads, then let a scan try again.
        commit_ts = resume
        for _ in range(_POINT_READS):
            found = _read(db, commit_ts)
            if found is None:
                break
            yield keys.event_key(commit_ts), found
            after = commit_ts
            commit_ts += 1


@dataclass(slots=True)
class LogEvent:
    commit_ts: int
    event: Event | None  # None: the record is undecodable


# (namespace, agent_id, key) -> [latest version, its commit_ts, its encoded STATE record,
# the first version the log holds (1 unless retention let older ones go)]
Fold = dict[tuple[str, str, str], list[Any]]


class LogDamagedError(StorageError):
    """The event log itself is damaged or inconsistent; a rebuild from it would not repair anything."""

    def __init__(self, report: Report) -> None:
        what = report.divergence if report.divergence is not None else report.damage[0]
        if report.damaged("EVENTS"):
            what = next(d for d in report.damage if d.table == "EVENTS")
        super().__init__(f"the event log itself is damaged: {what}")
        self.report = report
        self.divergence = report.divergence


def walk_log(db: Any, report: Report, ticker: Ticker, latest: Fold) -> Iterator[LogEvent]:
    """Yield the log in commit_ts order, checking the log's own invariants into `report`.

    `latest` is updated with every op (with the STATE record it implies); the
    fold is also what checks each key's versions. After a damaged region the
    versions of the keys it held are unknown, so a key's next version is
    then taken as it comes (the damage is reported, not every key after it).
    """
    versions = latest
    # Where retention let history go, a key's history may begin above version 1.
    compacted = _compacted_namespaces(db, report)
    # The fold's keys by agent, so that a purge finds its keys without scanning the fold.
    by_agent: dict[tuple[str, str], set[str]] = {}
    for namespace, agent_id, key in versions:
        by_agent.setdefault((namespace, agent_id), set()).add(key)
    previous = 0
    count = 0
    for raw_key, data in log_records(db, report):
        count += 1
        ticker.tick(count)
        if len(raw_key) != 1 + 8:
            report._add(
                Divergence("EVENTS", keys.describe_key(raw_key), "an 8-byte commit_ts key", "another key")
            )
            continue
        commit_ts = keys.read_u64(raw_key, 1)
        where = f"commit_ts={commit_ts}"
        if commit_ts != previous + 1 and not _covered(report, previous + 1, commit_ts - 1):
            expected = f"commit_ts {previous + 1} after {previous}" if previous else "the log to start at 1"
            report._add(Divergence("EVENTS", where, expected, f"commit_ts {commit_ts}"))
        previous = commit_ts
        report.events += 1
        report.last_commit_ts = commit_ts
        try:
            event = decode_event(commit_ts, data, None)  # heads: verify reads the values apart
            canonical = encode_event(event) == data
        except keys.DECODE_ERRORS as exc:
            report._add(Divergence("EVENTS", where, "a decodable event", f"an undecodable record ({exc})"))
            yield LogEvent(commit_ts, None)
            continue
        if not canonical:
            report._add(
                Divergence("EVENTS", where, "a well-formed event", "a record with trailing or missing bytes")
            )
        if not event.ops and not event.scrubbed:
            report._add(Divergence("EVENTS", where, "at least one op (empty commits write no event)", "none"))
        seen: set[tuple[str, str, str]] = set()
        for slot, op in zip(slots(event), event.ops, strict=True):
            if op.purge:
                forget(versions, by_agent, op.namespace, op.agent_id, op.key)
                continue
            state_key = (op.namespace, op.agent_id, op.key)
            entry = versions.get(state_key)
            expected_version = 1 if entry is None else entry[0] + 1
            # Versions the key had in a damaged region since its last one seen are unknown, and
            # so are those retention let go before its first one kept.
            skipped = op.version > expected_version and (
                _damaged_since(report, 0 if entry is None else entry[1])
                or (entry is None and op.namespace in compacted)
            )
            if (op.version != expected_version and not skipped) or state_key in seen:
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
            pointer = encode_state(StatePointer(op.version, commit_ts, slot, value_flags(op.value)))
            if entry is None:
                versions[state_key] = [op.version, commit_ts, pointer, op.version]
                by_agent.setdefault((op.namespace, op.agent_id), set()).add(op.key)
            else:
                entry[0], entry[1], entry[2] = op.version, commit_ts, pointer
        yield LogEvent(commit_ts, event)
    ticker.finish(count)


def _compacted_namespaces(db: Any, report: Report) -> set[str]:
    """The namespaces retention let history go in (their horizon is past 1)."""
    try:
        return {namespace for namespace, horizon in horizons(db) if horizon > 1}
    except DataLossError as exc:
        report.table_damaged("META", exc, "the horizons of retention")
    except keys.DECODE_ERRORS:
        report._add(Divergence("META", "the HORIZONS table", "16-byte horizon records", "another record"))
    return set()


def forget(
    fold: Fold, by_agent: dict[tuple[str, str], set[str]], namespace: str, agent_id: str, prefix: str
) -> None:
    """Drop from the fold what a purge removed: the agent's keys starting with `prefix`."""
    keys_of = by_agent.get((namespace, agent_id), set())
    for key in [k for k in keys_of if k.startswith(prefix)]:
        keys_of.discard(key)
        del fold[(namespace, agent_id, key)]


def _covered(report: Report, first: int, last: int) -> bool:
    """Whether reported damage of the log covers commits `first`..`last` (a jump over them)."""
    return any(
        d.table == "EVENTS"
        and d.first_ts is not None
        and d.first_ts <= first
        and (d.last_ts is None or d.last_ts >= last)
        for d in report.damage
    )


def _damaged_since(report: Report, commit_ts: int) -> bool:
    """Whether part of the log after `commit_ts` could not be read."""
    return any(
        d.table == "EVENTS" and d.first_ts is not None and d.first_ts > commit_ts for d in report.damage
    )
