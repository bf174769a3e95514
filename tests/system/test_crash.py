"""Crash safety, tested for real: SIGKILL at random moments and at the named
crash points of storage/faults.py, with every acknowledged commit checked
against the model in tests/crash_harness.py.

The full random-kill run (20 kills) is `.venv/bin/python tests/crash_harness.py --kills 20`.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import threading
from pathlib import Path

import pytest
from crash_harness import (
    Attempt,
    Checker,
    CrashHarness,
    ForgetChecker,
    History,
    Profile,
    PurgeAttempt,
    run_crash_test,
    run_verify_command,
)

from statehouse import Statehouse, UnavailableError
from statehouse.testing import DaemonProcess
from storage import SnapshotDirectory

DEATH_SECONDS = 120.0  # a crash point is reached within seconds; this only bounds a failure


def test_random_sigkills_lose_nothing_acknowledged(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    lines: list[str] = []
    summary = run_crash_test(
        tmp_path / "data", kills=4, clients=4, seed=seed, min_delay=0.3, max_delay=0.8, out=lines.append
    )
    report = "\n".join(lines)
    print(report)
    assert summary.violations == [], report
    assert summary.kills == 4, report
    # Enough load to mean something (hundreds a round on an idle machine; printed in the report).
    assert summary.commits_acknowledged >= 40, report
    assert summary.commits_verified == summary.commits_acknowledged, report
    assert summary.last_commit_ts >= summary.commits_acknowledged - summary.empty, report


def test_random_sigkills_amid_purges_and_retention_lose_nothing(tmp_path: Path) -> None:
    """Forget mode: a client purging and compacting beside the others, a retention policy, and
    every other kill waiting for a purge or a compaction to be in flight."""
    seed = random.randrange(2**32)
    lines: list[str] = []
    summary = run_crash_test(
        tmp_path / "data",
        kills=4,
        clients=4,
        seed=seed,
        min_delay=0.3,
        max_delay=0.8,
        out=lines.append,
        forget=True,
    )
    report = "\n".join(lines)
    print(report)
    assert summary.violations == [], report
    assert summary.commits_verified == summary.commits_acknowledged >= 40, report
    figures = dict(part.split("=") for part in summary.forget.split())
    assert int(figures["purges_acknowledged"]) >= 10, report
    assert int(figures["versions_found_compacted"]) > 0, report  # retention did take history


# -- named crash points ----------------------------------------------------------


def crash_at(harness: CrashHarness, point: str, hit: int) -> DaemonProcess:
    """Run the harness' clients against a daemon armed at `point`:`hit` until it kills itself."""
    daemon = harness.start(env={"STATEHOUSE_CRASH_AT": f"{point}:{hit}"})
    try:

        def until_dead(killed: threading.Event) -> None:
            assert daemon.process is not None
            daemon.process.wait(DEATH_SECONDS)

        harness.drive(daemon, during=until_dead, max_txns=100_000)
    finally:
        daemon.kill()  # it is dead already; this collects the rest of its log
    assert daemon.process is not None
    assert daemon.process.returncode == -signal.SIGKILL, daemon.raw_stderr[-5:]
    assert run_verify_command(harness.data_dir) is None  # the daemon's own offline fold of it
    return daemon


def last_logged_commit(daemon: DaemonProcess) -> int:
    """The commit_ts of the last group the ledger finished (it logs a group after acknowledging it)."""
    return max((e["commit_ts"] for e in daemon.events("txn.commit")), default=0)


def attempts_by_txn(history: History) -> dict[str, Attempt]:
    return {a.txn_id: a for a in history.attempts}


LEDGER_POINTS = [
    # point, hit = its n-th pass kills the daemon, sync method
    ("ledger.before_write", 25, "flush_wal"),
    ("ledger.after_write", 25, "flush_wal"),
    ("ledger.after_write", 25, "sync_write"),  # here the write itself was synced
    ("ledger.after_sync", 25, "flush_wal"),
    ("ledger.mid_ack", 5, "flush_wal"),  # passed only in groups of two commits or more
]


@pytest.mark.parametrize(("point", "hit", "sync_method"), LEDGER_POINTS)
def test_crash_point_in_the_ledger(tmp_path: Path, point: str, hit: int, sync_method: str) -> None:
    # Four clients, so groups hold several commits. No empty commits: then
    # every commit of a group writes, and a group of two is two commit_ts.
    seed = random.randrange(2**32)
    harness = CrashHarness(
        tmp_path / "data",
        clients=4,
        seed=seed,
        profile=Profile(p_empty=0.0),
        daemon_args=("--sync-method", sync_method),
    )
    crashed = crash_at(harness, point, hit)
    before = last_logged_commit(crashed)  # the end of the last group acknowledged in full
    assert before > 0, f"no commit went through before the crash point (seed {seed})"
    with harness.start() as daemon:
        check = harness.verify(daemon)
    assert harness.history.violations == [], f"seed {seed}"
    assert check.violations == [], f"seed {seed}:\n" + "\n".join(check.violations)
    assert check.acked_verified == harness.history.count("acked") > 0
    attempts = attempts_by_txn(harness.history)
    # The group the crash interrupted, as far as it is there after the restart
    # (verify checked every transaction in it is whole and the log gap-free).
    crashed_group = [attempts[check.log[ts]] for ts in range(before + 1, check.last_ts + 1)]
    in_flight = [a for a in harness.history.attempts if a.outcome == "maybe"]
    assert in_flight, "the crash left no commit in flight"
    if point == "ledger.before_write":
        # Never written: wholly absent. Its commits were in flight, not acknowledged.
        assert check.last_ts == before
        assert any(a.txn_id not in check.log.values() for a in in_flight)
    elif point == "ledger.after_write" and sync_method == "flush_wal":
        # Written, not yet fsynced, nobody told: wholly there or wholly absent.
        assert all(a.outcome == "maybe" for a in crashed_group)
    elif point in ("ledger.after_write", "ledger.after_sync"):
        # Durable, nobody told: after the restart it IS there, all of it.
        assert crashed_group, f"the synced group is missing after the restart (seed {seed})"
        assert all(a.outcome == "maybe" for a in crashed_group)
    else:
        # Half the group acknowledged: the whole group, two commits or more,
        # is there -- the acknowledged half and the rest of the same batch.
        assert len(crashed_group) >= 2, crashed_group
        assert max(e["group"] for e in crashed.events("txn.commit")) >= 2  # earlier passes, too


def test_crash_mid_snapshot_leaves_data_intact_and_snapshots_working(tmp_path: Path) -> None:
    data = tmp_path / "data"
    harness = CrashHarness(data, clients=3, seed=random.randrange(2**32))
    daemon = harness.start(env={"STATEHOUSE_CRASH_AT": "snapshot.mid:2"})
    try:
        harness.drive(daemon, max_txns=40)
        with Statehouse(daemon.addr, retry=None) as client:  # no retry once the daemon died
            first = client.create_snapshot()  # the first pass through the point: completes
            harness.drive(daemon, max_txns=40)  # commits that only the second snapshot would hold

            def snapshot_while_committing(killed: threading.Event) -> None:
                with pytest.raises(UnavailableError):
                    client.create_snapshot()  # the second dies between checkpoint and rename
                assert daemon.process is not None
                daemon.process.wait(DEATH_SECONDS)

            harness.drive(daemon, during=snapshot_while_committing, max_txns=100_000)
    finally:
        daemon.kill()
    assert daemon.process is not None and daemon.process.returncode == -signal.SIGKILL
    snapshots = SnapshotDirectory(tmp_path / "data.snapshots")
    leftovers = list(snapshots.root.glob("snapshot-*.partial"))
    assert len(leftovers) == 1
    assert [str(s.path) for s in snapshots.complete()] == [first.path]
    assert run_verify_command(data) is None  # the daemon's own offline fold of the crashed directory

    with harness.start() as daemon:
        check = harness.verify(daemon)
        assert harness.history.violations == []
        assert check.violations == [], "\n".join(check.violations)
        assert check.acked_verified == harness.history.count("acked") > 0
        with Statehouse(daemon.addr) as client:
            second = client.create_snapshot()
    assert second.commit_ts == check.last_ts
    assert not leftovers[0].exists()  # the next snapshot removed the interrupted one
    assert [str(s.path) for s in snapshots.complete()] == [first.path, second.path]

    assert first.commit_ts < second.commit_ts
    for n, snapshot in enumerate((first, second)):
        restored = tmp_path / f"restored-{n}"
        shutil.copytree(snapshot.path, restored)
        assert run_verify_command(restored) is None
        with harness.start(data_dir=restored) as daemon:
            check = harness.verify(daemon, snapshot_of=snapshot.commit_ts)
            assert check.violations == [], "\n".join(check.violations)
            with Statehouse(daemon.addr) as client:
                with client.begin_transaction() as tx:
                    tx.write("after-restore", "k", 1)
            assert tx.commit_ts == snapshot.commit_ts + 1  # commit_ts continues on the copy


# -- the checker itself ------------------------------------------------------------


def test_the_checker_catches_lost_altered_half_and_resurrected_commits(tmp_path: Path) -> None:
    harness = CrashHarness(tmp_path / "data", clients=2, seed=7, profile=Profile(p_empty=0.0))
    with harness.start() as daemon:
        harness.drive(daemon, max_txns=40)
        assert harness.verify(daemon).violations == []
        acked = [a for a in harness.history.attempts if a.outcome == "acked" and a.ops]
        victim = acked[len(acked) // 2]
        target = next(iter(victim.ops))
        other = ("default", "client-0", "never-written")

        def violations(*changed: Attempt, extra: tuple[Attempt, ...] = ()) -> list[str]:
            replaced = {a.txn_id: a for a in changed}
            attempts = [replaced.get(a.txn_id, a) for a in harness.history.attempts] + list(extra)
            checker = Checker(History(attempts=attempts))
            checker.maybe_seen = dict(harness.checker.maybe_seen)
            with Statehouse(daemon.addr) as client:
                return checker.verify(client).violations

        lost = dataclasses.replace(victim, txn_id="default:" + "0" * 24, seq=10**6)
        assert any("acknowledged commit lost" in v for v in violations(extra=(lost,)))

        altered = dataclasses.replace(victim, ops={**victim.ops, target: (True, "not what was written")})
        assert any("not what was written" in v for v in violations(altered))

        half = dataclasses.replace(victim, ops={**victim.ops, other: (True, "one more")})
        assert any("half of" in v for v in violations(half))

        aborted = dataclasses.replace(victim, outcome="aborted")
        assert any("aborted" in v and "is in the log" in v for v in violations(aborted))

        wrong_ts = dataclasses.replace(victim, commit_ts=(victim.commit_ts or 0) + 1)
        assert any("at another commit_ts" in v for v in violations(wrong_ts))

        maybe = dataclasses.replace(victim, outcome="maybe", commit_ts=None)
        harness.checker.maybe_seen[victim.txn_id] = False  # as if an earlier check found it absent
        assert any("maybe-commit appeared" in v for v in violations(maybe))


def test_the_forget_checker_catches_wrong_purges_and_versions_retention_must_keep(tmp_path: Path) -> None:
    harness = CrashHarness(tmp_path / "data", clients=2, seed=5, forget=True)
    with harness.start() as daemon:
        assert harness.verify(daemon, round_starting=0).violations == []
        # The forgetter purges at its own pace beside the clients, so how many purges a round
        # of 150 transactions holds depends on the machine; with this seed the first of a
        # whole agent is its sixth. Rounds go on until one was acknowledged.
        wholes: list[PurgeAttempt] = []
        for _ in range(10):
            harness.drive(daemon, max_txns=150)
            assert harness.verify(daemon).violations == []
            purges = [p for p in harness.history.purges if p.outcome == "acked"]
            wholes = [p for p in reversed(purges) if p.target[2] == ""]
            if wholes:
                break
        assert wholes
        whole = wholes[0]

        def violations(purges: list[PurgeAttempt]) -> list[str]:
            checker = ForgetChecker(History(attempts=list(harness.history.attempts), purges=purges))
            checker.round_floor = dict(harness.checker.round_floor)
            with Statehouse(daemon.addr) as client:
                return checker.verify(client).violations

        others = [p for p in harness.history.purges if p is not whole]
        # A purge the daemon did but nobody asked for.
        assert any(f"commit_ts {whole.commit_ts} is no acknowledged commit" in v for v in violations(others))

        # Half a purge: the model keeps what the daemon purged. Which agents had keys or
        # history when a purge came depends on the run, so the narrowed purge (a prefix no
        # key has) is tried on whole purges until one took something away.
        def caught_half(purge: PurgeAttempt) -> bool:
            half = dataclasses.replace(purge, target=(*purge.target[:2], "~none"))
            rest = [p for p in harness.history.purges if p is not purge]
            return any("get_state" in v or "replay of" in v for v in violations([*rest, half]))

        assert any(caught_half(purge) for purge in wholes[:4])
        # A purge acknowledged at a commit_ts the log gives to a commit.
        clash = dataclasses.replace(whole, commit_ts=1)
        assert any("clashes with the log's order" in v for v in violations([*harness.history.purges, clash]))

    # A daemon whose retention takes more than the checker knows it may: versions it must keep.
    with DaemonProcess(harness.data_dir, *harness.daemon_args, "--retain-versions", "1").start() as daemon:
        with Statehouse(daemon.addr) as client:
            client.compact()
        check = harness.verify(daemon)
    assert any("is compacted, but retention keeps its newest" in v for v in check.violations)


def test_the_checker_catches_acknowledged_commits_cut_from_the_wal(tmp_path: Path) -> None:
    harness = CrashHarness(tmp_path / "data", clients=2, seed=11)
    daemon = harness.start()
    try:
        harness.drive(daemon, max_txns=30)
        assert harness.verify(daemon).violations == []
    finally:
        daemon.kill()
    # What a lying fsync would leave behind: the WAL without its tail.
    wals = list(harness.data_dir.glob("*.log"))
    assert wals
    for wal in wals:
        os.truncate(wal, wal.stat().st_size // 2)
    # The daemon's durable mark would refuse this store (tests/storage/test_damage.py); a disk that lies
    # about every fsync loses the mark's last writes too, and then only the checker can tell.
    (harness.data_dir / "DURABLE_COMMIT_TS").unlink()
    with harness.start() as daemon:
        check = harness.verify(daemon)
    assert any(v.startswith("acknowledged commit lost") for v in check.violations)
    assert not any("half of" in v for v in check.violations)  # RocksDB recovers whole batches
    assert 0 < check.acked_verified < harness.history.count("acked")


def test_the_documented_crash_command_runs() -> None:
    """README's crash-test line, with fewer kills: it exits 0 and prints its summary."""
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    lines = re.findall(
        r"^\.venv/bin/python (tests/crash_harness\.py --kills 20(?: --forget)?)(?:$| +#)", readme, re.M
    )
    assert lines == ["tests/crash_harness.py --kills 20", "tests/crash_harness.py --kills 20 --forget"]
    for line in lines:
        args = [*line.replace("--kills 20", "--kills 2").split(), "--max-delay", "0.5"]
        result = subprocess.run(
            [sys.executable, *args], cwd=root, capture_output=True, text=True, timeout=DEATH_SECONDS
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(
            r"^crash test: kills=2 commits_acknowledged=\d+ .*violations=0", result.stdout, re.M
        ), result.stdout
        assert ("purges_acknowledged=" in result.stdout) == line.endswith("--forget"), result.stdout
