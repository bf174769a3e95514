"""Opening a data directory: never creating over what is there, never changing what is refused.

- A store is created only in a directory that is new or empty (RocksDB's
  info `LOG` and `LOCK` of a failed first start aside). A directory that
  holds anything else but no `CURRENT` is refused, naming what it holds.
- Every open has RocksDB's paranoid checks on and reads the write-ahead log
  in `tolerate_corrupted_tail_records` mode: a record cut short at the very
  end (a write torn by a power cut, never acknowledged) is dropped, and
  damage anywhere before the end refuses the open. (`point_in_time`, RocksDB's
  default, would silently drop every record after the damage;
  `absolute_consistency` would refuse even the torn tail; docs/design.md.)
- A refused open changes no data file (RocksDB only rotates its info LOG),
  and says what is wrong and what to do.

RocksDB drops a cut-short end of every log file, not only of the last, and
does not notice a missing one: `Store.open` checks the log for gaps where
the log files begin, and the durable mark (storage/durable.py) for its end.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rocksdict import AccessType, DBRecoveryMode, Options, Rdict, ReadOptions

from storage import durable, keys, reading, wal
from storage.errors import StorageError, StoreLockedError, StoreRefusedError

# Files RocksDB writes that hold no data: a directory holding only these is empty.
_NOT_DATA = re.compile(r"^(LOCK|LOG|LOG\.old\.\d+)$")
# Files that belong to a store (RocksDB's, rocksdict's or ours).
_STORE_FILE = re.compile(
    r"^(CURRENT|IDENTITY|MANIFEST-\d+|OPTIONS-\d+|\d+\.(sst|log|blob|dbtmp)|.*\.dbtmp|"
    r"rocksdict-config\.json|" + re.escape(durable.FILE_NAME) + r"(\.partial)?)$"
)
_SHOWN = 6  # file names shown in a message

DAMAGED_ADVICE = (
    "Nothing in it was changed. Restore a snapshot (see docs/failure-modes.md, damaged data), "
    "or keep this directory for `statehoused verify`"
)


def _read_options() -> Any:
    """Every read verifies block checksums (RocksDB's default, asked for explicitly)."""
    options = ReadOptions()
    options.set_verify_checksums(True)
    return options


def _listing(names: list[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def holds_store(path: Path) -> bool:
    """Whether `path` holds a store to open (True) or is new or empty (False).

    Raises StoreRefusedError for a store's files without CURRENT (a store
    missing a file cannot be opened whole, and RocksDB would create a new
    store over it and delete its tables), StorageError for files that are
    not a store's at all, or a path that is not a directory.
    """
    if not path.exists():
        return False
    if not path.is_dir():
        raise StorageError(f"cannot open data directory {path}: it is not a directory")
    names = [name for name in os.listdir(path) if not _NOT_DATA.match(name)]
    if not names:
        return False
    if "CURRENT" in names:
        return True
    ours = [name for name in names if _STORE_FILE.match(name)]
    if ours:
        holds_data = any(
            name.endswith(".sst") or (name.endswith(".log") and (path / name).stat().st_size > 0)
            for name in ours
        )
        hint = (
            ""
            if holds_data
            else " It holds no table file and no logged commit: if this directory's first start "
            "failed while creating the store, empty it and start again."
        )
        raise StoreRefusedError(
            f"data directory {path} holds a store's files ({_listing(ours)}) but no CURRENT file, which "
            "names the store's MANIFEST: it cannot be opened as a whole store, and creating a new one "
            f"there would delete its tables. {DAMAGED_ADVICE}.{hint}"
        )
    raise StorageError(
        f"data directory {path} is not empty and holds no Statehouse store ({_listing(names)}); "
        "give a new or empty directory for a new store"
    )


def rocksdb_options(*, create: bool = False, point_in_time: bool = False) -> Options:
    """The options of every open: paranoid checks, and the WAL recovery mode chosen above."""
    options = Options(raw_mode=True)
    options.create_if_missing(create)
    options.set_error_if_exists(create)
    options.set_paranoid_checks(True)
    mode = (
        DBRecoveryMode.point_in_time() if point_in_time else DBRecoveryMode.tolerate_corrupted_tail_records()
    )
    options.set_wal_recovery_mode(mode)
    return options


def open_read_write(path: Path, *, point_in_time: bool = False) -> Rdict:
    """Open the store at `path` for writing, creating it only if the directory is new or empty."""
    create = not holds_store(path)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    try:
        db = Rdict(str(path), rocksdb_options(create=create, point_in_time=point_in_time))
    except Exception as exc:
        raise refusal(path, exc) from exc
    db.set_read_options(_read_options())
    return db


def probe_point_in_time(path: Path) -> int | None:
    """The last commit_ts of the store read (read-only) up to the first damage of its
    write-ahead log, or None if it cannot be opened even so."""
    try:
        db = Rdict(str(path), rocksdb_options(point_in_time=True), access_type=AccessType.read_only(False))
    except Exception:
        return None
    try:
        raw = reading.get(db, keys.META_LAST_COMMIT_TS)
        return 0 if raw is None else keys.read_u64(raw)
    except StorageError:
        return None
    finally:
        db.close()


def refusal(path: Path, exc: BaseException) -> StorageError:
    """The error for a failed open of `path`, saying what is wrong and what to do."""
    text = str(exc)
    if "lock" in text.lower() and not reading.is_damage(text):
        return StoreLockedError(_locked_message(path, text))
    if not reading.is_damage(text):
        return StorageError(f"cannot open data directory {path}: {text}")
    reached = probe_point_in_time(path)
    if reached is not None:
        return wal_refusal(path, text, reached)
    return StoreRefusedError(
        f"data directory {path} cannot be opened as a whole store ({text}). {DAMAGED_ADVICE}"
    )


def wal_refusal(path: Path, text: str, reached: int) -> StoreRefusedError:
    """The refusal of a store whose write-ahead log is damaged before its end."""
    files = wal.wal_files(path)
    named = wal.damaged_wal_file(path)
    if named is not None:
        where = f"{named[0]}: {named[1]}"
    else:
        where = f"{', '.join(file.path.name for file in files) or 'no *.log file'}: {text}"
    logged = max((file.last_commit_ts for file in files), default=0)
    lost = (
        f"commits {reached + 1} to at least {logged}"
        if logged > reached
        else "the commits after the damage, if any"
    )
    return StoreRefusedError(
        f"the write-ahead log of data directory {path} is damaged before its end ({where}). It records "
        f"commits up to at least commit_ts {logged}; read up to the damage, the store ends at commit_ts "
        f"{reached}. Nothing was changed. Restore a snapshot (docs/failure-modes.md, damaged data), or "
        f"accept losing {lost}: statehoused recover-wal --data-dir {path} --accept-loss"
    )


@contextlib.contextmanager
def open_read_only(path: str | os.PathLike[str], *, point_in_time: bool = False) -> Iterator[Any]:
    """The store at `path` opened read-only, with writers locked out meanwhile.

    Raises StoreRefusedError if there is no whole store there to open.
    """
    path = Path(path)
    if not holds_store(path):
        raise StorageError(f"{path} is not a Statehouse data directory (no store there)")
    with _shared_lock(path):
        try:
            db = Rdict(
                str(path),
                rocksdb_options(point_in_time=point_in_time),
                access_type=AccessType.read_only(False),
            )
        except Exception as exc:
            raise refusal(path, exc) from exc
        db.set_read_options(_read_options())
        try:
            yield db
        finally:
            db.close()


def _locked_message(path: Path, detail: str) -> str:
    return f"data directory {path} is in use by another statehoused process ({detail})"


@contextlib.contextmanager
def _shared_lock(path: Path) -> Iterator[None]:
    """Hold a shared lock on RocksDB's LOCK file, so no writer can open the store meanwhile.

    RocksDB locks LOCK with a POSIX (fcntl) write lock. We take an
    open-file-description read lock, which conflicts with it even within one
    process. POSIX locks have a trap: closing *any* descriptor of a file
    drops every POSIX lock the process holds on it, so if the lock turns out
    to be held by this very process (a Store open here), the descriptor is
    deliberately never closed.
    """
    import fcntl

    # A snapshot (checkpoint) has no LOCK file yet; RocksDB would create the same empty one.
    fd = os.open(path / "LOCK", os.O_RDONLY | os.O_CREAT, 0o644)
    ofd = getattr(fcntl, "F_OFD_SETLK", None)
    try:
        if ofd is not None:
            fcntl.fcntl(fd, ofd, struct.pack("hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0))
        else:  # no OFD locks (not Linux): a plain POSIX lock, blind to this process's own lock
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise StorageError(f"cannot lock data directory {path}: {exc}") from exc
        holder = _lock_holder(fd)
        if holder == os.getpid():
            _NEVER_CLOSED.append(fd)
            raise StoreLockedError(_locked_message(path, "it is open in this process")) from exc
        os.close(fd)
        detail = f"pid {holder}" if holder and holder > 0 else str(exc)
        raise StoreLockedError(_locked_message(path, detail)) from exc
    try:
        yield
    finally:
        os.close(fd)  # releases our lock


_NEVER_CLOSED: list[int] = []


def _lock_holder(fd: int) -> int | None:
    import fcntl

    getlk = getattr(fcntl, "F_OFD_GETLK", None)
    if getlk is None:
        return None
    try:
        result = fcntl.fcntl(fd, getlk, struct.pack("hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0))
    except OSError:
        return None
    _type, _whence, _start, _len, pid = struct.unpack("hhqqi4x", result)
    return int(pid)
