"""The durable mark: a small file saying how far commits were known to be on disk.

RocksDB cannot tell a missing write-ahead log from one that never held
anything: if the `*.log` files of a crashed daemon are deleted (they look
like disposable log files) or cut short, RocksDB opens what the tables hold
and the commits only in the log are silently gone. The mark catches that.

After each durable commit group the writer records its last commit_ts in
`DURABLE_COMMIT_TS` with one small write into the page cache (no fsync: it
survives a crash of the process), and forces it to disk at most once a
second. The mark is therefore never ahead of what is on disk, and a store
that opens at a lower commit_ts than its mark has lost acknowledged commits:
`Store.open` refuses it. A directory without a mark (created by an older
version, or restored from a snapshot, which RocksDB's checkpoints do not
copy it into) gets one at open.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from storage.errors import StoreRefusedError

FILE_NAME = "DURABLE_COMMIT_TS"
_WIDTH = 20  # digits; the file is always 21 bytes, rewritten in place
_SYNC_EVERY_SECONDS = 1.0


def read_mark(path: Path) -> int | None:
    """The commit_ts in the mark of data directory `path`, None if it has none.

    Raises StoreRefusedError if the file is there but not a mark.
    """
    file = path / FILE_NAME
    try:
        text = file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreRefusedError(f"cannot read {file}: {exc}") from exc
    if len(text) != _WIDTH + 1 or not text[:_WIDTH].isdigit() or text[_WIDTH:] != b"\n":
        raise StoreRefusedError(
            f"{file} is damaged ({text[:40]!r}): it should hold the last commit_ts known to be on disk. "
            "Nothing was changed; run `statehoused verify`, and if the store is whole remove that file "
            "(the next start writes it again)"
        )
    return int(text[:_WIDTH])


def _encode(commit_ts: int) -> bytes:
    return f"{commit_ts:0{_WIDTH}d}\n".encode()


def write_mark(path: Path, commit_ts: int) -> None:
    """Set the mark of data directory `path` to `commit_ts`, durably (for the maintenance
    commands that cut a store back or build a new one)."""
    file = path / FILE_NAME
    partial = file.with_name(FILE_NAME + ".partial")
    with open(partial, "wb") as out:
        out.write(_encode(commit_ts))
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, file)
    fsync_directory(path)


def fsync_directory(path: Path) -> None:
    """Make the names in directory `path` durable (after a rename or a new file)."""
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class DurableMark:
    """The open mark file of a store, advanced by its one writer."""

    def __init__(self, path: Path, commit_ts: int) -> None:
        if read_mark(path) is None:
            write_mark(path, commit_ts)
        self._fd = os.open(path / FILE_NAME, os.O_WRONLY)
        self._value = -1
        self._synced_at = 0.0
        self.advance(commit_ts)
        self.sync()

    def advance(self, commit_ts: int) -> None:
        """Record that everything up to `commit_ts` is on disk (call only after it is)."""
        if commit_ts <= self._value:
            return
        self._value = commit_ts
        try:
            os.pwrite(self._fd, _encode(commit_ts), 0)
            if time.monotonic() - self._synced_at >= _SYNC_EVERY_SECONDS:
                self.sync()
        except OSError:
            pass  # the mark only ever lags; a later group writes it again

    def sync(self) -> None:
        try:
            os.fdatasync(self._fd)
        except OSError:
            return
        self._synced_at = time.monotonic()

    def close(self) -> None:
        if self._fd < 0:
            return
        self.sync()
        os.close(self._fd)
        self._fd = -1
