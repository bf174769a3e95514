"""A background thread that sleeps until woken or stopped (the compactor's and the retainer's)."""

from __future__ import annotations

import threading


class Background:
    """One daemon thread running `_run`; `_wait` sleeps unless stopped, `stop` ends it."""

    def __init__(self, name: str) -> None:
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _wait(self, seconds: float) -> bool:
        """Sleep `seconds` unless stopped (or woken); False once stopping."""
        with self._wake:
            if not self._stopping:
                self._wake.wait(seconds)
            return not self._stopping
