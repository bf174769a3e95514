"""W11 growth (issue 14): does the store stay fast, and how big does it get, as it grows?

One daemon on a fresh data directory takes `w11_commits` agent steps from 32
threads sharing one client (the friendliest shape, so the store, not the
client, is what slows down), each step a transaction of 3 writes of prose-like
JSON (~950 B each: words drawn from a fixed vocabulary with a skewed
frequency, as text is, so the values compress like prose, not like
`"x" * 700`). The texts are drawn before the clock starts (POOL of them,
combined with the step number, so no two values are the same), so that the
client's Python does not set the pace. Every `w11_segment` commits it
records the commit rate of that segment and the data directory's size; at
the end, bytes on disk per byte of value written, and the rate of the last
segment against the first.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import orjson

from benchmarks.agents import running_daemon
from benchmarks.common import BenchmarkError
from benchmarks.workloads import Case, Context, Outcome, interleave, scratch
from statehouse import Statehouse

THREADS = 32
KEYS = ("memory", "plan", "scratch")
VOCABULARY = 5000
WORDS_PER_VALUE = 120
POOL = 4096  # texts drawn before the run


def vocabulary(seed: int = 13) -> list[str]:
    """Made-up words of 2 to 11 letters, the first ones the most frequent (as in text)."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [26 - i for i in range(26)]
    return ["".join(rng.choices(letters, weights, k=rng.randint(2, 11))) for _ in range(VOCABULARY)]


class Prose:
    """Prose-like values: words drawn with a Zipf-like frequency, in sentences."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._words = vocabulary()
        self._weights = [1 / (rank + 1) for rank in range(VOCABULARY)]

    def text(self, words: int) -> str:
        drawn = self._rng.choices(self._words, self._weights, k=words)
        sentences = [" ".join(drawn[i : i + 12]).capitalize() + "." for i in range(0, words, 12)]
        return " ".join(sentences)

    def pool(self, size: int) -> list[str]:
        return [self.text(WORDS_PER_VALUE) for _ in range(size)]


def step_values(pool: list[str], agent: int, step: int) -> list[tuple[str, dict[str, object]]]:
    """A step's 3 values: texts of the pool picked by agent and step (deterministic, and a
    different combination from one step to the next)."""
    pick = (step * 2654435761 + agent * 40503) % (len(pool) ** 3)
    return [
        (key, {"agent": agent, "step": step, "key": key, "text": pool[(pick // len(pool) ** n) % len(pool)]})
        for n, key in enumerate(KEYS)
    ]


def growth_cases(ctx: Context) -> list[Case]:
    label = f"{ctx.sizes.w11_commits:,} commits of 3 prose writes, {THREADS} threads on one client"
    return [Case("W11", "statehouse", label, THREADS, "shared")]


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue  # removed meanwhile (a compaction)
    return total


def segments(total: int, size: int) -> Iterator[int]:
    done = 0
    while done < total:
        step = min(size, total - done)
        done += step
        yield step


def run_steps(client: Statehouse, texts: list[str], count: int, first: int) -> tuple[float, int]:
    """`count` agent steps (steps `first`... of the pool's texts) from THREADS threads sharing
    `client`, each thread its own agent; (seconds taken, bytes of JSON values written)."""
    lock = threading.Lock()
    next_step = iter(range(count))
    errors: list[BaseException] = []
    value_bytes = 0

    def agent(n: int) -> None:
        nonlocal value_bytes
        written = 0
        try:
            while True:
                with lock:
                    step = next(next_step, None)
                if step is None:
                    break
                values = step_values(texts, n, first + step)
                with client.begin_transaction() as tx:
                    for key, value in values:
                        tx.write(f"agent-{n:02d}", key, value)
                written += sum(len(orjson.dumps(v)) for _k, v in values)
        except BaseException as exc:
            errors.append(exc)
        with lock:
            value_bytes += written

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(THREADS)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise BenchmarkError(f"an agent failed: {errors[0]!r}") from errors[0]
    return time.perf_counter() - began, value_bytes


def growth_run(ctx: Context, tmp: Path) -> dict[str, float]:
    total, segment = ctx.sizes.w11_commits, ctx.sizes.w11_segment
    data = tmp / "data"
    figures: dict[str, float] = {}
    with ExitStack() as stack:
        daemon = stack.enter_context(running_daemon(data))
        client = stack.enter_context(Statehouse(daemon.addr, timeout=120.0))
        value_bytes = 0
        texts = Prose(seed=7).pool(POOL)
        rates: list[float] = []
        for index, count in enumerate(segments(total, segment)):
            elapsed, written = run_steps(client, texts, count, index * segment)
            value_bytes += written
            rates.append(count / elapsed)
            size = dir_bytes(data)
            done = (index + 1) * segment
            figures[f"rate_{done}"] = count / elapsed
            figures[f"mb_{done}"] = size / 1e6
            ctx.progress(f"  W11 {done:,} commits: {count / elapsed:,.0f}/s, data dir {size / 1e6:,.0f} MB")
        figures["first_rate"] = rates[0]
        figures["last_rate"] = rates[-1]
        figures["last_vs_first"] = rates[-1] / rates[0]
        figures["dir_mb"] = dir_bytes(data) / 1e6
        figures["disk_per_value_byte"] = dir_bytes(data) / value_bytes
        figures["value_mb"] = value_bytes / 1e6
    return figures


def growth_workload(ctx: Context) -> Outcome:
    """W11: one fresh daemon per run (a run is the whole growth)."""

    def run_one(case: Case) -> dict[str, float]:
        with scratch(ctx, "statehouse-growth-") as tmp:
            return growth_run(ctx, tmp)

    return Outcome(interleave(ctx, growth_cases(ctx), run_one))
