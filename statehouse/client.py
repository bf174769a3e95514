"""The synchronous client: `Statehouse` and its `Transaction`.

All request building and response parsing lives in `statehouse._wire`; this
module only sends and receives.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from statehouse import _wire
from statehouse._batching import Combiner
from statehouse._names import DEFAULT_NAMESPACE
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from statehouse.exceptions import (
    StatehouseError,
    TransactionClosedError,
    TransactionExpiredError,
    from_rpc_error,
)
from statehouse.types import ReplayEvent, SnapshotInfo, StateResult

DEFAULT_ADDR = "localhost:50051"
DEFAULT_TIMEOUT_SECONDS = 30.0
# Staged writes beyond this many bytes are sent ahead of the commit.
STAGE_AHEAD_BYTES = 1024 * 1024
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

R = TypeVar("R")
_PointRead = pb.GetStateRequest | pb.GetStateAtVersionRequest
_PointAnswer = pb.GetStateResponse | pb.GetStateAtVersionResponse


class Transaction:
    """A transaction, owned on the server by its namespace's actor.

    The id is chosen here, and the transaction opens on the server with the
    first request that carries its operations: usually the commit itself,
    which carries every write and delete, so a transaction costs one round
    trip. Transactions past 1 MiB send their operations ahead in chunks,
    the first of which opens them. `write` raises only for input it can
    reject locally; server-side errors surface at `commit`. Use as a
    context manager: commit on a clean exit, abort on an exception.

    `timeout_ms`, when given, counts from `begin_transaction()`: a commit
    after it has passed fails with TransactionExpiredError, and so does the
    server once operations were sent ahead. Without it, the daemon's
    default timeout applies from the moment the transaction opens there.
    """

    def __init__(
        self,
        client: Statehouse,
        txn_id: str,
        namespace: str,
        timeout_ms: int | None = None,
        *,
        opened: bool = True,
    ) -> None:
        self._client = client
        self.txn_id = txn_id
        self.namespace = namespace
        self.timeout_ms = timeout_ms
        self._opened = opened  # False until a request has opened it on the server
        self._deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        self._buffer: dict[tuple[str, str, str], pb.Mutation] = {}
        self._buffered_bytes = 0
        self._state = "open"  # open | committed | aborted | failed
        self.commit_ts: int | None = None

    def write(self, agent_id: str, key: str, value: Any, namespace: str | None = None) -> None:
        """Stage `value` (any JSON value) for `key`; the last write to a key wins."""
        self._check_open()
        self._add(_wire.write_mutation(namespace or self.namespace, agent_id, key, value))

    def delete(self, agent_id: str, key: str, namespace: str | None = None) -> None:
        """Stage a delete (a tombstone version) of `key`."""
        self._check_open()
        self._add(_wire.delete_mutation(namespace or self.namespace, agent_id, key))

    def commit(self) -> int:
        """Commit atomically; returns the commit_ts once the commit is durable."""
        self._check_open()
        request = pb.CommitRequest(txn_id=self.txn_id, mutations=list(self._buffer.values()))
        self._open_with(request)
        self._buffer.clear()
        self._state = "failed"
        commit_ts = self._client._committer.call(request)
        self._state = "committed"
        self.commit_ts = commit_ts
        return commit_ts

    def abort(self) -> None:
        """Discard the transaction. Aborting twice is fine; after a commit it is an error."""
        if self._state == "committed":
            raise TransactionClosedError(f"transaction {self.txn_id!r} was already committed; cannot abort")
        if self._state == "aborted":
            return
        self._buffer.clear()
        if self._opened:  # otherwise nothing was sent: the server holds nothing to discard
            # After a commit whose outcome is unknown this is also how to find
            # out: the server refuses to abort a committed transaction.
            self._client._call(self._client._stub.Abort, pb.AbortRequest(txn_id=self.txn_id), in_txn=True)
        self._state = "aborted"

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._state == "open":
            if exc_type is None:
                self.commit()
            else:
                self.abort()
        elif self._state == "failed" and exc_type is not None:
            # A failed call left the block: discard what the server may hold,
            # without hiding the exception that is on its way out.
            try:
                self.abort()
            except StatehouseError:
                pass

    def _check_open(self) -> None:
        if self._state != "open":
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
                self._state = "failed"
                raise TransactionExpiredError(
                    f"transaction {self.txn_id!r} expired: not committed within its "
                    f"{self.timeout_ms} ms timeout; begin a new transaction"
                )
        if not self._opened:
            request.open.CopyFrom(_wire.txn_open(remaining))
            # From here on the server may hold the transaction, even if the
            # call fails (a lost answer): abort() then asks the server to discard it.
            self._opened = True

    def _add(self, mutation: pb.Mutation) -> None:
        target = (mutation.namespace, mutation.agent_id, mutation.key)
        self._buffer[target] = mutation
        self._buffered_bytes += mutation.ByteSize()
        if self._buffered_bytes >= STAGE_AHEAD_BYTES:
            request = pb.StageRequest(txn_id=self.txn_id, mutations=list(self._buffer.values()))
            self._open_with(request)
            self._buffer.clear()
            self._buffered_bytes = 0
            try:
                self._client._call(self._client._stub.Stage, request, in_txn=True)
            except BaseException:
                # The chunk left the buffer and may or may not be staged: the
                # transaction can no longer commit what was written to it.
                self._state = "failed"
                raise


class Statehouse:
    """A connection to a Statehouse daemon.

    `url` defaults to $STATEHOUSE_ADDR, then "localhost:50051". `namespace`
    is the default for every call that does not name one. `timeout` bounds
    each call, in seconds.
    """

    def __init__(
        self,
        url: str | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.url = url or os.environ.get("STATEHOUSE_ADDR") or DEFAULT_ADDR
        self.namespace = _wire.namespace(namespace)
        self.timeout = timeout
        self._channel = grpc.insecure_channel(
            self.url,
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
            ],
        )
        self._stub = pb_grpc.StatehouseServiceStub(self._channel)
        # Commits, and point reads, of concurrent threads share round trips
        # (see statehouse._batching).
        self._committer: Combiner[pb.CommitRequest, int] = Combiner(self._commit_one, self._commit_many)
        self._reader: Combiner[_PointRead, _PointAnswer] = Combiner(self._read_one, self._read_many)

    def _call(self, method: Callable[..., R], request: Any, in_txn: bool = False) -> R:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, in_txn) from None

    # -- service -------------------------------------------------------------

    def health(self) -> str:
        """ "ok" when the daemon is serving."""
        return self._call(self._stub.Health, pb.HealthRequest()).status

    def version(self) -> tuple[str, str]:
        """(version, git_sha) of the daemon."""
        response = self._call(self._stub.Version, pb.VersionRequest())
        return response.version, response.git_sha

    # -- transactions ------------------------------------------------------------

    def begin_transaction(self, timeout_ms: int | None = None, namespace: str | None = None) -> Transaction:
        """Start a transaction owned by `namespace` (default: the client's).

        No round trip: the transaction opens on the server with its commit
        (or its first chunk of operations sent ahead), see `Transaction`.
        """
        txn_id, namespace = _wire.new_transaction(namespace or self.namespace, timeout_ms)
        return Transaction(self, txn_id, namespace, timeout_ms, opened=False)

    def _commit_one(self, request: pb.CommitRequest) -> int:
        return self._call(self._stub.Commit, request, in_txn=True).commit_ts

    def _commit_many(self, requests: Sequence[pb.CommitRequest]) -> list[int | StatehouseError]:
        response = self._call(self._stub.CommitBatch, pb.CommitBatchRequest(commits=requests), in_txn=True)
        return _wire.commit_outcomes(response, len(requests))

    # -- reads ---------------------------------------------------------------------

    def get_state(self, agent_id: str, key: str, namespace: str | None = None) -> StateResult:
        """The latest value of `key`; a missing or deleted key has exists=False."""
        request = _wire.get_state(namespace or self.namespace, agent_id, key)
        return _wire.state_result(self._reader.call(request), key)

    def get_state_at_version(
        self, agent_id: str, key: str, version: int, namespace: str | None = None
    ) -> StateResult:
        """`key` at `version`; NotFoundError if that version never existed."""
        request = _wire.get_state_at_version(namespace or self.namespace, agent_id, key, version)
        return _wire.state_result(self._reader.call(request), key)

    def _read_one(self, request: _PointRead) -> _PointAnswer:
        if isinstance(request, pb.GetStateRequest):
            return self._call(self._stub.GetState, request)
        return self._call(self._stub.GetStateAtVersion, request)

    def _read_many(self, requests: Sequence[_PointRead]) -> list[_PointAnswer | StatehouseError]:
        response = self._call(self._stub.ReadBatch, _wire.read_batch(requests))
        outcomes = _wire.read_outcomes(response, len(requests))
        for n, outcome in enumerate(outcomes):
            # Reads left undone because the answer grew too big: ask each alone.
            if isinstance(outcome, StatehouseError) and outcome.code == "ABORTED":
                try:
                    outcomes[n] = self._read_one(requests[n])
                except StatehouseError as exc:
                    outcomes[n] = exc
        return outcomes

    def list_keys(self, agent_id: str, namespace: str | None = None) -> list[str]:
        """The agent's live keys in lexicographic (UTF-8 byte) order."""
        request = _wire.list_keys(namespace or self.namespace, agent_id)
        return list(self._call(self._stub.ListKeys, request).keys)

    def scan_prefix(self, agent_id: str, prefix: str, namespace: str | None = None) -> list[StateResult]:
        """Live keys starting with `prefix`, in order; each result carries its key."""
        request = _wire.scan_prefix(namespace or self.namespace, agent_id, prefix)
        return _wire.scan_results(self._call(self._stub.ScanPrefix, request))

    def replay(
        self,
        agent_id: str,
        start_ts: int | None = None,
        end_ts: int | None = None,
        namespace: str | None = None,
    ) -> Iterator[ReplayEvent]:
        """The agent's commits in commit_ts order, [start_ts, end_ts] inclusive."""
        namespace = namespace or self.namespace
        request = _wire.replay(namespace, agent_id, start_ts, end_ts)
        namespace = request.namespace
        stream = self._stub.ReplayBatches(request)
        try:
            for batch in stream:
                for message in batch.events:
                    yield _wire.replay_event(message, namespace, agent_id)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, False) from None
        finally:
            stream.cancel()

    def create_snapshot(self) -> SnapshotInfo:
        """Take an online snapshot (commits continue); returns where it is on the daemon's machine."""
        response = self._call(self._stub.CreateSnapshot, pb.CreateSnapshotRequest())
        return SnapshotInfo(response.path, response.commit_ts)

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Statehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
