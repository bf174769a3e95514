"""AsyncStatehouse: concurrent tasks' commits share round trips (statehouse._batching.AsyncCombiner),
each commit still with its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from rpc.server import Daemon
from statehouse import AsyncStatehouse, ConflictError, StatehouseError
from statehouse._batching import AsyncCombiner
from statehouse.testing import DaemonProcess


class Calls:
    """Counts an AsyncStatehouse's Commit and CommitBatch calls, on sessions or not (wrapping
    the method that sends each call)."""

    def __init__(self, client: AsyncStatehouse) -> None:
        self.commits = 0
        self.batches: list[int] = []
        self.in_flight = self.most_in_flight = 0
        send = client._send

        async def counted(rpc: str, request: Any, timeout: float) -> Any:
            if rpc not in ("Commit", "CommitBatch"):
                return await send(rpc, request, timeout)
            if rpc == "CommitBatch":
                self.batches.append(len(request.commits))
            else:
                self.commits += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                return await send(rpc, request, timeout)
            finally:
                self.in_flight -= 1

        client._send = counted  # type: ignore[method-assign]


def test_tasks_sharing_a_client_commit_through_combined_calls(daemon: Daemon) -> None:
    tasks, steps = 32, 20

    async def main() -> None:
        async with AsyncStatehouse(f"127.0.0.1:{daemon.port}") as client:
            calls = Calls(client)

            async def agent(n: int) -> list[int]:
                stamps = []
                for step in range(steps):
                    tx = client.begin_transaction()
                    for key in range(3):
                        tx.write(f"agent{n}", f"k{key}", {"step": step, "key": key})
                    stamps.append(await tx.commit())
                return stamps

            stamps = await asyncio.gather(*(agent(n) for n in range(tasks)))
            every = [ts for mine in stamps for ts in mine]
            assert len(every) == len(set(every)) == tasks * steps
            assert calls.commits + sum(calls.batches) == len(every)  # each commit sent once
            assert calls.batches and min(calls.batches) >= 2
            assert calls.commits + len(calls.batches) < len(every) / 2  # far fewer round trips
            assert calls.most_in_flight <= 2
            for n in range(tasks):  # each task got its own commit_ts back
                assert [e.commit_ts async for e in client.replay(f"agent{n}")] == stamps[n]

            # A lone commit goes out alone, at once.
            before = calls.commits
            tx = client.begin_transaction()
            tx.write("alone", "k", 1)
            await tx.commit()
            assert calls.commits == before + 1

    asyncio.run(main())


def test_each_commit_of_a_combined_call_has_its_own_outcome(daemon: Daemon) -> None:
    async def main() -> None:
        async with AsyncStatehouse(f"127.0.0.1:{daemon.port}") as client:

            async def claim(n: int) -> int | str:
                tx = client.begin_transaction()
                tx.write("lock", "owner", n, expected_version=0)  # only the first may take it
                try:
                    return await tx.commit()
                except ConflictError:
                    return "conflict"

            outcomes = await asyncio.gather(*(claim(n) for n in range(12)))
            winners = [o for o in outcomes if o != "conflict"]
            assert len(winners) == 1
            owner = (await client.get_state("lock", "owner")).value
            assert outcomes[owner] == winners[0]

    asyncio.run(main())


class Wire:
    """A fake wire whose calls wait for `gate`; records what was sent."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent: list[list[str]] = []

    async def one(self, request: Request) -> str:
        self.sent.append([request.name])
        await self.gate.wait()
        return request.name.upper()

    async def many(self, requests: Sequence[Request]) -> list[str | StatehouseError]:
        self.sent.append([r.name for r in requests])
        await self.gate.wait()
        return [r.name.upper() for r in requests]


class Request:
    def __init__(self, name: str) -> None:
        self.name = name

    def ByteSize(self) -> int:  # the Combiner sizes batches by it
        return 10


def test_a_cancelled_caller_withdraws_its_unsent_request() -> None:
    async def main() -> None:
        wire = Wire()
        combiner: AsyncCombiner[Request, str] = AsyncCombiner(wire.one, wire.many, max_in_flight=2)
        first = asyncio.ensure_future(combiner.call(Request("a")))
        second = asyncio.ensure_future(combiner.call(Request("b")))
        queued = [asyncio.ensure_future(combiner.call(Request(name))) for name in "cde"]
        while len(wire.sent) < 2:  # let the loop run the callers and the two calls they start
            await asyncio.sleep(0)
        assert wire.sent == [["a"], ["b"]]  # both places on the wire taken; c, d, e queued
        queued[1].cancel()  # "d" was not sent: withdrawn
        with pytest.raises(asyncio.CancelledError):
            await queued[1]
        wire.gate.set()
        assert await asyncio.gather(first, second, queued[0], queued[2]) == ["A", "B", "C", "E"]
        assert wire.sent[2:] == [["c", "e"]]
        assert combiner._in_flight == 0

    asyncio.run(main())


def test_a_failed_combined_call_is_each_callers_own_error() -> None:
    async def main() -> None:
        wire = Wire()

        async def failing(requests: Sequence[Request]) -> list[str | StatehouseError]:
            await wire.gate.wait()
            raise StatehouseError("the daemon went away", "UNAVAILABLE")

        combiner: AsyncCombiner[Request, str] = AsyncCombiner(wire.one, failing, max_in_flight=1)
        calls = [asyncio.ensure_future(combiner.call(Request(name))) for name in "abc"]
        while not wire.sent:  # "a" on the wire, alone; "b" and "c" queue behind it
            await asyncio.sleep(0)
        wire.gate.set()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert outcomes[0] == "A"
        errors = outcomes[1:]
        assert all(isinstance(e, StatehouseError) and e.code == "UNAVAILABLE" for e in errors)
        assert errors[0] is not errors[1]

    asyncio.run(main())


def test_combined_async_commits_are_retried_across_a_daemon_restart(tmp_path: Path) -> None:
    """A CommitBatch sent while the daemon is down is retried once it is back; each commit that
    opened its transaction is applied once, with its own commit_ts."""
    data_dir = tmp_path / "data"
    with DaemonProcess(data_dir) as first:
        addr = first.addr

    async def main() -> None:
        async with AsyncStatehouse(addr, timeout=60) as client:
            failed = asyncio.Event()
            send = client._send

            async def recorded(rpc: str, request: Any, timeout: float) -> Any:
                try:
                    return await send(rpc, request, timeout)
                except grpc.RpcError:
                    if rpc == "CommitBatch":
                        failed.set()
                    raise

            client._send = recorded  # type: ignore[method-assign]
            txns = [client.begin_transaction() for _ in range(3)]
            for n, tx in enumerate(txns):
                tx.write("agent", f"k{n}", n)
            sent = asyncio.ensure_future(client._commit_many([tx._commit_call() for tx in txns]))
            await failed.wait()  # the daemon is down: the first attempt failed
            with DaemonProcess(data_dir, "--addr", addr):
                answers = await sent
                assert sorted(answers) == [1, 2, 3]  # type: ignore[type-var]
                for n in range(3):
                    state = await client.get_state("agent", f"k{n}")
                    assert (state.value, state.version, state.commit_ts) == (n, 1, answers[n])

    asyncio.run(main())
