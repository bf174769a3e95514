"""`statehoused recover-wal`: the operator's way to accept losing what a damaged log holds.

The daemon refuses a store whose write-ahead log is damaged before its end,
or that ends before its durable mark (a log file removed or cut short):
commits that were acknowledged may be gone. The operator chooses between
restoring a snapshot and this: open the store in RocksDB's point-in-time
mode, which replays the log up to the first damage and drops the rest.

Without `accept_loss` it only says what would happen (read-only). With it,
it first copies the log files aside (`<data-dir>.wal-<UTC time>/`, with a
note of what was cut), so an expert can still salvage them, then opens the
store once in point-in-time mode, and sets the durable mark to where the
store now ends. It says exactly how far the store was cut back.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from storage import durable, keys, opening, reading, wal
from storage.errors import StorageError, StoreRefusedError
from storage.store import check_no_gap


@dataclass(frozen=True, slots=True)
class WalRecovery:
    path: Path
    needed: bool  # False: the store opens whole, nothing to recover
    reason: str  # why it is needed (the refusal), or why not
    reached: int  # where the store ends, read up to the damage
    logged: int  # the log files record commits up to at least this
    mark: int | None  # the durable mark, if any
    done: bool = False  # whether it was carried out
    kept: Path | None = None  # where the log files were copied

    @property
    def lost_to(self) -> int:
        """The last commit known to have existed: every commit after `reached` up to it is lost."""
        return max(self.logged, self.mark or 0, self.reached)

    def loss(self) -> str:
        if self.lost_to > self.reached:
            count = self.lost_to - self.reached
            return (
                f"commits {self.reached + 1} to {self.lost_to} ({count} commit{'s' if count != 1 else ''}, "
                "at least)"
            )
        return "no commit that is known of (the damage is in the last, unfinished write)"

    def summary(self) -> str:
        if not self.needed:
            return f"nothing to recover: {self.reason}"
        if not self.done:
            return (
                f"{self.reason}\n"
                f"point-in-time recovery would cut the store back to commit_ts {self.reached}, losing "
                f"{self.loss()}. Nothing was changed; to do it, run again with --accept-loss "
                "(or restore a snapshot instead)"
            )
        return (
            f"recovered: the store now ends at commit_ts {self.reached}; lost {self.loss()}. "
            f"The log files as they were are kept in {self.kept}"
        )


def _plan(path: Path) -> WalRecovery:
    if not opening.holds_store(path):
        raise StorageError(f"{path} is not a Statehouse data directory (no store there)")
    mark = durable.read_mark(path)
    logged = wal.logged_up_to(path)
    gap: StoreRefusedError | None = None
    try:
        with opening.open_read_only(path) as db:
            raw = reading.get(db, keys.META_LAST_COMMIT_TS)
            ends = 0 if raw is None else keys.read_u64(raw)
            try:
                check_no_gap(db, path, wal.logs_begin_at(path), ends)
            except StoreRefusedError as exc:
                gap = exc
    except StoreRefusedError as exc:
        reached = opening.probe_point_in_time(path)
        if reached is None:
            raise StoreRefusedError(
                f"{exc}\nThe damage is not (only) in the write-ahead log: point-in-time recovery cannot "
                "open it either; restore a snapshot"
            ) from exc
        return WalRecovery(path, True, str(exc), reached, logged, mark)
    if gap is not None:
        raise StoreRefusedError(
            f"{gap}\nPoint-in-time recovery cannot help: it replays the log files there are, and the "
            "commits of the missing part are in none of them"
        ) from gap
    if mark is not None and mark > ends:
        reason = (
            f"the store ends at commit_ts {ends}, but commits up to {mark} were on disk before (its "
            "durable mark): a write-ahead log file was removed or cut short"
        )
        return WalRecovery(path, True, reason, ends, logged, mark)
    return WalRecovery(path, False, f"the store opens whole at commit_ts {ends}", ends, logged, mark)


def recover_wal(path: str | os.PathLike[str], accept_loss: bool = False) -> WalRecovery:
    """Say (and with `accept_loss`, do) what point-in-time recovery of the store at `path` cuts.

    Raises StoreLockedError if a daemon holds the directory, StoreRefusedError
    if the store cannot be opened even in point-in-time mode.
    """
    path = Path(path)
    plan = _plan(path)
    if not plan.needed or not accept_loss:
        return plan
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    kept = path.with_name(f"{path.name}.wal-{stamp}")
    n = 1
    while kept.exists():
        kept, n = path.with_name(f"{path.name}.wal-{stamp}-{n}"), n + 1
    kept.mkdir(parents=True)
    for name in [file.path.name for file in wal.wal_files(path)] + [durable.FILE_NAME]:
        if (path / name).exists():
            shutil.copy2(path / name, kept / name)
    note = (
        f"statehoused recover-wal on {stamp}: {plan.reason}\n"
        f"cut back to commit_ts {plan.reached}; lost {plan.loss()}\n"
    )
    (kept / "CUT_BACK.txt").write_text(note)
    for file in kept.iterdir():
        with open(file, "rb") as copied:
            os.fsync(copied.fileno())
    durable.fsync_directory(kept)
    durable.fsync_directory(kept.parent)
    db = opening.open_read_write(path, point_in_time=True)
    try:
        raw = reading.get(db, keys.META_LAST_COMMIT_TS)
        reached = 0 if raw is None else keys.read_u64(raw)
        last = reading.last_key(db, keys.EVENTS, "the end of the event log")
        logged_end = 0 if last is None else keys.read_u64(last, 1)
        db.flush_wal(True)
    finally:
        db.close()
    if logged_end != reached:
        raise StorageError(
            f"after point-in-time recovery last_commit_ts is {reached} but the event log ends at "
            f"{logged_end}; run `statehoused verify`"
        )
    durable.write_mark(path, reached)
    return WalRecovery(path, True, plan.reason, reached, plan.logged, plan.mark, done=True, kept=kept)
