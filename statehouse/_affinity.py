"""The sync client's I/O thread kept off the CPU that a daemon on the same machine runs on.

A daemon keeps its Python threads on one CPU (`statehoused --pin-cpu`, on
by default) and names it on every Session stream it serves, in the
stream's initial metadata: `statehouse-cpu: <boot id> <cpu>`. The boot id
(Linux's /proc/sys/kernel/random/boot_id) tells a client whether it runs
under the same kernel as the daemon, containers included, so that the CPU
number means the same CPU to both; a client on another machine ignores it.

A `Statehouse` client's calls go through the process's I/O thread
("statehouse-io", statehouse._session). Woken by the daemon's answers,
that thread was mostly scheduled on the daemon's CPU, where it delayed the
daemon's next commit and cooled its caches. Kept on the other CPUs, one
agent's sequential commit took about 5% less time (B/A 0.91-1.00, median
0.955, in eight repetitions; docs/performance.md, "The client's I/O thread
off the daemon's CPU"). Only that thread is moved: the
application's own threads, and an `AsyncStatehouse`'s event loop, are
left where they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

KEY = "statehouse-cpu"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str | None:
    """This kernel's boot id, or None where there is none to read (not Linux)."""
    try:
        return _BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def session_metadata(cpu: int | None) -> tuple[tuple[str, str], ...]:
    """The daemon's initial metadata for its Session streams: its CPU, if it keeps to one
    and the boot id is known; otherwise none."""
    boot = boot_id()
    if cpu is None or boot is None:
        return ()
    return ((KEY, f"{boot} {cpu}"),)


def daemon_cpu(metadata: Iterable[tuple[str, Any]] | None) -> int | None:
    """The CPU that a daemon under this kernel said it keeps to; None if it said none, or
    runs on another machine."""
    for key, value in metadata or ():
        if key != KEY:
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
        boot, _, cpu = text.partition(" ")
        if cpu.isdigit() and boot == boot_id():
            return int(cpu)
    return None


class KeepOff:
    """The CPUs of one thread narrowed, as daemons name theirs, to the others it may use.

    `avoid(cpu)` is called on that thread. Where nothing would be left (the
    thread may use only daemons' CPUs), or the platform cannot set a
    thread's CPUs, the thread is left as it is.
    """

    def __init__(self) -> None:
        self._allowed: set[int] | None = None
        self.avoided: set[int] = set()

    def avoid(self, cpu: int) -> None:
        if cpu in self.avoided or not hasattr(os, "sched_setaffinity"):
            return
        if self._allowed is None:
            self._allowed = os.sched_getaffinity(0)
        rest = self._allowed - self.avoided - {cpu}
        if not rest:
            return
        try:
            os.sched_setaffinity(0, rest)
        except OSError:
            return  # not allowed here (a restricted container): the thread stays where it is
        self.avoided.add(cpu)
