"""Every case twice: once with `Statehouse`, once with `AsyncStatehouse` (through the blocking
facade of tests/facade.py), against a real daemon on port 0."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import pytest
from facade import SDK
from threads import run_threads

import statehouse
from statehouse import (
    ConflictError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    StateResult,
    TransactionClosedError,
    TransactionError,
    TransactionExpiredError,
    TransactionNotFoundError,
)

WAIT = 30.0  # the longest any event of these tests may take to arrive


def write(client: Any, agent: str, key: str, value: Any, namespace: str | None = None) -> int:
    with client.begin_transaction(namespace=namespace) as tx:
        tx.write(agent, key, value)
    assert tx.commit_ts is not None
    return int(tx.commit_ts)


class Deadline:
    """Cancels a watch if the test's events have not all arrived within WAIT seconds."""

    def __init__(self, watch: Any) -> None:
        self._timer = threading.Timer(WAIT, watch.cancel)
        self._timer.start()

    def __enter__(self) -> Deadline:
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


# -- the basics (as tests/statehouse/test_sdk.py, for both clients) --------------------


def test_write_read_and_versions(sdk: SDK) -> None:
    client = sdk.client
    value = {"big": 2**64 + 1, "f": 0.1, "i": 3.0, "s": "çé ✓", "l": [1, None, True]}
    ts1 = write(client, "a", "k", value)
    got = client.get_state("a", "k")
    assert got == StateResult(value, 1, ts1, True, "k")
    assert isinstance(got.value["i"], float) and isinstance(got.value["big"], int)
    ts2 = write(client, "a", "k", {"step": 2})
    assert ts2 > ts1
    assert client.get_state("a", "k").version == 2
    assert client.get_state_at_version("a", "k", 1).value == value
    assert client.get_state_at_version("a", "k", 2).commit_ts == ts2
    assert client.get_state("nobody", "nothing") == StateResult(None, 0, 0, False, "nothing")
    assert client.health() == "ok"
    assert client.version()[0] == statehouse.__version__


def test_delete_is_a_tombstone_that_history_and_replay_keep(sdk: SDK) -> None:
    client = sdk.client
    write(client, "a", "k", 1)
    write(client, "a", "j", 2)
    with client.begin_transaction() as tx:
        tx.delete("a", "k")
    latest = client.get_state("a", "k")
    assert (latest.exists, latest.value, latest.version) == (False, None, 2)
    assert client.get_state_at_version("a", "k", 1).value == 1
    tomb = client.get_state_at_version("a", "k", 2)
    assert (tomb.exists, tomb.value) == (False, None)
    assert client.list_keys("a") == ["j"]
    assert [r.key for r in client.scan_prefix("a", "")] == ["j"]
    events = list(client.replay("a"))
    assert [(op.key, op.deleted) for e in events for op in e.operations] == [
        ("k", False),
        ("j", False),
        ("k", True),
    ]
    assert [e.commit_ts for e in events] == [1, 2, 3]
    assert all(e.agent_id == "a" and e.namespace == "default" for e in events)
    assert [e.commit_ts for e in client.replay("a", start_ts=2, end_ts=2)] == [2]
    with pytest.raises(InvalidArgumentError, match="after end_ts"):
        list(client.replay("a", start_ts=5, end_ts=4))
    write(client, "a", "k", 3)  # written again: versions go on from the tombstone's
    assert client.get_state("a", "k").version == 3


def test_namespaces_are_separate(sdk: SDK) -> None:
    write(sdk.client, "a", "k", 1, namespace="one")
    write(sdk.client, "a", "k", 2, namespace="two")
    assert sdk.client.get_state("a", "k", namespace="one").value == 1
    assert sdk.client.get_state("a", "k", namespace="two").value == 2
    assert sdk.client.get_state("a", "k").exists is False


def test_transaction_errors(sdk: SDK) -> None:
    client = sdk.client
    with pytest.raises(RuntimeError):
        with client.begin_transaction() as tx:
            tx.write("a", "k", 1)
            raise RuntimeError("agent crashed")
    assert client.get_state("a", "k").exists is False
    with pytest.raises(TransactionClosedError):
        tx.write("a", "k", 2)
    tx = client.begin_transaction()
    tx.write("a", "k", 1)
    tx.commit()
    with pytest.raises(TransactionClosedError):
        tx.commit()
    with pytest.raises(TransactionClosedError):
        tx.abort()
    aborted = client.begin_transaction()
    aborted.abort()
    aborted.abort()  # aborting again is fine
    with pytest.raises(NotFoundError, match="no version 2"):
        client.get_state_at_version("a", "k", 2)
    tx = client.begin_transaction()
    with pytest.raises(InvalidArgumentError, match="agent_id") as info:
        tx.write("", "k", 1)
    assert isinstance(info.value, TransactionError)
    with pytest.raises(InvalidArgumentError, match="expected_version"):
        tx.write("a", "k", 1, expected_version=-1)
    with pytest.raises(InvalidArgumentError, match="timeout_ms"):
        client.begin_transaction(timeout_ms=0)
    with pytest.raises(InvalidArgumentError, match="limit"):
        client.list_keys_page("a", limit=0)


def test_expired_transaction_is_reported(sdk: SDK) -> None:
    tx = sdk.client.begin_transaction(timeout_ms=1)
    tx.write("a", "k", 1)
    deadline = time.monotonic() + 0.002
    while time.monotonic() < deadline:  # the 1 ms timeout passing is what is tested
        pass
    with pytest.raises(TransactionExpiredError, match="expired"):
        tx.commit()
    assert sdk.client.get_state("a", "k").exists is False


def test_unknown_transaction_is_not_found(sdk: SDK) -> None:
    # A transaction the server never opened (no `open`, as after a daemon restart).
    if sdk.kind == "sync":
        bogus: Any = statehouse.Transaction(sdk.client, "default:" + "ab" * 12, "default")
    else:
        target = statehouse.AsyncTransaction(sdk.client._target, "default:" + "ab" * 12, "default")
        bogus = type(sdk.client)(target, sdk.client._loop)
    bogus.write("a", "k", 1)
    with pytest.raises(TransactionNotFoundError):
        bogus.commit()


def test_large_transaction_is_sent_ahead(sdk: SDK) -> None:
    blob = "x" * 200_000
    with sdk.client.begin_transaction() as tx:
        for n in range(12):  # ~2.4 MB: more than one chunk sent ahead
            tx.write("a", f"k{n:02}", {"blob": blob, "n": n})
    assert len(sdk.client.list_keys("a")) == 12
    assert sdk.client.get_state("a", "k11").value == {"blob": blob, "n": 11}
    assert [len(e.operations) for e in sdk.client.replay("a")] == [12]


# -- conditional commits --------------------------------------------------------------


def test_conditional_writes_that_hold_commit(sdk: SDK) -> None:
    client = sdk.client
    with client.begin_transaction() as tx:
        tx.write("a", "k", "first", expected_version=0)  # creates only
    with client.begin_transaction() as tx:
        tx.write("a", "k", "second", expected_version=1)
        tx.expect("a", "other", 0)  # never written: no live value
    with client.begin_transaction() as tx:
        tx.delete("a", "k", expected_version=2)
    with client.begin_transaction() as tx:
        tx.write("a", "k", "again", expected_version=0)  # deleted: no live value
        tx.expect("a", "k", 3)  # a tombstone is a version too
    state = client.get_state("a", "k")
    assert (state.value, state.version) == ("again", 4)


def test_conflict_on_a_stale_version(sdk: SDK) -> None:
    client = sdk.client
    write(client, "a", "k", 1)
    write(client, "a", "k", 2)
    tx = client.begin_transaction()
    tx.write("a", "k", 3, expected_version=1)
    tx.write("a", "side", "effect")
    with pytest.raises(ConflictError) as info:
        tx.commit()
    error = info.value
    assert isinstance(error, TransactionError) and not isinstance(error, TransactionExpiredError)
    assert error.code == "ABORTED"
    assert (error.namespace, error.agent_id, error.key) == ("default", "a", "k")
    assert (error.expected_version, error.actual_version, error.exists) == (1, 2, True)
    assert "'k'" in str(error) and "expected version 1" in str(error) and "found version 2" in str(error)
    assert client.get_state("a", "k").value == 2
    assert client.get_state("a", "side").exists is False
    tx.abort()  # the server holds nothing: fine, no error


def test_conflict_when_expecting_no_value(sdk: SDK) -> None:
    client = sdk.client
    write(client, "a", "k", "taken")
    with pytest.raises(ConflictError) as info:
        with client.begin_transaction() as tx:
            tx.write("a", "k", "mine", expected_version=0)
    error = info.value
    assert (error.key, error.expected_version, error.actual_version, error.exists) == ("k", 0, 1, True)
    assert "expected no live value" in str(error)
    assert client.get_state("a", "k").value == "taken"


def test_conflict_from_an_expectation_writes_nothing(sdk: SDK) -> None:
    client = sdk.client
    write(client, "a", "lock", "held")
    with client.begin_transaction() as tx:
        tx.delete("a", "lock")
    before = list(client.replay("a"))
    with pytest.raises(ConflictError) as info:
        with client.begin_transaction() as tx:
            tx.expect("a", "lock", 1)  # it is at 2, a tombstone
            tx.write("a", "x", 1)
            tx.write("b", "y", 2)
            tx.delete("a", "lock")
    error = info.value
    assert (error.agent_id, error.key, error.expected_version) == ("a", "lock", 1)
    assert (error.actual_version, error.exists) == (2, False)
    assert "(deleted)" in str(error)
    assert client.get_state("a", "x").exists is False
    assert client.get_state("b", "y").exists is False
    assert client.get_state("a", "lock").version == 2
    assert list(client.replay("a")) == before
    assert list(client.replay("b")) == []
    with pytest.raises(ConflictError) as info:
        with client.begin_transaction() as tx:
            tx.expect("a", "never", 3)
            tx.write("a", "x", 1)
    assert (info.value.actual_version, info.value.exists) == (0, False)
    assert "never written" in str(info.value)


@pytest.mark.parametrize("shared", [False, True], ids=["own-clients", "one-shared-client"])
def test_sixteen_clients_increment_one_counter_exactly(sdk: SDK, shared: bool) -> None:
    # Sharing one sync client, the commits go out combined in CommitBatch calls.
    clients, increments = 16, 10
    start = threading.Barrier(clients)
    failures: list[BaseException] = []
    conflicts = [0] * clients

    def agent(n: int) -> None:
        try:
            client = sdk.client if shared else sdk.connect()
            start.wait(WAIT)
            for _ in range(increments):
                while True:
                    state = client.get_state("shared", "counter")
                    try:
                        with client.begin_transaction() as tx:
                            count = state.value if state.exists else 0
                            tx.write("shared", "counter", count + 1, expected_version=state.version)
                        break
                    except ConflictError:
                        conflicts[n] += 1
        except BaseException as exc:
            failures.append(exc)

    run_threads(agent, clients)
    assert failures == []
    final = sdk.client.get_state("shared", "counter")
    assert (final.value, final.version) == (clients * increments, clients * increments)
    print(f"{sdk.kind}, shared={shared}: {sum(conflicts)} conflicts retried")


def test_update_is_an_exact_read_modify_write_under_contention(sdk: SDK) -> None:
    clients, increments = 16, 10
    start = threading.Barrier(clients)
    failures: list[BaseException] = []
    written: list[int] = []

    def agent() -> None:
        try:
            client = sdk.connect()
            start.wait(WAIT)
            for _ in range(increments):
                state = client.update("shared", "hits", lambda n: (n or 0) + 1)
                written.append(state.value)
                assert state.version == state.value  # the version after the one it read
        except BaseException as exc:
            failures.append(exc)

    run_threads(lambda _: agent(), clients)
    assert failures == []
    assert sorted(written) == list(range(1, clients * increments + 1))  # no update lost or repeated
    final = sdk.client.get_state("shared", "hits")
    assert (final.value, final.version) == (clients * increments, clients * increments)


def test_update_gives_up_at_its_timeout_and_writes_nothing(sdk: SDK) -> None:
    client = sdk.client
    # A sync client: `fn` runs inside the async client's coroutine, on its loop.
    rival = statehouse.Statehouse(sdk.addr)
    write(client, "a", "k", 0)
    calls = []

    def always_overtaken(value: int) -> int:
        calls.append(value)
        write(rival, "a", "k", value + 100)  # someone else writes between our read and our commit
        return value + 1

    with pytest.raises(DeadlineExceededError, match="lost to other writers"):
        client.update("a", "k", always_overtaken, timeout=0.3)
    assert len(calls) >= 2
    state = client.get_state("a", "k")
    assert (state.value, state.version) == (calls[-1] + 100, len(calls) + 1)  # only the rival's writes
    rival.close()


def test_update_of_a_missing_key_starts_from_none(sdk: SDK) -> None:
    seen = []
    state = sdk.client.update("a", "fresh", lambda value: seen.append(value) or ["first"])
    assert seen == [None]
    assert (state.value, state.version, state.key) == (["first"], 1, "fresh")
    assert sdk.client.get_state("a", "fresh") == state


# -- idempotency keys ---------------------------------------------------------------


def test_idempotency_key_commits_once(sdk: SDK) -> None:
    client = sdk.client
    with client.begin_transaction(idempotency_key="step-7") as tx:
        tx.write("a", "k", "first run")
    first_ts = tx.commit_ts
    write(client, "a", "other", "in between")
    # The process crashed before recording the step, and redoes it:
    with client.begin_transaction(idempotency_key="step-7") as again:
        again.write("a", "k", "second run")
        again.write("a", "extra", 1)
    assert again.txn_id == tx.txn_id
    assert again.commit_ts == first_ts
    state = client.get_state("a", "k")
    assert (state.value, state.version, state.commit_ts) == ("first run", 1, first_ts)
    assert client.get_state("a", "extra").exists is False
    with client.begin_transaction(idempotency_key="step-8") as other:
        other.write("a", "k", "step 8")
    assert other.commit_ts is not None and other.commit_ts > first_ts
    assert client.get_state("a", "k").version == 2
    elsewhere = client.begin_transaction(namespace="ns2", idempotency_key="step-7")
    assert elsewhere.txn_id.startswith("ns2:") and elsewhere.txn_id[4:] != tx.txn_id[8:]
    elsewhere.abort()


def test_idempotency_key_of_a_transaction_sent_ahead_redoes_a_failure_and_answers_a_commit(sdk: SDK) -> None:
    from statehouse._transaction import STAGE_AHEAD_BYTES

    client = sdk.client
    big = "x" * (STAGE_AHEAD_BYTES // 2)  # three of them: chunks go ahead, opening the id
    write(client, "a", "gate", "exists")

    def step(gate_version: int, value: str) -> Any:
        with client.begin_transaction(idempotency_key="big-step") as tx:
            for n in range(3):
                tx.write("a", f"big{n}", f"{value}{big}")
            tx.expect("a", "gate", gate_version)
        return tx

    with pytest.raises(statehouse.ConflictError):
        step(0, "first")  # the gate exists: nothing is written
    assert client.get_state("a", "big0").exists is False
    done = step(1, "second")  # the redo runs again, and commits
    assert done.commit_ts is not None
    again = step(1, "third")  # redone after it committed: answered, not applied
    assert again.commit_ts == done.commit_ts
    state = client.get_state("a", "big0")
    assert (state.value[:6], state.version, state.commit_ts) == ("second", 1, done.commit_ts)
    with pytest.raises(statehouse.TransactionClosedError, match="already committed"):
        again.abort()


# -- paging, time travel, history -------------------------------------------------------


def test_pages_are_read_as_of_one_commit(sdk: SDK) -> None:
    client = sdk.client
    with client.begin_transaction() as tx:
        for n in range(25):
            tx.write("a", f"k{n:02}", n)
    first = client.list_keys_page("a", limit=10)
    assert first.items == [f"k{n:02}" for n in range(10)]
    assert first.next_page_token is not None and first.commit_ts == 1
    write(client, "a", "k00a", "after the first page")  # sorts into the second page
    second = client.list_keys_page("a", limit=10, page_token=first.next_page_token)
    third = client.list_keys_page("a", limit=10, page_token=second.next_page_token)
    assert second.items == [f"k{n:02}" for n in range(10, 20)]
    assert third.items == [f"k{n:02}" for n in range(20, 25)] and third.next_page_token is None
    assert second.commit_ts == third.commit_ts == 1
    assert len(client.list_keys("a")) == 26
    scanned = client.scan_prefix_page("a", "k1", limit=4)
    assert [(r.key, r.value) for r in scanned.items] == [(f"k{n}", n) for n in range(10, 14)]
    rest = client.scan_prefix_page("a", "k1", limit=100, page_token=scanned.next_page_token)
    assert [r.key for r in rest.items] == [f"k{n}" for n in range(14, 20)] and rest.next_page_token is None
    assert scanned.commit_ts == rest.commit_ts == 2


def test_reading_everything_takes_several_pages(sdk: SDK) -> None:
    client = sdk.client
    count = 2 * statehouse._plans.PAGE_SIZE + 17
    with client.begin_transaction() as tx:
        for n in range(count):
            tx.write("a", f"k{n:05}", n)
    assert client.list_keys("a") == [f"k{n:05}" for n in range(count)]
    assert [r.value for r in client.scan_prefix("a", "k")] == list(range(count))
    state = client.get_agent_state("a")
    assert state.commit_ts == 1 and len(state.entries) == count and state.values["k00042"] == 42


def test_time_travel(sdk: SDK) -> None:
    client = sdk.client
    ts1 = write(client, "a", "plan", {"step": 1})
    with client.begin_transaction() as tx:
        tx.write("a", "plan", {"step": 2})
        tx.write("a", "notes", "n")
    ts2 = tx.commit_ts
    with client.begin_transaction() as tx:
        tx.delete("a", "plan")
    past = client.get_agent_state("a", at_commit_ts=ts1)
    assert (past.commit_ts, past.values) == (ts1, {"plan": {"step": 1}})
    assert past.entries["plan"].version == 1
    middle = client.get_agent_state("a", at_commit_ts=ts2)
    assert middle.values == {"plan": {"step": 2}, "notes": "n"}
    now = client.get_agent_state("a")
    assert now.values == {"notes": "n"} and now.commit_ts == 3
    assert client.list_keys("a", at_commit_ts=ts2) == ["notes", "plan"]
    assert [r.value for r in client.scan_prefix("a", "p", at_commit_ts=ts1)] == [{"step": 1}]
    assert client.get_agent_state("a", at_commit_ts=0).values == {}


def test_key_history_newest_first(sdk: SDK) -> None:
    client = sdk.client
    stamps = [write(client, "a", "k", n) for n in range(5)]
    with client.begin_transaction() as tx:
        tx.delete("a", "k")
    stamps.append(tx.commit_ts)
    history = client.key_history("a", "k")
    assert [(v.version, v.value, v.deleted) for v in history] == [
        (6, None, True),
        (5, 4, False),
        (4, 3, False),
        (3, 2, False),
        (2, 1, False),
        (1, 0, False),
    ]
    assert [v.commit_ts for v in history] == stamps[::-1]
    assert all(v.committed_at_ms > 1_700_000_000_000 for v in history)
    assert [v.version for v in client.key_history("a", "k", limit=2)] == [6, 5]
    page = client.key_history_page("a", "k", limit=4)
    assert [v.version for v in page.items] == [6, 5, 4, 3] and page.next_page_token is not None
    rest = client.key_history_page("a", "k", limit=4, page_token=page.next_page_token)
    assert [v.version for v in rest.items] == [2, 1] and rest.next_page_token is None
    assert client.key_history("a", "never") == []


# -- watch and wait_for ---------------------------------------------------------------


def test_watch_sees_another_clients_write(sdk: SDK) -> None:
    other = sdk.connect()
    with sdk.client.watch("a", key_prefix="task/") as watch, Deadline(watch):
        first_progress = watch.progress_ts
        with other.begin_transaction() as tx:
            tx.write("a", "notes", "not under the prefix")
            tx.write("b", "task/1", "another agent")
        with other.begin_transaction() as tx:
            tx.write("a", "task/1", {"todo": "ship"})
            tx.write("a", "memo", "filtered out")
        event = next(iter(watch))
        assert event.commit_ts == tx.commit_ts and event.txn_id == tx.txn_id
        assert (event.agent_id, event.namespace) == ("a", "default")
        assert [(op.key, op.value, op.version) for op in event.operations] == [
            ("task/1", {"todo": "ship"}, 1)
        ]
        assert watch.progress_ts >= event.commit_ts - 1 >= first_progress
    everyone = sdk.client.watch(namespace="default")
    with everyone, Deadline(everyone):
        write(other, "x", "k", 1)
        write(other, "y", "k", 2)
        got = [next(iter(everyone)) for _ in range(2)]
        assert [(e.agent_id, e.operations[0].value) for e in got] == [("x", 1), ("y", 2)]


def test_watch_from_the_past_has_no_gap_or_duplicate_at_the_seam(sdk: SDK) -> None:
    client, writer_client = sdk.client, sdk.connect()
    before, during = 5, 60
    for n in range(before):
        write(client, "a", "k", n)
    started = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            for n in range(during):
                write(writer_client, "a", "k", before + n)
                started.set()
        except BaseException as exc:
            failures.append(exc)
            started.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert started.wait(WAIT)
    seen: list[int] = []
    with client.watch("a", start_ts=1) as watch, Deadline(watch):
        for event in watch:
            seen.append(event.commit_ts)
            assert event.operations[0].value == event.commit_ts - 1
            if len(seen) == before + during:
                break
    thread.join()
    assert failures == []
    assert seen == list(range(1, before + during + 1))


def test_cancel_ends_a_watch_cleanly_from_another_thread(sdk: SDK) -> None:
    watch = sdk.client.watch("a")
    ended = threading.Event()
    received: list[Any] = []

    def consume() -> None:
        received.extend(watch)  # blocks until cancelled
        ended.set()

    thread = threading.Thread(target=consume)
    thread.start()
    write(sdk.client, "a", "k", 1)
    watch.cancel()
    thread.join(WAIT)
    assert ended.is_set()  # ended without an exception
    assert [e.commit_ts for e in received] in ([], [1])


def test_wait_for_wakes_when_another_client_approves(sdk: SDK) -> None:
    client, human = sdk.client, sdk.connect()
    write(human, "agent", "approval", {"approved": False, "round": 0})
    latencies = []
    for round_ in range(1, 6):
        asked = threading.Event()
        result: list[Any] = []

        def approved(value: Any, round_: int = round_, asked: threading.Event = asked) -> bool:
            asked.set()  # called first on the value read before the watch
            return bool(value["approved"] and value["round"] == round_)

        def wait(result: list[Any] = result, approved: Any = approved) -> None:
            state = client.wait_for("agent", "approval", approved, timeout=WAIT)
            result.append((time.perf_counter(), state))

        waiter = threading.Thread(target=wait)
        waiter.start()
        assert asked.wait(WAIT)
        commit_ts = write(human, "agent", "approval", {"approved": True, "round": round_})
        committed = time.perf_counter()
        waiter.join(WAIT)
        woke, state = result[0]
        assert state.value == {"approved": True, "round": round_} and state.commit_ts == commit_ts
        latencies.append(woke - committed)
    median = statistics.median(latencies)
    print(f"{sdk.kind}: wait_for woke {[f'{x * 1000:.1f}' for x in latencies]} ms after the commit returned")
    # A watch wakes it; polling, or the watch's 5 s heartbeat, would take seconds. Bounds loose
    # enough for a loaded 2-core machine.
    assert median < 0.5 and max(latencies) < 2.5


def test_wait_for_returns_at_once_or_times_out(sdk: SDK) -> None:
    client = sdk.client
    ts = write(client, "a", "ready", 7)
    state = client.wait_for("a", "ready")
    assert (state.value, state.commit_ts, state.key) == (7, ts, "ready")
    assert client.wait_for("a", "ready", lambda v: v == 7, timeout=1).version == 1
    write(client, "a", "ready2", 1)  # a key under the prefix "ready" is not the key
    began = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        client.wait_for("a", "ready", lambda v: v == 8, timeout=0.3)
    assert 0.3 <= time.monotonic() - began < 10


def test_calls_after_close_raise_the_sdks_error(sdk: SDK) -> None:
    client = sdk.connect()
    client.close()
    calls = [
        lambda: client.health(),
        lambda: client.get_state("a", "k"),
        lambda: client.list_keys("a"),
        lambda: list(client.replay("a")),
        lambda: client.watch("a"),
        lambda: client.begin_transaction().commit(),
    ]
    for call in calls:
        with pytest.raises(statehouse.StatehouseError) as closed:
            call()
        assert closed.value.code == "CANCELLED" and "closed" in str(closed.value)


def test_closing_the_client_ends_its_watch_with_an_error(sdk: SDK) -> None:
    """Both clients: a StatehouseError with code CANCELLED, never a bare CancelledError."""
    client = sdk.connect()
    watch = client.watch("a")
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            for _ in watch:
                pass
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    client.close()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert len(errors) == 1, errors
    assert isinstance(errors[0], statehouse.StatehouseError), repr(errors[0])
    assert errors[0].code == "CANCELLED"
