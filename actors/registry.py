"""Starts namespace actors on demand and forgets them when they retire.

Every message to a namespace actor is enqueued while holding the registry's
lock, and an actor leaves the registry (under the same lock) before it
stops. So a message either reaches an actor that will still process it
(and answer `Retired` if it is retiring, so the sender retries on a fresh
one) or finds no actor at all; none is lost in a stopping actor's inbox.

An actor retires only through `retire(namespace, ref, uses)`, where
`uses` is the registry's count of messages sent to it when the actor was
asked to retire. If anything was sent since, the registry refuses and the
actor keeps serving: a busy actor is never retired from under the
messages queued for it.

The number of live actors is bounded softly: past `max_idle` actors, the
least recently used ones that hold no open transaction are asked to retire,
so touching many namespaces does not leave a thread behind for each, even
beside many namespaces that hold transactions open.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import pykka

T = TypeVar("T")

# Past the bound, each new actor asks this many of the least recently used idle actors to
# retire, looking at no more than this many of the oldest.
_ASKED_PER_START = 4
_LOOKED_AT_PER_START = 64


class LiveActor(NamedTuple):
    """A live namespace actor: its proxy, the messages sent to it so far, and
    what it publishes for readers on other threads (see NamespaceActor)."""

    namespace: str
    proxy: pykka.ActorProxy
    uses: int
    published: Any


class NamespaceRegistry:
    """Thread-safe map namespace -> running NamespaceActor proxy, in least-recently-used order."""

    def __init__(self, start: Callable[[str], tuple[pykka.ActorProxy, Any]], max_idle: int = 64) -> None:
        self._start = start  # -> (proxy, what the actor publishes)
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._actors: collections.OrderedDict[str, pykka.ActorProxy] = collections.OrderedDict()
        self._uses: dict[str, int] = {}  # messages sent to each live actor
        self._published: dict[str, Any] = {}
        self._closed = False

    def send(self, namespace: str, start: bool, send: Callable[[pykka.ActorProxy], T]) -> T | None:
        """Call `send` with the namespace's actor (started if `start`) under the lock.

        `send` must only enqueue (a tell, or a proxy call whose future it
        returns), never wait. Returns None when there is no actor and
        `start` is false; raises ActorDeadError once the registry is closed.
        """
        with self._lock:
            if self._closed:
                raise pykka.ActorDeadError("the actor system is stopping")
            proxy = self._actors.get(namespace)
            if proxy is not None and not proxy.actor_ref.is_alive():  # died of a bug: replace it
                self._forget(namespace)
                proxy = None
            if proxy is None:
                if not start:
                    return None
                proxy, self._published[namespace] = self._start(namespace)
                self._actors[namespace] = proxy
                self._uses[namespace] = 0
                self._trim()
            else:
                self._actors.move_to_end(namespace)
            self._uses[namespace] += 1
            return send(proxy)

    def _trim(self) -> None:
        """Ask the least recently used idle actors beyond `max_idle` to retire.

        At most a few per new actor, looking at a bounded number of the
        oldest, so that starting one stays cheap however many live. An actor
        that publishes open transactions is passed over without a message (it
        would refuse): actors holding transactions do not shield the idle ones
        behind them, which retire as new ones start.
        """
        excess = min(len(self._actors) - self._max_idle, _ASKED_PER_START)
        if excess <= 0:
            return
        asked = 0
        for namespace in list(itertools.islice(self._actors, _LOOKED_AT_PER_START)):
            self._actors.move_to_end(namespace)  # looked at once; again only when it is oldest again
            if getattr(self._published[namespace], "open_transactions", 0):
                continue
            self._actors[namespace].retire_if_idle(self._uses[namespace])
            asked += 1
            if asked == excess:
                return

    def retire(self, namespace: str, ref: pykka.ActorRef, uses: int) -> bool:
        """Forget the actor `ref` of `namespace` unless it was sent anything after `uses`.

        Called by the actor itself. True: the actor must stop, nothing can
        reach it anymore. False: keep serving (a message is on its way).
        """
        with self._lock:
            proxy = self._actors.get(namespace)
            if proxy is None or proxy.actor_ref.actor_urn != ref.actor_urn:
                return True  # already forgotten (replaced after dying): nothing reaches it
            if self._uses[namespace] != uses:
                return False
            self._forget(namespace)
            return True

    def _forget(self, namespace: str) -> None:
        del self._actors[namespace]
        del self._uses[namespace]
        del self._published[namespace]

    def live(self) -> list[LiveActor]:
        """Every live actor, least recently used first."""
        with self._lock:
            return [
                LiveActor(ns, proxy, self._uses[ns], self._published[ns])
                for ns, proxy in self._actors.items()
            ]

    def __len__(self) -> int:
        with self._lock:
            return len(self._actors)

    def stop_all(self) -> None:
        """Refuse new actors, then stop every live one (each finishes its current message)."""
        with self._lock:
            self._closed = True
            proxies = list(self._actors.values())
            self._actors.clear()
            self._uses.clear()
            self._published.clear()
        for proxy in proxies:
            proxy.actor_ref.stop(block=True)
