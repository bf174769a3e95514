"""Paged and historical reads: ListKeys, ScanPrefix, ListAgents, KeyHistory (time travel included).

Each function answers one request from one consistent `ReadView`. Listings
are read as of one commit_ts T (the request's `at_commit_ts`, else the
view's last commit), and every later page of the same listing is read as of
that T too, whatever was committed since: a key is listed iff its newest
version committed at or before T is a value, and with that version. A
listing goes forward or (`reverse`) backward from its cursor (`start_after`,
then the page token's last key) with one seek, so the newest keys of a
prefix cost the same whatever it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from actors import InvalidArgument
from rpc import paging
from rpc.convert import ValueForm, check_names, check_namespace, check_prefix, fill_value
from statehouse import _names
from statehouse._proto import statehouse_pb2 as pb
from storage import HistoryCompactedError, ReadView, StateRecord, VersionRecord

# Most results one page may hold; a larger `limit` is clamped to these (the
# answer then carries a token for the rest, as `limit` means "at most").
MAX_LIST_LIMIT = 10_000
MAX_HISTORY_LIMIT = 1_000
# KeyHistory's page size when the request's limit is 0.
DEFAULT_HISTORY_LIMIT = 100
# A page with a limit also ends once it holds this many bytes, so that pages of
# small values fit in gRPC's default 4 MiB receive limit, which clients other
# than ours may keep (one value larger than that still makes a page of its
# own). Clients follow the token, so a page shorter than its limit is harmless.
PAGE_BYTES = 2 * 1024 * 1024

T = TypeVar("T")


def _fill_page(found: Iterator[T], limit: int | None, add: Callable[[T], int]) -> T | None:
    """Pass items to `add` (which returns the bytes it added) until `limit`
    items or PAGE_BYTES; the last one added if more follow, else None.

    It reads one item past a full page, so a page that ends exactly at the
    end says so rather than point at an empty page. No limit: everything.
    """
    count = held = 0
    last: T | None = None
    for item in found:
        if limit is not None and (count == limit or held >= PAGE_BYTES):
            return last
        held += add(item)
        count += 1
        last = item
    return None


def _until_compacted(found: Iterator[T], full: Callable[[], bool]) -> Iterator[T]:
    """The items of a history listing; where it reaches history retention let go, the error,
    unless the page is full already: then the next page is the one that says so."""
    try:
        yield from found
    except HistoryCompactedError:
        if not full():
            raise
        yield None  # type: ignore[misc]  # one past a full page, never added to it


def as_of(view: ReadView, at_commit_ts: int | None, token_ts: int | None) -> int:
    """The commit_ts a listing is read as of; checks it is not in the future."""
    if token_ts is not None:
        if at_commit_ts is not None and at_commit_ts != token_ts:
            raise InvalidArgument(
                f"at_commit_ts {at_commit_ts} differs from the page_token's commit_ts {token_ts}; "
                "send the same at_commit_ts (or none) with every page"
            )
        at_commit_ts = token_ts
    if at_commit_ts is None:
        return view.last_commit_ts
    if at_commit_ts > view.last_commit_ts:
        source = "at_commit_ts" if token_ts is None else "the page_token's commit_ts"
        raise InvalidArgument(
            f"{source} {at_commit_ts} is after the last commit ({view.last_commit_ts}); "
            "time travel reaches back, not forward"
        )
    return at_commit_ts


def _scope(kind: str, namespace: str, name: str, prefix: str, reverse: bool) -> tuple[str, ...]:
    """What a page token is bound to: the request's kind, names, prefix and order."""
    return (kind, namespace, name, prefix, "reverse") if reverse else (kind, namespace, name, prefix)


def _cursor(request: pb.ListKeysRequest | pb.ScanPrefixRequest | pb.ListAgentsRequest) -> str | None:
    """The listing's start-after cursor, checked (None: from the first)."""
    if not request.start_after:
        return None
    try:
        _names.check_name("start_after", request.start_after)
    except _names.NameError_ as exc:
        raise InvalidArgument(str(exc)) from None
    return str(request.start_after)


def _listing(
    view: ReadView, request: pb.ListKeysRequest | pb.ScanPrefixRequest, scope: tuple[str, ...]
) -> tuple[Iterator[tuple[str, StateRecord]], int]:
    """The keys (with records) a listing page starts with, lazily, and its commit_ts."""
    namespace, agent_id, prefix = scope[1], scope[2], scope[3]
    token_ts: int | None = None
    after = _cursor(request)
    if request.page_token:
        token_ts, after = paging.decode(scope, request.page_token)
    at = request.at_commit_ts if request.HasField("at_commit_ts") else None
    commit_ts = as_of(view, at, token_ts)
    found = view.scan_at(namespace, agent_id, prefix, commit_ts, after, reverse=request.reverse)
    return found, commit_ts


def list_keys(view: ReadView, request: pb.ListKeysRequest) -> pb.ListKeysResponse:
    """An agent's keys (under `prefix`) in byte order as of one commit, a page at a time.

    `limit` 0 gives all of them (no token), as original clients expect; a
    larger limit than MAX_LIST_LIMIT is clamped to it, and a page also ends
    at PAGE_BYTES.
    """
    namespace = check_names(request.namespace, request.agent_id)
    check_prefix(request.prefix)
    scope = _scope("list", namespace, request.agent_id, request.prefix, request.reverse)
    found, commit_ts = _listing(view, request, scope)
    response = pb.ListKeysResponse(commit_ts=commit_ts)
    keys = response.keys

    def add(item: tuple[str, StateRecord]) -> int:
        keys.append(item[0])
        return len(item[0].encode("utf-8")) + 3

    last = _fill_page(found, paging.page_size(request.limit, MAX_LIST_LIMIT), add)
    if last is not None:
        response.next_page_token = paging.encode(scope, commit_ts, last[0])
    return response


def scan_prefix(view: ReadView, request: pb.ScanPrefixRequest) -> pb.ScanPrefixResponse:
    """An agent's keys starting with a prefix, with their values, paged like ListKeys
    (and a page also ends at PAGE_BYTES)."""
    namespace = check_names(request.namespace, request.agent_id)
    check_prefix(request.prefix)
    scope = _scope("scan", namespace, request.agent_id, request.prefix, request.reverse)
    found, commit_ts = _listing(view, request, scope)
    response = pb.ScanPrefixResponse(commit_ts=commit_ts)
    entries = response.entries
    form = ValueForm(request)

    def add(item: tuple[str, StateRecord]) -> int:
        key, record = item
        entry = entries.add(key=key, version=record.version, commit_ts=record.commit_ts)
        fill_value(entry, key, record.value, form)
        return int(entry.ByteSize())

    last = _fill_page(found, paging.page_size(request.limit, MAX_LIST_LIMIT), add)
    if last is not None:
        response.next_page_token = paging.encode(scope, commit_ts, last[0])
    return response


def list_agents(view: ReadView, request: pb.ListAgentsRequest) -> pb.ListAgentsResponse:
    """The agents of a namespace that hold live keys, in byte order (or reversed), as of
    the latest commit, paged like ListKeys. A page token carries the last agent returned;
    later pages read the latest commit again (agents have no time travel)."""
    namespace = check_namespace(request.namespace)
    check_prefix(request.prefix)
    scope = _scope("agents", namespace, "", request.prefix, request.reverse)
    after = _cursor(request)
    if request.page_token:
        _ts, after = paging.decode(scope, request.page_token)
    response = pb.ListAgentsResponse(commit_ts=view.last_commit_ts)
    agent_ids = response.agent_ids

    def add(agent_id: str) -> int:
        agent_ids.append(agent_id)
        return len(agent_id.encode("utf-8")) + 3

    found = view.agents(namespace, request.prefix, after, request.reverse)
    last = _fill_page(found, paging.page_size(request.limit, MAX_LIST_LIMIT), add)
    if last is not None:
        response.next_page_token = paging.encode(scope, view.last_commit_ts, last)
    return response


def key_history(view: ReadView, request: pb.KeyHistoryRequest) -> pb.KeyHistoryResponse:
    """A key's versions newest first, tombstones included, a page at a time
    (limit 0: 100; clamped to 1,000; a page also ends at PAGE_BYTES). A key
    never written has an empty history."""
    namespace = check_names(request.namespace, request.agent_id, request.key)
    agent_id, key = request.agent_id, request.key
    scope = ("history", namespace, agent_id, key)
    start: int | None = None
    if request.page_token:
        start, _ = paging.decode(scope, request.page_token)
        if start == 0:
            raise InvalidArgument("page_token names version 0 (versions start at 1)")
    response = pb.KeyHistoryResponse()
    versions = response.versions
    form = ValueForm(request)

    held = [0]  # the bytes added, as _fill_page counts them

    def add(item: tuple[int, VersionRecord]) -> int:
        version, record = item
        entry = versions.add(
            version=version,
            commit_ts=record.commit_ts,
            deleted=record.value is None,
            committed_at_ms=view.committed_at_ms(namespace, agent_id, record.commit_ts) or 0,
        )
        fill_value(entry, key, record.value, form)
        held[0] += entry.ByteSize()
        return int(entry.ByteSize())

    limit = paging.page_size(request.limit, MAX_HISTORY_LIMIT) or DEFAULT_HISTORY_LIMIT
    full = lambda: len(versions) >= limit or held[0] >= PAGE_BYTES  # noqa: E731  # as _fill_page stops
    last = _fill_page(_until_compacted(view.history(namespace, agent_id, key, start), full), limit, add)
    if last is not None:
        # history() seeks down from the version named, so start just below the last sent.
        response.next_page_token = paging.encode(scope, last[0] - 1)
    return response
