"""W6 wake latency: agents blocked on a watch of their `approval` key, woken by another client's commit.

One writer (its own client or channel) grants approvals in rounds: a round
is one transaction writing the approval key of every watched agent (1, or
32 in one transaction: the fan-out case), then the writer waits until every
watcher has received it and pauses `ROUND_GAP_S`, so each round meets idle
watchers. Each watcher is a thread blocked in its watch's iterator; the
watchers share one client (one channel). A watcher's wake latency is the
time from the writer's commit returning to the watcher holding the decoded
event; it can be below zero, because a server tells its watchers as soon as
the commit is durable, in parallel with answering the writer. So the figures
compared with etcd are end to end: from the writer sending the commit.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from typing import Any

import grpc
import orjson

from benchmarks.agents import RPC_TIMEOUT_S, running_daemon
from benchmarks.common import BenchmarkError, percentile
from benchmarks.etcd import kv as etcd_kv
from benchmarks.etcd import rpc_pb2_grpc as etcd_grpc
from benchmarks.etcd.watch import EtcdWatch
from benchmarks.workloads import Case, Context, Outcome, etcd_server, interleave, scratch
from statehouse import Statehouse
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc

APPROVAL_KEY = "approval"
FAN_OUT = 32
ROUND_GAP_S = 0.005  # between rounds: approvals come to idle agents
WAKE_TIMEOUT_S = 10.0  # a watcher that has not seen a round by then fails the run
DRAIN_S = 0.05  # after the last round: time for a duplicate to show up before the check


def waiting_agent(run: int, index: int) -> str:
    return f"waiting-{run}-{index:02d}"


def wake_cases(ctx: Context) -> list[Case]:
    def etcd_case(watchers: int) -> Case:
        keys = (
            "1 watcher"
            if watchers == 1
            else f"{watchers} watchers on {watchers} keys, one Txn of {watchers} puts"
        )
        return Case("W6", "etcd", keys, watchers, "etcd")

    one, many = etcd_case(1), etcd_case(FAN_OUT)
    cases = [
        Case("W6", "statehouse", "1 watcher, SDK watch()", 1, "sdk", one.key if ctx.etcd else None),
        Case("W6", "statehouse", "1 watcher, raw Watch RPC", 1, "raw", one.key if ctx.etcd else None),
        Case(
            "W6", "statehouse",
            f"{FAN_OUT} watchers on {FAN_OUT} agents, one txn of {FAN_OUT} writes, SDK watch()",
            FAN_OUT, "sdk", many.key if ctx.etcd else None,
        ),
    ]  # fmt: skip
    return cases + ([one, many] if ctx.etcd else [])


class Approvals:
    """Which rounds each watcher has received and when; the writer waits here for a round to arrive."""

    def __init__(self, watchers: int) -> None:
        self._changed = threading.Condition()
        self.received: list[list[tuple[int, float]]] = [[] for _ in range(watchers)]
        self.errors: list[BaseException] = []

    def got(self, watcher: int, round_: int) -> None:
        now = time.perf_counter()
        with self._changed:
            self.received[watcher].append((round_, now))
            self._changed.notify_all()

    def failed(self, exc: BaseException) -> None:
        with self._changed:
            self.errors.append(exc)
            self._changed.notify_all()

    def wait_round(self, round_: int) -> None:
        """Until every watcher has received `round_` (or anything after it); raises if one failed."""

        def arrived() -> bool:
            return bool(self.errors) or all(mine and mine[-1][0] >= round_ for mine in self.received)

        with self._changed:
            if not self._changed.wait_for(arrived, WAKE_TIMEOUT_S):
                late = [i for i, mine in enumerate(self.received) if not mine or mine[-1][0] < round_]
                raise BenchmarkError(
                    f"watchers {late[:5]} did not see approval {round_} within {WAKE_TIMEOUT_S} s"
                )
            if self.errors:
                raise BenchmarkError(f"a watcher failed: {self.errors[0]!r}") from self.errors[0]

    def check_exactly_once(self, rounds: int) -> None:
        for watcher, mine in enumerate(self.received):
            seen = [round_ for round_, _ in mine]
            if seen != list(range(rounds)):
                raise BenchmarkError(
                    f"watcher {watcher} saw {len(seen)} approvals for {rounds} rounds "
                    f"(missing {sorted(set(range(rounds)) - set(seen))[:5]}, "
                    f"repeated {len(seen) - len(set(seen))})"
                )


def follow(
    events: Iterable[Any], rounds_of: Callable[[Any], Iterable[int]], watcher: int, approvals: Approvals
) -> None:
    """A watcher's thread: report every approval round its events carry, until the watch is cancelled."""
    try:
        for event in events:
            for round_ in rounds_of(event):
                approvals.got(watcher, round_)
    except BaseException as exc:
        approvals.failed(exc)


def grant_rounds(
    grant: Callable[[int], None], approvals: Approvals, rounds: int, warmup: int
) -> dict[str, float]:
    """Grant `rounds` approvals one after another; the figures of those after the first `warmup`."""
    sent, returned = [], []
    for round_ in range(rounds):
        sent.append(time.perf_counter())
        grant(round_)
        returned.append(time.perf_counter())
        approvals.wait_round(round_)
        time.sleep(ROUND_GAP_S)
    time.sleep(DRAIN_S)
    return wake_figures(approvals, sent, returned, warmup)


def wake_figures(
    approvals: Approvals, sent: Sequence[float], returned: Sequence[float], warmup: int
) -> dict[str, float]:
    """p50/p99 of the wakes from the commit sent (end to end) and from it returned (`wake_`)."""
    approvals.check_exactly_once(len(sent))
    timed = range(warmup, len(sent))
    woke = {r: [mine[r][1] for mine in approvals.received] for r in timed}
    after_send = sorted(t - sent[r] for r in timed for t in woke[r])
    after_return = sorted(t - returned[r] for r in timed for t in woke[r])
    all_awake = sorted(max(woke[r]) - sent[r] for r in timed)
    commits = sorted(returned[r] - sent[r] for r in timed)
    return {
        "p50_ms": percentile(after_send, 50) * 1000,
        "p99_ms": percentile(after_send, 99) * 1000,
        "wake_p50_ms": percentile(after_return, 50) * 1000,
        "wake_p99_ms": percentile(after_return, 99) * 1000,
        "all_awake_p50_ms": percentile(all_awake, 50) * 1000,
        "commit_p50_ms": percentile(commits, 50) * 1000,
        "approvals": len(timed),
        "wakes": len(after_send),
    }


def wake_workload(ctx: Context) -> Outcome:
    """W6: one daemon and one etcd for all runs; every run watches fresh agents (keys)."""
    runs = itertools.count()
    with scratch(ctx, "statehouse-bench-") as tmp, ExitStack() as stack:
        daemon = stack.enter_context(running_daemon(tmp / "data"))
        etcd = stack.enter_context(etcd_server(ctx, tmp / "etcd")) if ctx.etcd else None

        def run_one(case: Case) -> dict[str, float]:
            agents = [waiting_agent(next(runs), i) for i in range(case.threads)]
            if case.system == "etcd":
                assert etcd is not None
                return etcd_wake_run(ctx, etcd.addr, agents)
            return statehouse_wake_run(ctx, daemon.addr, agents, raw=case.shape == "raw")

        results = interleave(ctx, wake_cases(ctx), run_one)
    return Outcome(results)


def rounds_and_warmup(ctx: Context) -> tuple[int, int]:
    return ctx.sizes.warmup + ctx.sizes.w6_approvals, ctx.sizes.warmup


def statehouse_wake_run(ctx: Context, addr: str, agents: Sequence[str], raw: bool) -> dict[str, float]:
    rounds, warmup = rounds_and_warmup(ctx)
    approvals = Approvals(len(agents))
    with ExitStack() as stack:
        writer = stack.enter_context(Statehouse(addr))
        watching = stack.enter_context(Statehouse(addr))
        channel = stack.enter_context(grpc.insecure_channel(addr)) if raw else None
        threads, cancels = [], []
        for index, agent in enumerate(agents):
            if channel is not None:
                events, cancel = raw_watch(channel, agent)
                rounds_of = raw_rounds
            else:
                watch = watching.watch(agent, key_prefix=APPROVAL_KEY)
                events, cancel, rounds_of = watch, watch.cancel, sdk_rounds
            cancels.append(cancel)
            threads.append(threading.Thread(target=follow, args=(events, rounds_of, index, approvals)))
        for thread in threads:
            thread.start()

        def grant(round_: int) -> None:
            with writer.begin_transaction() as tx:
                for agent in agents:
                    tx.write(agent, APPROVAL_KEY, {"round": round_, "approved_by": "human"})

        try:
            return grant_rounds(grant, approvals, rounds, warmup)
        finally:
            for cancel in cancels:
                cancel()
            for thread in threads:
                thread.join(WAKE_TIMEOUT_S)


def sdk_rounds(event: Any) -> list[int]:
    return [op.value["round"] for op in event.operations if op.key == APPROVAL_KEY]


def raw_watch(channel: grpc.Channel, agent: str) -> tuple[Iterable[Any], Callable[[], Any]]:
    """The Watch RPC without the SDK: wait for the registration answer, then every later response."""
    request = pb.WatchRequest(namespace="default", agent_id=agent, key_prefix=APPROVAL_KEY, json_values=True)
    stream = pb_grpc.StatehouseServiceStub(channel).Watch(request)
    next(stream)  # sent once the daemon has registered the watch

    def events() -> Iterable[Any]:
        try:
            for response in stream:
                yield from response.events
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise

    return events(), stream.cancel


def raw_rounds(event: Any) -> list[int]:
    return [orjson.loads(op.value_json)["round"] for op in event.operations if op.key == APPROVAL_KEY]


def etcd_wake_run(ctx: Context, addr: str, agents: Sequence[str]) -> dict[str, float]:
    rounds, warmup = rounds_and_warmup(ctx)
    approvals = Approvals(len(agents))
    keys = [etcd_kv.etcd_key(agent, APPROVAL_KEY) for agent in agents]
    with grpc.insecure_channel(addr) as writer_channel, grpc.insecure_channel(addr) as watch_channel:
        stub = etcd_grpc.KVStub(writer_channel)
        watches = [EtcdWatch(watch_channel, key) for key in keys]
        threads = [
            threading.Thread(target=follow, args=(watch, etcd_rounds, index, approvals))
            for index, watch in enumerate(watches)
        ]
        for thread in threads:
            thread.start()

        def grant(round_: int) -> None:
            value = orjson.dumps({"round": round_, "approved_by": "human"})
            response = stub.Txn(etcd_kv.puts((key, value) for key in keys), timeout=RPC_TIMEOUT_S)
            if not response.succeeded:
                raise BenchmarkError("etcd did not apply a Txn without comparisons")

        try:
            return grant_rounds(grant, approvals, rounds, warmup)
        finally:
            for watch in watches:
                watch.cancel()
            for thread in threads:
                thread.join(WAKE_TIMEOUT_S)


def etcd_rounds(event: Any) -> list[int]:
    return [orjson.loads(event.kv.value)["round"]]
