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
least recently used ones are asked to retire, so touching many namespaces
does not leave a thread behind for each. An actor that holds open
transactions retires too: it hands them to the registry as a `Dormant`
record, under the same lock that forgets it, and the next message for its
namespace starts an actor that adopts them. So the threads do not grow with
the namespaces that hold a transaction, and a transaction still has one
owner at a time: a live actor, or no actor while it waits in the registry.
A dormant transaction that comes due is expired by an actor the reaper
wakes for it (`wake_due`).
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import pykka

T = TypeVar("T")

# Past the bound, each new actor asks this many of the least recently used actors to retire.
_ASKED_PER_START = 4


class LiveActor(NamedTuple):
    """A live namespace actor: its proxy, the messages sent to it so far, and
    what it publishes for readers on other threads (see NamespaceActor)."""

    namespace: str
    proxy: pykka.ActorProxy
    uses: int
    published: Any


class Dormant(NamedTuple):
    """The open transactions of a namespace whose actor retired holding them.

    `state` is what the actor handed over, for the next one to adopt; the
    registry reads only the other fields.
    """

    state: Any
    open_transactions: int
    due: float  # the clock() at which the first of them expires
    oldest: float  # the clock() at which the oldest of them began
    last_activity: float  # the clock() of the namespace's last client message


class NamespaceRegistry:
    """Thread-safe map namespace -> running NamespaceActor proxy, in least-recently-used order."""

    def __init__(
        self, start: Callable[[str, Dormant | None], tuple[pykka.ActorProxy, Any]], max_idle: int = 64
    ) -> None:
        self._start = start  # (namespace, what it adopts) -> (proxy, what the actor publishes)
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._actors: collections.OrderedDict[str, pykka.ActorProxy] = collections.OrderedDict()
        self._uses: dict[str, int] = {}  # messages sent to each live actor
        self._published: dict[str, Any] = {}
        self._dormant: dict[str, Dormant] = {}
        self._closed = False

    def send(self, namespace: str, start: bool, send: Callable[[pykka.ActorProxy], T]) -> T | None:
        """Call `send` with the namespace's actor (started if `start`) under the lock.

        `send` must only enqueue (a tell, or a proxy call whose future it
        returns), never wait. A namespace with dormant transactions always
        gets an actor, which adopts them. Returns None when there is no
        actor, nothing dormant, and `start` is false; raises ActorDeadError
        once the registry is closed.
        """
        with self._lock:
            if self._closed:
                raise pykka.ActorDeadError("the actor system is stopping")
            proxy = self._actors.get(namespace)
            if proxy is not None and not proxy.actor_ref.is_alive():  # died of a bug: replace it
                self._forget(namespace)
                proxy = None
            if proxy is None:
                if not start and namespace not in self._dormant:
                    return None
                proxy = self._started(namespace)
            else:
                self._actors.move_to_end(namespace)
            self._uses[namespace] += 1
            return send(proxy)

    def _started(self, namespace: str) -> pykka.ActorProxy:
        """Start the namespace's actor (adopting its dormant transactions); the lock is held."""
        proxy, self._published[namespace] = self._start(namespace, self._dormant.pop(namespace, None))
        self._actors[namespace] = proxy
        self._uses[namespace] = 0
        self._trim()
        return proxy

    def wake_due(self, now: float, wake: Callable[[pykka.ActorProxy, int], T]) -> list[T]:
        """Start an actor for each namespace whose dormant transactions are due by `now`,
        and `wake(proxy, uses)` it (the reaper sends a tick, which expires them)."""
        woken = []
        with self._lock:
            if self._closed:
                return []
            for namespace in [ns for ns, dormant in self._dormant.items() if dormant.due <= now]:
                proxy = self._started(namespace)
                self._uses[namespace] = uses = 1
                woken.append(wake(proxy, uses))
        return woken

    def _trim(self) -> None:
        """Ask the least recently used actors beyond `max_idle` to retire.

        At most a few per new actor, so that starting one stays cheap however
        many live. Each asked moves to the young end: asked once, and again
        only when it is the oldest again (one that refuses, being busy, is
        not asked at every start). Those holding open transactions retire as
        dormant ones (see `retire`).
        """
        excess = min(len(self._actors) - self._max_idle, _ASKED_PER_START)
        for namespace in list(itertools.islice(self._actors, max(0, excess))):
            self._actors.move_to_end(namespace)
            self._actors[namespace].retire_if_idle(self._uses[namespace])

    def retire(self, namespace: str, ref: pykka.ActorRef, uses: int, dormant: Dormant | None = None) -> bool:
        """Forget the actor `ref` of `namespace` unless it was sent anything after `uses`,
        keeping `dormant` (its open transactions) for the namespace's next actor.

        Called by the actor itself. True: the actor must stop, nothing can
        reach it anymore (and `dormant` is the registry's). False: keep
        serving (a message is on its way).
        """
        with self._lock:
            proxy = self._actors.get(namespace)
            if proxy is None or proxy.actor_ref.actor_urn != ref.actor_urn:
                return True  # already forgotten (replaced after dying): nothing reaches it
            if self._uses[namespace] != uses:
                return False
            self._forget(namespace)
            if dormant is not None:
                self._dormant[namespace] = dormant
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

    def dormant(self) -> list[tuple[str, Dormant]]:
        """Every namespace whose open transactions wait without an actor."""
        with self._lock:
            return list(self._dormant.items())

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
            self._dormant.clear()
        for proxy in proxies:
            proxy.actor_ref.stop(block=True)
