"""The decisions of `wait_for` and `update`, without I/O, shared by both clients
(the methods themselves are plans in `statehouse._methods`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

from statehouse import _retry, _wire
from statehouse._proto import statehouse_pb2 as pb
from statehouse.exceptions import ConflictError, DeadlineExceededError
from statehouse.types import ReplayEvent, StateResult

# Page size of the reads that fetch everything.
PAGE_SIZE = 1000

Plan = Generator[Any, Any, Any]


# -- wait_for ------------------------------------------------------------------------


def first_read(namespace: str, agent_id: str, key: str) -> pb.ScanPrefixRequest:
    """The read wait_for starts with: the key and the commit_ts it is read as of, in one view.

    The first entry at or after `key` under the prefix `key` is the key
    itself if it is live; the answer's commit_ts is where the watch goes on.
    """
    return _wire.scan_prefix(namespace, agent_id, key, 1)


def first_state(response: pb.ScanPrefixResponse, key: str) -> tuple[StateResult, int]:
    """The key's state from `first_read`'s answer, and the commit_ts it is as of."""
    for entry in _wire.scan_results(response)[:1]:
        if entry.key == key:
            return entry, response.commit_ts
    return StateResult(None, 0, 0, False, key), response.commit_ts


def satisfies(state: StateResult, predicate: Callable[[Any], bool] | None) -> bool:
    """Whether wait_for is done: the key exists and its value satisfies the predicate."""
    return state.exists and (predicate is None or bool(predicate(state.value)))


def key_state(event: ReplayEvent, key: str) -> StateResult | None:
    """The key's state after `event`, if the event touched it."""
    for op in reversed(event.operations):
        if op.key == key:
            return StateResult(op.value, op.version, event.commit_ts, not op.deleted, key)
    return None


WAIT_FOR_DOC = """Wait until `key` exists and `predicate(value)` is true (default: until it exists).

Returns the key's state that satisfied it: at once if the current
one does, else as soon as a commit makes it so (read and watch
share one commit_ts, so no commit in between is missed). Raises
DeadlineExceededError after `timeout` seconds (None: wait forever).
The read and the watch are retried as `get_state` and `watch` are.
"""

UPDATE_DOC = """Read `key`, write `fn(value)` expecting the version read, and retry on conflict.

Optimistic read-modify-write: `fn` gets the current value (None if the
key has no live value) and returns the new one. If another writer changed
the key in between, the commit fails with a conflict, nothing is written,
and this waits a short jittered backoff, reads again and calls `fn` again,
so `fn` must have no side effects. Returns the state written. Raises
DeadlineExceededError if it has not won within `timeout` seconds
(default: the client's timeout). The read and the commit are each retried
after UNAVAILABLE as usual.
"""


class Update:
    """The decisions of one `update` call; each client adds its own reads, commits and sleeps."""

    def __init__(self, agent_id: str, key: str, fn: Callable[[Any], Any], seconds: float) -> None:
        self.agent_id = agent_id
        self.key = key
        self._fn = fn
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds
        self._delays = _retry.CONFLICT_BACKOFF.delays()
        self._conflicts = 0
        self._value: Any = None
        self._expected = 0

    def write(self, current: StateResult) -> tuple[Any, int]:
        """The next attempt's write: the new value, and the version it expects (the one read;
        0 for a key never written)."""
        self._value = self._fn(current.value if current.exists else None)
        self._expected = current.version
        return self._value, self._expected

    def written(self, commit_ts: int) -> StateResult:
        """The state the attempt wrote: the version after the one it expected."""
        return StateResult(self._value, self._expected + 1, commit_ts, True, self.key)

    def backoff(self, conflict: ConflictError) -> float:
        """Seconds to wait before the next attempt; raises DeadlineExceededError past the deadline."""
        self._conflicts += 1
        delay = next(self._delays)
        if time.monotonic() + delay >= self._deadline:
            raise DeadlineExceededError(
                f"update of key {self.key!r} of agent {self.agent_id!r} lost to other writers "
                f"{self._conflicts} times in {self._seconds:g} s; nothing of it was written"
            ) from conflict
        return delay
