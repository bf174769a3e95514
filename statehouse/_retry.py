"""Retrying calls that failed with UNAVAILABLE: the policy and one call's schedule.

Pure timing decisions shared by the sync and async clients; each client
only sleeps its own way (`time.sleep`, `asyncio.sleep`) between attempts.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from statehouse.exceptions import InvalidArgumentError, StatehouseError

log = logging.getLogger("statehouse")

# Retried by every retried call; a watch also re-subscribes after RESOURCE_EXHAUSTED.
RETRIED_CODES = frozenset({"UNAVAILABLE"})
RESUBSCRIBED_CODES = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED"})

# gRPC reconnects a channel with backoff of its own (by default up to 2
# minutes); after a daemon restart a client should find it within a second.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a client retries a call that failed with UNAVAILABLE (daemon down or restarting).

    The n-th retry waits `initial_backoff * multiplier**(n-1)` seconds, at
    most `max_backoff`, shortened at random by up to `jitter` of itself so
    that clients restarted together do not retry together. All attempts of
    one call share one deadline, the client's `timeout`: each attempt gets
    the time that is left, and no retry starts that would begin after it.
    Which calls are retried is said in each method's docstring.
    """

    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    multiplier: float = 2.0
    jitter: float = 0.5
    # How long a client that has never reached a daemon at its address (nor
    # has any client of this process) retries a refused connection before it
    # says that no daemon runs there; longer for a daemon starting alongside.
    first_connect: float = 5.0

    def __post_init__(self) -> None:
        if not self.initial_backoff > 0 or not self.max_backoff >= self.initial_backoff:
            raise InvalidArgumentError("RetryPolicy needs 0 < initial_backoff <= max_backoff")
        if not self.multiplier >= 1:
            raise InvalidArgumentError("RetryPolicy.multiplier must be >= 1")
        if not 0 <= self.jitter < 1:
            raise InvalidArgumentError("RetryPolicy.jitter must be in [0, 1)")
        if not self.first_connect >= 0:
            raise InvalidArgumentError("RetryPolicy.first_connect must be >= 0")

    def delays(self) -> Iterator[float]:
        """The waits before the first, second, ... retry, in seconds (endless)."""
        delay = self.initial_backoff
        while True:
            yield delay * (1 - self.jitter * random.random())
            delay = min(delay * self.multiplier, self.max_backoff)


# Between the attempts of `update` after a conflict: short, growing and
# jittered, so that writers contending for one key spread out rather than
# collide again at once (and each loss costs a read and a commit).
CONFLICT_BACKOFF = RetryPolicy(initial_backoff=0.002, max_backoff=0.1, multiplier=2.0, jitter=0.9)


class Attempts:
    """The schedule of one call: its deadline, and whether to try again after an error.

    With `policy` None nothing is retried.
    """

    def __init__(
        self, policy: RetryPolicy | None, timeout: float, codes: frozenset[str] = RETRIED_CODES
    ) -> None:
        self.deadline = time.monotonic() + timeout
        self._delays = None if policy is None else policy.delays()
        self._codes = codes
        self._retried: StatehouseError | None = None

    def remaining(self) -> float:
        """Seconds left before the deadline (the next attempt's gRPC timeout)."""
        return max(0.0, self.deadline - time.monotonic())

    def backoff(self, error: StatehouseError) -> float | None:
        """Seconds to wait before retrying after `error`, or None: raise it."""
        if self._delays is None or error.code not in self._codes or getattr(error, "_no_retry", False):
            return None
        self._retried = error
        delay = next(self._delays)
        if delay >= self.remaining():
            return None
        return delay

    def cause(self, error: StatehouseError) -> StatehouseError:
        """What to raise for the call's last `error`.

        A retry cut short by the deadline is reported as the error that was
        being retried (UNAVAILABLE: the daemon down, or its storage failing),
        not as DEADLINE_EXCEEDED.
        """
        retried = self._retried
        if error.code != "DEADLINE_EXCEEDED" or retried is None:
            return error
        return type(retried)(f"{retried} (retried until the call's deadline)", retried.code)


_reached: set[str] = set()  # addresses some client of this process has had an answer from
_reached_lock = threading.Lock()


class Reach:
    """Tells a daemon that is not there from one that is restarting.

    After a client's (or any client of the process's) first answer from
    its address, a refused connection is a restart, retried to the call's
    deadline as usual. Before it, a refused connection most likely means
    that no daemon runs there: the error then says so and how to start one,
    one warning is logged while retrying, and retries stop after the
    policy's `first_connect` seconds rather than at the deadline.
    """

    def __init__(self, url: str, policy: RetryPolicy | None) -> None:
        self.url = url
        self._grace = 0.0 if policy is None else policy.first_connect
        self._first_failure: float | None = None
        self._reached = False

    def answered(self) -> None:
        if not self._reached:
            self._reached = True
            with _reached_lock:
                _reached.add(self.url)

    def failed(self, error: StatehouseError) -> StatehouseError:
        """`error`, or, for a daemon never reached, one that says so (not retried once overdue)."""
        if self._reached or error.code == "DEADLINE_EXCEEDED":  # which may be no answer at all
            return error
        reason = _connection_failure(str(error)) if error.code == "UNAVAILABLE" else None
        if reason is None:  # the daemon answered, if only with an error
            self.answered()
            return error
        if self.url in _reached:
            return error
        now = time.monotonic()
        if self._first_failure is None:
            self._first_failure = now
            log.warning(
                "statehouse: no daemon answers at %s (%s); retrying for up to %g s",
                self.url,
                reason,
                self._grace,
            )
        said = type(error)(
            f"no statehoused at {self.url} ({reason}): start one with `make run` (or "
            "`statehoused --data-dir DIR`), or point the client at yours with "
            "Statehouse(url) or $STATEHOUSE_ADDR",
            error.code,
        )
        if now - self._first_failure >= self._grace:
            said._no_retry = True  # type: ignore[attr-defined]
        return said


def _connection_failure(details: str) -> str | None:
    """Why grpc could not connect, from a status message (None: it did connect)."""
    text = details.lower()
    if "dns resolution failed" in text:
        return "the host name does not resolve"
    if "failed to connect" not in text:
        return None
    if "connection refused" in text:
        return "connection refused"
    return "cannot connect"
