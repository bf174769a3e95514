"""A ReadView answers every read as of its own commit, scans included, although rocksdict's
snapshot iterators read the live store (storage/view.py). On a real RocksDB: later commits
are left out, and a purge or retention pass that lands under a scan is never taken for the
view's own data: a paged read says ViewMoved (the daemon reads again), a replay goes on
on the newest view, which says HistoryCompactedError if retention took what was to come."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict
from test_retention import NOW_MS, retain, write

from rpc import reads
from rpc.server import Daemon
from rpc.servicer import VIEW_TRIES, StatehouseServicer
from statehouse import Statehouse
from statehouse._proto import statehouse_pb2 as pb
from storage import Event, EventOp, HistoryCompactedError, ReadView, Store, ViewMoved
from storage.retention import Policies, Policy


def test_rocksdict_snapshot_iterators_read_the_live_store() -> None:
    """Why views bound their scans themselves. Should a rocksdict release make this fail
    (its iterators honour the snapshot), the bounds in storage/view.py become checks only."""
    with tempfile.TemporaryDirectory() as path:
        db = Rdict(path, Options(raw_mode=True))
        db[b"a"] = b"old"
        snapshot = db.snapshot()
        db[b"a"] = b"new"
        db[b"b"] = b"added"
        assert snapshot[b"a"] == b"old"  # a point read honours the snapshot
        it = snapshot.iter()
        it.seek_to_first()
        seen = []
        while it.valid():
            seen.append((it.key(), it.value()))
            it.next()
        assert seen == [(b"a", b"new"), (b"b", b"added")]  # an iterator does not
        del it, snapshot
        db.close()


def everything(view: ReadView) -> dict[str, Any]:
    """What each kind of read of the view answers."""
    return {
        "scan": list(view.scan("ns", "a")),
        "scan_at": list(view.scan_at("ns", "a", at_ts=2)),
        "scan_reverse": list(view.scan_at("ns", "a", reverse=True)),
        "agents": list(view.agents("ns")),
        "history": list(view.history("ns", "a", "k")),
        "versions_of": list(view.versions_of("ns", "a", "k")),
        "replay": list(view.replay("ns", "a")),
        "replay_to": list(view.replay("ns", "a", 2, 99)),
        "events": list(view.events()),
        "states": list(view.states()),
        "versions": list(view.versions()),
        "record_at": view.record_at("ns", "a", "k", 2),
        "get": view.get("ns", "a", "k"),
    }


def test_a_view_answers_every_scan_as_of_its_commit(store: Store) -> None:
    write(store, ("ns", "a", "k", b"1"), ("ns", "a", "gone", b"x"))
    write(store, ("ns", "a", "k", b"2"))
    write(store, ("ns", "a", "gone", None))
    view = store.view()
    before = everything(view)
    assert [key for key, _ in before["scan"]] == ["k"]
    # Later commits: a key rewritten, one created, one deleted, a new agent.
    write(store, ("ns", "a", "k", b"3"), ("ns", "a", "new", b"n"), ("ns", "b", "k", b"b"))
    write(store, ("ns", "a", "k", None))
    # Before views bounded their scans, "scan" and "history" raised DataLossError here
    # (a value the snapshot does not hold), and "replay" and "events" held the new commits.
    assert everything(view) == before
    after = everything(store.view())
    assert after["scan"] == [("new", after["get"].__class__(1, 4, b"n"))]
    assert [e.commit_ts for e in after["replay"]] == [1, 2, 3, 4, 5]


def test_a_replay_that_retention_overtakes_says_so(store: Store) -> None:
    stamps = [write(store, ("ns", "a", "k", b"%d" % n), ("ns", "a", f"u{n}", b"u")) for n in range(1, 11)]
    view = store.view()
    replay = view.replay("ns", "a", stamps[2])  # whole when it starts: nothing was dropped
    # Retention drops k's versions but the newest 2, up to commit stamps[7] (all before now).
    assert retain(store, Policies(Policy(versions=2)), now_ms=NOW_MS) == 8
    # Before the fence, the replay left out k's dropped ops as if they had never been.
    with pytest.raises(HistoryCompactedError) as caught:
        list(replay)
    assert caught.value.horizon == stamps[7] + 1
    whole = list(store.view().replay("ns", "a", caught.value.horizon))
    assert [e.commit_ts for e in whole] == stamps[8:]


def test_a_replay_that_a_purge_overtakes_goes_on_on_the_newest_view(store: Store) -> None:
    for n in range(1, 301):  # more than one chunk of the agent's index (256)
        write(store, ("ns", "a", f"k{n % 3}", b"%d" % n), ("ns", "a", f"p{n % 2}", b"p"))
    view = store.view()
    replay = view.replay("ns", "a")
    first = [next(replay) for _ in range(10)]  # mid-way through the first chunk
    purge = Event(301, "purge", NOW_MS, (EventOp("ns", "a", "p", 0, None, True),))
    store.purge(purge)
    rest = list(replay)
    got = first + rest
    assert [e.commit_ts for e in got] == list(range(1, 302))  # each commit once, and the purge
    # What was handed out before the purge is the store before it; the rest, the store after.
    assert all(any(op.key.startswith("p") for op in e.ops) for e in got[:10])
    assert not any(op.key.startswith("p") for e in got[10:300] for op in e.ops)
    assert got[-1].ops[0].purge


@pytest.mark.parametrize(
    "read",
    [
        lambda v: list(v.scan("ns", "a")),
        lambda v: list(v.agents("ns")),
        lambda v: list(v.history("ns", "a", "p1")),
        lambda v: v.has_live_key("ns", "a"),
        lambda v: v.get_version("ns", "a", "p1", 3),
    ],
    ids=["scan", "agents", "history", "has_live_key", "get_version"],
)
def test_a_paged_read_that_a_purge_overtakes_says_so(tmp_path: Path, read: Any) -> None:
    store = Store.open(tmp_path / "data")
    try:
        write(store, ("ns", "a", "p1", b"1"), ("ns", "a", "p2", b"2"))
        write(store, ("ns", "a", "p1", b"3"))
        view = store.view()
        store.purge(Event(3, "purge", NOW_MS, (EventOp("ns", "a", "p", 0, None, True),)))
        with pytest.raises(ViewMoved):
            read(view)
        read(store.view())  # the newest view reads the purged store as it is
        assert list(store.view().scan("ns", "a")) == []
        write(store, ("other", "a", "k", b"1"))
        assert list(store.view().scan("other", "a"))  # another namespace's reads never stop
    finally:
        store.close()


def test_the_daemon_reads_a_page_again_when_a_purge_lands_under_it(
    daemon: Daemon, client: Statehouse
) -> None:
    """Real daemon, real purges between the view a ListKeys took and its scan."""
    with client.begin_transaction() as tx:
        tx.write("a", "k", 1)
        tx.write("a", "p1", 2)
    servicer = StatehouseServicer(daemon.system, 1 << 20)
    views: list[ReadView] = []

    def read(view: ReadView, purges: int = 1) -> Any:
        views.append(view)
        if len(views) <= purges:
            client.purge("a", key_prefix="p")  # acknowledged: on disk, the fence marked
        return reads.list_keys(view, pb.ListKeysRequest(agent_id="a"))

    assert list(servicer._on_a_view(read).keys) == ["k"]
    assert len(views) == 2  # the first page was read again, on a view after the purge
    views.clear()
    with pytest.raises(ViewMoved):  # a purge under every try: UNAVAILABLE, said once
        servicer._on_a_view(lambda view: read(view, purges=VIEW_TRIES))
    assert len(views) == VIEW_TRIES
