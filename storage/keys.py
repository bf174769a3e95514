"""Every key layout of the store, in one place.

One RocksDB keyspace; the first byte names the table. Names are encoded as
a 2-byte big-endian length followed by their UTF-8 bytes, so no two distinct
(namespace, agent_id, key) triples can share a storage key. Counters are
8-byte big-endian, so byte order is numeric order.

  META          0x00 name                                   -> u64
  STATE         0x01 L(ns) L(agent) key                      -> StateRecord
  VERSIONS      0x02 L(ns) L(agent) L(key) u64(version)      -> VersionRecord
  EVENTS        0x03 u64(commit_ts)                          -> Event
  AGENT_EVENTS  0x04 L(ns) L(agent) u64(commit_ts)           -> AgentEvent
  TXNS          0x05 txn_id (UTF-8)                          -> u64(commit_ts)

TXNS indexes the log by transaction id, so a retried commit (same id) is
answered with its first commit_ts, even after a restart.

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

META_LAST_COMMIT_TS = META + b"last_commit_ts"
META_SCHEMA = META + b"schema_version"
# Set by `statehoused rebuild` until it finishes; the daemon refuses to start meanwhile.
META_REBUILD_IN_PROGRESS = META + b"rebuild_in_progress"
SCHEMA_VERSION = 1

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")


def u64(n: int) -> bytes:
    return _U64.pack(n)


def read_u64(data: bytes, offset: int = 0) -> int:
    return _U64.unpack_from(data, offset)[0]


def _name(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _U16.pack(len(raw)) + raw


@functools.lru_cache(maxsize=4096)  # every record of a commit starts with one of these
def agent_prefix(table: bytes, namespace: str, agent_id: str) -> bytes:
    return table + _name(namespace) + _name(agent_id)


def state_key(namespace: str, agent_id: str, key: str) -> bytes:
    return agent_prefix(STATE, namespace, agent_id) + key.encode("utf-8")


def version_key(namespace: str, agent_id: str, key: str, version: int) -> bytes:
    return agent_prefix(VERSIONS, namespace, agent_id) + _name(key) + _U64.pack(version)


def event_key(commit_ts: int) -> bytes:
    return EVENTS + _U64.pack(commit_ts)


def agent_event_key(namespace: str, agent_id: str, commit_ts: int) -> bytes:
    return agent_prefix(AGENT_EVENTS, namespace, agent_id) + _U64.pack(commit_ts)


def txn_key(txn_id: str) -> bytes:
    return TXNS + txn_id.encode("utf-8")


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix`."""
    raw = bytearray(prefix)
    while raw:
        if raw[-1] != 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return None
