"""The asyncio client: `AsyncStatehouse` and its `AsyncTransaction`, on grpc.aio.

The same methods as the sync client, from the same plans
(`statehouse._methods`); only the steps are performed differently: awaited,
and each call sent on its own (grpc.aio multiplexes concurrent calls over
one connection).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from statehouse import _fork, _methods, _plans, _retry, _wire
from statehouse._batching import AsyncCombiner
from statehouse._names import DEFAULT_NAMESPACE
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from statehouse._retry import RetryPolicy
from statehouse._session import AsyncLanes
from statehouse._transaction import BEGIN_TRANSACTION_DOC, PendingCommit, TransactionCore
from statehouse._watch import AsyncWatch, ClosedStub, closed_client
from statehouse.client import DEFAULT_ADDR, DEFAULT_TIMEOUT_SECONDS, TRANSACTION_DOC
from statehouse.exceptions import DeadlineExceededError, StatehouseError, from_rpc_error
from statehouse.types import ReplayEvent, StateResult

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
                await self._client._call("Stage", stage, True, retry=False)
            except BaseException as exc:
                if not self._stage_failed(exc):
                    raise
        answered = self._answered()
        if answered is not None:
            return answered
        call = self._commit_call()
        try:
            commit_ts = await self._client._committer.call(call)
        except StatehouseError as exc:
            self._commit_failed(exc)
            raise
        return self._committed(commit_ts)

    async def abort(self) -> None:
        """Discard the transaction. Aborting twice is fine; after a commit it raises TransactionClosedError.

        Retried after UNAVAILABLE. After a commit whose outcome is unknown,
        raises TransactionClosedError if that commit did succeed.
        """
        request = self._abort_request()
        if request is not None:
            await self._client._call("Abort", request, True)
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
    `sessions`, `local`: as for `Statehouse`.
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
        self._channel = grpc.aio.insecure_channel(self.url, options=_wire.channel_options())
        _fork.channel_made()
        self._reach = _retry.Reach(self.url, retry)
        self._grpc_stub = pb_grpc.StatehouseServiceStub(self._channel)
        # Unary calls go as messages of long-lived Session streams (statehouse._session).
        self._lanes: AsyncLanes | None = AsyncLanes(self._channel, local=local) if sessions else None
        # Commits of concurrent tasks share round trips (see statehouse._batching).
        self._committer: AsyncCombiner[PendingCommit, int] = AsyncCombiner(
            self._commit_one, self._commit_many
        )

    @property
    def _stub(self) -> Any:
        """The gRPC stub, refused in a forked child (statehouse._fork)."""
        _fork.check()
        return self._grpc_stub

    def _closed(self) -> bool:
        """Whether `close` was called (a call it ended failed with CANCELLED)."""
        return isinstance(self._grpc_stub, ClosedStub)

    # -- performing the steps of plans (statehouse._methods) ---------------------------

    async def _drive(self, plan: _methods.Plan[R]) -> R:
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
                    answer = await self._attempt(step.rpc, step.request, step.in_txn, step.timeout)
                elif isinstance(step, _methods.Sleep):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, _methods.Commit):
                    answer = await step.transaction.commit()
                else:
                    raise TypeError(f"a unary plan yielded {step!r}")
            except StatehouseError as exc:
                error = exc

    async def _attempt(self, rpc: str, request: Any, in_txn: bool, timeout: float) -> Any:
        """One call of a unary RPC; its failure as a StatehouseError."""
        try:
            response = await self._send(rpc, request, timeout)
        except grpc.RpcError as exc:
            raise self._reach.failed(from_rpc_error(exc, in_txn, self._closed())) from None
        self._reach.answered()
        return response

    async def _send(self, rpc: str, request: Any, timeout: float) -> Any:
        """One call of a unary RPC, on a session if one is free."""
        _fork.check()
        response = None if self._lanes is None else await self._lanes.call(rpc, request, timeout)
        if response is None:
            response = await getattr(self._stub, rpc)(request, timeout=timeout)
        return response

    async def _drive_stream(self, plan: _methods.Plan[None]) -> AsyncIterator[Any]:
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
                        message = await stream.read()
                        answer = None if message is grpc.aio.EOF else message
                    elif isinstance(step, _methods.Open):
                        if stream is not None:
                            stream.cancel()
                        stream = getattr(self._stub, step.rpc)(step.request)
                    elif isinstance(step, _methods.Sleep):
                        await asyncio.sleep(step.seconds)
                    else:
                        raise TypeError(f"a stream plan yielded {step!r}")
                except grpc.aio.AioRpcError as exc:
                    error = from_rpc_error(exc, False, self._closed())
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
                    raise closed_client() from None  # not our task: the client was closed
        finally:
            if stream is not None:
                stream.cancel()
            plan.close()

    async def _call(
        self,
        rpc: str,
        request: Any,
        in_txn: bool = False,
        *,
        retry: bool = True,
        renew: Callable[[], bool] | None = None,
    ) -> Any:
        """Call `rpc` with the retries of `statehouse._methods.call`. The first attempt is
        made here, without a plan: a call that succeeds at once (almost every commit) costs
        no generator."""
        attempts = _retry.Attempts(self.retry if retry else None, self.timeout)
        try:
            return await self._attempt(rpc, request, in_txn, attempts.remaining())
        except StatehouseError as exc:
            failed = exc
        return await self._drive(
            _methods.call(
                self, rpc, request, in_txn=in_txn, retry=retry, renew=renew, attempts=attempts, failed=failed
            )
        )

    async def _commit_one(self, call: PendingCommit) -> int:
        response = await self._call("Commit", call.request, True, retry=call.retryable, renew=call.renew)
        return int(response.commit_ts)

    async def _commit_many(self, calls: Sequence[PendingCommit]) -> list[int | StatehouseError]:
        return await self._drive(_methods.commit_batch(self, calls))

    # -- service -------------------------------------------------------------

    health = _methods.awaiting(_methods.health)
    version = _methods.awaiting(_methods.version)
    http_addr = _methods.awaiting(_methods.http_addr)

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

    get_state = _methods.awaiting(_methods.get_state)
    get_state_at_version = _methods.awaiting(_methods.get_state_at_version)
    get_many = _methods.awaiting(_methods.get_many)
    update = _methods.awaiting(_methods.update)
    list_keys = _methods.awaiting(_methods.list_keys)
    list_keys_page = _methods.awaiting(_methods.list_keys_page)
    scan_prefix = _methods.awaiting(_methods.scan_prefix)
    scan_prefix_page = _methods.awaiting(_methods.scan_prefix_page)
    get_agent_state = _methods.awaiting(_methods.get_agent_state)
    list_agents = _methods.awaiting(_methods.list_agents)
    key_history = _methods.awaiting(_methods.key_history)
    key_history_page = _methods.awaiting(_methods.key_history_page)

    def replay(
        self,
        agent_id: str,
        start_ts: int | None = None,
        end_ts: int | None = None,
        namespace: str | None = None,
    ) -> AsyncIterator[ReplayEvent]:
        return self._drive_stream(_methods.replay(self, agent_id, start_ts, end_ts, namespace))

    replay.__doc__ = (_methods.replay.__doc__ or "").replace(
        " inclusive.", " inclusive: `async for` over it.", 1
    )

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
        ns = namespace or self.namespace
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            async with asyncio.timeout_at(None if deadline is None else _loop_time(deadline)):
                state, commit_ts = await self._drive(_methods.first_state(self, agent_id, key, ns, None))
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

    wait_for.__doc__ = _plans.WAIT_FOR_DOC

    # -- snapshots ---------------------------------------------------------------------

    create_snapshot = _methods.awaiting(_methods.create_snapshot)

    # -- forgetting ------------------------------------------------------------------

    purge = _methods.awaiting(_methods.purge)
    compact = _methods.awaiting(_methods.compact)

    # -- lifecycle -------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection; watches and streams of this client end, and later calls
        raise StatehouseError (code CANCELLED)."""
        self._grpc_stub = ClosedStub()
        if _fork.forked():  # made before a fork: its streams and channel are the parent's
            self._lanes = None
            return
        if self._lanes is not None:
            lanes, self._lanes = self._lanes, None
            await lanes.aclose()
        await self._channel.close()

    async def __aenter__(self) -> AsyncStatehouse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _loop_time(monotonic_deadline: float) -> float:
    """A time.monotonic() deadline on the running loop's clock."""
    return asyncio.get_running_loop().time() + (monotonic_deadline - time.monotonic())
