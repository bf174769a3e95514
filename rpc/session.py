"""The Session RPC: unary calls sent as messages of one long-lived stream.

A client that holds a stream open sends each call as a `SessionRequest`
(method name, serialized request, deadline) and reads a `SessionResponse`
with the same id. Every call runs through the very handler that serves it
as an RPC of its own (the `unary` behaviours `rpc.server` builds), with the
same `CallContext` (rpc/aio.py): so a call means the same on a session
as off it, errors and trailers included. What a session saves is grpc's
per-call work (a new HTTP/2 stream, call setup, the status frame), which is
about half of what a small call costs the daemon.

Calls on one stream are answered one at a time, in order; a client that
wants several in flight opens several streams. A stream is served on the
server's event loop and holds no thread, but the number open at once is
still bounded (`max_sessions`); past it the stream is refused with
RESOURCE_EXHAUSTED and the client makes plain calls instead.

When the daemon stops, a stream waiting for its next call is ended at once
with UNAVAILABLE ("the daemon is stopping"), and one answering a call is
ended so once the answer is sent: otherwise every idle client would hold
the daemon's stop for its whole grace period. UNAVAILABLE, not CANCELLED,
because a call the client sent just then was not run, and may be sent again
(the SDK does).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Gauge

from rpc.aio import CallAborted, CallContext, Unary
from rpc.status import ErrorCounter
from statehouse._proto import statehouse_pb2 as pb

# The reason a stream waiting for its next call is cancelled with by `Sessions.stop`.
STOPPING = "the daemon is stopping"


class Sessions:
    """Serves Session streams over the unary behaviours (`add`), at most `limit` at once.

    The number open is the gauge `statehouse_sessions_open` of `registry`.
    Runs on the server's event loop.
    """

    def __init__(
        self,
        limit: int,
        count_error: ErrorCounter,
        registry: CollectorRegistry,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._unary: dict[str, Unary] = {}
        self._limit = limit
        # Sent at the start of every stream: the CPU the daemon keeps to (statehouse._affinity).
        self._metadata = metadata
        self._count_error = count_error
        self._open = 0
        # The streams waiting for their next call (their tasks); ended at `stop`.
        self._waiting: set[asyncio.Task[object]] = set()
        self._stopping = False
        gauge = Gauge(
            "statehouse_sessions_open", "Session streams open (see --max-sessions)", registry=registry
        )
        gauge.set_function(lambda: self._open)

    def add(self, method: str, behaviour: Unary) -> None:
        """Serve unary `method` on sessions with `behaviour` (the one that serves it as an RPC)."""
        self._unary[method] = behaviour

    @property
    def open(self) -> int:
        return self._open

    def enter(self) -> bool:
        """Count one more session open (a stream, or a local connection: rpc/local.py);
        False, and nothing counted, if `limit` are open already."""
        if self._open >= self._limit:
            return False
        self._open += 1
        return True

    def leave(self) -> None:
        self._open -= 1

    def announce(self, entry: tuple[str, str]) -> None:
        """Send `entry` too in the initial metadata of every stream from now on."""
        self._metadata = (*self._metadata, entry)

    def stop(self) -> None:
        """The daemon is stopping: end the streams waiting for a call now, and the others
        once their call is answered (each with UNAVAILABLE). On the server's loop."""
        self._stopping = True
        for task in self._waiting:
            task.cancel(STOPPING)
        self._waiting.clear()

    def count_error(self, code: grpc.StatusCode) -> None:
        self._count_error(code)

    def refusal(self, code: grpc.StatusCode) -> pb.SessionResponse:
        """What a session refused with `code` is told (RESOURCE_EXHAUSTED: full)."""
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            message = (
                f"{self._limit} sessions are open, the most this daemon allows (--max-sessions); "
                "send calls as RPCs of their own"
            )
        else:
            message = STOPPING
        return pb.SessionResponse(id=0, code=code.value[0], message=message)

    async def serve(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """The stream's answers (serialized SessionResponses), one per request, in order."""
        if not self.enter():
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
            self._count_error(code)
            await context.abort(code, self.refusal(code).message)
        task = asyncio.current_task()
        assert task is not None
        try:
            if self._metadata:
                await context.send_initial_metadata(self._metadata)
            if self._stopping:  # came in as the daemon began to stop
                await self._stopped(context)
            incoming = aiter(requests)
            while True:
                self._waiting.add(task)
                try:
                    raw = await anext(incoming)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError as cancelled:
                    if cancelled.args != (STOPPING,):
                        raise  # grpc's own: the client went away
                    task.uncancel()
                    await self._stopped(context)
                finally:
                    self._waiting.discard(task)
                try:
                    request = pb.SessionRequest.FromString(raw)
                except DecodeError:
                    self._count_error(grpc.StatusCode.INVALID_ARGUMENT)
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "a session message is not a valid statehouse.v1.SessionRequest",
                    )
                answer = await self.answer(request, context.time_remaining())
                yield answer.SerializeToString()
                if self._stopping:  # once this call is answered
                    await self._stopped(context)
        finally:
            self.leave()

    async def _stopped(self, context: grpc.aio.ServicerContext) -> NoReturn:
        """End the stream: the daemon is stopping (no call of the stream's is running)."""
        code = grpc.StatusCode.UNAVAILABLE
        self._count_error(code)
        await context.abort(code, self.refusal(code).message)
        raise AssertionError("abort returned")  # grpc.aio's abort raises

    async def answer(self, request: pb.SessionRequest, remaining: float | None) -> pb.SessionResponse:
        """Run one call through its unary behaviour; its response, or its status and trailers.
        `remaining`: seconds left of the session's own deadline (None: it has none)."""
        behaviour = self._unary.get(request.method)
        if behaviour is None:
            code = grpc.StatusCode.UNIMPLEMENTED
            self._count_error(code)
            return pb.SessionResponse(
                id=request.id,
                code=code.value[0],
                message=f"{request.method!r} is not a unary method of statehouse.v1.StatehouseService "
                "(streaming calls cannot be sent on a session)",
            )
        context = CallContext.within(remaining, request.timeout_ms)
        try:
            response = await behaviour(request.request, context)
        except CallAborted as aborted:
            answer = pb.SessionResponse(id=request.id, code=aborted.code.value[0], message=aborted.details)
            for key, value in context.trailers:
                answer.trailers.add(key=key, value=value if isinstance(value, bytes) else value.encode())
            return answer
        return pb.SessionResponse(id=request.id, response=response.SerializeToString())
