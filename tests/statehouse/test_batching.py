"""statehouse/_batching.py: the Combiner, which lets concurrent commits (or reads) of one
client share round trips. Its concurrency logic over a fake transport on real threads, and
its places on the wire, which are never leaked."""

from __future__ import annotations

import collections
import random
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from helpers import C, W, put
from threads import run_threads

from statehouse import StatehouseError, TransactionClosedError, TransactionError, UnavailableError
from statehouse._batching import Combiner
from statehouse._proto import statehouse_pb2 as pb
from statehouse.exceptions import from_status

# -- Combiner: its concurrency logic, over a fake transport on real threads ----------


class QueueWatch(collections.deque[Any]):
    """Stands in for the combiner's queue to tell the test when a commit has queued.

    Appends happen under the combiner's lock; the test waits on `changed`, so
    it knows a thread has queued without sleeping or polling.
    """

    def __init__(self) -> None:
        super().__init__()
        self.changed = threading.Condition()

    def append(self, item: Any) -> None:
        super().append(item)
        with self.changed:
            self.changed.notify_all()

    def wait_for_length(self, length: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self) == length, timeout=W), (len(self), length)


class FakeWire:
    """A transport whose calls block until `gate` is set, recording each call.

    Commit ts is derived from the request's id, so each caller can be checked
    to get its own answer.
    """

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.lock = threading.Lock()
        self.calls: list[tuple[str, list[str]]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.item_errors: dict[str, StatehouseError] = {}
        self.batch_error: StatehouseError | None = None

    def _enter(self, kind: str, requests: Sequence[pb.CommitRequest]) -> None:
        with self.lock:
            self.calls.append((kind, [r.txn_id for r in requests]))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.entered.release()
        assert self.gate.wait(W)

    def _leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def send_one(self, request: pb.CommitRequest) -> int:
        self._enter("one", [request])
        try:
            error = self.item_errors.get(request.txn_id)
            if error is not None:
                raise error
            return ts_of(request.txn_id)
        finally:
            self._leave()

    def send_many(self, requests: Sequence[pb.CommitRequest]) -> list[int | StatehouseError]:
        self._enter("many", requests)
        try:
            if self.batch_error is not None:
                raise self.batch_error
            return [self.item_errors.get(r.txn_id, ts_of(r.txn_id)) for r in requests]
        finally:
            self._leave()


def txn(n: int) -> pb.CommitRequest:
    return pb.CommitRequest(txn_id=f"ns:{n:024x}", mutations=[put("k")])


def ts_of(txn_id: str) -> int:
    return 1000 + int(txn_id.rpartition(":")[2], 16)


class Callers:
    """Threads calling `combiner.call`, each keeping its own outcome."""

    def __init__(self, combiner: Combiner[Any, Any]) -> None:
        self.combiner = combiner
        self.outcomes: dict[int, int | BaseException] = {}
        self.threads: list[threading.Thread] = []

    def start(self, n: int) -> None:
        def run() -> None:
            try:
                self.outcomes[n] = self.combiner.call(txn(n))
            except BaseException as exc:
                self.outcomes[n] = exc

        thread = threading.Thread(target=run, name=f"caller-{n}")
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(W)
            assert not thread.is_alive(), f"{thread.name} never got its outcome"


def combiner_with_both_places_taken(wire: FakeWire, queued: int) -> tuple[Combiner[Any, Any], Callers]:
    """Two commits blocked on the wire (max_in_flight=2) and `queued` more waiting, in order."""
    combiner = Combiner(wire.send_one, wire.send_many, max_in_flight=2)
    watch = QueueWatch()
    combiner._queue = watch
    callers = Callers(combiner)
    for n in (0, 1):
        callers.start(n)
        assert wire.entered.acquire(timeout=W)  # on the wire, holding one of the two places
    for n in range(2, 2 + queued):
        callers.start(n)
        watch.wait_for_length(n - 1)  # queued behind the others: arrival order is known
    return combiner, callers


def test_combiner_sends_queued_commits_together_each_with_its_own_outcome() -> None:
    wire = FakeWire()
    refused_one = TransactionClosedError("transaction 'ns:...' was used before", "FAILED_PRECONDITION")
    wire.item_errors[txn(5).txn_id] = refused_one
    combiner, callers = combiner_with_both_places_taken(wire, queued=10)
    assert wire.calls == [("one", [txn(0).txn_id]), ("one", [txn(1).txn_id])]
    wire.gate.set()
    callers.join()

    later = wire.calls[2:]
    assert 1 <= len(later) <= 2, later
    assert all(kind == "many" for kind, _ in later), later
    sent = [txn_id for _, ids in later for txn_id in ids]
    assert sent == [txn(n).txn_id for n in range(2, 12)]  # each once, oldest first
    assert wire.most_in_flight <= 2
    for n in range(12):
        if n == 5:
            assert callers.outcomes[n] is refused_one
        else:
            assert callers.outcomes[n] == ts_of(txn(n).txn_id), n

    # Every place on the wire was given back: a lone commit goes out at once, alone.
    assert combiner.call(txn(99)) == ts_of(txn(99).txn_id)
    assert wire.calls[-1] == ("one", [txn(99).txn_id])


def test_combiner_gives_a_failed_call_to_every_caller_as_its_own_exception() -> None:
    wire = FakeWire()
    wire.batch_error = from_status(C.UNAVAILABLE, "the daemon went away", True)
    _combiner, callers = combiner_with_both_places_taken(wire, queued=6)
    wire.gate.set()
    callers.join()

    assert [callers.outcomes[n] for n in (0, 1)] == [ts_of(txn(0).txn_id), ts_of(txn(1).txn_id)]
    errors = [callers.outcomes[n] for n in range(2, 8)]
    for error in errors:
        assert isinstance(error, TransactionError) and isinstance(error, UnavailableError)
        assert (str(error), error.code) == ("the daemon went away", "UNAVAILABLE")
    assert len({id(error) for error in errors}) == len(errors)  # not one instance raised in 6 threads


def test_combiner_sends_sequential_commits_alone() -> None:
    wire = FakeWire()
    wire.gate.set()
    combiner = Combiner(wire.send_one, wire.send_many, max_in_flight=2)
    assert [combiner.call(txn(n)) for n in range(5)] == [ts_of(txn(n).txn_id) for n in range(5)]
    assert wire.calls == [("one", [txn(n).txn_id]) for n in range(5)]


# -- Combiner: places on the wire are never leaked ---------------------------------------


class _Numbered:
    """A request for the fake transports below: an id, and the size the combiner asks for."""

    def __init__(self, value: object) -> None:
        self.value = value

    def ByteSize(self) -> int:
        return 8


def test_combiner_under_forced_thread_switching_leaks_no_place() -> None:
    # A thread that already owns a place must never be handed a second one:
    # that place would never come back, and after two such leaks every call
    # would wait forever. Switching threads every microsecond makes the
    # interleavings that used to leak common.
    rng = random.Random(7)

    def network(values: list[object]) -> list[object]:
        time.sleep(rng.random() * 0.0005)  # the time a call spends on the wire, varied
        return values

    combiner: Combiner[Any, Any] = Combiner(
        lambda r: network([r.value])[0], lambda rs: network([r.value for r in rs]), max_in_flight=2
    )
    answers: dict[int, list[object]] = collections.defaultdict(list)
    failures: list[BaseException] = []

    def caller(n: int) -> None:
        try:
            for step in range(300):
                answers[n].append(combiner.call(_Numbered((n, step))))
        except BaseException as exc:
            failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        run_threads(caller, 8, 60)
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    assert all(answers[n] == [(n, step) for step in range(300)] for n in range(8))
    assert combiner._senders == 0 and not combiner._queue


def test_combiner_caller_interrupted_while_waiting_withdraws_and_frees_nothing_it_lacks() -> None:
    # Ctrl-C in a caller waiting for a place: its request is withdrawn unsent,
    # and the places stay usable (this used to leave one leaked per interrupt).
    entered = {name: threading.Event() for name in ("A", "B")}
    release = threading.Event()
    sent: list[object] = []

    def send_one(request: _Numbered) -> object:
        sent.append(request.value)
        if request.value in entered:
            entered[request.value].set()  # type: ignore[index]
            release.wait(W)
        return request.value

    def send_many(requests: Sequence[_Numbered]) -> list[object]:
        sent.extend(r.value for r in requests)
        return [r.value for r in requests]

    combiner: Combiner[Any, Any] = Combiner(send_one, send_many, max_in_flight=2)
    holders = [threading.Thread(target=combiner.call, args=(_Numbered(name),)) for name in entered]
    for holder in holders:
        holder.start()
    for event in entered.values():
        assert event.wait(W)  # both places are taken now

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            combiner.call(_Numbered("interrupted"))  # waits: no place is free
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    release.set()
    for holder in holders:
        holder.join(W)
    assert "interrupted" not in sent
    assert combiner._senders == 0 and not combiner._queue
    assert [combiner.call(_Numbered(n)) for n in range(3)] == [0, 1, 2]


@pytest.mark.parametrize(
    "ending", [UnavailableError("the daemon went away", "UNAVAILABLE"), KeyboardInterrupt()], ids=repr
)
def test_combiner_lone_sender_that_fails_or_is_interrupted_hands_its_place_on(ending: BaseException) -> None:
    # A call that found the wire free goes out alone, outside the queue. Whatever ends
    # it (an error, Ctrl-C in its thread), a caller that queued meanwhile gets the place.
    entered, release = threading.Event(), threading.Event()
    sent: list[object] = []

    def send_one(request: _Numbered) -> object:
        sent.append(request.value)
        if request.value == "lone":
            entered.set()
            release.wait(W)
            raise ending
        return request.value

    def send_many(requests: Sequence[_Numbered]) -> list[object]:
        sent.extend(r.value for r in requests)
        return [r.value for r in requests]

    combiner: Combiner[Any, Any] = Combiner(send_one, send_many, max_in_flight=1)
    watch = QueueWatch()
    combiner._queue = watch
    raised: list[BaseException] = []
    outcomes: dict[int, object] = {}

    def lone() -> None:
        try:
            combiner.call(_Numbered("lone"))
        except BaseException as exc:
            raised.append(exc)

    lone_thread = threading.Thread(target=lone)
    lone_thread.start()
    assert entered.wait(W)  # the only place is taken
    queued = threading.Thread(target=lambda: outcomes.update({7: combiner.call(_Numbered(7))}))
    queued.start()
    watch.wait_for_length(1)  # waiting for the place
    release.set()
    lone_thread.join(W)
    queued.join(W)
    assert raised == [ending]
    assert outcomes == {7: 7}  # sent once the lone sender gave its place up
    assert sent == ["lone", 7]
    assert combiner._senders == 0 and not combiner._queue
