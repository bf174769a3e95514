"""W10 forgetting (issue 14): purge an agent of `w10_keys` keys while another agent commits.

Each run loads a fresh agent (`w10_keys` keys of ~200 B JSON, 1,000 a
transaction, every key written twice so each has a history), then purges it
while a writer (a client of its own) commits W1-like steps to another agent
one after the other. Then `compact()` runs, the writer still going. Reported:
how long the purge and the compaction took, and what the writer saw
meanwhile: its commits, their p50 and the longest one (the stall).
Every run checks that the agent is gone and the writer's keys are whole.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from contextlib import ExitStack

from benchmarks.agents import running_daemon
from benchmarks.common import BenchmarkError
from benchmarks.workloads import PRELOAD_BATCH, Case, Context, Outcome, interleave, scratch
from statehouse import Statehouse


def forgetting_cases(ctx: Context) -> list[Case]:
    keys = f"{ctx.sizes.w10_keys:,}"
    return [
        Case(
            "W10",
            "statehouse",
            f"purge an agent of {keys} keys (2 versions each), writer committing",
            1,
            "purge",
        )
    ]


class Writer:
    """Commits steps to its own agent, one after the other, timing each, until stopped."""

    def __init__(self, client: Statehouse, agent: str) -> None:
        self.client = client
        self.agent = agent
        self.latencies: list[tuple[float, float]] = []  # (started, seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="w10-writer")

    def _run(self) -> None:
        for step in itertools.count():
            if self._stop.is_set():
                return
            began = time.perf_counter()
            with self.client.begin_transaction() as tx:
                for n in range(3):
                    tx.write(self.agent, f"k{n}", {"step": step, "note": "x" * 300})
            self.latencies.append((began, time.perf_counter() - began))

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def overlapping(self, start: float, end: float) -> list[float]:
        """The commits that were under way at some moment of [start, end]."""
        return [s for began, s in self.latencies if began + s >= start and began <= end]

    def started(self, start: float, end: float) -> list[float]:
        """The commits that began within [start, end)."""
        return [s for began, s in self.latencies if start <= began < end]


def load(client: Statehouse, agent: str, count: int) -> None:
    for generation in (1, 2):
        for start in range(0, count, PRELOAD_BATCH):
            with client.begin_transaction() as tx:
                for index in range(start, min(count, start + PRELOAD_BATCH)):
                    note = f"notes on item {index}, pass {generation}: ".ljust(160, ".")
                    tx.write(agent, f"k{index:07d}", {"key": index, "gen": generation, "note": note})


def forgetting_workload(ctx: Context) -> Outcome:
    """W10: one daemon; every run purges an agent it loaded just before."""
    runs = itertools.count()
    count = ctx.sizes.w10_keys
    with scratch(ctx, "statehouse-bench-") as tmp, ExitStack() as stack:
        daemon = stack.enter_context(running_daemon(tmp / "data"))
        client = stack.enter_context(Statehouse(daemon.addr, timeout=300.0))
        writer_client = stack.enter_context(Statehouse(daemon.addr, timeout=300.0))

        def run_one(case: Case) -> dict[str, float]:
            agent = f"doomed-{next(runs)}"
            ctx.progress(f"W10: loading {count:,} keys into {agent}")
            load(client, agent, count)
            with Writer(writer_client, "survivor") as writer:
                time.sleep(0.5)  # the writer's steady state before the purge
                began = time.perf_counter()
                client.purge(agent)
                purged = time.perf_counter()
                client.compact()
                compacted = time.perf_counter()
                time.sleep(0.2)
            if client.list_keys(agent, limit=1) or agent in client.list_agents(prefix=agent):
                raise BenchmarkError(f"{agent} still has keys after its purge")
            if client.get_state("survivor", "k0").value["step"] != len(writer.latencies) - 1:
                raise BenchmarkError("the writer's last acknowledged step is not what it reads back")
            steady = [s for b, s in writer.latencies if b < began]
            during_purge = writer.overlapping(began, purged)
            during_compact = writer.started(purged, compacted)
            return {
                "purge_s": purged - began,
                "compact_s": compacted - purged,
                "writer_p50_before_ms": statistics.median(steady) * 1000,
                "writer_commits_purge": len(during_purge),
                "writer_max_purge_ms": max(during_purge, default=0.0) * 1000,
                "writer_p50_compact_ms": statistics.median(during_compact) * 1000 if during_compact else 0.0,
                "writer_max_compact_ms": max(during_compact, default=0.0) * 1000,
            }

        results = interleave(ctx, forgetting_cases(ctx), run_one)
    return Outcome(results)
