"""Live watches: the ledger hands every durable commit group to the `WatchHub`,
which routes each agent's slice of each event to the watchers that follow it.

Routing happens in the ledger's thread, right after the group is on disk and
before anyone is acknowledged, and costs a few dictionary lookups per event
(nothing at all without watchers). A watcher is a bounded queue: the hub
never waits for one. A watcher whose queue passes its bound (events or
bytes) is cut off: its queue is dropped, and its stream ends telling the
client where to resume from. The log on disk is the only unbounded buffer.

The seam between history and live events: `subscribe` registers a watcher
and returns the commit_ts the hub has routed up to, under one lock. Every
commit after it reaches the watcher's queue; every commit up to it is
already durable, so the stream reads those from the log. Nothing is missed
and nothing is sent twice.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from typing import NamedTuple

import structlog

from actors.errors import ResourceExhausted, Unavailable
from storage import Event
from storage.derive import agent_slices

log = structlog.get_logger("statehouse.watch")


class WatchFilter(NamedTuple):
    """What a watcher follows: one agent, or (agent_id None) a whole namespace, and a key prefix."""

    namespace: str
    agent_id: str | None
    key_prefix: str = ""

    def slice(self, event: Event) -> Event | None:
        """This filter's part of one agent's slice of an event, or None if nothing matches.

        A purge matches when it removes keys under the prefix: its own prefix starts
        with the watched one, or is the start of it.
        """
        prefix = self.key_prefix
        if not prefix:
            return event
        ops = tuple(
            op for op in event.ops if op.key.startswith(prefix) or (op.purge and prefix.startswith(op.key))
        )
        if not ops:
            return None
        return event if len(ops) == len(event.ops) else event._replace(ops=ops)

    def matches(self, event: Event) -> list[Event]:
        """The agent slices of a global-log event this filter wants, in the event's agent order."""
        found = []
        for (namespace, agent_id), part in agent_slices(event).items():
            if namespace != self.namespace or (self.agent_id is not None and agent_id != self.agent_id):
                continue
            matched = self.slice(part)
            if matched is not None:
                found.append(matched)
        return found


def event_bytes(event: Event) -> int:
    """Roughly what an event slice holds in memory."""
    return 200 + sum(100 + len(op.key) + len(op.value or b"") for op in event.ops)


class Watcher:
    """One watch stream's queue of live events. Read it from one thread with `take`."""

    def __init__(self, hub: WatchHub, watch: WatchFilter, max_events: int, max_bytes: int) -> None:
        self.filter = watch
        self._hub = hub
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._ready = threading.Condition(hub._lock)
        self._events: collections.deque[Event] = collections.deque()
        self._bytes = 0
        self.peak_bytes = 0
        self.taken_ts = 0  # the progress_ts of the last `take`
        self._cut_off = False
        self._missed = False  # cut off because commits reached the log without being routed
        self._closed: str | None = None

    def _offer(self, event: Event) -> None:
        """Queue one event slice (hub lock held)."""
        if self._cut_off or self._closed is not None:
            return
        self._events.append(event)
        self._bytes += event_bytes(event)
        self.peak_bytes = max(self.peak_bytes, self._bytes)
        if len(self._events) > self._max_events or self._bytes > self._max_bytes:
            self._cut_off = True
            self._events.clear()
            self._bytes = 0

    def take(self, timeout: float, max_events: int, max_bytes: int) -> tuple[list[Event], int]:
        """Wait up to `timeout` s for events; returns (events, progress_ts), events maybe [].

        Raises ResourceExhausted once cut off, Unavailable once the hub
        closed, and returns nothing more after `close()`.
        """
        with self._ready:
            if not self._events and not self._cut_off and self._closed is None:
                self._ready.wait(timeout)
            if self._cut_off and self._missed:
                raise ResourceExhausted(
                    "commits reached the log that the daemon could not pass to this watch (they could "
                    f"not be read back after the store reopened); resume from commit_ts {self.taken_ts + 1}"
                )
            if self._cut_off:
                raise ResourceExhausted(
                    f"this watch fell behind: more than {self._max_events} events or {self._max_bytes} "
                    f"bytes were waiting for it; resume from commit_ts {self.taken_ts + 1}"
                )
            if self._closed == "hub":
                raise Unavailable(
                    f"the daemon is shutting down; resume the watch from commit_ts {self.taken_ts + 1}"
                )
            taken: list[Event] = []
            size = 0
            while self._events and len(taken) < max_events and size < max_bytes:
                event = self._events.popleft()
                event_size = event_bytes(event)
                self._bytes -= event_size
                size += event_size
                taken.append(event)
            # Events of one commit_ts all leave together, so progress never splits a commit.
            while self._events and taken and self._events[0].commit_ts == taken[-1].commit_ts:
                event = self._events.popleft()
                self._bytes -= event_bytes(event)
                taken.append(event)
            # With the queue empty, every commit the hub routed was considered.
            progress = taken[-1].commit_ts if self._events else self._hub._routed_ts
            self.taken_ts = progress
            return taken, progress

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def close(self, reason: str = "client") -> None:
        """Stop this watcher (its client went away); the hub forgets it."""
        self._hub._remove(self, reason)

    def status(self) -> dict[str, object]:
        return {
            "namespace": self.filter.namespace,
            "agent_id": self.filter.agent_id,
            "key_prefix": self.filter.key_prefix,
            "queued_events": len(self._events),
            "queued_bytes": self._bytes,
            "peak_bytes": self.peak_bytes,
            "progress_ts": self.taken_ts,
            "cut_off": self._cut_off,
        }


class WatchHub:
    """Routes durable commits to watchers; owned by the actor system, fed by the ledger."""

    def __init__(
        self, last_commit_ts: int, max_events: int = 10_000, max_bytes: int = 16 * 1024 * 1024
    ) -> None:
        self._lock = threading.Lock()
        self._routed_ts = last_commit_ts
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._by_agent: dict[tuple[str, str], list[Watcher]] = {}
        self._by_namespace: dict[str, list[Watcher]] = {}
        self._count = 0
        self._closed = False
        self.cut_offs = 0

    @property
    def routed_ts(self) -> int:
        """The last commit_ts handed to watchers."""
        return self._routed_ts

    def subscribe(self, watch: WatchFilter) -> tuple[Watcher, int]:
        """Register a watcher; returns it and the commit_ts up to which the log holds the rest."""
        watcher = Watcher(self, watch, self._max_events, self._max_bytes)
        with self._lock:
            if self._closed:
                raise Unavailable("the daemon is shutting down")
            if watch.agent_id is None:
                self._by_namespace.setdefault(watch.namespace, []).append(watcher)
            else:
                self._by_agent.setdefault((watch.namespace, watch.agent_id), []).append(watcher)
            self._count += 1
            watcher.taken_ts = self._routed_ts
            return watcher, self._routed_ts

    def publish(self, events: Sequence[Event]) -> None:
        """Route a durable commit group (ascending commit_ts) to the watchers that want it."""
        with self._lock:
            if events and events[0].commit_ts != self._routed_ts + 1 and self._count:
                self._cut_off_all(events[0].commit_ts)
            if events:
                self._routed_ts = events[-1].commit_ts
            if not self._count:
                return
            woken: set[Watcher] = set()
            for event in events:
                for (namespace, agent_id), part in agent_slices(event).items():
                    for watcher in (
                        *self._by_agent.get((namespace, agent_id), ()),
                        *self._by_namespace.get(namespace, ()),
                    ):
                        matched = watcher.filter.slice(part)
                        if matched is not None:
                            was_cut = watcher._cut_off
                            watcher._offer(matched)
                            if watcher._cut_off and not was_cut:
                                self.cut_offs += 1
                                log.warning(
                                    "watch.cut_off",
                                    namespace=watcher.filter.namespace,
                                    agent_id=watcher.filter.agent_id,
                                    key_prefix=watcher.filter.key_prefix,
                                    resume_from=watcher.taken_ts + 1,
                                    max_events=self._max_events,
                                    max_bytes=self._max_bytes,
                                )
                            woken.add(watcher)
            for watcher in woken:
                watcher._ready.notify()

    def _cut_off_all(self, next_ts: int) -> None:
        """Commits after routed_ts and before `next_ts` were never routed: every watcher must
        read them from the log, so each is cut off and resumes from what it took (lock held)."""
        log.error("watch.gap", routed_ts=self._routed_ts, next_commit_ts=next_ts, watchers=self._count)
        for watcher in self._all():
            if not watcher._cut_off and watcher._closed is None:
                watcher._cut_off = watcher._missed = True
                watcher._events.clear()
                watcher._bytes = 0
                self.cut_offs += 1
                watcher._ready.notify()

    def _all(self) -> list[Watcher]:
        """Every registered watcher (lock held)."""
        return [w for group in (self._by_agent, self._by_namespace) for ws in group.values() for w in ws]

    def _remove(self, watcher: Watcher, reason: str) -> None:
        with self._lock:
            if watcher._closed is not None:
                return
            watcher._closed = reason
            watch = watcher.filter
            if watch.agent_id is None:
                watchers = self._by_namespace.get(watch.namespace, [])
            else:
                watchers = self._by_agent.get((watch.namespace, watch.agent_id), [])
            if watcher in watchers:
                watchers.remove(watcher)
                self._count -= 1
                if not watchers:
                    if watch.agent_id is None:
                        del self._by_namespace[watch.namespace]
                    else:
                        del self._by_agent[(watch.namespace, watch.agent_id)]
            watcher._events.clear()
            watcher._bytes = 0
            watcher._ready.notify_all()

    def close(self) -> None:
        """End every watch (shutting down); later subscriptions fail with Unavailable."""
        with self._lock:
            self._closed = True
            watchers = [
                w for group in (self._by_agent, self._by_namespace) for ws in group.values() for w in ws
            ]
        for watcher in watchers:
            self._remove(watcher, "hub")

    @property
    def count(self) -> int:
        """Watchers registered now."""
        return self._count

    def status(self) -> dict[str, object]:
        with self._lock:
            watchers = [
                w for group in (self._by_agent, self._by_namespace) for ws in group.values() for w in ws
            ]
            return {
                "watchers": [w.status() for w in watchers],
                "routed_ts": self._routed_ts,
                "cut_offs": self.cut_offs,
                "max_events": self._max_events,
                "max_bytes": self._max_bytes,
            }
