"""Paged and historical reads: ListKeys, ScanPrefix, KeyHistory (time travel included).

Each function answers one request from one consistent `ReadView`. Listings
are read as of one commit_ts T (the request's `at_commit_ts`, else the
view's last commit), and every later page of the same listing is read as of
that T too, whatever was committed since: a key is listed iff its newest
version committed at or before T is a value, and with that version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from actors import InvalidArgument
from rpc import paging
from rpc.convert import check_names, check_prefix, json_to_struct
from statehouse._proto import statehouse_pb2 as pb
from storage import ReadView, StateRecord, VersionRecord

# Most results one page may hold; a larger `limit` is clamped to these (the
# answer then carries a token for the rest, as `limit` means "at most").
MAX_LIST_LIMIT = 10_000
MAX_HISTORY_LIMIT = 1_000
# KeyHistory's page size when the request's limit is 0.
DEFAULT_HISTORY_LIMIT = 100
# A page with a limit also ends once it holds this many bytes: with values of
# at most 1 MiB (the default), a page then fits in gRPC's default 4 MiB
# receive limit, which clients other than ours may keep. Clients follow the
# token, so a page shorter than its limit is harmless.
PAGE_BYTES = 2 * 1024 * 1024

T = TypeVar("T")


def _fill_value(message: pb.StateEntry | pb.KeyVersion, key: str, value: bytes | None, json: bool) -> None:
    if value is None:
        return
    if json:
        message.value_json = value
    else:
        message.value.CopyFrom(json_to_struct(value, key))


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


def _as_of(view: ReadView, at_commit_ts: int | None, token_ts: int | None) -> int:
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


def _listing(
    view: ReadView, request: pb.ListKeysRequest | pb.ScanPrefixRequest, scope: tuple[str, str, str, str]
) -> tuple[Iterator[tuple[str, StateRecord]], int]:
    """The keys (with records) a listing page starts with, lazily, and its commit_ts."""
    _kind, namespace, agent_id, prefix = scope
    token_ts: int | None = None
    after: str | None = None
    if request.page_token:
        token_ts, after = paging.decode(scope, request.page_token)
    at = request.at_commit_ts if request.HasField("at_commit_ts") else None
    commit_ts = _as_of(view, at, token_ts)
    return view.scan_at(namespace, agent_id, prefix, commit_ts, after), commit_ts


def list_keys(view: ReadView, request: pb.ListKeysRequest) -> pb.ListKeysResponse:
    """An agent's keys in byte order as of one commit, a page at a time.

    `limit` 0 gives all of them (no token), as original clients expect; a
    larger limit than MAX_LIST_LIMIT is clamped to it, and a page also ends
    at PAGE_BYTES.
    """
    namespace = check_names(request.namespace, request.agent_id)
    scope = ("list", namespace, request.agent_id, "")
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
    scope = ("scan", namespace, request.agent_id, request.prefix)
    found, commit_ts = _listing(view, request, scope)
    response = pb.ScanPrefixResponse(commit_ts=commit_ts)
    entries = response.entries

    def add(item: tuple[str, StateRecord]) -> int:
        key, record = item
        entry = entries.add(key=key, version=record.version, commit_ts=record.commit_ts)
        _fill_value(entry, key, record.value, request.json_values)
        return int(entry.ByteSize())

    last = _fill_page(found, paging.page_size(request.limit, MAX_LIST_LIMIT), add)
    if last is not None:
        response.next_page_token = paging.encode(scope, commit_ts, last[0])
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

    def add(item: tuple[int, VersionRecord]) -> int:
        version, record = item
        entry = versions.add(
            version=version,
            commit_ts=record.commit_ts,
            deleted=record.value is None,
            committed_at_ms=view.committed_at_ms(namespace, agent_id, record.commit_ts) or 0,
        )
        _fill_value(entry, key, record.value, request.json_values)
        return int(entry.ByteSize())

    limit = paging.page_size(request.limit, MAX_HISTORY_LIMIT) or DEFAULT_HISTORY_LIMIT
    last = _fill_page(view.history(namespace, agent_id, key, start), limit, add)
    if last is not None:
        # history() seeks down from the version named, so start just below the last sent.
        response.next_page_token = paging.encode(scope, last[0] - 1)
    return response
