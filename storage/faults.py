"""Named crash points for tests: paths a random kill rarely hits.

Set STATEHOUSE_CRASH_AT=<point> (optionally <point>:<n>, crash on the n-th
time the point is reached, default 1) and the process kills itself with
SIGKILL there: no cleanup, no flush, exactly like a crash. Unset (always, in
production) a crash point costs one comparison.

Points: ledger.before_write, ledger.after_write (batch written, WAL not yet
fsynced), ledger.after_sync (durable, nobody acknowledged), ledger.mid_ack
(half of a group acknowledged), snapshot.mid (checkpoint written, not yet
renamed into place).
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "ledger.before_write",
    "ledger.after_write",
    "ledger.after_sync",
    "ledger.mid_ack",
    "snapshot.mid",
)


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get("STATEHOUSE_CRASH_AT", "")
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in POINTS:
        known = ", ".join(POINTS)
        raise ValueError(f"STATEHOUSE_CRASH_AT names unknown crash point {name!r}; known: {known}")
    return name, int(count or 1)


_ARMED = _armed()
_hits = 0


def crash_point(name: str) -> None:
    """Die here with SIGKILL if STATEHOUSE_CRASH_AT names this point."""
    global _hits
    if _ARMED is None or _ARMED[0] != name:
        return
    _hits += 1
    if _hits >= _ARMED[1]:
        os.kill(os.getpid(), signal.SIGKILL)
