"""actors/: namespace actors and the ledger, for real, over a real RocksDB."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from threads import run_threads

from actors import (
    ActorConfig,
    ActorSystem,
    InvalidArgument,
    Mutation,
    TransactionClosed,
    TransactionExpired,
    TransactionNotFound,
    Unavailable,
)
from actors.reply import Reply
from storage import Store

W = 10.0  # seconds any single call may wait


def put(key: str, value: bytes, ns: str = "ns", agent: str = "a") -> Mutation:
    return Mutation(ns, agent, key, value)


def delete(key: str, ns: str = "ns", agent: str = "a") -> Mutation:
    return Mutation(ns, agent, key, None)


def commit(system: ActorSystem, *mutations: Mutation, ns: str = "ns") -> int:
    txn_id, _ = system.begin(ns, None, W)
    return system.commit(txn_id, mutations, W)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def timed(store: Store, clock: FakeClock) -> Iterator[ActorSystem]:
    """A system on a fake clock, with the reaper effectively off (tests tick by hand)."""
    config = ActorConfig(idle_actor_seconds=60, tick_seconds=3600, default_txn_timeout_ms=1000)
    system = ActorSystem(store, config, clock=clock).start()
    yield system
    system.stop()


def test_commit_assigns_versions_and_commit_ts(system: ActorSystem) -> None:
    assert commit(system, put("k", b"1")) == 1
    assert commit(system, put("k", b"2"), put("j", b"3")) == 2
    view = system.view()
    assert (view.get("ns", "a", "k").version, view.get("ns", "a", "k").commit_ts) == (2, 2)
    assert view.get("ns", "a", "j").version == 1


def test_same_key_twice_in_one_transaction_is_one_version(system: ActorSystem) -> None:
    txn_id, _ = system.begin("ns", None, W)
    system.stage(txn_id, [put("k", b"1")], W)
    system.stage(txn_id, [put("k", b"2")], W)
    system.commit(txn_id, [put("k", b"3")], W)
    record = system.view().get("ns", "a", "k")
    assert (record.version, record.value) == (1, b"3")
    assert len(list(system.view().events())) == 1


def test_empty_commit_returns_latest_commit_ts_and_writes_no_event(system: ActorSystem) -> None:
    commit(system, put("k", b"1"))
    assert commit(system) == 1
    assert [e.commit_ts for e in system.view().events()] == [1]
    assert commit(system, put("k", b"2")) == 2


def test_delete_is_a_tombstone_version(system: ActorSystem) -> None:
    commit(system, put("k", b"1"))
    commit(system, delete("k"))
    commit(system, put("k", b"3"))
    view = system.view()
    assert [view.get_version("ns", "a", "k", v).value for v in (1, 2, 3)] == [b"1", None, b"3"]


def test_one_transaction_may_span_namespaces_atomically(system: ActorSystem) -> None:
    ts = commit(system, put("k", b"1", ns="ns"), put("k", b"2", ns="other"))
    view = system.view()
    assert view.get("ns", "a", "k").commit_ts == view.get("other", "a", "k").commit_ts == ts
    assert [len(e.ops) for e in view.events()] == [2]


def test_unknown_and_malformed_transaction_ids(system: ActorSystem) -> None:
    system.begin("ns", None, W)  # the namespace actor is running
    for txn_id in ("ns:" + "0" * 24, "nonsense", "", "missing-ns:" + "0" * 24):
        with pytest.raises(TransactionNotFound):
            system.stage(txn_id, [put("k", b"1")], W)
        with pytest.raises(TransactionNotFound):
            system.commit(txn_id, [], W)


def test_abort_is_idempotent_and_closes_the_transaction(system: ActorSystem) -> None:
    txn_id, _ = system.begin("ns", None, W)
    system.stage(txn_id, [put("k", b"1")], W)
    system.abort(txn_id, W)
    system.abort(txn_id, W)
    with pytest.raises(TransactionClosed, match="aborted"):
        system.commit(txn_id, [], W)
    assert system.view().get("ns", "a", "k") is None


def test_committed_transaction_cannot_be_reused_or_aborted(system: ActorSystem) -> None:
    txn_id, _ = system.begin("ns", None, W)
    ts = system.commit(txn_id, [put("k", b"1")], W)
    with pytest.raises(TransactionClosed, match=f"commit_ts {ts}"):
        system.commit(txn_id, [], W)
    with pytest.raises(TransactionClosed, match="already committed"):
        system.abort(txn_id, W)


@pytest.mark.parametrize("timeout_ms", [0, 600_001])
def test_transaction_timeout_is_bounded(system: ActorSystem, timeout_ms: int) -> None:
    with pytest.raises(InvalidArgument, match="timeout_ms must be between 1 and 600000"):
        system.begin("ns", timeout_ms, W)


def test_expired_transaction_is_refused(timed: ActorSystem, clock: FakeClock) -> None:
    txn_id, timeout = timed.begin("ns", None, W)
    assert timeout == 1000
    timed.stage(txn_id, [put("k", b"1")], W)
    clock.now += 1.0
    with pytest.raises(TransactionExpired, match="1000 ms"):
        timed.commit(txn_id, [], W)
    assert timed.view().get("ns", "a", "k") is None


def test_abandoned_transactions_are_reclaimed_by_the_reaper(timed: ActorSystem, clock: FakeClock) -> None:
    for _ in range(3):
        timed.begin("ns", 500, W)
    assert timed.status(W)["namespaces"][0]["open_transactions"] == 3
    clock.now += 0.5
    timed.tick_all(W)
    assert timed.status(W)["namespaces"][0]["open_transactions"] == 0


def test_idle_namespace_actors_retire_and_restart_on_demand(timed: ActorSystem, clock: FakeClock) -> None:
    for i in range(20):
        commit(timed, put("k", b"1", ns=f"ns{i}"), ns=f"ns{i}")
    held, _ = timed.begin("busy", 600_000, W)
    assert len(timed.status(W)["namespaces"]) == 21
    clock.now += 0.9  # idle 0.9 s: not yet
    timed.tick_all(W)
    assert len(timed.status(W)["namespaces"]) == 21
    clock.now += 60
    timed.stage(held, [], W)  # keeps "busy" active; its transaction is still open
    timed.tick_all(W)
    assert [n["namespace"] for n in timed.status(W)["namespaces"]] == ["busy"]
    assert commit(timed, put("k", b"2", ns="ns3"), ns="ns3") == 21


def test_an_idle_actor_leaves_its_open_transaction_dormant(timed: ActorSystem, clock: FakeClock) -> None:
    # An idle actor retires even with a transaction open; the transaction waits,
    # dormant, for the namespace's next actor, which adopts what it staged.
    txn_id, _ = timed.begin("ns", 600_000, W)
    timed.stage(txn_id, [put("j", b"0")], W)
    clock.now += 120
    timed.tick_all(W)
    [namespace] = timed.status(W)["namespaces"]
    assert (namespace["state"], namespace["open_transactions"]) == ("dormant", 1)
    assert namespace["idle_s"] == 120
    timed.commit(txn_id, [put("k", b"1")], W)
    assert timed.view().get("ns", "a", "j") is not None
    assert timed.view().get("ns", "a", "k") is not None
    [namespace] = timed.status(W)["namespaces"]
    assert (namespace["state"], namespace["open_transactions"]) == ("ok", 0)


def test_concurrent_commits_are_totally_ordered_and_grouped(system: ActorSystem) -> None:
    results: dict[int, list[int]] = {}

    def agent(i: int) -> None:
        results[i] = [commit(system, put(f"k{n}", b"%d" % n, agent=f"a{i}")) for n in range(50)]

    run_threads(agent, 16)
    every = sorted(ts for r in results.values() for ts in r)
    assert every == list(range(1, 16 * 50 + 1))  # unique, gap-free
    for r in results.values():
        assert r == sorted(r)  # each agent saw its own commits in order
    log = [e.commit_ts for e in system.view().events()]
    assert log == every
    status = system.status(W)["ledger"]
    assert status["commits_written"] == 800
    assert status["synced_writes"] < 800, "16 concurrent committers never shared a synced write"


def test_replaying_the_log_from_empty_reproduces_state(system: ActorSystem) -> None:
    for n in range(30):
        commit(system, put(f"k{n % 7}", b"%d" % n, agent=f"a{n % 3}"), delete(f"k{(n + 3) % 7}", agent="a0"))
    state: dict[tuple[str, str, str], tuple[int, int, bytes | None]] = {}
    for event in system.view().events():
        for op in event.ops:
            state[(op.namespace, op.agent_id, op.key)] = (op.version, event.commit_ts, op.value)
    stored = {}
    view = system.view()
    for target in state:
        record = view.get(*target)
        stored[target] = (record.version, record.commit_ts, record.value)
    assert stored == state


def test_commits_fail_cleanly_when_storage_fails(store: Store) -> None:
    system = ActorSystem(store).start()
    try:
        commit(system, put("k", b"1"))
        store.close()  # a real storage failure: every write now raises
        with pytest.raises(Unavailable, match="nothing was committed"):
            commit(system, put("k", b"2"))
        with pytest.raises(Unavailable):  # the ledger is still alive and answering
            commit(system, put("k", b"3"))
    finally:
        system.stop()


def test_a_failed_commit_can_be_aborted_and_says_it_failed(store: Store) -> None:
    system = ActorSystem(store).start()
    try:
        txn_id, _ = system.begin("ns", None, W)
        store.close()  # a real storage failure
        with pytest.raises(Unavailable, match="nothing was committed"):
            system.commit(txn_id, [put("k", b"1")], W)
        with pytest.raises(TransactionClosed, match=r"commit of transaction .* failed"):
            system.commit(txn_id, [], W)
        system.abort(txn_id, W)  # nothing was written, so aborting is fine
    finally:
        system.stop()


def test_finished_transactions_are_remembered_after_their_actor_retires(
    timed: ActorSystem, clock: FakeClock
) -> None:
    expired, _ = timed.begin("ns", 500, W)
    committed, _ = timed.begin("ns", 500, W)
    timed.commit(committed, [put("k", b"1")], W)
    clock.now += 61  # past the timeout and the idle time: expire, then retire
    timed.tick_all(W)
    timed.tick_all(W)
    assert timed.status(W)["namespaces"] == []
    with pytest.raises(TransactionExpired, match="500 ms"):
        timed.stage(expired, [put("k", b"2")], W)
    with pytest.raises(TransactionClosed, match="already committed"):
        timed.abort(committed, W)
    with pytest.raises(TransactionNotFound):
        timed.commit("ns:" + "1" * 24, [], W)


def test_calls_after_stop_are_unavailable(store: Store) -> None:
    system = ActorSystem(store).start()
    system.stop()
    with pytest.raises(Unavailable, match="shutting down"):
        system.begin("ns", None, W)


def test_reply_callbacks_run_exactly_once_however_they_race_the_answer() -> None:
    """Retried commits wait on the first commit's Reply through callbacks."""
    for _ in range(200):
        reply: Reply[int] = Reply()
        calls: list[int] = []
        record = calls.append  # list.append is atomic under the GIL

        adders = [
            threading.Thread(target=reply.add_done_callback, args=(lambda r, add=record: add(r.result()),))
            for _ in range(4)
        ]
        for thread in adders[:2]:
            thread.start()
        reply.set_result(7)  # while callbacks are being added
        for thread in adders[2:]:
            thread.start()
        for thread in adders:
            thread.join()
        assert calls == [7, 7, 7, 7]
    failed: Reply[int] = Reply()
    seen: list[BaseException | None] = []
    failed.add_done_callback(lambda r: seen.append(r.exception()))
    failed.set_exception(Unavailable("x"))
    assert [type(e) for e in seen] == [Unavailable]


def test_an_id_opened_ahead_may_open_again_once_nothing_of_it_was_written(
    timed: ActorSystem, clock: FakeClock
) -> None:
    """A chunk sent ahead (stage with `open`) reopens an id that expired or whose commit
    failed; an id that committed answers with its commit_ts; an aborted one stays closed."""
    from actors import AlreadyCommitted, Condition, Conflict, TxnOpen

    expired, failed, aborted = (f"ns:{n:024x}" for n in (1, 2, 3))
    timed.stage(expired, [put("k", b"1")], W, TxnOpen(None), attempt="first")
    clock.now += 2  # past the 1 s default timeout
    timed.tick_all(wait=W)
    with pytest.raises(TransactionExpired):
        timed.commit(expired, [], W, attempt="first")
    with pytest.raises(TransactionClosed, match="used before"):  # a redo must name its attempt
        timed.stage(expired, [put("k", b"2")], W, TxnOpen(None))
    timed.stage(expired, [put("k", b"2")], W, TxnOpen(None), attempt="redo")  # the redo opens it again
    # The first attempt, still alive, cannot slip a late chunk or its commit into the redo.
    for late in (lambda: timed.stage(expired, [put("z", b"0")], W, attempt="first"),
                 lambda: timed.commit(expired, [put("z", b"0")], W, attempt="first")):  # fmt: skip
        with pytest.raises(TransactionClosed, match="held by another attempt"):
            late()
    first_ts = timed.commit(expired, [], W, attempt="redo")
    assert timed.view().get("ns", "a", "k").value == b"2"
    assert timed.view().get("ns", "a", "z") is None

    timed.stage(failed, [put("j", b"1")], W, TxnOpen(None))
    with pytest.raises(Conflict):
        timed.commit(failed, [], W, conditions=[Condition("ns", "a", "k", 0)])  # k exists
    timed.stage(failed, [put("j", b"2")], W, TxnOpen(None))
    assert timed.commit(failed, [], W) == first_ts + 1

    with pytest.raises(AlreadyCommitted, match=f"committed at commit_ts {first_ts}") as answered:
        timed.stage(expired, [put("k", b"3")], W, TxnOpen(None))
    assert answered.value.commit_ts == first_ts
    assert timed.view().get("ns", "a", "k").value == b"2"  # nothing of the redo was staged

    timed.stage(aborted, [put("k", b"4")], W, TxnOpen(None))
    timed.abort(aborted, W)
    with pytest.raises(TransactionClosed, match="used before"):
        timed.stage(aborted, [put("k", b"5")], W, TxnOpen(None))
