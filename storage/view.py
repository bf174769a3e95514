"""Consistent reads over one RocksDB snapshot of the store.

The ledger publishes a new `ReadView` after every durable commit group, so a
reader never sees a commit that is not yet on disk, and every read through
one view sees the same commit_ts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rocksdict import ReadOptions

from storage import keys
from storage.errors import StorageError
from storage.records import (
    Event,
    StateRecord,
    VersionRecord,
    decode_agent_event,
    decode_event,
    decode_state,
    decode_version,
)

_MISSING = "key not found"


class ReadView:
    """Read-only access to the store as of `last_commit_ts`."""

    def __init__(self, snapshot: Any, last_commit_ts: int) -> None:
        self._snapshot = snapshot
        self.last_commit_ts = last_commit_ts

    def _get(self, key: bytes) -> bytes | None:
        try:
            return self._snapshot[key]
        except Exception as exc:  # rocksdict raises a bare Exception for a miss
            if str(exc) == _MISSING:
                return None
            raise StorageError(f"read failed: {exc}") from exc

    def _range(self, start: bytes, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) for keys >= start that begin with prefix."""
        options = ReadOptions()
        end = keys.prefix_end(prefix)
        if end is not None:
            options.set_iterate_upper_bound(end)
        it = self._snapshot.iter(options)
        it.seek(start)
        while it.valid():
            yield it.key(), it.value()
            it.next()

    def get(self, namespace: str, agent_id: str, key: str) -> StateRecord | None:
        """The latest record of a key (a tombstone record if deleted), or None."""
        data = self._get(keys.state_key(namespace, agent_id, key))
        return None if data is None else decode_state(data)

    def get_version(self, namespace: str, agent_id: str, key: str, version: int) -> VersionRecord | None:
        """A key's record at `version`, or None if that version never existed."""
        data = self._get(keys.version_key(namespace, agent_id, key, version))
        return None if data is None else decode_version(data)

    def scan(self, namespace: str, agent_id: str, prefix: str = "") -> Iterator[tuple[str, StateRecord]]:
        """Live (non-deleted) keys of an agent starting with `prefix`, in byte order."""
        agent = keys.agent_prefix(keys.STATE, namespace, agent_id)
        start = agent + prefix.encode("utf-8")
        for raw_key, data in self._range(start, start):
            record = decode_state(data)
            if record.value is not None:
                yield raw_key[len(agent) :].decode("utf-8"), record

    def keys(self, namespace: str, agent_id: str) -> Iterator[str]:
        """Live keys of an agent in byte order."""
        for key, _record in self.scan(namespace, agent_id):
            yield key

    def replay(
        self,
        namespace: str,
        agent_id: str,
        start_ts: int | None = None,
        end_ts: int | None = None,
    ) -> Iterator[Event]:
        """One agent's events in commit_ts order, lazily, from its own index."""
        agent = keys.agent_prefix(keys.AGENT_EVENTS, namespace, agent_id)
        start = agent + keys.u64(start_ts or 0)
        for raw_key, data in self._range(start, agent):
            commit_ts = keys.read_u64(raw_key, len(agent))
            if end_ts is not None and commit_ts > end_ts:
                return
            yield decode_agent_event(namespace, agent_id, commit_ts, data)

    def events(self, start_ts: int = 1) -> Iterator[Event]:
        """The global log in commit_ts order."""
        for raw_key, data in self._range(keys.event_key(start_ts), keys.EVENTS):
            yield decode_event(keys.read_u64(raw_key, 1), data)

    def states(self) -> Iterator[tuple[bytes, StateRecord]]:
        """Every state record (tombstones included), keyed by storage key."""
        for raw_key, data in self._range(keys.STATE, keys.STATE):
            yield raw_key, decode_state(data)

    def versions(self) -> Iterator[tuple[bytes, VersionRecord]]:
        """Every version record, keyed by storage key."""
        for raw_key, data in self._range(keys.VERSIONS, keys.VERSIONS):
            yield raw_key, decode_version(data)
