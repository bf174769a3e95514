"""The synchronous client: `Statehouse` and its `Transaction`.

Every method is written once, as a plan in `statehouse._methods` that the
async client shares; this module only performs a plan's steps with blocking
calls, combining the commits and point reads of concurrent threads (see
`statehouse._batching`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from statehouse import _fork, _methods, _plans, _retry, _wire
from statehouse._batching import Combiner
from statehouse._names import DEFAULT_NAMESPACE
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from statehouse._retry import RetryPolicy
from statehouse._session import Lanes
from statehouse._transaction import BEGIN_TRANSACTION_DOC, STAGE_AHEAD_BYTES, PendingCommit, TransactionCore
from statehouse._watch import ClosedStub, Watch
from statehouse.exceptions import (
    DeadlineExceededError,
    StatehouseError,
    from_rpc_error,
)
from statehouse.types import ReplayEvent, StateResult

__all__ = ["DEFAULT_ADDR", "DEFAULT_TIMEOUT_SECONDS", "STAGE_AHEAD_BYTES", "Statehouse", "Transaction"]

DEFAULT_ADDR = "localhost:50051"
DEFAULT_TIMEOUT_SECONDS = 30.0

R = TypeVar("R")
_PointAnswer = pb.GetStateResponse | pb.GetStateAtVersionResponse


class _PointRead:
    """A point read queued in the combiner, with the deadline of the attempt that made it."""

    __slots__ = ("deadline", "request")

    def __init__(self, request: pb.GetStateRequest | pb.GetStateAtVersionRequest, timeout: float) -> None:
        self.request = request
        self.deadline = time.monotonic() + timeout

    def ByteSize(self) -> int:  # the protobuf name: the Combiner sizes batches by it
        return int(self.request.ByteSize())

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


TRANSACTION_DOC = """

    The id is chosen by the client, and the transaction opens on the server
    with the first request that carries its operations: usually the commit
    itself, which carries every write, delete and condition, so a
    transaction costs one round trip. Transactions past 1 MiB send their
    operations ahead in chunks (Stage), the first of which opens them.
    `write`, `delete` and `expect` raise only for input they can reject
    locally; server-side errors surface at `commit`. Use as a context
    manager: commit on a clean exit, abort on an exception.

    `timeout_ms`, when given, counts from `begin_transaction()`: a commit
    after it has passed fails with TransactionExpiredError, and so does the
    server once operations were sent ahead. Without it, the daemon's
    default timeout applies from the moment the transaction opens there.

    Retries: a commit that opens its transaction (every transaction under
    1 MiB) is retried after UNAVAILABLE until the client's timeout, with
    `open.timeout_ms` renewed from the time the transaction has left; the
    daemon answers a repeat with the first commit's commit_ts and writes
    nothing twice. Chunks sent ahead, and the commit of a transaction that
    sent chunks ahead, are not retried. `abort` is retried.
"""


class Transaction(TransactionCore):
    __doc__ = "A transaction, owned on the server by its namespace's actor (sync)." + TRANSACTION_DOC

    def __init__(
        self,
        client: Statehouse,
        txn_id: str,
        namespace: str,
        timeout_ms: int | None = None,
        *,
        opened: bool = True,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(txn_id, namespace, timeout_ms, opened=opened, idempotency_key=idempotency_key)
        self._client = client

    def commit(self) -> int:
        """Commit atomically; returns the commit_ts once the commit is durable.

        Raises ConflictError if a condition failed (nothing written),
        TransactionExpiredError past the timeout, TransactionClosedError
        after commit/abort, and otherwise a TransactionError for the status
        (UnavailableError too once retries ran out: the outcome is then
        unknown, `abort()` tells). Retried as the class docstring says.
        """
        self._check_open()
        if self._chunks:
            self._send_ahead()
        answered = self._answered()
        if answered is not None:
            return answered
        call = self._commit_call()
        try:
            commit_ts = self._client._committer.call(call)
        except StatehouseError as exc:
            self._commit_failed(exc)
            raise
        return self._committed(commit_ts)

    def abort(self) -> None:
        """Discard the transaction. Aborting twice is fine; after a commit it raises TransactionClosedError.

        Retried after UNAVAILABLE. After a commit whose outcome is unknown,
        raises TransactionClosedError if that commit did succeed.
        """
        request = self._abort_request()
        if request is not None:
            self._client._call("Abort", request, in_txn=True)
        self._aborted()

    def _add(self, mutation: pb.Mutation) -> None:
        super()._add(mutation)
        if self._chunks:  # a chunk is full: send it ahead
            self._send_ahead()

    def _send_ahead(self) -> None:
        while (request := self._next_stage()) is not None:
            try:
                self._client._call("Stage", request, in_txn=True, retry=False)
            except BaseException as exc:
                if not self._stage_failed(exc):
                    raise

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        action = self._exit_action(exc_type is not None)
        if action == "commit":
            self.commit()
        elif action == "abort":
            self.abort()
        elif action == "discard":
            try:
                self.abort()
            except StatehouseError:
                pass


class Statehouse:
    """A connection to a Statehouse daemon (sync; `AsyncStatehouse` has the same methods as coroutines).

    `url` defaults to $STATEHOUSE_ADDR, then "localhost:50051". `namespace`
    is the default for every call that does not name one. `timeout` bounds
    each call, in seconds, retries included. `retry` says how calls that
    failed with UNAVAILABLE are retried (None: never); each method's
    docstring says whether it is. Every method raises a StatehouseError
    subclass for a failure (see statehouse.exceptions): InvalidArgumentError
    before anything is sent, UnavailableError when the daemon cannot be
    reached, DeadlineExceededError past `timeout`. Safe to share between threads.

    `sessions`: send calls as messages of up to two long-lived streams
    (the daemon's Session RPC), which costs the daemon about half what a
    call of its own does; calls fall back to plain RPCs when both are busy
    or the daemon has none. False: plain RPCs only.

    `local`: when the daemon runs on this machine and names its local
    socket on a session stream (`statehoused --local-socket`), send the
    calls of the sessions on that socket from then on: the same messages
    without gRPC's own work, about a quarter of a sequential commit's time.
    False: over gRPC only. (Streams, such as watches and replays, always go
    over gRPC.)
    """

    def __init__(
        self,
        url: str | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 -- frozen, so one shared default is fine
        sessions: bool = True,
        local: bool = True,
    ) -> None:
        self.url = url or os.environ.get("STATEHOUSE_ADDR") or DEFAULT_ADDR
        self.namespace = _wire.namespace(namespace)
        self.timeout = timeout
        self.retry = retry
        _fork.check()
        self._channel = grpc.insecure_channel(self.url, options=_wire.channel_options())
        _fork.channel_made()
        self._reach = _retry.Reach(self.url, retry)
        self._grpc_stub = pb_grpc.StatehouseServiceStub(self._channel)
        # Unary calls go as messages of long-lived Session streams (statehouse._session).
        self._lanes: Lanes | None = (
            Lanes(self.url, _wire.channel_options(), local=local) if sessions else None
        )
        # Commits, and point reads, of concurrent threads share round trips
        # (see statehouse._batching).
        self._committer: Combiner[PendingCommit, int] = Combiner(self._commit_one, self._commit_many)
        self._reader: Combiner[_PointRead, _PointAnswer] = Combiner(self._read_one, self._read_many)

    @property
    def _stub(self) -> Any:
        """The gRPC stub, refused in a forked child (statehouse._fork)."""
        _fork.check()
        return self._grpc_stub

    def _closed(self) -> bool:
        """Whether `close` was called (a call it ended failed with CANCELLED)."""
        return isinstance(self._grpc_stub, ClosedStub)

    # -- performing the steps of plans (statehouse._methods) ---------------------------

    def _drive(self, plan: _methods.Plan[R]) -> R:
        """Run a plan to its result, performing each step it yields."""
        answer: Any = None
        error: StatehouseError | None = None
        while True:
            done, step = _methods.advance(plan, answer, error)
            if done:
                return step  # type: ignore[no-any-return]
            answer, error = None, None
            try:
                if isinstance(step, _methods.Attempt):
                    answer = self._attempt(step)
                elif isinstance(step, _methods.Sleep):
                    time.sleep(step.seconds)
                elif isinstance(step, _methods.Commit):
                    answer = step.transaction.commit()
                else:
                    raise TypeError(f"a unary plan yielded {step!r}")
            except StatehouseError as exc:
                error = exc

    def _attempt(self, step: _methods.Attempt) -> Any:
        if step.rpc in ("GetState", "GetStateAtVersion"):
            # Combined with other threads' reads.
            return self._reader.call(_PointRead(step.request, step.timeout))
        return self._send(step.rpc, step.request, step.in_txn, step.timeout)

    def _send(self, rpc: str, request: Any, in_txn: bool, timeout: float) -> Any:
        """One call of a unary RPC, on a session if one is free; its failure as a StatehouseError."""
        _fork.check()
        try:
            response = None if self._lanes is None else self._lanes.call(rpc, request, timeout)
            if response is None:
                response = getattr(self._stub, rpc)(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise self._reach.failed(from_rpc_error(exc, in_txn, self._closed())) from None
        self._reach.answered()
        return response

    def _drive_stream(self, plan: _methods.Plan[None]) -> Iterator[Any]:
        """Run a stream plan, yielding what it emits; the stream it opened is cancelled at the end."""
        stream: Any = None
        answer: Any = None
        error: StatehouseError | None = None
        try:
            while True:
                done, step = _methods.advance(plan, answer, error)
                if done:
                    return
                answer, error = None, None
                if isinstance(step, _methods.Emit):
                    yield step.item
                    continue
                try:
                    if isinstance(step, _methods.Next):
                        answer = next(stream, None)
                    elif isinstance(step, _methods.Open):
                        if stream is not None:
                            stream.cancel()
                        stream = getattr(self._stub, step.rpc)(step.request)
                    elif isinstance(step, _methods.Sleep):
                        time.sleep(step.seconds)
                    else:
                        raise TypeError(f"a stream plan yielded {step!r}")
                except grpc.RpcError as exc:
                    error = from_rpc_error(exc, False, self._closed())
        finally:
            if stream is not None:
                stream.cancel()
            plan.close()

    def _call(
        self,
        rpc: str,
        request: Any,
        in_txn: bool = False,
        *,
        retry: bool = True,
        renew: Callable[[], bool] | None = None,
    ) -> Any:
        """Call `rpc` (not a point read: those go through `_attempt`) with the retries of
        `statehouse._methods.call`. The first attempt is made here, without a plan: a call
        that succeeds at once (almost every commit) costs no generator."""
        attempts = _retry.Attempts(self.retry if retry else None, self.timeout)
        try:
            return self._send(rpc, request, in_txn, attempts.remaining())
        except StatehouseError as exc:
            failed = exc
        return self._drive(
            _methods.call(
                self, rpc, request, in_txn=in_txn, retry=retry, renew=renew, attempts=attempts, failed=failed
            )
        )

    # -- service -------------------------------------------------------------

    health = _methods.blocking(_methods.health)
    version = _methods.blocking(_methods.version)
    http_addr = _methods.blocking(_methods.http_addr)

    # -- transactions ------------------------------------------------------------

    def begin_transaction(
        self,
        timeout_ms: int | None = None,
        namespace: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Transaction:
        """Start a transaction owned by `namespace` (default: the client's); no round trip."""
        txn_id, ns = _wire.new_transaction(namespace or self.namespace, timeout_ms, idempotency_key)
        return Transaction(self, txn_id, ns, timeout_ms, opened=False, idempotency_key=idempotency_key)

    # The rest of the docstring (idempotency keys) is shared by both clients.
    begin_transaction.__doc__ = (begin_transaction.__doc__ or "") + BEGIN_TRANSACTION_DOC

    def _commit_one(self, call: PendingCommit) -> int:
        response = self._call("Commit", call.request, True, retry=call.retryable, renew=call.renew)
        return int(response.commit_ts)

    def _commit_many(self, calls: Sequence[PendingCommit]) -> list[int | StatehouseError]:
        return self._drive(_methods.commit_batch(self, calls))

    # -- reads ---------------------------------------------------------------------

    get_state = _methods.blocking(_methods.get_state)
    get_state_at_version = _methods.blocking(_methods.get_state_at_version)
    get_many = _methods.blocking(_methods.get_many)
    update = _methods.blocking(_methods.update)

    def _read_one(self, read: _PointRead) -> _PointAnswer:
        rpc = "GetState" if isinstance(read.request, pb.GetStateRequest) else "GetStateAtVersion"
        return self._send(rpc, read.request, False, read.remaining())  # type: ignore[no-any-return]

    def _read_many(self, reads: Sequence[_PointRead]) -> list[_PointAnswer | StatehouseError]:
        # The batch lives as long as the longest deadline among its reads.
        batch = _wire.read_batch([read.request for read in reads])
        response = self._send("ReadBatch", batch, False, max(read.remaining() for read in reads))
        outcomes = _wire.read_outcomes(response, len(reads))
        for n, outcome in enumerate(outcomes):
            # Reads left undone because the answer grew too big: ask each alone.
            if isinstance(outcome, StatehouseError) and outcome.code == "ABORTED":
                try:
                    outcomes[n] = self._read_one(reads[n])
                except StatehouseError as exc:
                    outcomes[n] = exc
        return outcomes

    list_keys = _methods.blocking(_methods.list_keys)
    list_keys_page = _methods.blocking(_methods.list_keys_page)
    scan_prefix = _methods.blocking(_methods.scan_prefix)
    scan_prefix_page = _methods.blocking(_methods.scan_prefix_page)
    get_agent_state = _methods.blocking(_methods.get_agent_state)
    list_agents = _methods.blocking(_methods.list_agents)
    key_history = _methods.blocking(_methods.key_history)
    key_history_page = _methods.blocking(_methods.key_history_page)

    def replay(
        self,
        agent_id: str,
        start_ts: int | None = None,
        end_ts: int | None = None,
        namespace: str | None = None,
    ) -> Iterator[ReplayEvent]:
        return self._drive_stream(_methods.replay(self, agent_id, start_ts, end_ts, namespace))

    replay.__doc__ = _methods.replay.__doc__

    # -- watching ----------------------------------------------------------------------

    def watch(
        self,
        agent_id: str | None = None,
        *,
        key_prefix: str = "",
        start_ts: int | None = None,
        namespace: str | None = None,
    ) -> Watch:
        """Follow commits of `agent_id` (None: every agent of the namespace) on keys under `key_prefix`.

        Without `start_ts`, delivers commits made after this call returns;
        with it, replays the history from start_ts and then goes live, with
        no gap and no duplicate. Returns once the daemon has registered the
        watch. Subscribing is retried after UNAVAILABLE; see `Watch` for how
        it re-subscribes later.
        """
        watch = Watch(self, _wire.watch(namespace or self.namespace, agent_id, key_prefix, start_ts))
        watch._subscribe(_retry.RETRIED_CODES)
        return watch

    def wait_for(
        self,
        agent_id: str,
        key: str,
        predicate: Callable[[Any], bool] | None = None,
        *,
        timeout: float | None = None,
        namespace: str | None = None,
    ) -> StateResult:
        ns = namespace or self.namespace
        deadline = None if timeout is None else time.monotonic() + timeout
        late = DeadlineExceededError(f"key {key!r} of agent {agent_id!r} did not qualify within {timeout} s")
        try:
            state, commit_ts = self._drive(_methods.first_state(self, agent_id, key, ns, timeout))
        except DeadlineExceededError:
            if timeout is None:
                raise
            raise late from None
        if _plans.satisfies(state, predicate):
            return state
        watch = Watch(self, _wire.watch(ns, agent_id, key_prefix=key, start_ts=commit_ts + 1))
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            watch._subscribe(_retry.RETRIED_CODES, timeout=remaining)  # within the wait's deadline too
        except DeadlineExceededError:
            if remaining is None:
                raise
            raise late from None
        with watch:
            timer = None
            if deadline is not None:  # ends the iteration below
                timer = threading.Timer(max(0.0, deadline - time.monotonic()), watch.cancel)
                timer.start()
            try:
                for event in watch:
                    changed = _plans.key_state(event, key)
                    if changed is not None and _plans.satisfies(changed, predicate):
                        return changed
            finally:
                if timer is not None:
                    timer.cancel()
        raise late

    wait_for.__doc__ = _plans.WAIT_FOR_DOC

    # -- snapshots ---------------------------------------------------------------------

    create_snapshot = _methods.blocking(_methods.create_snapshot)

    # -- forgetting ------------------------------------------------------------------

    purge = _methods.blocking(_methods.purge)
    compact = _methods.blocking(_methods.compact)

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; watches and streams of this client end, and later calls
        raise StatehouseError (code CANCELLED)."""
        self._grpc_stub = ClosedStub()
        if _fork.forked():  # made before a fork: its streams and channel are the parent's
            self._lanes = None
            return
        if self._lanes is not None:
            self._lanes.close()
            self._lanes = None
        self._channel.close()

    def __enter__(self) -> Statehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
