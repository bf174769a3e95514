"""What the write-ahead log files of a data directory say, read as raw bytes.

Every commit group writes its events and META last_commit_ts in one batch,
so the raw bytes of the `*.log` files say which commits they hold: the
greatest last_commit_ts found is a commit that was made durable (used when
RocksDB refuses a damaged log, to say how far the log reached), and the
smallest event key found is where the logs begin (used at open to check
that the log has no gap where a log file was removed or cut short). Both
are lower or upper bounds only: a record split by a log block boundary is
missed. A value is trusted only when a neighbour in the file agrees with it
(within MAX_STEP), so damaged bytes that happen to match cannot claim a
commit_ts far away. Nothing here writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from storage import keys

# A WriteBatch Put of META last_commit_ts: type 1, key length, key, value length 8, u64.
_LAST_COMMIT_TS_PUT = re.compile(
    re.escape(b"\x01" + bytes([len(keys.META_LAST_COMMIT_TS)]) + keys.META_LAST_COMMIT_TS + b"\x08")
    + b"(.{8})",
    re.DOTALL,
)
# An event's Put: type 1, key length 9, EVENTS, u64 commit_ts, the value's varint length, and
# the event's format byte (storage/records.py: 3 or 4; 1 or 2 in a store of schema 2 and before).
_EVENT_PUT = re.compile(
    re.escape(b"\x01\x09" + keys.EVENTS) + b"(.{8})[\x80-\xff]{0,4}[\x00-\x7f][\x01-\x04]", re.DOTALL
)
# Two neighbouring records of one log are at most this many commits apart (a commit group
# holds at most 512 commits; rebuild batches hold more, so leave room).
MAX_STEP = 100_000
# RocksDB's info LOG names the log file a damaged record was found in.
_DROPPING = re.compile(r"(\S+\.log): dropping \d+ bytes; (Corruption: [^\n]*)")


@dataclass(frozen=True, slots=True)
class WalFile:
    path: Path
    size: int
    last_commit_ts: int  # the greatest last_commit_ts recorded in it (0: none found)
    first_commit_ts: int  # the smallest commit_ts of an event in it (0: none found)


def _trusted(values: list[int]) -> list[int]:
    """The values (in file order) that a neighbour agrees with; a lone value is trusted."""
    if len(values) < 2:
        return values
    return [
        v
        for i, v in enumerate(values)
        if (i > 0 and 0 <= v - values[i - 1] <= MAX_STEP)
        or (i + 1 < len(values) and 0 <= values[i + 1] - v <= MAX_STEP)
    ]


_WAL_NAME = re.compile(r"^\d+\.log$")


def wal_files(path: Path, read: bool = True) -> list[WalFile]:
    """The write-ahead log files of a data directory (RocksDB's numbered `*.log`), oldest
    first, with what they record (with `read` False: only their sizes)."""
    found = []
    for file in sorted(path.iterdir()):
        if not _WAL_NAME.match(file.name) or not file.is_file():
            continue
        if not read:
            found.append(WalFile(file, file.stat().st_size, 0, 0))
            continue
        data = file.read_bytes()
        recorded = _trusted([keys.read_u64(m.group(1)) for m in _LAST_COMMIT_TS_PUT.finditer(data)])
        events = _trusted([keys.read_u64(m.group(1)) for m in _EVENT_PUT.finditer(data)])
        found.append(WalFile(file, len(data), max(recorded, default=0), min(events, default=0)))
    return found


def logs_begin_at(path: Path) -> int:
    """The smallest commit_ts of an event in the write-ahead log files of `path` (0: none)."""
    return min((wal.first_commit_ts for wal in wal_files(path) if wal.first_commit_ts), default=0)


def logged_up_to(path: Path) -> int:
    """The greatest commit_ts the write-ahead log files of `path` record (0 if none)."""
    return max((wal.last_commit_ts for wal in wal_files(path)), default=0)


def damaged_wal_file(path: Path) -> tuple[str, str] | None:
    """(file name, what RocksDB said) of the log file RocksDB's last open found damaged,
    read from its info LOG; None if it does not say."""
    try:
        text = (path / "LOG").read_text(errors="replace")
    except OSError:
        return None
    found = _DROPPING.findall(text)
    if not found:
        return None
    file, said = found[0]
    return Path(file).name, said
