"""Does watching the daemon slow it down? Commits/s with and without an operator
polling the HTTP endpoint, and how fast /actors answers under load.

One statehoused subprocess; `--agents` threads share one `Statehouse`
client and commit agent steps (three ~1 KB writes) in 8 namespaces, with a
few transactions left open so the actors have something to report. Timed
phases alternate: "quiet" (nobody asks), "10/s" (a thread asks /actors and
/metrics ten times a second, more often than any scraper would) and
"nonstop" (back to back, as fast as they answer). Each phase is `--txns`
transactions per agent; the medians over `--runs` rounds are printed,
with the ratios to quiet and /actors' answer times.

    python -m benchmarks.monitor                       # ~1 minute
    python -m benchmarks.monitor --show-actors         # also print one /actors answer taken under load
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import orjson

from benchmarks.common import KEYS, BenchmarkError, agent_state, percentile, positive_int
from benchmarks.harness import timed_threads
from statehouse import Statehouse
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from statehouse.testing import DaemonProcess

NAMESPACES = 8
OPEN_LEFT = 4  # transactions left open, per namespace of the first two
# Phases, and the seconds between two rounds of questions (None: nobody asks).
PHASES: dict[str, float | None] = {"quiet": None, "10/s": 0.1, "nonstop": 0.0}


def _commits(client: Statehouse, agents: int, txns: int, step0: int) -> float:
    """Every agent commits `txns` steps; returns the phase's commits/s."""

    def agent(n: int) -> None:
        for step in range(step0, step0 + txns):
            with client.begin_transaction(namespace=f"ns{n % NAMESPACES}") as tx:
                for key in KEYS:
                    tx.write(f"agent-{n}", key, agent_state(f"agent-{n}", key, step))

    try:
        elapsed = timed_threads(agent, agents)
    except Exception as exc:
        raise BenchmarkError(f"an agent failed: {exc!r}") from exc
    return agents * txns / elapsed


class Poller:
    """A separate process (an operator's tool, not a thread competing with the agents
    for this process's GIL) asking /actors and /metrics until stopped."""

    def __init__(self, http_addr: str, interval: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._ready = context.Event()
        self._results: Any = context.Queue()
        self._process = context.Process(
            target=_poll, args=(http_addr, interval, self._ready, self._stop, self._results)
        )
        self.actors_ms: list[float] = []
        self.last_actors: dict[str, Any] | None = None

    def __enter__(self) -> Poller:
        self._process.start()
        # Starting a Python process costs CPU: not inside the timed phase.
        if not self._ready.wait(60):
            raise BenchmarkError("the polling process did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        outcome = self._results.get(timeout=60)
        self._process.join(60)
        if isinstance(outcome, str):
            raise BenchmarkError(f"polling failed: {outcome}")
        self.actors_ms, self.last_actors = outcome


def _poll(http_addr: str, interval: float, ready: Any, stop: Any, results: Any) -> None:
    """Ask /actors then /metrics every `interval` s (0: back to back) until `stop`; keep the
    /actors answer taken at the busiest moment (most messages waiting in mailboxes)."""
    actors_ms: list[float] = []
    busiest: tuple[int, dict[str, Any]] | None = None
    ready.set()
    try:
        while True:
            began = time.perf_counter()
            with urllib.request.urlopen(f"http://{http_addr}/actors", timeout=10) as answer:
                report = orjson.loads(answer.read())
            actors_ms.append((time.perf_counter() - began) * 1000)
            waiting = report["ledger"]["queue_depth"] + sum(
                ns["mailbox_depth"] for ns in report["namespaces"]
            )
            if busiest is None or waiting >= busiest[0]:
                busiest = (waiting, report)
            with urllib.request.urlopen(f"http://{http_addr}/metrics", timeout=10) as answer:
                answer.read()
            if stop.wait(max(0.0, interval - (time.perf_counter() - began))):
                break
    except BaseException as exc:
        results.put(repr(exc))
        return
    results.put((actors_ms, None if busiest is None else busiest[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.monitor", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--agents", type=positive_int, default=16, help="agent threads (default %(default)s)")
    parser.add_argument("--txns", type=positive_int, default=150, help="steps per agent per phase")
    parser.add_argument(
        "--runs", type=positive_int, default=3, help="quiet/polled pairs (default %(default)s)"
    )
    parser.add_argument(
        "--show-actors", action="store_true", help="print one /actors answer taken under load"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="statehouse-bench-monitor-") as tmp:
        with DaemonProcess(Path(tmp) / "data") as daemon, Statehouse(daemon.addr) as client:
            with grpc.insecure_channel(daemon.addr) as channel:
                stub = pb_grpc.StatehouseServiceStub(channel)
                for n in range(2 * OPEN_LEFT):  # left open until the daemon stops
                    request = pb.BeginTransactionRequest(namespace=f"ns{n % 2}", timeout_ms=600_000)
                    stub.BeginTransaction(request, timeout=10)
            _commits(client, args.agents, 5, 0)  # warm up
            rates: dict[str, list[float]] = {phase: [] for phase in PHASES}
            answer_ms: dict[str, list[float]] = {phase: [] for phase in PHASES}
            sample = None
            step = 5
            order = list(PHASES.items())
            for _ in range(args.runs):
                order = order[1:] + order[:1]  # each round starts with another phase: drift spreads
                for phase, interval in order:
                    if interval is None:
                        rates[phase].append(_commits(client, args.agents, args.txns, step))
                    else:
                        with Poller(daemon.http_addr, interval) as poller:
                            rates[phase].append(_commits(client, args.agents, args.txns, step))
                        answer_ms[phase].extend(poller.actors_ms)
                        sample = poller.last_actors or sample
                    step += args.txns
            for n in range(args.agents):
                state = client.get_state(f"agent-{n}", KEYS[0], namespace=f"ns{n % NAMESPACES}")
                if state.version != step or state.value["step"] != step - 1:
                    raise BenchmarkError(f"agent-{n}: version {state.version}, expected {step}")

    quiet = statistics.median(rates["quiet"])
    print(f"statehoused, {args.agents} agents sharing one client, {NAMESPACES} namespaces, {args.runs} runs")
    for phase, runs in rates.items():
        rate = statistics.median(runs)
        each = ", ".join(f"{x:.0f}" for x in runs)
        line = f"  {phase:<8} commits/s {rate:7.0f}  ({rate / quiet:.2f}x quiet; runs {each})"
        times = sorted(answer_ms[phase])
        if times:
            line += (
                f"; /actors answered {len(times)} times, p50 {percentile(times, 50):.1f} ms, "
                f"p99 {percentile(times, 99):.1f} ms"
            )
        print(line)
    if args.show_actors and sample is not None:
        print(orjson.dumps(sample, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
