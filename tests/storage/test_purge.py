"""Purge and compaction (issue 14): an agent, or the keys under a prefix, removed with their
history, atomically, with a purge event left in the log; after compaction no file of the
data directory holds the purged bytes. Against a real daemon, sync and async alike."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actors.compactor import Compactor
from rpc.server import Daemon
from statehouse import InvalidArgumentError, Statehouse, StateResult, UnavailableError
from statehouse.testing import DaemonProcess
from storage import Event, EventOp, Store
from storage.rebuild import rebuild
from storage.store import purge_ranges
from storage.verify import verify

WAIT_S = 60.0  # the longest the background compaction after a purge may take here


def secret() -> bytes:
    """A value to look for in the data files. Table files are Snappy-compressed, and Snappy
    stores any 4 bytes seen before in the block as a back-reference, so a random hex secret
    could match part of a transaction id and not be found whole (seen once, in a full run of
    the suite). No letter here repeats, and none is in "SECRET-" or in the
    ids, names and keys beside it (all lowercase)."""
    return b"SECRET-" + "".join(random.sample("ABDFGHIJKLMNOPQUVWXYZ", 20)).encode()


def files_holding(data_dir: Path, needle: bytes) -> list[str]:
    """The files of the data directory whose bytes contain `needle` anywhere."""
    found = []
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and needle in path.read_bytes():
            found.append(path.name)
    return found


def commit(client: Any, *writes: tuple[str, str, Any]) -> int:
    with client.begin_transaction() as tx:
        for agent, key, value in writes:
            tx.write(agent, key, value)
    assert tx.commit_ts is not None
    return int(tx.commit_ts)


def test_purging_a_prefix_removes_its_keys_and_their_history(sdk: Any) -> None:
    client = sdk.client
    commit(client, ("alice", "profile", {"name": "Alice"}), ("alice", "notes:1", "one"), ("bob", "x", 1))
    commit(client, ("alice", "profile", {"name": "Alice B."}))
    kept_ts = commit(client, ("alice", "notes:2", "two"))
    ts = client.purge("alice", key_prefix="prof")
    assert ts == kept_ts + 1
    assert client.get_state("alice", "profile") == StateResult(None, 0, 0, False)
    assert client.key_history("alice", "profile") == []
    assert client.list_keys("alice") == ["notes:1", "notes:2"]
    assert client.get_state("bob", "x").value == 1
    # The log: the profile's ops are gone from every event, and a purge event closes it.
    events = list(client.replay("alice"))
    assert [(e.commit_ts, [(op.key, op.purged) for op in e.operations]) for e in events] == [
        (1, [("notes:1", False)]),
        (3, [("notes:2", False)]),
        (ts, [("prof", True)]),
    ]
    assert events[-1].operations[0].value is None and events[-1].operations[0].version == 0
    # Written again, the key starts a new history at version 1.
    again = commit(client, ("alice", "profile", "new"))
    assert [(v.version, v.commit_ts) for v in client.key_history("alice", "profile")] == [(1, again)]


def test_purging_an_agent_removes_it_from_the_list_of_agents(sdk: Any) -> None:
    client = sdk.client
    commit(client, ("alice", "a", 1), ("alice", "b", 2), ("bob", "x", 1))
    with client.begin_transaction() as tx:
        tx.delete("alice", "b")
    client.purge("alice")
    assert client.list_agents() == ["bob"]
    assert client.get_agent_state("alice").values == {}
    assert [op.purged for e in client.replay("alice") for op in e.operations] == [True]
    assert [e.commit_ts for e in client.replay("bob")] == [1]  # the shared event kept bob's op


def test_a_purge_is_delivered_to_watchers_of_the_keys(sdk: Any) -> None:
    client = sdk.client
    commit(client, ("alice", "ckpt:1", 1))
    with client.watch("alice", key_prefix="ckpt:") as watch:
        ts = client.purge("alice", key_prefix="ck")
        event = next(iter(watch))
    assert (event.commit_ts, [(op.key, op.purged) for op in event.operations]) == (ts, [("ck", True)])


def test_purge_arguments_are_checked(sdk: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="agent_id must not be empty"):
        sdk.client.purge("")
    with pytest.raises(InvalidArgumentError, match="prefix must not contain NUL"):
        sdk.client.purge("a", key_prefix="a\x00")


def test_nothing_to_purge_still_logs_the_purge(sdk: Any) -> None:
    ts = sdk.client.purge("nobody")
    assert [(e.commit_ts, e.operations[0].purged) for e in sdk.client.replay("nobody")] == [(ts, True)]
    assert sdk.client.list_agents() == []


def test_after_compact_no_file_holds_the_purged_bytes(client: Any, daemon: Daemon, data_dir: Path) -> None:
    hidden = secret()
    commit(client, ("alice", "card", hidden.decode()), ("bob", "x", 1))
    commit(client, ("alice", "blob", hidden), ("alice", "kept", "visible"))
    assert files_holding(data_dir, hidden)  # in the write-ahead log at least
    client.purge("alice", key_prefix="")
    client.compact()
    assert files_holding(data_dir, hidden) == []
    assert client.get_state("bob", "x").value == 1


def test_the_purged_bytes_leave_the_files_without_compact(tmp_path: Path) -> None:
    """The daemon compacts what a purge touched by itself, right after it."""
    hidden = secret()
    data_dir = tmp_path / "data"
    with DaemonProcess(data_dir) as daemon:
        with Statehouse(daemon.addr) as client:
            commit(client, ("alice", "card", hidden), ("bob", "x", 1))
            client.purge("alice")
            deadline = time.monotonic() + WAIT_S
            while files_holding(data_dir, hidden) and time.monotonic() < deadline:
                time.sleep(0.05)  # polling for a background job's effect, bounded by WAIT_S
            assert files_holding(data_dir, hidden) == []
            assert client.get_state("bob", "x").value == 1


def test_a_purged_store_verifies_and_rebuilds(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with DaemonProcess(data_dir) as daemon:
        with Statehouse(daemon.addr) as client:
            for n in range(5):
                commit(client, ("alice", f"k{n}", n), ("alice", "other", n), ("bob", f"k{n}", n))
            client.purge("alice", key_prefix="k")
            commit(client, ("alice", "k1", "back"))
            client.purge("bob")
            before = client.get_agent_state("alice").values
    report = verify(data_dir)
    assert report.ok, str(report.divergence)
    rebuild(data_dir)
    assert verify(data_dir).ok
    with DaemonProcess(data_dir) as daemon, Statehouse(daemon.addr) as client:
        assert client.get_agent_state("alice").values == before == {"other": 4, "k1": "back"}
        assert client.list_agents() == ["alice"]
        assert client.get_state("alice", "k1").version == 1


@pytest.mark.parametrize("point", ["ledger.before_write", "ledger.after_write", "ledger.after_sync"])
def test_a_kill_during_a_purge_leaves_all_of_it_or_none(tmp_path: Path, point: str) -> None:
    """SIGKILL at a crash point of the purge's write (the third write of the store)."""
    data_dir = tmp_path / "data"
    crashing = DaemonProcess(data_dir, env={**os.environ, "STATEHOUSE_CRASH_AT": f"{point}:3"}).start()
    try:
        with Statehouse(crashing.addr, retry=None, timeout=10) as client:
            commit(client, ("alice", "k1", 1), ("alice", "other", 1), ("bob", "x", 1))
            commit(client, ("alice", "k2", 2))
            with pytest.raises(UnavailableError):
                client.purge("alice", key_prefix="k")
        assert crashing.process is not None
        assert crashing.process.wait(30) == -signal.SIGKILL  # at the crash point
    finally:
        crashing.kill()
    with DaemonProcess(data_dir) as daemon, Statehouse(daemon.addr) as client:
        keys = client.list_keys("alice")
        replayed = [(op.key, op.purged) for e in client.replay("alice") for op in e.operations]
        if point == "ledger.before_write":
            assert keys == ["k1", "k2", "other"]
            assert replayed == [("k1", False), ("other", False), ("k2", False)]
        else:  # written to the WAL before the kill (in the page cache, which a SIGKILL keeps)
            assert keys == ["other"]
            assert replayed == [("other", False), ("k", True)]
        assert client.get_state("bob", "x").value == 1
    assert verify(data_dir).ok


def test_a_reader_open_across_the_purge_delays_the_compaction_not_forever(tmp_path: Path) -> None:
    """A read view older than the purge pins the purged bytes (RocksDB keeps what a snapshot
    can see): the compactor waits for it to end, then compacts. Real store, real compactor."""
    hidden = secret()
    store = Store.open(tmp_path / "data")
    settled: list[int] = []
    done = threading.Event()
    compactor = Compactor(store, lambda ts: (settled.append(ts), done.set()))
    compactor.start()
    try:
        store.append([Event(1, "t1", 0, (EventOp("default", "alice", "card", 1, hidden),))])
        store.compact(None)  # into a table file
        reader = store.view()  # as of commit 1, before the purge
        purge = Event(2, "p", 0, (EventOp("default", "alice", "", 0, None, True),))
        result = store.purge(purge)
        compactor.owe(purge_ranges("default", "alice", result), 2)
        assert compactor.waiting.wait(WAIT_S)  # it saw the older reader and waits
        assert files_holding(tmp_path / "data", hidden)
        assert not settled
        del reader
        assert done.wait(WAIT_S)
        assert settled == [2]
        assert files_holding(tmp_path / "data", hidden) == []
    finally:
        compactor.stop()
        store.close()


def test_a_compaction_owed_before_a_crash_is_paid_after_the_restart(tmp_path: Path) -> None:
    hidden = secret()
    data_dir = tmp_path / "data"
    crashing = DaemonProcess(
        data_dir, env={**os.environ, "STATEHOUSE_CRASH_AT": "ledger.after_sync:2"}
    ).start()
    try:
        with Statehouse(crashing.addr, retry=None, timeout=10) as client:
            commit(client, ("alice", "card", hidden), ("bob", "x", 1))
            client.compact()  # the secret is in a table file now, not only in the log
            with pytest.raises(UnavailableError):
                client.purge("alice")  # durable, then killed before any compaction
        assert crashing.process is not None
        assert crashing.process.wait(30) == -signal.SIGKILL
    finally:
        crashing.kill()
    assert files_holding(data_dir, hidden)
    with DaemonProcess(data_dir) as daemon, Statehouse(daemon.addr) as client:
        assert client.list_agents() == ["bob"]
        deadline = time.monotonic() + WAIT_S
        while files_holding(data_dir, hidden) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for a background job's effect, bounded by WAIT_S
        assert files_holding(data_dir, hidden) == []
