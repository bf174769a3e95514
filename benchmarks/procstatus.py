"""Sampling a process's thread count and memory from /proc/<pid>/status (Linux)."""

from __future__ import annotations

import threading
from pathlib import Path

SAMPLE_EVERY_S = 0.05


class ProcSampler:
    """Samples Threads, VmRSS and VmHWM of a process from /proc/<pid>/status in a background thread."""

    def __init__(self, pid: int, every_s: float = SAMPLE_EVERY_S) -> None:
        self.path = Path(f"/proc/{pid}/status")
        self.every_s = every_s
        self.samples: list[dict[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="proc-sampler", daemon=True)

    def read(self) -> dict[str, int]:
        fields = dict(line.split(":", 1) for line in self.path.read_text().splitlines() if ":" in line)
        return {
            "threads": int(fields["Threads"]),
            "rss_kb": int(fields["VmRSS"].split()[0]),
            "hwm_kb": int(fields["VmHWM"].split()[0]),
        }

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.read())
            self._stop.wait(self.every_s)

    def __enter__(self) -> ProcSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self.read())
