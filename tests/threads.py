"""Running a test's concurrent callers: `run_threads`."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_threads(work: Callable[[int], object], count: int, timeout: float = 120.0) -> None:
    """Run `work(0)` ... `work(count - 1)` on threads of their own and wait for all of them;
    fails if one is still running after `timeout` seconds (a hang, not a pass)."""
    workers = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout)
    stuck = sum(worker.is_alive() for worker in workers)
    assert not stuck, f"{stuck} of {count} threads still running after {timeout} s"
