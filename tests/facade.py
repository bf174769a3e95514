"""A blocking facade over the async SDK (`SDK`, `Blocking`, `LoopThread`): one test body, both clients."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import statehouse
from statehouse import AsyncStatehouse, Statehouse
from statehouse.testing import DaemonProcess

RESULT_SECONDS = 120.0  # no call of a test should take this long


class LoopThread:
    """One asyncio event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sdk-loop", daemon=True)
        self._thread.start()

    def run(self, awaitable: Any) -> Any:
        """Run a coroutine on the loop and wait for its result (its exception is raised here)."""
        return asyncio.run_coroutine_threadsafe(awaitable, self.loop).result(RESULT_SECONDS)

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call `function` in the loop's thread, await what it returns if needed, and wrap the result."""

        async def invoke() -> Any:
            result = function(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

        return wrap(self.run(invoke()), self)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(RESULT_SECONDS)
        self.loop.close()


_ASYNC_TYPES = (statehouse.AsyncStatehouse, statehouse.AsyncTransaction, statehouse.AsyncWatch)


def wrap(value: Any, loop: LoopThread) -> Any:
    if isinstance(value, _ASYNC_TYPES) or hasattr(value, "__anext__"):
        return Blocking(value, loop)
    return value


class Blocking:
    """A blocking proxy of an async object: coroutine methods block, async iterators and
    async context managers become plain ones, and plain attributes read through."""

    def __init__(self, target: Any, loop: LoopThread) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_loop", loop)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def blocking(*args: Any, **kwargs: Any) -> Any:
            return self._loop.call(value, *args, **kwargs)

        return blocking

    def __enter__(self) -> Blocking:
        self._loop.call(self._target.__aenter__)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        return self._loop.call(self._target.__aexit__, exc_type, exc, tb)

    def __iter__(self) -> Blocking:
        return self

    def __next__(self) -> Any:
        try:
            return self._loop.call(self._target.__anext__)
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        """close() of the client, aclose() of an async generator."""
        closer = getattr(self._target, "close", None) or self._target.aclose
        self._loop.call(closer)

    def __repr__(self) -> str:
        return f"Blocking({self._target!r})"


class SDK:
    """Makes clients of one kind ("sync" or "async" through `Blocking`) and closes them at the end."""

    KINDS = ("sync", "async")

    def __init__(self, kind: str, addr: str, loop: LoopThread | None) -> None:
        self.kind = kind
        self.addr = addr
        self._loop = loop
        self._clients: list[Any] = []
        self.client = self.connect()

    def connect(self, addr: str | None = None, **options: Any) -> Any:
        """A new client (Statehouse, or a blocking AsyncStatehouse) of this kind."""
        if self.kind == "sync":
            client: Any = Statehouse(addr or self.addr, **options)
        else:
            assert self._loop is not None
            client = self._loop.call(AsyncStatehouse, addr or self.addr, **options)
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()


def client_of_a_stopped_daemon(
    data_dir: Path, kind: str, loop: LoopThread, first: Callable[[Any], None] | None = None
) -> tuple[SDK, str]:
    """Clients of `kind` made while a daemon ran on `data_dir`, which then stopped (its client
    reached it, and did `first(client)` if given); and the address to start the next at."""
    with DaemonProcess(data_dir) as daemon:
        sdk = SDK(kind, daemon.addr, loop)
        assert sdk.client.health() == "ok"
        if first is not None:
            first(sdk.client)
    return sdk, daemon.addr
