"""The synchronous client: `Statehouse` and its `Transaction`.

Requests are built and answers parsed by the pure code the async client
shares (`_wire`, `_plans`, `_transaction`, `_retry`, `_watch`); this module
only sends and receives, combining the calls of concurrent threads (see
`statehouse._batching`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc

from statehouse import _plans, _retry, _wire
from statehouse._batching import Combiner
from statehouse._names import DEFAULT_NAMESPACE
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from statehouse._retry import RetryPolicy
from statehouse._transaction import BEGIN_TRANSACTION_DOC, STAGE_AHEAD_BYTES, CommitCall, TransactionCore
from statehouse._watch import ClosedStub, Watch
from statehouse.exceptions import (
    ConflictError,
    DeadlineExceededError,
    StatehouseError,
    from_rpc_error,
)
from statehouse.types import AgentState, KeyVersion, Page, ReplayEvent, SnapshotInfo, StateResult

__all__ = ["DEFAULT_ADDR", "DEFAULT_TIMEOUT_SECONDS", "STAGE_AHEAD_BYTES", "Statehouse", "Transaction"]

DEFAULT_ADDR = "localhost:50051"
DEFAULT_TIMEOUT_SECONDS = 30.0

R = TypeVar("R")
_PointRead = pb.GetStateRequest | pb.GetStateAtVersionRequest
_PointAnswer = pb.GetStateResponse | pb.GetStateAtVersionResponse

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
            self._client._call(self._client._stub.Abort, request, in_txn=True)
        self._aborted()

    def _add(self, mutation: pb.Mutation) -> None:
        super()._add(mutation)
        self._send_ahead()

    def _send_ahead(self) -> None:
        while (request := self._next_stage()) is not None:
            try:
                self._client._call(self._client._stub.Stage, request, in_txn=True, retry=False)
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
    """

    def __init__(
        self,
        url: str | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 -- frozen, so one shared default is fine
    ) -> None:
        self.url = url or os.environ.get("STATEHOUSE_ADDR") or DEFAULT_ADDR
        self.namespace = _wire.namespace(namespace)
        self.timeout = timeout
        self.retry = retry
        self._channel = grpc.insecure_channel(self.url, options=_wire.channel_options())
        self._stub = pb_grpc.StatehouseServiceStub(self._channel)
        # Commits, and point reads, of concurrent threads share round trips
        # (see statehouse._batching).
        self._committer: Combiner[CommitCall, int] = Combiner(self._commit_one, self._commit_many)
        self._reader: Combiner[_PointRead, _PointAnswer] = Combiner(self._read_one, self._read_many)

    def _call(
        self,
        method: Callable[..., R],
        request: Any,
        in_txn: bool = False,
        *,
        retry: bool = True,
        renew: Callable[[], bool] | None = None,
        timeout: float | None = None,
    ) -> R:
        """Call `method`, retrying after UNAVAILABLE if `retry` (and `renew()` agrees) until the
        deadline: the client's timeout, or `timeout` seconds if that is shorter."""
        limit = self.timeout if timeout is None else min(timeout, self.timeout)
        attempts = _retry.Attempts(self.retry if retry else None, limit)
        while True:
            try:
                return method(request, timeout=attempts.remaining())
            except grpc.RpcError as exc:
                error = from_rpc_error(exc, in_txn)
            delay = attempts.backoff(error)
            if delay is None or (renew is not None and not renew()):
                raise attempts.cause(error)
            time.sleep(delay)

    def _run(self, plan: _plans.Plan, method: Callable[..., Any]) -> Any:
        """Drive a plan of several calls (see statehouse._plans); each call is retried."""
        request = next(plan)
        while True:
            try:
                request = plan.send(self._call(method, request))
            except StopIteration as done:
                return done.value

    # -- service -------------------------------------------------------------

    def health(self) -> str:
        """ "ok" when the daemon is serving. Retried."""
        return self._call(self._stub.Health, pb.HealthRequest()).status

    def version(self) -> tuple[str, str]:
        """(version, git_sha) of the daemon. Retried."""
        response = self._call(self._stub.Version, pb.VersionRequest())
        return response.version, response.git_sha

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

    def _commit_one(self, call: CommitCall) -> int:
        response = self._call(self._stub.Commit, call.request, True, retry=call.retryable, renew=call.renew)
        return int(response.commit_ts)

    def _commit_many(self, calls: Sequence[CommitCall]) -> list[int | StatehouseError]:
        answers: list[int | StatehouseError] = [0] * len(calls)
        pending: Sequence[int] = range(len(calls))
        attempts = _retry.Attempts(self.retry, self.timeout)
        while True:
            batch = pb.CommitBatchRequest(commits=[calls[n].request for n in pending])
            outcomes: list[int | StatehouseError]
            try:
                response = self._stub.CommitBatch(batch, timeout=attempts.remaining())
                outcomes = _wire.commit_outcomes(response, len(pending))
            except grpc.RpcError as exc:
                outcomes = [from_rpc_error(exc, True) for _ in pending]
            outcomes = [attempts.cause(o) if isinstance(o, StatehouseError) else o for o in outcomes]
            # Commits that opened their transaction are retried; the daemon
            # answers those that did commit with their first commit_ts.
            unavailable: list[StatehouseError] = []
            retry = []
            retried = _retry.RETRIED_CODES
            for n, outcome in zip(pending, outcomes, strict=True):
                answers[n] = outcome
                if isinstance(outcome, StatehouseError) and calls[n].retryable and outcome.code in retried:
                    unavailable.append(outcome)
                    retry.append(n)
            delay = attempts.backoff(unavailable[0]) if unavailable else None
            if delay is None:
                return answers
            time.sleep(delay)
            pending = [n for n in retry if calls[n].renew()]
            if not pending:
                return answers

    # -- reads ---------------------------------------------------------------------

    def get_state(self, agent_id: str, key: str, namespace: str | None = None) -> StateResult:
        """The latest value of `key`; a missing or deleted key has exists=False. Retried."""
        request = _wire.get_state(namespace or self.namespace, agent_id, key)
        return _wire.state_result(self._reader.call(request), key)

    def get_state_at_version(
        self, agent_id: str, key: str, version: int, namespace: str | None = None
    ) -> StateResult:
        """`key` at `version`; raises NotFoundError if that version never existed. Retried."""
        request = _wire.get_state_at_version(namespace or self.namespace, agent_id, key, version)
        return _wire.state_result(self._reader.call(request), key)

    def update(
        self,
        agent_id: str,
        key: str,
        fn: Callable[[Any], Any],
        *,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> StateResult:
        ns = namespace or self.namespace
        plan = _plans.Update(agent_id, key, fn, self.timeout if timeout is None else timeout)
        while True:
            value, expected = plan.write(self.get_state(agent_id, key, ns))
            tx = self.begin_transaction(namespace=ns)
            tx.write(agent_id, key, value, expected_version=expected)
            try:
                return plan.written(tx.commit())
            except ConflictError as conflict:
                delay = plan.backoff(conflict)
            time.sleep(delay)

    update.__doc__ = _plans.UPDATE_DOC

    def _read_one(self, request: _PointRead) -> _PointAnswer:
        if isinstance(request, pb.GetStateRequest):
            return self._call(self._stub.GetState, request)
        return self._call(self._stub.GetStateAtVersion, request)

    def _read_many(self, requests: Sequence[_PointRead]) -> list[_PointAnswer | StatehouseError]:
        response = self._call(self._stub.ReadBatch, _wire.read_batch(requests))
        outcomes = _wire.read_outcomes(response, len(requests))
        for n, outcome in enumerate(outcomes):
            # Reads left undone because the answer grew too big, or failed
            # with UNAVAILABLE: ask each alone (retried).
            if isinstance(outcome, StatehouseError) and outcome.code in ("ABORTED", "UNAVAILABLE"):
                try:
                    outcomes[n] = self._read_one(requests[n])
                except StatehouseError as exc:
                    outcomes[n] = exc
        return outcomes

    def list_keys(
        self, agent_id: str, namespace: str | None = None, *, at_commit_ts: int | None = None
    ) -> list[str]:
        """The agent's live keys in lexicographic (UTF-8 byte) order, now or right after `at_commit_ts`.

        Fetched a page at a time, every page as of the same commit. Each call is retried.
        """
        plan = _plans.all_keys(namespace or self.namespace, agent_id, at_commit_ts)
        return self._run(plan, self._stub.ListKeys)  # type: ignore[no-any-return]

    def list_keys_page(
        self,
        agent_id: str,
        *,
        limit: int = 1000,
        page_token: str | None = None,
        at_commit_ts: int | None = None,
        namespace: str | None = None,
    ) -> Page[str]:
        """One page of at most `limit` live keys, in order; pass `next_page_token` on for the next.

        The next pages are read as of the first page's commit_ts. Retried.
        """
        request = _wire.list_keys(namespace or self.namespace, agent_id, limit, page_token, at_commit_ts)
        return _wire.keys_page(self._call(self._stub.ListKeys, request))

    def scan_prefix(
        self, agent_id: str, prefix: str, namespace: str | None = None, *, at_commit_ts: int | None = None
    ) -> list[StateResult]:
        """Live keys starting with `prefix`, in order, now or right after `at_commit_ts`; each result
        carries its key. Fetched a page at a time as of one commit. Each call is retried."""
        plan = _plans.all_entries(namespace or self.namespace, agent_id, prefix, at_commit_ts)
        entries, _ = self._run(plan, self._stub.ScanPrefix)
        return entries  # type: ignore[no-any-return]

    def scan_prefix_page(
        self,
        agent_id: str,
        prefix: str = "",
        *,
        limit: int = 1000,
        page_token: str | None = None,
        at_commit_ts: int | None = None,
        namespace: str | None = None,
    ) -> Page[StateResult]:
        """One page of at most `limit` live entries under `prefix` (see `list_keys_page`). Retried."""
        ns = namespace or self.namespace
        request = _wire.scan_prefix(ns, agent_id, prefix, limit, page_token, at_commit_ts)
        return _wire.scan_page(self._call(self._stub.ScanPrefix, request))

    def get_agent_state(
        self, agent_id: str, *, at_commit_ts: int | None = None, namespace: str | None = None
    ) -> AgentState:
        """Every live key of the agent as of one commit: the latest, or `at_commit_ts` (time travel).

        Each call is retried.
        """
        plan = _plans.agent_state(namespace or self.namespace, agent_id, at_commit_ts)
        return self._run(plan, self._stub.ScanPrefix)  # type: ignore[no-any-return]

    def key_history(
        self, agent_id: str, key: str, *, limit: int | None = None, namespace: str | None = None
    ) -> list[KeyVersion]:
        """The key's versions, newest first (deletes as tombstones): all, or the newest `limit`.

        Each call is retried.
        """
        plan = _plans.history(namespace or self.namespace, agent_id, key, limit)
        return self._run(plan, self._stub.KeyHistory)  # type: ignore[no-any-return]

    def key_history_page(
        self,
        agent_id: str,
        key: str,
        *,
        limit: int = 100,
        page_token: str | None = None,
        namespace: str | None = None,
    ) -> Page[KeyVersion]:
        """One page of the key's versions, newest first; the page's commit_ts is its newest version's.

        Retried.
        """
        request = _wire.key_history(namespace or self.namespace, agent_id, key, limit, page_token)
        return _wire.history_page(self._call(self._stub.KeyHistory, request))

    def replay(
        self,
        agent_id: str,
        start_ts: int | None = None,
        end_ts: int | None = None,
        namespace: str | None = None,
    ) -> Iterator[ReplayEvent]:
        """The agent's commits in commit_ts order, [start_ts, end_ts] inclusive.

        A stream broken by UNAVAILABLE resumes after the last commit it
        yielded (retried until the client's timeout passes without progress).
        """
        request = _wire.replay(namespace or self.namespace, agent_id, start_ts, end_ts)
        return self._replay(request)

    def _replay(self, request: pb.ReplayRequest) -> Iterator[ReplayEvent]:
        last: int | None = None
        attempts = None
        while True:
            stream = self._stub.ReplayBatches(_wire.resumed_replay(request, last))
            try:
                for batch in stream:
                    attempts = None  # progress: the retry budget starts again
                    for message in batch.events:
                        event = _wire.replay_event(message, request.namespace, request.agent_id)
                        last = event.commit_ts
                        yield event
                return
            except grpc.RpcError as exc:
                error = from_rpc_error(exc, False)
            finally:
                stream.cancel()
            if _wire.replay_done(request, last):
                return
            attempts = attempts or _retry.Attempts(self.retry, self.timeout)
            delay = attempts.backoff(error)
            if delay is None:
                raise error
            time.sleep(delay)

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
        """Wait until `key` exists and `predicate(value)` is true (default: until it exists).

        Returns the key's state that satisfied it: at once if the current
        one does, else as soon as a commit makes it so (read and watch
        share one commit_ts, so no commit in between is missed). Raises
        DeadlineExceededError after `timeout` seconds (None: wait forever).
        The read and the watch are retried as `get_state` and `watch` are.
        """
        ns = namespace or self.namespace
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            response = self._call(
                self._stub.ScanPrefix, _plans.first_read(ns, agent_id, key), timeout=timeout
            )
        except DeadlineExceededError:
            if timeout is None:
                raise
            raise DeadlineExceededError(
                f"key {key!r} of agent {agent_id!r} did not qualify within {timeout} s"
            ) from None
        state, commit_ts = _plans.first_state(response, key)
        if _plans.satisfies(state, predicate):
            return state
        watch = Watch(self, _wire.watch(ns, agent_id, key_prefix=key, start_ts=commit_ts + 1))
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            watch._subscribe(_retry.RETRIED_CODES, timeout=remaining)  # within the wait's deadline too
        except DeadlineExceededError:
            if remaining is None:
                raise
            raise DeadlineExceededError(
                f"key {key!r} of agent {agent_id!r} did not qualify within {timeout} s"
            ) from None
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
        raise DeadlineExceededError(f"key {key!r} of agent {agent_id!r} did not qualify within {timeout} s")

    # -- snapshots ---------------------------------------------------------------------

    def create_snapshot(self) -> SnapshotInfo:
        """Take an online snapshot (commits continue); returns where it is on the daemon's machine.

        Not retried (a retry could take a second snapshot).
        """
        response = self._call(self._stub.CreateSnapshot, pb.CreateSnapshotRequest(), retry=False)
        return SnapshotInfo(response.path, response.commit_ts)

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; watches and streams of this client end, and later calls
        raise StatehouseError (code CANCELLED)."""
        self._stub = ClosedStub()
        self._channel.close()

    def __enter__(self) -> Statehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
