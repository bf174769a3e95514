"""Paged listing, time travel and key history (rpc/reads.py) through a real daemon.

Requests go through a raw stub, so these pin the wire behaviour the SDK builds on.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpc.reads import DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, MAX_LIST_LIMIT, PAGE_BYTES
from rpc.server import Daemon, DaemonConfig
from statehouse import Statehouse
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc

Stub = pb_grpc.StatehouseServiceStub
# key -> (value, version, commit_ts): an agent's live keys as of some commit.
Model = dict[str, tuple[Any, int, int]]


@pytest.fixture
def stub(daemon: Daemon) -> Iterator[Stub]:
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        yield Stub(channel)


def commit(client: Statehouse, agent: str, writes: dict[str, Any], deletes: tuple[str, ...] = ()) -> int:
    with client.begin_transaction() as tx:
        for key, value in writes.items():
            tx.write(agent, key, value)
        for key in deletes:
            tx.delete(agent, key)
    assert tx.commit_ts is not None
    return tx.commit_ts


def invalid(call: Callable[[Any], Any], request: Any) -> str:
    """Call, expect INVALID_ARGUMENT, return its message."""
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return str(info.value.details())


def scan_pages(
    stub: Stub, agent: str, prefix: str = "", limit: int = 0, token: str = "", **kw: Any
) -> list[Any]:
    """Every page of a ScanPrefix from `token` on, following the tokens."""
    pages = []
    while True:
        request = pb.ScanPrefixRequest(
            agent_id=agent, prefix=prefix, json_values=True, limit=limit, page_token=token, **kw
        )
        pages.append(stub.ScanPrefix(request))
        token = pages[-1].next_page_token
        if not token:
            return pages


def list_pages(stub: Stub, agent: str, limit: int = 0, token: str = "", **kw: Any) -> list[Any]:
    pages = []
    while True:
        pages.append(stub.ListKeys(pb.ListKeysRequest(agent_id=agent, limit=limit, page_token=token, **kw)))
        token = pages[-1].next_page_token
        if not token:
            return pages


def entries(pages: list[Any]) -> Model:
    found = {}
    for page in pages:
        for e in page.entries:
            assert e.key not in found  # no key on two pages
            found[e.key] = (json.loads(e.value_json), e.version, e.commit_ts)
    return found


def keys_of(pages: list[Any]) -> list[str]:
    return [key for page in pages for key in page.keys]


# -- paging --------------------------------------------------------------------


def test_pages_concatenate_to_the_full_listing(client: Statehouse, stub: Stub) -> None:
    names = [f"k{i:02d}" for i in range(25)] + ["é", "z"]
    commit(client, "a", {k: {"n": i} for i, k in enumerate(names)} | {"gone": 1})
    commit(client, "a", {}, deletes=("gone",))
    last = commit(client, "other", {"k99": 0})  # another agent: never listed
    full = stub.ListKeys(pb.ListKeysRequest(agent_id="a"))
    assert list(full.keys) == sorted(names) and not full.next_page_token
    full_scan = entries(scan_pages(stub, "a"))
    assert list(full_scan) == sorted(names)
    for limit in (1, 2, 7, 26, 27, 28, MAX_LIST_LIMIT, MAX_LIST_LIMIT + 1):
        pages = list_pages(stub, "a", limit)
        assert keys_of(pages) == list(full.keys)
        # Looking one ahead, a page ending at the end carries no token: no empty last page.
        assert len(pages) == -(-len(names) // min(limit, MAX_LIST_LIMIT))
        assert {p.commit_ts for p in pages} == {last}
        scanned = scan_pages(stub, "a", limit=limit)
        assert entries(scanned) == full_scan
        assert all(len(p.entries) <= limit for p in scanned)
    assert entries(scan_pages(stub, "a", prefix="k1", limit=3)) == {
        k: v for k, v in full_scan.items() if k.startswith("k1")
    }


def test_a_listing_paged_while_others_commit_stays_at_its_first_commit_ts(
    client: Statehouse, stub: Stub
) -> None:
    t0 = commit(client, "a", {f"k{i:02d}": {"n": i} for i in range(20)})
    model: Model = {f"k{i:02d}": ({"n": i}, 1, t0) for i in range(20)}
    pages = [stub.ScanPrefix(pb.ScanPrefixRequest(agent_id="a", json_values=True, limit=3))]
    listed = [stub.ListKeys(pb.ListKeysRequest(agent_id="a", limit=4))]
    step = itertools.count()
    while pages[-1].next_page_token or listed[-1].next_page_token:
        i = next(step)
        # Changes behind the cursor, at it and ahead of it: adds, updates, deletes.
        commit(
            client,
            "a",
            {f"k{i:02d}a": "new", f"k{(i + 5) % 20:02d}": "changed", "a-first": i},
            deletes=(f"k{(i + 9) % 20:02d}", f"k{i:02d}"),
        )
        if pages[-1].next_page_token:
            request = pb.ScanPrefixRequest(
                agent_id="a", json_values=True, limit=3, page_token=pages[-1].next_page_token
            )
            pages.append(stub.ScanPrefix(request))
        if listed[-1].next_page_token:
            request = pb.ListKeysRequest(agent_id="a", limit=4, page_token=listed[-1].next_page_token)
            listed.append(stub.ListKeys(request))
    assert next(step) >= 6  # the commits really came between pages
    assert {p.commit_ts for p in pages} == {p.commit_ts for p in listed} == {t0}
    assert entries(pages) == model
    assert keys_of(listed) == sorted(model)
    assert entries(scan_pages(stub, "a", at_commit_ts=t0)) == model
    assert entries(scan_pages(stub, "a")) != model  # the latest state did move on


def test_a_page_token_outlives_a_daemon_restart(daemon_config: DaemonConfig) -> None:
    daemon = Daemon(daemon_config).start()
    try:
        with Statehouse(f"127.0.0.1:{daemon.port}") as client:
            t0 = commit(client, "a", {f"k{i}": i for i in range(10)})
        with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            first = Stub(channel).ScanPrefix(pb.ScanPrefixRequest(agent_id="a", limit=4, json_values=True))
    finally:
        daemon.stop()
    assert first.next_page_token and first.commit_ts == t0
    daemon = Daemon(daemon_config).start()
    try:
        with Statehouse(f"127.0.0.1:{daemon.port}") as client:
            commit(client, "a", {"k5": "changed", "k55": "new"}, deletes=("k9",))
        with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            stub = Stub(channel)
            rest = scan_pages(stub, "a", limit=4, token=first.next_page_token)
            assert entries([first, *rest]) == {f"k{i}": (i, 1, t0) for i in range(10)}
            assert {p.commit_ts for p in rest} == {t0}
    finally:
        daemon.stop()


def test_a_token_from_another_request_is_refused(client: Statehouse, stub: Stub) -> None:
    commit(client, "a", {f"p{i}": i for i in range(5)})
    commit(client, "b", {f"p{i}": i for i in range(5)})
    scan = stub.ScanPrefix(pb.ScanPrefixRequest(agent_id="a", prefix="p", limit=2)).next_page_token
    listing = stub.ListKeys(pb.ListKeysRequest(agent_id="a", limit=2)).next_page_token
    history = stub.KeyHistory(pb.KeyHistoryRequest(agent_id="a", key="p1", limit=1))
    assert scan and listing and not history.next_page_token  # p1 has one version
    # The same token with the request it came from is fine.
    assert stub.ScanPrefix(pb.ScanPrefixRequest(agent_id="a", prefix="p", limit=2, page_token=scan)).entries
    for request in (
        pb.ScanPrefixRequest(agent_id="b", prefix="p", limit=2, page_token=scan),
        pb.ScanPrefixRequest(agent_id="a", prefix="p1", limit=2, page_token=scan),
        pb.ScanPrefixRequest(agent_id="a", prefix="", limit=2, page_token=scan),
        pb.ScanPrefixRequest(namespace="ns2", agent_id="a", prefix="p", page_token=scan),
        pb.ScanPrefixRequest(agent_id="a", prefix="", page_token=listing),
    ):
        assert "another request" in invalid(stub.ScanPrefix, request)
    for request in (
        pb.ListKeysRequest(agent_id="b", page_token=listing),
        pb.ListKeysRequest(agent_id="a", page_token=scan),
    ):
        assert "another request" in invalid(stub.ListKeys, request)
    key_history = pb.KeyHistoryRequest(agent_id="a", key="p1", page_token=listing)
    assert "another request" in invalid(stub.KeyHistory, key_history)


@pytest.mark.parametrize(
    "token",
    ["garbage", "!!!!", "AA", "é", base64.urlsafe_b64encode(secrets.token_bytes(30)).decode()],
)
def test_a_garbage_token_is_invalid_argument(stub: Stub, token: str) -> None:
    invalid(stub.ListKeys, pb.ListKeysRequest(agent_id="a", page_token=token))
    invalid(stub.ScanPrefix, pb.ScanPrefixRequest(agent_id="a", page_token=token))
    invalid(stub.KeyHistory, pb.KeyHistoryRequest(agent_id="a", key="k", page_token=token))


def test_a_truncated_token_is_invalid_argument(client: Statehouse, stub: Stub) -> None:
    commit(client, "a", {f"k{i}": i for i in range(5)})
    token = stub.ListKeys(pb.ListKeysRequest(agent_id="a", limit=2)).next_page_token
    invalid(stub.ListKeys, pb.ListKeysRequest(agent_id="a", page_token=token[:12]))


def test_at_commit_ts_must_match_the_token(client: Statehouse, stub: Stub) -> None:
    t0 = commit(client, "a", {f"k{i}": i for i in range(5)})
    commit(client, "a", {"k9": 9})
    token = stub.ListKeys(pb.ListKeysRequest(agent_id="a", limit=2, at_commit_ts=t0)).next_page_token
    same = stub.ListKeys(pb.ListKeysRequest(agent_id="a", page_token=token, at_commit_ts=t0))
    assert list(same.keys) == ["k2", "k3", "k4"] and same.commit_ts == t0
    request = pb.ListKeysRequest(agent_id="a", page_token=token, at_commit_ts=t0 + 1)
    assert "differs" in invalid(stub.ListKeys, request)


# -- time travel ---------------------------------------------------------------


def test_at_commit_ts_after_the_last_commit_is_invalid_argument(client: Statehouse, stub: Stub) -> None:
    last = commit(client, "a", {"k": 1})
    message = invalid(stub.ListKeys, pb.ListKeysRequest(agent_id="a", at_commit_ts=last + 5))
    assert str(last + 5) in message and str(last) in message
    invalid(stub.ScanPrefix, pb.ScanPrefixRequest(agent_id="a", at_commit_ts=last + 1))
    assert list(stub.ListKeys(pb.ListKeysRequest(agent_id="a", at_commit_ts=last)).keys) == ["k"]


def test_at_commit_ts_zero_is_before_any_commit(client: Statehouse, stub: Stub) -> None:
    commit(client, "a", {"k": 1})
    listing = stub.ListKeys(pb.ListKeysRequest(agent_id="a", at_commit_ts=0, limit=1))
    assert list(listing.keys) == [] and listing.commit_ts == 0 and not listing.next_page_token
    assert not stub.ScanPrefix(pb.ScanPrefixRequest(agent_id="a", at_commit_ts=0)).entries


_KEYS = ["a", "b", "b/1", "b/2", "c", "é"]
_txns = st.lists(
    st.dictionaries(st.sampled_from(_KEYS), st.one_of(st.none(), st.integers(0, 99)), min_size=1),
    min_size=1,
    max_size=8,
)
_agents = itertools.count()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(txns=_txns)
def test_time_travel_equals_a_replayed_model(
    client: Statehouse, stub: Stub, txns: list[dict[str, Any]]
) -> None:
    # Examples share the daemon, each with its own agent, so other agents'
    # commits fall between this one's: time travel must see through them.
    agent = f"tt{next(_agents)}"
    live: Model = {}
    versions: dict[str, int] = {}
    states: list[tuple[int, Model]] = []  # (commit_ts, live keys right after it)
    histories: dict[str, list[tuple[int, int, Any]]] = {}  # key -> [(version, commit_ts, value)]
    for txn in txns:
        writes = {k: v for k, v in txn.items() if v is not None}
        deletes = tuple(k for k, v in txn.items() if v is None)
        ts = commit(client, agent, writes, deletes)
        commit(client, "noise", {"k": ts})
        for key, value in txn.items():
            versions[key] = versions.get(key, 0) + 1
            histories.setdefault(key, []).insert(0, (versions[key], ts, value))
            if value is None:
                live.pop(key, None)
            else:
                live[key] = (value, versions[key], ts)
        states.append((ts, dict(live)))
    first = states[0][0]
    checked = [(0, {}), (first - 1, {})]
    for ts, state in states:
        checked += [(ts, state), (ts + 1, state)]  # ts + 1 is a noise commit
    for ts, state in checked:
        assert entries(scan_pages(stub, agent, at_commit_ts=ts)) == state
        paged = scan_pages(stub, agent, limit=2, at_commit_ts=ts)
        assert entries(paged) == state and {p.commit_ts for p in paged} == {ts}
        assert keys_of(list_pages(stub, agent, limit=3, at_commit_ts=ts)) == sorted(state)
        in_b = {k: v for k, v in state.items() if k.startswith("b/")}
        assert entries(scan_pages(stub, agent, prefix="b/", limit=1, at_commit_ts=ts)) == in_b
    for key, history in histories.items():
        answer = stub.KeyHistory(pb.KeyHistoryRequest(agent_id=agent, key=key, json_values=True))
        got = [
            (v.version, v.commit_ts, None if v.deleted else json.loads(v.value_json)) for v in answer.versions
        ]
        assert got == history


# -- old clients ---------------------------------------------------------------


def test_a_request_without_the_new_fields_gets_everything_as_before(client: Statehouse, stub: Stub) -> None:
    commit(client, "a", {f"k{i:03d}": i for i in range(150)} | {"gone": 1})
    last = commit(client, "a", {"k000": "changed"}, deletes=("gone",))
    listing = stub.ListKeys(pb.ListKeysRequest(agent_id="a"))
    assert list(listing.keys) == [f"k{i:03d}" for i in range(150)]
    assert not listing.next_page_token and listing.commit_ts == last
    scan = stub.ScanPrefix(pb.ScanPrefixRequest(agent_id="a", prefix="k00"))
    assert not scan.next_page_token and len(scan.entries) == 10
    assert json_format.MessageToDict(scan.entries[0].value) == {"value": "changed"}  # Struct, as before
    assert (scan.entries[0].version, scan.entries[0].commit_ts) == (2, last)


def test_a_limit_above_the_maximum_is_clamped(client: Statehouse, stub: Stub) -> None:
    commit(client, "a", {f"k{i:05d}": 0 for i in range(5001)})
    commit(client, "a", {f"k{i:05d}": 0 for i in range(5001, MAX_LIST_LIMIT + 1)})
    first = stub.ListKeys(pb.ListKeysRequest(agent_id="a", limit=MAX_LIST_LIMIT * 5))
    assert len(first.keys) == MAX_LIST_LIMIT and first.next_page_token
    rest = stub.ListKeys(
        pb.ListKeysRequest(agent_id="a", limit=MAX_LIST_LIMIT * 5, page_token=first.next_page_token)
    )
    assert list(rest.keys) == [f"k{MAX_LIST_LIMIT:05d}"] and not rest.next_page_token
    assert len(stub.ListKeys(pb.ListKeysRequest(agent_id="a")).keys) == MAX_LIST_LIMIT + 1


def test_a_page_of_large_values_ends_at_the_byte_budget(client: Statehouse, stub: Stub) -> None:
    big = "x" * (PAGE_BYTES // 20)  # 20 of these pass the budget, 19 do not
    commit(client, "a", {f"k{i:02d}": big for i in range(30)})
    for json_values in (True, False):
        request = pb.ScanPrefixRequest(agent_id="a", limit=100, json_values=json_values)
        first = stub.ScanPrefix(request)
        assert len(first.entries) == 20 and first.next_page_token
        request.page_token = first.next_page_token
        rest = stub.ScanPrefix(request)
        assert [e.key for e in rest.entries] == [f"k{i:02d}" for i in range(20, 30)]
        assert not rest.next_page_token
    # Unpaged, as original clients ask, everything comes in one answer.
    assert len(stub.ScanPrefix(pb.ScanPrefixRequest(agent_id="a", json_values=True)).entries) == 30
    for _ in range(25):
        commit(client, "h", {"k": big})
    first = stub.KeyHistory(pb.KeyHistoryRequest(agent_id="h", key="k", json_values=True))
    assert [v.version for v in first.versions] == list(range(25, 5, -1))
    rest = stub.KeyHistory(pb.KeyHistoryRequest(agent_id="h", key="k", page_token=first.next_page_token))
    assert [v.version for v in rest.versions] == [5, 4, 3, 2, 1] and not rest.next_page_token


# -- key history ---------------------------------------------------------------


def test_key_history_is_newest_first_with_tombstones(client: Statehouse, stub: Stub) -> None:
    ts = [
        commit(client, "a", {"doc": {"v": 1}}),
        commit(client, "a", {"doc": {"v": 2}}),
        commit(client, "a", {}, deletes=("doc",)),
        commit(client, "a", {"doc": {"v": 4}}),
    ]
    answer = stub.KeyHistory(pb.KeyHistoryRequest(agent_id="a", key="doc", json_values=True))
    assert not answer.next_page_token
    assert [v.version for v in answer.versions] == [4, 3, 2, 1]
    assert [v.commit_ts for v in answer.versions] == ts[::-1]
    assert [v.deleted for v in answer.versions] == [False, True, False, False]
    assert [json.loads(v.value_json) if v.value_json else None for v in answer.versions] == [
        {"v": 4},
        None,
        {"v": 2},
        {"v": 1},
    ]
    times = [v.committed_at_ms for v in reversed(answer.versions)]
    assert times[0] > 0 and times == sorted(times)
    structs = stub.KeyHistory(pb.KeyHistoryRequest(agent_id="a", key="doc")).versions
    assert json_format.MessageToDict(structs[0].value) == {"v": 4}
    assert not structs[1].HasField("value") and not structs[1].value_json
    assert not stub.KeyHistory(pb.KeyHistoryRequest(agent_id="a", key="never")).versions
    assert not stub.KeyHistory(pb.KeyHistoryRequest(agent_id="other", key="doc")).versions


def test_key_history_pages(client: Statehouse, stub: Stub) -> None:
    for i in range(5):
        commit(client, "a", {"k": i})

    def versions(limit: int) -> list[list[int]]:
        pages, token = [], ""
        while True:
            answer = stub.KeyHistory(
                pb.KeyHistoryRequest(agent_id="a", key="k", limit=limit, page_token=token)
            )
            pages.append([v.version for v in answer.versions])
            token = answer.next_page_token
            if not token:
                return pages

    assert versions(2) == [[5, 4], [3, 2], [1]]
    assert versions(5) == [[5, 4, 3, 2, 1]]  # no empty page after the last
    assert versions(1) == [[5], [4], [3], [2], [1]]
    token = stub.KeyHistory(pb.KeyHistoryRequest(agent_id="a", key="k", limit=2)).next_page_token
    commit(client, "a", {"k": "newer"})  # a page continues downwards, unmoved by new versions
    rest = stub.KeyHistory(pb.KeyHistoryRequest(agent_id="a", key="k", page_token=token))
    assert [v.version for v in rest.versions] == [3, 2, 1]
    invalid(stub.KeyHistory, pb.KeyHistoryRequest(agent_id="a", key="", limit=2))
    invalid(stub.KeyHistory, pb.KeyHistoryRequest(agent_id="", key="k", limit=2))


def test_key_history_default_and_maximum_page(stub: Stub) -> None:
    count = MAX_HISTORY_LIMIT + 1
    commits = [
        pb.CommitRequest(
            txn_id=f"default:{secrets.token_hex(12)}",
            open=pb.TxnOpen(),
            mutations=[pb.Mutation(agent_id="a", key="long", value_json=b"%d" % i)],
        )
        for i in range(count)
    ]
    outcomes = stub.CommitBatch(pb.CommitBatchRequest(commits=commits)).outcomes
    assert all(o.code == 0 for o in outcomes)
    default = stub.KeyHistory(pb.KeyHistoryRequest(agent_id="a", key="long"))
    assert len(default.versions) == DEFAULT_HISTORY_LIMIT and default.next_page_token
    assert default.versions[0].version == count
    clamped = stub.KeyHistory(pb.KeyHistoryRequest(agent_id="a", key="long", limit=count * 10))
    assert len(clamped.versions) == MAX_HISTORY_LIMIT and clamped.next_page_token
    last = stub.KeyHistory(pb.KeyHistoryRequest(agent_id="a", key="long", page_token=clamped.next_page_token))
    assert [v.version for v in last.versions] == [1] and not last.next_page_token
