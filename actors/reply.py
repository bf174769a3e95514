"""`Reply`: a one-shot result passed from one actor thread to a waiting thread.

Every request to a namespace actor or the ledger that waits for an answer
carries one (see actors/messages.py): one reply path. It has the part of
`concurrent.futures.Future`'s interface those use (set_result,
set_exception, result, done, exception, add_done_callback), built on one
bare lock instead of a Condition: a commit creates one per transaction, and
a Future cost more to create than the rest of the namespace actor's work.
Callbacks need no lock at all (see `add_done_callback`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Generic, TypeVar

T = TypeVar("T")

_UNSET: object = object()


class Reply(Generic[T]):
    """Set once (result or exception); any number of threads may wait for it."""

    __slots__ = ("_callbacks", "_error", "_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # held until the answer is set
        self._value: object = _UNSET
        self._error: BaseException | None = None
        # Taken out one at a time with list.pop, which is atomic: each runs exactly once,
        # in the thread that takes it (no lock shared between replies, nothing to contend for).
        self._callbacks: list[Callable[[Reply[T]], None]] = []

    def set_result(self, value: T) -> None:
        self._settle(value, None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(None, error)

    def settle_from(self, done: Reply[T]) -> None:
        """Set what `done` (which is set) holds: its value or its exception."""
        self._settle(done._value, done._error)

    def _settle(self, value: object, error: BaseException | None) -> None:
        if self._value is not _UNSET:
            raise RuntimeError("a Reply is set only once")
        self._error = error
        self._value = value
        self._lock.release()
        if self._callbacks:  # read after the value is set: see add_done_callback
            self._run_callbacks()

    def add_done_callback(self, callback: Callable[[Reply[T]], None]) -> None:
        """Call `callback(self)` once the answer is set (now, in this thread, if it is)."""
        self._callbacks.append(callback)
        # The answer may have been set after our append but before its setter
        # looked at the list, or before it: whichever of the two threads pops
        # the callback off the list runs it, exactly once.
        if self.done():
            self._run_callbacks()

    def _run_callbacks(self) -> None:
        callbacks = self._callbacks
        while callbacks:
            try:
                callback = callbacks.pop(0)
            except IndexError:  # the other thread took the last one
                return
            callback(self)

    def done(self) -> bool:
        return self._value is not _UNSET

    def error(self) -> BaseException | None:
        """The exception it was set with, None for a value: for a reply known to be done
        (a done callback's), where `exception(0)` would cost two calls more."""
        return self._error

    def result(self, timeout: float | None = None) -> T:
        """The value, waiting at most `timeout` seconds; raises the exception if one was set."""
        if self._value is _UNSET:
            if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
                raise FutureTimeout()
            self._lock.release()  # let the next waiter through
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            self.result(timeout)
        except FutureTimeout:
            raise
        except BaseException as exc:
            return exc
        return None
