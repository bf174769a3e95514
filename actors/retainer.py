"""The retainer: applies the retention policies in the background, a bounded chunk at a time.

Every `every_seconds`, and when asked (`run`, which `statehousectl compact`
calls), it plans on a read view, off the writer's thread, which ops the
policies let go (storage/retention.py), and has the ledger drop them
between two commit groups, at most `chunk` ops per write, so that commits
never wait behind more than one chunk. It goes on until a pass finds
nothing more. The bytes dropped leave the data files as RocksDB compacts
them, or at once with `statehousectl compact`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from actors.background import Background
from actors.errors import Unavailable
from storage import StorageError, Store
from storage.retention import Applied, Plan, Policies, plan, versions_cursor

log = structlog.get_logger("statehouse.retainer")

RETRY_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Retained:
    """What one run dropped: ops, events left with none, and the chunks it took."""

    ops: int = 0
    events_emptied: int = 0
    chunks: int = 0


class Retainer(Background):
    """One background thread running retention passes; `run` runs one now."""

    def __init__(
        self,
        store: Store,
        policies: Policies,
        apply: Callable[[Plan], Applied],
        every_seconds: float = 60.0,
        chunk: int = 2000,
    ) -> None:
        super().__init__("retainer")
        self._store = store
        self.policies = policies
        self._apply = apply  # has the ledger drop a plan's ops
        self._every = every_seconds
        self._chunk = chunk
        self._lock = threading.Lock()  # one pass at a time

    def start(self) -> None:
        if not self.policies.keeps_all and self._every > 0:
            self._thread.start()

    def run(self) -> Retained:
        """Apply the policies now, until nothing more is found; what was dropped."""
        if self.policies.keeps_all:
            return Retained()
        with self._lock:
            ops = removed = chunks = 0
            while not self._stopping:
                view = self._store.view()
                before = versions_cursor(view.snapshot, self.policies)
                found = plan(view, self.policies, time.time_ns() // 1_000_000, self._chunk)
                del view  # a view held open would keep what is dropped in the files
                if not found.drops and found.versions_cursor == before and not found.seconds_cursors:
                    break
                applied = self._apply(found)
                ops += applied.ops
                removed += applied.events_emptied
                chunks += 1
                if len(found.drops) < self._chunk:
                    break
            return Retained(ops, removed, chunks)

    def _run(self) -> None:
        while self._wait(self._every):
            try:
                self.run()
            except (StorageError, Unavailable) as exc:  # a failed write; the daemon stopping
                if self._store.closed or self._stopping:
                    return
                log.warning("retain.failed", error=str(exc), retry_s=RETRY_SECONDS)
            except Exception:  # a bug: say so, and try again next time
                log.exception("retain.failed")
