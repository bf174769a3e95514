"""The user's deployment: agents in processes of their own, each agent its own client.

    .venv/bin/python -m benchmarks.deployment [--quick] [--runs N] [--processes 4] [--threads 8]
                                              [--plain-calls] [--held 2000] [--namespaces-only]

Rows, each against a fresh statehoused (and, when an `etcd` binary is on
PATH, a fresh single-node etcd beside it, driven the same way):

- **separate processes**: `--processes` processes of `--threads` threads,
  each thread an agent with a client of its own (a `Statehouse`; for etcd,
  a gRPC channel of its own), committing W1 steps (a transaction of 3
  writes of ~1 KB). Commits/s from the moment all agents are connected and
  warm to the last one's end, and the **server's CPU per commit**: the
  daemon's (or etcd's) user+system time from `/proc/<pid>/stat` over the
  timed part, divided by the commits; and the clients' CPU per commit (the
  agent processes' own user+system time).
- **1 agent, sequential**: p50 and p99 of a commit, one client. And, with
  etcd on PATH, **in turn with the peer**: one agent commits to a fresh
  statehoused and a fresh etcd alternately (S E E S S E ...), so that both
  see the machine alike. On these VMs an fsync takes ~150 µs in some
  stretches and ~700 µs in others, which moves a run's p50 by half, so
  rows measured tens of seconds apart can disagree by that much; the
  target line uses the row in turn.
- **32 agents in one process**: 32 asyncio tasks on one `AsyncStatehouse`,
  beside 32 threads on one `Statehouse` (Statehouse only).
- **many namespaces** (Statehouse only): a transaction left open in each of
  2,000 namespaces (begun with the original contract's `BeginTransaction`,
  as an agent that has not committed yet); the daemon's threads and memory
  then, what opening one more costs, and what a commit in each of 500 fresh
  namespaces costs beside them. `--held` sets the 2,000; `--namespaces-only`
  runs this row alone.

Each row is run `--runs` times (3 by default), the runs of the systems
interleaved; the table gives medians and ours/etcd ratios from the same
invocation, and the targets of issue 16. The SDK sends its calls on the
daemon's local socket, which the daemon names on its first session stream
(statehouse._local); `--no-local` runs statehoused without one, so the SDK
sends them on session streams over gRPC; `--plain-calls` measures it with
every call an RPC of its own (`Statehouse(sessions=False)`), as before
sessions. The row in turn also has etcd reached over its own Unix socket.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import orjson

from benchmarks.agents import step_values
from benchmarks.common import percentile
from benchmarks.etcd import kv as etcd_kv
from benchmarks.etcd import rpc_pb2_grpc as etcd_grpc
from benchmarks.etcd.server import EtcdProcess
from benchmarks.harness import timed_threads
from statehouse import AsyncStatehouse, Statehouse
from statehouse.testing import DaemonProcess

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# -- the systems ---------------------------------------------------------------------------


@contextmanager
def statehouse_server(root: Path, local: bool = True) -> Iterator[tuple[str, int]]:
    """A statehoused on `root`; `local` False: with no local socket (gRPC only)."""
    env = None if local else {"STATEHOUSE_LOCAL_SOCKET": "off"}
    daemon = DaemonProcess(root / "data", env=env).start()
    try:
        assert daemon.process is not None
        yield daemon.addr, daemon.process.pid
    finally:
        daemon.stop()


@contextmanager
def etcd_server(root: Path, binary: str, unix: bool = False) -> Iterator[tuple[str, int]]:
    """An etcd on `root`: its TCP address (`unix`: its Unix socket's) and pid."""
    etcd = EtcdProcess(root / "etcd", binary).start()
    try:
        assert etcd.process is not None
        yield etcd.unix_addr if unix else etcd.addr, etcd.process.pid
    finally:
        etcd.stop()


class Agent:
    """One agent committing W1 steps over a connection of its own."""

    def __init__(self, system: str, addr: str, name: str, sessions: bool = True, local: bool = True) -> None:
        self.system, self.name = system, name
        if system == "statehouse":
            self.client = Statehouse(addr, timeout=120, sessions=sessions, local=local)
        else:
            self.channel = grpc.insecure_channel(addr)
            self.stub = etcd_grpc.KVStub(self.channel)

    def step(self, n: int) -> None:
        values = step_values(self.name, n)
        if self.system == "statehouse":
            with self.client.begin_transaction() as tx:
                for key, value in values:
                    tx.write(self.name, key, value)
        else:
            request = etcd_kv.puts((etcd_kv.etcd_key(self.name, k), orjson.dumps(v)) for k, v in values)
            if not self.stub.Txn(request, timeout=120).succeeded:
                raise RuntimeError("etcd did not apply a Txn without comparisons")

    def close(self) -> None:
        if self.system == "statehouse":
            self.client.close()
        else:
            self.channel.close()


def _agents_process(
    system: str,
    addr: str,
    process: int,
    threads: int,
    steps: int,
    ready: Any,
    go: Any,
    out: Any,
    sessions: bool = True,
) -> None:
    agents = [Agent(system, addr, f"p{process}-a{t}", sessions) for t in range(threads)]
    for agent in agents:
        agent.step(0)  # connected and warm before the clock starts
    ready.put(process)
    go.wait()

    def run(t: int) -> None:
        for n in range(1, steps + 1):
            agents[t].step(n)

    error = None
    before = os.times()
    try:
        timed_threads(run, threads)
    except BaseException as exc:  # reported to the parent
        error = repr(exc)
    after = os.times()
    for agent in agents:
        agent.close()
    out.put((time.time(), error, after.user + after.system - before.user - before.system))


def separate_processes(
    system: str, addr: str, pid: int, processes: int, threads: int, steps: int, sessions: bool = True
) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    ready, out, go = context.Queue(), context.Queue(), context.Event()
    workers = [
        context.Process(
            target=_agents_process, args=(system, addr, p, threads, steps, ready, go, out, sessions)
        )
        for p in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=300)
    cpu_before, started = cpu_seconds(pid), time.time()
    go.set()
    ends = [out.get(timeout=1800) for _ in workers]
    cpu_used = cpu_seconds(pid) - cpu_before
    for worker in workers:
        worker.join()
    failures = [error for _, error, _ in ends if error]
    if failures:
        raise RuntimeError(f"an agent failed: {failures[0]}")
    commits = processes * threads * steps
    elapsed = max(end for end, _, _ in ends) - started
    return {
        "commits/s": commits / elapsed,
        "server CPU us/commit": cpu_used / commits * 1e6,
        "client CPU us/commit": sum(cpu for _, _, cpu in ends) / commits * 1e6,
    }


def sequential(system: str, addr: str, steps: int, sessions: bool = True) -> dict[str, float]:
    agent = Agent(system, addr, "sequential", sessions)
    agent.step(0)
    took = []
    for n in range(1, steps + 1):
        started = time.perf_counter()
        agent.step(n)
        took.append(time.perf_counter() - started)
    agent.close()
    p50, p99 = p50_p99_ms(took)
    return {"p50 ms": p50, "p99 ms": p99}


def p50_p99_ms(seconds: list[float]) -> tuple[float, float]:
    """The p50 and p99 of `seconds`, in milliseconds."""
    ordered = sorted(seconds)
    return percentile(ordered, 50) * 1000, percentile(ordered, 99) * 1000


def steps_in_turn(agents: dict[str, Any], warm: int, steps: int) -> dict[str, list[float]]:
    """`warm` steps of each agent, then `steps` more of each in turn, the order changing every
    step (for two: A B B A A B ...), so that all of them see the machine alike; the seconds
    each timed step took, per agent."""
    for n in range(warm):
        for agent in agents.values():
            agent.step(n)
    took: dict[str, list[float]] = {name: [] for name in agents}
    order = list(agents)
    for n in range(warm, warm + steps):
        for name in order:
            started = time.perf_counter()
            agents[name].step(n)
            took[name].append(time.perf_counter() - started)
        order = order[1:] + order[:1] if n % 2 else order[::-1]
    return took


def sequential_in_turn(etcd: str, steps: int, warm: int, local: bool = True) -> dict[str, dict[str, float]]:
    """One agent's sequential commits to a fresh statehoused and a fresh etcd in turn
    (S E E S S E ...), after `warm` to each: p50 and p99 of each system's commits. etcd is
    reached by two agents, one over loopback TCP and one over its Unix socket (UNIX_ROW),
    as our SDK reaches a daemon on its machine over its local socket (unless `local` is
    False)."""
    with tempfile.TemporaryDirectory(prefix="deploy-in-turn-") as root:
        with (
            statehouse_server(Path(root), local) as (ours, _),
            EtcdProcess(Path(root) / "etcd", etcd) as peer,
        ):
            agents = {
                "statehouse": Agent("statehouse", ours, "in-turn"),
                "etcd": Agent("etcd", peer.addr, "in-turn"),
                "etcd-unix": Agent("etcd", peer.unix_addr, "in-turn-unix"),
            }
            took = steps_in_turn(agents, warm, steps)
            for agent in agents.values():
                agent.close()
    figures: dict[str, dict[str, float]] = {}
    for system, times in took.items():
        p50, p99 = p50_p99_ms(times)
        figures[system] = {f"{IN_TURN} p50 ms": p50, f"{IN_TURN} p99 ms": p99}
    # etcd on its Unix socket is a column of its own only in this row: ours is the same p50.
    unix = figures.pop("etcd-unix")
    figures["statehouse"][UNIX_ROW] = figures["statehouse"][f"{IN_TURN} p50 ms"]
    figures["etcd"][UNIX_ROW] = unix[f"{IN_TURN} p50 ms"]
    return figures


IN_TURN = "1 agent, sequential commit in turn with the peer:"
UNIX_ROW = "1 agent, sequential commit in turn, etcd on its Unix socket: p50 ms"


def threads_one_client(addr: str, agents: int, steps: int) -> float:
    """Commits/s of `agents` threads sharing one Statehouse."""
    with Statehouse(addr, timeout=120) as client:

        def run(i: int) -> None:
            name = f"thread-{i}"
            for n in range(steps):
                with client.begin_transaction() as tx:
                    for key, value in step_values(name, n):
                        tx.write(name, key, value)

        return agents * steps / timed_threads(run, agents)


def tasks_one_async_client(addr: str, agents: int, steps: int) -> float:
    """Commits/s of `agents` asyncio tasks sharing one AsyncStatehouse."""

    async def main() -> float:
        async with AsyncStatehouse(addr, timeout=120) as client:

            async def run(i: int) -> None:
                name = f"task-{i}"
                for n in range(steps):
                    tx = client.begin_transaction()
                    for key, value in step_values(name, n):
                        tx.write(name, key, value)
                    await tx.commit()

            await client.health()
            started = time.perf_counter()
            await asyncio.gather(*(run(i) for i in range(agents)))
            return agents * steps / (time.perf_counter() - started)

    return asyncio.run(main())


def process_status(pid: int) -> tuple[int, float]:
    """A process's thread count and resident memory in MB (/proc/<pid>/status)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0]) / 1024


def many_namespaces(addr: str, pid: int, held: int, touched: int) -> dict[str, float]:
    """Transactions left open in `held` namespaces (as an agent that began one and has not
    committed yet), then one commit in each of `touched` fresh namespaces: the daemon's
    threads and memory, and what opening one more namespace costs."""
    from statehouse._proto import statehouse_pb2 as pb
    from statehouse._proto import statehouse_pb2_grpc as pb_grpc

    figures: dict[str, float] = {"daemon threads before": process_status(pid)[0]}
    with grpc.insecure_channel(addr) as channel, Statehouse(addr, timeout=120) as client:
        stub = pb_grpc.StatehouseServiceStub(channel)
        started = time.perf_counter()
        # The original contract's BeginTransaction opens it on the daemon, for 10 minutes (all
        # stay open while measured).
        for n in range(held):
            request = pb.BeginTransactionRequest(namespace=f"held-{n}", timeout_ms=600_000)
            stub.BeginTransaction(request, timeout=120)
        opening = (time.perf_counter() - started) / held * 1000
        figures[f"open a transaction in a new namespace, up to {held:,} held: ms each"] = opening
        threads, rss = process_status(pid)
        figures[f"{held:,} namespaces holding a transaction: daemon threads"] = threads
        figures[f"{held:,} namespaces holding a transaction: daemon RSS MB"] = rss
        started = time.perf_counter()
        for n in range(touched):
            with client.begin_transaction(namespace=f"touched-{n}") as tx:
                tx.write("agent", "touched", n)
        touching = (time.perf_counter() - started) / touched * 1000
        figures[f"a commit in a fresh namespace, {held:,} held: ms each"] = touching
        figures[f"then after {touched:,} more namespaces: daemon threads"] = process_status(pid)[0]
    return figures


# -- the run -------------------------------------------------------------------------------


def measure(
    system: str,
    server: Callable[[Path], Any],
    sizes: dict[str, int],
    processes: int,
    threads: int,
    sessions: bool = True,
) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix=f"deploy-{system}-") as root:
        with server(Path(root)) as (addr, pid):
            for name, value in separate_processes(
                system, addr, pid, processes, threads, sizes["steps"], sessions
            ).items():
                figures[f"{processes} processes x {threads} agents, a client each: {name}"] = value
            for name, value in sequential(system, addr, sizes["sequential"], sessions).items():
                figures[f"1 agent, sequential commit {name}"] = value
            if system == "statehouse":
                figures["32 agents, threads on one Statehouse: commits/s"] = threads_one_client(
                    addr, 32, sizes["one_process"]
                )
                figures["32 agents, asyncio tasks on one AsyncStatehouse: commits/s"] = (
                    tasks_one_async_client(addr, 32, sizes["one_process"])
                )
                figures.update(many_namespaces(addr, pid, sizes["held"], sizes["touched"]))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test")
    parser.add_argument("--runs", type=int, default=3, help="runs of each system, medians reported")
    parser.add_argument("--processes", type=int, default=4, help="agent processes (default 4)")
    parser.add_argument("--threads", type=int, default=8, help="agents per process (default 8)")
    parser.add_argument(
        "--plain-calls",
        action="store_true",
        help="Statehouse clients without sessions (Statehouse(sessions=False)): every call an RPC",
    )
    parser.add_argument(
        "--held", type=int, default=2000, help="namespaces holding a transaction (default 2000)"
    )
    parser.add_argument("--namespaces-only", action="store_true", help="only the many-namespaces row")
    parser.add_argument(
        "--no-local",
        action="store_true",
        help="statehoused without its local socket (--local-socket off): the SDK over gRPC only",
    )
    args = parser.parse_args(argv)
    sizes = (
        {"steps": 5, "sequential": 20, "warm": 5, "one_process": 5, "held": 50, "touched": 20}
        if args.quick
        else {
            "steps": 150,
            "sequential": 500,
            "warm": 300,
            "one_process": 100,
            "held": args.held,
            "touched": 500,
        }
    )
    if args.namespaces_only:
        return namespaces_only(sizes["held"], sizes["touched"], args.runs)
    local = not args.no_local
    systems: dict[str, Callable[[Path], Any]] = {"statehouse": lambda root: statehouse_server(root, local)}
    etcd = shutil.which("etcd")
    if etcd:
        systems["etcd"] = lambda root: etcd_server(root, etcd)
    else:
        print("peer: etcd not found on PATH (Debian: apt install etcd-server); its rows are left out")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
    for run in range(args.runs):
        for name, server in systems.items():
            figures = measure(name, server, sizes, args.processes, args.threads, not args.plain_calls)
            runs[name].append(figures)
            print(f"{name} run {run + 1}: " + ", ".join(f"{k} {v:,.1f}" for k, v in figures.items()))
        if etcd and not args.plain_calls:
            in_turn = sequential_in_turn(etcd, sizes["sequential"], sizes["warm"], local)
            for name, figures in in_turn.items():
                runs[name][-1].update(figures)
                print(
                    f"{name} run {run + 1}, in turn: "
                    + ", ".join(f"{k} {v:,.2f}" for k, v in figures.items())
                )
    report(runs)
    return 0


def namespaces_only(held: int, touched: int, runs: int) -> int:
    results = []
    for run in range(runs):
        with tempfile.TemporaryDirectory(prefix="deploy-namespaces-") as root:
            with statehouse_server(Path(root)) as (addr, pid):
                results.append(many_namespaces(addr, pid, held, touched))
        print(f"run {run + 1}: " + ", ".join(f"{k} {v:,.1f}" for k, v in results[-1].items()))
    print()
    for row in results[0]:
        print(f"| {row} | {statistics.median(r[row] for r in results):,.2f} |")
    return 0


def report(runs: dict[str, list[dict[str, float]]]) -> None:
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    ours, etcd = medians["statehouse"], medians.get("etcd")
    print()
    print("| | statehouse | etcd | ratio |")
    print("|---|---|---|---|")
    for row, value in ours.items():
        theirs = etcd.get(row) if etcd else None
        ratio = f"{value / theirs:.2f}x" if theirs else ""
        print(f"| {row} | {value:,.1f} | {'' if theirs is None else f'{theirs:,.1f}'} | {ratio} |")
    if etcd:
        key = next(k for k in ours if k.endswith("commits/s") and "client each" in k)
        cpu = next(k for k in ours if k.endswith("server CPU us/commit"))
        print()
        print("targets (issue 16):")
        if etcd[cpu]:
            print(f"  server CPU per commit <= 2x etcd's: {ours[cpu] / etcd[cpu]:.2f}x")
        else:  # /proc counts in clock ticks (10 ms): a tiny run can show none
            print("  server CPU per commit <= 2x etcd's: n/a (etcd used less than a clock tick)")
        print(f"  separate-process commits/s >= 0.7x etcd's: {ours[key] / etcd[key]:.2f}x")
        p50 = f"{IN_TURN} p50 ms" if f"{IN_TURN} p50 ms" in ours else "1 agent, sequential commit p50 ms"
        said = " (commits in turn)" if p50.startswith(IN_TURN) else ""
        print(f"  sequential p50 <= 1.3x etcd's{said}: {ours[p50] / etcd[p50]:.2f}x")
        if UNIX_ROW in ours:
            ratio = ours[UNIX_ROW] / etcd[UNIX_ROW]
            print(f"    (against etcd on its Unix socket, the same commits in turn: {ratio:.2f}x)")
    one, aio = (
        ours["32 agents, threads on one Statehouse: commits/s"],
        ours["32 agents, asyncio tasks on one AsyncStatehouse: commits/s"],
    )
    print(f"  32 asyncio agents >= 32 threads on one client: {aio / one:.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
