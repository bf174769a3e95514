"""Call combining: concurrent commits (or reads) from one client share round trips.

An agent framework runs many agents as threads of one process, each
committing its own small transactions and reading its own keys. Sent one by
one, every call pays a full gRPC round trip (about 0.3 ms of CPU on each
side on the development VM; docs/performance.md#sessions). A `Combiner` lets at most `max_in_flight` calls be
on the wire at once; requests that arrive meanwhile queue up and leave
together in the next call, as one `CommitBatch` (or `ReadBatch`). A lone
request is sent at once as a plain call, so a sequential caller waits for
nothing.

There is no sender thread: the thread that finds a free place on the wire
sends, then keeps sending what has queued until its own request is
answered, and then hands its place to the oldest waiting thread that has
none. A thread interrupted while waiting withdraws its request if it was
not sent yet, and passes on any place it owns. Each
request still succeeds or fails on its own; the daemon gives each its own
outcome.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from statehouse.exceptions import StatehouseError

# One batch carries at most this many requests, or about this many bytes.
MAX_BATCH_REQUESTS = 256
MAX_BATCH_BYTES = 4 * 1024 * 1024


Q = TypeVar("Q")  # a request message
A = TypeVar("A")  # its answer


class _Slot:
    __slots__ = ("done", "event", "holds", "outcome", "request", "size")

    def __init__(self, request: Any) -> None:
        self.request = request
        self.size = -1  # its ByteSize(), once a batch needs it
        # Made by the slot's thread when it has to wait (under the lock), so a call
        # that finds the wire free makes none.
        self.event: threading.Event | None = None
        self.done = False
        self.outcome: Any = None
        # This slot's thread owns one of the places on the wire: it took a
        # free one, or a finishing sender handed it one. Changed under the lock.
        self.holds = False


class Combiner(Generic[Q, A]):
    """Sends requests alone when the wire is free and in batches when it is busy.

    `send_one(request)` returns the answer or raises a StatehouseError;
    `send_many(requests)` returns one answer or StatehouseError per
    request, or raises one StatehouseError that applies to all of them.
    """

    def __init__(
        self,
        send_one: Callable[[Q], A],
        send_many: Callable[[Sequence[Q]], list[A | StatehouseError]],
        max_in_flight: int = 2,
    ) -> None:
        self._send_one = send_one
        self._send_many = send_many
        self._max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self._queue: collections.deque[_Slot] = collections.deque()
        # Places on the wire owned by threads; always the number of slots
        # with `holds` set, and at most `max_in_flight`.
        self._senders = 0

    def call(self, request: Q) -> A:
        """Send `request` (anything with a ByteSize() method), alone or with others; returns its answer."""
        with self._lock:
            alone = not self._queue and self._senders < self._max_in_flight
            if alone:
                self._senders += 1
        if alone:
            # Nothing queued and a place free: send it alone, with no slot, as a sequential
            # caller always does. Whoever queues meanwhile waits for this place or another.
            try:
                return self._send_one(request)
            finally:
                with self._lock:
                    self._hand_on()
        slot = _Slot(request)
        with self._lock:
            self._queue.append(slot)
            if self._senders < self._max_in_flight:
                self._senders += 1
                slot.holds = True
        try:
            while True:
                batch: list[_Slot] = []
                with self._lock:
                    if slot.holds:
                        if slot.done:  # answered: pass our place on
                            slot.holds = False
                            self._hand_on()
                            break
                        batch = self._take()
                        if not batch:  # our request is on the wire in another thread's call
                            slot.holds = False
                            self._senders -= 1
                    elif slot.done:
                        break
                    if not batch:
                        # Set, under the lock, by whoever answers or promotes us.
                        event = slot.event = threading.Event()
                if batch:
                    self._send(batch)
                else:
                    event.wait()
        except BaseException:
            # Interrupted (Ctrl-C): a request not yet sent is withdrawn, and a
            # place on the wire we own goes to the next waiter, not lost.
            with self._lock:
                try:
                    self._queue.remove(slot)
                except ValueError:
                    pass  # on the wire already: its outcome is unknown to the caller
                if slot.holds:
                    slot.holds = False
                    self._hand_on()
            raise
        if isinstance(slot.outcome, BaseException):
            raise slot.outcome
        return slot.outcome  # type: ignore[no-any-return]

    def _hand_on(self) -> None:
        """Give a place on the wire to the oldest waiter without one, else free it (lock held)."""
        for waiting in self._queue:
            if not waiting.holds:
                waiting.holds = True
                if waiting.event is not None:
                    waiting.event.set()
                return
        self._senders -= 1

    def _take(self) -> list[_Slot]:
        """The oldest queued requests that fit one call (lock held)."""
        batch: list[_Slot] = []
        size = 0
        queue = self._queue
        while queue and len(batch) < MAX_BATCH_REQUESTS:
            slot = queue[0]
            if slot.size < 0:
                slot.size = slot.request.ByteSize()
            if batch and size + slot.size > MAX_BATCH_BYTES:
                break
            queue.popleft()
            size += slot.size
            batch.append(slot)
        return batch

    def _send(self, batch: list[_Slot]) -> None:
        outcomes: list[Any]
        interrupted: BaseException | None = None
        try:
            if len(batch) == 1:
                outcomes = [self._send_one(batch[0].request)]
            else:
                outcomes = list(self._send_many([slot.request for slot in batch]))
        except StatehouseError as exc:
            # One failure for the whole call: each caller gets its own copy to raise.
            outcomes = [exc]
            outcomes.extend(copy.copy(exc) for _ in batch[1:])  # with its attributes (horizon...)
        except BaseException as exc:  # e.g. KeyboardInterrupt in this thread: answer the others
            interrupted = exc
            message = "call interrupted in the sending thread; its outcome is unknown"
            outcomes = [StatehouseError(message) for _ in batch]
        with self._lock:
            for slot, outcome in zip(batch, outcomes, strict=True):
                slot.outcome = outcome
                slot.done = True
                if slot.event is not None:
                    slot.event.set()
        if interrupted is not None:
            raise interrupted  # `call` passes our place on


class AsyncCombiner(Generic[Q, A]):
    """`Combiner` for one event loop: concurrent tasks' requests share round trips.

    At most `max_in_flight` calls are on the wire; a request that arrives
    when one is free is sent at once, alone, and requests that queue
    meanwhile leave together in the next call. Each call is a task of its
    own; the caller awaits its request's answer. A caller cancelled before
    its request was sent withdraws it; once sent, its outcome is unknown to
    that caller (the daemon answers a retry of a commit that opened its
    transaction with its first commit_ts).
    """

    def __init__(
        self,
        send_one: Callable[[Q], Awaitable[A]],
        send_many: Callable[[Sequence[Q]], Awaitable[list[A | StatehouseError]]],
        max_in_flight: int = 2,
    ) -> None:
        self._send_one = send_one
        self._send_many = send_many
        self._max_in_flight = max_in_flight
        self._queue: collections.deque[tuple[Q, asyncio.Future[A]]] = collections.deque()
        self._in_flight = 0
        self._calls: set[asyncio.Task[None]] = set()  # held, so that they are not collected mid-call

    async def call(self, request: Q) -> A:
        """Send `request` (anything with a ByteSize() method), alone or with others; returns its answer."""
        answer: asyncio.Future[A] = asyncio.get_running_loop().create_future()
        self._queue.append((request, answer))
        self._start_calls()
        try:
            return await answer
        except asyncio.CancelledError:
            try:
                self._queue.remove((request, answer))  # not sent yet: withdrawn
            except ValueError:
                pass
            raise

    def _start_calls(self) -> None:
        while self._queue and self._in_flight < self._max_in_flight:
            batch = self._take()
            if not batch:
                return
            self._in_flight += 1
            task = asyncio.ensure_future(self._send(batch))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    def _take(self) -> list[tuple[Q, asyncio.Future[A]]]:
        """The oldest queued requests, whose callers still wait, that fit one call."""
        batch: list[tuple[Q, asyncio.Future[A]]] = []
        size = 0
        while self._queue and len(batch) < MAX_BATCH_REQUESTS:
            request, answer = self._queue[0]
            if answer.done():  # its caller was cancelled
                self._queue.popleft()
                continue
            grows = request.ByteSize()  # type: ignore[attr-defined]
            if batch and size + grows > MAX_BATCH_BYTES:
                break
            self._queue.popleft()
            size += grows
            batch.append((request, answer))
        return batch

    async def _send(self, batch: list[tuple[Q, asyncio.Future[A]]]) -> None:
        outcomes: list[Any]
        try:
            if len(batch) == 1:
                outcomes = [await self._send_one(batch[0][0])]
            else:
                outcomes = list(await self._send_many([request for request, _ in batch]))
        except StatehouseError as exc:
            outcomes = [exc, *(copy.copy(exc) for _ in batch[1:])]
        except BaseException as exc:  # cancelled (the client closing): the callers learn it
            outcomes = [StatehouseError(f"call interrupted ({exc!r}); its outcome is unknown") for _ in batch]
        finally:
            self._in_flight -= 1
        for (_, answer), outcome in zip(batch, outcomes, strict=True):
            if answer.done():
                continue
            if isinstance(outcome, BaseException):
                answer.set_exception(outcome)
            else:
                answer.set_result(outcome)
        self._start_calls()
