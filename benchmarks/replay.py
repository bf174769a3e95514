"""Replay benchmark: events/s streaming one agent's history to a client.

Seeds a data directory with one agent's N single-write events (written
straight through `storage.Store` in large batches, because committing 100k
transactions over gRPC would take minutes), starts a real statehoused on it,
and reads the whole history three ways, each run three times, reporting the
median: the SDK's `replay()` (ReplayBatches, many events per message, JSON
values decoded into Python objects), and the raw `Replay` (one event per
stream message, the original contract) and `ReplayBatches` RPCs.

    python -m benchmarks.replay            # 100,000 events
    python -m benchmarks.replay --events 20000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import grpc

from statehouse import Statehouse
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from statehouse.testing import DaemonProcess
from storage import Event, EventOp, Store

AGENT = "agent"
VALUE = b'{"step":1,"thought":"' + b"x" * 180 + b'"}'


def seed(data_dir: str, events: int) -> None:
    store = Store.open(data_dir)
    try:
        for first in range(1, events + 1, 5000):
            batch = range(first, min(first + 5000, events + 1))
            store.append(
                [
                    Event(ts, f"t{ts}", 0, (EventOp("default", AGENT, f"k{ts % 10}", ts // 10 + 1, VALUE),))
                    for ts in batch
                ]
            )
    finally:
        store.close()


def measure(label: str, read: Callable[[], int], events: int, runs: int) -> None:
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        count = read()
        rates.append(count / (time.perf_counter() - started))
        if count != events:
            raise SystemExit(f"{label}: read {count} events, expected {events}")
    shown = ", ".join(f"{r:,.0f}" for r in rates)
    print(f"{label:<40} median {statistics.median(rates):>9,.0f} events/s   (runs: {shown})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="history length (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs per way of reading (default %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        seed(data_dir, args.events)
        with DaemonProcess(data_dir) as daemon, Statehouse(daemon.addr) as client:
            channel = grpc.insecure_channel(daemon.addr)
            stub = pb_grpc.StatehouseServiceStub(channel)
            request = pb.ReplayRequest(namespace="default", agent_id=AGENT, json_values=True)
            print(f"{args.events:,} events of one agent, ~{len(VALUE)} B values; daemon in its own process")
            measure(
                "SDK replay() (ReplayBatches + decode)",
                lambda: sum(1 for _ in client.replay(AGENT)),
                args.events,
                args.runs,
            )
            measure(
                "raw ReplayBatches RPC",
                lambda: sum(len(b.events) for b in stub.ReplayBatches(request)),
                args.events,
                args.runs,
            )
            measure(
                "raw Replay RPC (one event per message)",
                lambda: sum(1 for _ in stub.Replay(request)),
                args.events,
                args.runs,
            )
            channel.close()


if __name__ == "__main__":
    main()
