"""Binary codecs for the records stored under each table of `storage.keys`.

Each value is stored once, in a VALUES record of its own keyed by the commit
that wrote it and the op's *slot* (its index in that commit's event): the
log is EVENTS (each commit's op heads: names, version, flags, slot) with
VALUES beside it, in commit_ts order, the order they are written in. Every
other record points to a value: STATE and VERSIONS hold the commit_ts and
the slot, and AGENT_EVENTS holds an agent's op heads of each commit. So a
read of one key is two point reads of small records, whatever the size of
the transaction that wrote it.

Values are opaque bytes here: canonical JSON (validated above this layer),
or a `Blob`, a value the writer gave as raw bytes, which its op marks with
the BLOB flag so that it is read back as bytes; `None` marks a tombstone.
All integers are big-endian fixed width.

A purge (`EventOp.purge`) is an op of its own in the log: the agent's keys
starting with `key` were removed with their history, at that commit. The
events that wrote them before are rewritten without those ops and marked
`scrubbed`, and their values deleted; the ops left keep their slots, so
what points to them stays right. Events of schema 2 and before (formats 1
and 2, values inline) are read only to upgrade a store (`decode_legacy_event`).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import NamedTuple

from storage import keys

TOMBSTONE = 1
BLOB = 2
_PURGE = 4
_LEGACY_FORMAT = 1
_LEGACY_SCRUBBED = 2
_EVENT_FORMAT = 3
_EVENT_SCRUBBED = 4  # the format byte of an event a purge removed ops from

_STATE = struct.Struct(">BQQI")  # flags, version, commit_ts, slot
_VERSION = struct.Struct(">BQI")  # flags, commit_ts, slot
_EVENT_HEAD = struct.Struct(">BQI")  # format, committed_at_ms, op count
_OP_TAIL = struct.Struct(">QBI")  # version, flags, slot
_LEGACY_OP_TAIL = struct.Struct(">QBI")  # version, flags, value length
_U16 = struct.Struct(">H")


class Blob(bytes):
    """A value written as raw bytes (not JSON): stored with the BLOB flag, read back as a Blob."""

    __slots__ = ()


def value_flags(value: bytes | None) -> int:
    """The flags that mark how a value is stored: TOMBSTONE for None, BLOB for a Blob."""
    if value is None:
        return TOMBSTONE
    return BLOB if type(value) is Blob else 0


def _value(flags: int, data: bytes) -> bytes | None:
    if flags & TOMBSTONE:
        return None
    return Blob(data) if flags & BLOB else bytes(data)


class StateRecord(NamedTuple):
    """The latest version of one key (a tombstone when value is None), as read."""

    version: int
    commit_ts: int
    value: bytes | None


class VersionRecord(NamedTuple):
    """One historical version of a key, as read."""

    commit_ts: int
    value: bytes | None


class StatePointer(NamedTuple):
    """A STATE record as stored: the latest version of a key and where its value is, op
    `slot` of the event at `commit_ts` (`flags`: TOMBSTONE for a delete, BLOB for bytes)."""

    version: int
    commit_ts: int
    slot: int
    flags: int

    @property
    def deleted(self) -> bool:
        return bool(self.flags & TOMBSTONE)


class VersionPointer(NamedTuple):
    """A VERSIONS record as stored: where one version's value is (see StatePointer); a
    tombstone has the TOMBSTONE flag (`flags & TOMBSTONE`)."""

    commit_ts: int
    slot: int
    flags: int


class EventOp(NamedTuple):
    """One write (value) or delete (value None) inside a committed event, or a purge
    (`purge`: the agent's keys starting with `key` and their history removed; version 0).
    `slot`: its index in the event as first written (its value's place), where that is not
    its position in `Event.ops` (ops left by a purge) or in an agent's slice; -1 otherwise."""

    namespace: str
    agent_id: str
    key: str
    version: int
    value: bytes | None
    purge: bool = False
    slot: int = -1


class Event(NamedTuple):
    """One committed transaction, as stored in the global log. `scrubbed`: a later purge
    removed some of its ops (it may have none left)."""

    commit_ts: int
    txn_id: str
    committed_at_ms: int
    ops: tuple[EventOp, ...]
    scrubbed: bool = False


# An agent's slice of an event (only that agent's ops) has the same shape.
AgentEvent = Event


def slots(event: Event) -> list[int]:
    """The slot of each op of `event`, in order (a new event's ops: their positions)."""
    return [op.slot if op.slot >= 0 else position for position, op in enumerate(event.ops)]


def encode_state(pointer: StatePointer) -> bytes:
    return state_record(*pointer)


def state_record(version: int, commit_ts: int, slot: int, flags: int) -> bytes:
    """`encode_state(StatePointer(version, commit_ts, slot, flags))`, without the tuple (the
    commit path writes one per op)."""
    return _STATE.pack(flags, version, commit_ts, slot)


def decode_state(data: bytes) -> StatePointer:
    if len(data) != _STATE.size:
        raise ValueError(f"a STATE record has {_STATE.size} bytes, not {len(data)}")
    flags, version, commit_ts, slot = _STATE.unpack(data)
    return StatePointer(version, commit_ts, slot, flags)


def encode_version(pointer: VersionPointer) -> bytes:
    return version_record(*pointer)


def version_record(commit_ts: int, slot: int, flags: int) -> bytes:
    """`encode_version(VersionPointer(commit_ts, slot, flags))`, without the tuple."""
    return _VERSION.pack(flags, commit_ts, slot)


def decode_version(data: bytes) -> VersionPointer:
    if len(data) != _VERSION.size:
        raise ValueError(f"a VERSIONS record has {_VERSION.size} bytes, not {len(data)}")
    flags, commit_ts, slot = _VERSION.unpack(data)
    return VersionPointer(commit_ts, slot, flags)


Fetch = Callable[[int], bytes | None]  # slot -> the raw bytes of its VALUES record


def value_records(event: Event, slot_list: list[int] | None = None) -> list[tuple[bytes, bytes]]:
    """The VALUES records of an event: one per op that wrote a value (`slot_list`: its
    `slots`, if the caller has them)."""
    return [
        (keys.value_key(event.commit_ts, slot), bytes(op.value))
        for slot, op in zip(slots(event) if slot_list is None else slot_list, event.ops, strict=True)
        if op.value is not None and not op.purge
    ]


def _text(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _U16.pack(len(raw)) + raw


# `_text` of a namespace, agent or key: the same few names come back commit after commit.
_name = functools.lru_cache(maxsize=16384)(_text)


def _read_text(data: bytes, pos: int) -> tuple[str, int]:
    (size,) = _U16.unpack_from(data, pos)
    pos += 2
    end = pos + size
    if end > len(data):
        raise ValueError("a name runs past the end of the record")
    return data[pos:end].decode("utf-8"), end


def _flags(op: EventOp) -> int:
    """`value_flags(op.value)`, and _PURGE for a purge (written out: two per op per commit)."""
    value = op.value
    flags = TOMBSTONE if value is None else BLOB if type(value) is Blob else 0
    return flags | _PURGE if op.purge else flags


def encode_event(event: Event, slot_list: list[int] | None = None) -> bytes:
    """Encode a global-log event: head, transaction id, then each op's head (namespace, agent,
    key, version, flags, slot). The values are VALUES records (`value_records`)."""
    kind = _EVENT_SCRUBBED if event.scrubbed else _EVENT_FORMAT
    parts = [_EVENT_HEAD.pack(kind, event.committed_at_ms, len(event.ops)), _text(event.txn_id)]
    for slot, op in zip(slots(event) if slot_list is None else slot_list, event.ops, strict=True):
        parts += (_name(op.namespace), _name(op.agent_id), _name(op.key))
        parts.append(_OP_TAIL.pack(op.version, _flags(op), slot))
    return b"".join(parts)


def encode_slice(event: Event, mine: list[tuple[int, EventOp]]) -> bytes:
    """Encode an agent's slice of an event (AGENT_EVENTS): the event's head and the heads of
    the agent's ops `mine` (slot, op); namespace and agent live in the key. Whether the event
    lost ops to a purge or retention is the log's to say, not the slice's."""
    parts = [_EVENT_HEAD.pack(_EVENT_FORMAT, event.committed_at_ms, len(mine)), _text(event.txn_id)]
    for slot, op in mine:
        parts.append(_name(op.key))
        parts.append(_OP_TAIL.pack(op.version, _flags(op), slot))
    return b"".join(parts)


def op_count(data: bytes) -> int:
    """How many ops an encoded event or slice holds, read from its head alone."""
    return int(_EVENT_HEAD.unpack_from(data)[2])


def committed_at_ms(data: bytes) -> int:
    """The wall-clock time of an encoded event or slice, read from its head alone."""
    return int(_EVENT_HEAD.unpack_from(data)[1])


def emptied(commit_ts: int, data: bytes) -> Event:
    """An encoded event with every op removed (a purge took them all): its head alone decoded."""
    _fmt, at_ms, _count = _EVENT_HEAD.unpack_from(data)
    txn_id, _pos = _read_text(data, _EVENT_HEAD.size)
    return Event(commit_ts, txn_id, at_ms, (), True)


def _value_of(flags: int, slot: int, fetch: Fetch | None) -> bytes | None:
    if flags & (TOMBSTONE | _PURGE):
        return None
    if fetch is None:  # heads only: an empty value of the right kind
        return Blob() if flags & BLOB else b""
    raw = fetch(slot)
    if raw is None:
        raise ValueError(f"the value of op {slot} is missing")
    return Blob(raw) if flags & BLOB else raw


def _head(data: bytes) -> tuple[int, int, str, int]:
    """(op count, committed_at_ms, txn_id, where the ops begin) of an event or slice."""
    fmt, at_ms, count = _EVENT_HEAD.unpack_from(data)
    if fmt not in (_EVENT_FORMAT, _EVENT_SCRUBBED):
        raise ValueError(f"unknown event format {fmt}")
    txn_id, pos = _read_text(data, _EVENT_HEAD.size)
    return count, at_ms, txn_id, pos


def decode_event(commit_ts: int, data: bytes, fetch: Fetch | None) -> Event:
    """Decode an event, its values read through `fetch` (None: heads only, each value empty
    but of its kind, for callers that rewrite heads). ValueError (or struct.error) if the
    record is not a whole event, or a value is missing."""
    count, at_ms, txn_id, pos = _head(data)
    ops = []
    unpack_tail, tail_size = _OP_TAIL.unpack_from, _OP_TAIL.size
    for position in range(count):
        namespace, pos = _read_text(data, pos)
        agent_id, pos = _read_text(data, pos)
        key, pos = _read_text(data, pos)
        version, flags, slot = unpack_tail(data, pos)
        pos += tail_size
        value = _value_of(flags, slot, fetch)
        purge = bool(flags & _PURGE)
        ops.append(EventOp(namespace, agent_id, key, version, value, purge, -1 if slot == position else slot))
    if pos != len(data):
        raise ValueError("trailing bytes after the last op")
    return Event(commit_ts, txn_id, at_ms, tuple(ops), data[0] == _EVENT_SCRUBBED)


def decode_slice(namespace: str, agent_id: str, commit_ts: int, data: bytes, fetch: Fetch | None) -> Event:
    """Decode an agent's slice of an event (see decode_event); each op carries its slot."""
    # Replay decodes one of these per event: the reads are inlined.
    fmt, at_ms, count = _EVENT_HEAD.unpack_from(data)
    if fmt not in (_EVENT_FORMAT, _EVENT_SCRUBBED):
        raise ValueError(f"unknown event format {fmt}")
    unpack_u16, unpack_tail, tail_size = _U16.unpack_from, _OP_TAIL.unpack_from, _OP_TAIL.size
    pos = _EVENT_HEAD.size
    (size,) = unpack_u16(data, pos)
    pos += 2
    txn_id = data[pos : pos + size].decode("utf-8")
    pos += size
    ops = []
    for _ in range(count):
        (size,) = unpack_u16(data, pos)
        pos += 2
        key = data[pos : pos + size].decode("utf-8")
        pos += size
        version, flags, slot = unpack_tail(data, pos)
        pos += tail_size
        if flags & (TOMBSTONE | _PURGE):
            value = None
        elif fetch is None:
            value = Blob() if flags & BLOB else b""
        else:
            value = fetch(slot)
            if value is None:
                raise ValueError(f"the value of op {slot} is missing")
            if flags & BLOB:
                value = Blob(value)
        ops.append(EventOp(namespace, agent_id, key, version, value, bool(flags & _PURGE), slot))
    if pos != len(data):
        raise ValueError("trailing bytes after the last op")
    return Event(commit_ts, txn_id, at_ms, tuple(ops), fmt == _EVENT_SCRUBBED)


# --- schema 2 and before: read to upgrade a store ------------------------------------------


def is_legacy_event(data: bytes) -> bool:
    return data[:1] in (bytes([_LEGACY_FORMAT]), bytes([_LEGACY_SCRUBBED]))


def decode_legacy_event(commit_ts: int, data: bytes) -> Event:
    """An event as schema 2 stored it (values inline, no slots); its ops get their positions."""
    fmt, at_ms, count = _EVENT_HEAD.unpack_from(data)
    if fmt not in (_LEGACY_FORMAT, _LEGACY_SCRUBBED):
        raise ValueError(f"not an event of schema 2: format {fmt}")
    txn_id, pos = _read_text(data, _EVENT_HEAD.size)
    ops = []
    for _ in range(count):
        namespace, pos = _read_text(data, pos)
        agent_id, pos = _read_text(data, pos)
        key, pos = _read_text(data, pos)
        version, flags, size = _LEGACY_OP_TAIL.unpack_from(data, pos)
        pos += _LEGACY_OP_TAIL.size
        value = _value(flags, data[pos : pos + size])
        pos += size
        ops.append(EventOp(namespace, agent_id, key, version, value, bool(flags & _PURGE)))
    return Event(commit_ts, txn_id, at_ms, tuple(ops), fmt == _LEGACY_SCRUBBED)


def commit_records(event: Event) -> list[tuple[bytes, bytes]] | None:
    """Every record a new commit's event implies, built in one pass over its ops: what
    `storage.derive.add_event` writes (the event, its values, then `derived_records`), in
    the same order. None for an event that is not a plain new commit (a purge, a scrubbed
    event, ops with slots of their own): those take the general path.

    The commit path's hot loop: the general path walks the ops four times and goes through
    a generator and a dict per event (docs/performance.md, "The ledger's records in one pass").
    """
    if event.scrubbed:
        return None
    commit_ts = event.commit_ts
    ts = keys.u64(commit_ts)
    txn = _text(event.txn_id)
    ops = event.ops
    head = [_EVENT_HEAD.pack(_EVENT_FORMAT, event.committed_at_ms, len(ops)), txn]
    values: list[tuple[bytes, bytes]] = []
    pointers: list[tuple[bytes, bytes]] = []
    # Each agent's op heads (its AGENT_EVENTS slice), in the order agents first appear.
    slices: dict[tuple[str, str], list[bytes]] = {}
    state_head, version_head, value_head = keys.STATE, keys.VERSIONS, keys.VALUES + ts
    agent_prefix, u64, u32 = keys.agent_prefix, keys.u64, keys.slot_bytes
    for slot, op in enumerate(ops):
        namespace, agent_id, key, version, value, purge, own_slot = op
        if purge or own_slot >= 0:
            return None
        if value is None:
            flags = TOMBSTONE
        else:
            flags = BLOB if type(value) is Blob else 0
            values.append((value_head + u32(slot), bytes(value)))
        key_name = _name(key)
        tail = _OP_TAIL.pack(version, flags, slot)
        head += (_name(namespace), _name(agent_id), key_name, tail)
        pointers.append(
            (agent_prefix(state_head, namespace, agent_id) + key.encode("utf-8"),
             _STATE.pack(flags, version, commit_ts, slot))
        )  # fmt: skip
        pointers.append(
            (agent_prefix(version_head, namespace, agent_id) + key_name + u64(version),
             _VERSION.pack(flags, commit_ts, slot))
        )  # fmt: skip
        mine = slices.get((namespace, agent_id))
        if mine is None:
            slices[(namespace, agent_id)] = [key_name, tail]
        else:
            mine += (key_name, tail)
    records = [(keys.EVENTS + ts, b"".join(head)), *values, *pointers]
    for (namespace, agent_id), mine in slices.items():
        slice_head = _EVENT_HEAD.pack(_EVENT_FORMAT, event.committed_at_ms, len(mine) // 2)
        slice_key = agent_prefix(keys.AGENT_EVENTS, namespace, agent_id) + ts
        records.append((slice_key, slice_head + txn + b"".join(mine)))
        records.append((keys.agent_key(namespace, agent_id), b""))
    records.append((keys.txn_key(event.txn_id), ts))
    return records
