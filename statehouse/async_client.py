"""The asyncio client: `AsyncStatehouse` and its `AsyncTransaction`, on grpc.aio.

The same methods and arguments as the sync client, built on the same pure
code; only the calls differ (awaited, and each sent on its own: grpc.aio
multiplexes concurrent calls over one connection).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from statehouse import _plans, _retry, _wire
from statehouse._names import DEFAULT_NAMESPACE
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from statehouse._retry import RetryPolicy
from statehouse._transaction import BEGIN_TRANSACTION_DOC, TransactionCore
from statehouse._watch import AsyncWatch, ClosedStub, closed_client
from statehouse.client import DEFAULT_ADDR, DEFAULT_TIMEOUT_SECONDS, TRANSACTION_DOC
from statehouse.exceptions import ConflictError, DeadlineExceededError, StatehouseError, from_rpc_error
from statehouse.types import AgentState, KeyVersion, Page, ReplayEvent, SnapshotInfo, StateResult

__all__ = ["AsyncStatehouse", "AsyncTransaction"]

R = TypeVar("R")


class AsyncTransaction(TransactionCore):
    __doc__ = (
        "A transaction (async): `write`, `delete` and `expect` only buffer; `commit` and "
        "`abort` are coroutines; `async with` commits on a clean exit, aborts on an exception. "
        "Chunks past 1 MiB are sent ahead when it commits." + TRANSACTION_DOC
    )

    def __init__(
        self,
        client: AsyncStatehouse,
        txn_id: str,
        namespace: str,
        timeout_ms: int | None = None,
        *,
        opened: bool = True,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(txn_id, namespace, timeout_ms, opened=opened, idempotency_key=idempotency_key)
        self._client = client

    async def commit(self) -> int:
        """Commit atomically; returns the commit_ts once the commit is durable.

        Raises ConflictError if a condition failed (nothing written),
        TransactionExpiredError past the timeout, TransactionClosedError
        after commit/abort, and otherwise a TransactionError for the status
        (UnavailableError too once retries ran out: the outcome is then
        unknown, `abort()` tells). Retried as the class docstring says.
        """
        self._check_open()
        while (stage := self._next_stage()) is not None:
            try:
                await self._client._call(self._client._stub.Stage, stage, True, retry=False)
            except BaseException as exc:
                if not self._stage_failed(exc):
                    raise
        answered = self._answered()
        if answered is not None:
            return answered
        call = self._commit_call()
        try:
            response = await self._client._call(
                self._client._stub.Commit, call.request, True, retry=call.retryable, renew=call.renew
            )
        except StatehouseError as exc:
            self._commit_failed(exc)
            raise
        return self._committed(response.commit_ts)

    async def abort(self) -> None:
        """Discard the transaction. Aborting twice is fine; after a commit it raises TransactionClosedError.

        Retried after UNAVAILABLE. After a commit whose outcome is unknown,
        raises TransactionClosedError if that commit did succeed.
        """
        request = self._abort_request()
        if request is not None:
            await self._client._call(self._client._stub.Abort, request, True)
        self._aborted()

    async def __aenter__(self) -> AsyncTransaction:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        action = self._exit_action(exc_type is not None)
        if action == "commit":
            await self.commit()
        elif action == "abort":
            await self.abort()
        elif action == "discard":
            try:
                await self.abort()
            except StatehouseError:
                pass


class AsyncStatehouse:
    """A connection to a Statehouse daemon for asyncio code: `Statehouse`'s methods as coroutines.

    `url` defaults to $STATEHOUSE_ADDR, then "localhost:50051". `namespace`
    is the default for every call that does not name one. `timeout` bounds
    each call, in seconds, retries included. `retry` says how calls that
    failed with UNAVAILABLE are retried (None: never); each method's
    docstring says whether it is. Every method raises a StatehouseError
    subclass for a failure (see statehouse.exceptions). Use it from one
    event loop: `async with AsyncStatehouse() as client`, or `await client.close()`.
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
        self._channel = grpc.aio.insecure_channel(self.url, options=_wire.channel_options())
        self._stub = pb_grpc.StatehouseServiceStub(self._channel)

    async def _call(
        self,
        method: Callable[..., Any],
        request: Any,
        in_txn: bool = False,
        *,
        retry: bool = True,
        renew: Callable[[], bool] | None = None,
    ) -> Any:
        """Call `method`, retrying after UNAVAILABLE if `retry` (and `renew()` agrees) until the deadline."""
        attempts = _retry.Attempts(self.retry if retry else None, self.timeout)
        while True:
            try:
                return await method(request, timeout=attempts.remaining())
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc, in_txn)
            delay = attempts.backoff(error)
            if delay is None or (renew is not None and not renew()):
                raise attempts.cause(error)
            await asyncio.sleep(delay)

    async def _run(self, plan: _plans.Plan, method: Callable[..., Any]) -> Any:
        """Drive a plan of several calls (see statehouse._plans); each call is retried."""
        request = next(plan)
        while True:
            try:
                request = plan.send(await self._call(method, request))
            except StopIteration as done:
                return done.value

    # -- service -------------------------------------------------------------

    async def health(self) -> str:
        """ "ok" when the daemon is serving. Retried."""
        response = await self._call(self._stub.Health, pb.HealthRequest())
        return str(response.status)

    async def version(self) -> tuple[str, str]:
        """(version, git_sha) of the daemon. Retried."""
        response = await self._call(self._stub.Version, pb.VersionRequest())
        return response.version, response.git_sha

    # -- transactions ------------------------------------------------------------

    def begin_transaction(
        self,
        timeout_ms: int | None = None,
        namespace: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> AsyncTransaction:
        """Start a transaction owned by `namespace` (default: the client's): no round trip, no coroutine."""
        txn_id, ns = _wire.new_transaction(namespace or self.namespace, timeout_ms, idempotency_key)
        return AsyncTransaction(self, txn_id, ns, timeout_ms, opened=False, idempotency_key=idempotency_key)

    # The rest of the docstring (idempotency keys) is shared by both clients.
    begin_transaction.__doc__ = (begin_transaction.__doc__ or "") + BEGIN_TRANSACTION_DOC

    # -- reads ---------------------------------------------------------------------

    async def get_state(self, agent_id: str, key: str, namespace: str | None = None) -> StateResult:
        """The latest value of `key`; a missing or deleted key has exists=False. Retried."""
        request = _wire.get_state(namespace or self.namespace, agent_id, key)
        return _wire.state_result(await self._call(self._stub.GetState, request), key)

    async def get_state_at_version(
        self, agent_id: str, key: str, version: int, namespace: str | None = None
    ) -> StateResult:
        """`key` at `version`; raises NotFoundError if that version never existed. Retried."""
        request = _wire.get_state_at_version(namespace or self.namespace, agent_id, key, version)
        return _wire.state_result(await self._call(self._stub.GetStateAtVersion, request), key)

    async def update(
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
            value, expected = plan.write(await self.get_state(agent_id, key, ns))
            tx = self.begin_transaction(namespace=ns)
            tx.write(agent_id, key, value, expected_version=expected)
            try:
                return plan.written(await tx.commit())
            except ConflictError as conflict:
                delay = plan.backoff(conflict)
            await asyncio.sleep(delay)

    update.__doc__ = _plans.UPDATE_DOC

    async def list_keys(
        self, agent_id: str, namespace: str | None = None, *, at_commit_ts: int | None = None
    ) -> list[str]:
        """The agent's live keys in lexicographic (UTF-8 byte) order, now or right after `at_commit_ts`.

        Fetched a page at a time, every page as of the same commit. Each call is retried.
        """
        plan = _plans.all_keys(namespace or self.namespace, agent_id, at_commit_ts)
        return await self._run(plan, self._stub.ListKeys)  # type: ignore[no-any-return]

    async def list_keys_page(
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
        return _wire.keys_page(await self._call(self._stub.ListKeys, request))

    async def scan_prefix(
        self, agent_id: str, prefix: str, namespace: str | None = None, *, at_commit_ts: int | None = None
    ) -> list[StateResult]:
        """Live keys starting with `prefix`, in order, now or right after `at_commit_ts`; each result
        carries its key. Fetched a page at a time as of one commit. Each call is retried."""
        plan = _plans.all_entries(namespace or self.namespace, agent_id, prefix, at_commit_ts)
        entries, _ = await self._run(plan, self._stub.ScanPrefix)
        return entries  # type: ignore[no-any-return]

    async def scan_prefix_page(
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
        return _wire.scan_page(await self._call(self._stub.ScanPrefix, request))

    async def get_agent_state(
        self, agent_id: str, *, at_commit_ts: int | None = None, namespace: str | None = None
    ) -> AgentState:
        """Every live key of the agent as of one commit: the latest, or `at_commit_ts` (time travel).

        Each call is retried.
        """
        plan = _plans.agent_state(namespace or self.namespace, agent_id, at_commit_ts)
        return await self._run(plan, self._stub.ScanPrefix)  # type: ignore[no-any-return]

    async def key_history(
        self, agent_id: str, key: str, *, limit: int | None = None, namespace: str | None = None
    ) -> list[KeyVersion]:
        """The key's versions, newest first (deletes as tombstones): all, or the newest `limit`.

        Each call is retried.
        """
        plan = _plans.history(namespace or self.namespace, agent_id, key, limit)
        return await self._run(plan, self._stub.KeyHistory)  # type: ignore[no-any-return]

    async def key_history_page(
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
        return _wire.history_page(await self._call(self._stub.KeyHistory, request))

    def replay(
        self,
        agent_id: str,
        start_ts: int | None = None,
        end_ts: int | None = None,
        namespace: str | None = None,
    ) -> AsyncIterator[ReplayEvent]:
        """The agent's commits in commit_ts order, [start_ts, end_ts] inclusive: `async for` over it.

        A stream broken by UNAVAILABLE resumes after the last commit it
        yielded (retried until the client's timeout passes without progress).
        """
        request = _wire.replay(namespace or self.namespace, agent_id, start_ts, end_ts)
        return self._replay(request)

    async def _replay(self, request: pb.ReplayRequest) -> AsyncIterator[ReplayEvent]:
        last: int | None = None
        attempts = None
        while True:
            call = self._stub.ReplayBatches(_wire.resumed_replay(request, last))
            try:
                async for batch in call:
                    attempts = None  # progress: the retry budget starts again
                    for message in batch.events:
                        event = _wire.replay_event(message, request.namespace, request.agent_id)
                        last = event.commit_ts
                        yield event
                return
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc, False)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                raise closed_client() from None  # not our task: the client was closed
            finally:
                call.cancel()
            if _wire.replay_done(request, last):
                return
            attempts = attempts or _retry.Attempts(self.retry, self.timeout)
            delay = attempts.backoff(error)
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    # -- watching ----------------------------------------------------------------------

    async def watch(
        self,
        agent_id: str | None = None,
        *,
        key_prefix: str = "",
        start_ts: int | None = None,
        namespace: str | None = None,
    ) -> AsyncWatch:
        """Follow commits of `agent_id` (None: every agent of the namespace) on keys under `key_prefix`.

        Without `start_ts`, delivers commits made after this call returns;
        with it, replays the history from start_ts and then goes live, with
        no gap and no duplicate. Returns once the daemon has registered the
        watch. Subscribing is retried after UNAVAILABLE; see `AsyncWatch`
        for how it re-subscribes later.
        """
        watch = AsyncWatch(self, _wire.watch(namespace or self.namespace, agent_id, key_prefix, start_ts))
        await watch._subscribe(_retry.RETRIED_CODES)
        return watch

    async def wait_for(
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
            async with asyncio.timeout_at(None if deadline is None else _loop_time(deadline)):
                response = await self._call(self._stub.ScanPrefix, _plans.first_read(ns, agent_id, key))
                state, commit_ts = _plans.first_state(response, key)
                if _plans.satisfies(state, predicate):
                    return state
                watch = await self.watch(agent_id, key_prefix=key, start_ts=commit_ts + 1, namespace=ns)
                async with watch:
                    async for event in watch:
                        changed = _plans.key_state(event, key)
                        if changed is not None and _plans.satisfies(changed, predicate):
                            return changed
        except TimeoutError:
            pass
        raise DeadlineExceededError(f"key {key!r} of agent {agent_id!r} did not qualify within {timeout} s")

    # -- snapshots ---------------------------------------------------------------------

    async def create_snapshot(self) -> SnapshotInfo:
        """Take an online snapshot (commits continue); returns where it is on the daemon's machine.

        Not retried (a retry could take a second snapshot).
        """
        response = await self._call(self._stub.CreateSnapshot, pb.CreateSnapshotRequest(), retry=False)
        return SnapshotInfo(response.path, response.commit_ts)

    # -- lifecycle -------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection; watches and streams of this client end, and later calls
        raise StatehouseError (code CANCELLED)."""
        self._stub = ClosedStub()
        await self._channel.close()

    async def __aenter__(self) -> AsyncStatehouse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _loop_time(monotonic_deadline: float) -> float:
    """A time.monotonic() deadline on the running loop's clock."""
    return asyncio.get_running_loop().time() + (monotonic_deadline - time.monotonic())
