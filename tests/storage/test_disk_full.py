"""Disk trouble, for real: the daemon's synced write fails because the disk is full.

The real daemon (a subprocess) keeps its data directory on a filesystem that
fills up, and commits of multi-key transactions with big incompressible
values are sent until one fails. Two ways to make the write(2) of the WAL
really fail, with no crash point and nothing mocked:

* "tmpfs": the data directory is an 8 MiB tmpfs mounted for the test (we run
  as root in CI; mount(2) is called directly). RocksDB's WAL append gets
  ENOSPC. Space comes back with `remount,size=64m`.
* "fsize": RLIMIT_FSIZE of the running daemon (prlimit(2) on its pid) is
  lowered to 6 MiB; the WAL append past it gets EFBIG, exactly where a full
  disk would fail it (Python ignores SIGXFSZ, so the daemon lives). Space
  comes back by raising the limit again. This needs no privilege. Where
  mount(2) is refused (an unprivileged container), the "tmpfs" case fails
  saying so: it neither skips nor quietly runs the other fault. A premise
  that does not hold (the filesystem never fills, the limit is not
  applied) fails the test.

What is checked, on what RocksDB (through rocksdict) really does:

1. The commit that hits the full disk fails with UNAVAILABLE (SDK:
   UnavailableError, also a TransactionError); the daemon logs
   ledger.write_failed.
2. Nothing of it is visible: none of its keys, no event, commit_ts and
   versions where they were. Every acknowledged commit reads back exactly
   (value, version, commit_ts, history, replay), and Health stays "ok".
3. While the disk is still full (tmpfs case), another commit fails the same
   way and reads keep working: the store is not reopened without room.
4. RocksDB makes a failed WAL write a sticky error (rocksdict has no
   Resume()), so once space is back the ledger reopens the store on the
   next commit (logging store.reopened), and that commit succeeds, with no
   restart.
5. SIGTERM exits 0. After a restart, every acknowledged commit is there
   exactly, the failed transaction is not, and new commits succeed, with
   commit_ts and versions continuing from the last acknowledged commit.

Note: RocksDB's recovery replays the WAL into an SST file at open, so a
reopen or restart needs free space about the size of the unflushed WAL (deleting a
small ballast file is not enough: the open then fails with ENOSPC and exit
code 4). That is why space comes back as a bigger filesystem here.
"""

from __future__ import annotations

import ctypes
import errno
import os
import random
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from statehouse import Statehouse
from statehouse.exceptions import (
    ResourceExhaustedError,
    StatehouseError,
    TransactionError,
    UnavailableError,
)
from statehouse.testing import DaemonProcess

MiB = 1024 * 1024
SMALL_FS = 8 * MiB
FSIZE_LIMIT = 6 * MiB
VALUE_BYTES = 100_000  # random bytes, hex-encoded: a 200 KB string RocksDB cannot compress
MAX_COMMITS = 200  # far more than the space allows: if none fails, the premise is broken
AGENT = "agent"

MS_REMOUNT = 32
MNT_DETACH = 2


# -- the faults ------------------------------------------------------------------


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def mount_tmpfs(target: Path, size: int, remount: bool = False) -> None:
    """mount(2) a tmpfs of `size` bytes on `target` (or resize it); OSError if refused."""
    flags = MS_REMOUNT if remount else 0
    options = f"size={size},mode=0700".encode()
    if _libc().mount(b"tmpfs", str(target).encode(), b"tmpfs", flags, options) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mount tmpfs on {target}: {os.strerror(code)}")


def unmount(target: Path) -> None:
    libc = _libc()
    if libc.umount2(str(target).encode(), 0) != 0 and ctypes.get_errno() != errno.EINVAL:
        libc.umount2(str(target).encode(), MNT_DETACH)  # busy: detach it, it goes when unused


def filesystem_size(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_blocks * stat.f_frsize


@dataclass
class DiskFault:
    """Where the data directory lives, and how the disk fills and empties."""

    kind: str  # "tmpfs" or "fsize"
    data_dir: Path
    mount_point: Path | None = None
    daemon: DaemonProcess | None = None
    _hard_limit: int = field(default=resource.RLIM_INFINITY)

    def arm(self, daemon: DaemonProcess) -> None:
        """Called once the daemon runs: make its disk small."""
        self.daemon = daemon
        if self.kind == "fsize":
            assert daemon.process is not None
            _, self._hard_limit = resource.prlimit(daemon.process.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(daemon.process.pid, resource.RLIMIT_FSIZE, (FSIZE_LIMIT, self._hard_limit))
            soft, _ = resource.prlimit(daemon.process.pid, resource.RLIMIT_FSIZE)
            assert soft == FSIZE_LIMIT, "premise broken: the daemon's file size limit was not applied"

    def check_premise(self) -> None:
        """Fail at once, rather than fill a real disk, if the limit does not bite."""
        if self.kind == "fsize":
            biggest = max(f.stat().st_size for f in self.data_dir.iterdir() if f.is_file())
            assert biggest <= FSIZE_LIMIT, f"premise broken: a {biggest}-byte file despite RLIMIT_FSIZE"

    def give_space_back(self) -> None:
        if self.kind == "tmpfs":
            assert self.mount_point is not None
            mount_tmpfs(self.mount_point, 64 * MiB, remount=True)
            assert filesystem_size(self.mount_point) >= 60 * MiB
        else:
            assert self.daemon is not None and self.daemon.process is not None
            limits = (self._hard_limit, self._hard_limit)
            resource.prlimit(self.daemon.process.pid, resource.RLIMIT_FSIZE, limits)


@pytest.fixture(params=["tmpfs", "fsize"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DiskFault]:
    mount_point: Path | None = None
    if request.param == "fsize":
        fault = DiskFault("fsize", tmp_path / "data")
    else:
        mount_point = tmp_path / "small-fs"
        mount_point.mkdir()
        try:
            mount_tmpfs(mount_point, SMALL_FS)
        except OSError as exc:
            # Not a quiet fallback to the other case: this one would pass without having run.
            raise AssertionError(
                f"cannot mount a tmpfs here ({exc}): the [tmpfs] case needs root (CI runs as root); "
                "the [fsize] case makes the same fault without privilege"
            ) from None
        fault = DiskFault("tmpfs", mount_point / "data", mount_point=mount_point)
    try:
        if mount_point is not None:
            size = filesystem_size(mount_point)
            assert SMALL_FS * 0.9 <= size <= SMALL_FS * 1.1, f"premise broken: the tmpfs is {size} bytes"
        yield fault
    finally:
        if fault.daemon is not None:
            fault.daemon.kill()
        if mount_point is not None:
            unmount(mount_point)


# -- the test ----------------------------------------------------------------------


@dataclass(frozen=True)
class Acked:
    value: object
    version: int
    commit_ts: int


def logged(daemon: DaemonProcess, event: str, within: float = 10.0) -> bool:
    """Whether the daemon logged `event` (its stderr is read by a thread: give it a moment)."""
    deadline = time.monotonic() + within
    while not daemon.events(event):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def check_acknowledged(client: Statehouse, acked: dict[str, Acked], history: dict[str, list[Acked]]) -> None:
    """Every acknowledged write reads back exactly: latest state, each version, replay."""
    for key, expected in acked.items():
        state = client.get_state(AGENT, key)
        assert (state.exists, state.version, state.commit_ts) == (True, expected.version, expected.commit_ts)
        assert state.value == expected.value, f"{key}: value differs"
    for key, versions in history.items():
        for version in versions:
            old = client.get_state_at_version(AGENT, key, version.version)
            assert (old.value, old.commit_ts) == (version.value, version.commit_ts)
    assert client.list_keys(AGENT) == sorted(acked)
    replayed = {
        op.key: (op.version, event.commit_ts) for event in client.replay(AGENT) for op in event.operations
    }
    assert replayed == {key: (a.version, a.commit_ts) for key, a in acked.items()}


def check_not_visible(client: Statehouse, keys: list[str], acked: dict[str, Acked], last_ts: int) -> None:
    """Nothing of the failed transaction: none of its keys, no event, counter unchanged."""
    for key in keys:
        if key in acked:
            state = client.get_state(AGENT, key)
            assert (state.version, state.commit_ts) == (acked[key].version, acked[key].commit_ts), key
        else:
            assert not client.get_state(AGENT, key).exists, f"{key} of the failed commit is visible"
    events = list(client.replay(AGENT))
    assert events[-1].commit_ts == last_ts, "the failed commit left an event"


def test_full_disk_fails_commits_cleanly_and_recovers(disk: DiskFault) -> None:
    rng = random.Random(7)
    started = time.monotonic()
    args = ("--max-value-bytes", str(512 * 1024), "--max-message-bytes", str(8 * MiB))
    acked: dict[str, Acked] = {}
    history: dict[str, list[Acked]] = {}

    def commit(client: Statehouse, writes: dict[str, object]) -> int:
        with client.begin_transaction() as tx:
            for key, value in writes.items():
                tx.write(AGENT, key, value)
        assert tx.commit_ts is not None
        for key, value in writes.items():
            version = acked[key].version + 1 if key in acked else 1
            acked[key] = Acked(value, version, tx.commit_ts)
            history.setdefault(key, []).append(acked[key])
        return tx.commit_ts

    daemon = DaemonProcess(disk.data_dir, *args).start()
    disk.daemon = daemon
    # retry=None: the SDK would retry the refused commit (UNAVAILABLE) until its timeout;
    # this test looks at each refusal as it happens.
    with Statehouse(daemon.addr, timeout=30, retry=None) as client:
        last_ts = commit(client, {"counter": 0, "note": "before the disk filled"})
        disk.arm(daemon)

        # 1. Fill the disk with multi-key transactions until a commit fails.
        failure: StatehouseError | None = None
        failed_keys: list[str] = []
        for n in range(1, MAX_COMMITS + 1):
            writes: dict[str, object] = {
                f"big/{n}/a": rng.randbytes(VALUE_BYTES).hex(),
                f"big/{n}/b": rng.randbytes(VALUE_BYTES).hex(),
                "counter": n,
            }
            try:
                last_ts = commit(client, writes)
            except StatehouseError as exc:
                failure, failed_keys = exc, list(writes)
                break
            disk.check_premise()
        assert failure is not None, f"premise broken: {MAX_COMMITS} big commits fit on the small disk"
        full_after = n - 1
        print(f"\n[{disk.kind}] {full_after} big commits fit; commit {n} failed: {failure}")
        assert isinstance(failure, TransactionError), type(failure)
        assert isinstance(failure, UnavailableError | ResourceExhaustedError), type(failure)
        assert full_after >= 1, "the disk was full before any big commit: the test measures nothing"
        assert logged(daemon, "ledger.write_failed"), "the daemon did not log the failed write"

        # 2. Nothing partial; every acknowledged commit intact; still serving.
        check_not_visible(client, failed_keys, acked, last_ts)
        check_acknowledged(client, acked, history)
        assert client.health() == "ok"

        # 2b. Still full: a commit fails again, and the store stays open for reads.
        if disk.kind == "tmpfs":
            with pytest.raises(UnavailableError, match="bytes free"):
                commit(client, {"counter": -1})
            check_acknowledged(client, acked, history)

        # 3. Space back: the next commit reopens RocksDB (its write error is
        # sticky until then) and succeeds, without a restart.
        disk.give_space_back()
        last_ts = commit(client, {"counter": "space is back", "after-space": True})
        print(f"[{disk.kind}] with space back, without a restart: commit_ts {last_ts}")
        assert logged(daemon, "store.reopened"), "the daemon did not log reopening its store"
        check_acknowledged(client, acked, history)
        check_not_visible(client, failed_keys, acked, last_ts)
        assert client.health() == "ok"
    exit_code = daemon.stop()
    stop_log = b"".join(daemon.raw_stderr[-40:]).decode(errors="replace")
    assert exit_code == 0, f"statehoused exited {exit_code} on SIGTERM after the disk filled:\n{stop_log}"

    # 4. Restart with space: everything acknowledged is there, and commits work again.
    with DaemonProcess(disk.data_dir, *args) as daemon:
        disk.daemon = daemon
        with Statehouse(daemon.addr, timeout=30, retry=None) as client:
            check_acknowledged(client, acked, history)
            check_not_visible(client, failed_keys, acked, last_ts)
            new_ts = commit(client, {"counter": "after restart", "after-space": True})
            assert new_ts == last_ts + 1, "commit_ts does not continue from the last acknowledged commit"
            assert acked["counter"].version == full_after + 3  # versions continue too
            for n in range(3):  # and big ones fit again
                commit(client, {f"again/{n}": rng.randbytes(VALUE_BYTES).hex()})
            check_acknowledged(client, acked, history)
    assert daemon.process is not None and daemon.process.returncode == 0
    print(
        f"[{disk.kind}] restart: {len(acked)} keys verified, commits continue at commit_ts {new_ts}; "
        f"{time.monotonic() - started:.1f} s"
    )
