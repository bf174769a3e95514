"""The primitives framework adapters build on (issue 13): bytes values, cursors, get_many,
list_agents and insert-if-absent. Each case runs with `Statehouse` and with
`AsyncStatehouse` (through the blocking facade of tests/facade.py),
against a real daemon on port 0 with its default limits."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from facade import SDK, LoopThread
from threads import run_threads

from rpc.server import Daemon
from statehouse import (
    InvalidArgumentError,
    ResourceExhaustedError,
    StateResult,
    TransactionError,
)
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from storage import StorageError, Store, keys, opening, reading
from storage.rebuild import rebuild
from storage.verify import verify

BLOB = bytes(range(256)) * 3 + b"\x00"


@pytest.fixture
def stub(daemon: Daemon) -> Iterator[pb_grpc.StatehouseServiceStub]:
    """The raw contract, as a client other than our SDK sees it."""
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        yield pb_grpc.StatehouseServiceStub(channel)


def commit(client: Any, *writes: tuple[str, str, Any], if_absent: bool = False) -> int:
    with client.begin_transaction() as tx:
        for agent, key, value in writes:
            if value is None:
                tx.delete(agent, key)
            else:
                tx.write(agent, key, value, if_absent=if_absent)
    assert tx.commit_ts is not None
    return int(tx.commit_ts)


# -- bytes values ---------------------------------------------------------------------------------------


def test_bytes_come_back_as_bytes_on_every_read(sdk: SDK) -> None:
    client = sdk.client
    ts1 = commit(client, ("a", "blob", BLOB), ("a", "empty", b""), ("a", "json", {"b": b"x".hex()}))
    ts2 = commit(client, ("a", "blob", bytearray(b"second")), ("a", "view", memoryview(b"mv")))
    state = client.get_state("a", "blob")
    assert (state.value, state.version, state.commit_ts) == (b"second", 2, ts2)
    assert type(state.value) is bytes
    assert client.get_state("a", "empty").value == b""  # empty bytes are a value, not "absent"
    assert client.get_state("a", "empty").exists is True
    assert client.get_state("a", "json").value == {"b": "78"}  # JSON stays JSON
    assert client.get_state_at_version("a", "blob", 1).value == BLOB
    assert client.get_many([("a", "blob"), ("a", "view")])[1].value == b"mv"
    assert [(e.key, e.value) for e in client.scan_prefix("a", "")] == [
        ("blob", b"second"),
        ("empty", b""),
        ("json", {"b": "78"}),
        ("view", b"mv"),
    ]
    assert client.get_agent_state("a", at_commit_ts=ts1).values == {
        "blob": BLOB,
        "empty": b"",
        "json": {"b": "78"},
    }
    assert [v.value for v in client.key_history("a", "blob")] == [b"second", BLOB]
    replayed = [(op.key, op.value) for event in client.replay("a") for op in event.operations]
    assert replayed == [
        ("blob", BLOB),
        ("empty", b""),
        ("json", {"b": "78"}),
        ("blob", b"second"),
        ("view", b"mv"),
    ]
    with client.watch("a", start_ts=ts2) as watch:
        event = next(iter(watch))
    assert {op.key: op.value for op in event.operations} == {"blob": b"second", "view": b"mv"}


def test_a_key_can_change_between_json_and_bytes(sdk: SDK) -> None:
    client = sdk.client
    commit(client, ("a", "k", {"n": 1}))
    commit(client, ("a", "k", b"raw"))
    commit(client, ("a", "k", "b'raw'"))
    assert [v.value for v in client.key_history("a", "k")] == ["b'raw'", b"raw", {"n": 1}]


def test_a_900_kb_blob_works_with_the_default_limit(sdk: SDK) -> None:
    blob = os.urandom(900 * 1024)
    commit(sdk.client, ("a", "checkpoint", blob))
    assert sdk.client.get_state("a", "checkpoint").value == blob


def test_a_value_over_the_limit_is_resource_exhausted(sdk: SDK, daemon: Daemon) -> None:
    limit = daemon.config.max_value_bytes
    with pytest.raises(
        ResourceExhaustedError, match=f"is {limit + 1} bytes; the limit is {limit} bytes"
    ) as info:
        commit(sdk.client, ("a", "huge", b"\x01" * (limit + 1)))
    assert isinstance(info.value, TransactionError)
    assert sdk.client.get_state("a", "huge").exists is False
    commit(sdk.client, ("a", "huge", b"\x01" * limit))  # the limit itself is fine
    assert len(sdk.client.get_state("a", "huge").value) == limit


def test_bytes_inside_json_are_refused_before_sending(sdk: SDK) -> None:
    with pytest.raises(InvalidArgumentError, match="not JSON-serializable"):
        with sdk.client.begin_transaction() as tx:
            tx.write("a", "k", {"blob": b"nested"})


@pytest.mark.parametrize("json_values", [False, True])
def test_a_reader_without_bytes_values_gets_a_clear_error(
    client: Any, stub: pb_grpc.StatehouseServiceStub, json_values: bool
) -> None:
    commit(client, ("a", "blob", b"\x00raw"), ("a", "text", "fine"))
    reads: list[Any] = [
        lambda: stub.GetState(pb.GetStateRequest(agent_id="a", key="blob", json_values=json_values)),
        lambda: stub.ScanPrefix(pb.ScanPrefixRequest(agent_id="a", json_values=json_values)),
        lambda: stub.KeyHistory(pb.KeyHistoryRequest(agent_id="a", key="blob", json_values=json_values)),
        lambda: list(stub.Replay(pb.ReplayRequest(agent_id="a", json_values=json_values))),
    ]
    for read in reads:
        with pytest.raises(grpc.RpcError) as info:
            read()
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "value of key 'blob' is bytes (4 bytes)" in info.value.details()
        assert "bytes_values" in info.value.details()
    text = stub.GetState(pb.GetStateRequest(agent_id="a", key="text", json_values=True))
    assert text.value_json == b'"fine"'  # the daemon goes on serving, JSON as before
    raw = stub.GetState(pb.GetStateRequest(agent_id="a", key="blob", bytes_values=True))
    assert raw.HasField("value_bytes") and raw.value_bytes == b"\x00raw"


# -- cursors --------------------------------------------------------------------------------------------


def test_listings_take_reverse_limit_and_a_cursor(sdk: SDK) -> None:
    client = sdk.client
    commit(client, *[("t", f"ckpt:{n:03d}", n) for n in range(12)], ("t", "other", 0))
    keys_ = [f"ckpt:{n:03d}" for n in range(12)]
    assert [e.key for e in client.scan_prefix("t", "ckpt:", reverse=True, limit=1)] == ["ckpt:011"]
    assert [e.value for e in client.scan_prefix("t", "ckpt:", reverse=True, limit=3)] == [11, 10, 9]
    assert [e.key for e in client.scan_prefix("t", "ckpt:", start_after="ckpt:009")] == keys_[10:]
    assert [e.key for e in client.scan_prefix("t", "ckpt:", reverse=True, start_after="ckpt:002")] == [
        "ckpt:001",
        "ckpt:000",
    ]
    # The cursor need not exist, and may lie outside the prefix.
    assert [e.key for e in client.scan_prefix("t", "ckpt:", start_after="ckpt:0055", limit=2)] == keys_[6:8]
    assert client.scan_prefix("t", "ckpt:", start_after="zzz") == []
    assert [e.key for e in client.scan_prefix("t", "ckpt:", reverse=True, start_after="zzz", limit=1)] == [
        "ckpt:011"
    ]
    assert client.scan_prefix("t", "ckpt:", reverse=True, start_after="a") == []
    assert client.list_keys("t", prefix="ckpt:", reverse=True, limit=2) == ["ckpt:011", "ckpt:010"]
    assert client.list_keys("t", reverse=True, limit=1) == ["other"]
    assert client.list_keys("t", start_after="ckpt:010") == ["ckpt:011", "other"]
    # Continuing from the last key of one call walks the whole prefix, newest first.
    walked: list[str] = []
    cursor = None
    while batch := client.list_keys("t", prefix="ckpt:", reverse=True, limit=5, start_after=cursor):
        walked += batch
        cursor = batch[-1]
    assert walked == keys_[::-1]


def test_reverse_pages_and_time_travel(sdk: SDK) -> None:
    client = sdk.client
    ts = commit(client, *[("t", f"k{n}", n) for n in range(5)])
    commit(client, ("t", "k5", 5), ("t", "k2", None))
    page = client.scan_prefix_page("t", "k", limit=2, reverse=True)
    assert [e.key for e in page.items] == ["k5", "k4"]
    page = client.scan_prefix_page("t", "k", limit=2, reverse=True, page_token=page.next_page_token)
    assert [e.key for e in page.items] == ["k3", "k1"]  # k2 is deleted
    keys_page = client.list_keys_page("t", limit=2, reverse=True, at_commit_ts=ts)
    assert keys_page.items == ["k4", "k3"] and keys_page.commit_ts == ts
    rest = client.list_keys_page(
        "t", limit=10, reverse=True, at_commit_ts=ts, page_token=keys_page.next_page_token
    )
    assert rest.items == ["k2", "k1", "k0"] and rest.next_page_token is None
    # A token is bound to its order: a reverse token sent forward is refused.
    with pytest.raises(InvalidArgumentError, match="page_token was made for another request"):
        client.list_keys_page("t", limit=2, at_commit_ts=ts, page_token=keys_page.next_page_token)


def test_cursor_arguments_are_checked(sdk: SDK) -> None:
    client = sdk.client
    with pytest.raises(InvalidArgumentError, match="limit must be a whole number >= 1"):
        client.scan_prefix("t", "", limit=0)
    with pytest.raises(InvalidArgumentError, match="start_after must not contain NUL"):
        client.list_keys("t", start_after="a\x00b")
    with pytest.raises(InvalidArgumentError, match="reverse must be True or False"):
        client.list_keys("t", reverse="yes")


# -- get_many -------------------------------------------------------------------------------------------


def test_get_many_answers_in_order_as_of_one_commit(sdk: SDK) -> None:
    client = sdk.client
    commit(client, ("a", "x", 1), ("b", "y", b"two"))
    ts = commit(client, ("a", "x", None))
    got = client.get_many([("b", "y"), ("a", "x"), ("nobody", "z"), ("b", "y")])
    assert got.commit_ts == ts
    assert [r.key for r in got] == ["y", "x", "z", "y"]
    assert got[0] == StateResult(b"two", 1, ts - 1, True)
    assert (got[1].exists, got[1].version) == (False, 2)
    assert (got[2].exists, got[2].version) == (False, 0)
    assert len(got) == 4 and got.results[3] == got[0]
    empty = client.get_many([])
    assert (empty.results, empty.commit_ts) == ([], ts)
    with pytest.raises(InvalidArgumentError, match=r"get_many takes \(agent_id, key\) pairs"):
        client.get_many([("a", "x", "extra")])
    with pytest.raises(InvalidArgumentError, match="key must not be empty"):
        client.get_many([("a", "")])


def test_get_many_never_sees_part_of_a_commit(sdk: SDK, client: Any) -> None:
    """A writer moves two counters together; every get_many sees them equal."""
    commit(client, ("p", "left", 0), ("q", "right", 0))
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            commit(client, ("p", "left", n), ("q", "right", n))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = set()
        for _ in range(200):
            left, right = sdk.client.get_many([("p", "left"), ("q", "right")])
            assert left.value == right.value
            seen.add(left.value)
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 1  # the writer did move on while reading


def test_get_many_of_more_than_one_answer_holds(sdk: SDK) -> None:
    """Answers past the daemon's 16 MiB per ReadBatch come in further calls, at the same commit."""
    client = sdk.client
    blob = os.urandom(3 * 1024 * 1024)
    for n in range(7):
        commit(client, ("big", f"k{n}", blob[: len(blob) - n]))
    got = client.get_many([("big", f"k{n}") for n in range(7)])
    assert [len(r.value) for r in got] == [len(blob) - n for n in range(7)]


def test_read_batch_at_a_commit_reads_the_past(client: Any, stub: pb_grpc.StatehouseServiceStub) -> None:
    ts = commit(client, ("a", "k", "old"))
    commit(client, ("a", "k", "new"))
    read = pb.ReadRequest(latest=pb.GetStateRequest(agent_id="a", key="k", json_values=True))
    past = stub.ReadBatch(pb.ReadBatchRequest(reads=[read], at_commit_ts=ts))
    assert (past.commit_ts, past.outcomes[0].state.value_json) == (ts, b'"old"')
    with pytest.raises(grpc.RpcError) as info:
        stub.ReadBatch(pb.ReadBatchRequest(reads=[read], at_commit_ts=ts + 5))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "after the last commit" in info.value.details()


# -- list_agents ----------------------------------------------------------------------------------------


def test_list_agents_in_order_paged_and_filtered(sdk: SDK) -> None:
    client = sdk.client
    commit(client, *[(f"thread-{n:04d}", "k", n) for n in range(1050)], ("other", "k", 1), ("gone", "k", 1))
    commit(client, ("gone", "k", None))  # no live key left: not listed
    with client.begin_transaction(namespace="ns2") as tx:
        tx.write("elsewhere", "k", 1)
    threads = [f"thread-{n:04d}" for n in range(1050)]
    assert client.list_agents() == ["other", *threads]  # more than one page of 1,000
    assert client.list_agents(prefix="thread-", limit=3) == threads[:3]
    assert client.list_agents(prefix="thread-", reverse=True, limit=2) == threads[-1:-3:-1]
    assert client.list_agents(start_after="thread-1047") == threads[-2:]
    assert client.list_agents(prefix="thread-", reverse=True, start_after="thread-0002") == threads[1::-1]
    assert client.list_agents(namespace="ns2") == ["elsewhere"]
    assert client.list_agents(namespace="empty") == []
    with pytest.raises(InvalidArgumentError, match="limit must be a whole number >= 1"):
        client.list_agents(limit=0)


# -- insert-if-absent -----------------------------------------------------------------------------------


def test_if_absent_skips_only_that_write(sdk: SDK) -> None:
    client = sdk.client
    commit(client, ("a", "taken", "first"))
    with client.begin_transaction() as tx:
        tx.write("a", "taken", "second", if_absent=True)  # skipped
        tx.write("a", "free", "mine", if_absent=True)  # written
        tx.write("a", "plain", 1)  # written
    assert client.get_state("a", "taken") == StateResult("first", 1, 1, True)
    assert client.get_state("a", "free").value == "mine"
    assert [op.key for op in list(client.replay("a"))[-1].operations] == ["free", "plain"]
    # A deleted key has no live value: the insert writes its next version.
    commit(client, ("a", "taken", None))
    commit(client, ("a", "taken", b"third"), if_absent=True)
    assert (client.get_state("a", "taken").value, client.get_state("a", "taken").version) == (b"third", 3)


def test_a_commit_whose_every_write_is_skipped_writes_nothing(sdk: SDK) -> None:
    client = sdk.client
    ts = commit(client, ("a", "k", 1))
    assert commit(client, ("a", "k", 2), if_absent=True) == ts  # ordered after what came before
    assert [e.commit_ts for e in client.replay("a")] == [ts]
    assert client.get_state("a", "k").value == 1


def test_if_absent_first_writer_wins_among_many(sdk: SDK, daemon: Daemon, loop_thread: LoopThread) -> None:
    writers = [SDK(sdk.kind, f"127.0.0.1:{daemon.port}", loop_thread) for _ in range(8)]
    commit_ts: list[int] = []
    lock = threading.Lock()

    def insert(n: int) -> None:
        ts = commit(writers[n].client, ("race", "slot", f"writer-{n}"), if_absent=True)
        with lock:
            commit_ts.append(ts)

    run_threads(insert, 8)
    for writer in writers:
        writer.close()
    history = sdk.client.key_history("race", "slot")
    assert len(history) == 1  # one write made, seven skipped, none failed
    assert len(commit_ts) == 8 and min(commit_ts) == history[0].commit_ts


def test_if_absent_with_expected_version_is_refused(sdk: SDK) -> None:
    tx = sdk.client.begin_transaction()
    with pytest.raises(InvalidArgumentError, match="if_absent and expected_version do not go together"):
        tx.write("a", "k", 1, if_absent=True, expected_version=0)
    tx.abort()


# -- the AGENTS index: verify, rebuild, and stores made before it -------------------------------------------


def _store_with_agents(path: Path) -> None:
    from actors import ActorConfig, ActorSystem, Mutation

    store = Store.open(path)
    system = ActorSystem(store, ActorConfig()).start()
    try:
        for agent in ("b", "a", "c"):
            system.commit(system.begin("default", None, 5)[0], [Mutation("default", agent, "k", b"1")], 5)
        system.commit(system.begin("default", None, 5)[0], [Mutation("default", "c", "k", None)], 5)
    finally:
        system.stop()
        store.close()


def test_a_store_of_schema_1_gets_its_agents_index_when_opened(tmp_path: Path) -> None:
    """A store written before the AGENTS table existed: made here by removing the table and
    setting schema 1 with RocksDB directly (there is no older daemon in this repo to run)."""
    path = tmp_path / "data"
    _store_with_agents(path)
    db = opening.open_read_write(path)
    for key, _ in list(reading.scan(db, keys.AGENTS, "the AGENTS table")):
        db.delete(key)
    db.put(keys.META_SCHEMA, keys.u64(1))
    db.close()
    with pytest.raises(StorageError, match=r"schema version 1.*start statehoused on it once"):
        verify(path)  # verify reads the current schema only
    store = Store.open(path)
    try:
        assert list(store.view().agents("default")) == ["a", "b"]  # c holds no live key
    finally:
        store.close()
    assert verify(path).ok


def test_verify_reports_and_rebuild_restores_the_agents_index(tmp_path: Path) -> None:
    path = tmp_path / "data"
    _store_with_agents(path)
    db = opening.open_read_write(path)
    db.delete(keys.agent_key("default", "a"))
    db.put(keys.agent_key("default", "stranger"), b"")
    db.close()
    report = verify(path)
    assert report.by_table == {"AGENTS": 2}
    assert "namespace='default' agent='stranger'" in str(report.divergence)  # the first of the two
    rebuild(path)
    assert verify(path).ok


def test_get_many_of_more_pairs_than_one_read_batch_carries(sdk: Any) -> None:
    client = sdk.client
    commit(client, *[("wide", f"k{n}", n) for n in range(0, 5000, 7)])
    got = client.get_many([("wide", f"k{n}") for n in range(5000)])  # the daemon takes 4,096 a call
    assert len(got) == 5000
    assert [r.value for r in got if r.exists] == list(range(0, 5000, 7))


def test_replay_checks_its_arguments_when_called(sdk: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="after end_ts"):
        sdk.client.replay("a", 5, 1)
    with pytest.raises(InvalidArgumentError, match="agent_id must not be empty"):
        sdk.client.replay("")
