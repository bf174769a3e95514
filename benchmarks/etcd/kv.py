"""The peer's workers: the agent steps, reads and counter increments of statehoused's, through etcd's KV API.

An agent step is one `Txn` of three `RequestPut`s (key `/agents/<agent>/<key>`,
value the orjson bytes of the same agent-state dict); a read is a `Range` of
one key, latest or at the revision that wrote it. Values are encoded and
decoded inside the timing, as the Statehouse SDK does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from benchmarks.agents import RPC_TIMEOUT_S, VALUE_POOL, reader_key, reader_value, step_values
from benchmarks.common import BenchmarkError
from benchmarks.etcd import rpc_pb2 as etcd_pb
from benchmarks.etcd import rpc_pb2_grpc as etcd_grpc


def etcd_key(agent: str, key: str) -> bytes:
    return f"/agents/{agent}/{key}".encode()


def puts(items: Iterable[tuple[bytes, bytes]]) -> etcd_pb.TxnRequest:
    """A Txn without comparisons, so etcd applies every put in `success`."""
    return etcd_pb.TxnRequest(
        success=[etcd_pb.RequestOp(request_put=etcd_pb.PutRequest(key=k, value=v)) for k, v in items]
    )


class EtcdAgent:
    """An agent step as one etcd Txn of three puts."""

    def __init__(self, stub: etcd_grpc.KVStub, agent: str) -> None:
        self.stub = stub
        self.agent = agent
        self.revisions: list[int] = []

    def prepare(self, step: int) -> list[tuple[str, dict[str, Any]]]:
        return step_values(self.agent, step)

    def run(self, values: list[tuple[str, dict[str, Any]]]) -> None:
        request = puts((etcd_key(self.agent, key), orjson.dumps(value)) for key, value in values)
        response = self.stub.Txn(request, timeout=RPC_TIMEOUT_S)
        if not response.succeeded:
            raise BenchmarkError(f"{self.agent}: etcd did not apply a Txn without comparisons")
        self.revisions.append(response.header.revision)


def check_agent(stub: etcd_grpc.KVStub, agent: str, steps: int, revisions: Sequence[int]) -> None:
    """The agent's keys were put once per step (etcd's `version`) and hold the last step's values."""
    if len(revisions) != steps or any(b <= a for a, b in itertools.pairwise(revisions)):
        raise BenchmarkError(f"{agent}: {len(revisions)} revisions for {steps} steps, or not increasing")
    for key, expected in step_values(agent, steps - 1):
        (kv,) = stub.Range(etcd_pb.RangeRequest(key=etcd_key(agent, key)), timeout=RPC_TIMEOUT_S).kvs
        if kv.version != steps or orjson.loads(kv.value) != expected or kv.mod_revision != revisions[-1]:
            raise BenchmarkError(
                f"etcd {agent}/{key}: expected version {steps} holding step {steps - 1}, "
                f"got version {kv.version} holding step {orjson.loads(kv.value).get('step')}"
            )


class EtcdReader:
    """Reads keys of W2's store: a Range of one key, latest or at the revision that wrote it."""

    def __init__(
        self, stub: etcd_grpc.KVStub, picks: Sequence[int], revisions: Sequence[int], at_revision: bool
    ) -> None:
        self.stub = stub
        self.picks = picks
        self.revisions = revisions
        self.at_revision = at_revision

    def prepare(self, step: int) -> tuple[bytes, int, int]:
        index = self.picks[step % len(self.picks)]
        return etcd_key(*reader_key(index)), self.revisions[index] if self.at_revision else 0, index

    def run(self, pick: tuple[bytes, int, int]) -> None:
        key, revision, index = pick
        response = self.stub.Range(etcd_pb.RangeRequest(key=key, revision=revision), timeout=RPC_TIMEOUT_S)
        if len(response.kvs) != 1 or orjson.loads(response.kvs[0].value)["step"] != index % VALUE_POOL:
            raise BenchmarkError(f"etcd {key!r}: read {len(response.kvs)} keys or the wrong value")


def preload(stub: etcd_grpc.KVStub, indices: Sequence[int]) -> int:
    """Put keys `indices` of W2's store in one Txn; returns the revision that wrote them."""
    pool = [orjson.dumps(reader_value(i)) for i in range(VALUE_POOL)]
    request = puts((etcd_key(*reader_key(i)), pool[i % VALUE_POOL]) for i in indices)
    return int(stub.Txn(request, timeout=RPC_TIMEOUT_S).header.revision)


class EtcdIncrementer:
    """W7's increment through etcd: Range the counter, then a Txn that puts value + 1 only if the
    key's mod_revision is still the one read; a Txn that did not succeed is a conflict, and retried."""

    def __init__(self, stub: etcd_grpc.KVStub, key: bytes) -> None:
        self.stub = stub
        self.key = key
        self.conflicts: list[int] = []  # per increment, in order

    def prepare(self, step: int) -> None:
        return None

    def run(self, _: None) -> None:
        conflicts = 0
        while True:
            (kv,) = self.stub.Range(etcd_pb.RangeRequest(key=self.key), timeout=RPC_TIMEOUT_S).kvs
            unchanged = etcd_pb.Compare(
                result=etcd_pb.Compare.EQUAL,
                target=etcd_pb.Compare.MOD,
                key=self.key,
                mod_revision=kv.mod_revision,
            )
            put = etcd_pb.RequestOp(
                request_put=etcd_pb.PutRequest(key=self.key, value=b"%d" % (int(kv.value) + 1))
            )
            request = etcd_pb.TxnRequest(compare=[unchanged], success=[put])
            if self.stub.Txn(request, timeout=RPC_TIMEOUT_S).succeeded:
                self.conflicts.append(conflicts)
                return
            conflicts += 1


def counter(stub: etcd_grpc.KVStub, key: bytes) -> tuple[int, int]:
    """The counter's value and etcd version (puts since creation)."""
    (kv,) = stub.Range(etcd_pb.RangeRequest(key=key), timeout=RPC_TIMEOUT_S).kvs
    return int(kv.value), int(kv.version)
