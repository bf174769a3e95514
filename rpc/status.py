"""The one table from domain errors to gRPC status codes, applied by a decorator.

Servicer methods raise domain errors and never `try`; `@grpc_errors` turns
each into its status code with the error's message. Anything not in the
table is a bug: it is logged with its traceback and reported as INTERNAL.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
import structlog

from actors import (
    AlreadyCommitted,
    Conflict,
    DeadlineExceeded,
    InvalidArgument,
    Metrics,
    NotRepresentable,
    ResourceExhausted,
    TransactionClosed,
    TransactionExpired,
    TransactionNotFound,
    Unavailable,
    VersionNotFound,
)
from statehouse._proto import statehouse_pb2 as pb
from storage import DataLossError, HistoryCompactedError, StorageError, ViewMoved

log = structlog.get_logger("statehouse.rpc")

STATUS_OF: dict[type[Exception], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    TransactionNotFound: grpc.StatusCode.NOT_FOUND,
    VersionNotFound: grpc.StatusCode.NOT_FOUND,
    TransactionExpired: grpc.StatusCode.ABORTED,
    Conflict: grpc.StatusCode.ABORTED,
    TransactionClosed: grpc.StatusCode.FAILED_PRECONDITION,
    NotRepresentable: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DataLossError: grpc.StatusCode.DATA_LOSS,
    HistoryCompactedError: grpc.StatusCode.OUT_OF_RANGE,
    StorageError: grpc.StatusCode.UNAVAILABLE,
    ViewMoved: grpc.StatusCode.UNAVAILABLE,  # only once `Servicer._on_a_view` gave up
}

F = TypeVar("F", bound=Callable[..., Any])

# Trailing metadata carrying a serialized Conflict on a Commit that failed one.
CONFLICT_TRAILER = "statehouse-conflict-bin"
# Trailing metadata of a FAILED_PRECONDITION Stage that tried to open a committed
# transaction id: that commit's commit_ts, in decimal.
COMMITTED_TRAILER = "statehouse-commit-ts"
# Trailing metadata of an OUT_OF_RANGE read of history retention let go: the horizon
# (the commit_ts from which that history is whole), in decimal.
HORIZON_TRAILER = "statehouse-horizon"


def conflict_message(conflict: Conflict) -> pb.Conflict:
    return pb.Conflict(**conflict.fields())


def _status(exc: Exception) -> grpc.StatusCode | None:
    for cls in type(exc).__mro__:
        code = STATUS_OF.get(cls)  # type: ignore[call-overload]
        if code is not None:
            return code
    return None


def status_of(exc: Exception) -> grpc.StatusCode:
    """The status code for `exc`: from the table, else INTERNAL (logged: a bug)."""
    code = _status(exc)
    if code is None:
        log.error("rpc.internal_error", error=repr(exc))
        return grpc.StatusCode.INTERNAL
    return code


class ErrorCounter:
    """Counts requests answered with an error, by status code (`statehouse_rpc_errors_total`)."""

    def __init__(self, metrics: Metrics) -> None:
        self._counter = metrics.errors
        self._children: dict[grpc.StatusCode, Any] = {}

    def __call__(self, code: grpc.StatusCode) -> None:
        child = self._children.get(code)
        if child is None:
            child = self._children[code] = self._counter.labels(code=code.name)
        child.inc()


def note_data_loss(method: str, exc: Exception) -> None:
    """Log a read or commit refused because stored data is damaged: an operator must act."""
    log.error("rpc.data_loss", method=method, message=str(exc))


def _abort(context: grpc.ServicerContext, method: str, exc: Exception, count: ErrorCounter) -> None:
    code = _status(exc)
    if code is not None:
        count(code)
        if code == grpc.StatusCode.DATA_LOSS:
            note_data_loss(method, exc)
        log.debug("rpc.error", method=method, code=code.name, message=str(exc))
        if isinstance(exc, Conflict):
            trailer = conflict_message(exc).SerializeToString()
            context.set_trailing_metadata(((CONFLICT_TRAILER, trailer),))
        elif isinstance(exc, AlreadyCommitted):
            context.set_trailing_metadata(((COMMITTED_TRAILER, str(exc.commit_ts)),))
        elif isinstance(exc, HistoryCompactedError):
            context.set_trailing_metadata(((HORIZON_TRAILER, str(exc.horizon)),))
        context.abort(code, str(exc))
    count(grpc.StatusCode.INTERNAL)
    log.exception("rpc.internal_error", method=method)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}: {exc!r}")


def grpc_errors(method: F) -> F:
    """Map domain errors raised by a unary (plain or async) or server-streaming handler,
    and count them with the servicer's `count_error`."""
    name = method.__name__

    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def call(self: Any, request: Any, context: Any) -> Any:
            try:
                return await method(self, request, context)
            except Exception as exc:
                _abort(context, name, exc, self.count_error)

        return call  # type: ignore[return-value]

    if method.__code__.co_flags & 0x20:  # a generator: errors surface while iterating

        @functools.wraps(method)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except Exception as exc:
                _abort(context, name, exc, self.count_error)

        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:
            _abort(context, name, exc, self.count_error)

    return unary  # type: ignore[return-value]
