"""W12 retention (issue 14): W1 steps with and without retention letting history go meanwhile.

Each run starts a fresh daemon, either keeping every version, or with
`--retain-versions 1 --retention-every-seconds 0.5`: every step makes the
previous versions of its 3 keys droppable, so the retainer drops about 3 ops
per commit, a chunk at a time between commit groups, while 32 threads on one
client commit `w12_commits` W11-like steps (3 prose writes of ~950 B).
Reported: the commit rate, the ops the retainer dropped (from its
`retain.done` log lines; a short run that ends before its first pass waits
for one), and the data directory's size at the end.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

from benchmarks.agents import running_daemon
from benchmarks.common import BenchmarkError
from benchmarks.growth import POOL, Prose, dir_bytes, run_steps
from benchmarks.workloads import Case, Context, Outcome, interleave, scratch
from statehouse import Statehouse

RETAINING = ("--retain-versions", "1", "--retention-every-seconds", "0.5")
# How long after the steps the retainer's first drop is awaited, if none came during them.
RETAIN_WAIT_SECONDS = 5.0


def retention_cases(ctx: Context) -> list[Case]:
    steps = f"{ctx.sizes.w12_commits:,} steps of 3 prose writes, 32 threads on one client"
    return [
        Case("W12", "statehouse", f"{steps}, every version kept", 32, "keep"),
        Case("W12", "statehouse", f"{steps}, --retain-versions 1 every 0.5 s", 32, "retain"),
    ]


def retention_workload(ctx: Context) -> Outcome:
    """W12: one fresh daemon per run, with or without retention."""
    texts = Prose(seed=11).pool(POOL)

    def run_one(case: Case) -> dict[str, float]:
        flags = RETAINING if case.shape == "retain" else ()
        with scratch(ctx, "statehouse-retention-") as tmp, ExitStack() as stack:
            daemon = stack.enter_context(running_daemon(tmp / "data", *flags))
            client = stack.enter_context(Statehouse(daemon.addr, timeout=120.0))
            elapsed, written = run_steps(client, texts, ctx.sizes.w12_commits, 0)

            def dropped_ops() -> int:
                return sum(int(line.get("ops", 0)) for line in daemon.events("retain.done"))

            # A short run (--quick) can end before the retainer's first pass (every 0.5 s):
            # give it until one more pass has certainly run.
            deadline = time.monotonic() + RETAIN_WAIT_SECONDS
            while flags and not dropped_ops() and time.monotonic() < deadline:
                time.sleep(0.05)
            dropped = dropped_ops()
            if flags and not dropped:
                raise BenchmarkError(
                    f"the retainer dropped nothing while the steps ran, nor {RETAIN_WAIT_SECONDS:.0f} s after"
                )
            if client.get_state("agent-00", "memory").version < 2:
                raise BenchmarkError("agent-00 did not commit steps")
            size = dir_bytes(tmp / "data")
        return {
            "ops_per_s": ctx.sizes.w12_commits / elapsed,
            "dropped_ops": float(dropped),
            "dir_mb": size / 1e6,
            "disk_per_value_byte": size / written,
        }

    return Outcome(interleave(ctx, retention_cases(ctx), run_one))
