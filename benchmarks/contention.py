"""W7 contended counter: 16 clients increment one counter by read, then conditional write, retrying.

An increment reads the counter (its value and version), then commits value
+ 1 on the condition that the version is still the one read; a conflict
(another client got there first) starts the increment over at once, without
backoff. One more row does the same through the SDK's `update()`, which
waits a short jittered backoff after a conflict. Whatever the interleaving,
the final count must be exact.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Protocol

import grpc

from benchmarks.agents import running_daemon
from benchmarks.common import BenchmarkError
from benchmarks.etcd import kv as etcd_kv
from benchmarks.etcd import rpc_pb2_grpc as etcd_grpc
from benchmarks.harness import Timed, run_workers
from benchmarks.workloads import Case, Context, Outcome, etcd_server, interleave, scratch
from statehouse import ConflictError, Statehouse

CLIENTS = 16
COUNTER_AGENT = "counter"


class Incrementer(Protocol):
    conflicts: list[int]

    def prepare(self, step: int) -> None: ...

    def run(self, prepared: None) -> None: ...


class SdkIncrementer:
    """An increment through the SDK: get_state, then a transaction writing value + 1 with
    expected_version; ConflictError means someone else incremented in between."""

    def __init__(self, client: Statehouse, key: str) -> None:
        self.client = client
        self.key = key
        self.conflicts: list[int] = []  # per increment, in order

    def prepare(self, step: int) -> None:
        return None

    def run(self, _: None) -> None:
        conflicts = 0
        while True:
            state = self.client.get_state(COUNTER_AGENT, self.key)
            try:
                with self.client.begin_transaction() as tx:
                    tx.write(COUNTER_AGENT, self.key, state.value + 1, expected_version=state.version)
            except ConflictError:
                conflicts += 1
                continue
            self.conflicts.append(conflicts)
            return


class UpdateIncrementer:
    """An increment through `client.update(agent, key, fn)`: the same read and conditional
    write, with a jittered backoff after each conflict (not counted: update() hides them)."""

    def __init__(self, client: Statehouse, key: str) -> None:
        self.client = client
        self.key = key
        self.conflicts: list[int] = []

    def prepare(self, step: int) -> None:
        return None

    def run(self, _: None) -> None:
        self.client.update(COUNTER_AGENT, self.key, lambda count: count + 1)


def contention_cases(ctx: Context) -> list[Case]:
    peer = Case("W7", "etcd", f"{CLIENTS} clients, one channel each", CLIENTS, "own")
    theirs = peer.key if ctx.etcd else None
    return [
        Case("W7", "statehouse", f"{CLIENTS} clients, one client each", CLIENTS, "own", theirs),
        Case("W7", "statehouse", f"{CLIENTS} threads sharing one client", CLIENTS, "shared", theirs),
        Case("W7", "statehouse", f"{CLIENTS} clients, one client each, update()", CLIENTS, "update", theirs),
        *([peer] if ctx.etcd else []),
    ]


def contention_workload(ctx: Context) -> Outcome:
    """W7: one daemon and one etcd for all runs; every run increments a fresh counter from 0."""
    counters = itertools.count()
    with scratch(ctx, "statehouse-bench-") as tmp, ExitStack() as stack:
        daemon = stack.enter_context(running_daemon(tmp / "data"))
        etcd = stack.enter_context(etcd_server(ctx, tmp / "etcd")) if ctx.etcd else None

        def run_one(case: Case) -> dict[str, float]:
            key = f"count-{next(counters)}"
            if case.system == "etcd":
                assert etcd is not None
                return etcd_counter_run(ctx, etcd.addr, etcd_kv.etcd_key(COUNTER_AGENT, key))
            return statehouse_counter_run(ctx, daemon.addr, key, case.shape)

        results = interleave(ctx, contention_cases(ctx), run_one)
    return Outcome(results)


def counter_figures(timed: Timed, workers: Sequence[Incrementer], warmup: int) -> dict[str, float]:
    if not any(worker.conflicts for worker in workers):  # not counted
        return timed.figures()
    conflicts = sum(sum(worker.conflicts[warmup:]) for worker in workers)
    return {
        **timed.figures(),
        "conflicts_per_increment": conflicts / timed.ops,
        "max_conflicts": max(max(worker.conflicts[warmup:]) for worker in workers),
    }


def statehouse_counter_run(ctx: Context, addr: str, key: str, shape: str) -> dict[str, float]:
    """`shape`: "own" (a client per thread), "shared" (one client), "update" (own, via update())."""
    warmup, each = ctx.sizes.warmup, ctx.sizes.w7_increments
    with ExitStack() as stack:
        clients = [stack.enter_context(Statehouse(addr)) for _ in range(1 if shape == "shared" else CLIENTS)]
        with clients[0].begin_transaction() as tx:
            tx.write(COUNTER_AGENT, key, 0, expected_version=0)
        kind = UpdateIncrementer if shape == "update" else SdkIncrementer
        workers: list[Incrementer] = [kind(clients[i % len(clients)], key) for i in range(CLIENTS)]
        timed = run_workers(workers, [each] * CLIENTS, warmup)
        state = clients[0].get_state(COUNTER_AGENT, key)
    total = CLIENTS * (warmup + each)
    if state.value != total or state.version != total + 1:
        raise BenchmarkError(
            f"counter {key}: {total} increments acknowledged, but it holds {state.value!r} "
            f"at version {state.version} (expected {total} at version {total + 1})"
        )
    return counter_figures(timed, workers, warmup)


def etcd_counter_run(ctx: Context, addr: str, key: bytes) -> dict[str, float]:
    warmup, each = ctx.sizes.warmup, ctx.sizes.w7_increments
    with ExitStack() as stack:
        stubs = [etcd_grpc.KVStub(stack.enter_context(grpc.insecure_channel(addr))) for _ in range(CLIENTS)]
        if not stubs[0].Txn(etcd_kv.puts([(key, b"0")])).succeeded:
            raise BenchmarkError("etcd did not apply a Txn without comparisons")
        workers = [etcd_kv.EtcdIncrementer(stub, key) for stub in stubs]
        timed = run_workers(workers, [each] * CLIENTS, warmup)
        value, version = etcd_kv.counter(stubs[0], key)
    total = CLIENTS * (warmup + each)
    if value != total or version != total + 1:
        raise BenchmarkError(
            f"etcd counter {key!r}: {total} increments acknowledged, but it holds {value} "
            f"at version {version} (expected {total} at version {total + 1})"
        )
    return counter_figures(timed, workers, warmup)
