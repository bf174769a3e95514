"""The clients' unary calls over Session streams (see rpc/session.py): `AsyncLanes` for
`AsyncStatehouse`, and `Lanes`, the same on the process's I/O loop, for `Statehouse`.

A client holds up to `MAX_LANES` Session streams. A call takes an idle
lane (opening one if there are fewer), sends its request as one message
and reads the answer; one call at a time per lane. A call that finds every
lane busy, or a daemon that has no Session RPC or no room for another
session, is made as an RPC of its own instead, so a session only ever
makes a call cheaper.

Failures keep the meaning they have for a plain call: an answer with a
status raises `CallError` (a grpc.RpcError with the code, details and
trailers the call would have ended with), so the SDK maps it as before. A
stream that breaks while a call waits ends that lane and raises what grpc
said (UNAVAILABLE when the daemon went away). Whether the call took effect
is then as unknown as for a plain call cut off, and the SDK's retries stay
safe the same way (a commit's retry is answered with its first commit_ts).

A call's deadline travels with it, so the daemon answers DEADLINE_EXCEEDED
itself. In case it cannot (stopped, or the network cut), the client ends
the call at its deadline (plus `WATCH_EVERY_SECONDS`) and drops its lane.
Lanes idle for `IDLE_SECONDS` are closed, so an idle client holds no
session open on the daemon.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from statehouse import _local
from statehouse._affinity import KeepOff, daemon_cpu
from statehouse._proto import statehouse_pb2 as pb

METHOD = "/statehouse.v1.StatehouseService/Session"
# Lanes one client opens at most: its commits and point reads are combined
# across threads with at most two calls of each on the wire (statehouse._batching).
MAX_LANES = 2
IDLE_SECONDS = 30.0
# How late past its deadline a call the daemon does not answer is ended by the client.
WATCH_EVERY_SECONDS = 0.05
# After a daemon refuses a session (full, or too old to have them), plain calls for this long.
REFUSED_SECONDS = 60.0
# How long closing a client waits for the daemon to end its idle sessions' streams.
END_SECONDS = 1.0

_RESPONSES = {
    method.name: getattr(pb, method.output_type.name)
    for method in pb.DESCRIPTOR.services_by_name["StatehouseService"].methods
    if not method.server_streaming
}


class CallError(grpc.RpcError):
    """A call answered on a session with a status: what grpc.Call tells about a failed call."""

    def __init__(
        self, code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, Any], ...] = ()
    ) -> None:
        super().__init__(details)
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._trailers


_CODES = {code.value[0]: code for code in grpc.StatusCode}


# What a daemon answers a Session stream it will not serve: calls then go as RPCs of their own.
_REFUSALS = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.RESOURCE_EXHAUSTED)


def _request(call_id: int, method: str, request: Any, timeout: float) -> bytes:
    """The SessionRequest message carrying call `call_id`, serialized."""
    message = pb.SessionRequest(
        id=call_id,
        method=method,
        request=request.SerializeToString(),
        timeout_ms=max(1, int(timeout * 1000)),
    )
    return message.SerializeToString()


def _checked(answer: pb.SessionResponse, call_id: int) -> pb.SessionResponse:
    if answer.id != call_id:  # never, unless the daemon is broken: do not trust the lane
        raise CallError(grpc.StatusCode.INTERNAL, f"session answer {answer.id} for call {call_id}")
    return answer


def _response(method: str, answer: pb.SessionResponse) -> Any:
    """The call's response message; its status raised as a CallError if it failed."""
    if answer.code:
        raise _failure(answer)
    return _RESPONSES[method].FromString(answer.response)


def _failure(answer: pb.SessionResponse) -> CallError:
    trailers = tuple(
        (t.key, t.value if t.key.endswith("-bin") else t.value.decode("utf-8", "replace"))
        for t in answer.trailers
    )
    return CallError(_CODES.get(answer.code, grpc.StatusCode.UNKNOWN), answer.message, trailers)


class Lanes:
    """`AsyncLanes` for `Statehouse`, whose callers are threads: its Session streams live on
    a grpc.aio channel of their own, served by the process's I/O loop (`io_loop`).

    A call is handed to the loop and its thread waits for the answer. One
    loop thread serves every client of the process, in place of two grpc
    helper threads for each stream of each client (a request reader and a
    channel poller) that a synchronous stream costs, and for less client
    CPU per call (docs/performance.md, "uvloop, Struct values, and the sync
    client's sessions on an I/O loop").
    """

    def __init__(
        self, target: str, options: list[tuple[str, int]], max_lanes: int = MAX_LANES, local: bool = True
    ) -> None:
        self._target, self._options, self._max = target, options, max_lanes
        self._use_local = local  # whether to use the daemon's local socket once it is named
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lanes: AsyncLanes | None = None
        self._channel: grpc.aio.Channel | None = None
        self._closed = False
        # The daemon's local socket, once a stream has named it (statehouse._local), and the
        # ones found unusable, not tried again.
        self._local: LocalLanes | None = None
        self._unusable: set[_local.Place] = set()
        self._sweep: asyncio.TimerHandle | None = None

    def call(self, method: str, request: Any, timeout: float) -> Any:
        """The call's response message, or None if it must be made as an RPC of its own.

        Raises grpc.RpcError (a CallError, or grpc's own) as the call would.
        """
        local = self._local
        if local is not None:
            response = local.call(method, request, timeout)
            if response is not None:
                return response
            if local.unusable:
                self._forget(local)
        started = self._started()
        if started is None:
            return None
        loop, lanes = started
        slot = _Handoff()

        def start() -> None:
            _Handoff.in_flight += 1
            slot.task = loop.create_task(lanes.call(method, request, timeout))
            slot.task.add_done_callback(slot.finished)

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop has stopped (the interpreter is exiting)
            return None
        # AsyncLanes ends the call at its deadline; the margin is for a loop that stalls.
        if not slot.wait(timeout + 5.0, loop):
            raise CallError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        return slot.outcome()

    def _learned(self, place: _local.Place) -> None:
        """A stream named the daemon's local socket: calls go there from now on (unless it
        was found unusable before). Called on the I/O loop."""
        with self._lock:
            if self._closed or place in self._unusable:
                return
            old = self._local
            if old is not None and old.place == place:
                return
            self._local = LocalLanes(place, self._max)
        if old is not None:
            old.retire()
        lanes = self._lanes
        if lanes is not None:
            # The stream that named the socket goes idle once its call returns: let it go then,
            # so that it holds none of the daemon's sessions, nor its stop (which waits for
            # open streams).
            asyncio.get_running_loop().call_soon(lanes.drop_idle_streams)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(IDLE_SECONDS / 2, self._close_idle)

    def _close_idle(self) -> None:
        """Close the local lanes idle for IDLE_SECONDS; every IDLE_SECONDS / 2, on the I/O
        loop, while the client has local lanes."""
        local = self._local
        if local is None:
            self._sweep = None
            return
        local.close_idle(IDLE_SECONDS)
        self._sweep = asyncio.get_running_loop().call_later(IDLE_SECONDS / 2, self._close_idle)

    def _forget(self, local: LocalLanes) -> None:
        with self._lock:
            self._unusable.add(local.place)
            if self._local is local:
                self._local = None
        local.retire()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            local, self._local = self._local, None
            loop, lanes, channel = self._loop, self._lanes, self._channel
            self._lanes = self._channel = None
        if local is not None:
            local.close()
        if loop is None or lanes is None or channel is None:
            return

        async def close() -> None:
            await lanes.aclose()
            await channel.close()

        try:
            asyncio.run_coroutine_threadsafe(close(), loop).result(CLOSE_SECONDS)
        except (RuntimeError, TimeoutError, concurrent.futures.TimeoutError):
            pass  # the loop has stopped or stalls: the process is exiting

    def _started(self) -> tuple[asyncio.AbstractEventLoop, AsyncLanes] | None:
        """The loop and the lanes, made on the first call (None once closed)."""
        with self._lock:
            if self._closed:
                return None
            if self._loop is None or self._lanes is None:
                loop = io_loop()

                async def open_channel() -> tuple[grpc.aio.Channel, AsyncLanes]:
                    # Made on the loop: a grpc.aio channel belongs to the loop it is made on.
                    channel = grpc.aio.insecure_channel(self._target, options=self._options)
                    # The loop's thread keeps off the CPU of a daemon on this machine.
                    lanes = AsyncLanes(
                        channel,
                        self._max,
                        on_daemon_cpu=_IO_KEEP_OFF.avoid,
                        on_local=self._learned,
                        local=self._use_local,
                    )
                    return channel, lanes

                self._channel, self._lanes = asyncio.run_coroutine_threadsafe(open_channel(), loop).result()
                self._loop = loop
            return self._loop, self._lanes


class _Handoff:
    """A call handed to the I/O loop: its task, and the thread that waits for it."""

    __slots__ = ("_done", "task")
    # Calls of every `Statehouse` of the process on the I/O loop (changed on the loop only).
    in_flight = 0

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()  # released when the task is done
        self.task: asyncio.Task[Any] | None = None

    def finished(self, _: object) -> None:
        self._done.release()
        _Handoff.in_flight -= 1
        if not _Handoff.in_flight:
            # The caller's thread is woken and needs the GIL, which the loop, with no other
            # call to serve, would hold through the rest of its turn for nothing: a lone
            # caller gets it now (docs/performance.md, "Handing the GIL on"). With other
            # calls in flight the loop keeps it: their answers are its work.
            time.sleep(0)

    def wait(self, timeout: float, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the task finished within `timeout`; if not, or if the wait is interrupted
        (KeyboardInterrupt), the task is cancelled, which drops its lane."""
        try:
            if self._done.acquire(timeout=timeout):
                return True
        except BaseException:
            self._cancel(loop)
            raise
        self._cancel(loop)
        return False

    def _cancel(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.call_soon_threadsafe(lambda: self.task is not None and self.task.cancel())
        except RuntimeError:
            pass

    def outcome(self) -> Any:
        assert self.task is not None
        return self.task.result()


_IO_LOCK = threading.Lock()
_IO_LOOP: asyncio.AbstractEventLoop | None = None
# The CPUs of the I/O loop's thread (changed on that thread only).
_IO_KEEP_OFF = KeepOff()
# How long closing a client waits for its streams and channel to close on the loop.
CLOSE_SECONDS = 5.0


def io_loop() -> asyncio.AbstractEventLoop:
    """The process's I/O loop for the sessions of `Statehouse` clients, on a daemon thread
    ("statehouse-io") started on first use. (Not in a forked child: see statehouse._fork.)

    uvloop's loop where it is installed (a dependency except on Windows): it
    runs the loop's own work in C, which cut the client's CPU per call further.
    """
    global _IO_LOOP
    with _IO_LOCK:
        if _IO_LOOP is None:
            loop: asyncio.AbstractEventLoop
            try:
                import uvloop

                loop = uvloop.new_event_loop()
            except ImportError:
                loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="statehouse-io", daemon=True).start()
            _IO_LOOP = loop
        return _IO_LOOP


class LocalLanes:
    """The lanes of one `Statehouse` on the daemon's local socket (statehouse._local), at
    most `max_lanes`, each used by the calling thread itself: no hand-off to the I/O loop."""

    def __init__(self, place: _local.Place, max_lanes: int) -> None:
        self.place = place
        self._max = max_lanes
        self._lock = threading.Lock()
        self._idle: list[_local.LocalConnection] = []
        self._busy: set[object] = set()  # connections with a call, and places being opened
        self.unusable = False  # for this daemon's run: the client goes back to its streams
        self._paused_until = 0.0  # refused for a while (full, or slow to answer)
        self._retired = False  # no more calls; those in flight finish
        self._cancelled = False  # closed with the client: calls in flight are ended

    def call(self, method: str, request: Any, timeout: float) -> Any:
        """The call's response message, or None if it must be made another way (every lane
        busy, the socket unusable for now, or the connection had ended before the call was
        sent). Raises what `Lanes.call` raises."""
        lane = self._take(timeout)
        if lane is None:
            return None
        call_id = next(lane.ids)
        try:
            answer = lane.exchange(_request(call_id, method, request, timeout), timeout + WATCH_EVERY_SECONDS)
        except _local.NotSent:
            self._drop(lane)
            return None
        except BaseException as exc:
            self._drop(lane)
            if self._cancelled:
                raise CallError(grpc.StatusCode.CANCELLED, "the client was closed") from None
            if isinstance(exc, TimeoutError):
                raise CallError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
            if isinstance(exc, _local.Broken):
                raise CallError(grpc.StatusCode.UNAVAILABLE, "the daemon ended the session") from None
            raise
        if answer.id != call_id:  # the daemon refused the message and closed, or is broken
            self._drop(lane)
            if answer.id == 0 and answer.code:
                raise _failure(answer)
            _checked(answer, call_id)  # raises: an answer to another call
        self._give(lane)
        return _response(method, answer)

    def _take(self, timeout: float) -> _local.LocalConnection | None:
        with self._lock:
            if self._retired or self.unusable or time.monotonic() < self._paused_until:
                return None
            if self._idle:
                lane = self._idle.pop()
                self._busy.add(lane)
                return lane
            if len(self._busy) >= self._max:
                return None
            opening = object()
            self._busy.add(opening)
        try:
            lane = _local.LocalConnection(self.place, timeout)
        except _local.Unusable as exc:
            with self._lock:
                self._busy.discard(opening)
                if exc.lasting:
                    self.unusable = True
                else:
                    self._paused_until = time.monotonic() + REFUSED_SECONDS
            return None
        with self._lock:
            self._busy.discard(opening)
            if not self._retired:
                self._busy.add(lane)
                return lane
        lane.close()
        return None

    def _give(self, lane: _local.LocalConnection) -> None:
        with self._lock:
            self._busy.discard(lane)
            if not self._retired:
                lane.idle_since = time.monotonic()
                self._idle.append(lane)
                return
        lane.close()

    def _drop(self, lane: _local.LocalConnection) -> None:
        with self._lock:
            self._busy.discard(lane)
        lane.close()

    def close_idle(self, idle_seconds: float) -> None:
        """Close the lanes idle for `idle_seconds` or more."""
        now = time.monotonic()
        with self._lock:
            old = [lane for lane in self._idle if now - lane.idle_since >= idle_seconds]
            self._idle = [lane for lane in self._idle if now - lane.idle_since < idle_seconds]
        for lane in old:
            lane.close()

    def retire(self) -> None:
        """Take no more calls: close the idle lanes; those with a call close when it ends."""
        with self._lock:
            self._retired = True
            idle, self._idle = self._idle, []
        for lane in idle:
            lane.close()

    def close(self) -> None:
        """Close every lane; a call waiting on one raises CANCELLED (the client is closed)."""
        with self._lock:
            self._cancelled = True
            busy = [lane for lane in self._busy if isinstance(lane, _local.LocalConnection)]
        self.retire()
        for lane in busy:
            lane.wake()


class _AsyncLocalLane:
    """A lane of `AsyncLanes` on the daemon's local socket: the calls of `_AsyncLane`.
    It connects on its first call, raising statehouse._local.Unusable if it cannot."""

    __slots__ = ("_connection", "_place", "idle_since")

    def __init__(self, place: _local.Place) -> None:
        self._place = place
        self._connection: _local.AsyncLocalConnection | None = None
        self.idle_since = time.monotonic()

    async def call(self, method: str, request: Any, timeout: float) -> pb.SessionResponse:
        if self._connection is None:
            self._connection = await _local.AsyncLocalConnection.open(self._place)
        call_id = next(self._connection.ids)
        try:
            answer = await self._connection.exchange(_request(call_id, method, request, timeout))
        except _local.NotSent:
            raise _NotSent(grpc.StatusCode.UNAVAILABLE, False) from None
        except _local.Broken:
            raise CallError(grpc.StatusCode.UNAVAILABLE, "the daemon ended the session") from None
        if answer.id == 0 and answer.code:  # the daemon refused the message and closed
            raise _failure(answer)
        return _checked(answer, call_id)

    def ended(self) -> bool:
        return self._connection is not None and self._connection.ended()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()

    async def end(self) -> None:
        if self._connection is not None:
            await self._connection.end()


class _NotSent(Exception):
    """A lane's stream ended before a call could be written on it, with `code`;
    `first`: it was the lane's first call (a refusal can look like INTERNAL then)."""

    def __init__(self, code: grpc.StatusCode, first: bool) -> None:
        super().__init__(code)
        self.code, self.first = code, first


class _AsyncLane:
    """One Session stream of an asyncio client; one call at a time. `on_metadata` is given
    the stream's initial metadata once its first answer has come."""

    __slots__ = ("_call", "_ids", "_on_metadata", "idle_since")

    def __init__(self, channel: grpc.aio.Channel, on_metadata: Callable[[Any], None] | None) -> None:
        call = channel.stream_stream(METHOD, response_deserializer=pb.SessionResponse.FromString)
        self._call = call()
        self._ids = itertools.count(1)
        self._on_metadata = on_metadata
        self.idle_since = time.monotonic()

    async def call(self, method: str, request: Any, timeout: float) -> pb.SessionResponse:
        call_id = next(self._ids)
        try:
            await self._call.write(_request(call_id, method, request, timeout))
        except (asyncio.InvalidStateError, grpc.RpcError):
            # The stream ended before this call went out: the daemon refused it, or
            # went away. Nothing of this call was sent.
            raise _NotSent(await self._call.code(), call_id == 1) from None
        answer = await self._call.read()
        if answer is grpc.aio.EOF:
            raise CallError(grpc.StatusCode.UNAVAILABLE, "the daemon ended the session")
        if self._on_metadata is not None:  # the stream's first answer: its metadata came before
            note, self._on_metadata = self._on_metadata, None
            try:
                metadata = await self._call.initial_metadata()
            except grpc.RpcError:  # only hints: the call has its answer
                metadata = None
            note(metadata)
        return _checked(answer, call_id)

    def ended(self) -> bool:
        return bool(self._call.done())

    def close(self) -> None:
        self._call.cancel()

    async def end(self) -> None:
        """End the stream as a finished one: no more calls, then the daemon's status.
        Unlike `close`, none of the stream's operations is left in flight."""
        await self._call.done_writing()
        await self._call.code()


class AsyncLanes:
    """`Lanes` for `AsyncStatehouse`: the same calls on up to `max_lanes` streams of a
    grpc.aio channel, used from one event loop.

    A call past its deadline is ended by the client itself (the daemon says
    DEADLINE_EXCEEDED first if it can): its lane is dropped, as is the lane
    of a call whose task was cancelled, since an answer may still be on its
    way. Lanes idle for `IDLE_SECONDS` are closed.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        max_lanes: int = MAX_LANES,
        on_daemon_cpu: Callable[[int], None] | None = None,
        on_local: Callable[[_local.Place], None] | None = None,
        local: bool = True,
    ) -> None:
        self._channel = channel
        self._use_local = local
        self._max = max_lanes
        self._on_daemon_cpu = on_daemon_cpu
        # Where a stream's naming of the daemon's local socket goes: None, to these lanes
        # themselves (`AsyncStatehouse`); `Lanes` takes it for its threads' own lanes.
        self._on_local = on_local
        self._local: _local.Place | None = None
        self._unusable: set[_local.Place] = set()
        self._local_paused_until = 0.0
        self._idle: list[_AsyncLane | _AsyncLocalLane] = []
        self._open: set[_AsyncLane | _AsyncLocalLane] = set()
        self._refused_until = 0.0
        self._closed = False
        self._sweep: asyncio.TimerHandle | None = None

    def _noted(self, metadata: Any) -> None:
        """A stream's initial metadata: the daemon's CPU and local socket, if it named them."""
        if self._on_daemon_cpu is not None:
            cpu = daemon_cpu(metadata)
            if cpu is not None:
                self._on_daemon_cpu(cpu)
        place = _local.announced(metadata) if self._use_local else None
        if place is None:
            return
        if self._on_local is not None:
            self._on_local(place)
        elif place not in self._unusable:
            self._local = place

    async def call(self, method: str, request: Any, timeout: float) -> Any:
        """`Lanes.call`, awaited."""
        lane = self._take()
        if lane is None:
            return None
        # What asyncio.timeout does, in a third of the calls (this is every call's path): a
        # timer cancels the task, and the cancellation it caused becomes DEADLINE_EXCEEDED.
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = asyncio.get_running_loop().call_later(timeout + WATCH_EVERY_SECONDS, expire)
        try:
            answer = await lane.call(method, request, timeout)
        except asyncio.CancelledError:
            self._drop(lane)  # an answer may still be on its way
            if expired and task.uncancel() <= cancelling:
                raise CallError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
            raise
        except _local.Unusable as unusable:
            # The local socket cannot be used: this call, and the next, go over gRPC (for this
            # daemon's run, or for a while after a refusal).
            self._drop(lane)
            if not unusable.lasting:
                self._local_paused_until = time.monotonic() + REFUSED_SECONDS
            elif self._local is not None:
                self._unusable.add(self._local)
                self._local = None
            return None
        except _NotSent as unsent:
            # Make this call as an RPC of its own. A new stream ended at once was refused: when
            # the daemon's answer races the first write, grpc reports INTERNAL instead of it.
            self._drop(lane)
            if unsent.code in _REFUSALS or (unsent.first and unsent.code == grpc.StatusCode.INTERNAL):
                self._refused_until = time.monotonic() + REFUSED_SECONDS
            return None
        except grpc.RpcError as exc:
            self._drop(lane)
            code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
            if code in _REFUSALS:
                # Refused before any call was read: make this one as a call of its own.
                self._refused_until = time.monotonic() + REFUSED_SECONDS
                return None
            raise
        except BaseException:  # interrupted: the lane may still get this call's answer
            self._drop(lane)
            raise
        finally:
            timer.cancel()
        self._give(lane)
        return _response(method, answer)

    def close(self) -> None:
        """Cancel every lane's stream at once (see `aclose`)."""
        self._closed = True
        lanes, self._open, self._idle = list(self._open), set(), []
        for lane in lanes:
            lane.close()
        if self._sweep is not None:
            self._sweep.cancel()

    async def aclose(self, grace: float = END_SECONDS) -> None:
        """Close: idle lanes end their streams as finished ones, waiting at most `grace`
        seconds for the daemon's status; lanes with a call in flight are cancelled.

        A cancelled stream's operations complete later, on the loop that made them:
        after `asyncio.run` has closed that loop, grpc reports each as an "Event loop is
        closed" traceback. An idle lane ended this way has none left when this returns.
        """
        idle = [lane for lane in self._idle if lane in self._open and not lane.ended()]
        self._open.difference_update(idle)
        self._idle = []
        self.close()  # the lanes with a call in flight
        if not idle:
            return
        try:
            async with asyncio.timeout(grace):
                await asyncio.gather(*(lane.end() for lane in idle), return_exceptions=True)
        except TimeoutError:
            for lane in idle:
                lane.close()

    def _take(self) -> _AsyncLane | _AsyncLocalLane | None:
        local = self._local if time.monotonic() >= self._local_paused_until else None
        while self._idle:
            idle = self._idle.pop()
            if not idle.ended() and (local is None or isinstance(idle, _AsyncLocalLane)):
                return idle
            self._drop(idle)  # ended while idle (the daemon restarted), or a stream the socket replaces
        if self._closed or len(self._open) >= self._max or time.monotonic() < self._refused_until:
            return None
        lane: _AsyncLane | _AsyncLocalLane
        lane = _AsyncLane(self._channel, self._noted) if local is None else _AsyncLocalLane(local)
        self._open.add(lane)
        return lane

    def _give(self, lane: _AsyncLane | _AsyncLocalLane) -> None:
        if lane not in self._open:
            lane.close()
            return
        lane.idle_since = time.monotonic()
        self._idle.append(lane)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(IDLE_SECONDS, self._close_idle)

    def drop_idle_streams(self) -> None:
        """Close the idle lanes that are gRPC streams (a client whose calls go on the local
        socket now)."""
        streams = [lane for lane in self._idle if isinstance(lane, _AsyncLane)]
        self._idle = [lane for lane in self._idle if not isinstance(lane, _AsyncLane)]
        for lane in streams:
            self._drop(lane)

    def _drop(self, lane: _AsyncLane | _AsyncLocalLane) -> None:
        self._open.discard(lane)
        lane.close()

    def _close_idle(self) -> None:
        self._sweep = None
        now = time.monotonic()
        for lane in [lane for lane in self._idle if now - lane.idle_since >= IDLE_SECONDS]:
            self._idle.remove(lane)
            self._drop(lane)
        if self._idle:
            oldest = min(lane.idle_since for lane in self._idle)
            self._sweep = asyncio.get_running_loop().call_later(
                max(0.0, oldest + IDLE_SECONDS - now), self._close_idle
            )
