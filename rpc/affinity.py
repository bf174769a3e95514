"""Keeping the daemon's Python threads on one CPU (`--pin-cpu`).

The daemon's Python threads (the event loop, the namespace actors, the
ledger, the pools) take turns holding one GIL, so together they never use
more than one CPU's worth of Python. Spread over several CPUs they only
hand the GIL across them: the thread woken to take it may have to wait for
a CPU that another process (an agent on the same machine) is using, while
the daemon's commits wait with it. On one CPU, a hand-over is a switch
between threads of that CPU.

Measured on the 2-CPU machine of docs/performance.md ("The daemon's Python
threads on one CPU"): agents in 4 processes beside the daemon committed
2,500 instead of 2,010 times a second, and one agent's commit took 1.32
instead of 1.49 ms (medians of 3 alternated pairs).

Only threads started after `pinned` are placed: RocksDB's background
threads (flushes and compactions, which run without the GIL) are started
when the store opens, before, and keep every CPU the process may use.
gRPC's own threads are shared by the whole process and start with its
first server or channel: in a program that runs `rpc.server.Daemon` in
its own process beside other gRPC work (the tests do), those stay on the
daemon's CPU too; such a program can pass `pin_cpu="off"`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

AUTO = "auto"
OFF = "off"


class AffinityError(ValueError):
    """The setting cannot be honoured here (a CPU this process may not use, or no affinity)."""


def check(text: str) -> str:
    """`text` if it is a valid setting: auto, off, or a CPU number (0 or more)."""
    if text in (AUTO, OFF):
        return text
    if not text.isdigit():
        raise ValueError(f"{text!r} is not auto, off or a CPU number")
    return str(int(text))


def allowed() -> set[int] | None:
    """The CPUs this thread may run on; None where the platform cannot say or set them."""
    if not hasattr(os, "sched_getaffinity") or not hasattr(os, "sched_setaffinity"):
        return None
    return os.sched_getaffinity(0)


def _current_cpu() -> int | None:
    """The CPU this thread is running on now (field 39 of /proc/thread-self/stat), if known."""
    try:
        fields = Path("/proc/thread-self/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[36])
    except (OSError, IndexError, ValueError):
        return None


def choose(setting: str) -> int | None:
    """The CPU to keep the daemon's Python threads on for `setting`; None: leave them be.

    auto: the CPU this thread runs on now, if the process may use more
    than one (with one, there is nothing to choose). A number: that CPU,
    or AffinityError if this process may not use it.
    """
    setting = check(setting)
    if setting == OFF:
        return None
    cpus = allowed()
    if setting == AUTO:
        if cpus is None or len(cpus) < 2:
            return None
        now = _current_cpu()
        return now if now in cpus else min(cpus)
    cpu = int(setting)
    if cpus is None:
        raise AffinityError("this platform cannot keep threads on a CPU; use --pin-cpu off")
    if cpu not in cpus:
        usable = ", ".join(map(str, sorted(cpus)))
        raise AffinityError(f"CPU {cpu} is not one this process may use (it may use {usable})")
    return cpu


@contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """While inside, this thread runs on `cpu` alone (None: unchanged), so every thread it
    starts meanwhile stays there too; on leaving, this thread gets its own CPUs back."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
