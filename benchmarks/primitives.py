"""W9 the primitives framework adapters use (issue 13): the newest key of a prefix, many keys in
one call, and a checkpoint-sized bytes value.

Two daemons for every run, loaded once (the blobs have a daemon of their
own: 900 KB values written beside small keys slow point reads of those
keys until compaction, see docs/performance.md, and that is not what the
read rows measure):

- agent `small` with SMALL_KEYS keys under "ckpt:", agent `big` with
  `w9_prefix_keys` of them (the latest key of each is read with
  `scan_prefix(reverse=True, limit=1)`), and agent `scanned` with SCAN_KEYS,
  whose latest key is found the way it had to be before cursors: reading
  every key of the prefix and taking the last;
- MANY agents with one ~1 KB JSON key each, read with one `get_many` or with
  MANY `get_state` calls, one after the other;
- a BLOB_BYTES random value written and read as bytes, against the same
  bytes as base64 in a JSON string, the way an adapter had to store them
  before bytes values (+33%).

Every answer is checked: the latest key is the right one, get_many's values
are the ones written, a blob reads back equal.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from benchmarks.agents import running_daemon
from benchmarks.common import BenchmarkError
from benchmarks.harness import run_workers
from benchmarks.workloads import PRELOAD_BATCH, Case, Context, Outcome, interleave, scratch
from statehouse import Statehouse

PREFIX = "ckpt:"
SMALL_KEYS = 100
SCAN_KEYS = 1000
MANY = 100
BLOB_BYTES = 900 * 1024
BLOB_OPS = 20  # timed writes (or reads) of a blob per run: ~18 MB each way


def checkpoint_key(index: int) -> str:
    return f"{PREFIX}{index:08d}"


def primitives_cases(ctx: Context) -> list[Case]:
    big = f"{ctx.sizes.w9_prefix_keys:,}"
    rows = [
        (f"latest key of a prefix of {SMALL_KEYS} keys: reverse, limit 1", "latest-small"),
        (f"latest key of a prefix of {big} keys: reverse, limit 1", "latest-big"),
        (f"latest key of a prefix of {SCAN_KEYS:,} keys, reading them all (before cursors)", "scan-all"),
        (f"get_many of {MANY} keys (one call)", "get-many"),
        (f"{MANY} get_state calls, one after the other", "get-states"),
        ("900 KB bytes value: write (one transaction)", "bytes-write"),
        ("900 KB bytes value: read", "bytes-read"),
        ("900 KB as base64 in JSON (before bytes values): write", "base64-write"),
        ("900 KB as base64 in JSON (before bytes values): read", "base64-read"),
    ]
    return [Case("W9", "statehouse", label, 1, shape) for label, shape in rows]


class Op:
    """One timed operation, run by `harness.run_workers` as a worker of one thread."""

    def __init__(self, action: Callable[[int], None]) -> None:
        self.action = action

    def prepare(self, step: int) -> int:
        return step

    def run(self, step: int) -> None:
        self.action(step)


def load(client: Statehouse, big_keys: int) -> None:
    """What the read rows read: the three prefixes and MANY agents' keys."""
    for agent, count in (("small", SMALL_KEYS), ("scanned", SCAN_KEYS), ("big", big_keys)):
        for start in range(0, count, PRELOAD_BATCH):
            with client.begin_transaction() as tx:
                for index in range(start, min(count, start + PRELOAD_BATCH)):
                    tx.write(agent, checkpoint_key(index), {"checkpoint": index, "parent": index - 1})
    with client.begin_transaction() as tx:
        for n in range(MANY):
            tx.write(f"thread-{n:03d}", "state", {"n": n, "note": "x" * 1000})


def load_blobs(client: Statehouse, blob: bytes) -> None:
    """The blob of each kind the blob read rows read."""
    with client.begin_transaction() as tx:
        tx.write("blobs", "bytes", blob)
        tx.write("blobs", "base64", base64.b64encode(blob).decode("ascii"))


def latest(client: Statehouse, agent: str, expected: str, scan_all: bool = False) -> Callable[[int], None]:
    def read(_step: int) -> None:
        if scan_all:
            found = client.scan_prefix(agent, PREFIX)[-1]
        else:
            found = client.scan_prefix(agent, PREFIX, reverse=True, limit=1)[0]
        if found.key != expected:
            raise BenchmarkError(f"the latest key of {agent!r} read as {found.key!r}, not {expected!r}")

    return read


def many(client: Statehouse, one_call: bool) -> Callable[[int], None]:
    pairs = [(f"thread-{n:03d}", "state") for n in range(MANY)]

    def read(_step: int) -> None:
        if one_call:
            states = list(client.get_many(pairs))
        else:
            states = [client.get_state(agent, key) for agent, key in pairs]
        if [s.value["n"] for s in states] != list(range(MANY)):
            raise BenchmarkError("get_many / get_state answered other values than were written")

    return read


def blob_op(client: Statehouse, blob: bytes, kind: str, write: bool) -> Callable[[int], None]:
    def run(step: int) -> None:
        if write:
            with client.begin_transaction() as tx:
                value: Any = blob if kind == "bytes" else base64.b64encode(blob).decode("ascii")
                tx.write("blobs", f"{kind}-{step}", value)
            return
        value = client.get_state("blobs", kind).value
        read = value if kind == "bytes" else base64.b64decode(value)
        if read != blob:
            raise BenchmarkError(f"the {kind} blob read back differs from the one written")

    return run


def primitives_workload(ctx: Context) -> Outcome:
    """W9: two daemons, loaded once; each case times `w9_reads` operations (BLOB_OPS for blobs)."""
    big_keys = ctx.sizes.w9_prefix_keys
    blob = os.urandom(BLOB_BYTES)  # random: compresses no better than a serializer's output
    with scratch(ctx, "statehouse-bench-") as tmp, ExitStack() as stack:
        daemon = stack.enter_context(running_daemon(tmp / "data"))
        client = stack.enter_context(Statehouse(daemon.addr, timeout=120.0))
        blob_daemon = stack.enter_context(running_daemon(tmp / "blobs"))
        blobs = stack.enter_context(Statehouse(blob_daemon.addr, timeout=120.0))
        ctx.progress(f"W9: loading {big_keys:,} keys under one prefix")
        load(client, big_keys)
        load_blobs(blobs, blob)
        actions = {
            "latest-small": latest(client, "small", checkpoint_key(SMALL_KEYS - 1)),
            "latest-big": latest(client, "big", checkpoint_key(big_keys - 1)),
            "scan-all": latest(client, "scanned", checkpoint_key(SCAN_KEYS - 1), scan_all=True),
            "get-many": many(client, one_call=True),
            "get-states": many(client, one_call=False),
            "bytes-write": blob_op(blobs, blob, "bytes", write=True),
            "bytes-read": blob_op(blobs, blob, "bytes", write=False),
            "base64-write": blob_op(blobs, blob, "base64", write=True),
            "base64-read": blob_op(blobs, blob, "base64", write=False),
        }
        runs = iter(range(1_000_000))

        def run_one(case: Case) -> dict[str, float]:
            count = BLOB_OPS if "-write" in case.shape or "-read" in case.shape else ctx.sizes.w9_reads
            base = next(runs) * (count + ctx.sizes.warmup)  # a fresh key for every blob written
            action = actions[case.shape]
            timed = run_workers([Op(lambda step: action(base + step))], [count], ctx.sizes.warmup)
            return timed.figures()

        results = interleave(ctx, primitives_cases(ctx), run_one)
    return Outcome(results)
