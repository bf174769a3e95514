"""What the handlers of the asyncio gRPC server share: their context, awaiting an
actor's answer, and running the synchronous ones on a thread pool.

The daemon serves on `grpc.aio`, one event loop on one thread. A call that
waits for an actor (Begin, Stage, Write, Delete, Commit, Abort) tells the
actor and awaits its `Reply` on the loop: the actor's thread wakes the loop
when it answers, so no server thread waits for it. Short reads run on the
loop itself. Everything else (batches, scans, admin calls) runs as plain
synchronous code on a pool, as do replay and watch streams, one message at a
time. Every handler sees a `CallContext`, whatever runs it, on a session
stream or as an RPC of its own: the same code, the same errors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import Any, Generic, TypeVar

import grpc

from actors import Asked, Reply

T = TypeVar("T")


class CallAborted(Exception):
    """Raised by `CallContext.abort`, as grpc's synchronous context raises to end a handler."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class CallContext:
    """What a handler uses of a gRPC context, for one call: its deadline, trailers,
    `abort` (which raises `CallAborted`) and callbacks run when the call ends."""

    __slots__ = ("_callbacks", "_deadline", "trailers")

    def __init__(self, deadline: float | None) -> None:
        self._deadline = deadline  # time.monotonic() at which the caller gives up; None: never
        self.trailers: tuple[tuple[str, str | bytes], ...] = ()
        self._callbacks: list[Callable[[], Any]] | None = []

    @classmethod
    def of(cls, context: grpc.aio.ServicerContext, timeout_ms: int = 0) -> CallContext:
        """The context of a call on `context`'s RPC, with its own `timeout_ms` (0: none) if it has one."""
        return cls.within(context.time_remaining(), timeout_ms)

    @classmethod
    def within(cls, remaining: float | None, timeout_ms: int = 0) -> CallContext:
        """The context of a call with `remaining` seconds (None: no deadline), or its own
        `timeout_ms` (0: none) if that is sooner."""
        if timeout_ms:
            remaining = timeout_ms / 1000 if remaining is None else min(remaining, timeout_ms / 1000)
        return cls(None if remaining is None else time.monotonic() + remaining)

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self.trailers = tuple(metadata)

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise CallAborted(code, details)

    def add_callback(self, callback: Callable[[], Any]) -> bool:
        """Call `callback()` when the call ends; False (and never called) if it has ended."""
        if self._callbacks is None:
            return False
        self._callbacks.append(callback)
        return True

    def end(self) -> None:
        """The call has ended: run its callbacks."""
        callbacks, self._callbacks = self._callbacks or [], None
        for callback in callbacks:
            callback()


async def answer(asked: Asked, timeout: float) -> Any:
    """The actor's answer to `asked` (its value, or its error raised), waiting at most
    `timeout` seconds on the running loop; `asked.late()` if it does not come in time."""
    reply = asked.reply
    if not reply.done():
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()

        def wake(_: Reply[Any]) -> None:
            try:
                loop.call_soon_threadsafe(_settle, waiter, True)
            except RuntimeError:  # the loop has closed: the daemon has stopped
                pass

        reply.add_done_callback(wake)
        # A bare timer, not asyncio.timeout: this wait is on every call's path.
        timer = loop.call_later(timeout, _settle, waiter, False)
        try:
            answered = await waiter
        finally:
            timer.cancel()
        if not answered:
            raise asked.late()
    return reply.result(0)


async def answers(asked: list[Asked], timeout: float) -> list[Any]:
    """Each answer of `asked`, in order: its value, or its error (returned, not raised;
    its `late()` if it did not come within `timeout` seconds). The loop wakes once, when
    the last comes."""
    pending = [one.reply for one in asked if not one.reply.done()]
    if pending:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        settled = itertools.count(1)  # next() is atomic: the replies come on several threads
        last = len(pending)

        def wake(_: Reply[Any]) -> None:
            if next(settled) == last:
                try:
                    loop.call_soon_threadsafe(_settle, waiter, True)
                except RuntimeError:  # the loop has closed: the daemon has stopped
                    pass

        for reply in pending:
            reply.add_done_callback(wake)
        timer = loop.call_later(timeout, _settle, waiter, False)
        try:
            await waiter
        finally:
            timer.cancel()
    return [_outcome(one) for one in asked]


def _outcome(asked: Asked) -> Any:
    if not asked.reply.done():
        return asked.late()
    error = asked.reply.exception(0)
    return error if error is not None else asked.reply.result(0)


class PerTurn(Generic[T]):
    """What arrives during one turn of the event loop, handed on together when it ends.

    `add` from the loop; `hand_on(items)` runs once per turn that added
    any, after the callbacks already ready (grpc's, one per message that
    came in), so calls that came in together leave together. A call alone
    waits only for the loop's next turn.
    """

    def __init__(self, hand_on: Callable[[list[T]], None]) -> None:
        self._hand_on = hand_on
        self._items: list[T] = []

    def add(self, item: T) -> None:
        if not self._items:
            asyncio.get_running_loop().call_soon(self._flush)
        self._items.append(item)

    def _flush(self) -> None:
        items, self._items = self._items, []
        self._hand_on(items)
        if len(items) == 1:
            # A lone commit: the actor just woken needs the GIL, which this thread would
            # otherwise hold through the rest of the loop's turn (docs/performance.md,
            # "Handing the GIL on"). Turns that carry several have more to do here.
            time.sleep(0)


def _settle(waiter: asyncio.Future[bool], answered: bool) -> None:
    if not waiter.done():
        waiter.set_result(answered)


Unary = Callable[[Any, CallContext], Awaitable[Any]]


def unary_handler(behaviour: Unary) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """An aio unary handler running `behaviour` with a `CallContext`; its abort becomes the RPC's status."""

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        call = CallContext.of(context)
        try:
            return await behaviour(request, call)
        except CallAborted as aborted:
            await context.abort(aborted.code, aborted.details, call.trailers)

    return handle


def in_pool(
    behaviour: Callable[[Any, CallContext], T], pool: concurrent.futures.Executor
) -> Callable[[Any, CallContext], Awaitable[T]]:
    """`behaviour` (synchronous) as an awaitable run on `pool`."""

    async def run(request: Any, call: CallContext) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, behaviour, request, call)

    return run


def stream_handler(
    generate: Callable[[Any, CallContext], Generator[Any, None, None]],
    pool: concurrent.futures.Executor,
    per_step: int = 1,
) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
    """An aio server-streaming handler for the synchronous generator `generate`, which
    runs on `pool`: each step takes up to `per_step` messages (1 for a stream that
    waits between messages, such as a watch).

    When the call ends (the client went away, or the daemon stops), the
    context's callbacks run and the generator is closed: on the pool, once
    a step still running there returns.
    """

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = CallContext.of(context)
        try:
            messages = generate(request, call)  # a bad request fails here, before the generator runs
        except CallAborted as aborted:
            await context.abort(aborted.code, aborted.details, call.trailers)
        step: concurrent.futures.Future[tuple[list[Any], BaseException | None]] | None = None
        try:
            while True:
                step = pool.submit(_take, messages, per_step)
                taken, error = await asyncio.wrap_future(step)
                step = None
                for message in taken:
                    yield message
                if isinstance(error, CallAborted):
                    await context.abort(error.code, error.details, call.trailers)
                if error is not None:
                    raise error
                if len(taken) < per_step:
                    return
        finally:
            call.end()
            if step is None or step.cancel() or step.done():
                messages.close()
            else:  # running: close once it returns (closing a running generator fails)
                step.add_done_callback(lambda _: messages.close())

    return handle


def _take(messages: Iterator[T], count: int) -> tuple[list[T], BaseException | None]:
    """Up to `count` next messages (fewer: the end), and the error that ended them, if one did."""
    taken: list[T] = []
    try:
        for message in messages:
            taken.append(message)
            if len(taken) >= count:
                break
    except Exception as exc:  # sent after the messages before it
        return taken, exc
    return taken, None
