"""Exceptions raised by the Statehouse SDK.

    StatehouseError                      base; .code is the gRPC status name
    ├── InvalidArgumentError (ValueError) a bad name, value, timeout or version
    ├── NotFoundError                    a version that never existed
    ├── UnavailableError                 daemon unreachable, shutting down, or storage failed
    ├── DeadlineExceededError            no answer before the call's deadline
    ├── ResourceExhaustedError           a configured bound (open txns, ops, bytes, message size)
    └── TransactionError                 any failure of begin/write/delete/commit/abort
        ├── TransactionNotFoundError     unknown transaction id (also a NotFoundError)
        ├── TransactionExpiredError      its timeout passed before commit
        └── TransactionClosedError       already committed or aborted

A failure inside a transaction call is always a TransactionError (as with
the original client) and also an instance of the class for its status
code: a bad key in `tx.write` is both TransactionError and InvalidArgumentError.
"""

from __future__ import annotations

import grpc


class StatehouseError(Exception):
    """Base class of every SDK error. `code` names the gRPC status, if any."""

    code: str = "UNKNOWN"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidArgumentError(StatehouseError, ValueError):
    code = "INVALID_ARGUMENT"


class NotFoundError(StatehouseError):
    code = "NOT_FOUND"


class UnavailableError(StatehouseError):
    code = "UNAVAILABLE"


class DeadlineExceededError(StatehouseError):
    code = "DEADLINE_EXCEEDED"


class ResourceExhaustedError(StatehouseError):
    code = "RESOURCE_EXHAUSTED"


class TransactionError(StatehouseError):
    """Any failure of a transaction operation."""


class TransactionNotFoundError(TransactionError, NotFoundError):
    code = "NOT_FOUND"


class TransactionExpiredError(TransactionError):
    code = "ABORTED"


class TransactionClosedError(TransactionError):
    code = "FAILED_PRECONDITION"


# The original client's name for "cannot reach the daemon".
ConnectionError = UnavailableError


class _TxnInvalidArgument(TransactionError, InvalidArgumentError):
    code = "INVALID_ARGUMENT"


class _TxnUnavailable(TransactionError, UnavailableError):
    code = "UNAVAILABLE"


class _TxnDeadline(TransactionError, DeadlineExceededError):
    code = "DEADLINE_EXCEEDED"


class _TxnResourceExhausted(TransactionError, ResourceExhaustedError):
    code = "RESOURCE_EXHAUSTED"


_BY_CODE: dict[grpc.StatusCode, type[StatehouseError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
}

_IN_TRANSACTION: dict[grpc.StatusCode, type[StatehouseError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: _TxnInvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: _TxnInvalidArgument,
    grpc.StatusCode.NOT_FOUND: TransactionNotFoundError,
    grpc.StatusCode.UNAVAILABLE: _TxnUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: _TxnDeadline,
    grpc.StatusCode.RESOURCE_EXHAUSTED: _TxnResourceExhausted,
    grpc.StatusCode.ABORTED: TransactionExpiredError,
    grpc.StatusCode.FAILED_PRECONDITION: TransactionClosedError,
}


def from_rpc_error(error: grpc.RpcError, in_transaction: bool) -> StatehouseError:
    """The SDK exception for a failed call (a grpc.RpcError that is also a grpc.Call)."""
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    return from_status(code, error.details() or code.name, in_transaction)  # type: ignore[attr-defined]


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def from_status(code: grpc.StatusCode | int, details: str, in_transaction: bool) -> StatehouseError:
    """The SDK exception for a status (a StatusCode, or its number as a CommitBatch outcome carries it)."""
    if isinstance(code, int):
        code = _CODES.get(code, grpc.StatusCode.UNKNOWN)
    table = _IN_TRANSACTION if in_transaction else _BY_CODE
    cls = table.get(code, TransactionError if in_transaction else StatehouseError)
    return cls(details or code.name, code.name)


def invalid(message: str, in_transaction: bool) -> StatehouseError:
    """The SDK exception for input rejected before it is sent."""
    return (_TxnInvalidArgument if in_transaction else InvalidArgumentError)(message)
