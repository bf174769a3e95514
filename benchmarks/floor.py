"""What the building blocks allow: one agent's sequential commits to a minimal server, to ours, and to etcd.

    .venv/bin/python -m benchmarks.floor [--steps 1000] [--reps 3] [--warm 300] [--cpu 0]

The **floor** is the least a daemon built from our parts can do for a
commit: a `grpc.aio` server on uvloop and gRPC's polling engine with its
threads on one CPU (as statehoused runs), a Session stream whose Commit
messages it parses and hands to a writer thread, which makes each value
canonical, writes a RocksDB `WriteBatch` of the 13 records a W1 commit
makes, unsynced, then `flush_wal(True)`, and wakes the loop to answer. No
actors, no checks, no versions, no retries: a yardstick, not a store. It
runs as `python -m benchmarks.floor --serve PORT DATA_DIR CPU`.

One agent in this process commits W1 steps (3 writes of ~1 KB) to each in
turn (the order changes every step), after `--warm` steps to each:

- `sdk`: statehoused through our SDK (`Statehouse`, as an agent does), which
  sends its calls on the daemon's local socket (statehouse._local);
- `sdk-grpc`: the same over gRPC only (`Statehouse(local=False)`): its
  calls as messages of a Session stream;
- `bare`: statehoused through a bare Session stream: a hand-built
  `CommitRequest` on grpc's synchronous stream, no SDK;
- `floor`: the floor through the same bare stream;
- `etcd`: etcd's `Txn` through a raw stub, when `etcd` is on PATH;
- `etcd-unix`: the same over etcd's Unix socket.

For each: p50 and p99 per repetition and the ratio to etcd's p50; then,
after the steps in turn, `--steps` more to each system alone, over which
the server's CPU per commit is read (the run time of its threads from
`/proc/<pid>/task/*/schedstat`, in nanoseconds). sdk/bare
is what the SDK costs; bare/floor what the daemon does beyond the floor;
floor/etcd what the parts themselves cost against etcd; sdk/sdk-grpc what
the local socket saves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from benchmarks.agents import step_values
from benchmarks.deployment import Agent, p50_p99_ms, steps_in_turn
from benchmarks.etcd.server import EtcdProcess, find_etcd, free_port
from statehouse import _codec
from statehouse._proto import statehouse_pb2 as pb
from statehouse.testing import DaemonProcess

SESSION = "/statehouse.v1.StatehouseService/Session"
SYSTEMS = ("sdk", "sdk-grpc", "bare", "floor", "etcd", "etcd-unix")


# -- the floor server --------------------------------------------------------------------


def serve(port: int, data_dir: str, cpu: int) -> None:
    """Run the floor server on 127.0.0.1:`port` until killed."""
    os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_listener")  # as rpc/__init__.py does
    import grpc
    import uvloop
    from rocksdict import Options, Rdict, WriteBatch, WriteOptions

    os.sched_setaffinity(0, {cpu})  # every thread started from here on stays there
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    db = Rdict(data_dir, options)
    unsynced = WriteOptions()
    unsynced.sync = False
    inbox: queue.SimpleQueue[tuple[pb.CommitRequest, asyncio.AbstractEventLoop, asyncio.Future[int]]]
    inbox = queue.SimpleQueue()

    def writer() -> None:
        commit_ts = 0
        while True:
            request, loop, answer = inbox.get()
            commit_ts += 1
            ts = commit_ts.to_bytes(8, "big")
            batch = WriteBatch(raw_mode=True)
            batch.put(b"e" + ts, request.SerializeToString())
            for n, m in enumerate(request.mutations):
                name = m.agent_id.encode() + b"\0" + m.key.encode()
                batch.put(b"v" + ts + n.to_bytes(4, "big"), _codec.canonical(m.value_json))
                batch.put(b"s" + name, ts)
                batch.put(b"w" + name + ts, ts)
            batch.put(b"a" + ts, ts)
            batch.put(b"g" + request.mutations[0].agent_id.encode(), b"")
            batch.put(b"t" + request.txn_id.encode(), ts)
            db.write(batch, unsynced)
            db.flush_wal(True)
            loop.call_soon_threadsafe(answer.set_result, commit_ts)
            time.sleep(0)  # hand the GIL to the loop, as our ledger does for a lone commit

    threading.Thread(target=writer, name="writer", daemon=True).start()

    async def session(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        async for raw in requests:
            call = pb.SessionRequest.FromString(raw)
            answer: asyncio.Future[int] = loop.create_future()
            inbox.put((pb.CommitRequest.FromString(call.request), loop, answer))
            response = pb.CommitResponse(commit_ts=await answer).SerializeToString()
            yield pb.SessionResponse(id=call.id, response=response).SerializeToString()

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.stream_stream_rpc_method_handler(session)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("statehouse.v1.StatehouseService", {"Session": handler}),)
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("listening", flush=True)
        await server.wait_for_termination()

    uvloop.run(main())


@contextlib.contextmanager
def floor_server(root: Path, cpu: int) -> Iterator[tuple[str, int]]:
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.floor", "--serve", str(port), str(root / "floor"), str(cpu)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
    try:
        assert process.stdout is not None
        if process.stdout.readline() != b"listening\n":
            raise RuntimeError("the floor server did not start")
        yield f"127.0.0.1:{port}", process.pid
    finally:
        process.kill()
        process.wait()


# -- the clients ---------------------------------------------------------------------------


def commit_request(agent: str, step: int) -> pb.CommitRequest:
    """A W1 step as the SDK would send it: a commit that opens its transaction."""
    return pb.CommitRequest(
        txn_id="default:" + os.urandom(12).hex(),
        open=pb.TxnOpen(),
        mutations=[
            pb.Mutation(namespace="default", agent_id=agent, key=key, value_json=_codec.encode(value))
            for key, value in step_values(agent, step)
        ],
    )


class BareSession:
    """A Session stream on grpc's synchronous API, one hand-built Commit at a time."""

    def __init__(self, addr: str, name: str) -> None:
        import grpc

        self.name = name
        self.channel = grpc.insecure_channel(addr)
        self.requests: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        stream = self.channel.stream_stream(SESSION, response_deserializer=pb.SessionResponse.FromString)
        self.answers = stream(iter(self.requests.get, None))
        self.calls = 0

    def step(self, n: int) -> None:
        self.calls += 1
        request = commit_request(self.name, n).SerializeToString()
        message = pb.SessionRequest(id=self.calls, method="Commit", request=request, timeout_ms=120_000)
        self.requests.put(message.SerializeToString())
        answer = next(self.answers)
        if answer.id != self.calls or answer.code:
            raise RuntimeError(f"commit failed: {answer}")

    def close(self) -> None:
        self.requests.put(None)
        self.channel.close()


# -- the run -------------------------------------------------------------------------------


def run_time_ns(pid: int) -> int:
    """Nanoseconds the threads of process `pid` have run so far (/proc/<pid>/task/*/schedstat)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    return total


def in_turn(steps: int, warm: int, etcd: str | None, cpu: int) -> dict[str, dict[str, float]]:
    """One repetition: p50, p99 (ms) and server CPU per commit (µs) of each system."""
    with tempfile.TemporaryDirectory(prefix="floor-") as scratch, contextlib.ExitStack() as stack:
        root = Path(scratch)
        daemon = stack.enter_context(DaemonProcess(root / "statehouse", env={"STATEHOUSE_PIN_CPU": str(cpu)}))
        assert daemon.process is not None
        floor_addr, floor_pid = stack.enter_context(floor_server(root, cpu))
        agents: dict[str, Any] = {
            "sdk": Agent("statehouse", daemon.addr, "sdk"),
            "sdk-grpc": Agent("statehouse", daemon.addr, "sdk-grpc", local=False),
            "bare": BareSession(daemon.addr, "bare"),
            "floor": BareSession(floor_addr, "floor"),
        }
        pids = {name: daemon.process.pid for name in ("sdk", "sdk-grpc", "bare")}
        pids["floor"] = floor_pid
        if etcd is not None:
            peer = stack.enter_context(EtcdProcess(root / "etcd", etcd))
            assert peer.process is not None
            agents["etcd"] = Agent("etcd", peer.addr, "etcd")
            agents["etcd-unix"] = Agent("etcd", peer.unix_addr, "etcd-unix")
            pids["etcd"] = pids["etcd-unix"] = peer.process.pid
        took = steps_in_turn(agents, warm, steps)
        cpu_used = {}
        for name, agent in agents.items():
            before = run_time_ns(pids[name])
            for n in range(warm + steps, warm + 2 * steps):
                agent.step(n)
            cpu_used[name] = (run_time_ns(pids[name]) - before) / steps / 1000
        for agent in agents.values():
            agent.close()
    figures = {}
    for name, times in took.items():
        p50, p99 = p50_p99_ms(times)
        figures[name] = {"p50": p50, "p99": p99, "cpu": cpu_used[name]}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="commits to each system per repetition")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warm", type=int, default=300, help="commits to each system before the timed ones")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU both servers keep their threads on")
    parser.add_argument("--serve", nargs=3, metavar=("PORT", "DATA_DIR", "CPU"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], int(args.serve[2]))
        return 0
    etcd = find_etcd()
    if etcd is None:
        print("peer: etcd not found on PATH; its row and the ratios to it are left out")
    runs = []
    for rep in range(args.reps):
        figures = in_turn(args.steps, args.warm, etcd, args.cpu)
        runs.append(figures)
        line = "  ".join(f"{name} {f['p50']:.3f} ms" for name, f in figures.items())
        print(f"repetition {rep + 1}: p50 {line}", flush=True)
    print()
    print("| system | p50 ms | p99 ms | / etcd's p50 | server CPU µs/commit |")
    print("|---|---|---|---|---|")
    for name in (s for s in SYSTEMS if s in runs[0]):
        p50 = statistics.median(run[name]["p50"] for run in runs)
        p99 = statistics.median(run[name]["p99"] for run in runs)
        ratio = (
            f"{statistics.median(run[name]['p50'] / run['etcd']['p50'] for run in runs):.2f}x"
            if "etcd" in runs[0]
            else "-"
        )
        cpu = statistics.median(run[name]["cpu"] for run in runs)
        print(f"| {name} | {p50:.3f} | {p99:.3f} | {ratio} | {cpu:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
