"""Starts namespace actors on demand and forgets them when they retire."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pykka


class NamespaceRegistry:
    """Thread-safe map namespace -> running NamespaceActor proxy."""

    def __init__(self, start: Callable[[str], pykka.ActorProxy]) -> None:
        self._start = start
        self._lock = threading.Lock()
        self._actors: dict[str, pykka.ActorProxy] = {}
        self._closed = False

    def get_or_start(self, namespace: str) -> pykka.ActorProxy:
        with self._lock:
            if self._closed:
                raise pykka.ActorDeadError("the actor system is stopping")
            proxy = self._actors.get(namespace)
            if proxy is None:
                proxy = self._actors[namespace] = self._start(namespace)
            return proxy

    def get(self, namespace: str) -> pykka.ActorProxy | None:
        with self._lock:
            return self._actors.get(namespace)

    def retire(self, namespace: str, ref: pykka.ActorRef) -> None:
        """Forget `namespace` if it still maps to the actor `ref` (called by that actor)."""
        with self._lock:
            proxy = self._actors.get(namespace)
            if proxy is not None and proxy.actor_ref.actor_urn == ref.actor_urn:
                del self._actors[namespace]

    def live(self) -> list[tuple[str, pykka.ActorProxy]]:
        with self._lock:
            return list(self._actors.items())

    def stop_all(self) -> None:
        """Refuse new actors, then stop every live one (each finishes its current message)."""
        with self._lock:
            self._closed = True
            proxies = list(self._actors.values())
            self._actors.clear()
        for proxy in proxies:
            proxy.actor_ref.stop(block=True)
