"""Bringing a data directory written by an older statehoused to the current schema, in place.

- Schema 1 had no AGENTS table.
- Schema 2 stored every value four times: in its event, and again in the
  STATE, VERSIONS and AGENT_EVENTS records. Schema 3 stores it once, in
  VALUES beside its event's heads (storage/records.py), and the other
  records point to it.

`upgrade` rewrites every event in the current format and writes the records
it implies over the old ones (`derive.add_event`), in commit_ts order, in
bounded batches. Each batch records how far it got, so an upgrade cut short
(a crash, a kill) goes on from there at the next open; the schema version
is written by the last, synced write. Until then the daemon does not serve.
The old records of a key are all overwritten: every record of schema 2 is
implied by an event of the log (a purge deleted the rest).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rocksdict import WriteBatch, WriteOptions

from storage import keys, reading
from storage.derive import add_event
from storage.errors import StorageError
from storage.records import decode_event, decode_legacy_event, is_legacy_event

# The commit_ts the next batch of an upgrade under way starts at.
META_UPGRADE_NEXT = keys.META + b"upgrade_next_ts"
_BATCH_BYTES = 4 * 1024 * 1024


def upgrade(
    db: Any,
    path: Path,
    schema: int,
    progress: Callable[[int], None] | None = None,
    batch_bytes: int = _BATCH_BYTES,
) -> int:
    """Upgrade the open store at `path` from `schema` to keys.SCHEMA_VERSION; the number of
    events rewritten. `progress` is called with the commit_ts reached after each batch."""
    raw = reading.get(db, META_UPGRADE_NEXT)
    start = 1 if raw is None else keys.read_u64(raw)
    unsynced = WriteOptions()
    batch = WriteBatch(raw_mode=True)
    count = 0
    for raw_key, data in reading.scan(db, keys.EVENTS, "the event log", keys.event_key(start)):
        commit_ts = keys.read_u64(raw_key, 1)
        try:
            if is_legacy_event(data):
                event = decode_legacy_event(commit_ts, data)
            else:  # already of this schema (an upgrade from 1 that wrote them): values as they are
                event = decode_event(commit_ts, data, functools.partial(_value, db, commit_ts))
        except keys.DECODE_ERRORS as exc:
            raise StorageError(
                f"upgrading data directory {path} from schema {schema} stopped at commit_ts {commit_ts}, "
                f"whose event does not decode ({exc}); the events before it are upgraded, and the daemon "
                "will go on from there when it starts; run `statehoused verify` to see the damage"
            ) from exc
        add_event(batch, event)
        count += 1
        if batch.size_in_bytes() >= batch_bytes:
            batch.put(META_UPGRADE_NEXT, keys.u64(commit_ts + 1))
            db.write(batch, unsynced)
            batch = WriteBatch(raw_mode=True)
            if progress is not None:
                progress(commit_ts)
    batch.put(keys.META_SCHEMA, keys.u64(keys.SCHEMA_VERSION))
    batch.delete(META_UPGRADE_NEXT)
    synced = WriteOptions()
    synced.sync = True
    db.write(batch, synced)
    return count


def _value(db: Any, commit_ts: int, slot: int) -> bytes | None:
    return reading.get(db, keys.value_key(commit_ts, slot))


def require_current(db: Any, path: Path) -> None:
    """StorageError if the store at `path` is of an older schema (verify and rebuild read
    the current one only)."""
    raw = reading.get(db, keys.META_SCHEMA)
    schema = keys.SCHEMA_VERSION if raw is None or len(raw) != 8 else keys.read_u64(raw)
    if schema < keys.SCHEMA_VERSION:
        raise StorageError(
            f"data directory {path} has schema version {schema}, written by an older statehoused; start "
            f"statehoused on it once (it upgrades the directory to schema {keys.SCHEMA_VERSION} in place), "
            "then run this again"
        )
