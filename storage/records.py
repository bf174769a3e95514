"""Binary codecs for the records stored under each table of `storage.keys`.

Each value is stored once, in the event that wrote it (the log, the source
of truth). Every other record points to it: STATE and VERSIONS hold the
commit_ts and the op's *slot* (its index in that event), AGENT_EVENTS the
slots of the agent's ops. An encoded event begins with a table of its ops'
offsets, so that one value is sliced out of it without decoding the rest.

Values are opaque bytes here: canonical JSON (validated above this layer),
or a `Blob`, a value the writer gave as raw bytes, which its op marks with
the BLOB flag so that it is read back as bytes; `None` marks a tombstone.
All integers are big-endian fixed width.

A purge (`EventOp.purge`) is an op of its own in the log: the agent's keys
starting with `key` were removed with their history, at that commit. The
events that wrote them before are rewritten without those ops and marked
`scrubbed`; the ops left keep their slots, so what points to them stays
right. Events of schema 2 and before (formats 1 and 2, no slots, no
offsets) are read only to upgrade a store (`decode_legacy_event`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

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
_OP_TAIL = struct.Struct(">QBII")  # version, flags, slot, value length
_LEGACY_OP_TAIL = struct.Struct(">QBI")  # version, flags, value length
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


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
    `slot`: its index in the event as first written, where that is not its position in
    `Event.ops` (ops left by a purge); -1 otherwise (and in an agent's slice)."""

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
    return _STATE.pack(pointer.flags, pointer.version, pointer.commit_ts, pointer.slot)


def decode_state(data: bytes) -> StatePointer:
    if len(data) != _STATE.size:
        raise ValueError(f"a STATE record has {_STATE.size} bytes, not {len(data)}")
    flags, version, commit_ts, slot = _STATE.unpack(data)
    return StatePointer(version, commit_ts, slot, flags)


def encode_version(pointer: VersionPointer) -> bytes:
    return _VERSION.pack(pointer.flags, pointer.commit_ts, pointer.slot)


def decode_version(data: bytes) -> VersionPointer:
    if len(data) != _VERSION.size:
        raise ValueError(f"a VERSIONS record has {_VERSION.size} bytes, not {len(data)}")
    flags, commit_ts, slot = _VERSION.unpack(data)
    return VersionPointer(commit_ts, slot, flags)


def encode_slots(numbers: Sequence[int]) -> bytes:
    """An AGENT_EVENTS record: the slots of the agent's ops in the event."""
    return struct.pack(f">{len(numbers)}I", *numbers)


def decode_slots(data: bytes) -> list[int]:
    if len(data) % 4:
        raise ValueError(f"an AGENT_EVENTS record has a multiple of 4 bytes, not {len(data)}")
    return list(struct.unpack(f">{len(data) // 4}I", data))


def _text(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _U16.pack(len(raw)) + raw


def _read_text(data: bytes, pos: int) -> tuple[str, int]:
    (size,) = _U16.unpack_from(data, pos)
    pos += 2
    end = pos + size
    if end > len(data):
        raise ValueError("a name runs past the end of the record")
    return data[pos:end].decode("utf-8"), end


def encode_event(event: Event) -> bytes:
    """Encode a global-log event: head, transaction id, op offsets, then each op (names,
    version, flags, slot, value)."""
    kind = _EVENT_SCRUBBED if event.scrubbed else _EVENT_FORMAT
    txn = _text(event.txn_id)
    ops = []
    for slot, op in zip(slots(event), event.ops, strict=True):
        value = op.value or b""
        flags = value_flags(op.value) | (_PURGE if op.purge else 0)
        ops.append(
            b"".join(
                (
                    _text(op.namespace),
                    _text(op.agent_id),
                    _text(op.key),
                    _OP_TAIL.pack(op.version, flags, slot, len(value)),
                    value,
                )
            )
        )
    offsets = []
    pos = _EVENT_HEAD.size + len(txn) + 4 * len(ops)
    for encoded in ops:
        offsets.append(pos)
        pos += len(encoded)
    head = _EVENT_HEAD.pack(kind, event.committed_at_ms, len(ops))
    return b"".join((head, txn, encode_slots(offsets), *ops))


def op_count(data: bytes) -> int:
    """How many ops an encoded event holds, read from its head alone."""
    return int(_EVENT_HEAD.unpack_from(data)[2])


def committed_at_ms(data: bytes) -> int:
    """The wall-clock time of an encoded event, read from its head alone."""
    return int(_EVENT_HEAD.unpack_from(data)[1])


def emptied(commit_ts: int, data: bytes) -> Event:
    """An encoded event with every op removed (a purge took them all): its head alone decoded."""
    _fmt, at_ms, _count = _EVENT_HEAD.unpack_from(data)
    txn_id, _pos = _read_text(data, _EVENT_HEAD.size)
    return Event(commit_ts, txn_id, at_ms, (), True)


def _op_at(data: bytes, pos: int, position: int = -1) -> tuple[EventOp, int]:
    """The op encoded at `pos`, and where it ends; its slot is -1 if it equals `position`."""
    namespace, pos = _read_text(data, pos)
    agent_id, pos = _read_text(data, pos)
    key, pos = _read_text(data, pos)
    version, flags, slot, size = _OP_TAIL.unpack_from(data, pos)
    pos += _OP_TAIL.size
    end = pos + size
    if end > len(data):
        raise ValueError("a value runs past the end of the event")
    value = _value(flags, data[pos:end])
    purge = bool(flags & _PURGE)
    return EventOp(namespace, agent_id, key, version, value, purge, -1 if slot == position else slot), end


def _offsets(data: bytes) -> tuple[int, int, list[int]]:
    """(format, committed_at_ms, the offset of each op) of an encoded event."""
    fmt, at_ms, count = _EVENT_HEAD.unpack_from(data)
    if fmt not in (_EVENT_FORMAT, _EVENT_SCRUBBED):
        raise ValueError(f"unknown event format {fmt}")
    _txn, pos = _read_text(data, _EVENT_HEAD.size)
    return fmt, at_ms, list(struct.unpack_from(f">{count}I", data, pos))


def decode_event(commit_ts: int, data: bytes, only: Sequence[int] | None = None) -> Event:
    """Decode an event; with `only`, just the ops of those slots (an agent's slice), in order.

    ValueError (or struct.error) if the record is not an event, or has no op at a slot asked.
    """
    fmt, at_ms, count = _EVENT_HEAD.unpack_from(data)
    if fmt not in (_EVENT_FORMAT, _EVENT_SCRUBBED):
        raise ValueError(f"unknown event format {fmt}")
    txn_id, pos = _read_text(data, _EVENT_HEAD.size)
    offsets = struct.unpack_from(f">{count}I", data, pos)
    scrubbed = fmt == _EVENT_SCRUBBED
    if only is None:  # every op, checking the record is whole
        ops = []
        end = pos + 4 * count
        for position, offset in enumerate(offsets):
            if offset != end:
                raise ValueError("an op offset does not match the ops before it")
            op, end = _op_at(data, offset, position)
            ops.append(op)
        if end != len(data):
            raise ValueError("trailing bytes after the last op")
        return Event(commit_ts, txn_id, at_ms, tuple(ops), scrubbed)
    picked = tuple(_slot_op(data, offsets, slot)._replace(slot=-1) for slot in only)
    return Event(commit_ts, txn_id, at_ms, picked, scrubbed)


def _slot_op(data: bytes, offsets: Sequence[int], slot: int) -> EventOp:
    """The op at `slot` (its slot set, even where that is its position)."""
    if slot < len(offsets):
        op = _op_at(data, offsets[slot])[0]
        if op.slot == slot:
            return op
    for offset in offsets:  # a scrubbed event's ops keep their slots but not their places
        op = _op_at(data, offset)[0]
        if op.slot == slot:
            return op
    raise ValueError(f"the event has no op at slot {slot}")


def op_value(data: bytes, slot: int) -> bytes | None:
    """The value of the op at `slot` of an encoded event (None for a delete)."""
    _fmt, _at_ms, offsets = _offsets(data)
    return _slot_op(data, offsets, slot).value


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
