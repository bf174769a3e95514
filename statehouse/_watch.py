"""Following commits live: `Watch` (sync), `AsyncWatch`, and the feed they share.

`WatchFeed` is the pure part: it turns WatchResponses into events and knows
where to resume, so that a watch re-subscribed after the daemon cut it off
(RESOURCE_EXHAUSTED) or became unreachable (UNAVAILABLE) delivers every
commit once, with no gap. The two classes add only the stream I/O.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import grpc

from statehouse import _retry, _wire
from statehouse._proto import statehouse_pb2 as pb
from statehouse.exceptions import (
    DataLossError,
    DeadlineExceededError,
    StatehouseError,
    UnavailableError,
    from_rpc_error,
    from_status,
)
from statehouse.types import ReplayEvent

if TYPE_CHECKING:
    from statehouse.async_client import AsyncStatehouse
    from statehouse.client import Statehouse


# The daemon sends a heartbeat at least every 5 s while nothing matches. A
# watch that waits this long without a word takes the daemon for lost (hung,
# or cut off without the connection saying so) and resumes, as after UNAVAILABLE.
IDLE_SECONDS = 20.0


def _stalled() -> StatehouseError:
    return UnavailableError(f"no word from the daemon for {IDLE_SECONDS:g} s (it sends one every 5 s)")


class WatchFeed:
    """The events received and not yet delivered, and how far delivery has got."""

    def __init__(self, request: pb.WatchRequest) -> None:
        self._request = request
        # Every commit up to here was received; None before the first response
        # of a watch that starts now (start_ts absent).
        self._received_ts: int | None = max(request.start_ts - 1, 0) if request.HasField("start_ts") else None
        self._pending: collections.deque[ReplayEvent] = collections.deque()

    @property
    def progress_ts(self) -> int:
        """Every commit up to this commit_ts has been delivered (or did not match)."""
        if self._pending:
            return self._pending[0].commit_ts - 1
        return self._received_ts or 0

    def request(self) -> pb.WatchRequest:
        """The request that (re)subscribes: from where the last response left off."""
        if self._received_ts is None:
            return self._request
        request = pb.WatchRequest()
        request.CopyFrom(self._request)
        request.start_ts = self._received_ts + 1
        return request

    def receive(self, response: pb.WatchResponse) -> None:
        namespace = self._request.namespace
        done = self._received_ts
        for message in response.events:
            if done is None or message.commit_ts > done:  # a repeat after re-subscribing is dropped
                self._pending.append(_wire.replay_event(message, namespace))
        if done is None or response.progress_ts > done:
            self._received_ts = response.progress_ts

    def pop(self) -> ReplayEvent | None:
        return self._pending.popleft() if self._pending else None

    def failed(self, error: StatehouseError) -> StatehouseError:
        """The error that ends the watch; a DataLossError says how far it got."""
        if isinstance(error, DataLossError):
            error.progress_ts = self.progress_ts
        return error


_WATCH_DOC = """

    Iterating yields each matching commit's `ReplayEvent` (one per agent and
    commit) in commit_ts order, as soon as it is durable. `progress_ts`:
    every commit up to it has been delivered or did not match. A watch the
    daemon cuts off for reading too slowly (RESOURCE_EXHAUSTED), or loses
    (UNAVAILABLE, e.g. a daemon restart), re-subscribes from progress_ts + 1
    with the client's retry backoff, with no gap and no duplicate; the
    iteration raises UnavailableError (or that error) only when no
    re-subscription succeeded for the client's `timeout`, or at once with
    `retry=None`. A watch that hears nothing from the daemon for 20 s
    (it sends a heartbeat every 5 s) takes it for lost and resumes the same
    way, so a hung daemon ends the iteration instead of blocking it forever.
"""


class Watch:
    __doc__ = "A live watch of commits (sync): an iterator and a context manager." + _WATCH_DOC

    def __init__(self, client: Statehouse, request: pb.WatchRequest) -> None:
        self._client = client
        self._feed = WatchFeed(request)
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._stream: Any = None
        # When the reading thread began waiting for the stream's next message
        # (None while it is not waiting), and whether the watchdog gave up on it.
        self._waiting_since: float | None = None
        self._stalled = False
        _WATCHDOG.add(self)

    @property
    def progress_ts(self) -> int:
        """Every commit up to this commit_ts has been delivered, or did not match."""
        return self._feed.progress_ts

    def cancel(self) -> None:
        """End the watch; an iteration in any thread ends without an error."""
        self._cancelled.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.cancel()

    close = cancel

    def _subscribe(self, codes: frozenset[str], timeout: float | None = None) -> bool:
        """Open the stream and wait for its first response; False if cancelled meanwhile.

        Gives up after `timeout` seconds, or the client's timeout if that is shorter.
        """
        limit = self._client.timeout if timeout is None else min(timeout, self._client.timeout)
        attempts = _retry.Attempts(self._client.retry, limit, codes)
        while not self._cancelled.is_set():
            stream = self._client._stub.Watch(self._feed.request())
            with self._lock:
                self._stream = stream
            if self._cancelled.is_set():
                stream.cancel()
                return False
            # The first answer comes once the daemon has registered the watch;
            # a daemon that does not send it within the deadline is given up on.
            late = threading.Event()
            timer = threading.Timer(max(attempts.remaining(), 0.001), _cancel_late, (stream, late))
            timer.start()
            try:
                self._feed.receive(next(stream))
                return True
            except StopIteration:
                error: StatehouseError = UnavailableError("the daemon ended the watch")
            except grpc.RpcError as exc:
                if self._cancelled.is_set():
                    return False
                if late.is_set():
                    raise DeadlineExceededError("the daemon did not start the watch in time") from None
                error = from_rpc_error(exc, False, self._client._closed())
            finally:
                timer.cancel()
            delay = attempts.backoff(error)
            if delay is None:
                raise self._feed.failed(error)
            self._cancelled.wait(delay)
        return False

    def __iter__(self) -> Watch:
        return self

    def _check_idle(self, now: float) -> None:
        """Called by the watchdog: cancel a stream that has said nothing for IDLE_SECONDS."""
        since = self._waiting_since
        if since is not None and now - since > IDLE_SECONDS and not self._cancelled.is_set():
            with self._lock:
                stream = self._stream
            self._stalled = True
            if stream is not None:
                stream.cancel()

    def __next__(self) -> ReplayEvent:
        while True:
            event = self._feed.pop()
            if event is not None:
                return event
            if self._cancelled.is_set():
                raise StopIteration
            self._waiting_since = time.monotonic()
            try:
                self._feed.receive(next(self._stream))
                continue
            except StopIteration:
                error: StatehouseError = UnavailableError("the daemon ended the watch")
            except grpc.RpcError as exc:
                if self._cancelled.is_set():
                    raise StopIteration from None
                error = _stalled() if self._stalled else from_rpc_error(exc, False, self._client._closed())
            finally:
                self._waiting_since = None
            self._stalled = False
            if self._client.retry is None or error.code not in _retry.RESUBSCRIBED_CODES:
                raise self._feed.failed(error)
            if not self._subscribe(_retry.RESUBSCRIBED_CODES):
                raise StopIteration

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class _Watchdog:
    """One daemon thread for all sync watches of the process: once a second it asks
    each to check how long it has waited (a blocked gRPC read takes no timeout)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()
        self._thread: threading.Thread | None = None

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="statehouse-watchdog", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(1.0)
            with self._lock:
                watches = list(self._watches)
                if not watches:
                    self._thread = None  # the next add() starts another
                    return
            now = time.monotonic()
            for watch in watches:
                watch._check_idle(now)


_WATCHDOG = _Watchdog()


def closed_client() -> StatehouseError:
    """What a stream of a closed async client raises (grpc.aio cancels its calls;
    the sync client's streams fail with CANCELLED the same way)."""
    return from_status(grpc.StatusCode.CANCELLED, "the client was closed", False)


class ClosedStub:
    """What a closed client calls instead of its stub: every RPC raises `closed_client()`
    (gRPC's own answer, a ValueError, is not the SDK's error)."""

    def __getattr__(self, rpc: str) -> Any:
        def closed(*args: Any, **kwargs: Any) -> Any:
            raise closed_client()

        return closed


def _cancel_late(stream: Any, late: threading.Event) -> None:
    late.set()
    stream.cancel()


class AsyncWatch:
    __doc__ = (
        "A live watch of commits (async): an async iterator and an async context manager. "
        "Cancelling the task that consumes it cancels the stream too." + _WATCH_DOC
    )

    def __init__(self, client: AsyncStatehouse, request: pb.WatchRequest) -> None:
        self._client = client
        self._feed = WatchFeed(request)
        self._cancelled = False
        self._call: Any = None
        # The task reading it was cancelled mid-read (an asyncio timeout, say),
        # which cancels the call: the next read resumes on a new one.
        self._interrupted = False

    @property
    def progress_ts(self) -> int:
        """Every commit up to this commit_ts has been delivered, or did not match."""
        return self._feed.progress_ts

    def cancel(self) -> None:
        """End the watch; a pending `async for` ends without an error."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()

    async def aclose(self) -> None:
        """End the watch (as `cancel`)."""
        self.cancel()

    async def _read(self) -> pb.WatchResponse | None:
        """The next response; None once cancelled by `cancel()`. Raises StatehouseError."""
        try:
            response = await self._call.read()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                self._call.cancel()  # the consuming task was cancelled: so is the stream
                self._interrupted = True
                raise
            if self._cancelled:
                return None
            raise closed_client() from None
        except grpc.aio.AioRpcError as exc:
            if self._cancelled:
                return None
            raise from_rpc_error(exc, False, self._client._closed()) from None
        if response is grpc.aio.EOF:
            if self._cancelled:
                return None
            raise UnavailableError("the daemon ended the watch")
        return response  # type: ignore[no-any-return]

    async def _subscribe(self, codes: frozenset[str]) -> bool:
        attempts = _retry.Attempts(self._client.retry, self._client.timeout, codes)
        while not self._cancelled:
            self._call = self._client._stub.Watch(self._feed.request())
            self._interrupted = False
            try:
                async with asyncio.timeout(attempts.remaining()):
                    response = await self._read()
            except TimeoutError:
                self._call.cancel()
                raise DeadlineExceededError("the daemon did not start the watch in time") from None
            except StatehouseError as exc:
                delay = attempts.backoff(exc)
                if delay is None:
                    raise self._feed.failed(exc) from None
                await asyncio.sleep(delay)
                continue
            if response is None:
                return False
            self._feed.receive(response)
            return True
        return False

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> ReplayEvent:
        while True:
            event = self._feed.pop()
            if event is not None:
                return event
            if self._cancelled:
                raise StopAsyncIteration
            if self._interrupted:  # not a failure: resume without counting it as one
                if not await self._subscribe(_retry.RESUBSCRIBED_CODES):
                    raise StopAsyncIteration
                continue
            try:
                try:
                    async with asyncio.timeout(IDLE_SECONDS):
                        response = await self._read()
                except TimeoutError:
                    self._call.cancel()
                    raise _stalled() from None
            except StatehouseError as exc:
                if self._client.retry is None or exc.code not in _retry.RESUBSCRIBED_CODES:
                    raise self._feed.failed(exc) from None
                if not await self._subscribe(_retry.RESUBSCRIBED_CODES):
                    raise StopAsyncIteration from None
                continue
            if response is None:
                raise StopAsyncIteration
            self._feed.receive(response)

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()
