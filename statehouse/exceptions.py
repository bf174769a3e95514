"""Exceptions raised by the Statehouse SDK.

    StatehouseError                      base; .code is the gRPC status name
    ├── InvalidArgumentError (ValueError) a bad name, value, timeout or version
    ├── NotFoundError                    a version that never existed
    ├── UnavailableError                 daemon unreachable, shutting down, or storage failed
    ├── DataLossError                    stored data the call needed is damaged; never retried
    ├── HistoryCompactedError            history the read needs was let go by retention (.horizon)
    ├── DeadlineExceededError            no answer before the call's deadline
    ├── ResourceExhaustedError           a configured bound (open txns, ops, bytes, message size)
    └── TransactionError                 any failure of begin/write/delete/commit/abort
        ├── TransactionNotFoundError     unknown transaction id (also a NotFoundError)
        ├── TransactionExpiredError      its timeout passed before commit
        ├── TransactionClosedError       already committed or aborted
        └── ConflictError                a condition of a conditional commit failed

A failure inside a transaction call is always a TransactionError (as with
the original client) and also an instance of the class for its status
code: a bad key in `tx.write` is both TransactionError and InvalidArgumentError.
"""

from __future__ import annotations

from typing import Any

import grpc

from statehouse._proto import statehouse_pb2 as pb

# The trailer of an ABORTED Commit that failed a condition: a serialized pb.Conflict.
CONFLICT_TRAILER = "statehouse-conflict-bin"
# The trailer of a FAILED_PRECONDITION Stage that opened a committed id: its commit_ts.
COMMITTED_TRAILER = "statehouse-commit-ts"
# The trailer of an OUT_OF_RANGE read of history that retention let go: the horizon.
HORIZON_TRAILER = "statehouse-horizon"


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


class DataLossError(StatehouseError):
    """The daemon found the stored data this call needed damaged (DATA_LOSS) and answered
    nothing from it rather than a partial answer. Retrying does not help: the operator
    must look at the store (`statehoused verify`).

    A watch or replay that meets damage first delivers everything before it;
    on a watch, `progress_ts` is then the last commit_ts it delivered or
    passed over (None elsewhere).
    """

    code = "DATA_LOSS"

    def __init__(self, message: str, code: str | None = None, *, progress_ts: int | None = None) -> None:
        super().__init__(message, code)
        self.progress_ts = progress_ts


class HistoryCompactedError(StatehouseError):
    """The read needs history that the daemon's retention policy let go (OUT_OF_RANGE, like
    etcd's compacted revision): an old version, or a replay, watch, history or as-of read
    from before `horizon`, the commit_ts from which that history is whole. Nothing is
    wrong; ask again from `horizon` on. Never retried."""

    code = "OUT_OF_RANGE"

    def __init__(self, message: str, code: str | None = None, *, horizon: int = 0) -> None:
        super().__init__(message, code)
        self.horizon = horizon


class DeadlineExceededError(StatehouseError):
    code = "DEADLINE_EXCEEDED"


class ResourceExhaustedError(StatehouseError):
    code = "RESOURCE_EXHAUSTED"


class ForkedProcessError(StatehouseError):
    """This process was forked after a client was made in its parent, where gRPC cannot
    work (see statehouse._fork): make clients in processes started with multiprocessing's
    "spawn" or "forkserver", or fork before the first client. Never retried."""

    code = "FAILED_PRECONDITION"


class TransactionError(StatehouseError):
    """Any failure of a transaction operation."""


class TransactionNotFoundError(TransactionError, NotFoundError):
    code = "NOT_FOUND"


class TransactionExpiredError(TransactionError):
    code = "ABORTED"


class TransactionClosedError(TransactionError):
    code = "FAILED_PRECONDITION"


class ConflictError(TransactionError):
    """A conditional commit found a key at another version than expected; nothing was written.

    `actual_version` is 0 if the key was never written; `exists` says
    whether that version is a live value (False for a tombstone).
    """

    code = "ABORTED"

    def __init__(
        self,
        message: str,
        code: str | None = None,
        *,
        namespace: str = "",
        agent_id: str = "",
        key: str = "",
        expected_version: int = 0,
        actual_version: int = 0,
        exists: bool = False,
    ) -> None:
        super().__init__(message, code)
        self.namespace = namespace
        self.agent_id = agent_id
        self.key = key
        self.expected_version = expected_version
        self.actual_version = actual_version
        self.exists = exists


def conflict_error(conflict: pb.Conflict) -> ConflictError:
    """The ConflictError for a Conflict the daemon sent."""
    expected = f"version {conflict.expected_version}"
    if conflict.expected_version == 0:
        expected = "no live value"
    actual = f"version {conflict.actual_version}"
    if conflict.actual_version == 0:
        actual = "no version (never written)"
    elif not conflict.exists:
        actual += " (deleted)"
    return ConflictError(
        f"conflict on key {conflict.key!r} of agent {conflict.agent_id!r} in namespace "
        f"{conflict.namespace!r}: expected {expected}, found {actual}; nothing was committed",
        namespace=conflict.namespace,
        agent_id=conflict.agent_id,
        key=conflict.key,
        expected_version=conflict.expected_version,
        actual_version=conflict.actual_version,
        exists=conflict.exists,
    )


# The original client's name for "cannot reach the daemon".
ConnectionError = UnavailableError


# A failure of a transaction call is a TransactionError and the class of its status: one
# class for each pair, public, so that a traceback names what to catch.


class TransactionInvalidArgumentError(TransactionError, InvalidArgumentError):
    """A bad name, value or timeout in a transaction call (both a TransactionError and an
    InvalidArgumentError)."""

    code = "INVALID_ARGUMENT"


class TransactionUnavailableError(TransactionError, UnavailableError):
    """The daemon could not be reached for a transaction call, after the retries of a retried
    one (both a TransactionError and an UnavailableError). A commit's outcome is then
    unknown: `abort()` tells."""

    code = "UNAVAILABLE"


class TransactionDataLossError(TransactionError, DataLossError):
    """Damaged stored data that a transaction call needed (both a TransactionError and a
    DataLossError)."""

    code = "DATA_LOSS"


class TransactionDeadlineExceededError(TransactionError, DeadlineExceededError):
    """No answer to a transaction call in time (both a TransactionError and a
    DeadlineExceededError)."""

    code = "DEADLINE_EXCEEDED"


class TransactionResourceExhaustedError(TransactionError, ResourceExhaustedError):
    """A limit of the daemon, hit by a transaction call (both a TransactionError and a
    ResourceExhaustedError)."""

    code = "RESOURCE_EXHAUSTED"


class _AlreadyCommitted(TransactionClosedError):
    """A chunk sent ahead found its transaction id committed already, at `commit_ts`
    (an idempotency key's redo turns this into the commit's answer)."""

    def __init__(self, message: str, commit_ts: int) -> None:
        super().__init__(message, "FAILED_PRECONDITION")
        self.commit_ts = commit_ts


_BY_CODE: dict[grpc.StatusCode, type[StatehouseError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DATA_LOSS: DataLossError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
}

_IN_TRANSACTION: dict[grpc.StatusCode, type[StatehouseError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: TransactionInvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: TransactionInvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: TransactionNotFoundError,
    grpc.StatusCode.UNAVAILABLE: TransactionUnavailableError,
    grpc.StatusCode.DATA_LOSS: TransactionDataLossError,
    grpc.StatusCode.DEADLINE_EXCEEDED: TransactionDeadlineExceededError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: TransactionResourceExhaustedError,
    grpc.StatusCode.ABORTED: TransactionExpiredError,
    grpc.StatusCode.FAILED_PRECONDITION: TransactionClosedError,
}


def from_rpc_error(error: grpc.RpcError, in_transaction: bool, client_closed: bool = True) -> StatehouseError:
    """The SDK exception for a failed call: a grpc.RpcError that is also a grpc.Call
    (sync), or a grpc.aio.AioRpcError (async).

    `client_closed`: whether the client was closed, which ends its calls with CANCELLED.
    A call that ends so while the client is open was cancelled by a daemon that is
    stopping (one it had taken in but not started, or one still running at the end of its
    grace period): that is UNAVAILABLE, retried like a call cut off by a daemon that went
    away. (A call the application cancels raises asyncio.CancelledError or
    KeyboardInterrupt, not this.)
    """
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    if code == grpc.StatusCode.CANCELLED and not client_closed:
        details = f"the daemon cancelled the call as it stopped ({error.details()})"  # type: ignore[attr-defined]
        return from_status(grpc.StatusCode.UNAVAILABLE, details, in_transaction)
    if code == grpc.StatusCode.ABORTED and in_transaction:
        conflict = _conflict_trailer(error.trailing_metadata())  # type: ignore[attr-defined]
        if conflict is not None:
            return conflict_error(conflict)
    if code == grpc.StatusCode.OUT_OF_RANGE:
        for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
            if key == HORIZON_TRAILER:
                details = error.details() or code.name  # type: ignore[attr-defined]
                return HistoryCompactedError(details, horizon=int(value))
    if code == grpc.StatusCode.FAILED_PRECONDITION and in_transaction:
        for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
            if key == COMMITTED_TRAILER:
                return _AlreadyCommitted(error.details() or code.name, int(value))  # type: ignore[attr-defined]
    return from_status(code, error.details() or code.name, in_transaction)  # type: ignore[attr-defined]


def _conflict_trailer(metadata: Any) -> pb.Conflict | None:
    # Sync calls give a tuple of (key, value) pairs, grpc.aio a Metadata that iterates as pairs.
    for key, value in metadata or ():
        if key == CONFLICT_TRAILER:
            return pb.Conflict.FromString(value)
    return None


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def from_status(
    code: grpc.StatusCode | int, details: str, in_transaction: bool, *, horizon: int = 0
) -> StatehouseError:
    """The SDK exception for a status (a StatusCode, or its number as a CommitBatch or ReadBatch
    outcome carries it); `horizon`: a ReadBatch outcome's, for history retention let go."""
    if isinstance(code, int):
        code = _CODES.get(code, grpc.StatusCode.UNKNOWN)
    if code == grpc.StatusCode.OUT_OF_RANGE and horizon:
        return HistoryCompactedError(details or code.name, horizon=horizon)
    table = _IN_TRANSACTION if in_transaction else _BY_CODE
    cls = table.get(code, TransactionError if in_transaction else StatehouseError)
    return cls(details or code.name, code.name)


def invalid(message: str, in_transaction: bool) -> StatehouseError:
    """The SDK exception for input rejected before it is sent."""
    return (TransactionInvalidArgumentError if in_transaction else InvalidArgumentError)(message)
