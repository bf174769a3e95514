"""What a transaction is without I/O: its buffer, conditions, timeout and states.

`Transaction` (sync) and `AsyncTransaction` add only the calls; both build
every request they send through `TransactionCore`.
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Any

from statehouse import _wire
from statehouse._proto import statehouse_pb2 as pb
from statehouse.exceptions import (
    ConflictError,
    StatehouseError,
    TransactionClosedError,
    TransactionExpiredError,
    _AlreadyCommitted,
)

# The docstring of both clients' begin_transaction, after its first line.
BEGIN_TRANSACTION_DOC = """

With `idempotency_key` the transaction id is derived from it (and the
namespace), so a process that redoes a step after a crash commits it at
most once: committing a transaction with a key that already committed
returns the first commit's commit_ts, and the second transaction's
contents are NOT applied (this holds across daemon restarts). A
transaction over 1 MiB sends its first chunk ahead, which opens the id on
the daemon: a redo after the first attempt failed (a conflict) or expired
runs again, and a redo after it committed is answered with its commit_ts
as soon as the first chunk goes; a redo while the first attempt is still
open on the daemon (its process just died) is refused with
TransactionClosedError until that one times out. Raises
InvalidArgumentError for a bad timeout, namespace or key.
"""

# Buffered operations beyond this many bytes are sent ahead of the commit.
STAGE_AHEAD_BYTES = 1024 * 1024


class PendingCommit:
    """A CommitRequest with its transaction's deadline, so that a retry can renew `open.timeout_ms`.

    Only a commit that opens its transaction (it carries `open`) is retried:
    the daemon answers a repeat of it with the first commit's commit_ts.
    """

    __slots__ = ("deadline", "request")

    def __init__(self, request: pb.CommitRequest, deadline: float | None) -> None:
        self.request = request
        self.deadline = deadline  # time.monotonic() value, or None: the server's default timeout

    def ByteSize(self) -> int:  # the protobuf name: the Combiner sizes batches by it
        return int(self.request.ByteSize())

    @property
    def retryable(self) -> bool:
        return bool(self.request.HasField("open"))

    def renew(self) -> bool:
        """Ready the request for a retry; False when it must not be retried.

        A transaction whose own timeout has passed is not sent again: the
        first attempt's outcome stays unknown, and the caller gets its error.
        """
        if not self.retryable:
            return False
        if self.deadline is not None:
            remaining_ms = (self.deadline - time.monotonic()) * 1000
            if remaining_ms <= 0:
                return False
            self.request.open.timeout_ms = max(1, math.ceil(remaining_ms))
        return True


class TransactionCore:
    """The transaction's state machine; subclasses send what it builds.

    States: open -> committed; open -> aborted; open -> failed (a commit,
    or a chunk sent ahead, failed or its outcome is unknown) -> aborted;
    open -> answered (with an idempotency key, a chunk sent ahead found the
    key's transaction committed already: what is written after is dropped,
    and commit() returns that commit's commit_ts) -> committed.
    """

    def __init__(
        self,
        txn_id: str,
        namespace: str,
        timeout_ms: int | None = None,
        *,
        opened: bool = True,
        idempotency_key: str | None = None,
    ) -> None:
        self.txn_id = txn_id
        self.namespace = namespace
        self.timeout_ms = timeout_ms
        self.idempotency_key = idempotency_key
        self.commit_ts: int | None = None
        # False until a request has opened it on the server; from then on
        # the server may hold it, and abort() asks the server to discard it.
        self._opened = opened
        self._deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        self._buffer: dict[tuple[str, str, str], pb.Mutation] = {}
        self._buffered_bytes = 0
        self._conditions: dict[tuple[str, str, str], pb.Condition] = {}
        self._chunks: list[list[pb.Mutation]] = []  # full chunks waiting to be sent ahead
        # Names this attempt to the daemon once chunks go ahead, so that a redo of the
        # same id (an idempotency key's) and this attempt can never mix (see the proto).
        self._attempt = ""
        self._state = "open"  # open | committed | aborted | failed

    # -- buffering (no I/O in either client) -------------------------------------

    def write(
        self,
        agent_id: str,
        key: str,
        value: Any,
        namespace: str | None = None,
        *,
        expected_version: int | None = None,
        if_absent: bool = False,
    ) -> None:
        """Stage `value` for `key`: any JSON value, or bytes (`bytes`, `bytearray` or
        `memoryview`), which are stored and read back as `bytes`. The last write to a key wins.

        With `expected_version`, the commit succeeds only if the key's latest
        version is still that one (0: the key has no live value), else it
        raises ConflictError and writes nothing. With `if_absent=True` the
        write is made only if the key has no live value when the transaction
        commits, and is otherwise skipped alone, without error: the first
        writer wins and the rest of the transaction commits. Raises
        InvalidArgumentError (a TransactionError) for a bad name or value,
        TransactionClosedError after commit/abort.
        """
        self._check_open()
        ns = namespace or self.namespace
        mutation = _wire.write_mutation(ns, agent_id, key, value, expected_version, if_absent)
        if self._state == "open":
            self._add(mutation)

    def delete(
        self,
        agent_id: str,
        key: str,
        namespace: str | None = None,
        *,
        expected_version: int | None = None,
    ) -> None:
        """Stage a delete (a tombstone version) of `key`; `expected_version` as for `write`."""
        self._check_open()
        mutation = _wire.delete_mutation(namespace or self.namespace, agent_id, key, expected_version)
        if self._state == "open":
            self._add(mutation)

    def expect(self, agent_id: str, key: str, version: int, namespace: str | None = None) -> None:
        """Commit only if `key` (one this transaction need not write) is at `version` then.

        The condition holds when the key's latest version is `version` (a
        live value or a tombstone); 0 holds when the key has no live value.
        If it fails the commit raises ConflictError and writes nothing. The
        last expectation set for a key wins.
        """
        self._check_open()
        cond = _wire.condition(namespace or self.namespace, agent_id, key, version)
        self._conditions[(cond.namespace, cond.agent_id, cond.key)] = cond

    def _add(self, mutation: pb.Mutation) -> None:
        self._buffer[(mutation.namespace, mutation.agent_id, mutation.key)] = mutation
        self._buffered_bytes += mutation.ByteSize()
        if self._buffered_bytes >= STAGE_AHEAD_BYTES:
            self._chunks.append(list(self._buffer.values()))
            self._buffer.clear()
            self._buffered_bytes = 0

    # -- requests the clients send ------------------------------------------------

    def _next_stage(self) -> pb.StageRequest | None:
        """The next full chunk to send ahead, or None.

        Once it is built the chunk has left the buffer: if sending it fails
        the caller must call `_stage_failed()`.
        """
        if not self._chunks:
            return None
        if not self._attempt:
            self._attempt = secrets.token_hex(8)
        request = pb.StageRequest(txn_id=self.txn_id, mutations=self._chunks.pop(0), attempt=self._attempt)
        self._open_with(request)
        return request

    def _stage_failed(self, error: BaseException) -> bool:
        """After sending a chunk ahead failed: True when the failure is the answer (an
        idempotency key's transaction committed already), False when it must be raised."""
        self._chunks.clear()
        if self.idempotency_key is not None and isinstance(error, _AlreadyCommitted):
            self._buffer.clear()
            self._state = "answered"
            self.commit_ts = error.commit_ts
            return True
        # The chunk may or may not be staged: the transaction can no longer
        # commit what was written to it.
        self._state = "failed"
        return False

    def _answered(self) -> int | None:
        """The commit_ts commit() returns without sending anything, if it was answered already."""
        if self._state == "answered" and self.commit_ts is not None:
            return self._committed(self.commit_ts)
        return None

    def _commit_call(self) -> PendingCommit:
        """The commit to send (after every chunk was sent ahead); the transaction is failed until
        `_committed()` says otherwise."""
        self._check_open()
        request = pb.CommitRequest(
            txn_id=self.txn_id,
            mutations=list(self._buffer.values()),
            conditions=list(self._conditions.values()),
            attempt=self._attempt,
        )
        self._open_with(request)
        self._buffer.clear()
        self._state = "failed"
        return PendingCommit(request, self._deadline)

    def _committed(self, commit_ts: int) -> int:
        self._state = "committed"
        self.commit_ts = commit_ts
        return commit_ts

    def _commit_failed(self, error: StatehouseError) -> None:
        if isinstance(error, ConflictError):
            # The server ended it, writing nothing: there is nothing to discard.
            self._opened = False

    def _abort_request(self) -> pb.AbortRequest | None:
        """The Abort to send, or None when the server holds nothing; then call `_aborted()`."""
        if self._state in ("committed", "answered"):
            raise TransactionClosedError(f"transaction {self.txn_id!r} was already committed; cannot abort")
        self._buffer.clear()
        self._chunks.clear()
        if self._state == "aborted" or not self._opened:
            return None
        # After a commit whose outcome is unknown this is also how to find
        # out: the server refuses to abort a committed transaction.
        return pb.AbortRequest(txn_id=self.txn_id, attempt=self._attempt)

    def _aborted(self) -> None:
        self._state = "aborted"

    def _exit_action(self, failed: bool) -> str | None:
        """What leaving a `with` block does: "commit", "abort", "discard" (abort, errors
        ignored: a failed call left the block, and its exception must not be hidden), or None."""
        if self._state == "answered":
            return None if failed else "commit"
        if self._state == "open":
            return "abort" if failed else "commit"
        if self._state == "failed" and failed:
            return "discard"
        return None

    def _check_open(self) -> None:
        if self._state not in ("open", "answered"):
            raise TransactionClosedError(f"transaction {self.txn_id!r} is {self._state}")

    def _open_with(self, request: pb.CommitRequest | pb.StageRequest) -> None:
        """Make `request` open the transaction on the server if nothing has yet.

        Raises TransactionExpiredError (and fails the transaction) once
        `timeout_ms` has passed.
        """
        remaining = None
        if self._deadline is not None:
            remaining = (self._deadline - time.monotonic()) * 1000
            if remaining <= 0:
                self._buffer.clear()
                self._chunks.clear()
                self._state = "failed"
                raise TransactionExpiredError(
                    f"transaction {self.txn_id!r} expired: not committed within its "
                    f"{self.timeout_ms} ms timeout; begin a new transaction"
                )
        if not self._opened:
            request.open.CopyFrom(_wire.txn_open(remaining))
            self._opened = True
