"""Retention (issue 14): history a policy lets go leaves the store; the latest op of every key
stays; reads that need what went fail with HistoryCompactedError naming the horizon, never a
partial answer; verify and rebuild accept the compacted log. On a real RocksDB, and through a
real daemon with the SDK, sync and async."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import wait_until

from actors import ActorConfig
from rpc.server import Daemon
from statehouse import HistoryCompactedError, Statehouse, StatehouseError
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from statehouse.testing import DaemonProcess
from storage import Event, EventOp, Store, keys, opening
from storage import HistoryCompactedError as StoredCompacted
from storage.rebuild import rebuild, rebuild_into
from storage.retention import Policies, Policy, plan
from storage.verify import verify

NOW_MS = 10_000_000  # the wall time of the events written here (committed_at_ms)


def write(store: Store, *ops: tuple[str, str, str, bytes | None], at_ms: int = NOW_MS) -> int:
    """Append one event of `ops` (namespace, agent, key, value), with the next versions."""
    commit_ts = store.last_commit_ts + 1
    events = []
    for namespace, agent, key, value in ops:
        version = store.current_version(namespace, agent, key)[0] + 1
        events.append(EventOp(namespace, agent, key, version, value))
    store.append([Event(commit_ts, f"t{commit_ts}", at_ms, tuple(events))])
    return commit_ts


def retain(store: Store, policies: Policies, now_ms: int = NOW_MS, limit: int = 2000) -> int:
    """Run retention passes until nothing is left to drop, as the retainer does; ops dropped."""
    dropped = 0
    while True:
        found = plan(store.view(), policies, now_ms, limit)
        applied = store.retain(found)
        dropped += applied.ops
        if len(found.drops) < limit:
            return dropped


def versions(store: Store, namespace: str, agent: str, key: str) -> list[int]:
    return [version for version, _ in store.view().versions_of(namespace, agent, key)]


def test_a_versions_limit_keeps_each_keys_newest_versions_and_fails_reads_below(store: Store) -> None:
    stamps = [
        write(store, ("ns", "a", "k", b"%d" % n), ("ns", "b", "other", b"%d" % n)) for n in range(1, 11)
    ]
    solo = write(store, ("ns", "a", "solo", b'"only"'))
    assert retain(store, Policies(Policy(versions=3))) == 14  # 7 of k, 7 of o
    assert versions(store, "ns", "a", "k") == [8, 9, 10]
    view = store.view()
    assert view.get("ns", "a", "k").value == b"10"
    assert view.get_version("ns", "a", "k", 8).value == b"8"
    with pytest.raises(StoredCompacted) as caught:
        view.get_version("ns", "a", "k", 7)
    assert caught.value.horizon == stamps[7]  # version 8's commit
    assert view.get_version("ns", "a", "k", 11) is None  # never written: not an error
    assert view.get_version("ns", "a", "solo", 1).value == b'"only"'
    # As of a commit: fine from the oldest kept version on, an error before it.
    assert view.record_at("ns", "a", "k", stamps[8]).value == b"9"
    with pytest.raises(StoredCompacted):
        view.record_at("ns", "a", "k", stamps[3])
    # History reaching below the oldest kept version fails; a part above it does not.
    newest = view.history("ns", "a", "k")
    assert [next(newest)[0] for _ in range(3)] == [10, 9, 8]
    with pytest.raises(StoredCompacted):
        next(newest)
    # Replay of the namespace's agents from before its horizon fails; from it, it is whole.
    with pytest.raises(StoredCompacted) as caught:
        list(view.replay("ns", "a"))
    horizon = caught.value.horizon
    assert horizon == stamps[6] + 1  # the last commit that lost an op, plus one
    assert [e.commit_ts for e in view.replay("ns", "a", horizon)] == [*stamps[7:], solo]
    # The log: events 1-7 lost both ops and are left as their heads (every commit_ts, and its
    # transaction id, stay); the rest are whole.
    events = list(view.events())
    assert [(e.commit_ts, len(e.ops), e.scrubbed) for e in events[:7]] == [(ts, 0, True) for ts in stamps[:7]]
    assert [e.commit_ts for e in events[7:]] == [*stamps[7:], solo]
    assert store.commit_ts_of("t1") == stamps[0]  # a retry of the first commit is answered, not redone


def test_a_compacted_store_verifies_and_rebuilds(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "data")
    for n in range(1, 8):
        write(store, ("ns", "a", "k", b"%d" % n), ("keep", "a", "k", b"%d" % n))
    write(store, ("ns", "a", "gone", b"1"))
    write(store, ("ns", "a", "gone", b"2"))
    write(store, ("ns", "a", "gone", None))  # deleted: its tombstone is its latest op, kept
    policies = Policies(Policy(versions=2), {"keep": Policy()})
    assert retain(store, policies) == 5 + 1
    before = dict(store.view().states()), dict(store.view().versions())
    store.close()
    report = verify(tmp_path / "data")
    assert report.ok, report.summary()
    rebuild(tmp_path / "data")
    assert verify(tmp_path / "data").ok
    rebuild_into(tmp_path / "data", tmp_path / "copy")
    assert verify(tmp_path / "copy").ok
    for path in (tmp_path / "data", tmp_path / "copy"):
        store = Store.open(path)
        try:
            assert (dict(store.view().states()), dict(store.view().versions())) == before
            assert store.view().horizon("ns") > 1 and store.view().horizon("keep") == 0
            assert versions(store, "keep", "a", "k") == list(range(1, 8))  # its own policy: all
            # The deleted key keeps its tombstone, so its versions go on from it.
            write(store, ("ns", "a", "gone", b"again"))
            assert store.view().get("ns", "a", "gone").version == 4
        finally:
            store.close()


def test_a_seconds_limit_lets_older_history_go_but_every_latest_op_stays(store: Store) -> None:
    old = [write(store, ("ns", "a", "k", b"%d" % n), at_ms=1000 + n) for n in range(3)]
    kept_old = write(store, ("ns", "a", "quiet", b"1"), at_ms=2000)
    recent = write(store, ("ns", "a", "k", b"9"), at_ms=NOW_MS)
    # 60 s: everything before NOW_MS - 60,000 may go, but for the latest op of each key.
    assert retain(store, Policies(Policy(seconds=60)), now_ms=NOW_MS + 1) == 3
    view = store.view()
    assert [e.commit_ts for e in view.events() if e.ops] == [kept_old, recent]
    assert view.get("ns", "a", "quiet").value == b"1"
    assert versions(store, "ns", "a", "k") == [4]
    assert old  # all three of k's older versions went
    # Both limits: a version goes only once both let it.
    write(store, ("ns", "a", "k", b"10"), at_ms=NOW_MS)
    assert retain(store, Policies(Policy(versions=1, seconds=60)), now_ms=NOW_MS + 1) == 0
    assert retain(store, Policies(Policy(versions=1, seconds=60)), now_ms=NOW_MS + 61_000) == 1
    assert versions(store, "ns", "a", "k") == [5]


def test_retention_keeps_the_other_ops_of_an_event_and_their_slots(store: Store) -> None:
    write(store, ("ns", "a", "k", b"1"), ("ns", "b", "x", b"x1"), ("ns", "a", "k2", b"2"))
    write(store, ("ns", "a", "k", b"3"))
    assert retain(store, Policies(Policy(versions=1))) == 1
    view = store.view()
    assert view.get("ns", "b", "x").value == b"x1" and view.get("ns", "a", "k2").value == b"2"
    first = next(view.events())
    assert first.scrubbed and [op.key for op in first.ops] == ["x", "k2"]
    assert [(op.key, op.slot) for op in first.ops] == [("x", 1), ("k2", 2)]
    assert [e.commit_ts for e in view.replay("ns", "b", view.horizon("ns"))] == []
    with pytest.raises(StoredCompacted):
        list(view.replay("ns", "b"))  # the namespace's horizon, not the agent's, decides


def test_an_op_purged_or_rewritten_after_the_pass_is_left_to_the_purge(store: Store) -> None:
    write(store, ("ns", "a", "k", b"1"))
    write(store, ("ns", "a", "k", b"2"))
    found = plan(store.view(), Policies(Policy(versions=1)), NOW_MS)
    assert len(found.drops) == 1
    purge_ts = store.last_commit_ts + 1
    store.purge(Event(purge_ts, "p", NOW_MS, (EventOp("ns", "a", "", 0, None, purge=True),)))
    write(store, ("ns", "a", "k", b"new"))  # version 1 again: not the version the plan names
    assert store.retain(found).ops == 0
    assert store.view().get("ns", "a", "k").value == b"new"


@pytest.fixture
def actor_config() -> ActorConfig:
    return ActorConfig(
        retention=Policies(Policy(versions=2), {"audit": Policy()}), retention_every_seconds=3600.0
    )


def commit(client: Any, agent: str, key: str, value: Any, namespace: str | None = None) -> int:
    with client.begin_transaction(namespace=namespace) as tx:
        tx.write(agent, key, value)
    assert tx.commit_ts is not None
    return int(tx.commit_ts)


def test_reads_below_the_horizon_fail_with_the_horizon_through_the_sdk(sdk: Any) -> None:
    client = sdk.client
    stamps = [commit(client, "agent", "memory", {"step": n}) for n in range(1, 7)]
    audit = [commit(client, "agent", "memory", n, namespace="audit") for n in range(1, 4)]
    client.compact()  # applies the policies now (the background pass runs hourly here)
    assert [v.version for v in client.key_history("agent", "memory", limit=2)] == [6, 5]
    with pytest.raises(HistoryCompactedError) as caught:
        client.key_history("agent", "memory")
    assert caught.value.horizon == stamps[4] and caught.value.code == "OUT_OF_RANGE"
    assert "retention" in str(caught.value)
    with pytest.raises(HistoryCompactedError):
        client.get_state_at_version("agent", "memory", 2)
    with pytest.raises(HistoryCompactedError):
        client.get_agent_state("agent", at_commit_ts=stamps[1])
    with pytest.raises(HistoryCompactedError) as caught:
        list(client.replay("agent"))
    horizon = caught.value.horizon
    assert horizon == stamps[3] + 1
    assert [e.commit_ts for e in client.replay("agent", start_ts=horizon)] == stamps[4:]
    with pytest.raises(HistoryCompactedError):
        client.watch("agent", start_ts=1)
    # The namespace whose own policy keeps everything kept everything.
    assert [v.commit_ts for v in client.key_history("agent", "memory", namespace="audit")] == audit[::-1]
    assert [e.commit_ts for e in client.replay("agent", namespace="audit")] == audit


def test_after_compact_no_file_holds_the_bytes_retention_let_go(client: Any, daemon: Daemon) -> None:
    gone = b"OLD-" + os.urandom(12).hex().encode()
    commit(client, "agent", "memory", gone.decode())
    for n in range(3):
        commit(client, "agent", "memory", f"newer {n}")
    client.compact()
    data_dir = daemon.config.data_dir
    holding = [p.name for p in sorted(data_dir.rglob("*")) if p.is_file() and gone in p.read_bytes()]
    assert holding == []
    assert client.get_state("agent", "memory").value == "newer 2"


def test_the_daemon_lets_history_go_in_the_background_by_its_flags(tmp_path: Path) -> None:
    data = tmp_path / "data"
    flags = ("--retain-versions", "1", "--retention-every-seconds", "0.2")
    with DaemonProcess(data, *flags) as daemon, Statehouse(daemon.addr) as client:
        for n in range(5):
            commit(client, "agent", "k", n)
        wait_until(lambda: daemon.events("retain.done"), "a background retention pass")
        assert [v.version for v in client.key_history("agent", "k", limit=1)] == [5]
        with pytest.raises(HistoryCompactedError):
            client.get_state_at_version("agent", "k", 1)
    assert verify(data).ok


def test_bad_retention_flags_are_refused_with_what_is_wrong(tmp_path: Path) -> None:
    for flags, said in [
        (("--retain-namespace", "scratch"), "is not NAMESPACE=POLICY"),
        (("--retain-namespace", "scratch=versions:x"), "is not a retention policy"),
        (("--retain-versions", "-1"), "must be at least 0"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "rpc", "--data-dir", str(tmp_path / "d"), *flags],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2 and said in result.stderr, result.stderr
        assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("point", ["ledger.before_write", "ledger.after_write", "ledger.after_sync"])
def test_a_kill_during_a_retention_write_leaves_all_of_it_or_none(tmp_path: Path, point: str) -> None:
    """The retainer's chunk is one write through the ledger: killed before, during or after it
    (the daemon's own crash points, the 6th write: 5 commits, then the chunk), the store
    verifies, every commit acknowledged reads back, and the chunk is wholly there or absent."""
    data = tmp_path / "data"
    env = {**os.environ, "STATEHOUSE_CRASH_AT": f"{point}:6"}
    crashing = DaemonProcess(data, "--retain-versions", "1", "--retention-every-seconds", "3600", env=env)
    with crashing, Statehouse(crashing.addr, retry=None, timeout=10) as client:
        stamps = [commit(client, "agent", "k", n) for n in range(5)]
        with pytest.raises(StatehouseError):
            client.compact()  # the retention chunk is the sixth write: killed there
        assert crashing.process is not None and crashing.process.wait(30) == -signal.SIGKILL
    report = verify(data)
    assert report.ok, report.summary()
    with DaemonProcess(data) as daemon, Statehouse(daemon.addr) as client:
        assert (
            client.get_state("agent", "k").value == 4
            and client.get_state("agent", "k").commit_ts == stamps[-1]
        )
        try:
            kept = [v.version for v in client.key_history("agent", "k")]
        except HistoryCompactedError:  # the chunk is there: only the latest version is kept
            kept = [v.version for v in client.key_history("agent", "k", limit=1)]
            with pytest.raises(HistoryCompactedError):
                client.get_state_at_version("agent", "k", 1)
        assert kept in ([5, 4, 3, 2, 1], [5])  # none of the chunk, or all of it


def test_a_compacted_read_in_a_read_batch_fails_alone_with_its_horizon(client: Any, daemon: Daemon) -> None:
    """The SDK combines point reads of several threads into one ReadBatch: a read of history
    that went answers OUT_OF_RANGE with the horizon in its own outcome, the others their state."""
    stamps = [commit(client, "agent", "k", n) for n in range(4)]
    client.compact()
    channel = grpc.insecure_channel(f"127.0.0.1:{daemon.port}")
    stub = pb_grpc.StatehouseServiceStub(channel)

    def at(version: int) -> pb.ReadRequest:
        state = pb.GetStateAtVersionRequest(
            namespace="default", agent_id="agent", key="k", version=version, json_values=True
        )
        return pb.ReadRequest(at_version=state)

    outcomes = stub.ReadBatch(pb.ReadBatchRequest(reads=[at(1), at(4), at(3)]), timeout=10).outcomes
    channel.close()
    assert [o.code for o in outcomes] == [grpc.StatusCode.OUT_OF_RANGE.value[0], 0, 0]
    assert outcomes[0].horizon == stamps[2] and "retention" in outcomes[0].message
    assert [o.state.version for o in outcomes[1:]] == [4, 3]


def test_a_version_kept_as_latest_goes_once_superseded_without_a_hole(store: Store) -> None:
    """`seconds` alone: a pass keeps v1 (then the key's latest); once v2 and v3 are written and
    old enough, a later pass lets v1 go with v2, so what is kept stays the newest, no hole."""
    write(store, ("ns", "a", "k", b"1"), at_ms=1000)
    policies = Policies(Policy(seconds=60))
    assert retain(store, policies, now_ms=NOW_MS) == 0  # v1 is the latest: kept
    write(store, ("ns", "a", "k", b"2"), at_ms=2000)
    write(store, ("ns", "a", "k", b"3"), at_ms=NOW_MS)
    assert retain(store, policies, now_ms=NOW_MS + 1) == 2
    assert versions(store, "ns", "a", "k") == [3]
    assert store.view().record_at("ns", "a", "k", store.last_commit_ts).value == b"3"


def test_verify_names_a_value_no_op_of_the_log_holds(tmp_path: Path) -> None:
    """A VALUES record nothing points to (left by a bug, or written by hand) is a divergence."""
    store = Store.open(tmp_path / "data")
    write(store, ("ns", "a", "k", b"1"), ("ns", "a", "gone", None))
    store.close()
    assert verify(tmp_path / "data").ok
    db = opening.open_read_write(tmp_path / "data")
    db.put(keys.value_key(1, 1), b"stray")  # slot 1 of commit 1 is a delete: it holds no value
    db.close()
    report = verify(tmp_path / "data")
    assert report.by_table == {"VALUES": 1}
    assert report.divergence is not None and report.divergence.where == "commit_ts=1 slot=1"
