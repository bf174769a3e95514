"""Commit benchmark: latency and throughput of durable transactions, and group commit.

Measures, for 1 (sequential) and 16 concurrent clients and for each of the
daemon's durability methods (`statehoused --sync-method`):

- commits/s over a fixed number of transactions;
- p50/p99 latency of the whole transaction (begin_transaction() until
  commit() returns) and of the commit() call alone;
- commits per synced write: how many commits the ledger grouped into one
  WriteBatch + fsync, counted from the daemon's `txn.commit` log lines (a
  synced write of g commits logs g lines with group=g, so the number of
  synced writes is the sum of 1/group).

Each transaction is what an agent step does: begin, three writes of a ~1 KB
JSON agent-state dict to the client's own agent, commit. Every run starts a
fresh statehoused subprocess on an empty data directory (through
`statehouse.testing.DaemonProcess`); the clients are threads of this process,
one `Statehouse` client each, so clients and daemon share the machine's
cores. Each client warms up (connects, first commits) before a barrier
releases the timed phase; warm-up commits are told apart by commit_ts. Runs
of the configurations are interleaved so slow drift of the machine spreads
over all of them, and the median over runs of each figure is reported.

A run counts only if it can be trusted: each client checks afterwards that
its keys hold the last value with one version per transaction, commit_ts
values are unique, and the daemon's log is complete (clean exit, the final
`server.stopped` line read) with one `txn.commit` line per timed commit.

    python -m benchmarks.commits            # the full default, ~1-2 minutes
    python -m benchmarks.commits --txns 500 --runs 1 --sync-method flush_wal
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import (
    KEYS,
    BenchmarkError,
    agent_state,
    machine_facts,
    percentile,
    positive_int,
)
from statehouse import Statehouse
from statehouse.testing import DaemonProcess

# The choices of `statehoused --sync-method`. The benchmark drives the daemon
# as an outside client does, so it imports none of the daemon's code.
SYNC_METHODS = ("flush_wal", "sync_write")
DEFAULT_CLIENTS = (1, 16)
DEFAULT_TXNS = 2000
DEFAULT_WARMUP = 50
DEFAULT_RUNS = 3
DEFAULT_JSON = "bench-results-commits.json"


@dataclass(frozen=True)
class Config:
    sync_method: str
    clients: int

    @property
    def label(self) -> str:
        return f"{self.sync_method}, {self.clients} client{'s' if self.clients > 1 else ''}"


@dataclass(frozen=True)
class RunResult:
    """One run of one configuration; each field is reported as its median over runs."""

    commits_per_s: float
    txn_p50_ms: float
    txn_p99_ms: float
    commit_p50_ms: float
    commit_p99_ms: float
    commits_per_synced_write: float
    server_txn_p50_ms: float  # the daemon's own begin..durable time (`duration_ms`)
    timed_s: float
    commits: int
    synced_writes: int
    max_group: int


@dataclass
class ClientRecord:
    """What one client thread measured in the timed phase."""

    txn_s: list[float]
    commit_s: list[float]
    commit_ts: list[int]
    finished_at: float = 0.0


# -- the workload ------------------------------------------------------------------


def transact(client: Statehouse, agent: str, step: int) -> tuple[float, float, int]:
    """One transaction of three writes; returns (whole seconds, commit seconds, commit_ts)."""
    values = [(key, agent_state(agent, key, step)) for key in KEYS]  # built outside the timing
    started = time.perf_counter()
    tx = client.begin_transaction()
    for key, value in values:
        tx.write(agent, key, value)
    committing = time.perf_counter()
    commit_ts = tx.commit()
    done = time.perf_counter()
    return done - started, done - committing, commit_ts


def run_client(addr: str, index: int, warmup: int, txns: int, barrier: threading.Barrier) -> ClientRecord:
    """Warm up, wait for every client, run `txns` timed transactions, then check what was stored."""
    agent = f"bench-agent-{index:02d}"
    record = ClientRecord([], [], [])
    try:
        with Statehouse(addr) as client:
            for step in range(warmup):
                transact(client, agent, step)
            barrier.wait()
            for step in range(warmup, warmup + txns):
                txn_s, commit_s, commit_ts = transact(client, agent, step)
                record.txn_s.append(txn_s)
                record.commit_s.append(commit_s)
                record.commit_ts.append(commit_ts)
            record.finished_at = time.perf_counter()
            check_stored(client, agent, warmup + txns, record.commit_ts)
    except BaseException:
        barrier.abort()  # release the other clients instead of leaving them waiting
        raise
    return record


def check_stored(client: Statehouse, agent: str, steps: int, commit_ts: list[int]) -> None:
    """Every key has one version per transaction and holds the last value written."""
    if any(later <= earlier for earlier, later in itertools.pairwise(commit_ts)):
        raise BenchmarkError(f"{agent}: commit_ts not increasing across its own sequential commits")
    for key in KEYS:
        state = client.get_state(agent, key)
        if state.version != steps or state.value != agent_state(agent, key, steps - 1):
            raise BenchmarkError(
                f"{agent}/{key}: expected version {steps} holding step {steps - 1}, "
                f"got version {state.version} holding step {(state.value or {}).get('step')}"
            )
        if commit_ts and state.commit_ts != commit_ts[-1]:
            raise BenchmarkError(f"{agent}/{key}: commit_ts {state.commit_ts}, expected {commit_ts[-1]}")


def drive_clients(addr: str, clients: int, warmup: int, txns: int) -> tuple[list[ClientRecord], float]:
    """Run the client threads; returns their records and the timed phase's start time."""
    started: list[float] = []
    barrier = threading.Barrier(clients, action=lambda: started.append(time.perf_counter()))
    shares = [txns // clients + (1 if i < txns % clients else 0) for i in range(clients)]
    records: list[ClientRecord | None] = [None] * clients
    errors: list[BaseException] = []

    def client_thread(index: int) -> None:
        try:
            records[index] = run_client(addr, index, warmup, shares[index], barrier)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client_thread, args=(i,), name=f"client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if errors:
        raise BenchmarkError(f"a client failed: {(real or errors)[0]!r}") from (real or errors)[0]
    return [r for r in records if r is not None], started[0]


# -- one run: a fresh daemon, the clients, the daemon's commit log -----------------------


def run_once(config: Config, txns: int, warmup: int, tmp_root: Path | None) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="statehouse-bench-", dir=tmp_root) as tmp:
        # --log-level info whatever the environment says: the txn.commit lines are the measurement.
        daemon = DaemonProcess(Path(tmp) / "data", "--sync-method", config.sync_method, "--log-level", "info")
        try:
            daemon.start()
        except RuntimeError as exc:
            raise BenchmarkError(str(exc)) from exc
        try:
            records, started = drive_clients(daemon.addr, config.clients, warmup, txns)
        finally:
            exit_code = stop_daemon(daemon)
        commit_lines = timed_commit_lines(daemon, exit_code, records)
    return summarize(records, started, commit_lines)


def stop_daemon(daemon: DaemonProcess) -> int:
    """Stop cleanly and wait until every log line has been read; returns the exit code."""
    try:
        return daemon.stop()
    except subprocess.TimeoutExpired:
        daemon.kill()
        raise BenchmarkError("statehoused did not stop within 30 s of SIGTERM; killed it") from None


def timed_commit_lines(
    daemon: DaemonProcess, exit_code: int, records: Sequence[ClientRecord]
) -> list[dict[str, Any]]:
    """The daemon's `txn.commit` lines of the timed transactions, after checking the log is whole."""
    if exit_code != 0:
        raise BenchmarkError(f"statehoused exited with code {exit_code}")
    if not daemon.events("server.stopped"):
        raise BenchmarkError("the daemon's log is incomplete (no server.stopped line)")
    problems = [line for line in daemon.log_lines if line.get("level") in ("error", "critical")]
    if problems:
        raise BenchmarkError(f"the daemon logged {len(problems)} errors, first: {problems[0]}")
    timed = [ts for record in records for ts in record.commit_ts]
    timed_set = set(timed)
    if len(timed_set) != len(timed):
        raise BenchmarkError(f"{len(timed) - len(timed_set)} commit_ts were returned to two transactions")
    lines = [line for line in daemon.events("txn.commit") if line["commit_ts"] in timed_set]
    if len(lines) != len(timed):
        raise BenchmarkError(f"{len(timed)} timed commits but {len(lines)} txn.commit log lines for them")
    return lines


def summarize(
    records: Sequence[ClientRecord], started: float, commit_lines: list[dict[str, Any]]
) -> RunResult:
    txn_s = sorted(s for r in records for s in r.txn_s)
    commit_s = sorted(s for r in records for s in r.commit_s)
    timed_s = max(r.finished_at for r in records) - started
    # An empty commit logs group=0 (it shares no synced write); none is made here.
    groups = [int(line["group"]) for line in commit_lines if int(line["ops"]) > 0]
    synced_writes = sum(1 / g for g in groups)
    if abs(synced_writes - round(synced_writes)) > 1e-6:
        raise BenchmarkError(f"group sizes do not add up to whole synced writes ({synced_writes:.3f})")
    durations = sorted(float(line["duration_ms"]) for line in commit_lines)
    return RunResult(
        commits_per_s=len(txn_s) / timed_s,
        txn_p50_ms=percentile(txn_s, 50) * 1000,
        txn_p99_ms=percentile(txn_s, 99) * 1000,
        commit_p50_ms=percentile(commit_s, 50) * 1000,
        commit_p99_ms=percentile(commit_s, 99) * 1000,
        commits_per_synced_write=len(groups) / synced_writes,
        server_txn_p50_ms=percentile(durations, 50),
        timed_s=timed_s,
        commits=len(groups),
        synced_writes=round(synced_writes),
        max_group=max(groups),
    )


def median_result(runs: Sequence[RunResult]) -> dict[str, float]:
    """The median over runs of each figure, taken separately."""
    return {f.name: statistics.median(getattr(run, f.name) for run in runs) for f in fields(RunResult)}


# -- the whole benchmark -----------------------------------------------------------


def run_all(
    configs: Sequence[Config], runs: int, txns: int, warmup: int, tmp_root: Path | None
) -> dict[Config, list[RunResult]]:
    results: dict[Config, list[RunResult]] = {config: [] for config in configs}
    for run in range(1, runs + 1):
        for config in configs:
            result = run_once(config, txns, warmup, tmp_root)
            results[config].append(result)
            print(
                f"  run {run}/{runs}  {config.label:<24} {result.commits_per_s:7.0f} commits/s  "
                f"{result.commits_per_synced_write:5.2f} commits/synced write",
                file=sys.stderr,
                flush=True,
            )
    return results


def notes(machine: dict[str, Any]) -> list[str]:
    found = [
        "The daemon is a separate process; the clients are threads of the benchmark process, "
        f"each with its own Statehouse client. Both share the machine's {machine['usable_cores']} cores.",
        "A thread of the benchmark process also reads and parses the daemon's JSON log "
        "(one line per begin and per commit).",
        "Absolute numbers vary +-20-50% between runs and machines; compare ratios within one run.",
        "Latency 'txn' = begin_transaction() until commit() returned (2 RPCs: the 3 writes are "
        "buffered in the SDK and sent with the commit); 'commit' = the commit() call alone. "
        "Percentiles are over all timed transactions of a run; every figure is the median over runs, "
        "taken separately. Runs of the configurations are interleaved, each on a fresh daemon.",
        "commits/synced write = timed commits / distinct synced writes (WriteBatch + fsync), from the "
        "daemon's txn.commit log lines.",
    ]
    if machine["data_dir_filesystem"] in ("tmpfs", "ramfs"):
        found.append(
            "WARNING: the data directories are on tmpfs, where fsync costs nothing; "
            "pass --tmp-dir on a real disk."
        )
    return found


# (header, RunResult field, format) of each figure column of the table.
TABLE_COLUMNS = (
    ("commits/s", "commits_per_s", ".0f"),
    ("txn p50 ms", "txn_p50_ms", ".2f"),
    ("txn p99 ms", "txn_p99_ms", ".2f"),
    ("commit p50 ms", "commit_p50_ms", ".2f"),
    ("commit p99 ms", "commit_p99_ms", ".2f"),
    ("commits/synced write", "commits_per_synced_write", ".2f"),
)


def render_table(results: dict[Config, list[RunResult]]) -> str:
    header = f"{'sync method':<11} {'clients':>7} " + " ".join(title for title, _, _ in TABLE_COLUMNS)
    rows = [header, "-" * len(header)]
    for config, runs in results.items():
        median = median_result(runs)
        cells = (f"{median[name]:>{len(title)}{fmt}}" for title, name, fmt in TABLE_COLUMNS)
        rows.append(f"{config.sync_method:<11} {config.clients:>7} " + " ".join(cells))
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.commits",
        description=(
            "Commit latency, commits/s and commits per synced write of a real statehoused, "
            "driven by 1 and 16 concurrent SDK clients (3 writes of ~1 KB JSON per transaction)."
        ),
    )
    parser.add_argument(
        "--txns", type=positive_int, default=DEFAULT_TXNS,
        help="timed transactions per run, split over the clients (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--runs", type=positive_int, default=DEFAULT_RUNS,
        help="runs of each configuration, each on a fresh daemon; medians are reported (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=positive_int, default=DEFAULT_WARMUP,
        help="untimed transactions per client before the timed phase (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--clients", type=positive_int, nargs="+", default=list(DEFAULT_CLIENTS),
        help="concurrent client counts to measure (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--sync-method", choices=(*SYNC_METHODS, "both"), default="both",
        help="statehoused --sync-method to measure; 'both' compares them (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--json", type=Path, default=Path(DEFAULT_JSON),
        help="where to write the results as JSON (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--tmp-dir", type=Path, default=None,
        help="parent of the daemons' temporary data directories; must be a real disk, not tmpfs "
        "(default: the system temp directory)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    methods = SYNC_METHODS if args.sync_method == "both" else (args.sync_method,)
    configs = [Config(method, clients) for method in methods for clients in dict.fromkeys(args.clients)]
    value_bytes = len(orjson.dumps(agent_state("bench-agent-00", KEYS[0], 0)))
    print(
        f"Commit benchmark: {args.runs} run(s) x {len(configs)} configurations, {args.txns} timed "
        f"transactions per run (+{args.warmup} warm-up per client), 3 writes of {value_bytes} B JSON each",
        file=sys.stderr,
    )
    began = time.perf_counter()
    try:
        results = run_all(configs, args.runs, args.txns, args.warmup, args.tmp_dir)
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    settings = {
        "txns_per_run": args.txns,
        "warmup_per_client": args.warmup,
        "runs": args.runs,
        "writes_per_txn": len(KEYS),
        "value_bytes": value_bytes,
    }
    machine = machine_facts(args.tmp_dir or Path(tempfile.gettempdir()))
    report = build_report(results, machine, settings, time.perf_counter() - began)
    args.json.write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    print_report(report, render_table(results), args.json)
    return 0


def build_report(
    results: dict[Config, list[RunResult]], machine: dict[str, Any], settings: dict[str, Any], wall_s: float
) -> dict[str, Any]:
    """Everything printed, as JSON: medians and every run of each configuration."""
    return {
        "benchmark": "commits",
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 1),
        "machine": machine,
        "settings": settings,
        "notes": notes(machine),
        "results": [
            {**asdict(config), "median": median_result(runs), "runs": [asdict(run) for run in runs]}
            for config, runs in results.items()
        ],
    }


def print_report(report: dict[str, Any], table: str, json_path: Path) -> None:
    machine, settings = report["machine"], report["settings"]
    print(
        f"Machine: {machine['usable_cores']} usable cores of {machine['cpu_count']} "
        f"({machine['cpu_model']}), Python {machine['python']}, {machine['platform']}, "
        f"data dirs on {machine['data_dir_filesystem']}"
    )
    print(
        f"Workload: {settings['txns_per_run']} timed transactions per run, 3 writes of "
        f"{settings['value_bytes']} B JSON each; median of {settings['runs']} run(s)"
    )
    print()
    print(table)
    print()
    for note in report["notes"]:
        print(f"- {note}")
    print(f"\nWall time {report['wall_s']:.0f} s; results written to {json_path}")


if __name__ == "__main__":
    sys.exit(main())
