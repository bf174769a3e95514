"""The Session RPC: unary calls sent as messages of one long-lived stream.

A client that holds a stream open sends each call as a `SessionRequest`
(method name, serialized request, deadline) and reads a `SessionResponse`
with the same id. Every call runs through the very handler that serves it
as an RPC of its own (the `unary` behaviours `rpc.server` builds), with a
`CallContext` standing in for grpc's: so a call means the same on a session
as off it, errors and trailers included. What a session saves is grpc's
per-call work (a new HTTP/2 stream, call setup, the status frame), which is
about half of what a small call costs the daemon.

Calls on one stream are answered one at a time, in order; a client that
wants several in flight opens several streams. A stream holds a thread of
the sessions pool while open, so the number open at once is bounded
(`max_sessions`); past it the stream is refused with RESOURCE_EXHAUSTED
and the client makes plain calls instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Gauge

from rpc.status import ErrorCounter
from statehouse._proto import statehouse_pb2 as pb

# A unary behaviour: serialized request and context in, response message out.
Unary = Callable[[bytes, Any], Any]


class CallAborted(Exception):
    """Raised by `CallContext.abort`, as grpc's context raises to end a handler."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class CallContext:
    """What a unary handler uses of grpc's ServicerContext, for one call on a session."""

    __slots__ = ("_deadline", "_stream", "trailers")

    def __init__(self, stream: grpc.ServicerContext, timeout_ms: int) -> None:
        self._stream = stream
        self._deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms else None
        self.trailers: tuple[tuple[str, str | bytes], ...] = ()

    def time_remaining(self) -> float | None:
        stream = self._stream.time_remaining()
        if self._deadline is None:
            return stream
        remaining = max(0.0, self._deadline - time.monotonic())
        return remaining if stream is None else min(remaining, stream)

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self.trailers = tuple(metadata)

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise CallAborted(code, details)

    def is_active(self) -> bool:
        return bool(self._stream.is_active())


class Sessions:
    """Serves Session streams over the unary behaviours (`add`), at most `limit` at once.

    The number open is the gauge `statehouse_sessions_open` of `registry`.
    """

    def __init__(self, limit: int, count_error: ErrorCounter, registry: CollectorRegistry) -> None:
        self._unary: dict[str, Unary] = {}
        self._limit = limit
        self._count_error = count_error
        self._lock = threading.Lock()
        self._open = 0
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

    def serve(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        """The stream's answers (serialized SessionResponses), one per request, in order."""
        with self._lock:
            refused = self._open >= self._limit
            if not refused:
                self._open += 1
        if refused:
            self._count_error(grpc.StatusCode.RESOURCE_EXHAUSTED)
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._limit} sessions are open, the most this daemon allows (--max-sessions); "
                "send calls as RPCs of their own",
            )
        try:
            for raw in requests:
                try:
                    request = pb.SessionRequest.FromString(raw)
                except DecodeError:
                    self._count_error(grpc.StatusCode.INVALID_ARGUMENT)
                    context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "a session message is not a valid statehouse.v1.SessionRequest",
                    )
                yield self.answer(request, context).SerializeToString()
        finally:
            with self._lock:
                self._open -= 1

    def answer(self, request: pb.SessionRequest, stream: grpc.ServicerContext) -> pb.SessionResponse:
        """Run one call through its unary behaviour; its response, or its status and trailers."""
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
        context = CallContext(stream, request.timeout_ms)
        try:
            response = behaviour(request.request, context)
        except CallAborted as aborted:
            answer = pb.SessionResponse(id=request.id, code=aborted.code.value[0], message=aborted.details)
            for key, value in context.trailers:
                answer.trailers.add(key=key, value=value if isinstance(value, bytes) else value.encode())
            return answer
        return pb.SessionResponse(id=request.id, response=response.SerializeToString())
