"""The compactor: after a purge, rewrite what it touched until the purged bytes have left the files.

RocksDB keeps a deleted record in its files while a snapshot older than the
delete may still read it, so a compaction that runs while such a reader is
open (a replay stream, a watch catching up, any read in flight) leaves the
purged bytes where they are. The compactor therefore waits until no read
view older than the purge is open, then compacts; a compaction that fails is
tried again. What is owed survives a restart: the purge's own write records
it in the store (`Store.compaction_owed`), and the daemon starts by paying
it. Purges that come while one compaction waits or runs are merged into the
next one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from actors.background import Background
from storage import StorageError, Store

log = structlog.get_logger("statehouse.compactor")

Ranges = list[tuple[bytes | None, bytes | None]] | None  # None: the whole store

# How often the compactor looks again whether old readers are gone, and waits after a failure.
POLL_SECONDS = 0.1
RETRY_SECONDS = 5.0


class Compactor(Background):
    """One background thread that pays the compactions purges owe, in order, merged."""

    def __init__(self, store: Store, settled: Callable[[int], None]) -> None:
        super().__init__("compactor")
        self._store = store
        self._settled = settled  # told the purge commit_ts up to which everything was compacted
        self._ranges: Ranges = []
        self._owed_ts = 0
        self.compactions = 0
        self.waiting = threading.Event()  # set while it waits for readers older than a purge

    def start(self) -> None:
        owed = self._store.compaction_owed()
        if owed:
            log.info("compact.owed", purge_commit_ts=owed)  # left by a purge before a restart
            self.owe(None, owed)
        self._thread.start()

    def owe(self, ranges: Ranges, purge_ts: int) -> None:
        """Compact `ranges` (None: everything) once no reader older than `purge_ts` is open."""
        with self._wake:
            if ranges is None or self._ranges is None:
                self._ranges = None
            else:
                self._ranges = self._ranges + [r for r in ranges if r not in self._ranges]
            self._owed_ts = max(self._owed_ts, purge_ts)
            self._wake.notify()

    def _take(self) -> tuple[Ranges, int] | None:
        with self._wake:
            while not self._stopping and self._ranges == [] and not self._owed_ts:
                self._wake.wait()
            if self._stopping:
                return None
            taken = (self._ranges, self._owed_ts)
            self._ranges, self._owed_ts = [], 0
            return taken

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            ranges, purge_ts = taken
            while self._store.reading_before(purge_ts):
                self.waiting.set()
                if not self._wait(POLL_SECONDS):
                    return
            self.waiting.clear()
            started = time.perf_counter()
            try:
                self._store.compact(ranges)
            except StorageError as exc:
                if self._store.closed:
                    return
                log.warning("compact.failed", error=str(exc), retry_s=RETRY_SECONDS)
                self.owe(ranges, purge_ts)
                if not self._wait(RETRY_SECONDS):
                    return
                continue
            self.compactions += 1
            log.info(
                "compact.done",
                purge_commit_ts=purge_ts,
                whole_store=ranges is None,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            self._settled(purge_ts)
