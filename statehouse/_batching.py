"""Commit combining: concurrent commits from one client share round trips.

An agent framework runs many agents as threads of one process, each
committing its own small transactions. Sent one by one, every commit pays a
full gRPC round trip (about 0.3 ms of CPU on each side, see PHYSICS.md).
The `CommitCombiner` lets at most `max_in_flight` calls be on the wire at
once; commits that arrive meanwhile queue up and leave together in the next
call, as one `CommitBatch`. A lone commit is sent at once as a plain
`Commit`, so a sequential caller waits for nothing.

There is no sender thread: the thread that finds a free place on the wire
sends, then keeps sending what has queued until its own commit is answered,
and then hands its place to the oldest waiting thread. Each commit still
succeeds or fails on its own; the daemon gives each its own outcome.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Sequence
from typing import Any

from statehouse.exceptions import StatehouseError

# One CommitBatch carries at most this many commits, or about this many bytes.
MAX_BATCH_COMMITS = 256
MAX_BATCH_BYTES = 4 * 1024 * 1024


class _Slot:
    __slots__ = ("done", "event", "outcome", "promoted", "request", "size")

    def __init__(self, request: Any) -> None:
        self.request = request
        self.size: int = request.ByteSize()
        self.event = threading.Event()
        self.done = False
        self.outcome: int | BaseException = 0
        self.promoted = False  # handed a place on the wire by a finishing sender


class CommitCombiner:
    """Sends commits alone when the wire is free and in batches when it is busy.

    `send_one(request)` returns the commit_ts or raises a StatehouseError;
    `send_many(requests)` returns one commit_ts or StatehouseError per
    request, or raises one StatehouseError that applies to all of them.
    """

    def __init__(
        self,
        send_one: Callable[[Any], int],
        send_many: Callable[[Sequence[Any]], list[int | StatehouseError]],
        max_in_flight: int = 2,
    ) -> None:
        self._send_one = send_one
        self._send_many = send_many
        self._max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self._queue: collections.deque[_Slot] = collections.deque()
        self._senders = 0  # places on the wire taken (each by one thread)

    def commit(self, request: Any) -> int:
        """Send `request` (a CommitRequest), alone or with others; returns its commit_ts."""
        slot = _Slot(request)
        with self._lock:
            self._queue.append(slot)
            lead = self._senders < self._max_in_flight
            if lead:
                self._senders += 1
        while True:
            if not lead:
                slot.event.wait()
                with self._lock:
                    slot.event.clear()
                    if slot.promoted:
                        slot.promoted = False
                        lead = True
                    elif slot.done:
                        break
                    else:
                        continue
            with self._lock:
                if slot.done:
                    self._hand_on()
                    break
                batch = self._take()
                if not batch:  # our commit is on the wire in another thread's call
                    self._senders -= 1
                    lead = False
                    continue
            self._send(batch)
        if isinstance(slot.outcome, BaseException):
            raise slot.outcome
        return slot.outcome

    def _hand_on(self) -> None:
        """Give our place on the wire to the oldest waiter not yet given one (lock held)."""
        for waiting in self._queue:
            if not waiting.promoted:
                waiting.promoted = True
                waiting.event.set()
                return
        self._senders -= 1

    def _take(self) -> list[_Slot]:
        """The oldest queued commits that fit one call (lock held)."""
        batch: list[_Slot] = []
        size = 0
        queue = self._queue
        while queue and len(batch) < MAX_BATCH_COMMITS:
            if batch and size + queue[0].size > MAX_BATCH_BYTES:
                break
            slot = queue.popleft()
            size += slot.size
            batch.append(slot)
        return batch

    def _send(self, batch: list[_Slot]) -> None:
        outcomes: list[int | BaseException]
        interrupted: BaseException | None = None
        try:
            if len(batch) == 1:
                outcomes = [self._send_one(batch[0].request)]
            else:
                outcomes = list(self._send_many([slot.request for slot in batch]))
        except StatehouseError as exc:
            # One failure for the whole call: each caller gets its own copy to raise.
            outcomes = [exc]
            outcomes.extend(type(exc)(str(exc), exc.code) for _ in batch[1:])
        except BaseException as exc:  # e.g. KeyboardInterrupt in this thread: free the others
            interrupted = exc
            message = "commit interrupted in the sending thread; its outcome is unknown"
            outcomes = [StatehouseError(message) for _ in batch]
        with self._lock:
            for slot, outcome in zip(batch, outcomes, strict=True):
                slot.outcome = outcome
                slot.done = True
                slot.event.set()
            if interrupted is not None:
                self._hand_on()
        if interrupted is not None:
            raise interrupted
