"""Online snapshots: through the API, the CLI and on a schedule; restore by starting on one."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from rpc.server import Daemon, DaemonConfig
from statehouse import Statehouse, StatehouseError
from statehouse.testing import DaemonProcess
from storage import SnapshotDirectory


def commit(client: Statehouse, agent: str, key: str, value: object) -> int:
    with client.begin_transaction() as tx:
        tx.write(agent, key, value)
    assert tx.commit_ts is not None
    return tx.commit_ts


def test_snapshot_holds_every_commit_before_it_and_restores(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with DaemonProcess(data) as daemon, Statehouse(daemon.addr) as client:
        for n in range(5):
            commit(client, "a", "k", {"n": n})
        snap = client.create_snapshot()
        assert snap.commit_ts == 5
        assert Path(snap.path).parent == tmp_path / "data.snapshots"
        commit(client, "a", "k", {"n": "after"})  # not in the snapshot
    restored = tmp_path / "restored"
    shutil.copytree(snap.path, restored)
    with DaemonProcess(restored) as daemon, Statehouse(daemon.addr) as client:
        state = client.get_state("a", "k")
        assert (state.value, state.version, state.commit_ts) == ({"n": 4}, 5, 5)
        assert [e.commit_ts for e in client.replay("a")] == [1, 2, 3, 4, 5]
        assert client.get_state_at_version("a", "k", 1).value == {"n": 0}
        assert commit(client, "a", "k", {"n": 5}) == 6  # commit_ts continues
        assert client.get_state("a", "k").version == 6


def test_snapshots_do_not_stop_commits(daemon: Daemon, client: Statehouse) -> None:
    stop = threading.Event()
    committed: list[int] = []
    errors: list[Exception] = []

    def writer() -> None:
        with Statehouse(f"127.0.0.1:{daemon.port}") as own:
            while not stop.is_set():
                try:
                    committed.append(commit(own, "w", f"k{len(committed) % 10}", len(committed)))
                except StatehouseError as exc:
                    errors.append(exc)
                    return

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        snaps = [client.create_snapshot() for _ in range(5)]
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert [s.commit_ts for s in snaps] == sorted(s.commit_ts for s in snaps)
    assert committed == sorted(committed) and len(committed) > 0
    assert len({s.path for s in snaps}) == 5


def test_periodic_snapshots_keep_the_newest(data_dir: Path) -> None:
    config = DaemonConfig(data_dir=data_dir, addr="127.0.0.1:0", snapshot_every_commits=3, snapshot_keep=2)
    daemon = Daemon(config).start()
    try:
        with Statehouse(f"127.0.0.1:{daemon.port}") as client:
            for n in range(10):
                commit(client, "a", f"k{n}", n)
            client.create_snapshot()  # also ordered after the periodic ones
    finally:
        daemon.stop()
    kept = SnapshotDirectory(config.snapshot_policy().directory).complete()
    assert [s.commit_ts for s in kept] == [9, 10]


def test_snapshot_command_line(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "data") as daemon, Statehouse(daemon.addr) as client:
        commit(client, "a", "k", 1)
        result = subprocess.run(
            [sys.executable, "-m", "rpc", "snapshot", "--addr", daemon.addr],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        path, ts = result.stdout.strip().split("\t")
        assert Path(path).is_dir() and ts == "commit_ts=1"
    unreachable = subprocess.run(
        [sys.executable, "-m", "rpc", "snapshot", "--addr", daemon.addr],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 3
    assert "statehoused snapshot:" in unreachable.stderr


def test_interrupted_snapshot_leftovers_are_cleaned(data_dir: Path, tmp_path: Path) -> None:
    config = DaemonConfig(data_dir=data_dir, addr="127.0.0.1:0")
    leftover = (
        config.snapshot_policy().directory / "snapshot-00000000000000000001-20260101T000000000Z.partial"
    )
    leftover.mkdir(parents=True)
    daemon = Daemon(config).start()
    try:
        with Statehouse(f"127.0.0.1:{daemon.port}") as client:
            client.create_snapshot()
    finally:
        daemon.stop()
    assert not leftover.exists()


def test_snapshots_every_few_seconds(data_dir: Path) -> None:
    from actors import ActorConfig

    config = DaemonConfig(
        data_dir=data_dir,
        addr="127.0.0.1:0",
        actors=ActorConfig(tick_seconds=0.05),
        snapshot_every_seconds=0.1,
        snapshot_keep=3,
    )
    daemon = Daemon(config).start()
    directory = SnapshotDirectory(config.snapshot_policy().directory)
    try:
        with Statehouse(f"127.0.0.1:{daemon.port}") as client:
            commit(client, "a", "k", 1)
            # A busy machine may take the first snapshots before the commit (commit_ts 0):
            # wait until the three kept are all from after it.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                len(kept := directory.complete()) >= 3 and all(s.commit_ts == 1 for s in kept)
            ):
                time.sleep(0.05)  # polling for the timer's work, bounded by the deadline
    finally:
        daemon.stop()
    snapshots = directory.complete()
    assert len(snapshots) == 3  # several taken, the oldest pruned down to --snapshot-keep
    assert all(s.commit_ts == 1 for s in snapshots)


def test_pruning_goes_by_age_and_never_removes_the_new_snapshot(tmp_path: Path) -> None:
    # After restoring an old snapshot, new snapshots have lower commit_ts than old ones.
    directory = SnapshotDirectory(tmp_path, keep=2)
    for name in (
        "snapshot-00000000000000000900-20260101T000000000Z",
        "snapshot-00000000000000001000-20260102T000000000Z",
    ):
        (tmp_path / name).mkdir()
    newest = directory.new_path(500)
    newest.mkdir()
    directory.prune(keep_path=newest)
    assert [s.commit_ts for s in directory.complete()] == [1000, 500]
