"""Async-native cases of `AsyncStatehouse` against a real daemon: concurrency within one
event loop, and cancellation (what the blocking facade of the pair tests cannot show)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from rpc.server import Daemon
from statehouse import AsyncStatehouse, AsyncWatch, ConflictError, DeadlineExceededError, ReplayEvent

WAIT = 30.0


def run(daemon: Daemon, body: Callable[[AsyncStatehouse], Awaitable[Any]]) -> Any:
    """Run `body(client)` in a fresh event loop with a client of the daemon."""

    async def main() -> Any:
        async with AsyncStatehouse(f"127.0.0.1:{daemon.port}") as client:
            return await asyncio.wait_for(body(client), WAIT)

    return asyncio.run(main())


def test_fifty_concurrent_transactions(daemon: Daemon) -> None:
    async def body(client: AsyncStatehouse) -> None:
        async def one(n: int) -> int:
            async with client.begin_transaction() as tx:
                tx.write(f"agent{n}", "k", {"n": n})
                tx.write("shared", f"k{n:02}", n)
            assert tx.commit_ts is not None
            return tx.commit_ts

        stamps = await asyncio.gather(*(one(n) for n in range(50)))
        assert sorted(stamps) == list(range(1, 51))
        states = await asyncio.gather(*(client.get_state(f"agent{n}", "k") for n in range(50)))
        assert [(s.value, s.commit_ts) for s in states] == [({"n": n}, stamps[n]) for n in range(50)]
        assert await client.list_keys("shared") == [f"k{n:02}" for n in range(50)]
        assert [e.commit_ts async for e in client.replay("shared")] == list(range(1, 51))

    run(daemon, body)


def test_sixteen_tasks_increment_one_counter_exactly(daemon: Daemon) -> None:
    tasks, increments = 16, 10

    async def body(client: AsyncStatehouse) -> None:
        async def agent() -> int:
            conflicts = 0
            async with AsyncStatehouse(client.url) as own:
                for _ in range(increments):
                    while True:
                        state = await own.get_state("shared", "counter")
                        tx = own.begin_transaction()
                        tx.write("shared", "counter", (state.value or 0) + 1, expected_version=state.version)
                        try:
                            await tx.commit()
                            break
                        except ConflictError:
                            conflicts += 1
            return conflicts

        conflicts = await asyncio.gather(*(agent() for _ in range(tasks)))
        final = await client.get_state("shared", "counter")
        assert (final.value, final.version) == (tasks * increments, tasks * increments)
        print(f"{sum(conflicts)} conflicts retried")

    run(daemon, body)


def test_cancelling_the_consuming_task_ends_the_watch(daemon: Daemon) -> None:
    async def body(client: AsyncStatehouse) -> None:
        watch = await client.watch("a")
        got: list[ReplayEvent] = []
        first = asyncio.Event()

        async def consume() -> None:
            async for event in watch:
                got.append(event)
                first.set()

        task = asyncio.create_task(consume())
        async with client.begin_transaction() as tx:
            tx.write("a", "k", 1)
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [e.commit_ts for e in got] == [tx.commit_ts]
        assert watch._call.done() and watch._call.cancelled()  # the stream went with the task
        # The client carries on, and a new watch sees new commits.
        async with await client.watch("a") as again:
            async with client.begin_transaction() as tx2:
                tx2.write("a", "k", 2)
            event = await anext(again)
            assert event.commit_ts == tx2.commit_ts

    run(daemon, body)


def test_a_read_cut_short_by_an_asyncio_timeout_resumes_with_no_gap(daemon: Daemon) -> None:
    async def body(client: AsyncStatehouse) -> None:
        watch = await client.watch("a")
        async with client.begin_transaction() as tx:
            tx.write("a", "k", 1)
        assert (await anext(watch)).commit_ts == tx.commit_ts
        with pytest.raises(TimeoutError):  # nothing new: the caller's timeout cancels the read
            async with asyncio.timeout(0.05):
                await anext(watch)
        assert watch._call.cancelled()
        async with client.begin_transaction() as tx2:
            tx2.write("a", "k", 2)
        async with client.begin_transaction() as tx3:
            tx3.write("a", "k", 3)
        # The watch goes on (on a new stream, from where it was): no error, no gap, no repeat.
        assert [(await anext(watch)).commit_ts for _ in range(2)] == [tx2.commit_ts, tx3.commit_ts]
        assert await client.health() == "ok"
        watch.cancel()

    run(daemon, body)


def test_cancel_from_another_task_ends_async_for_cleanly(daemon: Daemon) -> None:
    async def body(client: AsyncStatehouse) -> None:
        watch = await client.watch(key_prefix="x")
        assert isinstance(watch, AsyncWatch)

        async def consume() -> list[ReplayEvent]:
            return [event async for event in watch]

        task = asyncio.create_task(consume())
        async with client.begin_transaction() as tx:
            tx.write("a", "x1", 1)
        await watch.aclose()
        events = await task  # no exception
        assert [e.commit_ts for e in events] in ([], [1])

    run(daemon, body)


def test_wait_for_wakes_on_a_commit_of_another_task(daemon: Daemon) -> None:
    async def body(client: AsyncStatehouse) -> None:
        asked = asyncio.Event()

        def approved(value: Any) -> bool:
            asked.set()
            return value == "yes"

        async with client.begin_transaction() as tx:
            tx.write("agent", "approval", "pending")
        waiter = asyncio.create_task(client.wait_for("agent", "approval", approved, timeout=WAIT))
        await asyncio.wait_for(asked.wait(), WAIT)
        async with client.begin_transaction() as tx:
            tx.write("agent", "approval", "yes")
        state = await waiter
        assert (state.value, state.version, state.commit_ts) == ("yes", 2, tx.commit_ts)
        timed_out = asyncio.create_task(
            client.wait_for("agent", "approval", lambda v: v == "no", timeout=0.2)
        )
        with pytest.raises(DeadlineExceededError):
            await timed_out

    run(daemon, body)
