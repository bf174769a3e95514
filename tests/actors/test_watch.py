"""Watch on the wire: history then live with no gap or duplicate at the seam,
filters, slow watchers cut off within a bound, cancellation and shutdown.

Real parts: RocksDB in a temp dir, real actors, a real server on port 0, raw
gRPC stubs (the SDK's watch is tested with the SDK).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import C, W, wait_until

from actors import ActorConfig, WatchFilter
from actors.watch import WatchHub
from rpc.server import Daemon, DaemonConfig
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from storage import Event, EventOp


@pytest.fixture
def stub(daemon: Daemon) -> Iterator[Any]:
    options = [("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}", options=options) as channel:
        yield pb_grpc.StatehouseServiceStub(channel)


def commit(stub: Any, *writes: tuple[str, str, bytes], namespace: str = "ns") -> int:
    mutations = [pb.Mutation(namespace=namespace, agent_id=a, key=k, value_json=v) for a, k, v in writes]
    request = pb.CommitRequest(
        txn_id=f"{namespace}:{secrets.token_hex(12)}", open=pb.TxnOpen(), mutations=mutations
    )
    ts: int = stub.Commit(request, timeout=W).commit_ts
    return ts


def watch(
    stub: Any, agent: str = "", start: int | None = None, prefix: str = "", namespace: str = "ns"
) -> Any:
    request = pb.WatchRequest(
        namespace=namespace, agent_id=agent, key_prefix=prefix, start_ts=start, json_values=True
    )
    return stub.Watch(request, timeout=60)


def events_until(stream: Any, count: int) -> list[pb.ReplayEvent]:
    events: list[pb.ReplayEvent] = []
    for response in stream:
        events.extend(response.events)
        if len(events) >= count:
            return events
    raise AssertionError(f"the stream ended after {len(events)} of {count} events")


def test_history_then_live_has_no_gap_and_no_duplicate_at_the_seam(stub: Any) -> None:
    for n in range(50):
        commit(stub, ("a", f"k{n % 7}", b"%d" % n))
    acked: list[int] = []
    started = threading.Event()

    def writer() -> None:
        for n in range(200):
            acked.append(commit(stub, ("a", f"k{n % 7}", b"%d" % n)))
            started.set()

    thread = threading.Thread(target=writer)
    thread.start()
    started.wait(W)
    stream = watch(stub, "a", start=1)  # subscribes while the writer commits
    events = events_until(stream, 250)
    thread.join()
    stream.cancel()
    assert 0 < len(acked) == 200
    assert [event.commit_ts for event in events] == list(range(1, 251))
    assert all(event.agent_id == "a" and event.txn_id.startswith("ns:") for event in events)
    assert [op.value_json for op in events[-1].operations] == [b"199"]


def test_without_start_only_new_commits_arrive(stub: Any) -> None:
    old = commit(stub, ("a", "k", b"1"))
    stream = watch(stub, "a")
    first = next(stream)
    assert (list(first.events), first.progress_ts) == ([], old)
    new = commit(stub, ("a", "k", b"2"))
    (event,) = events_until(stream, 1)
    assert (event.commit_ts, event.operations[0].version, event.operations[0].value_json) == (new, 2, b"2")
    stream.cancel()


def test_a_namespace_watch_sees_every_agent_and_splits_commits_by_agent(stub: Any) -> None:
    stream = watch(stub)
    next(stream)
    ts = commit(stub, ("a", "x", b"1"), ("b", "y", b"2"), ("a", "z", b"3"))
    commit(stub, ("c", "q", b"4"), namespace="elsewhere")  # another namespace: not seen
    last = commit(stub, ("b", "y", b"5"))
    events = events_until(stream, 3)
    assert [(e.commit_ts, e.agent_id, [op.key for op in e.operations]) for e in events] == [
        (ts, "a", ["x", "z"]),
        (ts, "b", ["y"]),
        (last, "b", ["y"]),
    ]
    stream.cancel()


def test_a_key_prefix_keeps_only_matching_operations(stub: Any) -> None:
    commit(stub, ("a", "approval/1", b"1"), ("a", "notes", b"2"))
    stream = watch(stub, "a", start=1, prefix="approval/")
    commit(stub, ("a", "notes", b"3"))  # nothing of it matches: no event
    live = commit(stub, ("a", "approval/2", b"4"), ("a", "log", b"5"))
    events = events_until(stream, 2)
    assert [(e.commit_ts, [op.key for op in e.operations]) for e in events] == [
        (1, ["approval/1"]),
        (live, ["approval/2"]),
    ]
    stream.cancel()


def test_catching_up_on_a_long_log_says_how_far_it_got(stub: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import rpc.servicer

    # Many commits of another namespace, then one of ours: a namespace watch from
    # commit_ts 1 scans them all and matches only the last.
    for _ in range(3):
        batch = [
            pb.CommitRequest(
                txn_id=f"busy:{secrets.token_hex(12)}",
                open=pb.TxnOpen(),
                mutations=[pb.Mutation(namespace="busy", agent_id="a", key=f"k{n}", value_json=b"1")],
            )
            for n in range(1000)
        ]
        stub.CommitBatch(pb.CommitBatchRequest(commits=batch), timeout=W)
    ours = commit(stub, ("a", "k", b"1"), namespace="quiet")
    monkeypatch.setattr(rpc.servicer, "WATCH_HEARTBEAT_SECONDS", 0.0)  # say it at every chance
    stream = watch(stub, start=1, namespace="quiet")
    assert next(stream).progress_ts == 0  # registered
    responses = []
    for response in stream:
        responses.append((response.progress_ts, [e.commit_ts for e in response.events]))
        if response.events:
            break
    stream.cancel()
    # Word every 1,024 commits scanned, with nothing to send, then the match.
    assert responses == [(1024, []), (2048, []), (ours, [ours])]


def test_a_watcher_wakes_promptly_when_another_client_writes(daemon: Daemon, stub: Any) -> None:
    """The approval use case on the wire; the latency is printed, not asserted."""
    stream = watch(stub, "agent-1", prefix="approval")
    next(stream)
    woke: list[float] = []

    def waiter() -> None:
        for response in stream:
            if response.events:
                woke.append(time.perf_counter())
                return

    thread = threading.Thread(target=waiter)
    thread.start()
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        human = pb_grpc.StatehouseServiceStub(channel)
        commit(human, ("agent-1", "approval", b'"granted"'))
        acked = time.perf_counter()
    thread.join(W)
    assert woke, "the watcher did not wake"
    print(f"watch woke {(woke[0] - acked) * 1000:.2f} ms after the writer's commit returned")
    stream.cancel()


@pytest.mark.parametrize("actor_config", [ActorConfig(watch_max_bytes=1 << 20)])
def test_a_slow_watcher_is_cut_off_within_the_bound_and_resumes(daemon: Daemon, stub: Any) -> None:
    assert daemon.system is not None
    hub = daemon.system.watches
    big = b'"' + b"x" * 100_000 + b'"'
    stream = watch(stub, "a")
    next(stream)  # registered; now it reads nothing while commits pile up
    stamps = []
    while not hub.status()["cut_offs"]:
        assert len(stamps) < 2000, "never cut off: the daemon buffered without bound"
        stamps.append(commit(stub, ("a", f"k{len(stamps) % 10}", big)))
    (cut,) = hub.status()["watchers"]  # type: ignore[misc]
    assert cut["cut_off"] and cut["queued_bytes"] == 0  # its queue was dropped at once
    assert cut["peak_bytes"] <= (1 << 20) + 2 * len(big)  # and never grew past the bound
    got: list[int] = []
    with pytest.raises(grpc.RpcError) as info:
        for response in stream:
            got += [event.commit_ts for event in response.events]
    assert info.value.code() == C.RESOURCE_EXHAUSTED
    resume = got[-1] + 1 if got else stamps[0]
    assert f"resume from commit_ts {resume}" in info.value.details()
    assert got == stamps[: len(got)]  # what it got before the cut had no gap

    again = watch(stub, "a", start=resume)
    rest = [event.commit_ts for event in events_until(again, len(stamps) - len(got))]
    assert got + rest == stamps
    again.cancel()


def test_cancelling_a_watch_unregisters_it(daemon: Daemon, stub: Any) -> None:
    assert daemon.system is not None
    hub = daemon.system.watches
    stream = watch(stub, "a")
    next(stream)
    assert len(hub.status()["watchers"]) == 1  # type: ignore[arg-type]
    stream.cancel()
    wait_until(lambda: not hub.status()["watchers"], "the cancelled watcher is gone")
    commit(stub, ("a", "k", b"1"))  # routing to nobody is fine


def test_shutdown_ends_watches_with_where_to_resume(daemon_config: DaemonConfig) -> None:
    daemon = Daemon(daemon_config).start()
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stub = pb_grpc.StatehouseServiceStub(channel)
        ts = commit(stub, ("a", "k", b"1"))
        stream = watch(stub, "a", start=1)
        assert events_until(stream, 1)[0].commit_ts == ts
        daemon.stop()
        with pytest.raises(grpc.RpcError) as info:
            list(stream)
    assert info.value.code() == C.UNAVAILABLE
    assert f"resume the watch from commit_ts {ts + 1}" in info.value.details()


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"namespace": "ns", "agent_id": "a\x00b"}, "agent_id must not contain NUL"),
        ({"namespace": "n" * 200}, "namespace is 200 bytes"),
        ({"namespace": "ns", "key_prefix": "p" * 2000}, "prefix is 2000 bytes"),
    ],
)
def test_bad_watch_requests_are_invalid_argument(
    stub: Any, request_fields: dict[str, str], message: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        next(stub.Watch(pb.WatchRequest(**request_fields), timeout=W))
    assert info.value.code() == C.INVALID_ARGUMENT
    assert message in info.value.details()


# -- the hub alone ----------------------------------------------------------------------


def event(commit_ts: int, *ops: tuple[str, str, str]) -> Event:
    return Event(commit_ts, f"ns:{commit_ts:024x}", 0, tuple(EventOp(n, a, k, 1, b"1") for n, a, k in ops))


def test_the_hub_routes_only_what_a_watcher_follows_and_bounds_its_queue(tmp_path: Path) -> None:
    hub = WatchHub(last_commit_ts=10, max_events=3, max_bytes=1 << 20)
    agent, routed = hub.subscribe(WatchFilter("ns", "a", "p"))
    whole, _ = hub.subscribe(WatchFilter("ns", None))
    assert routed == 10
    hub.publish([event(11, ("ns", "a", "p1"), ("ns", "b", "p2")), event(12, ("other", "a", "p1"))])
    hub.publish([event(13, ("ns", "a", "q"))])
    taken, progress = agent.take(0, 100, 1 << 20)
    assert [(e.commit_ts, [op.key for op in e.ops]) for e in taken] == [(11, ["p1"])]
    assert progress == 13  # commits 12 and 13 were considered, and did not match
    taken, progress = whole.take(0, 100, 1 << 20)
    assert [(e.commit_ts, e.ops[0].agent_id) for e in taken] == [(11, "a"), (11, "b"), (13, "a")]
    hub.publish([event(ts, ("ns", "a", "p")) for ts in range(14, 18)])  # 4 > max_events
    with pytest.raises(Exception, match="resume from commit_ts 14"):
        agent.take(0, 100, 1 << 20)
    hub.close()
    with pytest.raises(Exception, match="shutting down"):
        hub.subscribe(WatchFilter("ns", "a"))


def test_commits_that_reach_the_log_without_being_routed_cut_every_watcher_off_to_reread(
    tmp_path: Path,
) -> None:
    """If the ledger publishes commit 15 after 12 (13-14 reached the log but could not be read
    back to route them), no watcher may report progress past 12 without them: each is cut off
    and resumes from what it took, reading 13-14 from the log."""
    hub = WatchHub(last_commit_ts=10)
    agent, _ = hub.subscribe(WatchFilter("ns", "a"))
    whole, _ = hub.subscribe(WatchFilter("ns", None))
    hub.publish([event(11, ("ns", "a", "k")), event(12, ("ns", "b", "k"))])
    assert agent.take(0, 100, 1 << 20)[1] == 12
    hub.publish([event(15, ("ns", "a", "k"))])
    with pytest.raises(Exception, match="resume from commit_ts 13"):
        agent.take(0, 100, 1 << 20)
    with pytest.raises(Exception, match=r"could not be read back.*resume from commit_ts 11"):
        whole.take(0, 100, 1 << 20)  # it had taken nothing yet
    assert hub.cut_offs == 2


class _FsyncFailsOnce:
    """RocksDB whose next WAL fsync fails after the bytes reached the file.

    A mock, because a failing fsync cannot be caused for real here: it
    stands in for EIO from the disk, the one fault where a commit's outcome
    is unknown (it survives when the store reopens).
    """

    def __init__(self, db: Any) -> None:
        self._db = db
        self.armed = False

    def flush_wal(self, sync: bool) -> None:
        self._db.flush_wal(sync)
        if self.armed:
            self.armed = False
            raise OSError("injected: fsync EIO")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def test_a_commit_that_survives_a_failed_fsync_reaches_watchers(daemon: Daemon, stub: Any) -> None:
    assert daemon.store is not None and daemon.system is not None
    flaky = _FsyncFailsOnce(daemon.store._db)
    daemon.store._db = flaky
    first = commit(stub, ("a", "k", b"1"))
    live = watch(stub, "a")
    next(live)
    flaky.armed = True
    with pytest.raises(grpc.RpcError) as info:
        commit(stub, ("a", "k", b"2"))
    assert "outcome unknown" in info.value.details()
    third = commit(stub, ("a", "k", b"3"))  # reopens the store first: the second commit survived
    assert third == first + 2
    got = [(e.commit_ts, e.operations[0].value_json) for e in events_until(live, 2)]
    assert got == [(first + 1, b"2"), (third, b"3")]
    live.cancel()
