"""Every client method written once, as a plan; `Statehouse` and `AsyncStatehouse` only do its I/O.

A plan is a generator that builds requests, reads answers, pages and
retries, without doing any I/O itself. It yields steps and is sent each
step's answer (or has the step's StatehouseError thrown in), and returns the
method's result:

    Attempt(rpc, request)  one call of a unary RPC  -> its response
    Sleep(seconds)         a retry's backoff         -> None
    Commit(transaction)    commit what the plan began -> the commit_ts
    Open(rpc, request)     start a server stream     -> None (the client holds it)
    Next()                 the stream's next message -> it, or None at its end
    Emit(item)             (stream plans) hand `item` to the caller

`blocking` and `awaiting` turn a plan function into a method of the sync
or the async client: the same signature, docstring and checks, the return
type of the plan's result (a coroutine of it for the async client). Each
client has a `_drive` (and `_drive_stream`) that performs the steps its own
way: blocking gRPC calls and `time.sleep`, or awaited grpc.aio calls and
`asyncio.sleep`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from statehouse import _plans, _retry, _wire
from statehouse._proto import statehouse_pb2 as pb
from statehouse.exceptions import ConflictError, StatehouseError, invalid
from statehouse.types import AgentState, KeyVersion, Page, SnapshotInfo, StateResult, StateSet

# The most reads one ReadBatch may carry (the daemon's MAX_BATCH_READS).
MAX_BATCH_READS = 4096

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt at a unary call: `rpc` is the method's name on the stub."""

    rpc: str
    request: Any
    in_txn: bool
    timeout: float


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Commit:
    transaction: Any


@dataclass(frozen=True, slots=True)
class Open:
    """Start a server-streaming call (it replaces the stream the plan had open, if any)."""

    rpc: str
    request: Any


@dataclass(frozen=True, slots=True)
class Next:
    pass


@dataclass(frozen=True, slots=True)
class Emit:
    item: Any


Step = Attempt | Sleep | Commit | Open | Next | Emit
Plan = Generator[Step, Any, R]


class Client(Protocol):
    """What plans read of a client."""

    namespace: str
    timeout: float
    retry: _retry.RetryPolicy | None

    def begin_transaction(
        self,
        timeout_ms: int | None = None,
        namespace: str | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Any: ...


def advance(plan: Generator[Any, Any, Any], answer: Any, error: StatehouseError | None) -> tuple[bool, Any]:
    """Hand a plan the last step's answer (or throw its error in): (True, the plan's result)
    once it has returned, else (False, its next step)."""
    try:
        return False, plan.send(answer) if error is None else plan.throw(error)
    except StopIteration as done:
        return True, done.value


# -- making methods of plans -----------------------------------------------------------------------------

_PLAN_RESULT = re.compile(r"^Plan\[(?P<result>.*)\]$", re.S)


def _signature(plan: Callable[..., Any]) -> inspect.Signature:
    """The plan's signature with its result as the return annotation ("Plan[X]" -> "X")."""
    signature = inspect.signature(plan)
    returns = signature.return_annotation
    if isinstance(returns, str) and (match := _PLAN_RESULT.match(returns)):
        returns = match["result"]
    return signature.replace(return_annotation=returns)


def blocking(plan: Callable[Concatenate[Any, P], Plan[R]]) -> Callable[Concatenate[Any, P], R]:
    """A method of the sync client that runs `plan` with blocking calls."""

    @functools.wraps(plan)
    def method(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._drive(plan(self, *args, **kwargs))  # type: ignore[no-any-return]

    method.__signature__ = _signature(plan)  # type: ignore[attr-defined]
    return method


def awaiting(
    plan: Callable[Concatenate[Any, P], Plan[R]],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]:
    """A coroutine method of the async client that runs `plan` with awaited calls."""

    @functools.wraps(plan)
    async def method(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._drive(plan(self, *args, **kwargs))  # type: ignore[no-any-return]

    method.__signature__ = _signature(plan)  # type: ignore[attr-defined]
    return method


# -- the steps every plan is made of --------------------------------------------------------------------


def call(
    client: Client,
    rpc: str,
    request: Any,
    *,
    in_txn: bool = False,
    retry: bool = True,
    renew: Callable[[], bool] | None = None,
    timeout: float | None = None,
    attempts: _retry.Attempts | None = None,
    failed: StatehouseError | None = None,
) -> Plan[Any]:
    """Call `rpc`, retrying after UNAVAILABLE if `retry` (and `renew()` agrees) until the
    deadline: the client's timeout, or `timeout` seconds if that is shorter.

    A client that made the first attempt itself (a commit's fast path: no plan unless
    it fails) passes its `attempts` schedule and the error it `failed` with; the plan
    goes on from there as if it had made that attempt.
    """
    if attempts is None:
        limit = client.timeout if timeout is None else min(timeout, client.timeout)
        attempts = _retry.Attempts(client.retry if retry else None, limit)
    error = failed
    while True:
        if error is None:
            try:
                return (yield Attempt(rpc, request, in_txn, attempts.remaining()))
            except StatehouseError as exc:
                error = exc
        delay = attempts.backoff(error)
        if delay is None or (renew is not None and not renew()):
            raise attempts.cause(error)
        yield Sleep(delay)
        error = None


def commit_batch(client: Client, calls: Sequence[Any]) -> Plan[list[int | StatehouseError]]:
    """Commit several transactions in one CommitBatch call: each gets its commit_ts or its own
    StatehouseError. A commit that opened its transaction (`calls[n].retryable`) is sent again
    after UNAVAILABLE, until the deadline: the daemon answers one that did commit with its
    first commit_ts. `calls` are `statehouse._transaction.PendingCommit`s."""
    answers: list[int | StatehouseError] = [0] * len(calls)
    pending: Sequence[int] = range(len(calls))
    attempts = _retry.Attempts(client.retry, client.timeout)
    while True:
        batch = pb.CommitBatchRequest(commits=[calls[n].request for n in pending])
        outcomes: list[int | StatehouseError]
        try:
            response = yield Attempt("CommitBatch", batch, True, attempts.remaining())
            outcomes = _wire.commit_outcomes(response, len(pending))
        except StatehouseError as exc:
            outcomes = [exc, *(copy.copy(exc) for _ in pending[1:])]
        outcomes = [attempts.cause(o) if isinstance(o, StatehouseError) else o for o in outcomes]
        unavailable: list[StatehouseError] = []
        retry = []
        for n, outcome in zip(pending, outcomes, strict=True):
            answers[n] = outcome
            if (
                isinstance(outcome, StatehouseError)
                and calls[n].retryable
                and outcome.code in _retry.RETRIED_CODES
            ):
                unavailable.append(outcome)
                retry.append(n)
        delay = attempts.backoff(unavailable[0]) if unavailable else None
        if delay is None:
            return answers
        yield Sleep(delay)
        pending = [n for n in retry if calls[n].renew()]
        if not pending:
            return answers


def _pages(
    client: Client, rpc: str, first: Any, limit: int | None, decode: Callable[[Any], Page[T]]
) -> Plan[Page[T]]:
    """Every item a paged listing gives (at most `limit`), page by page, all as of the first
    page's commit_ts: one Page holding them all (no token when complete)."""
    items: list[T] = []
    request = first
    commit_ts: int | None = None
    while True:
        page = decode((yield from call(client, rpc, request)))
        items.extend(page.items)
        if commit_ts is None:
            commit_ts = page.commit_ts
        if page.next_page_token is None or (limit is not None and len(items) >= limit):
            return Page(items[:limit] if limit is not None else items, page.next_page_token, commit_ts)
        request.page_token = page.next_page_token
        if limit is not None:
            request.limit = min(_plans.PAGE_SIZE, limit - len(items))


def _first_limit(limit: int | None) -> int:
    """The first page's size for a listing of at most `limit` items (None: all)."""
    if limit is None:
        return _plans.PAGE_SIZE
    if not _wire.whole(limit) or limit < 1:
        raise invalid(f"limit must be a whole number >= 1 or None, got {limit!r}", False)
    return min(_plans.PAGE_SIZE, limit)


# -- service -------------------------------------------------------------------------------------------


def health(self: Client, /) -> Plan[str]:
    """ "ok" when the daemon is serving. Retried."""
    response = yield from call(self, "Health", pb.HealthRequest())
    return str(response.status)


def version(self: Client, /) -> Plan[tuple[str, str]]:
    """(version, git_sha) of the daemon. Retried."""
    response = yield from call(self, "Version", pb.VersionRequest())
    return str(response.version), str(response.git_sha)


def http_addr(self: Client, /) -> Plan[str | None]:
    """host:port of the daemon's HTTP endpoint (/healthz, /readyz, /actors, /metrics), or None
    if it runs without one (or is too old to say). Retried."""
    response = yield from call(self, "Version", pb.VersionRequest())
    return str(response.http_addr) or None


def purge(self: Client, /, agent_id: str, *, key_prefix: str = "", namespace: str | None = None) -> Plan[int]:
    """Remove the agent's keys starting with `key_prefix` (all of them with "") and their
    history, atomically; returns the commit_ts of the purge.

    Their state, every version and their operations in earlier log events
    go; the log gains a purge event (the agent and prefix, no value) that
    replay and watch deliver as an Operation with `purged` set. A key
    written again starts at version 1. The bytes leave the daemon's data
    files once they are compacted: in the background right after the purge,
    or when `compact()` returns. Snapshots taken before keep them. Retried
    (a repeat purges nothing more, and logs one more purge event).
    """
    request = pb.PurgeRequest(
        namespace=_wire.names(namespace or self.namespace, agent_id), agent_id=agent_id, key_prefix=key_prefix
    )
    _wire.check_prefix(key_prefix)
    response = yield from call(self, "Purge", request)
    return int(response.commit_ts)


def compact(self: Client, /) -> Plan[float]:
    """Apply the daemon's retention policy now (if it has one), then rewrite its data files so
    that what was purged or let go leaves every one of them; returns the seconds it took.
    Commits go on meanwhile.

    Retried.
    """
    response = yield from call(self, "Compact", pb.CompactRequest())
    return float(response.duration_ms) / 1000


def create_snapshot(self: Client, /) -> Plan[SnapshotInfo]:
    """Take an online snapshot (commits continue); returns where it is on the daemon's machine.

    Not retried (a retry could take a second snapshot).
    """
    response = yield from call(self, "CreateSnapshot", pb.CreateSnapshotRequest(), retry=False)
    return SnapshotInfo(response.path, response.commit_ts)


# -- point reads ---------------------------------------------------------------------------------------


def get_state(self: Client, /, agent_id: str, key: str, namespace: str | None = None) -> Plan[StateResult]:
    """The latest value of `key` (JSON, or bytes if bytes were written); a missing or deleted key
    has exists=False. Retried."""
    request = _wire.get_state(namespace or self.namespace, agent_id, key)
    return _wire.state_result((yield from call(self, "GetState", request)), key)


def get_state_at_version(
    self: Client, /, agent_id: str, key: str, version: int, namespace: str | None = None
) -> Plan[StateResult]:
    """`key` at `version`; raises NotFoundError if that version never existed. Retried."""
    request = _wire.get_state_at_version(namespace or self.namespace, agent_id, key, version)
    return _wire.state_result((yield from call(self, "GetStateAtVersion", request)), key)


def get_many(self: Client, /, keys: list[tuple[str, str]], namespace: str | None = None) -> Plan[StateSet]:
    """The latest state of each (agent_id, key) in one round trip, all as of one commit.

    Results come in the order asked (repeats included), each carrying its
    key; a missing or deleted key has exists=False. `commit_ts` of the
    answer is the commit they are all as of: no commit is seen in part.
    An answer too large for one message is completed in further calls as
    of the same commit. Each call is retried.
    """
    ns = namespace or self.namespace
    requests = _wire.get_many(ns, keys)
    if not requests:
        response = yield from call(self, "ReadBatch", pb.ReadBatchRequest())
        return StateSet(int(response.commit_ts), [])
    results: list[StateResult | None] = [None] * len(requests)
    pending = list(range(len(requests)))
    at: int | None = None
    while pending:
        asked = pending[:MAX_BATCH_READS]  # the daemon's bound on one ReadBatch
        batch = _wire.read_batch([requests[n] for n in asked], at)
        response = yield from call(self, "ReadBatch", batch)
        if at is None:
            at = int(response.commit_ts)
        outcomes = _wire.read_outcomes(response, len(asked))
        undone = []
        for n, outcome in zip(asked, outcomes, strict=True):
            if isinstance(outcome, StatehouseError):
                if outcome.code != "ABORTED":  # ABORTED: the answer was full; asked again below
                    raise outcome
                undone.append(n)
            else:
                results[n] = _wire.state_result(outcome, requests[n].key)
        if len(undone) == len(asked):
            raise StatehouseError("the daemon answered none of the reads of a get_many (each too large?)")
        pending = undone + pending[len(asked) :]
    return StateSet(at or 0, [r for r in results if r is not None])


def update(
    self: Client,
    /,
    agent_id: str,
    key: str,
    fn: Callable[[Any], Any],
    *,
    namespace: str | None = None,
    timeout: float | None = None,
) -> Plan[StateResult]:
    ns = namespace or self.namespace
    plan = _plans.Update(agent_id, key, fn, self.timeout if timeout is None else timeout)
    while True:
        value, expected = plan.write((yield from get_state(self, agent_id, key, ns)))
        tx = self.begin_transaction(namespace=ns)
        tx.write(agent_id, key, value, expected_version=expected)
        try:
            return plan.written((yield Commit(tx)))
        except ConflictError as conflict:
            delay = plan.backoff(conflict)
        yield Sleep(delay)


update.__doc__ = _plans.UPDATE_DOC


# -- listings ------------------------------------------------------------------------------------------

LISTING_DOC = """

    Keys come in UTF-8 byte order, or descending with `reverse=True`.
    `limit` caps how many are returned (None: all); `start_after` starts
    after that key in the listing's order (below it when reversed), so
    passing the last key of one call continues where it stopped. The newest
    `limit` keys of a prefix (`reverse=True, limit=N`) cost the same however
    many keys the prefix holds. Fetched a page at a time, every page as of
    the same commit. Each call is retried.
"""


def list_keys(
    self: Client,
    /,
    agent_id: str,
    namespace: str | None = None,
    *,
    at_commit_ts: int | None = None,
    prefix: str = "",
    reverse: bool = False,
    limit: int | None = None,
    start_after: str | None = None,
) -> Plan[list[str]]:
    """The agent's live keys (those starting with `prefix`), now or right after `at_commit_ts`."""
    ns = namespace or self.namespace
    request = _wire.list_keys(
        ns,
        agent_id,
        _first_limit(limit),
        None,
        at_commit_ts,
        prefix=prefix,
        reverse=reverse,
        start_after=start_after,
    )
    page = yield from _pages(self, "ListKeys", request, limit, _wire.keys_page)
    return page.items


list_keys.__doc__ = (list_keys.__doc__ or "") + LISTING_DOC


def list_keys_page(
    self: Client,
    /,
    agent_id: str,
    *,
    limit: int = 1000,
    page_token: str | None = None,
    at_commit_ts: int | None = None,
    namespace: str | None = None,
    prefix: str = "",
    reverse: bool = False,
    start_after: str | None = None,
) -> Plan[Page[str]]:
    """One page of at most `limit` live keys, in order; pass `next_page_token` on for the next.

    The next pages are read as of the first page's commit_ts, with the same
    `prefix`, `reverse` and `start_after`. Retried.
    """
    ns = namespace or self.namespace
    request = _wire.list_keys(
        ns, agent_id, limit, page_token, at_commit_ts, prefix=prefix, reverse=reverse, start_after=start_after
    )
    return _wire.keys_page((yield from call(self, "ListKeys", request)))


def scan_prefix(
    self: Client,
    /,
    agent_id: str,
    prefix: str,
    namespace: str | None = None,
    *,
    at_commit_ts: int | None = None,
    reverse: bool = False,
    limit: int | None = None,
    start_after: str | None = None,
) -> Plan[list[StateResult]]:
    """Live keys starting with `prefix` with their values, now or right after `at_commit_ts`;
    each result carries its key."""
    ns = namespace or self.namespace
    request = _wire.scan_prefix(
        ns,
        agent_id,
        prefix,
        _first_limit(limit),
        None,
        at_commit_ts,
        reverse=reverse,
        start_after=start_after,
    )
    page = yield from _pages(self, "ScanPrefix", request, limit, _wire.scan_page)
    return page.items


scan_prefix.__doc__ = (scan_prefix.__doc__ or "") + LISTING_DOC


def scan_prefix_page(
    self: Client,
    /,
    agent_id: str,
    prefix: str = "",
    *,
    limit: int = 1000,
    page_token: str | None = None,
    at_commit_ts: int | None = None,
    namespace: str | None = None,
    reverse: bool = False,
    start_after: str | None = None,
) -> Plan[Page[StateResult]]:
    """One page of at most `limit` live entries under `prefix` (see `list_keys_page`). Retried."""
    ns = namespace or self.namespace
    request = _wire.scan_prefix(
        ns, agent_id, prefix, limit, page_token, at_commit_ts, reverse=reverse, start_after=start_after
    )
    return _wire.scan_page((yield from call(self, "ScanPrefix", request)))


def get_agent_state(
    self: Client, /, agent_id: str, *, at_commit_ts: int | None = None, namespace: str | None = None
) -> Plan[AgentState]:
    """Every live key of the agent as of one commit: the latest, or `at_commit_ts` (time travel).

    Each call is retried.
    """
    request = _wire.scan_prefix(
        namespace or self.namespace, agent_id, "", _plans.PAGE_SIZE, None, at_commit_ts
    )
    page = yield from _pages(self, "ScanPrefix", request, None, _wire.scan_page)
    return AgentState(page.commit_ts, {entry.key: entry for entry in page.items if entry.key is not None})


def list_agents(
    self: Client,
    /,
    namespace: str | None = None,
    *,
    prefix: str = "",
    limit: int | None = None,
    start_after: str | None = None,
    reverse: bool = False,
) -> Plan[list[str]]:
    """The agents of the namespace that hold at least one live key, in UTF-8 byte order of
    agent_id (descending with `reverse=True`).

    `prefix` keeps the agent ids that start with it; `limit` and
    `start_after` work as for `list_keys`. Only the agents are read, never
    their keys' values. Fetched a page at a time, each page as of the latest
    commit then (agents have no time travel); each call is retried.
    """
    request = _wire.list_agents(
        namespace or self.namespace, prefix, _first_limit(limit), start_after, reverse=reverse
    )
    page = yield from _pages(self, "ListAgents", request, limit, _wire.agents_page)
    return page.items


def key_history(
    self: Client, /, agent_id: str, key: str, *, limit: int | None = None, namespace: str | None = None
) -> Plan[list[KeyVersion]]:
    """The key's versions, newest first (deletes as tombstones): all, or the newest `limit`.

    Each call is retried.
    """
    ns = namespace or self.namespace
    first = _wire.key_history(ns, agent_id, key, _first_limit(limit))
    page = yield from _pages(self, "KeyHistory", first, limit, _wire.history_page)
    return page.items


def key_history_page(
    self: Client,
    /,
    agent_id: str,
    key: str,
    *,
    limit: int = 100,
    page_token: str | None = None,
    namespace: str | None = None,
) -> Plan[Page[KeyVersion]]:
    """One page of the key's versions, newest first; the page's commit_ts is its newest version's.

    Retried.
    """
    request = _wire.key_history(namespace or self.namespace, agent_id, key, limit, page_token)
    return _wire.history_page((yield from call(self, "KeyHistory", request)))


# -- streams -------------------------------------------------------------------------------------------


def replay(
    self: Client,
    /,
    agent_id: str,
    start_ts: int | None = None,
    end_ts: int | None = None,
    namespace: str | None = None,
) -> Plan[None]:
    """The agent's commits in commit_ts order, [start_ts, end_ts] inclusive.

    A stream broken by UNAVAILABLE resumes after the last commit it
    yielded (retried until the client's timeout passes without progress).
    The arguments are checked by this call, before the stream opens.
    """
    # Not a generator itself, so that bad arguments raise here, not at the first next().
    return _replay(self, _wire.replay(namespace or self.namespace, agent_id, start_ts, end_ts))


def _replay(self: Client, request: pb.ReplayRequest) -> Plan[None]:
    last: int | None = None
    attempts = None
    while True:
        yield Open("ReplayBatches", _wire.resumed_replay(request, last))
        try:
            while (batch := (yield Next())) is not None:
                attempts = None  # progress: the retry budget starts again
                for message in batch.events:
                    event = _wire.replay_event(message, request.namespace, request.agent_id)
                    last = event.commit_ts
                    yield Emit(event)
            return
        except StatehouseError as exc:
            error = exc
        if _wire.replay_done(request, last):
            return
        attempts = attempts or _retry.Attempts(self.retry, self.timeout)
        delay = attempts.backoff(error)
        if delay is None:
            raise error
        yield Sleep(delay)


def first_state(
    self: Client, agent_id: str, key: str, namespace: str, timeout: float | None
) -> Plan[tuple[StateResult, int]]:
    """wait_for's first read: the key's state and the commit_ts it is read as of, in one view."""
    response = yield from call(
        self, "ScanPrefix", _plans.first_read(namespace, agent_id, key), timeout=timeout
    )
    return _plans.first_state(response, key)
