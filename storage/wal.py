"""What the write-ahead log files of a data directory say, read as raw bytes.

Used when RocksDB refuses a damaged log, to tell the operator how far the
log reached: every commit group writes META last_commit_ts in its batch, so
the greatest such value found in the `*.log` files is a commit that was
made durable (a lower bound: a value split by a log block boundary is
missed). Nothing here writes.
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
# RocksDB's info LOG names the log file a damaged record was found in.
_DROPPING = re.compile(r"(\S+\.log): dropping \d+ bytes; (Corruption: [^\n]*)")


@dataclass(frozen=True, slots=True)
class WalFile:
    path: Path
    size: int
    last_commit_ts: int  # the greatest last_commit_ts recorded in it (0: none found)


def wal_files(path: Path) -> list[WalFile]:
    """The write-ahead log files of a data directory, oldest first, with what they record."""
    found = []
    for file in sorted(path.glob("*.log")):
        if not file.is_file():
            continue
        data = file.read_bytes()
        recorded = [keys.read_u64(m.group(1)) for m in _LAST_COMMIT_TS_PUT.finditer(data)]
        found.append(WalFile(file, len(data), max(recorded, default=0)))
    return found


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
