"""The one-round-trip commit path on the wire and through the SDK: client-chosen ids opened
by the commit (TxnOpen), CommitBatch, ReadBatch, and transactions sent ahead in chunks. On
real parts: RocksDB in a temp dir, real actors, a real server on port 0, and `statehoused`
as a process. The SDK's Combiner is tested in tests/statehouse/test_batching.py, the bound
on live namespace actors in tests/actors/test_registry.py.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import C, W, fresh_id, put, stored
from threads import run_threads

from actors import ActorConfig
from rpc.aio import CallAborted, CallContext
from rpc.server import Daemon, DaemonConfig
from rpc.servicer import StatehouseServicer
from statehouse import (
    NotFoundError,
    ResourceExhaustedError,
    Statehouse,
    TransactionClosedError,
    TransactionError,
    TransactionExpiredError,
    UnavailableError,
)
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from statehouse.client import STAGE_AHEAD_BYTES
from statehouse.testing import DaemonProcess

REQUIRED_FORM = '"<namespace>:<24 lowercase hex digits>"'


def opening(txn_id: str, *mutations: pb.Mutation) -> pb.CommitRequest:
    """A CommitRequest that opens `txn_id` itself (the server's default timeout)."""
    return pb.CommitRequest(txn_id=txn_id, mutations=mutations, open=pb.TxnOpen())


def code_number(code: grpc.StatusCode) -> int:
    number: int = code.value[0]
    return number


def fingerprint(daemon: Daemon) -> tuple[object, ...]:
    assert daemon.system is not None
    view = daemon.system.view()
    return (view.last_commit_ts, list(view.events()), list(view.states()), list(view.versions()))


def event_count(daemon: Daemon) -> int:
    assert daemon.system is not None
    return len(list(daemon.system.view().events()))


def refused(call: Callable[..., Any], request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=W)
    return info.value


def value_of(stub: Any, key: str, namespace: str = "ns", agent: str = "a") -> tuple[bytes, int, int]:
    got = stub.GetState(pb.GetStateRequest(namespace=namespace, agent_id=agent, key=key, json_values=True))
    assert got.exists, key
    return got.value_json, got.version, got.commit_ts


def exists(stub: Any, key: str, namespace: str = "ns", agent: str = "a") -> bool:
    got = stub.GetState(pb.GetStateRequest(namespace=namespace, agent_id=agent, key=key))
    return bool(got.exists)


@pytest.fixture
def stub(daemon: Daemon) -> Iterator[Any]:
    channel = grpc.insecure_channel(f"127.0.0.1:{daemon.port}")
    yield pb_grpc.StatehouseServiceStub(channel)
    channel.close()


# -- TxnOpen over the raw wire ----------------------------------------------------


def test_commit_with_open_commits_in_one_call(stub: Any) -> None:
    txn_id = fresh_id()
    commit_ts = stub.Commit(opening(txn_id, put("k", b'{"n":1}'), put("j", b"[2]")), timeout=W).commit_ts
    assert commit_ts > 0
    assert value_of(stub, "k") == (b'{"n":1}', 1, commit_ts)
    assert value_of(stub, "j") == (b"[2]", 1, commit_ts)


@pytest.mark.parametrize(
    "txn_id",
    [
        "ns" + "a" * 24,  # no colon
        "ns:" + "a" * 23,
        "ns:" + "a" * 25,
        "ns:" + "ABCDEF" * 4,  # uppercase hex
        "ns:" + "g" * 24,  # not hex
        ":" + "a" * 24,  # empty namespace
        "",
    ],
    ids=["no colon", "23 digits", "25 digits", "uppercase", "not hex", "empty namespace", "empty"],
)
@pytest.mark.parametrize("method", ["Commit", "Stage"])
def test_malformed_client_id_is_invalid_argument(daemon: Daemon, stub: Any, method: str, txn_id: str) -> None:
    before = fingerprint(daemon)
    request_type = pb.CommitRequest if method == "Commit" else pb.StageRequest
    request = request_type(txn_id=txn_id, mutations=[put("k")], open=pb.TxnOpen())
    error = refused(getattr(stub, method), request)
    assert error.code() == C.INVALID_ARGUMENT, error.details()
    assert REQUIRED_FORM in error.details()
    assert fingerprint(daemon) == before
    assert not exists(stub, "k")


def test_namespace_in_the_id_is_checked_like_any_namespace(daemon: Daemon, stub: Any) -> None:
    before = fingerprint(daemon)
    for namespace in ("n" * 129, "n\x00s"):
        error = refused(stub.Commit, opening(fresh_id(namespace), put("k")))
        assert error.code() == C.INVALID_ARGUMENT, error.details()
        assert "namespace" in error.details()
    assert fingerprint(daemon) == before


def test_reused_ids_are_refused_and_write_nothing(daemon: Daemon, stub: Any) -> None:
    committed = fresh_id()
    first_ts = stub.Commit(opening(committed, put("k", b"1")), timeout=W).commit_ts
    aborted = fresh_id()
    stub.Stage(pb.StageRequest(txn_id=aborted, mutations=[put("a1")], open=pb.TxnOpen()), timeout=W)
    stub.Abort(pb.AbortRequest(txn_id=aborted), timeout=W)
    still_open = fresh_id()
    stub.Stage(pb.StageRequest(txn_id=still_open, mutations=[put("o1")], open=pb.TxnOpen()), timeout=W)
    server_issued = stub.BeginTransaction(pb.BeginTransactionRequest(namespace="ns"), timeout=W).txn_id

    before = fingerprint(daemon)
    # A commit that opens the committed id again is a retry: it gets the
    # first commit's commit_ts and writes nothing (see tests/actors/test_conditions.py).
    retried = stub.Commit(opening(committed, put("k", b"2")), timeout=W)
    assert retried.commit_ts == first_ts
    assert fingerprint(daemon) == before
    for txn_id in (committed, aborted, still_open, server_issued):
        for method, request_type in (("Commit", pb.CommitRequest), ("Stage", pb.StageRequest)):
            if (txn_id, method) == (committed, "Commit"):
                continue
            request = request_type(txn_id=txn_id, mutations=[put("k", b"2")], open=pb.TxnOpen())
            error = refused(getattr(stub, method), request)
            assert error.code() == C.FAILED_PRECONDITION, (txn_id, method, error.details())
            assert "was used before" in error.details()
            assert fingerprint(daemon) == before
    assert value_of(stub, "k")[:2] == (b"1", 1)

    # The refused opens left the transactions that held those ids as they were.
    ts = stub.Commit(pb.CommitRequest(txn_id=still_open, mutations=[put("o2")]), timeout=W).commit_ts
    assert [value_of(stub, key)[2] for key in ("o1", "o2")] == [ts, ts]
    ts = stub.Commit(pb.CommitRequest(txn_id=server_issued, mutations=[put("s")]), timeout=W).commit_ts
    assert value_of(stub, "s")[2] == ts
    assert not exists(stub, "a1")


def test_stage_with_open_then_commit_without_it(stub: Any) -> None:
    txn_id = fresh_id()
    stub.Stage(pb.StageRequest(txn_id=txn_id, mutations=[put("k", b"1")], open=pb.TxnOpen()), timeout=W)
    stub.Stage(pb.StageRequest(txn_id=txn_id, mutations=[put("j", b"2")]), timeout=W)
    assert not exists(stub, "k")  # staged is not committed
    ts = stub.Commit(pb.CommitRequest(txn_id=txn_id, mutations=[put("i", b"3")]), timeout=W).commit_ts
    assert [value_of(stub, key) for key in ("k", "j", "i")] == [(b"1", 1, ts), (b"2", 1, ts), (b"3", 1, ts)]


def test_staged_transaction_expires_after_its_timeout(daemon: Daemon, stub: Any) -> None:
    before = fingerprint(daemon)
    txn_id = fresh_id()
    stage = pb.StageRequest(txn_id=txn_id, mutations=[put("k")], open=pb.TxnOpen(timeout_ms=1))
    stub.Stage(stage, timeout=W)
    time.sleep(0.01)  # let the 1 ms timeout pass
    error = refused(stub.Commit, pb.CommitRequest(txn_id=txn_id, mutations=[put("j")]))
    assert error.code() == C.ABORTED, error.details()
    assert "expired" in error.details()
    assert fingerprint(daemon) == before
    # Nothing of it was written, so the id may open again (a redo after a crash).
    ts = stub.Commit(opening(txn_id, put("k", b'"redo"')), timeout=W).commit_ts
    assert value_of(stub, "k") == (b'"redo"', 1, ts)


@pytest.mark.parametrize("timeout_ms", [0, 600_001, 2**64 - 1])
def test_open_timeout_out_of_range_is_invalid_argument(daemon: Daemon, stub: Any, timeout_ms: int) -> None:
    before = fingerprint(daemon)
    for method, request_type in (("Commit", pb.CommitRequest), ("Stage", pb.StageRequest)):
        txn_open = pb.TxnOpen(timeout_ms=timeout_ms)
        request = request_type(txn_id=fresh_id(), mutations=[put("k")], open=txn_open)
        error = refused(getattr(stub, method), request)
        assert error.code() == C.INVALID_ARGUMENT, error.details()
        assert "timeout_ms must be between 1 and 600000" in error.details()
        assert fingerprint(daemon) == before


# -- CommitBatch ----------------------------------------------------------------------


def test_commit_batch_gives_each_commit_its_own_outcome(daemon: Daemon, stub: Any) -> None:
    reused = fresh_id("batch")
    reused_ts = stub.Commit(opening(reused, put("old", namespace="batch")), timeout=W).commit_ts
    duplicated = fresh_id("batch")
    events_before = event_count(daemon)

    requests = [
        opening(fresh_id("batch"), put("k1", b'{"first":1}', namespace="batch")),
        opening(fresh_id("batch"), put("bad", b"{'single': 'quotes'}", namespace="batch")),
        pb.CommitRequest(txn_id="batch:" + "0" * 24, mutations=[put("unknown", namespace="batch")]),
        opening(reused, put("reused", namespace="batch")),
        opening(fresh_id("other"), put("k", b'"other"', namespace="other")),
        opening(duplicated, put("dup1", namespace="batch")),
        opening(duplicated, put("dup2", namespace="batch")),
        opening(fresh_id("batch"), put("k2", b"[2]", namespace="batch")),
    ]
    outcomes = stub.CommitBatch(pb.CommitBatchRequest(commits=requests), timeout=W).outcomes

    # A commit opening an id that committed (before, or earlier in the same
    # batch) is a retry: it gets that commit's commit_ts and writes nothing.
    expected_codes = [C.OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.OK, C.OK, C.OK, C.OK, C.OK]
    assert [o.code for o in outcomes] == [code_number(c) for c in expected_codes]
    assert "not valid JSON" in outcomes[1].message
    assert "not found" in outcomes[2].message
    assert outcomes[3].commit_ts == reused_ts
    assert outcomes[6].commit_ts == outcomes[5].commit_ts
    ok = [o for i, o in enumerate(outcomes) if o.code == 0 and i not in (3, 6)]
    assert all(o.message == "" and o.commit_ts > reused_ts for o in ok)
    assert all(o.commit_ts == 0 for o in outcomes if o.code != 0)
    assert len({o.commit_ts for o in ok}) == len(ok) == 4
    in_batch_namespace = [outcomes[i].commit_ts for i in (0, 5, 7)]
    assert in_batch_namespace == sorted(in_batch_namespace)

    assert value_of(stub, "k1", "batch") == (b'{"first":1}', 1, outcomes[0].commit_ts)
    assert value_of(stub, "k", "other") == (b'"other"', 1, outcomes[4].commit_ts)
    assert value_of(stub, "dup1", "batch")[2] == outcomes[5].commit_ts
    assert value_of(stub, "k2", "batch") == (b"[2]", 1, outcomes[7].commit_ts)
    for key in ("bad", "unknown", "reused", "dup2"):
        assert not exists(stub, key, "batch"), key
    assert event_count(daemon) == events_before + 4
    after = fingerprint(daemon)

    # Each outcome is what the same request alone through Commit gets.
    for index in (1, 2):
        error = refused(stub.Commit, requests[index])
        assert (code_number(error.code()), error.details()) == (outcomes[index].code, outcomes[index].message)
    for index in (3, 6):
        assert stub.Commit(requests[index], timeout=W).commit_ts == outcomes[index].commit_ts
    assert fingerprint(daemon) == after


def test_commit_batch_of_nothing_answers_nothing(daemon: Daemon, stub: Any) -> None:
    before = fingerprint(daemon)
    assert list(stub.CommitBatch(pb.CommitBatchRequest(), timeout=W).outcomes) == []
    assert fingerprint(daemon) == before


def test_commit_batch_size_limit(daemon: Daemon, stub: Any) -> None:
    def batch(count: int) -> pb.CommitBatchRequest:
        return pb.CommitBatchRequest(commits=[opening(fresh_id(), put(f"k{i}")) for i in range(count)])

    before = fingerprint(daemon)
    error = refused(stub.CommitBatch, batch(4097))
    assert error.code() == C.RESOURCE_EXHAUSTED, error.details()
    assert "4097" in error.details() and "limit 4096" in error.details()
    assert fingerprint(daemon) == before

    outcomes = stub.CommitBatch(batch(4096), timeout=60).outcomes
    assert [o.code for o in outcomes] == [0] * 4096
    stamps = [o.commit_ts for o in outcomes]
    assert stamps == sorted(stamps) and len(set(stamps)) == 4096
    assert value_of(stub, "k4095")[2] == stamps[-1]


# -- the SDK ---------------------------------------------------------------------


class CommitCalls:
    """Counts the commit calls a client sends (wrapping its stub's methods) and how many overlap."""

    def __init__(self, client: Statehouse) -> None:
        self.lock = threading.Lock()
        self.commits = 0
        self.batch_sizes: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0
        stub = client._stub
        commit, commit_batch = stub.Commit, stub.CommitBatch

        def counted_commit(request: pb.CommitRequest, **kwargs: Any) -> Any:
            return self._track(lambda: commit(request, **kwargs), 0)

        def counted_batch(request: pb.CommitBatchRequest, **kwargs: Any) -> Any:
            return self._track(lambda: commit_batch(request, **kwargs), len(request.commits))

        stub.Commit, stub.CommitBatch = counted_commit, counted_batch

    def _track(self, call: Callable[[], Any], batch_size: int) -> Any:
        with self.lock:
            if batch_size:
                self.batch_sizes.append(batch_size)
            else:
                self.commits += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return call()
        finally:
            with self.lock:
                self.in_flight -= 1


def test_threads_sharing_a_client_commit_through_combined_calls(data_dir: Path) -> None:
    threads, per_thread = 32, 25
    stamps: dict[int, list[int]] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(threads)

    # Plain calls, so that the stub sees every one (the combining is the same on sessions).
    with DaemonProcess(data_dir) as daemon, Statehouse(daemon.addr, sessions=False) as client:
        calls = CommitCalls(client)

        def agent(n: int) -> None:
            try:
                start.wait(W)
                mine = stamps[n] = []
                for step in range(per_thread):
                    with client.begin_transaction() as tx:
                        for key in range(3):
                            tx.write(f"agent{n}", f"k{key}", {"step": step, "key": key})
                    assert tx.commit_ts is not None
                    mine.append(tx.commit_ts)
            except BaseException as exc:
                failures.append(exc)

        run_threads(agent, threads)
        assert failures == []

        every = [ts for mine in stamps.values() for ts in mine]
        assert len(every) == len(set(every)) == threads * per_thread
        # One commit per transaction on the wire, combined into fewer calls, at most 2 at once.
        assert calls.commits + sum(calls.batch_sizes) == len(every)
        assert calls.batch_sizes and min(calls.batch_sizes) >= 2
        assert calls.commits + len(calls.batch_sizes) < len(every)
        assert calls.most_in_flight <= 2
        for n in range(threads):
            for key in range(3):
                state = client.get_state(f"agent{n}", f"k{key}")
                assert (state.value, state.version) == ({"step": per_thread - 1, "key": key}, per_thread)
                assert state.commit_ts == stamps[n][-1]
            # Each thread got its own commit_ts back, not another caller's.
            assert [event.commit_ts for event in client.replay(f"agent{n}")] == stamps[n]
    assert daemon.process is not None and daemon.process.returncode == 0

    commits = daemon.events("txn.commit")  # complete: the log reader ended with the process
    assert sorted(record["commit_ts"] for record in commits) == sorted(every)
    assert all(record["ops"] == 3 for record in commits)
    assert max(record["group"] for record in commits) > 1
    assert daemon.events("txn.begin") == []  # opened by the commit itself


def test_unreachable_daemon_fails_at_commit_not_at_begin() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed on leaving the block: nothing listens there
    with Statehouse(f"127.0.0.1:{port}", timeout=5) as client:
        tx = client.begin_transaction()
        tx.write("a", "k", 1)
        with pytest.raises(TransactionError) as info:
            tx.commit()
        assert isinstance(info.value, UnavailableError)

        # The server never saw these: aborting them needs no call, so nothing fails.
        untouched = client.begin_transaction(timeout_ms=1000, namespace="elsewhere")
        untouched.write("a", "k", 1)
        untouched.abort()
        with pytest.raises(KeyError), client.begin_transaction() as tx:
            tx.write("a", "k", 1)
            raise KeyError("the agent's own error, not UNAVAILABLE from an abort")


def test_client_side_timeout_counts_from_begin(daemon: Daemon, client: Statehouse) -> None:
    before = fingerprint(daemon)
    tx = client.begin_transaction(timeout_ms=1)
    tx.write("a", "k", {"late": True})
    time.sleep(0.01)  # let the 1 ms timeout pass
    with pytest.raises(TransactionExpiredError, match="1 ms timeout"):
        tx.commit()
    with pytest.raises(TransactionClosedError):
        tx.commit()
    assert fingerprint(daemon) == before
    assert client.get_state("a", "k").exists is False


@pytest.mark.parametrize("timeout_ms", [None, 60_000])
def test_large_transaction_stages_ahead_and_commits(
    daemon: Daemon, client: Statehouse, timeout_ms: int | None
) -> None:
    assert daemon.system is not None
    chunk = "x" * (STAGE_AHEAD_BYTES // 3)
    tx = client.begin_transaction(timeout_ms=timeout_ms, namespace="big")
    for n in range(5):
        tx.write("a", f"k{n}", {"n": n, "pad": chunk})
    # The first chunk was sent ahead and opened the transaction on the server.
    status = daemon.system.status(W)
    assert [ns["open_transactions"] for ns in status["namespaces"] if ns["namespace"] == "big"] == [1]
    commit_ts = tx.commit()
    for n in range(5):
        state = client.get_state("a", f"k{n}", namespace="big")
        assert (state.value, state.version, state.commit_ts) == ({"n": n, "pad": chunk}, 1, commit_ts)
    assert len(list(client.replay("a", namespace="big"))) == 1


@pytest.mark.parametrize("failing_chunk", [1, 2])
def test_a_refused_chunk_sent_ahead_fails_the_transaction(
    daemon_config: DaemonConfig, failing_chunk: int
) -> None:
    # A chunk sent ahead leaves the client's buffer before the server answers;
    # if the server refuses it, committing the rest would silently drop it.
    # With max_txn_bytes between one and two chunks the first chunk passes and
    # the second is refused; with it below one chunk, the opening one is refused.
    limit = 1_700_000 if failing_chunk == 2 else 500_000
    daemon = Daemon(replace(daemon_config, actors=ActorConfig(max_txn_bytes=limit))).start()
    try:
        with Statehouse(f"127.0.0.1:{daemon.port}") as client:
            tx = client.begin_transaction()
            pad = "x" * 600_000
            with pytest.raises(ResourceExhaustedError):
                for n in range(4):
                    tx.write("a", f"k{n}", pad)
            with pytest.raises(TransactionClosedError, match="failed"):
                tx.write("a", "late", 1)
            with pytest.raises(TransactionClosedError, match="failed"):
                tx.commit()
            tx.abort()  # discards whatever reached the server
            assert daemon.system is not None
            assert all(ns["open_transactions"] == 0 for ns in daemon.system.status(5)["namespaces"])
            assert [client.get_state("a", f"k{n}").exists for n in range(4)] == [False] * 4
    finally:
        daemon.stop()


# -- ReadBatch: point reads of many threads in one call ---------------------------------


def test_read_batch_answers_each_read_on_its_own(stub: Any, client: Statehouse) -> None:
    with client.begin_transaction() as tx:
        tx.write("a", "k", {"n": 1})
    with client.begin_transaction() as tx:
        tx.write("a", "k", {"n": 2})
        tx.write("a", "gone", 1)
    with client.begin_transaction() as tx:
        tx.delete("a", "gone")

    def latest(key: str, agent: str = "a", json_values: bool = True) -> pb.ReadRequest:
        return pb.ReadRequest(
            latest=pb.GetStateRequest(namespace="default", agent_id=agent, key=key, json_values=json_values)
        )

    def at(key: str, version: int) -> pb.ReadRequest:
        return pb.ReadRequest(
            at_version=pb.GetStateAtVersionRequest(
                namespace="default", agent_id="a", key=key, version=version, json_values=True
            )
        )

    reads = [
        latest("k"),
        latest("never"),
        at("k", 1),
        at("k", 0),
        at("k", 9),
        latest("k", agent=""),
        pb.ReadRequest(),
        latest("gone"),
        latest("k", json_values=False),
    ]
    outcomes = stub.ReadBatch(pb.ReadBatchRequest(reads=reads), timeout=W).outcomes
    assert [o.code for o in outcomes] == [
        0,
        0,
        0,
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        grpc.StatusCode.NOT_FOUND.value[0],
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        0,
        0,
    ]
    assert (outcomes[0].state.value_json, outcomes[0].state.version) == (b'{"n":2}', 2)
    assert (outcomes[1].state.exists, outcomes[1].state.version) == (False, 0)
    assert (outcomes[2].state.value_json, outcomes[2].state.version) == (b'{"n":1}', 1)
    assert "version must be at least 1" in outcomes[3].message
    assert "has no version 9" in outcomes[4].message
    assert "agent_id" in outcomes[5].message
    assert "neither" in outcomes[6].message
    assert (outcomes[7].state.exists, outcomes[7].state.version) == (False, 2)
    assert outcomes[8].state.value.fields["n"].number_value == 2
    # Each answer is what the same read alone gets.
    alone = stub.GetState(reads[0].latest, timeout=W)
    assert outcomes[0].state == alone
    assert stub.ReadBatch(pb.ReadBatchRequest(), timeout=W).outcomes == []


def test_read_batch_size_limit(stub: Any) -> None:
    read = pb.ReadRequest(latest=pb.GetStateRequest(namespace="default", agent_id="a", key="k"))
    with pytest.raises(grpc.RpcError) as info:
        stub.ReadBatch(pb.ReadBatchRequest(reads=[read] * 4097), timeout=W)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit 4096" in info.value.details()
    assert len(stub.ReadBatch(pb.ReadBatchRequest(reads=[read] * 4096), timeout=W).outcomes) == 4096


def test_threads_sharing_a_client_read_through_combined_calls(daemon: Daemon) -> None:
    # Plain calls, so that the stub sees every one (the combining is the same on sessions).
    client = Statehouse(f"127.0.0.1:{daemon.port}", sessions=False)
    threads, per_thread = 16, 40
    with client.begin_transaction() as tx:
        for n in range(threads):
            tx.write(f"agent{n}", "k", {"n": n})
    with client.begin_transaction() as tx:
        for n in range(threads):
            tx.write(f"agent{n}", "k", {"n": n, "v": 2})
    stub = client._stub
    sizes: list[int] = []
    singles = [0]
    lock = threading.Lock()
    get_state, read_batch = stub.GetState, stub.ReadBatch

    def counted_get(request: pb.GetStateRequest, **kwargs: Any) -> Any:
        with lock:
            singles[0] += 1
        return get_state(request, **kwargs)

    def counted_batch(request: pb.ReadBatchRequest, **kwargs: Any) -> Any:
        with lock:
            sizes.append(len(request.reads))
        return read_batch(request, **kwargs)

    stub.GetState, stub.ReadBatch = counted_get, counted_batch
    start = threading.Barrier(threads)
    failures: list[BaseException] = []

    def reader(n: int) -> None:
        try:
            start.wait(W)
            for step in range(per_thread):
                if step % 2:
                    state = client.get_state(f"agent{n}", "k")
                    assert (state.value, state.version, state.key) == ({"n": n, "v": 2}, 2, "k")
                else:
                    state = client.get_state_at_version(f"agent{n}", "k", 1)
                    assert (state.value, state.version) == ({"n": n}, 1)
                    with pytest.raises(NotFoundError):
                        client.get_state_at_version(f"agent{n}", "k", 3)
        except BaseException as exc:
            failures.append(exc)

    run_threads(reader, threads, 60)
    assert failures == []
    reads = threads * (per_thread + per_thread // 2)
    assert sizes and min(sizes) >= 2  # some reads did travel together
    assert singles[0] + len(sizes) < reads
    client.close()


def test_leaving_a_with_block_after_a_refused_chunk_discards_the_staged_part(
    daemon_config: DaemonConfig,
) -> None:
    daemon = Daemon(replace(daemon_config, actors=ActorConfig(max_txn_bytes=1_700_000))).start()
    try:
        with Statehouse(f"127.0.0.1:{daemon.port}") as client:
            pad = "x" * 600_000
            with pytest.raises(ResourceExhaustedError), client.begin_transaction() as tx:
                for n in range(4):  # the first chunk is staged, the second refused
                    tx.write("a", f"k{n}", pad)
            assert daemon.system is not None
            assert all(ns["open_transactions"] == 0 for ns in daemon.system.status(5)["namespaces"])
    finally:
        daemon.stop()


def test_a_read_batch_stops_reading_before_its_answer_outgrows_a_message(
    daemon: Daemon, client: Statehouse
) -> None:
    big = "y" * 1_000_000
    for n in range(20):
        with client.begin_transaction() as tx:
            tx.write("a", f"big{n}", big)
    reads = [
        pb.ReadRequest(
            latest=pb.GetStateRequest(namespace="default", agent_id="a", key=f"big{n}", json_values=True)
        )
        for n in range(20)
    ]
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}", options=options) as channel:
        stub = pb_grpc.StatehouseServiceStub(channel)
        outcomes = stub.ReadBatch(pb.ReadBatchRequest(reads=reads), timeout=W).outcomes
    codes = [o.code for o in outcomes]
    answered = codes.index(grpc.StatusCode.ABORTED.value[0])
    assert 10 <= answered < 20 and set(codes[answered:]) == {grpc.StatusCode.ABORTED.value[0]}
    assert all(o.state.exists for o in outcomes[:answered])
    # The SDK asks again for what a batch left undone: 20 threads all get their value.
    values: dict[int, Any] = {}
    workers = [
        threading.Thread(target=lambda n=n: values.__setitem__(n, client.get_state("a", f"big{n}").value))
        for n in range(20)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(W)
    assert values == {n: big for n in range(20)}


def test_abort_after_a_commit_of_unknown_outcome_asks_the_server(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow disk cannot be made on demand, so this one fault is injected:
    # the ledger's write waits until the test lets it go, after the client's
    # deadline has passed.
    assert daemon.system is not None
    store = daemon.system.store
    write, written = store.append, threading.Event()
    go = threading.Event()

    def slow_append(events: Any, settle: bool = True) -> None:
        go.wait(W)
        write(events, settle)
        written.set()

    monkeypatch.setattr(store, "append", slow_append)
    with Statehouse(f"127.0.0.1:{daemon.port}", timeout=0.3) as client:
        tx = client.begin_transaction()
        tx.write("a", "k", "v")
        with pytest.raises(TransactionError):  # DEADLINE_EXCEEDED: it may still complete
            tx.commit()
        go.set()
        assert written.wait(W)
        with pytest.raises(TransactionClosedError, match="already committed"):
            tx.abort()  # the server says what happened instead of a silent "aborted"
        assert client.get_state("a", "k").value == "v"


# -- commits that come in together ---------------------------------------------------


def test_commits_that_come_in_together_reach_their_actor_as_one_message(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commit calls that arrive in one turn of the server's event loop, on whatever sessions
    or calls, are told to their namespace's actor together, as one CommitBatch is; each still
    gets its own outcome. Eight started at once on a loop, one of them conflicting; then one
    alone, told alone."""
    system = daemon.system
    assert system is not None
    told: list[int] = []
    tell = system.tell_commits

    def recorded(requests: Any, answers: Any) -> None:  # the real ActorSystem's, counted
        told.append(len(requests))
        tell(requests, answers)

    monkeypatch.setattr(system, "tell_commits", recorded)
    servicer = StatehouseServicer(system, 1 << 20)

    def commit(key: str, **condition: int) -> pb.CommitRequest:
        request = pb.CommitRequest(txn_id=fresh_id(), open=pb.TxnOpen(), mutations=[put(key)])
        if condition:
            request.conditions.add(namespace="ns", agent_id="a", key=key, **condition)
        return request

    async def at_once(requests: list[pb.CommitRequest]) -> list[Any]:
        calls = [servicer.Commit(request, CallContext(None)) for request in requests]
        return await asyncio.gather(*calls, return_exceptions=True)

    requests = [commit(f"together{n}") for n in range(7)] + [commit("absent", expected_version=3)]
    *committed, conflict = asyncio.run(at_once(requests))
    assert told == [8]
    assert len({answer.commit_ts for answer in committed}) == 7
    assert isinstance(conflict, CallAborted) and conflict.code == grpc.StatusCode.ABORTED
    assert all(stored(system, "ns", f"together{n}")[0] == b"1" for n in range(7))
    assert system.view().get("ns", "a", "absent") is None
    [alone] = asyncio.run(at_once([commit("alone")]))
    assert told == [8, 1] and alone.commit_ts > max(answer.commit_ts for answer in committed)
