"""Garbage in: a precise status, a message a person understands, nothing lost.

Each row sends one bad request over the raw wire and checks the status code,
a word of the message, that the store is unchanged and that the daemon still
serves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct

from actors import ActorConfig
from rpc import paging
from rpc.server import Daemon
from statehouse._proto import statehouse_pb2 as pb

SERVICE = "/statehouse.v1.StatehouseService/"
C = grpc.StatusCode


@dataclass
class Wire:
    channel: grpc.Channel
    txn: Callable[[], str]  # a fresh open transaction id

    def call(self, method: str, request: bytes | object) -> object:
        raw = request if isinstance(request, bytes) else request.SerializeToString()  # type: ignore[attr-defined]
        if method == "Replay":
            return list(self.channel.unary_stream(SERVICE + method)(raw, timeout=10))
        return self.channel.unary_unary(SERVICE + method)(raw, timeout=10)


@pytest.fixture
def actor_config() -> ActorConfig:
    return ActorConfig(max_open_txns_per_namespace=50, max_ops_per_txn=5, max_txn_bytes=3000)


@pytest.fixture
def wire(daemon: Daemon) -> Iterator[Wire]:
    channel = grpc.insecure_channel(f"127.0.0.1:{daemon.port}")

    def txn() -> str:
        raw = channel.unary_unary(SERVICE + "BeginTransaction")(
            pb.BeginTransactionRequest(namespace="bad").SerializeToString()
        )
        return pb.BeginTransactionResponse.FromString(raw).txn_id

    # Something to protect: one committed key, and a bytes value.
    txn_id = txn()
    commit = pb.CommitRequest(
        txn_id=txn_id,
        mutations=[
            pb.Mutation(namespace="ns", agent_id="a", key="k", value_json=b'{"n":1}'),
            pb.Mutation(namespace="ns", agent_id="a", key="blob", value_bytes=b"\x00raw"),
        ],
    )
    channel.unary_unary(SERVICE + "Commit")(commit.SerializeToString())
    yield Wire(channel, txn)
    channel.close()


def fingerprint(daemon: Daemon) -> tuple[object, ...]:
    view = daemon.system.view()  # type: ignore[union-attr]
    return (view.last_commit_ts, list(view.events()), list(view.states()), list(view.versions()))


def mutation(**fields: object) -> pb.Mutation:
    base: dict[str, object] = {"namespace": "ns", "agent_id": "a", "key": "k", "value_json": b"1"}
    base.update(fields)
    return pb.Mutation(**base)  # type: ignore[arg-type]


def write(txn: str, **fields: object) -> pb.WriteRequest:
    base: dict[str, object] = {
        "txn_id": txn,
        "namespace": "ns",
        "agent_id": "a",
        "key": "k",
        "value_json": b"1",
    }
    base.update(fields)
    return pb.WriteRequest(**base)  # type: ignore[arg-type]


def nan_struct() -> Struct:
    struct = Struct()
    struct.update({"x": float("nan")})
    return struct


INVALID_UTF8_GET = b"\x0a\x02ns\x12\x02\xff\xfe\x1a\x01k"  # GetStateRequest, agent_id not UTF-8
UNKNOWN = "bad:" + "0" * 24
# A page token of a reverse listing of agent "a"'s keys in namespace "ns".
REVERSE_TOKEN = paging.encode(("list", "ns", "a", "", "reverse"), 1, "k")

# (name, method, request builder given a fresh txn id, expected code, word of the message)
CASES: list[tuple[str, str, Callable[[str], object], grpc.StatusCode, str]] = [
    ("empty agent", "GetState", lambda t: pb.GetStateRequest(namespace="ns", agent_id="", key="k"), C.INVALID_ARGUMENT, "agent_id must not be empty"),
    ("empty key", "Write", lambda t: write(t, key=""), C.INVALID_ARGUMENT, "key must not be empty"),
    ("NUL in key", "Write", lambda t: write(t, key="a\x00b"), C.INVALID_ARGUMENT, "key must not contain NUL"),
    ("NUL in namespace", "ListKeys", lambda t: pb.ListKeysRequest(namespace="n\x00", agent_id="a"), C.INVALID_ARGUMENT, "namespace"),
    ("long namespace", "Write", lambda t: write(t, namespace="n" * 129), C.INVALID_ARGUMENT, "namespace is 129 bytes"),
    ("long agent", "Replay", lambda t: pb.ReplayRequest(namespace="ns", agent_id="a" * 257), C.INVALID_ARGUMENT, "agent_id is 257 bytes"),
    ("long key", "Delete", lambda t: pb.DeleteRequest(txn_id=t, namespace="ns", agent_id="a", key="é" * 513), C.INVALID_ARGUMENT, "key is 1026 bytes"),
    ("long prefix", "ScanPrefix", lambda t: pb.ScanPrefixRequest(namespace="ns", agent_id="a", prefix="p" * 1025), C.INVALID_ARGUMENT, "prefix"),
    ("invalid UTF-8 on the wire", "GetState", lambda t: INVALID_UTF8_GET, C.INVALID_ARGUMENT, "not valid UTF-8"),
    ("garbage bytes", "Commit", lambda t: b"\xff\xff\xff\xff", C.INVALID_ARGUMENT, "CommitRequest"),
    ("value over the limit", "Write", lambda t: write(t, value_json=b'"' + b"x" * 2000 + b'"'), C.RESOURCE_EXHAUSTED, "limit is 1000 bytes"),
    ("bytes value over the limit", "Commit", lambda t: pb.CommitRequest(txn_id=t, mutations=[mutation(value_bytes=b"x" * 1001)]), C.RESOURCE_EXHAUSTED, "is 1001 bytes; the limit is 1000 bytes"),
    ("bytes read as a Struct", "GetState", lambda t: pb.GetStateRequest(namespace="ns", agent_id="a", key="blob"), C.FAILED_PRECONDITION, "value of key 'blob' is bytes"),
    ("bytes read as JSON only", "ScanPrefix", lambda t: pb.ScanPrefixRequest(namespace="ns", agent_id="a", json_values=True), C.FAILED_PRECONDITION, "bytes_values"),
    ("NUL in a cursor", "ListKeys", lambda t: pb.ListKeysRequest(namespace="ns", agent_id="a", start_after="a\x00"), C.INVALID_ARGUMENT, "start_after must not contain NUL"),
    ("long cursor", "ScanPrefix", lambda t: pb.ScanPrefixRequest(namespace="ns", agent_id="a", start_after="k" * 1025), C.INVALID_ARGUMENT, "start_after is 1025 bytes"),
    ("reverse token sent forward", "ListKeys", lambda t: pb.ListKeysRequest(namespace="ns", agent_id="a", page_token=REVERSE_TOKEN), C.INVALID_ARGUMENT, "made for another request"),
    ("agents of a bad namespace", "ListAgents", lambda t: pb.ListAgentsRequest(namespace="n" * 129), C.INVALID_ARGUMENT, "namespace is 129 bytes"),
    ("agents by a bad prefix", "ListAgents", lambda t: pb.ListAgentsRequest(namespace="ns", prefix="a\x00"), C.INVALID_ARGUMENT, "prefix must not contain NUL"),
    ("agents from a foreign token", "ListAgents", lambda t: pb.ListAgentsRequest(namespace="ns", page_token=REVERSE_TOKEN), C.INVALID_ARGUMENT, "made for another request"),
    ("if_absent with expected_version", "Commit", lambda t: pb.CommitRequest(txn_id=t, mutations=[mutation(if_absent=True, expected_version=0)]), C.INVALID_ARGUMENT, "if_absent and expected_version do not go together"),
    ("purge of a bad agent", "Purge", lambda t: pb.PurgeRequest(namespace="ns", agent_id=""), C.INVALID_ARGUMENT, "agent_id must not be empty"),
    ("purge of a bad prefix", "Purge", lambda t: pb.PurgeRequest(namespace="ns", agent_id="a", key_prefix="k\x00"), C.INVALID_ARGUMENT, "prefix must not contain NUL"),
    ("multi-get in the future", "ReadBatch", lambda t: pb.ReadBatchRequest(at_commit_ts=10**6), C.INVALID_ARGUMENT, "after the last commit"),
    ("value not JSON", "Write", lambda t: write(t, value_json=b"{'single': 'quotes'}"), C.INVALID_ARGUMENT, "not valid JSON"),
    ("value NaN", "Write", lambda t: write(t, value_json=b"[NaN]"), C.INVALID_ARGUMENT, "not valid JSON"),
    ("Struct with NaN", "Write", lambda t: write(t, value_json=b"", value=nan_struct()), C.INVALID_ARGUMENT, "not valid JSON"),
    ("write without value", "Write", lambda t: write(t, value_json=b""), C.INVALID_ARGUMENT, "value of key 'k' is missing"),
    ("mutation without value", "Commit", lambda t: pb.CommitRequest(txn_id=t, mutations=[mutation(value_json=b"")]), C.INVALID_ARGUMENT, "missing"),
    ("unknown transaction", "Commit", lambda t: pb.CommitRequest(txn_id=UNKNOWN), C.NOT_FOUND, "not found"),
    ("malformed transaction id", "Write", lambda t: write("garbage"), C.NOT_FOUND, "not an id this server issued"),
    ("huge transaction id", "Commit", lambda t: pb.CommitRequest(txn_id="bad:" + "x" * 20_000), C.NOT_FOUND, "..."),
    ("empty transaction id", "Stage", lambda t: pb.StageRequest(txn_id="", mutations=[mutation()]), C.NOT_FOUND, "not found"),
    ("timeout 0", "BeginTransaction", lambda t: pb.BeginTransactionRequest(timeout_ms=0), C.INVALID_ARGUMENT, "timeout_ms must be between 1"),
    ("absurd timeout", "BeginTransaction", lambda t: pb.BeginTransactionRequest(timeout_ms=2**63), C.INVALID_ARGUMENT, "timeout_ms"),
    ("replay reversed", "Replay", lambda t: pb.ReplayRequest(namespace="ns", agent_id="a", start_ts=5, end_ts=4), C.INVALID_ARGUMENT, "after end_ts"),
    ("version 0", "GetStateAtVersion", lambda t: pb.GetStateAtVersionRequest(namespace="ns", agent_id="a", key="k", version=0), C.INVALID_ARGUMENT, "at least 1"),
    ("version never existed", "GetStateAtVersion", lambda t: pb.GetStateAtVersionRequest(namespace="ns", agent_id="a", key="k", version=9), C.NOT_FOUND, "no version 9"),
    ("too many operations", "Commit", lambda t: pb.CommitRequest(txn_id=t, mutations=[mutation(key=f"k{i}") for i in range(6)]), C.RESOURCE_EXHAUSTED, "limit 5 per transaction"),
    ("too many bytes", "Stage", lambda t: pb.StageRequest(txn_id=t, mutations=[mutation(key=f"k{i}", value_json=b'"' + b"x" * 900 + b'"') for i in range(4)]), C.RESOURCE_EXHAUSTED, "bytes (limit 3000"),
]  # fmt: skip


@pytest.fixture
def daemon_config(daemon_config):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return replace(daemon_config, max_value_bytes=1000)


@pytest.mark.parametrize(
    ("method", "build", "code", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_request_is_refused_and_loses_nothing(
    daemon: Daemon, wire: Wire, method: str, build: Callable[[str], object], code: grpc.StatusCode, words: str
) -> None:
    txn = wire.txn()
    before = fingerprint(daemon)
    with pytest.raises(grpc.RpcError) as info:
        wire.call(method, build(txn))
    assert info.value.code() == code, info.value.details()
    assert words in info.value.details()
    assert fingerprint(daemon) == before
    assert pb.HealthResponse.FromString(wire.call("Health", b"")).status == "ok"  # type: ignore[arg-type]


def test_transaction_misuse_sequences(daemon: Daemon, wire: Wire) -> None:
    before = fingerprint(daemon)
    aborted = wire.txn()
    wire.call("Abort", pb.AbortRequest(txn_id=aborted))
    committed = wire.txn()
    wire.call("Commit", pb.CommitRequest(txn_id=committed))  # empty: writes nothing
    expired = pb.BeginTransactionResponse.FromString(
        wire.call("BeginTransaction", pb.BeginTransactionRequest(namespace="bad", timeout_ms=1))  # type: ignore[arg-type]
    ).txn_id
    time.sleep(0.01)  # let its 1 ms timeout pass: expiry is what is tested
    for txn_id, method, code, words in [
        (aborted, "Commit", C.FAILED_PRECONDITION, "was aborted"),
        (aborted, "Write", C.FAILED_PRECONDITION, "was aborted"),
        (committed, "Commit", C.FAILED_PRECONDITION, "already committed"),
        (committed, "Abort", C.FAILED_PRECONDITION, "cannot be aborted"),
        (expired, "Commit", C.ABORTED, "expired"),
        (expired, "Write", C.ABORTED, "expired"),
    ]:
        request = write(txn_id) if method == "Write" else getattr(pb, f"{method}Request")(txn_id=txn_id)
        with pytest.raises(grpc.RpcError) as info:
            wire.call(method, request)
        assert (info.value.code(), words in info.value.details()) == (code, True), info.value.details()
    assert fingerprint(daemon) == before


def test_open_transactions_per_namespace_are_bounded(daemon: Daemon, wire: Wire) -> None:
    opened = [wire.txn() for _ in range(50)]
    with pytest.raises(grpc.RpcError) as info:
        wire.txn()
    assert info.value.code() == C.RESOURCE_EXHAUSTED
    assert "50 open transactions (limit 50)" in info.value.details()
    wire.call("Abort", pb.AbortRequest(txn_id=opened[0]))
    assert wire.txn()  # room again
    other = wire.call("BeginTransaction", pb.BeginTransactionRequest(namespace="other"))
    assert other  # the bound is per namespace


def test_oversized_message_is_resource_exhausted(daemon_config, wire: Wire) -> None:  # type: ignore[no-untyped-def]
    huge = write(wire.txn(), value_json=b'"' + b"x" * (daemon_config.max_message_bytes + 10) + b'"')
    with pytest.raises(grpc.RpcError) as info:
        wire.call("Write", huge)
    assert info.value.code() == C.RESOURCE_EXHAUSTED
