"""Conditional commits and retry-safe commits, on the wire.

Real parts throughout: RocksDB in a temp dir, real actors, a real server on
port 0, raw gRPC stubs (the SDK's side is in the SDK's own tests).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from threads import run_threads

from rpc.server import Daemon, DaemonConfig
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from storage import recovery

C = grpc.StatusCode
W = 10.0
TRAILER = "statehouse-conflict-bin"


def fresh_id(namespace: str = "ns") -> str:
    return f"{namespace}:{secrets.token_hex(12)}"


def put(key: str, value: bytes = b"1", expected: int | None = None, agent: str = "a") -> pb.Mutation:
    return pb.Mutation(namespace="ns", agent_id=agent, key=key, value_json=value, expected_version=expected)


def delete(key: str, expected: int | None = None) -> pb.Mutation:
    return pb.Mutation(namespace="ns", agent_id="a", key=key, delete=True, expected_version=expected)


def check(key: str, expected: int) -> pb.Condition:
    return pb.Condition(namespace="ns", agent_id="a", key=key, expected_version=expected)


def commit(
    txn_id: str | None = None, *mutations: pb.Mutation, conditions: tuple[pb.Condition, ...] = ()
) -> pb.CommitRequest:
    return pb.CommitRequest(
        txn_id=txn_id or fresh_id(), mutations=mutations, open=pb.TxnOpen(), conditions=conditions
    )


@pytest.fixture
def stub(daemon: Daemon) -> Iterator[Any]:
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        yield pb_grpc.StatehouseServiceStub(channel)


def state(stub: Any, key: str) -> tuple[bytes, int, bool]:
    got = stub.GetState(
        pb.GetStateRequest(namespace="ns", agent_id="a", key=key, json_values=True), timeout=W
    )
    return got.value_json, got.version, got.exists


def snapshot(daemon: Daemon) -> tuple[object, ...]:
    assert daemon.system is not None
    view = daemon.system.view()
    return (view.last_commit_ts, list(view.events()), list(view.states()), list(view.versions()))


def conflict_of(error: grpc.RpcError) -> pb.Conflict:
    trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    return pb.Conflict.FromString(trailers[TRAILER])


def refused(stub: Any, request: pb.CommitRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.Commit(request, timeout=W)
    return info.value


# -- conditions ---------------------------------------------------------------------


def test_a_write_expecting_the_current_version_commits(stub: Any) -> None:
    stub.Commit(commit(None, put("k", b"1", expected=0)), timeout=W)  # 0: must not exist
    stub.Commit(commit(None, put("k", b"2", expected=1)), timeout=W)
    stub.Commit(commit(None, delete("k", expected=2)), timeout=W)
    assert state(stub, "k") == (b"", 3, False)
    stub.Commit(commit(None, put("k", b"4", expected=0)), timeout=W)  # deleted: no live value
    assert state(stub, "k") == (b"4", 4, True)


def test_a_stale_version_fails_with_a_conflict_and_writes_nothing(daemon: Daemon, stub: Any) -> None:
    stub.Commit(commit(None, put("k", b"1")), timeout=W)
    stub.Commit(commit(None, put("k", b"2")), timeout=W)
    before = snapshot(daemon)
    error = refused(stub, commit(None, put("other", b"[1]"), put("k", b"3", expected=1)))
    assert error.code() == C.ABORTED
    assert "conflict on key 'k'" in error.details()
    assert "expected version 1, but it is at version 2" in error.details()
    conflict = conflict_of(error)
    assert (conflict.namespace, conflict.agent_id, conflict.key) == ("ns", "a", "k")
    assert (conflict.expected_version, conflict.actual_version, conflict.exists) == (1, 2, True)
    assert snapshot(daemon) == before  # "other" was not written either


@pytest.mark.parametrize(
    ("setup", "expected", "actual", "exists"),
    [
        ([put("k")], 0, 1, True),  # must not exist, but it does
        ([], 3, 0, False),  # expects a version of a key never written
        ([put("k"), delete("k")], 1, 2, False),  # deleted since version 1
    ],
)
def test_conflicts_report_the_actual_version(
    stub: Any, setup: list[pb.Mutation], expected: int, actual: int, exists: bool
) -> None:
    for mutation in setup:
        stub.Commit(commit(None, mutation), timeout=W)
    conflict = conflict_of(refused(stub, commit(None, put("k", b"9", expected=expected))))
    assert (conflict.expected_version, conflict.actual_version, conflict.exists) == (expected, actual, exists)


def test_a_condition_on_a_key_not_written_guards_the_transaction(daemon: Daemon, stub: Any) -> None:
    stub.Commit(commit(None, put("config", b"1")), timeout=W)
    ts = stub.Commit(
        commit(None, put("derived", b"1"), conditions=(check("config", 1),)), timeout=W
    ).commit_ts
    assert ts > 0
    stub.Commit(commit(None, put("config", b"2")), timeout=W)
    before = snapshot(daemon)
    error = refused(stub, commit(None, put("derived", b"2"), conditions=(check("config", 1),)))
    assert conflict_of(error).key == "config"
    assert snapshot(daemon) == before
    assert state(stub, "derived") == (b"1", 1, True)


def test_every_condition_is_checked_and_the_first_failing_one_is_named(stub: Any) -> None:
    stub.Commit(commit(None, put("a", b"1"), put("b", b"1")), timeout=W)
    request = commit(None, put("a", b"2", expected=1), put("b", b"2", expected=7))
    assert conflict_of(refused(stub, request)).key == "b"
    assert state(stub, "a") == (b"1", 1, True)


def test_conditions_of_one_batch_see_the_commits_before_them(stub: Any) -> None:
    """Two commits expecting the same version in one CommitBatch: the first wins."""
    stub.Commit(commit(None, put("counter", b"0")), timeout=W)
    racing = [commit(None, put("counter", f"{n}".encode(), expected=1)) for n in (1, 2)]
    outcomes = stub.CommitBatch(pb.CommitBatchRequest(commits=racing), timeout=W).outcomes
    assert [o.code for o in outcomes] == [0, C.ABORTED.value[0]]
    assert outcomes[1].conflict.key == "counter"
    assert (outcomes[1].conflict.expected_version, outcomes[1].conflict.actual_version) == (1, 2)
    assert "conflict on key 'counter'" in outcomes[1].message
    assert state(stub, "counter") == (b"1", 2, True)


def test_conditions_staged_ahead_are_checked_at_commit(stub: Any) -> None:
    txn_id = fresh_id()
    stage = pb.StageRequest(txn_id=txn_id, mutations=[put("k", b"1", expected=0)], open=pb.TxnOpen())
    stub.Stage(stage, timeout=W)
    stub.Commit(commit(None, put("k", b'"other"')), timeout=W)  # someone else creates it
    error = refused(stub, pb.CommitRequest(txn_id=txn_id))
    assert error.code() == C.ABORTED and conflict_of(error).actual_version == 1
    assert state(stub, "k") == (b'"other"', 1, True)


def test_sixteen_writers_incrementing_one_counter_lose_no_update(stub: Any) -> None:
    """Read, then write expecting the version read; retry on conflict."""
    stub.Commit(commit(None, put("counter", b"0", expected=0)), timeout=W)
    conflicts = []

    def increment(times: int) -> None:
        for _ in range(times):
            while True:
                value, version, _ = state(stub, "counter")
                try:
                    stub.Commit(
                        commit(None, put("counter", b"%d" % (int(value) + 1), expected=version)), timeout=W
                    )
                    break
                except grpc.RpcError as exc:
                    assert exc.code() == C.ABORTED, exc.details()
                    conflicts.append(conflict_of(exc).actual_version)

    run_threads(lambda _: increment(25), 16)
    assert state(stub, "counter") == (b"400", 401, True)
    assert conflicts  # 16 writers on one key did collide, and were told


# -- retry-safe commits ----------------------------------------------------------------


def test_a_retried_commit_gets_the_first_commit_ts_and_writes_nothing(daemon: Daemon, stub: Any) -> None:
    request = commit(None, put("k", b"1"), put("j", b"2"))
    first = stub.Commit(request, timeout=W).commit_ts
    before = snapshot(daemon)
    assert stub.Commit(request, timeout=W).commit_ts == first
    assert (
        stub.CommitBatch(pb.CommitBatchRequest(commits=[request]), timeout=W).outcomes[0].commit_ts == first
    )
    assert snapshot(daemon) == before
    assert state(stub, "k") == (b"1", 1, True)


def committed_then_restarted(daemon_config: DaemonConfig) -> tuple[pb.CommitRequest, int, Daemon]:
    """A commit opening its own id, made on one daemon, then a fresh daemon on the same data
    (its memory of finished transactions empty): the request, its commit_ts, the new daemon."""
    request = commit(None, put("k", b"1"))
    daemon = Daemon(daemon_config).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            first = pb_grpc.StatehouseServiceStub(channel).Commit(request, timeout=W).commit_ts
    finally:
        daemon.stop()
    return request, first, Daemon(daemon_config).start()


def test_a_retry_after_a_restart_is_answered_from_the_durable_index(daemon_config: DaemonConfig) -> None:
    request, first, daemon = committed_then_restarted(daemon_config)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            stub = pb_grpc.StatehouseServiceStub(channel)
            before = snapshot(daemon)
            assert stub.Commit(request, timeout=W).commit_ts == first
            assert snapshot(daemon) == before
            # Sending chunks ahead under that id is refused: it is not open, it committed.
            stage = pb.StageRequest(txn_id=request.txn_id, mutations=[put("k")], open=pb.TxnOpen())
            with pytest.raises(grpc.RpcError) as info:
                stub.Stage(stage, timeout=W)
            assert info.value.code() == C.FAILED_PRECONDITION
            assert f"committed at commit_ts {first}" in info.value.details()
    finally:
        daemon.stop()


def test_a_retry_is_answered_even_when_its_namespace_is_full(daemon_config: DaemonConfig) -> None:
    """At its open-transaction limit a namespace cannot open the retry to let the ledger
    answer it: it looks the id up itself, so the retry still gets its first commit_ts."""
    config = dataclasses.replace(
        daemon_config, actors=dataclasses.replace(daemon_config.actors, max_open_txns_per_namespace=2)
    )
    request, first, daemon = committed_then_restarted(config)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            stub = pb_grpc.StatehouseServiceStub(channel)
            for _ in range(2):
                stub.BeginTransaction(pb.BeginTransactionRequest(namespace="ns"), timeout=W)
            assert refused(stub, commit(None, put("j"))).code() == C.RESOURCE_EXHAUSTED  # full
            before = snapshot(daemon)
            assert stub.Commit(request, timeout=W).commit_ts == first
            assert snapshot(daemon) == before
    finally:
        daemon.stop()


def test_a_retried_conflicting_commit_runs_again(daemon: Daemon, stub: Any) -> None:
    """A commit that failed wrote nothing: its retry is a new attempt."""
    stub.Commit(commit(None, put("k", b"1")), timeout=W)
    request = commit(None, put("k", b"2", expected=0), put("j", b"1"))
    assert refused(stub, request).code() == C.ABORTED
    stub.Commit(commit(None, delete("k")), timeout=W)
    ts = stub.Commit(request, timeout=W).commit_ts  # now the condition holds
    assert state(stub, "k") == (b"2", 3, True)
    assert stub.Commit(request, timeout=W).commit_ts == ts  # and now it is a retry


def test_the_transaction_index_is_verified_and_rebuilt(daemon_config: DaemonConfig) -> None:
    daemon = Daemon(daemon_config).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            stub = pb_grpc.StatehouseServiceStub(channel)
            requests = [commit(None, put(f"k{n}")) for n in range(5)]
            stamps = [stub.Commit(r, timeout=W).commit_ts for r in requests]
            stub.Commit(commit(None), timeout=W)  # empty: no event, no index entry
    finally:
        daemon.stop()
    assert recovery.verify(daemon_config.data_dir).ok
    result = recovery.rebuild(daemon_config.data_dir)
    assert result.events == 5
    report = recovery.verify(daemon_config.data_dir)
    assert report.ok, report.summary()
    daemon = Daemon(daemon_config).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            stub = pb_grpc.StatehouseServiceStub(channel)
            assert [stub.Commit(r, timeout=W).commit_ts for r in requests] == stamps
    finally:
        daemon.stop()


def test_the_ledger_never_writes_one_transaction_id_twice(daemon: Daemon, stub: Any) -> None:
    """Even if the namespace actors let a repeat through (they forget after 100,000
    transactions): straight to the real ledger, in one group and in a later one."""
    from actors.messages import CommitIntent, CommitIntents, Mutation
    from actors.reply import Reply

    assert daemon.system is not None
    ledger = daemon.system._ledger
    assert ledger is not None
    txn_id = fresh_id()

    def intent(value: bytes) -> CommitIntent:
        return CommitIntent(txn_id, (Mutation("ns", "a", "k", value),), 0.0, Reply())

    together = (intent(b"1"), intent(b"2"))
    ledger.tell(CommitIntents(together))
    stamps = [i.reply.result(W) for i in together]
    later = intent(b"3")
    ledger.tell(later)
    assert stamps == [stamps[0], stamps[0]] and later.reply.result(W) == stamps[0]
    assert state(stub, "k") == (b"1", 1, True)
    assert [e.txn_id for e in daemon.system.view().events()].count(txn_id) == 1


def test_abort_after_a_restart_says_the_transaction_committed(daemon_config: DaemonConfig) -> None:
    request, first, daemon = committed_then_restarted(daemon_config)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            stub = pb_grpc.StatehouseServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Abort(pb.AbortRequest(txn_id=request.txn_id), timeout=W)
            assert info.value.code() == C.FAILED_PRECONDITION
            assert f"already committed (commit_ts {first})" in info.value.details()
            with pytest.raises(grpc.RpcError) as info:
                stub.Commit(pb.CommitRequest(txn_id=request.txn_id), timeout=W)  # without open
            assert info.value.code() == C.FAILED_PRECONDITION
    finally:
        daemon.stop()


def test_abort_after_an_unknown_outcome_asks_the_disk(daemon: Daemon, stub: Any) -> None:
    from test_watch import _FsyncFailsOnce  # simulated: a WAL fsync that fails (EIO), see there

    assert daemon.store is not None
    flaky = _FsyncFailsOnce(daemon.store._db)
    daemon.store._db = flaky
    flaky.armed = True
    request = commit(None, put("k", b"1"))
    error = refused(stub, request)
    assert error.code() == C.UNAVAILABLE and "outcome unknown" in error.details()
    # The batch reached the file before the fsync failed, so it survives the reopen: the
    # abort must not claim to have discarded it. Until the store has reopened (the
    # reaper does it within its tick), the abort says it cannot know yet.
    deadline = time.monotonic() + W
    while True:
        with pytest.raises(grpc.RpcError) as info:
            stub.Abort(pb.AbortRequest(txn_id=request.txn_id), timeout=W)
        if info.value.code() != C.UNAVAILABLE:
            break
        assert "not known until the store reopens" in info.value.details()
        assert time.monotonic() < deadline, "the store never reopened"
        time.sleep(0.05)  # polling for the reaper's reopen, bounded by the deadline
    assert info.value.code() == C.FAILED_PRECONDITION
    assert "already committed (commit_ts 1)" in info.value.details()
    assert state(stub, "k") == (b"1", 1, True)


def test_an_abort_of_an_id_never_seen_refuses_its_late_commit(stub: Any) -> None:
    request = commit(None, put("k", b"1"))
    stub.Abort(pb.AbortRequest(txn_id=request.txn_id), timeout=W)  # the commit is still on its way
    error = refused(stub, request)
    assert error.code() == C.FAILED_PRECONDITION and "used before" in error.details()
    assert state(stub, "k")[2] is False
