"""`statehoused verify`: fold the event log from empty and compare every derived table with it.

Every other table is derived from EVENTS: folding the log in commit_ts
order gives STATE (the latest version of each key, tombstones included),
VERSIONS (one record per op), AGENT_EVENTS (each event's slice per agent),
TXNS (each event's transaction id), AGENTS (every agent written) and META last_commit_ts (the last
event's commit_ts; empty commits write no event, so the log has no gaps).

The report names the first divergence, in this order of precedence: the
log itself (EVENTS: decodable, commit_ts 1, 2, 3, ... without gaps, every
key's versions 1, 2, 3, ...), then META, STATE (in key order), VERSIONS,
AGENT_EVENTS, TXNS and AGENTS (records the log implies, in commit_ts order, then
records it does not imply, in key order). Beside divergences it reports
damage: what could not be read at all (the store not opening, a region of
the log with the first and last commit_ts lost, a table read no further
than some key), and never stops at it with a traceback.

The store is opened read-only, holding a shared lock on the data
directory's LOCK file so that no daemon (or rebuild) can start meanwhile;
StoreLockedError if one holds the directory. Memory: one small entry per
key (latest version, commit_ts, the STATE record it implies); tables are streamed.

Values are stored once, in the log's events (storage/records.py): walking
the log checks them (each event must decode whole), and the records of the
other tables are compared with the slots of the ops they must point to.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from storage import durable, keys, reading
from storage.derive import agent_ops
from storage.errors import DataLossError, StoreRefusedError
from storage.logwalk import (
    Damage,
    Divergence,
    Fold,
    ProgressCallback,
    Report,
    Ticker,
    log_end,
    show_raw,
    show_slice,
    show_state,
    show_version,
    walk_log,
)
from storage.opening import open_read_only
from storage.records import (
    Event,
    VersionPointer,
    decode_event,
    decode_slice,
    decode_state,
    decode_version,
    encode_slice,
    encode_version,
    slots,
    value_flags,
)
from storage.upgrade import require_current


def verify(
    path: str | os.PathLike[str], progress: ProgressCallback | None = None, progress_every: int = 10_000
) -> Report:
    """Fold the log from empty and compare every derived table with it (read-only).

    A store that cannot be opened whole (StoreRefusedError) is reported as
    damage; StoreLockedError, or StorageError for a directory with no store,
    is raised.
    """
    started = time.monotonic()
    report = Report()
    try:
        with open_read_only(path) as db:
            with contextlib.suppress(DataLossError):  # damage is reported by the walk
                require_current(db, Path(path))
            with contextlib.suppress(DataLossError):  # damage met there is found again below
                _check_mark(db, Path(path), report)
            _verify_open(db, report, progress, progress_every)
    except StoreRefusedError as exc:
        report._damaged(Damage("STORE", "the data directory could not be opened", str(exc)))
    report.seconds = time.monotonic() - started
    return report


def _check_mark(db: Any, path: Path, report: Report) -> None:
    """A store that ends before its durable mark has lost commits that were on disk."""
    try:
        mark = durable.read_mark(path)
    except StoreRefusedError as exc:
        report._damaged(Damage("MARK", f"{durable.FILE_NAME} is not a durable mark", str(exc)))
        return
    ends = log_end(db)  # the log's last commit (or META's, if further): a wrong META is a divergence
    if mark is not None and mark > ends:
        report._damaged(
            Damage(
                "STORE",
                f"the store ends at commit_ts {ends}, but commits up to {mark} were on disk before "
                f"(its durable mark, {durable.FILE_NAME}): commits {ends + 1} to {mark} are gone",
                "a write-ahead log file (*.log) was removed or cut short, or older files were copied in",
                ends + 1,
                mark,
            )
        )


def _verify_open(db: Any, report: Report, progress: ProgressCallback | None, progress_every: int) -> None:
    end = log_end(db)
    ticker = Ticker(progress, "verifying", end, progress_every)
    latest: Fold = {}
    for item in walk_log(db, report, ticker, latest):
        if item.event is not None:
            _check_event_records(db, item.event, report)
    if report.damaged("EVENTS"):
        report.last_commit_ts = max(report.last_commit_ts, end)
        # What the unreadable part of the log implies is unknown: compare nothing with the
        # fold, but read every derived table, to report its damage too.
        report.notes.append(
            "the derived tables were read for damage but not compared with the log, "
            "part of which is unreadable"
        )
        for prefix in (keys.VALUES, keys.STATE, keys.VERSIONS, keys.AGENT_EVENTS, keys.TXNS, keys.AGENTS):
            name = keys.TABLE_NAMES[prefix]
            if not report.damaged(name):
                try:
                    for _ in reading.scan(db, prefix, f"the {name} table"):
                        pass
                except DataLossError as exc:
                    report.table_damaged(name, exc, f"the {name} table")
        report.keys = len(latest)
        return
    for table, what, check in (
        ("META", "META", lambda: _check_meta(db, report)),
        ("STATE", "the STATE table", lambda: _check_state(db, latest, report)),
        ("VERSIONS", "the VERSIONS table", lambda: _check_extra_versions(db, latest, report)),
        ("AGENT_EVENTS", "the AGENT_EVENTS table", lambda: _check_extra_agent_events(db, report)),
        ("VALUES", "the VALUES table", lambda: _check_extra_values(db, report)),
        ("TXNS", "the TXNS table", lambda: _check_extra_txns(db, report)),
        ("AGENTS", "the AGENTS table", lambda: _check_agents(db, latest, report)),
    ):
        if report.damaged(table):
            continue  # its damage was met record by record already; a scan would stop at it
        try:
            check()
        except DataLossError as exc:
            report.table_damaged(table, exc, what)
    report.keys = len(latest)
    report.deleted = sum(1 for entry in latest.values() if decode_state(entry[2]).deleted)
    with contextlib.suppress(DataLossError):
        report.other_keys = _count_outside(db)


def _get_each(db: Any, wanted: list[bytes], report: Report) -> list[bytes | None]:
    """The records under `wanted`, read in one multi-get; where that meets damage, one by one,
    recording each unreadable record as damage of its table (and reading it as missing)."""
    try:
        return reading.get_many(db, wanted, "the records of an event")
    except DataLossError:
        pass
    found: list[bytes | None] = []
    for key in wanted:
        try:
            found.append(reading.get(db, key))
        except DataLossError as exc:
            report.record_damaged(key, exc.detail)
            found.append(_UNREADABLE)
    return found


_UNREADABLE = b"\xff unreadable"  # a value no record has: compared, it matches nothing


def _check_event_records(db: Any, event: Event, report: Report) -> None:
    """The VALUES, VERSIONS, AGENT_EVENTS and TXNS records this event implies exist, exactly
    (a value as its op's head says: present; its bytes are the log's own)."""
    slotted = list(zip(slots(event), event.ops, strict=True))
    written = [(slot, op) for slot, op in slotted if not op.purge]
    valued = [(slot, op) for slot, op in written if op.value is not None]
    value_keys = [keys.value_key(event.commit_ts, slot) for slot, _op in valued]
    version_keys = [keys.version_key(op.namespace, op.agent_id, op.key, op.version) for _slot, op in written]
    slices = agent_ops(event)
    slice_keys = [keys.agent_event_key(ns, agent, event.commit_ts) for ns, agent in slices]
    txn_key = keys.txn_key(event.txn_id)
    found = _get_each(db, [*value_keys, *version_keys, *slice_keys, txn_key], report)
    values, found = found[: len(value_keys)], found[len(value_keys) :]
    report.values += len(value_keys)
    report.versions += len(version_keys)
    report.agent_events += len(slice_keys)
    for (slot, op), raw_key, data in zip(valued, value_keys, values, strict=True):
        if data is None:
            report._missing_values += 1
            what = f"the value of op {slot} (key {op.key!r} of agent {op.agent_id!r}, version {op.version})"
            report._add(Divergence("VALUES", keys.describe_key(raw_key), what, "nothing"))
    for (slot, op), raw_key, data in zip(written, version_keys, found, strict=False):
        expected = VersionPointer(event.commit_ts, slot, value_flags(op.value))
        if data != encode_version(expected) and data is not _UNREADABLE:
            report._add(
                Divergence(
                    "VERSIONS",
                    keys.describe_key(raw_key),
                    show_version(expected),
                    show_raw(data, decode_version, show_version),
                )
            )
    if found[-1] != keys.u64(event.commit_ts) and found[-1] is not _UNREADABLE:
        shown = "nothing" if found[-1] is None else show_raw(found[-1], keys.read_u64, str)
        report._add(
            Divergence(
                "TXNS", f"txn_id={event.txn_id!r}", f"commit_ts {event.commit_ts}", f"commit_ts {shown}"
            )
        )
    for (ns, agent), raw_key, data in zip(slices, slice_keys, found[len(version_keys) : -1], strict=True):
        mine = slices[(ns, agent)]
        if data is None or data is _UNREADABLE:
            report._missing_agent_events += 1
        if data != encode_slice(event, mine) and data is not _UNREADABLE:
            decode = functools.partial(decode_slice, ns, agent, event.commit_ts, fetch=None)
            report._add(
                Divergence(
                    "AGENT_EVENTS",
                    keys.describe_key(raw_key),
                    show_slice(event._replace(ops=tuple(op._replace(slot=slot) for slot, op in mine))),
                    show_raw(data, decode, show_slice),
                )
            )


def _check_meta(db: Any, report: Report) -> None:
    raw = reading.get(db, keys.META_LAST_COMMIT_TS)
    found = None if raw is None or len(raw) != 8 else keys.read_u64(raw)
    if found != report.last_commit_ts and not (found is None and raw is None and report.last_commit_ts == 0):
        shown = "nothing" if raw is None else (str(found) if found is not None else f"0x{raw.hex()}")
        report._add(Divergence("META", "name='last_commit_ts'", str(report.last_commit_ts), shown))
    raw = reading.get(db, keys.META_SCHEMA)
    if raw != keys.u64(keys.SCHEMA_VERSION):
        shown = "nothing" if raw is None else (str(keys.read_u64(raw)) if len(raw) == 8 else f"0x{raw.hex()}")
        report._add(Divergence("META", "name='schema_version'", str(keys.SCHEMA_VERSION), shown))
    if reading.get(db, keys.META_REBUILD_IN_PROGRESS) is not None:
        report._add(
            Divergence(
                "META",
                "name='rebuild_in_progress'",
                "nothing",
                "the marker of an interrupted rebuild (run statehoused rebuild again)",
            )
        )


def _expected_state(entry: list[Any]) -> str:
    """The STATE record the log implies for a key, in words."""
    return show_state(decode_state(entry[2]))


def _check_state(db: Any, latest: Fold, report: Report) -> None:
    """Merge the STATE table with the fold, both in storage key order."""

    def missing(want: tuple[bytes, tuple[str, str, str]]) -> None:
        raw_key, target = want
        report._add(
            Divergence("STATE", keys.describe_key(raw_key), _expected_state(latest[target]), "nothing")
        )

    expected = iter(sorted((keys.state_key(*target), target) for target in latest))
    want = next(expected, None)
    for raw_key, data in reading.scan(db, keys.STATE, "the STATE table"):
        while want is not None and want[0] < raw_key:
            missing(want)
            want = next(expected, None)
        if want is None or want[0] != raw_key:
            report._add(
                Divergence(
                    "STATE", keys.describe_key(raw_key), "nothing", show_raw(data, decode_state, show_state)
                )
            )
            continue
        target = want[1]
        want = next(expected, None)
        if data != latest[target][2]:
            report._add(
                Divergence(
                    "STATE",
                    keys.describe_key(raw_key),
                    _expected_state(latest[target]),
                    show_raw(data, decode_state, show_state),
                )
            )
    if report.log_damaged:
        return  # keys whose only versions were in the damaged region are not in the fold
    while want is not None:
        missing(want)
        want = next(expected, None)


def _check_extra_versions(db: Any, latest: Fold, report: Report) -> None:
    """VERSIONS records the log does not imply (those it implies were checked one by one)."""
    if report.log_damaged:
        return  # what the unreadable part of the log implies is unknown
    for raw_key, data in reading.scan(db, keys.VERSIONS, "the VERSIONS table"):
        try:
            ns, agent, key, version = keys.split_version_key(raw_key)
            entry = latest.get((ns, agent, key))
            implied = entry is not None and entry[3] <= version <= entry[0]
        except keys.DECODE_ERRORS:
            implied = False
        if not implied:
            report._add(
                Divergence(
                    "VERSIONS",
                    keys.describe_key(raw_key),
                    "nothing",
                    show_raw(data, decode_version, show_version),
                )
            )


def _check_extra_agent_events(db: Any, report: Report) -> None:
    """AGENT_EVENTS records the log does not imply; only searched for if there are too many."""

    def implied(raw_key: bytes) -> bool:
        ns, agent, commit_ts = keys.split_agent_event_key(raw_key)
        event_data = reading.get(db, keys.event_key(commit_ts))
        return event_data is not None and (ns, agent) in agent_ops(decode_event(commit_ts, event_data, None))

    _check_extras(db, report, keys.AGENT_EVENTS, report.agent_events - report._missing_agent_events, implied)


def _check_extra_values(db: Any, report: Report) -> None:
    """VALUES records no op of the log holds; only searched for if there are too many."""
    heads: dict[int, set[int]] = {}  # commit_ts -> the slots of its ops that hold a value

    def implied(raw_key: bytes) -> bool:
        commit_ts, slot = keys.read_u64(raw_key, 1), keys.read_u32(raw_key, 9)
        if commit_ts not in heads:
            event_data = reading.get(db, keys.event_key(commit_ts))
            event = None if event_data is None else decode_event(commit_ts, event_data, None)
            heads[commit_ts] = (
                set()
                if event is None
                else {s for s, op in zip(slots(event), event.ops, strict=True) if op.value is not None}
            )
        return slot in heads[commit_ts] and len(raw_key) == 13

    _check_extras(db, report, keys.VALUES, report.values - report._missing_values, implied)


def _check_extras(
    db: Any, report: Report, table: bytes, found_implied: int, implied: Callable[[bytes], bool]
) -> None:
    """Records of `table` the log does not imply. Those it implies were each looked up (and
    `found_implied` of them were there), so the table is scanned for strangers only when it
    holds more records than that."""
    if report.log_damaged:
        return  # what the unreadable part of the log implies is unknown
    name = keys.TABLE_NAMES[table]
    what = f"the {name} table"
    if sum(1 for _ in reading.scan(db, table, what)) == found_implied:
        return
    for raw_key, data in reading.scan(db, table, what):
        try:
            known = implied(raw_key)
        except keys.DECODE_ERRORS:
            known = False
        if not known:
            report._add(Divergence(name, keys.describe_key(raw_key), "nothing", f"{len(data)} bytes"))


def _check_extra_txns(db: Any, report: Report) -> None:
    """TXNS records beyond one per event (each event's own was checked where it was read)."""
    if report.log_damaged:
        return
    stored = sum(1 for _ in reading.scan(db, keys.TXNS, "the TXNS table"))
    if stored > report.events:
        report._add(
            Divergence(
                "TXNS", "the whole table", f"at most {report.events} records (one per event)", str(stored)
            )
        )


def _check_agents(db: Any, latest: Fold, report: Report) -> None:
    """The AGENTS table names exactly the agents the log wrote."""
    if report.log_damaged:
        return
    expected = {(ns, agent) for ns, agent, _key in latest}
    for raw_key, data in reading.scan(db, keys.AGENTS, "the AGENTS table"):
        try:
            named: tuple[str, str] | None = keys.split_agent_key(raw_key)
        except keys.DECODE_ERRORS:
            named = None
        if named is None or named not in expected or data:
            report._add(Divergence("AGENTS", keys.describe_key(raw_key), "nothing", f"{len(data)} bytes"))
        if named is not None:
            expected.discard(named)
    for ns, agent in sorted(expected):
        report._add(
            Divergence("AGENTS", f"namespace={ns!r} agent={agent!r}", "a record", "nothing (not listed)")
        )


def _count_outside(db: Any) -> int:
    """Keys whose first byte names no table (not checked, only counted)."""
    return sum(
        1
        for _ in reading.scan(
            db, b"", "the keys after the known tables", keys.prefix_end(max(keys.TABLE_NAMES))
        )
    )
