"""Timing concurrent workers: warm up, start together at a barrier, time each operation.

A worker is one simulated agent or reader. `prepare(step)` builds the inputs
of one operation outside the timing (agent-state dicts, random keys) and
`run(prepared)` is the operation that is timed. Every worker is a thread of
this process; what the workers share (one client, one channel, or nothing)
is up to the caller.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from benchmarks.common import BenchmarkError, percentile


class Worker(Protocol):
    def prepare(self, step: int) -> Any: ...

    def run(self, prepared: Any) -> None: ...


@dataclass(frozen=True)
class Timed:
    """The timed phase of one run: every operation's latency and the wall time of the whole phase."""

    latencies_s: list[float]  # sorted
    elapsed_s: float

    @property
    def ops(self) -> int:
        return len(self.latencies_s)

    def figures(self) -> dict[str, float]:
        """Operations per second and p50/p99 latency in milliseconds."""
        return {
            "ops_per_s": self.ops / self.elapsed_s,
            "p50_ms": percentile(self.latencies_s, 50) * 1000,
            "p99_ms": percentile(self.latencies_s, 99) * 1000,
            "ops": self.ops,
            "elapsed_s": self.elapsed_s,
        }


def shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` counts that differ by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_workers(workers: Sequence[Worker], counts: Sequence[int], warmup: int) -> Timed:
    """Run worker i for `warmup` untimed then `counts[i]` timed steps, all timed phases starting together.

    Steps are numbered from 0 through the warm-up on, so a worker that ran
    `warmup + counts[i]` steps has done step `warmup + counts[i] - 1` last.
    The first failure aborts the barrier (the others stop waiting) and is
    raised as a BenchmarkError once every thread has ended.
    """
    started: list[float] = []
    barrier = threading.Barrier(len(workers), action=lambda: started.append(time.perf_counter()))
    latencies: list[list[float]] = [[] for _ in workers]
    finished = [0.0] * len(workers)
    errors: list[BaseException] = []

    def drive(index: int) -> None:
        worker, mine = workers[index], latencies[index]
        try:
            for step in range(warmup):
                worker.run(worker.prepare(step))
            barrier.wait()
            for step in range(warmup, warmup + counts[index]):
                prepared = worker.prepare(step)
                began = time.perf_counter()
                worker.run(prepared)
                mine.append(time.perf_counter() - began)
            finished[index] = time.perf_counter()
        except BaseException as exc:
            barrier.abort()
            errors.append(exc)

    threads = [threading.Thread(target=drive, args=(i,), name=f"worker-{i}") for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)] or errors
        raise BenchmarkError(f"a worker failed: {real[0]!r}") from real[0]
    return Timed(sorted(s for mine in latencies for s in mine), max(finished) - started[0])


def median_figures(runs: Iterable[dict[str, float]]) -> dict[str, float]:
    """The median over runs of each figure, taken separately."""
    runs = list(runs)
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def rotated(items: Sequence[Any], by: int) -> list[Any]:
    """`items` starting at position `by` (mod len), so each run starts with a different configuration."""
    by %= len(items)
    return [*items[by:], *items[:by]]


def timed_threads(work: Callable[[int], None], count: int) -> float:
    """Run `work(0)` ... `work(count - 1)` on threads of their own, started together; the seconds
    from the start to the last one's end. The first exception a thread raised is raised here."""
    start_line = threading.Barrier(count + 1)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        start_line.wait()
        try:
            work(n)
        except BaseException as exc:  # raised in the caller's thread
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for worker in workers:
        worker.start()
    start_line.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed
