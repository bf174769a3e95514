"""Every key layout of the store, in one place.

One RocksDB keyspace; the first byte names the table. Names are encoded as
a 2-byte big-endian length followed by their UTF-8 bytes, so no two distinct
(namespace, agent_id, key) triples can share a storage key. Counters are
8-byte big-endian, so byte order is numeric order.

  META          0x00 name                                   -> u64
  STATE         0x01 L(ns) L(agent) key                      -> StatePointer
  VERSIONS      0x02 L(ns) L(agent) L(key) u64(version)      -> VersionPointer
  EVENTS        0x03 u64(commit_ts)                          -> Event (op heads; values in VALUES)
  AGENT_EVENTS  0x04 L(ns) L(agent) u64(commit_ts)           -> the agent's op heads of that event
  TXNS          0x05 txn_id (UTF-8)                          -> u64(commit_ts)
  AGENTS        0x06 L(ns) agent_id (UTF-8)                  -> b"" (schema 2)
  HORIZONS      0x07 L(ns)                                   -> u64 horizon, u64 cursor (retention)
  VALUES        0x08 u64(commit_ts) u32(slot)                -> the value of that op (schema 3)

TXNS indexes the log by transaction id, so a retried commit (same id) is
answered with its first commit_ts, even after a restart. AGENTS lists every
agent that was ever written, with the agent_id last and unprefixed, so that
the agents of a namespace are listed in lexicographic order, by prefix,
without reading their keys.

In STATE the key comes last and unprefixed so that a key-prefix scan is a
RocksDB prefix scan in lexicographic (UTF-8 byte) order.
"""

from __future__ import annotations

import functools
import struct

META = b"\x00"
STATE = b"\x01"
VERSIONS = b"\x02"
EVENTS = b"\x03"
AGENT_EVENTS = b"\x04"
TXNS = b"\x05"
AGENTS = b"\x06"
HORIZONS = b"\x07"
VALUES = b"\x08"

META_LAST_COMMIT_TS = META + b"last_commit_ts"
META_SCHEMA = META + b"schema_version"
# Set by `statehoused rebuild` until it finishes; the daemon refuses to start meanwhile.
META_REBUILD_IN_PROGRESS = META + b"rebuild_in_progress"
# The commit_ts of a purge whose bytes may still be in the files: set by the purge's own
# write, cleared once a compaction after it has run (see actors/compactor.py).
META_COMPACTION_OWED = META + b"compaction_owed"
# Retention (storage/retention.py): events up to this commit_ts were checked against the
# `versions` limits (and the limits they were checked with).
META_RETAINED_THROUGH = META + b"retained_through"
# 2 added the AGENTS table; 3 stores each value once, in VALUES (storage/records.py).
# A store of an older schema is upgraded in place when a daemon opens it (storage/upgrade.py).
SCHEMA_VERSION = 3

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


def u64(n: int) -> bytes:
    return _U64.pack(n)


def read_u64(data: bytes, offset: int = 0) -> int:
    return _U64.unpack_from(data, offset)[0]


def read_u32(data: bytes, offset: int = 0) -> int:
    return _U32.unpack_from(data, offset)[0]


def name(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _U16.pack(len(raw)) + raw


@functools.lru_cache(maxsize=4096)  # every record of a commit starts with one of these
def agent_prefix(table: bytes, namespace: str, agent_id: str) -> bytes:
    return table + name(namespace) + name(agent_id)


def state_key(namespace: str, agent_id: str, key: str) -> bytes:
    return agent_prefix(STATE, namespace, agent_id) + key.encode("utf-8")


def version_key(namespace: str, agent_id: str, key: str, version: int) -> bytes:
    return agent_prefix(VERSIONS, namespace, agent_id) + name(key) + _U64.pack(version)


def event_key(commit_ts: int) -> bytes:
    return EVENTS + _U64.pack(commit_ts)


def agent_event_key(namespace: str, agent_id: str, commit_ts: int) -> bytes:
    return agent_prefix(AGENT_EVENTS, namespace, agent_id) + _U64.pack(commit_ts)


def value_key(commit_ts: int, slot: int) -> bytes:
    return VALUES + _U64.pack(commit_ts) + _U32.pack(slot)


slot_bytes = _U32.pack  # the last 4 bytes of a VALUES key


def txn_key(txn_id: str) -> bytes:
    return TXNS + txn_id.encode("utf-8")


def agents_prefix(namespace: str) -> bytes:
    return AGENTS + name(namespace)


def agent_key(namespace: str, agent_id: str) -> bytes:
    return agents_prefix(namespace) + agent_id.encode("utf-8")


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix`."""
    raw = bytearray(prefix)
    while raw:
        if raw[-1] != 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return None


# --- reading keys back (for messages, verify and rebuild) ------------------------------------

# What decoding a damaged or foreign key may raise.
DECODE_ERRORS = (struct.error, UnicodeDecodeError, ValueError, IndexError)

# The tables by their first byte, named as verify and error messages name them.
TABLE_NAMES = {
    META: "META",
    STATE: "STATE",
    VERSIONS: "VERSIONS",
    EVENTS: "EVENTS",
    AGENT_EVENTS: "AGENT_EVENTS",
    TXNS: "TXNS",
    AGENTS: "AGENTS",
    HORIZONS: "HORIZONS",
    VALUES: "VALUES",
}


def read_name(raw: bytes, pos: int) -> tuple[str, int]:
    (size,) = _U16.unpack_from(raw, pos)
    end = pos + 2 + size
    if end > len(raw):
        raise ValueError("name runs past the end of the key")
    return raw[pos + 2 : end].decode("utf-8"), end


def _read_counter(raw: bytes, pos: int) -> int:
    if len(raw) != pos + _U64.size:
        raise ValueError("bad counter length")
    return read_u64(raw, pos)


def split_state_key(raw: bytes) -> tuple[str, str, str]:
    namespace, pos = read_name(raw, 1)
    agent_id, pos = read_name(raw, pos)
    return namespace, agent_id, raw[pos:].decode("utf-8")


def split_version_key(raw: bytes) -> tuple[str, str, str, int]:
    namespace, pos = read_name(raw, 1)
    agent_id, pos = read_name(raw, pos)
    key, pos = read_name(raw, pos)
    return namespace, agent_id, key, _read_counter(raw, pos)


def split_agent_key(raw: bytes) -> tuple[str, str]:
    namespace, pos = read_name(raw, 1)
    return namespace, raw[pos:].decode("utf-8")


def split_agent_event_key(raw: bytes) -> tuple[str, str, int]:
    namespace, pos = read_name(raw, 1)
    agent_id, pos = read_name(raw, pos)
    return namespace, agent_id, _read_counter(raw, pos)


def event_commit_ts(raw: bytes) -> int:
    """The commit_ts of an EVENTS key (ValueError if it is not one)."""
    return _read_counter(raw, 1)


def describe_key(raw: bytes) -> str:
    """A storage key in human terms: namespace/agent/key/version, or commit_ts."""
    table = raw[:1]
    try:
        if table == META:
            return f"name={raw[1:].decode('utf-8')!r}"
        if table == STATE:
            ns, agent, key = split_state_key(raw)
            return f"namespace={ns!r} agent={agent!r} key={key!r}"
        if table == VERSIONS:
            ns, agent, key, version = split_version_key(raw)
            return f"namespace={ns!r} agent={agent!r} key={key!r} version={version}"
        if table == EVENTS:
            return f"commit_ts={event_commit_ts(raw)}"
        if table == AGENT_EVENTS:
            ns, agent, ts = split_agent_event_key(raw)
            return f"namespace={ns!r} agent={agent!r} commit_ts={ts}"
        if table == TXNS:
            return f"txn_id={raw[1:].decode('utf-8')!r}"
        if table == AGENTS:
            ns, agent = split_agent_key(raw)
            return f"namespace={ns!r} agent={agent!r}"
        if table == VALUES and len(raw) == 13:
            return f"commit_ts={read_u64(raw, 1)} slot={read_u32(raw, 9)}"
        if table == HORIZONS:
            ns, _pos = read_name(raw, 1)
            return f"namespace={ns!r}"
    except DECODE_ERRORS:
        pass
    return f"undecodable key 0x{raw.hex()}"
