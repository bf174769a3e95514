"""Consistent reads over one RocksDB snapshot of the store.

The ledger publishes a new `ReadView` after every durable commit group, so a
reader never sees a commit that is not yet on disk, and every read through
one view sees the same commit_ts.

Point reads go through the snapshot. Scans cannot: rocksdict 0.3.29's
`Snapshot.iter` sets the snapshot on a copy of its read options and then
iterates with a fresh one, so every iterator reads the live store (its
src/snapshot.rs; checked here by `tests/storage/test_views.py`). A view
therefore makes its scans exact itself:

- what commits wrote after the view is left out by its commit_ts: the log's
  tables are keyed or stamped by it, and a STATE record newer than the view is
  read again from the snapshot (the record it replaced, or none);
- what a purge or a retention pass removes or rewrites after the view cannot
  be read back, so the writer marks a `Fence` before such a write, and a scan
  checks it before it hands out what it read. A paged read then raises
  `ViewMoved` (the daemon reads the page again on a new view); a replay or a
  log scan goes on from where it was on a new view, which says
  `HistoryCompactedError` if retention took what was still to come.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, TypeVar

from storage import keys, reading
from storage.errors import DataLossError, HistoryCompactedError, ViewMoved
from storage.records import (
    BLOB,
    TOMBSTONE,
    Blob,
    Event,
    StatePointer,
    StateRecord,
    VersionPointer,
    VersionRecord,
    committed_at_ms,
    decode_event,
    decode_slice,
    decode_state,
    decode_version,
)

T = TypeVar("T")
_REPLAY_CHUNK = 256  # AGENT_EVENTS records whose values a replay reads together


def _compacted(what: str, oldest: tuple[int, VersionPointer]) -> HistoryCompactedError:
    version, pointer = oldest
    return HistoryCompactedError(
        f"{what} was compacted by retention: the oldest version kept is {version}, committed at "
        f"commit_ts {pointer.commit_ts} (the key's horizon)",
        pointer.commit_ts,
    )


def _agent(namespace: str, agent_id: str) -> str:
    return f"agent {agent_id!r} in namespace {namespace!r}"


class Fence:
    """Where the writer says it is about to remove or rewrite what a view may be scanning
    (a purge, a retention pass): a count of such writes, and per namespace the count at
    its last one. Only the writer's thread marks it, before the write; a reader that then
    sees the write also sees the mark."""

    __slots__ = ("namespaces", "seq")

    def __init__(self) -> None:
        self.seq = 0
        self.namespaces: dict[str, int] = {}

    def mark(self, namespaces: Iterable[str]) -> None:
        seq = self.seq + 1
        for namespace in namespaces:
            self.namespaces[namespace] = seq
        self.seq = seq


class ReadView:
    """Read-only access to the store as of `last_commit_ts`.

    Every read goes through `storage.reading`: one that meets damaged data
    raises DataLossError instead of answering with what came before it.
    `fence` is the store's (see the module's docstring); `renew` gives the
    store's newest view, for a replay or a log scan to go on with.
    """

    def __init__(
        self,
        snapshot: Any,
        last_commit_ts: int,
        fence: Fence | None = None,
        renew: Callable[[], ReadView] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self.last_commit_ts = last_commit_ts
        self._fence = fence if fence is not None else Fence()
        self._born = self._fence.seq
        self._renew = renew

    def _moved(self, namespace: str | None) -> bool:
        """Whether a purge or retention pass (of `namespace`; None: of any) came after this view."""
        fence = self._fence
        if fence.seq == self._born:
            return False
        return namespace is None or fence.namespaces.get(namespace, 0) > self._born

    def _check(self, namespace: str | None, what: str) -> None:
        if self._moved(namespace):
            raise ViewMoved(
                f"{what} changed while it was read (a purge or retention pass after commit_ts "
                f"{self.last_commit_ts}); read it again"
            )

    def _renewed(self, namespace: str | None, what: str) -> ReadView:
        """The store's newest view, for a scan this view's fence stopped to go on with."""
        if self._renew is None:
            self._check(namespace, what)
        assert self._renew is not None
        return self._renew()

    @property
    def snapshot(self) -> Any:
        """The RocksDB snapshot this view reads (for storage/retention.py)."""
        return self._snapshot

    def _get(self, key: bytes) -> bytes | None:
        return reading.get(self._snapshot, key)

    def _value(self, commit_ts: int, slot: int, flags: int, what: str) -> bytes | None:
        """The value a STATE or VERSIONS record points to: op `slot` of the commit at `commit_ts`."""
        if flags & TOMBSTONE:
            return None
        data = self._get(keys.value_key(commit_ts, slot))
        if data is None:
            raise DataLossError(
                f"the value of {what} (op {slot} of commit_ts {commit_ts}) is missing from the log: the "
                f"data directory is damaged; {reading.ADVICE}"
            )
        return Blob(data) if flags & BLOB else data

    def _fetch(self, commit_ts: int) -> Callable[[int], bytes | None]:
        """Reads the values of the commit at `commit_ts`, by slot (for the record decoders).

        Replay calls this once per value, so it reads the snapshot directly."""
        prefix = keys.value_key(commit_ts, 0)[:-4]
        get, slot_bytes = self._snapshot.__getitem__, keys.slot_bytes

        def fetch(slot: int) -> bytes | None:
            try:
                return get(prefix + slot_bytes(slot))  # type: ignore[no-any-return]
            except Exception as exc:
                if str(exc) == reading.MISSING:
                    return None
                raise reading.read_error(exc, f"the value of op {slot} of commit_ts {commit_ts}") from exc

        return fetch

    def _state(self, pointer: StatePointer, key: str, namespace: str, agent_id: str) -> StateRecord:
        what = f"key {key!r} of {_agent(namespace, agent_id)}"
        value = self._value(pointer.commit_ts, pointer.slot, pointer.flags, what)
        return StateRecord(pointer.version, pointer.commit_ts, value)

    def pointer(self, namespace: str, agent_id: str, key: str) -> StatePointer | None:
        """The latest STATE record of a key as stored (where its value is), or None."""
        return self._get_pointer(keys.state_key(namespace, agent_id, key))

    def _get_pointer(self, raw_key: bytes) -> StatePointer | None:
        data = self._get(raw_key)
        return None if data is None else _decoded(raw_key, decode_state, data)

    def get(self, namespace: str, agent_id: str, key: str) -> StateRecord | None:
        """The latest record of a key (a tombstone record if deleted), or None."""
        pointer = self.pointer(namespace, agent_id, key)
        return None if pointer is None else self._state(pointer, key, namespace, agent_id)

    def get_version(self, namespace: str, agent_id: str, key: str, version: int) -> VersionRecord | None:
        """A key's record at `version`, or None if that version never existed."""
        raw_key = keys.version_key(namespace, agent_id, key, version)
        data = self._get(raw_key)
        if data is None:
            oldest = self._oldest(namespace, agent_id, key)
            if oldest is not None and 1 <= version < oldest[0]:
                raise _compacted(f"version {version} of key {key!r} of {_agent(namespace, agent_id)}", oldest)
            return None
        return self._version_record(_decoded(raw_key, decode_version, data), key, namespace, agent_id)

    def version_pointer(self, namespace: str, agent_id: str, key: str, version: int) -> VersionPointer | None:
        """A key's VERSIONS record at `version` as stored (where its value is), or None."""
        raw_key = keys.version_key(namespace, agent_id, key, version)
        data = self._get(raw_key)
        return None if data is None else _decoded(raw_key, decode_version, data)

    def versions_of(
        self, namespace: str, agent_id: str, key: str, from_version: int = 1
    ) -> Iterator[tuple[int, VersionPointer]]:
        """A key's VERSIONS records as stored (where each value is), oldest first, lazily."""
        base = keys.version_key(namespace, agent_id, key, 0)[: -len(keys.u64(0))]
        what = f"the history of key {key!r} of {_agent(namespace, agent_id)}"
        for raw_key, data in reading.scan(self._snapshot, base, what, base + keys.u64(from_version)):
            pointer = _decoded(raw_key, decode_version, data)
            if pointer.commit_ts > self.last_commit_ts:
                return  # written after this view, as every later version
            yield keys.read_u64(raw_key, len(base)), pointer

    def _oldest(self, namespace: str, agent_id: str, key: str) -> tuple[int, VersionPointer] | None:
        """A key's oldest kept version (above 1 once retention let older ones go), or None."""
        oldest = next(self.versions_of(namespace, agent_id, key), None)
        self._check(namespace, f"the history of key {key!r} of {_agent(namespace, agent_id)}")
        return oldest

    def horizon(self, namespace: str) -> int:
        """The commit_ts from which the namespace's history is whole (0: all of it is)."""
        data = self._get(keys.HORIZONS + keys.name(namespace))
        return 0 if data is None else keys.read_u64(data)

    def check_history(self, namespace: str, start_ts: int | None, what: str) -> None:
        """HistoryCompactedError if history of `namespace` from `start_ts` (None: the
        beginning) is needed and retention let part of it go."""
        horizon = self.horizon(namespace)
        if horizon > 1 and (start_ts or 1) < horizon:
            raise HistoryCompactedError(
                f"{what} from commit_ts {start_ts or 1} needs history that retention compacted: the history "
                f"of namespace {namespace!r} is whole from commit_ts {horizon} on (its horizon); ask "
                f"from there",
                horizon,
            )

    def first_event_from(self, commit_ts: int) -> Event | None:
        """The first event of the log at or after `commit_ts`, its heads only (no values)."""
        for event in self.events(commit_ts, values=False):
            return event
        return None

    def namespaces(self) -> Iterator[str]:
        """Every namespace that has an agent listed in AGENTS, one seek each."""
        start: bytes | None = keys.AGENTS
        while start is not None:
            found = next(iter(reading.scan(self._snapshot, keys.AGENTS, "the AGENTS table", start)), None)
            if found is None:
                return
            namespace, _pos = keys.read_name(found[0], 1)
            yield namespace
            start = keys.prefix_end(keys.agents_prefix(namespace))

    def _version_record(
        self, pointer: VersionPointer, key: str, namespace: str, agent_id: str
    ) -> VersionRecord:
        what = f"key {key!r} of {_agent(namespace, agent_id)}"
        value = self._value(pointer.commit_ts, pointer.slot, pointer.flags, what)
        return VersionRecord(pointer.commit_ts, value)

    def scan(self, namespace: str, agent_id: str, prefix: str = "") -> Iterator[tuple[str, StateRecord]]:
        """Live (non-deleted) keys of an agent starting with `prefix`, in byte order."""
        return self.scan_at(namespace, agent_id, prefix)

    def scan_at(
        self,
        namespace: str,
        agent_id: str,
        prefix: str = "",
        at_ts: int | None = None,
        after: str | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[str, StateRecord]]:
        """Keys of an agent starting with `prefix` that held a value as of commit
        `at_ts` (None: this view's last commit), in byte order (descending if
        `reverse`), lazily.

        Each comes with the record of its newest version committed at or before
        `at_ts`; keys created after `at_ts` are left out and keys deleted after it
        are in, with their old value. `after` resumes strictly after that key in
        the scan's order (below it when reversed): one seek, however many keys
        come before it. `at_ts` 0 is before any commit: nothing.
        """
        if at_ts is not None and at_ts <= 0:
            return
        agent = keys.agent_prefix(keys.STATE, namespace, agent_id)
        what = f"the keys of {_agent(namespace, agent_id)}"
        last = self.last_commit_ts
        for raw_key, data in self._listing(agent, prefix, after, reverse, what):
            found: StatePointer | None = _decoded(raw_key, decode_state, data)
            key = raw_key[len(agent) :].decode("utf-8")
            if found is not None and found.commit_ts > last:  # rewritten since: as of this view
                found = self.pointer(namespace, agent_id, key)
            if found is None:
                continue  # created after this view
            record: StateRecord | None = None
            if at_ts is not None and found.commit_ts > at_ts:
                record = self._as_of(namespace, agent_id, key, found, at_ts)
            elif not found.deleted:
                record = self._state(found, key, namespace, agent_id)
            if record is not None and record.value is not None:
                self._check(namespace, what)
                yield key, record
        self._check(namespace, what)

    def agents(
        self, namespace: str, prefix: str = "", after: str | None = None, reverse: bool = False
    ) -> Iterator[str]:
        """The agents of `namespace` whose id starts with `prefix` and that hold a live key,
        in byte order of agent_id (descending if `reverse`), strictly after `after` in that
        order, lazily. Reads the AGENTS index, and of each agent its keys only up to the
        first live one (usually the first)."""
        base = keys.agents_prefix(namespace)
        what = f"the agents of namespace {namespace!r}"
        for raw_key, _data in self._listing(base, prefix, after, reverse, what):
            agent_id = raw_key[len(base) :].decode("utf-8")
            if self.has_live_key(namespace, agent_id):
                self._check(namespace, what)
                yield agent_id
        self._check(namespace, what)

    def has_live_key(self, namespace: str, agent_id: str) -> bool:
        """Whether the agent holds at least one live (not deleted) key."""
        agent = keys.agent_prefix(keys.STATE, namespace, agent_id)
        what = f"the keys of {_agent(namespace, agent_id)}"
        for raw_key, data in reading.scan(self._snapshot, agent, what):
            pointer: StatePointer | None = _decoded(raw_key, decode_state, data)
            if pointer is not None and pointer.commit_ts > self.last_commit_ts:
                pointer = self._get_pointer(raw_key)
            if pointer is not None and not pointer.deleted:
                return True
        self._check(namespace, what)
        return False

    def _listing(
        self, base: bytes, prefix: str, after: str | None, reverse: bool, what: str
    ) -> Iterator[tuple[bytes, bytes]]:
        """The records under `base` + `prefix` (names last in their keys) strictly after the
        name `after` in the listing's order (below it if `reverse`): one seek to start."""
        lower = base + prefix.encode("utf-8")
        start: bytes | None = None
        skip: bytes | None = None
        if after is not None:
            cursor = base + after.encode("utf-8")
            if not reverse:
                # b"\x00" makes the smallest storage key after `after`'s own.
                start = max(lower, cursor + b"\x00")
            elif cursor >= lower:
                start, skip = cursor, cursor  # the last key <= cursor, `after` itself left out
            else:
                return  # every name under the prefix is above the cursor
        for raw_key, data in reading.scan(self._snapshot, lower, what, start, reverse=reverse):
            if raw_key != skip:
                yield raw_key, data

    def record_at(self, namespace: str, agent_id: str, key: str, at_ts: int) -> StateRecord | None:
        """A key's record as of commit `at_ts`: its newest version committed at or
        before it (a tombstone record if that was a delete), or None if the key
        had not been written by then."""
        latest = self.pointer(namespace, agent_id, key)
        return None if latest is None else self._as_of(namespace, agent_id, key, latest, at_ts)

    def _as_of(
        self, namespace: str, agent_id: str, key: str, latest: StatePointer, at_ts: int
    ) -> StateRecord | None:
        if latest.commit_ts <= at_ts:
            return self._state(latest, key, namespace, agent_id)
        # The oldest version kept: retention may have let older ones go.
        oldest = self._oldest(namespace, agent_id, key)
        if oldest is None:
            raise DataLossError(
                f"key {key!r} of {_agent(namespace, agent_id)} has no version history: the data directory "
                f"is damaged; {reading.ADVICE}"
            )
        if oldest[1].commit_ts > at_ts:
            if oldest[0] == 1:
                return None  # the key was written after at_ts
            raise _compacted(f"key {key!r} of {_agent(namespace, agent_id)} as of commit_ts {at_ts}", oldest)
        # A key's commit_ts grow with its version. Step back from the latest
        # doubling the stride, so a recent `at_ts` costs a read or two even on
        # a long history, then bisect the bracket found.
        newer = latest.version  # its commit_ts is after at_ts
        older = oldest[0]  # the newest version known at or before at_ts
        found: VersionPointer | None = oldest[1]  # its record
        stride = 1
        while newer - stride > older:
            probe = newer - stride
            record = self._version(namespace, agent_id, key, probe)
            if record.commit_ts <= at_ts:
                older, found = probe, record
                break
            newer = probe
            stride *= 2
        while newer - older > 1:
            probe = (older + newer) // 2
            record = self._version(namespace, agent_id, key, probe)
            if record.commit_ts <= at_ts:
                older, found = probe, record
            else:
                newer = probe
        if found is None:
            return None
        resolved = self._version_record(found, key, namespace, agent_id)
        return StateRecord(older, resolved.commit_ts, resolved.value)

    def _version(self, namespace: str, agent_id: str, key: str, version: int) -> VersionPointer:
        raw_key = keys.version_key(namespace, agent_id, key, version)
        data = self._get(raw_key)
        record = None if data is None else _decoded(raw_key, decode_version, data)
        if record is None:  # versions 1..latest are all kept: the store is damaged
            raise DataLossError(
                f"version {version} of key {key!r} of {_agent(namespace, agent_id)} is missing from "
                f"the history: the data directory is damaged; {reading.ADVICE}"
            )
        return record

    def history(
        self, namespace: str, agent_id: str, key: str, from_version: int | None = None
    ) -> Iterator[tuple[int, VersionRecord]]:
        """A key's versions newest first, lazily, as (version, record), from
        `from_version` down (None: from the latest). Nothing if never written."""
        base = keys.version_key(namespace, agent_id, key, 0)[: -len(keys.u64(0))]
        start = None if from_version is None else base + keys.u64(from_version)
        what = f"the history of key {key!r} of {_agent(namespace, agent_id)}"
        for raw_key, data in reading.scan(self._snapshot, base, what, start, reverse=True):
            pointer = _decoded(raw_key, decode_version, data)
            if pointer.commit_ts > self.last_commit_ts:
                continue  # written after this view
            record = self._version_record(pointer, key, namespace, agent_id)
            self._check(namespace, what)
            yield keys.read_u64(raw_key, len(base)), record
        oldest = self._oldest(namespace, agent_id, key)  # checks the fence too
        if oldest is not None and oldest[0] > 1:  # the listing reached what retention let go
            raise _compacted(f"the history of key {key!r} of {_agent(namespace, agent_id)}", oldest)

    def committed_at_ms(self, namespace: str, agent_id: str, commit_ts: int) -> int | None:
        """Wall-clock time of commit `commit_ts`, from the agent's event index;
        None if that commit did not touch the agent."""
        raw_key = keys.agent_event_key(namespace, agent_id, commit_ts)
        data = self._get(raw_key)
        return None if data is None else _decoded(raw_key, committed_at_ms, data)

    def replay(
        self,
        namespace: str,
        agent_id: str,
        start_ts: int | None = None,
        end_ts: int | None = None,
    ) -> Iterator[Event]:
        """One agent's events in commit_ts order, lazily, from its own index, up to `end_ts`
        (None: this view's last commit). Should a purge or retention pass of the namespace
        come meanwhile, it goes on on the store's newest view from the next commit_ts, which
        raises HistoryCompactedError if retention took what was still to come."""
        what = f"the event index of {_agent(namespace, agent_id)}"
        view = self
        while True:
            view.check_history(namespace, start_ts, f"a replay of {_agent(namespace, agent_id)}")
            resume = yield from view._replay_on(namespace, agent_id, start_ts, end_ts, what)
            if resume is None:
                return
            start_ts, view = resume, view._renewed(namespace, what)

    def _replay_on(
        self, namespace: str, agent_id: str, start_ts: int | None, end_ts: int | None, what: str
    ) -> Generator[Event, None, int | None]:
        """`replay` on this view; returns None when done, or the commit_ts to go on from
        if a purge or retention pass of the namespace came meanwhile."""
        agent = keys.agent_prefix(keys.AGENT_EVENTS, namespace, agent_id)
        end = self.last_commit_ts if end_ts is None else min(end_ts, self.last_commit_ts)
        resume = start_ts or 0
        fence, born = self._fence, self._born
        scanned = reading.scan(self._snapshot, agent, what, agent + keys.u64(resume))
        while True:
            chunk: list[tuple[bytes, bytes]] = []
            for raw_key, data in scanned:
                if keys.read_u64(raw_key, len(agent)) > end:
                    break
                chunk.append((raw_key, data))
                if len(chunk) == _REPLAY_CHUNK:
                    break
            if not chunk:
                return resume if self._moved(namespace) else None  # records gone from under it?
            # Each event is handed out only once the fence says nothing was purged or
            # retained since it was read: else the rest is read again on a newer view.
            skip = len(agent)
            try:
                values = self._chunk_values(chunk, skip)
            except DataLossError:
                if self._moved(namespace):  # the index and the values read either side of it
                    return resume
                raise
            for raw_key, data in chunk:
                commit_ts = keys.read_u64(raw_key, skip)
                if values is None:
                    fetch = self._fetch(commit_ts)
                else:
                    fetch = _looked_up(values, keys.VALUES + raw_key[skip:])
                try:
                    event = decode_slice(namespace, agent_id, commit_ts, data, fetch)
                except keys.DECODE_ERRORS as exc:
                    if self._moved(namespace):  # its values went after its record was read
                        return resume
                    raise _undecodable(raw_key, exc) from exc
                if fence.seq != born and self._moved(namespace):
                    return resume
                yield event
                resume = commit_ts + 1
            if fence.seq != born and self._moved(namespace):  # records gone from under the scan
                return resume
            if len(chunk) < _REPLAY_CHUNK:
                return None

    def _chunk_values(self, chunk: list[tuple[bytes, bytes]], skip: int) -> dict[bytes, bytes] | None:
        """The values of a run of an agent's AGENT_EVENTS records (each key's commit_ts at
        `skip`), where its commits are most of that stretch of the log: one scan of VALUES.
        None where they are sparse: then one read each."""
        first, last = keys.read_u64(chunk[0][0], skip), keys.read_u64(chunk[-1][0], skip)
        if last - first >= 2 * len(chunk):
            return None
        values: dict[bytes, bytes] = {}
        end = keys.value_key(last + 1, 0)
        for key, data in reading.scan(
            self._snapshot, keys.VALUES, "the log's values", keys.value_key(first, 0)
        ):
            if key >= end:
                break
            values[key] = data
        return values

    def events(self, start_ts: int = 1, values: bool = True) -> Iterator[Event]:
        """The global log in commit_ts order; without `values`, the op heads only (each value
        empty but of its kind, None for a delete), which is all retention needs."""
        view = self
        while True:
            resume = yield from view._events_on(start_ts, values)
            if resume is None:
                return
            start_ts, view = resume, view._renewed(None, "the event log")

    def _events_on(self, start_ts: int, values: bool) -> Generator[Event, None, int | None]:
        """`events` on this view; returns None when done, or the commit_ts to go on from
        if a purge or retention pass rewrote the log meanwhile."""
        resume = start_ts
        for raw_key, data in reading.scan(
            self._snapshot, keys.EVENTS, "the event log", keys.event_key(start_ts)
        ):
            commit_ts = keys.read_u64(raw_key, 1)
            if commit_ts > self.last_commit_ts:
                break
            fetch = self._fetch(commit_ts) if values else None
            try:
                event = _decoded(raw_key, decode_event, commit_ts, data, fetch)
            except DataLossError:
                if self._fence.seq != self._born:  # heads and values read either side of it
                    return commit_ts
                raise
            if self._fence.seq != self._born:
                return commit_ts
            yield event
            resume = commit_ts + 1
        return resume if self._fence.seq != self._born else None

    def states(self) -> Iterator[tuple[bytes, StateRecord]]:
        """Every state record (tombstones included) with its value, keyed by storage key: the
        whole table, as tests compare stores before and after (nothing in the daemon needs it)."""
        for raw_key, data in reading.scan(self._snapshot, keys.STATE, "the STATE table"):
            namespace, agent_id, key = keys.split_state_key(raw_key)
            pointer: StatePointer | None = _decoded(raw_key, decode_state, data)
            if pointer is not None and pointer.commit_ts > self.last_commit_ts:
                pointer = self._get_pointer(raw_key)
            if pointer is not None:
                yield raw_key, self._state(pointer, key, namespace, agent_id)

    def versions(self) -> Iterator[tuple[bytes, VersionRecord]]:
        """Every version record with its value, keyed by storage key: the whole table, as tests
        compare stores before and after (nothing in the daemon needs it)."""
        for raw_key, data in reading.scan(self._snapshot, keys.VERSIONS, "the VERSIONS table"):
            namespace, agent_id, key, _version = keys.split_version_key(raw_key)
            pointer = _decoded(raw_key, decode_version, data)
            if pointer.commit_ts <= self.last_commit_ts:
                yield raw_key, self._version_record(pointer, key, namespace, agent_id)


def _decoded(raw_key: bytes, decode: Callable[..., T], *args: Any) -> T:
    """`decode(*args)`, or DataLossError naming the record (at `raw_key`) if it does not decode."""
    try:
        return decode(*args)
    except keys.DECODE_ERRORS as exc:
        raise _undecodable(raw_key, exc) from exc


def _looked_up(values: dict[bytes, bytes], prefix: bytes) -> Callable[[int], bytes | None]:
    """Reads the values of one commit (its VALUES keys begin with `prefix`) from `values`."""
    return lambda slot: values.get(prefix + keys.slot_bytes(slot))


def _undecodable(raw_key: bytes, exc: Exception) -> DataLossError:
    return DataLossError(
        f"the record of {keys.describe_key(raw_key)} does not decode ({exc}): the data directory is "
        f"damaged; {reading.ADVICE}"
    )
