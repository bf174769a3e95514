"""LangGraph savers compared: StatehouseSaver, SqliteSaver and PostgresSaver on the same graph.

    .venv/bin/python -m benchmarks.langgraph [--quick] [--runs N] [--only statehouse,sqlite,postgres]

The graph is a 10-node agent loop: each node adds ~2 KB of prose to a list
channel (so the state grows by ~2 KB a step, as an agent's messages do).
Each saver runs, on a fresh store:

- **1 thread**: invocations one after another; steps/s, and p50/p99 of a
  step (the time between two of the graph's `updates` chunks);
- **16 threads, one process** and **4 processes x 4 threads**: concurrent
  invocations on distinct LangGraph threads; steps/s;
- **disk**: the store's bytes after 10,000 steps (1,000 invocations);
- **latest checkpoint**: `get_tuple` of a thread's latest checkpoint, p50,
  on a thread with 10 and one with 10,000 checkpoints (a 2 KB field
  replaced each step, so the state itself does not grow).

Every run uses LangGraph's `durability="sync"`: a step ends once its
checkpoint is written, so a step's time includes the saver's write, as it
must for a comparison of savers. Durability of each: statehoused fsyncs
each commit before answering; SQLite runs in WAL mode with
`synchronous=FULL` (an fsync per transaction); PostgreSQL with `fsync=on`
and `synchronous_commit=on` (its defaults).

Peers: `SqliteSaver` needs `langgraph-checkpoint-sqlite`; `PostgresSaver`
needs `langgraph-checkpoint-postgres` and `psycopg[binary]`, and a
PostgreSQL server (Debian: `apt install postgresql`), which the benchmark
starts itself on a temporary directory (as the `postgres` user when run as
root) and stops after. A peer that is missing is skipped, and the output
says why.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import operator
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

from benchmarks.common import percentile
from benchmarks.growth import Prose
from benchmarks.harness import timed_threads
from statehouse import Statehouse
from statehouse.testing import DaemonProcess

STEPS = 10  # nodes per invocation
WORDS_PER_STEP = 330  # ~2 KB of prose


class Notes(TypedDict):
    notes: Annotated[list[str], operator.add]


class Scratch(TypedDict):
    scratch: str


def agent_loop(checkpointer: Any, texts: list[str], grows: bool = True) -> Any:
    """The 10-node loop; each node adds (or, with grows=False, replaces) ~2 KB of text."""
    from langgraph.graph import END, START, StateGraph

    builder: Any = StateGraph(Notes if grows else Scratch)
    for i in range(STEPS):
        text = texts[i % len(texts)]
        if grows:
            builder.add_node(f"n{i}", lambda state, text=text: {"notes": [text]})
        else:
            builder.add_node(f"n{i}", lambda state, text=text: {"scratch": text})
        builder.add_edge(START if i == 0 else f"n{i - 1}", f"n{i}")
    builder.add_edge(f"n{STEPS - 1}", END)
    return builder.compile(checkpointer=checkpointer)


def invoke(graph: Any, thread: str, grows: bool = True) -> list[float]:
    """One invocation on `thread`; the seconds each step took."""
    config = {"configurable": {"thread_id": thread}}
    start = {"notes": []} if grows else {"scratch": ""}
    took, last = [], time.perf_counter()
    for _chunk in graph.stream(start, config, stream_mode="updates", durability="sync"):
        now = time.perf_counter()
        took.append(now - last)
        last = now
    if len(took) != STEPS:
        raise RuntimeError(f"an invocation made {len(took)} steps, not {STEPS}")
    return took


# -- the savers ----------------------------------------------------------------------------


class Peer:
    """A saver on a fresh store: `open()` gives a saver for one process (or thread pool)."""

    name = ""
    durability = ""

    def __init__(self, root: Path) -> None:
        self.root = root

    def start(self) -> None: ...

    def stop(self) -> None: ...

    @contextlib.contextmanager
    def saver(self) -> Iterator[Any]:
        raise NotImplementedError

    def disk_bytes(self) -> int:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """What a worker process needs to open a saver on the same store."""
        return {"kind": self.name, "root": str(self.root)}


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class StatehousePeer(Peer):
    name = "statehouse"
    durability = "fsync per commit group (statehoused's default)"

    def start(self) -> None:
        self.daemon = DaemonProcess(self.root / "data").start()
        self.addr = self.daemon.addr

    def stop(self) -> None:
        self.daemon.stop()

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "addr": self.addr}

    @contextlib.contextmanager
    def saver(self) -> Iterator[Any]:
        from statehouse.langgraph import StatehouseSaver

        with Statehouse(self.addr, timeout=120) as client:
            yield StatehouseSaver(client)

    def disk_bytes(self) -> int:
        return tree_bytes(self.root / "data")


class SqlitePeer(Peer):
    name = "sqlite"
    durability = "WAL, synchronous=FULL"

    @contextlib.contextmanager
    def saver(self) -> Iterator[Any]:
        from langgraph.checkpoint.sqlite import SqliteSaver

        connection = sqlite3.connect(self.root / "checkpoints.sqlite", check_same_thread=False, timeout=120)
        try:
            saver = SqliteSaver(connection)
            saver.setup()
            connection.execute("PRAGMA synchronous=FULL")
            yield saver
        finally:
            connection.close()

    def disk_bytes(self) -> int:
        return tree_bytes(self.root)


class PostgresPeer(Peer):
    name = "postgres"
    durability = "fsync=on, synchronous_commit=on"

    def _as_postgres(self, *command: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)

    def start(self) -> None:
        self.data = self.root / "pgdata"
        self.socket_dir = self.root / "socket"
        self.data.mkdir()
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            for path in (self.data, self.socket_dir):
                shutil.chown(path, "postgres")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        subprocess.run(
            self._as_postgres("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust"),
            check=True,
            capture_output=True,
        )
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses='' -c max_connections=200"
        subprocess.run(
            self._as_postgres(
                "pg_ctl", "-D", str(self.data), "-o", options, "-w", "-l", str(self.root / "pg.log"), "start"
            ),
            check=True,
            capture_output=True,
        )
        self.url = f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(self.url) as saver:
            saver.setup()
        self.base_bytes = tree_bytes(self.data)

    def stop(self) -> None:
        subprocess.run(
            self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"), capture_output=True
        )

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "url": self.url}

    @contextlib.contextmanager
    def saver(self) -> Iterator[Any]:
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        pool = ConnectionPool(
            self.url, min_size=1, max_size=20, kwargs={"autocommit": True, "row_factory": dict_row}, open=True
        )
        try:
            yield PostgresSaver(pool)  # type: ignore[arg-type]
        finally:
            pool.close()

    def disk_bytes(self) -> int:
        return tree_bytes(self.data) - self.base_bytes


PEERS: dict[str, Callable[[Path], Peer]] = {
    "statehouse": StatehousePeer,
    "sqlite": SqlitePeer,
    "postgres": PostgresPeer,
}


def missing(name: str) -> str | None:
    """Why the peer cannot run here, or None."""
    if name not in PEERS:
        return f"no such saver (choose from {', '.join(PEERS)})"
    try:
        if name == "sqlite":
            import langgraph.checkpoint.sqlite
        elif name == "postgres":
            import langgraph.checkpoint.postgres  # noqa: F401
            import psycopg_pool  # noqa: F401
    except ImportError as exc:
        wanted = f"langgraph-checkpoint-{name}" + (
            " psycopg[binary] psycopg-pool" if name == "postgres" else ""
        )
        return f"{exc.name} is not installed (pip install {wanted})"
    if name == "postgres" and shutil.which("initdb") is None:
        return "no PostgreSQL server here (initdb not on PATH; Debian: apt install postgresql)"
    return None


# -- the measurements ----------------------------------------------------------------------


def reopen(spec: dict[str, Any]) -> Peer:
    """A worker process's Peer on a running store."""
    peer = PEERS[spec["kind"]](Path(spec["root"]))
    for attribute in ("addr", "url"):  # where the store is served
        if attribute in spec:
            setattr(peer, attribute, spec[attribute])
    return peer


def threaded(peer: Peer, texts: list[str], threads: int, invocations: int, label: str) -> tuple[int, float]:
    """`threads` threads of this process, each `invocations` invocations; (steps, seconds)."""
    with peer.saver() as saver:
        return threaded_on(agent_loop(saver, texts), threads, invocations, label)


def threaded_on(graph: Any, threads: int, invocations: int, label: str) -> tuple[int, float]:
    def work(n: int) -> None:
        for i in range(invocations):
            invoke(graph, f"{label}-{n}-{i}")

    return threads * invocations * STEPS, timed_threads(work, threads)


def _process_main(
    spec: dict[str, Any],
    texts: list[str],
    threads: int,
    invocations: int,
    label: str,
    ready: Any,
    go: Any,
    out: Any,
) -> None:
    peer = reopen(spec)
    with peer.saver() as saver:
        graph = agent_loop(saver, texts)
        invoke(graph, f"{label}-warmup")  # imports and connections made before the clock starts
        ready.put(label)
        go.wait()
        steps, _ = threaded_on(graph, threads, invocations, label)
    out.put((steps, time.time()))


def processes(peer: Peer, texts: list[str], count: int, threads: int, invocations: int) -> tuple[int, float]:
    """`count` processes of `threads` threads, started together once all are ready; (steps, seconds
    from the start to the last one's end)."""
    context = multiprocessing.get_context("spawn")
    ready, out, go = context.Queue(), context.Queue(), context.Event()
    workers = [
        context.Process(
            target=_process_main, args=(peer.spec(), texts, threads, invocations, f"proc{p}", ready, go, out)
        )
        for p in range(count)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=600)
    started = time.time()
    go.set()
    results = [out.get(timeout=1800) for _ in workers]
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            raise RuntimeError(f"a worker process exited {worker.exitcode}")
    return sum(r[0] for r in results), max(r[1] for r in results) - started


def latest_read(peer: Peer, texts: list[str], checkpoints: int, reads: int) -> float:
    """p50 seconds of get_tuple(latest) on a thread with about `checkpoints` checkpoints."""
    with peer.saver() as saver:
        graph = agent_loop(saver, texts, grows=False)
        thread = f"long-{checkpoints}"
        for _ in range(max(1, checkpoints // (STEPS + 1))):
            invoke(graph, thread, grows=False)
        config = {"configurable": {"thread_id": thread}}
        took = []
        for _ in range(reads):
            started = time.perf_counter()
            found = saver.get_tuple(config)
            took.append(time.perf_counter() - started)
            assert found is not None
        return statistics.median(took)


def measure(peer: Peer, texts: list[str], sizes: dict[str, int]) -> dict[str, Any]:
    figures: dict[str, Any] = {"durability": peer.durability}
    with peer.saver() as saver:
        graph = agent_loop(saver, texts)
        invoke(graph, "warmup")
        took: list[float] = []
        started = time.perf_counter()
        for i in range(sizes["sequential"]):
            took += invoke(graph, f"seq-{i}")
        elapsed = time.perf_counter() - started
    took.sort()
    figures["1 thread steps/s"] = len(took) / elapsed
    figures["1 thread p50 ms"] = percentile(took, 50) * 1000
    figures["1 thread p99 ms"] = percentile(took, 99) * 1000
    steps, elapsed = threaded(peer, texts, 16, sizes["concurrent"], "t16")
    figures["16 threads steps/s"] = steps / elapsed
    steps, elapsed = processes(peer, texts, 4, 4, sizes["concurrent"])
    figures["4 processes x 4 threads steps/s"] = steps / elapsed
    before = peer.disk_bytes()
    steps, _ = threaded(peer, texts, 16, max(1, sizes["disk_steps"] // STEPS // 16), "disk")
    figures["disk MB after 10,000 steps"] = (peer.disk_bytes() - before) / 1e6 * 10_000 / steps
    figures["latest get_tuple p50 ms, 10 checkpoints"] = latest_read(peer, texts, 10, sizes["reads"]) * 1000
    figures["latest get_tuple p50 ms, 10,000 checkpoints"] = (
        latest_read(peer, texts, sizes["long_thread"], sizes["reads"]) * 1000
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke test")
    parser.add_argument(
        "--runs", type=int, default=1, help="runs of each saver, medians reported (default 1)"
    )
    parser.add_argument("--only", default="statehouse,sqlite,postgres", help="savers to run, comma-separated")
    parser.add_argument("--json", type=Path, default=None, help="write every run's figures here")
    args = parser.parse_args(argv)
    sizes = (
        {"sequential": 3, "concurrent": 1, "disk_steps": 320, "long_thread": 110, "reads": 20}
        if args.quick
        else {"sequential": 50, "concurrent": 20, "disk_steps": 10_000, "long_thread": 10_000, "reads": 200}
    )
    texts = [Prose(seed).text(WORDS_PER_STEP) for seed in range(STEPS)]
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    runs: dict[str, list[dict[str, Any]]] = {}
    for run in range(args.runs):
        for name in names:
            why = missing(name)
            if why:
                if run == 0:
                    print(f"{name}: skipped: {why}")
                continue
            with tempfile.TemporaryDirectory(prefix=f"lgbench-{name}-") as root:
                peer = PEERS[name](Path(root))
                peer.start()
                try:
                    figures = measure(peer, texts, sizes)
                finally:
                    peer.stop()
            runs.setdefault(name, []).append(figures)
            print(
                f"{name} run {run + 1}: "
                + json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()})
            )
    report(runs)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    return 0


def report(runs: dict[str, list[dict[str, Any]]]) -> None:
    if not runs:
        return
    names = list(runs)
    rows = [k for k in next(iter(runs.values()))[0] if k != "durability"]
    medians = {n: {k: statistics.median(r[k] for r in runs[n]) for k in rows} for n in names}
    print()
    header = (
        "| | "
        + " | ".join(names)
        + " |"
        + ("".join(f" statehouse/{n} |" for n in names if n != "statehouse"))
    )
    print(header)
    print("|---" * (1 + len(names) + sum(n != "statehouse" for n in names)) + "|")
    for row in rows:
        cells = [f"{medians[n][row]:,.2f}" for n in names]
        ratios = [
            f"{medians['statehouse'][row] / medians[n][row]:.2f}x"
            for n in names
            if n != "statehouse" and "statehouse" in medians and medians[n][row]
        ]
        print(f"| {row} | " + " | ".join(cells) + " |" + "".join(f" {r} |" for r in ratios))
    print("| durability | " + " | ".join(runs[n][0]["durability"] for n in names) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
