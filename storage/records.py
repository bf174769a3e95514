"""Binary codecs for the records stored under each table of `storage.keys`.

Values are opaque bytes here: canonical JSON (validated above this layer),
or a `Blob`, a value the writer gave as raw bytes, which its records mark
with the BLOB flag so that it is read back as bytes; `None` marks a
tombstone. All integers are big-endian fixed width.

A purge (`EventOp.purge`) is an op of its own in the log: the agent's keys
starting with `key` were removed with their history, at that commit. The
events that wrote them before are rewritten without those ops and marked
`scrubbed` (EVENT_SCRUBBED), so that one left with no op is still known for
what it is.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

_TOMBSTONE = 1
_BLOB = 2
_PURGE = 4
_EVENT_FORMAT = 1
_EVENT_SCRUBBED = 2  # the format byte of an event a purge removed ops from

_STATE = struct.Struct(">BQQ")  # flags, version, commit_ts
_VERSION = struct.Struct(">BQ")  # flags, commit_ts
_EVENT_HEAD = struct.Struct(">BQI")  # format, committed_at_ms, op count
_OP_TAIL = struct.Struct(">QBI")  # version, flags, value length
_U16 = struct.Struct(">H")


class Blob(bytes):
    """A value written as raw bytes (not JSON): stored with the BLOB flag, read back as a Blob."""

    __slots__ = ()


def _flags(value: bytes | None) -> int:
    if value is None:
        return _TOMBSTONE
    return _BLOB if type(value) is Blob else 0


def _value(flags: int, data: bytes) -> bytes | None:
    if flags & _TOMBSTONE:
        return None
    return Blob(data) if flags & _BLOB else bytes(data)


class StateRecord(NamedTuple):
    """The latest version of one key (a tombstone when value is None)."""

    version: int
    commit_ts: int
    value: bytes | None


class VersionRecord(NamedTuple):
    """One historical version of a key."""

    commit_ts: int
    value: bytes | None


class EventOp(NamedTuple):
    """One write (value) or delete (value None) inside a committed event, or a purge
    (`purge`: the agent's keys starting with `key` and their history removed; version 0)."""

    namespace: str
    agent_id: str
    key: str
    version: int
    value: bytes | None
    purge: bool = False


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


def encode_state(record: StateRecord) -> bytes:
    return _STATE.pack(_flags(record.value), record.version, record.commit_ts) + (record.value or b"")


def decode_state(data: bytes) -> StateRecord:
    flags, version, commit_ts = _STATE.unpack_from(data)
    return StateRecord(version, commit_ts, _value(flags, data[_STATE.size :]))


def encode_version(record: VersionRecord) -> bytes:
    return _VERSION.pack(_flags(record.value), record.commit_ts) + (record.value or b"")


def decode_version(data: bytes) -> VersionRecord:
    flags, commit_ts = _VERSION.unpack_from(data)
    return VersionRecord(commit_ts, _value(flags, data[_VERSION.size :]))


def _text(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _U16.pack(len(raw)) + raw


def _read_text(data: bytes, pos: int) -> tuple[str, int]:
    (size,) = _U16.unpack_from(data, pos)
    pos += 2
    return data[pos : pos + size].decode("utf-8"), pos + size


def _encode_op_tail(parts: list[bytes], op: EventOp) -> None:
    value = op.value
    flags = _flags(value) | (_PURGE if op.purge else 0)
    parts.append(_OP_TAIL.pack(op.version, flags, len(value or b"")))
    if value:
        parts.append(value)


def _decode_op_tail(data: bytes, pos: int) -> tuple[int, bytes | None, bool, int]:
    version, flags, size = _OP_TAIL.unpack_from(data, pos)
    pos += _OP_TAIL.size
    return version, _value(flags, data[pos : pos + size]), bool(flags & _PURGE), pos + size


def _head(event: Event) -> bytes:
    kind = _EVENT_SCRUBBED if event.scrubbed else _EVENT_FORMAT
    return _EVENT_HEAD.pack(kind, event.committed_at_ms, len(event.ops))


def encode_event(event: Event) -> bytes:
    """Encode a global-log event (each op names its namespace and agent)."""
    parts = [_head(event), _text(event.txn_id)]
    for op in event.ops:
        parts += (_text(op.namespace), _text(op.agent_id), _text(op.key))
        _encode_op_tail(parts, op)
    return b"".join(parts)


def op_count(data: bytes) -> int:
    """How many ops an encoded event or agent slice holds, read from its head alone."""
    return int(_EVENT_HEAD.unpack_from(data)[2])


def emptied(commit_ts: int, data: bytes) -> Event:
    """An encoded event with every op removed (a purge took them all): its head alone decoded."""
    _fmt, at_ms, _count = _EVENT_HEAD.unpack_from(data)
    txn_id, _pos = _read_text(data, _EVENT_HEAD.size)
    return Event(commit_ts, txn_id, at_ms, (), True)


def decode_event(commit_ts: int, data: bytes) -> Event:
    fmt, at_ms, count = _EVENT_HEAD.unpack_from(data)
    txn_id, pos = _read_text(data, _EVENT_HEAD.size)
    ops = []
    for _ in range(count):
        namespace, pos = _read_text(data, pos)
        agent_id, pos = _read_text(data, pos)
        key, pos = _read_text(data, pos)
        version, value, purge, pos = _decode_op_tail(data, pos)
        ops.append(EventOp(namespace, agent_id, key, version, value, purge))
    return Event(commit_ts, txn_id, at_ms, tuple(ops), fmt == _EVENT_SCRUBBED)


def encode_agent_event(event: Event) -> bytes:
    """Encode one agent's slice of an event; namespace/agent live in the key."""
    parts = [_head(event), _text(event.txn_id)]
    for op in event.ops:
        parts.append(_text(op.key))
        _encode_op_tail(parts, op)
    return b"".join(parts)


def decode_agent_event(namespace: str, agent_id: str, commit_ts: int, data: bytes) -> Event:
    # Replay decodes one of these per event, so the field reads are inlined.
    fmt, at_ms, count = _EVENT_HEAD.unpack_from(data)
    pos = _EVENT_HEAD.size
    (size,) = _U16.unpack_from(data, pos)
    pos += 2
    txn_id = data[pos : pos + size].decode("utf-8")
    pos += size
    ops = []
    unpack_u16, unpack_tail, tail_size = _U16.unpack_from, _OP_TAIL.unpack_from, _OP_TAIL.size
    for _ in range(count):
        (size,) = unpack_u16(data, pos)
        pos += 2
        key = data[pos : pos + size].decode("utf-8")
        pos += size
        version, flags, size = unpack_tail(data, pos)
        pos += tail_size
        value = (
            None
            if flags & _TOMBSTONE
            else Blob(data[pos : pos + size])
            if flags & _BLOB
            else data[pos : pos + size]
        )
        pos += size
        ops.append(EventOp(namespace, agent_id, key, version, value, bool(flags & _PURGE)))
    return Event(commit_ts, txn_id, at_ms, tuple(ops), fmt == _EVENT_SCRUBBED)
