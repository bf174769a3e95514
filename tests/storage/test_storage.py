"""storage/: key layout, record codecs, the atomic append and reads, on a real RocksDB."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import Event, EventOp, Store, StoreLockedError, keys
from storage.derive import derived_records
from storage.durable import read_mark
from storage.records import (
    Blob,
    StatePointer,
    StateRecord,
    VersionPointer,
    VersionRecord,
    commit_records,
    decode_event,
    decode_slice,
    decode_state,
    decode_version,
    encode_event,
    encode_slice,
    encode_state,
    encode_version,
    slots,
    value_records,
)

names = st.text(min_size=1, max_size=12)


def op(ns: str, agent: str, key: str, version: int, value: bytes | None) -> EventOp:
    return EventOp(ns, agent, key, version, value)


def test_old_colon_collision_maps_to_distinct_keys() -> None:
    # The original store keyed "ns:agent:key": agent "a", key "b:c" == agent "a:b", key "c".
    assert keys.state_key("ns", "a", "b:c") != keys.state_key("ns", "a:b", "c")
    assert keys.version_key("ns", "a", "b:c", 1) != keys.version_key("ns", "a:b", "c", 1)


@given(a=st.tuples(names, names, names), b=st.tuples(names, names, names))
def test_storage_keys_are_injective(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    if a != b:
        assert keys.state_key(*a) != keys.state_key(*b)
        assert keys.version_key(*a, 7) != keys.version_key(*b, 7)


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_counter_byte_order_is_numeric_order(x: int, y: int) -> None:
    assert (keys.u64(x) < keys.u64(y)) == (x < y)


def test_prefix_end() -> None:
    assert keys.prefix_end(b"ab") == b"ac"
    assert keys.prefix_end(b"a\xff") == b"b"
    assert keys.prefix_end(b"\xff\xff") is None


@given(
    version=st.integers(1, 2**63),
    ts=st.integers(1, 2**63),
    value=st.one_of(st.none(), st.binary(min_size=1, max_size=64)),
)
def test_record_codecs_round_trip(version: int, ts: int, value: bytes | None) -> None:
    pointer = StatePointer(version, ts, 1, 1 if value is None else 0)
    assert decode_state(encode_state(pointer)) == pointer
    assert decode_version(encode_version(VersionPointer(ts, 1, 0))) == VersionPointer(ts, 1, 0)
    ops = (op("n2", "a2", "ü", 1, None), op("ns", "ag", "k", version, value))
    event = Event(ts, "txn-1", 1234, ops)
    stored = dict(value_records(event))  # the values, each a record of its own
    assert list(stored) == ([] if value is None else [keys.value_key(ts, 1)])
    encoded = encode_event(event)
    assert decode_event(ts, encoded, lambda slot: stored.get(keys.value_key(ts, slot))) == event
    # An agent's slice holds its ops' heads, each with its slot.
    part = encode_slice(event, [(1, ops[1])])
    fetch = lambda slot: stored.get(keys.value_key(ts, slot))  # noqa: E731
    assert decode_slice("ns", "ag", ts, part, fetch) == Event(ts, "txn-1", 1234, (ops[1]._replace(slot=1),))
    # Ops left by a purge keep their slots, so what points to their values stays right.
    scrubbed = Event(ts, "txn-1", 1234, (ops[1]._replace(slot=1),), True)
    assert decode_event(ts, encode_event(scrubbed), fetch) == scrubbed
    if value is not None:
        with pytest.raises(ValueError, match="missing"):
            decode_event(ts, encoded, lambda slot: None)


small_names = st.sampled_from(["ns", "a", "b", "é", "k:1", "x" * 40])
new_ops = st.lists(
    st.builds(
        EventOp,
        small_names,
        small_names,
        small_names,
        st.integers(1, 2**63),
        st.one_of(st.none(), st.binary(max_size=20), st.binary(max_size=20).map(Blob)),
        purge=st.just(False),
        slot=st.just(-1),  # a new commit's ops: their slot is their position
    ),
    max_size=8,
)


@given(commit_ts=st.integers(1, 2**63), txn_id=names, at_ms=st.integers(0, 2**60), ops=new_ops)
def test_a_commits_records_built_in_one_pass_are_the_general_paths(
    commit_ts: int, txn_id: str, at_ms: int, ops: list[EventOp]
) -> None:
    # The ledger's hot path (`commit_records`) must write exactly what rebuild and verify
    # derive for the same event, in the same order (a key written twice: the last wins).
    event = Event(commit_ts, txn_id, at_ms, tuple(ops))
    slot_list = slots(event)
    general = [
        (keys.event_key(commit_ts), encode_event(event, slot_list)),
        *value_records(event, slot_list),
        *derived_records(event, None, slot_list),
    ]
    assert commit_records(event) == general


def test_events_that_are_not_plain_new_commits_take_the_general_path() -> None:
    op = EventOp("ns", "a", "k", 1, b"1")
    assert commit_records(Event(1, "t", 0, (op,), scrubbed=True)) is None
    assert commit_records(Event(1, "t", 0, (op._replace(slot=3),))) is None
    assert commit_records(Event(1, "t", 0, (op._replace(version=0, value=None, purge=True),))) is None


def test_append_writes_state_history_log_and_index_together(store: Store) -> None:
    store.append([Event(1, "t1", 10, (op("ns", "a", "k", 1, b"1"), op("ns", "b", "k", 1, b"2")))])
    store.append([Event(2, "t2", 11, (op("ns", "a", "k", 2, None),))])
    view = store.view()
    assert view.last_commit_ts == 2
    assert view.get("ns", "a", "k") == StateRecord(2, 2, None)
    assert view.get_version("ns", "a", "k", 1) == VersionRecord(1, b"1")
    assert view.get_version("ns", "a", "k", 2) == VersionRecord(2, None)
    assert view.get_version("ns", "a", "k", 3) is None
    assert [e.commit_ts for e in view.events()] == [1, 2]
    replay_a = list(view.replay("ns", "a"))
    assert [(e.commit_ts, [o.key for o in e.ops]) for e in replay_a] == [(1, ["k"]), (2, ["k"])]
    assert all(o.agent_id == "a" for e in replay_a for o in e.ops)  # no other agent's ops
    assert [e.commit_ts for e in view.replay("ns", "b")] == [1]


def test_a_view_does_not_see_later_commits(store: Store) -> None:
    before = store.view()
    store.append([Event(1, "t1", 10, (op("ns", "a", "k", 1, b"1"),))])
    assert before.get("ns", "a", "k") is None
    assert store.view().get("ns", "a", "k") is not None


def test_a_write_left_unsettled_is_settled_before_anything_reads_what_it_changed(store: Store) -> None:
    # The ledger acknowledges its commits before the store's bookkeeping of the write
    # (append(settle=False), then settle()): the version cache must never answer from
    # before that write, nor the durable mark claim more than the log holds.
    store.append([Event(1, "t1", 10, (op("ns", "a", "k", 1, b"1"),))])
    assert store.current_version("ns", "a", "k") == (1, True)  # cached now
    assert read_mark(store.path) == 1
    store.append([Event(2, "t2", 11, (op("ns", "a", "k", 2, None),))], settle=False)
    assert store.view().get("ns", "a", "k") == StateRecord(2, 2, None)  # visible at once
    assert read_mark(store.path) == 1  # the mark only lags
    assert store.current_version("ns", "a", "k") == (2, False)  # settled by the read
    assert read_mark(store.path) == 2
    store.append([Event(3, "t3", 12, (op("ns", "a", "k", 3, b"3"),))], settle=False)
    store.append([Event(4, "t4", 13, (op("ns", "b", "k", 1, b"4"),))], settle=False)  # settles 3 first
    assert read_mark(store.path) == 3
    store.settle()
    assert read_mark(store.path) == 4
    assert store.current_version("ns", "a", "k") == (3, True)


def test_scan_and_keys_are_lexicographic_and_skip_tombstones(store: Store) -> None:
    ops = [op("ns", "a", k, 1, b"0") for k in ["b2", "a", "b10", "b1", "c", "é"]]
    store.append([Event(1, "t", 0, tuple(ops))])
    store.append([Event(2, "t", 0, (op("ns", "a", "b10", 2, None),))])
    view = store.view()
    assert [key for key, _ in view.scan("ns", "a")] == ["a", "b1", "b2", "c", "é"]
    assert [k for k, _ in view.scan("ns", "a", "b")] == ["b1", "b2"]
    assert [key for key, _ in view.scan("ns", "a:b")] == []


def test_replay_range_is_inclusive_and_ordered(store: Store) -> None:
    for ts in range(1, 11):
        store.append([Event(ts, f"t{ts}", 0, (op("ns", "a", "k", ts, b"%d" % ts),))])
    view = store.view()
    assert [e.commit_ts for e in view.replay("ns", "a", 3, 6)] == [3, 4, 5, 6]
    assert [e.commit_ts for e in view.replay("ns", "a", 9)] == [9, 10]
    assert [e.commit_ts for e in view.replay("ns", "a", None, 2)] == [1, 2]
    assert list(view.replay("ns", "a", 11)) == []


def test_last_commit_ts_survives_reopen(data_dir: Path) -> None:
    store = Store.open(data_dir)
    store.append([Event(41, "t", 0, (op("ns", "a", "k", 5, b"1"),))])
    store.close()
    store = Store.open(data_dir)
    try:
        assert store.last_commit_ts == 41
        assert store.current("ns", "a", "k") == StatePointer(5, 41, 0, 0)
        assert store.view().get("ns", "a", "k") == StateRecord(5, 41, b"1")
    finally:
        store.close()


def test_second_open_of_a_data_dir_is_refused(store: Store) -> None:
    with pytest.raises(StoreLockedError, match="in use"):
        Store.open(store.path)


def test_unknown_sync_method_is_refused(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="sync_method"):
        Store.open(data_dir, sync_method="never")


@pytest.mark.parametrize("method", ["flush_wal", "sync_write"])
def test_both_sync_methods_persist(data_dir: Path, method: str) -> None:
    store = Store.open(data_dir, sync_method=method)
    store.append([Event(1, "t", 0, (op("ns", "a", "k", 1, b"true"),))])
    store.close()
    store = Store.open(data_dir)
    try:
        assert store.view().get("ns", "a", "k") == StateRecord(1, 1, b"true")
    finally:
        store.close()


def test_a_store_whose_last_commit_ts_disagrees_with_the_log_refuses_to_open(data_dir: Path) -> None:
    from rocksdict import Options, Rdict

    from storage import StorageError

    store = Store.open(data_dir)
    for ts in (1, 2):
        store.append([Event(ts, "t", 0, (op("ns", "a", "k", ts, b"1"),))])
    store.close()
    raw = Rdict(str(data_dir), Options(raw_mode=True))
    raw.put(keys.META_LAST_COMMIT_TS, keys.u64(1))  # the next commit would overwrite event 2
    raw.close()
    with pytest.raises(StorageError, match="last_commit_ts is 1 but the event log ends at 2"):
        Store.open(data_dir)
    raw = Rdict(str(data_dir), Options(raw_mode=True))
    raw.put(keys.META_LAST_COMMIT_TS, keys.u64(2))
    raw.put(keys.META_REBUILD_IN_PROGRESS, keys.u64(0))
    raw.close()
    with pytest.raises(StorageError, match="interrupted `statehoused rebuild`"):
        Store.open(data_dir)


def test_a_data_directory_of_a_newer_schema_refuses_to_open(data_dir: Path) -> None:
    from rocksdict import Options, Rdict

    from storage import StorageError

    Store.open(data_dir).close()
    raw = Rdict(str(data_dir), Options(raw_mode=True))
    raw.put(keys.META_SCHEMA, keys.u64(keys.SCHEMA_VERSION + 1))  # as a later release might
    raw.close()
    with pytest.raises(StorageError, match=f"schema version {keys.SCHEMA_VERSION + 1}, written by a newer"):
        Store.open(data_dir)


def test_after_a_failed_write_the_store_reopens_and_writes_again(data_dir: Path) -> None:
    import os
    import resource

    from storage import StorageError

    store = Store.open(data_dir)
    big = b'"' + os.urandom(200_000).hex().encode() + b'"'
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, hard))  # a real EFBIG on the WAL append
    ts = 0
    try:
        with pytest.raises(StorageError, match="nothing was committed"):
            for ts in range(1, 100):
                store.append([Event(ts, f"t{ts}", 0, (op("ns", "a", f"k{ts}", 1, big),))])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    try:
        assert store.failed and store.last_commit_ts == ts - 1
        held = store.view()  # a reader that does not let go (a replay stream, say)
        with pytest.raises(StorageError, match="open readers"):
            store.reopen(drain_seconds=0.05, backoff_seconds=0)
        assert store.view() is held and store.view().get("ns", "a", "k1") is not None  # reads go on
        with pytest.raises(StorageError, match="refuses writes"):
            store.append([Event(ts, "t", 0, (op("ns", "a", "x", 1, b"1"),))])
        del held
        store.reopen()
        assert not store.failed and store.last_commit_ts == ts - 1
        store.append([Event(ts, "t", 0, (op("ns", "a", "x", 1, b"1"),))])
        assert store.view().get("ns", "a", "x") == StateRecord(1, ts, b"1")
        assert store.view().get("ns", "a", f"k{ts}") is None  # the failed write left nothing
    finally:
        store.close()


def _time_travel_store(store: Store) -> None:
    """a: 1 @1, 2 @2, 3 @4; b: 1 @1, deleted @3, 3 @4; c: 1 @2 (and other agents)."""
    store.append([Event(1, "t1", 101, (op("ns", "a", "a", 1, b"1"), op("ns", "a", "b", 1, b"1")))])
    store.append([Event(2, "t2", 102, (op("ns", "a", "a", 2, b"2"), op("ns", "a", "c", 1, b"1")))])
    store.append([Event(3, "t3", 103, (op("ns", "a", "b", 2, None), op("ns", "ab", "x", 1, b"9")))])
    store.append([Event(4, "t4", 104, (op("ns", "a", "a", 3, b"3"), op("ns", "a", "b", 3, b"3")))])


def test_scan_at_reads_each_key_as_of_a_past_commit(store: Store) -> None:
    _time_travel_store(store)
    view = store.view()

    def at(ts: int, prefix: str = "", after: str | None = None) -> list[tuple[str, StateRecord]]:
        return list(view.scan_at("ns", "a", prefix, ts, after))

    assert at(0) == []
    assert at(1) == [("a", StateRecord(1, 1, b"1")), ("b", StateRecord(1, 1, b"1"))]
    assert at(2) == [
        ("a", StateRecord(2, 2, b"2")),
        ("b", StateRecord(1, 1, b"1")),
        ("c", StateRecord(1, 2, b"1")),
    ]
    assert at(3) == [("a", StateRecord(2, 2, b"2")), ("c", StateRecord(1, 2, b"1"))]  # b deleted at 3
    latest = [("a", StateRecord(3, 4, b"3")), ("b", StateRecord(3, 4, b"3")), ("c", StateRecord(1, 2, b"1"))]
    assert at(4) == latest
    assert list(view.scan_at("ns", "a")) == latest == list(view.scan("ns", "a"))
    assert at(2, after="a") == [("b", StateRecord(1, 1, b"1")), ("c", StateRecord(1, 2, b"1"))]
    assert at(2, after="c") == []
    assert [k for k, _ in at(4, prefix="b")] == ["b"]
    # An `after` outside the prefix cannot escape it.
    assert [k for k, _ in at(4, prefix="c", after="a")] == ["c"]
    assert [k for k, _ in at(4, prefix="b", after="b")] == []


def test_record_at_history_and_commit_time(store: Store) -> None:
    _time_travel_store(store)
    view = store.view()
    assert view.record_at("ns", "a", "b", 0) is None
    assert view.record_at("ns", "a", "b", 3) == StateRecord(2, 3, None)  # a tombstone record
    assert view.record_at("ns", "a", "c", 1) is None  # not written yet
    assert view.record_at("ns", "a", "never", 4) is None
    assert list(view.history("ns", "a", "b")) == [
        (3, VersionRecord(4, b"3")),
        (2, VersionRecord(3, None)),
        (1, VersionRecord(1, b"1")),
    ]
    assert [v for v, _ in view.history("ns", "a", "b", from_version=2)] == [2, 1]
    assert [v for v, _ in view.history("ns", "a", "b", from_version=99)] == [3, 2, 1]
    # Neighbouring keys and agents do not leak into a history.
    assert list(view.history("ns", "a", "never")) == []
    assert list(view.history("ns", "ab", "b")) == []
    assert [v for v, _ in view.history("ns", "a", "c")] == [1]
    assert view.committed_at_ms("ns", "a", 2) == 102
    assert view.committed_at_ms("ns", "a", 3) == 103
    assert view.committed_at_ms("ns", "zz", 3) is None


@pytest.mark.parametrize("gap", [1, 3])
def test_record_at_finds_the_right_version_of_a_long_history(store: Store, gap: int) -> None:
    # Version v is committed at gap * v; with gap 3 most commit_ts fall between versions.
    for version in range(1, 101):
        store.append([Event(gap * version, "t", 0, (op("ns", "a", "k", version, b"%d" % version),))])
    view = store.view()
    for ts in range(0, gap * 100 + 3):
        expected = min(ts // gap, 100)
        record = view.record_at("ns", "a", "k", ts)
        if expected == 0:
            assert record is None
        else:
            assert record == StateRecord(expected, gap * expected, b"%d" % expected)
