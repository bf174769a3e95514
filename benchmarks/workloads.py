"""The workloads W1-W5 and the etcd peer's runs: which configurations, on which processes, in what order.

Every configuration (a `Case`) is run `runs` times and each run's figures
are kept; runs of a workload's configurations are interleaved (round r
starts at configuration r) so slow drift of the machine spreads over all of
them. Each function returns the cases with all their runs, plus facts about
the setup (how long a preload took) as `info`. The workloads of issue 5
(W6-W8) live in `wake`, `contention` and `paging`, on the same pieces.
"""

from __future__ import annotations

import itertools
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from benchmarks import agents
from benchmarks.agents import LegacyAgent, SdkAgent, SdkReader, agent_name, running_daemon
from benchmarks.common import BenchmarkError
from benchmarks.etcd import kv as etcd_kv
from benchmarks.etcd import rpc_pb2_grpc as etcd_grpc
from benchmarks.etcd.server import EtcdProcess
from benchmarks.harness import median_figures, rotated, run_workers, shares
from benchmarks.procstatus import ProcSampler
from statehouse import Statehouse
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc

PRELOAD_BATCH = 1000  # writes per preload transaction
PRELOAD_THREADS = 4
SEED_THREADS = 32  # W3's history is written by this many threads sharing one client
NAMESPACE_THREADS = 8
HISTORY_AGENT = "history"


@dataclass(frozen=True)
class Sizes:
    """How much each workload does per run."""

    w1_txns: int = 2000  # timed transactions per run, split over the agents
    w5_txns: int = 1000
    warmup: int = 5  # untimed operations per worker before the timed phase
    w2_keys: int = 100_000
    w2_reads: int = 5000  # timed reads per run, split over the readers
    w3_events: int = 100_000
    w4_namespaces: int = 10_000
    w4_idle_s: float = 2.0
    w6_approvals: int = 200  # timed approval rounds per run
    w7_increments: int = 100  # per client, 16 clients
    w8_keys: int = 100_000
    w8_versions: int = 10_000  # of the one key whose history is read
    w9_prefix_keys: int = 1_000_000  # under the prefix whose latest key is read
    w9_reads: int = 200  # timed operations per run of each W9 read case
    w10_keys: int = 100_000  # of the agent each W10 run purges
    w11_commits: int = 1_000_000  # W11's growth run
    w11_segment: int = 100_000  # commits per measured segment
    w12_commits: int = 30_000  # W12's steps per run


FULL = Sizes()
QUICK = Sizes(
    w1_txns=50,
    w5_txns=30,
    warmup=2,
    w2_keys=2000,
    w2_reads=500,
    w3_events=2000,
    w4_namespaces=200,
    w4_idle_s=0.5,
    w6_approvals=20,
    w7_increments=3,
    w8_keys=3000,
    w8_versions=300,
    w9_prefix_keys=5000,
    w9_reads=20,
    w10_keys=2000,
    w11_commits=4000,
    w11_segment=2000,
    w12_commits=2000,
)


@dataclass(frozen=True)
class Case:
    """One configuration of a workload; `peer` names the etcd case it is compared with."""

    workload: str
    system: str  # "statehouse" or "etcd"
    label: str
    threads: int  # concurrent workers
    shape: str  # how the workers run, e.g. "shared" (one client) or "own" (a client each)
    peer: str | None = None  # the key of the etcd case

    @property
    def key(self) -> str:
        return f"{self.workload} {self.system}: {self.label}"


@dataclass
class CaseResult:
    case: Case
    runs: list[dict[str, float]] = field(default_factory=list)

    def median(self) -> dict[str, float]:
        return median_figures(self.runs)


@dataclass
class Outcome:
    """What one workload produced."""

    results: list[CaseResult]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What every workload needs: how much to do, how often, where, and where to report progress."""

    sizes: Sizes
    runs: int
    tmp_root: Path | None
    etcd: str | None  # the etcd binary, or None to skip the peer
    progress: Callable[[str], None]


def interleave(
    ctx: Context, cases: Sequence[Case], run_one: Callable[[Case], dict[str, float]]
) -> list[CaseResult]:
    """Run every case `ctx.runs` times, round r starting at case r; report each run as it ends."""
    results = {case.key: CaseResult(case) for case in cases}
    for run in range(ctx.runs):
        for case in rotated(cases, run):
            figures = run_one(case)
            results[case.key].runs.append(figures)
            shown = "  ".join(f"{name} {value:,.2f}" for name, value in list(figures.items())[:3])
            ctx.progress(f"  run {run + 1}/{ctx.runs}  {case.key:<58} {shown}")
    return list(results.values())


@contextmanager
def scratch(ctx: Context, prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix, dir=ctx.tmp_root) as tmp:
        yield Path(tmp)


@contextmanager
def etcd_server(ctx: Context, data_dir: Path) -> Iterator[EtcdProcess]:
    assert ctx.etcd is not None
    try:
        etcd = EtcdProcess(data_dir, ctx.etcd).start()
    except RuntimeError as exc:
        raise BenchmarkError(str(exc)) from exc
    try:
        yield etcd
    finally:
        etcd.stop()


# -- W1 agent steps, W5 the old contract, and etcd's W1 ------------------------------------


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def commit_cases(ctx: Context, w1: bool, w5: bool) -> list[Case]:
    """W1's and W5's configurations and, with etcd, etcd's W1 at the same agent counts."""

    def etcd_w1(threads: int) -> str:
        return f"W1 etcd: {plural(threads, 'agent')}, one shared channel"

    cases = []
    if w1:
        cases += [
            Case("W1", "statehouse", "1 agent", 1, "shared", etcd_w1(1)),
            Case("W1", "statehouse", "8 agents, one shared client", 8, "shared", etcd_w1(8)),
            Case("W1", "statehouse", "32 agents, one shared client", 32, "shared", etcd_w1(32)),
            Case("W1", "statehouse", "32 agents, one client each", 32, "own", etcd_w1(32)),
        ]
    if w5:
        cases += [
            Case("W5", "statehouse", "1 client (0.1.1 contract)", 1, "legacy", etcd_w1(1)),
            Case("W5", "statehouse", "8 clients (0.1.1 contract)", 8, "legacy", etcd_w1(8)),
        ]
    if ctx.etcd:
        for threads in (1, 8, 32) if w1 else (1, 8):
            label = etcd_w1(threads).removeprefix("W1 etcd: ")
            cases.append(Case("W1", "etcd", label, threads, "txn"))
    return cases


def commit_workloads(ctx: Context, w1: bool, w5: bool) -> Outcome:
    """W1 and W5 (and etcd's W1), interleaved together; each run on a fresh daemon or etcd."""

    def run_one(case: Case) -> dict[str, float]:
        txns = ctx.sizes.w5_txns if case.workload == "W5" else ctx.sizes.w1_txns
        if case.system == "etcd":
            return etcd_commit_run(ctx, case, txns)
        return statehouse_commit_run(ctx, case, txns)

    return Outcome(interleave(ctx, commit_cases(ctx, w1, w5), run_one))


def statehouse_commit_run(ctx: Context, case: Case, txns: int) -> dict[str, float]:
    warmup, counts = ctx.sizes.warmup, shares(txns, case.threads)
    with (
        scratch(ctx, "statehouse-bench-") as tmp,
        running_daemon(tmp / "data") as daemon,
        ExitStack() as stack,
    ):
        workers: Sequence[SdkAgent | LegacyAgent]
        if case.shape == "legacy":
            channels = [stack.enter_context(grpc.insecure_channel(daemon.addr)) for _ in range(case.threads)]
            stubs = [pb_grpc.StatehouseServiceStub(channel) for channel in channels]
            workers = [LegacyAgent(stub, agent_name(i)) for i, stub in enumerate(stubs)]
        else:
            own = case.shape == "own"
            clients = [
                stack.enter_context(Statehouse(daemon.addr)) for _ in range(case.threads if own else 1)
            ]
            workers = [SdkAgent(clients[i % len(clients)], agent_name(i)) for i in range(case.threads)]
        timed = run_workers(workers, counts, warmup)
        checker = stack.enter_context(Statehouse(daemon.addr))
        for worker, count in zip(workers, counts, strict=True):
            agents.check_agent(checker, worker.agent, warmup + count, worker.commit_ts)
    # The daemon has stopped: its log is complete.
    lines = agents.commit_lines(daemon, [ts for worker in workers for ts in worker.commit_ts])
    timed_lines = [lines[ts] for worker in workers for ts in worker.commit_ts[warmup:]]
    return {**timed.figures(), **agents.log_figures(timed_lines)}


def etcd_commit_run(ctx: Context, case: Case, txns: int) -> dict[str, float]:
    warmup, counts = ctx.sizes.warmup, shares(txns, case.threads)
    with scratch(ctx, "etcd-bench-") as tmp, etcd_server(ctx, tmp / "etcd") as etcd:
        with grpc.insecure_channel(etcd.addr) as channel:
            stub = etcd_grpc.KVStub(channel)
            workers = [etcd_kv.EtcdAgent(stub, agent_name(i)) for i in range(case.threads)]
            timed = run_workers(workers, counts, warmup)
            for worker, count in zip(workers, counts, strict=True):
                etcd_kv.check_agent(stub, worker.agent, warmup + count, worker.revisions)
    revisions = [rev for worker in workers for rev in worker.revisions]
    if len(set(revisions)) != len(revisions):
        raise BenchmarkError("etcd returned one revision to two transactions")
    return timed.figures()


# -- W2 reads ----------------------------------------------------------------------


def read_cases(ctx: Context) -> list[Case]:
    """W2's configurations, each beside its etcd counterpart when etcd runs."""
    cases = []
    for threads in (1, 8):
        readers = plural(threads, "reader")
        for shape, ours, theirs in (
            ("latest", f"get latest, {readers}", f"range latest, {readers}"),
            ("at_version", f"get at version, {readers}", f"range at revision, {readers}"),
        ):
            peer = Case("W2", "etcd", theirs, threads, shape)
            cases.append(Case("W2", "statehouse", ours, threads, shape, peer.key if ctx.etcd else None))
            if ctx.etcd:
                cases.append(peer)
    return cases


def read_workload(ctx: Context) -> Outcome:
    """W2: one daemon and one etcd hold the same preloaded store; the read cases are interleaved."""
    sizes, info = ctx.sizes, {}
    batches = [
        range(first, min(first + PRELOAD_BATCH, sizes.w2_keys))
        for first in range(0, sizes.w2_keys, PRELOAD_BATCH)
    ]
    picks = random.Random(2).choices(range(sizes.w2_keys), k=sizes.w2_reads + 64 * sizes.warmup)
    with (
        scratch(ctx, "statehouse-bench-") as tmp,
        running_daemon(tmp / "data") as daemon,
        Statehouse(daemon.addr) as client,
    ):
        info["statehouse_preload_keys_per_s"] = preload_rate(
            lambda batch: agents.preload(client, batch), batches
        )
        with etcd_for_reads(ctx, tmp, batches, info) as etcd_reader:

            def readers(case: Case) -> list[Any]:
                slices = [picks[i :: case.threads] for i in range(case.threads)]
                at_version = case.shape == "at_version"
                if case.system == "etcd":
                    assert etcd_reader is not None
                    return [etcd_reader(mine, at_version) for mine in slices]
                return [SdkReader(client, mine, at_version) for mine in slices]

            def run_one(case: Case) -> dict[str, float]:
                counts = shares(sizes.w2_reads, case.threads)
                return run_workers(readers(case), counts, sizes.warmup).figures()

            results = interleave(ctx, read_cases(ctx), run_one)
    return Outcome(results, info)


def preload_rate(load: Callable[[range], Any], batches: Sequence[range]) -> float:
    """Run `load` on every batch from a few threads; returns keys loaded per second."""
    began = time.perf_counter()
    with ThreadPoolExecutor(PRELOAD_THREADS) as pool:
        list(pool.map(load, batches))
    return sum(len(batch) for batch in batches) / (time.perf_counter() - began)


@contextmanager
def etcd_for_reads(
    ctx: Context, tmp: Path, batches: Sequence[range], info: dict[str, Any]
) -> Iterator[Callable[[Sequence[int], bool], etcd_kv.EtcdReader] | None]:
    """A preloaded etcd, as a factory of readers over it; None without etcd."""
    if ctx.etcd is None:
        yield None
        return
    with etcd_server(ctx, tmp / "etcd") as etcd, grpc.insecure_channel(etcd.addr) as channel:
        stub = etcd_grpc.KVStub(channel)
        batch_revision: dict[int, int] = {}

        def load(batch: range) -> None:
            batch_revision[batch.start] = etcd_kv.preload(stub, batch)

        info["etcd_preload_keys_per_s"] = preload_rate(load, batches)
        revisions = [batch_revision[batch.start] for batch in batches for _ in batch]
        yield lambda picks, at_revision: etcd_kv.EtcdReader(stub, picks, revisions, at_revision)


# -- W3 replay -----------------------------------------------------------------------


class HistoryWriter:
    """Commits single-write transactions to the history agent's key `note-<writer>`."""

    def __init__(self, client: Statehouse, writer: int) -> None:
        self.client = client
        self.writer = writer
        self.key = f"note-{writer}"
        self.commits = 0

    def prepare(self, step: int) -> dict[str, Any]:
        return {"writer": self.writer, "step": step, "thought": "x" * 180}

    def run(self, value: dict[str, Any]) -> None:
        with self.client.begin_transaction() as tx:
            tx.write(HISTORY_AGENT, self.key, value)
        self.commits += 1


REPLAY_CASES = (
    Case("W3", "statehouse", "SDK replay()", 1, "sdk"),
    Case("W3", "statehouse", "raw ReplayBatches RPC, no decoding", 1, "raw_batches"),
    Case("W3", "statehouse", "raw Replay RPC, one event per message", 1, "raw_replay"),
)


def replay_workload(ctx: Context) -> Outcome:
    """W3: write one agent's history through the SDK, restart the daemon, replay it the three ways."""
    events, info = ctx.sizes.w3_events, {}
    with scratch(ctx, "statehouse-bench-") as tmp:
        # Written on one daemon and read on the next, whose log is not burdened with the writes.
        with running_daemon(tmp / "data") as daemon, Statehouse(daemon.addr) as client:
            writers = [HistoryWriter(client, i) for i in range(SEED_THREADS)]
            seeded = run_workers(writers, shares(events, SEED_THREADS), 0)
            info["history_written_commits_per_s"] = seeded.figures()["ops_per_s"]
            for writer in writers:
                if client.get_state(HISTORY_AGENT, writer.key).version != writer.commits:
                    raise BenchmarkError(f"{HISTORY_AGENT}/{writer.key}: version is not {writer.commits}")
        with (
            running_daemon(tmp / "data") as daemon,
            Statehouse(daemon.addr) as client,
            grpc.insecure_channel(daemon.addr) as channel,
        ):
            check_history(client, events)
            stub = pb_grpc.StatehouseServiceStub(channel)
            results = interleave(ctx, REPLAY_CASES, lambda case: replay_once(case, client, stub, events))
    return Outcome(results, info)


def check_history(client: Statehouse, events: int) -> None:
    """The history replays as `events` single-write events in increasing commit_ts order."""
    commit_ts = [event.commit_ts for event in client.replay(HISTORY_AGENT)]
    if len(commit_ts) != events or any(b <= a for a, b in itertools.pairwise(commit_ts)):
        raise BenchmarkError(f"replay returned {len(commit_ts)} events for {events} commits, or out of order")


def replay_once(
    case: Case, client: Statehouse, stub: pb_grpc.StatehouseServiceStub, events: int
) -> dict[str, float]:
    request = pb.ReplayRequest(namespace="default", agent_id=HISTORY_AGENT, json_values=True)
    began = time.perf_counter()
    if case.shape == "sdk":
        seen = operations = 0
        for event in client.replay(HISTORY_AGENT):
            seen += 1
            operations += len(event.operations)
    elif case.shape == "raw_batches":
        seen = operations = sum(len(batch.events) for batch in stub.ReplayBatches(request, timeout=600))
    else:
        seen = operations = sum(1 for _ in stub.Replay(request, timeout=600))
    elapsed = time.perf_counter() - began
    if seen != events or operations != events:
        raise BenchmarkError(f"{case.key}: {seen} events ({operations} operations), expected {events}")
    return {"events_per_s": events / elapsed, "elapsed_s": elapsed}


# -- W4 many namespaces ----------------------------------------------------------------


class NamespaceToucher:
    """Commits one small transaction in each namespace `ns-<i>` with i = first, first + stride, ..."""

    def __init__(self, client: Statehouse, first: int, stride: int) -> None:
        self.client = client
        self.first = first
        self.stride = stride
        self.commit_ts: list[int] = []

    def prepare(self, step: int) -> int:
        return self.first + step * self.stride

    def run(self, index: int) -> None:
        with self.client.begin_transaction(namespace=f"ns-{index}") as tx:
            tx.write("agent", "touched", {"namespace": index})
        if tx.commit_ts is None:
            raise BenchmarkError(f"ns-{index}: the transaction left the with block without a commit_ts")
        self.commit_ts.append(tx.commit_ts)


def namespace_workload(ctx: Context) -> Outcome:
    """W4: on a fresh daemon, one transaction in each of N namespaces, then idle; sample the daemon."""
    count = ctx.sizes.w4_namespaces
    case = Case("W4", "statehouse", "one transaction per namespace", NAMESPACE_THREADS, "namespaces")

    def run_one(case: Case) -> dict[str, float]:
        with scratch(ctx, "statehouse-bench-") as tmp:
            with running_daemon(tmp / "data") as daemon:
                assert daemon.process is not None
                with ProcSampler(daemon.process.pid) as sampler, Statehouse(daemon.addr) as client:
                    workers = [
                        NamespaceToucher(client, i, NAMESPACE_THREADS) for i in range(NAMESPACE_THREADS)
                    ]
                    timed = run_workers(workers, shares(count, NAMESPACE_THREADS), 0)
                    time.sleep(ctx.sizes.w4_idle_s)
                    check_namespaces(client, count)
                stopping = time.perf_counter()
            stopped_s = time.perf_counter() - stopping
        agents.commit_lines(daemon, [ts for worker in workers for ts in worker.commit_ts])
        idle = sampler.samples[-1]
        return {
            "peak_threads": max(s["threads"] for s in sampler.samples),
            "peak_rss_mb": max(s["rss_kb"] for s in sampler.samples) / 1024,
            "hwm_mb": idle["hwm_kb"] / 1024,
            "threads_at_start": sampler.samples[0]["threads"],
            "threads_idle": idle["threads"],
            "rss_idle_mb": idle["rss_kb"] / 1024,
            "namespaces_per_s": timed.figures()["ops_per_s"],
            "stop_s": stopped_s,
            "samples": len(sampler.samples),
        }

    return Outcome(interleave(ctx, [case], run_one))


def check_namespaces(client: Statehouse, count: int) -> None:
    """A sample of the namespaces holds what was written in each."""
    for index in random.Random(4).sample(range(count), min(count, 100)):
        state = client.get_state("agent", "touched", namespace=f"ns-{index}")
        if state.value != {"namespace": index}:
            raise BenchmarkError(f"ns-{index}: read {state.value!r}")
