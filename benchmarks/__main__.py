"""`python -m benchmarks`: Statehouse side by side with etcd on the workloads of issues 4 and 5.

Starts a real statehoused (a subprocess on a temporary data directory, via
`statehouse.testing.DaemonProcess`) and, when an `etcd` binary is on PATH, a
single-node etcd beside it, and runs:

- W1 agent steps: transactions of 3 writes of ~1 KB JSON, durable, from 1, 8
  and 32 agents (threads sharing one client; 32 also with one client each);
- W2 reads: get latest and get at version of random keys of a 100,000-key
  store, 1 and 8 readers;
- W3 replay: one agent's 100,000-event history streamed through replay();
- W4 many namespaces: 10,000 namespaces touched once, the daemon's peak
  threads and RSS;
- W5 the old contract: W1 through BeginTransaction / Write (Struct) / Commit;
- W6 watch wake latency: agents blocked in watch() woken by another client's
  commit of their approval key, 1 watcher and 32 (one transaction of 32
  writes), SDK and raw Watch RPC;
- W7 contended counter: 16 clients incrementing one counter by get_state and
  a write with expected_version, retried on ConflictError; exact count;
- W8 paging and time travel: list_keys_page over a 100,000-key agent while a
  writer changes it, get_agent_state at a past commit, key_history_page of a
  10,000-version key;
- W9 adapter primitives: the latest key of a prefix of 100 and of 1,000,000
  keys, get_many of 100 keys against 100 get_state calls, a 900 KB bytes
  value against the same bytes as base64 JSON;
- W10 forgetting: purge an agent of 100,000 keys, then compact, while
  another client commits: how long each took and what the writer saw;
- W11 growth: 1,000,000 commits of prose-like values into a fresh store,
  the commit rate of every 100,000 and the data directory's size;
- W12 retention: W11's steps with and without retention letting history go
  meanwhile, the commit rate and the ops dropped;

and etcd's W1 (a Txn of 3 puts), W2 (a Range, latest or at a revision), W6
(Watch), W7 (Range, then a Txn comparing mod_revision) and W8 (a paged Range
at one revision) through our own minimal copy of its gRPC API
(benchmarks/etcd/rpc.proto).
Each configuration runs a fixed count `--runs` times, interleaved; the table
shows medians, ours/etcd ratios from the same run and the issue's targets;
`--json` gets every run's raw figures.

    python -m benchmarks                      # everything, ~8-12 minutes on 2 cores
    python -m benchmarks --quick --runs 1     # a smoke test, well under a minute
    python -m benchmarks --only W1,W3
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks import report
from benchmarks.agents import agent_name, step_values
from benchmarks.common import BenchmarkError, OtherLoad, machine_facts, positive_int
from benchmarks.contention import contention_workload
from benchmarks.etcd.server import INSTALL_HINT, etcd_version, find_etcd
from benchmarks.forgetting import forgetting_workload
from benchmarks.growth import growth_workload
from benchmarks.paging import paging_workload
from benchmarks.primitives import primitives_workload
from benchmarks.retention import retention_workload
from benchmarks.wake import wake_workload
from benchmarks.workloads import (
    FULL,
    QUICK,
    Context,
    Outcome,
    commit_workloads,
    namespace_workload,
    read_workload,
    replay_workload,
)

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9", "W10", "W11", "W12")
DEFAULT_JSON = "bench-results.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Statehouse side by side with etcd: agent steps (W1), reads (W2), replay (W3), "
        "many namespaces (W4) and the 0.1.1 contract (W5), with the targets of issue 4; watch wake "
        "latency (W6), a contended counter (W7), paging and time travel (W8) of issue 5; the adapter "
        "primitives (W9) of issue 13; forgetting (W10), growth (W11) and retention (W12) of issue 14.",
    )
    parser.add_argument(
        "--runs", type=positive_int, default=3,
        help="runs of each configuration, interleaved; the table shows medians (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true",
        help=f"tiny counts for a smoke test (W1 {QUICK.w1_txns} txns, W2 {QUICK.w2_keys:,} keys / "
        f"{QUICK.w2_reads} reads, W3 {QUICK.w3_events:,} events, W4 {QUICK.w4_namespaces} namespaces, "
        f"W5 {QUICK.w5_txns} txns, W6 {QUICK.w6_approvals} approvals, W7 {QUICK.w7_increments} increments "
        f"per client, W8 {QUICK.w8_keys:,} keys / {QUICK.w8_versions} versions, W9 "
        f"{QUICK.w9_prefix_keys:,} keys, W10 {QUICK.w10_keys:,} keys, W11 {QUICK.w11_commits:,} commits, "
        f"W12 {QUICK.w12_commits:,} steps)",
    )  # fmt: skip
    parser.add_argument(
        "--only", type=workload_list, default=WORKLOADS, metavar="W1,W3",
        help="the workloads to run, comma-separated (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--json", type=Path, default=Path(DEFAULT_JSON),
        help="where to write every run's figures and the medians (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--tmp-dir", type=Path, default=None,
        help="parent of the temporary data directories; a real disk, not tmpfs (default: the system's)",
    )  # fmt: skip
    return parser


def workload_list(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(part.strip().upper() for part in text.split(",") if part.strip()))
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"expected some of {','.join(WORKLOADS)}, got {text!r}")
    return chosen


# The workloads that run on their own (W1 and W5 run together, below).
ALONE: dict[str, Callable[[Context], Outcome]] = {
    "W2": read_workload,
    "W3": replay_workload,
    "W4": namespace_workload,
    "W6": wake_workload,
    "W7": contention_workload,
    "W8": paging_workload,
    "W9": primitives_workload,
    "W10": forgetting_workload,
    "W11": growth_workload,
    "W12": retention_workload,
}


def run(ctx: Context, only: tuple[str, ...]) -> dict[str, Outcome]:
    """Run the chosen workloads; W1 and W5 together, so their runs interleave with etcd's."""
    outcomes: dict[str, Outcome] = {}
    if "W1" in only or "W5" in only:
        commits = commit_workloads(ctx, "W1" in only, "W5" in only)
        for workload in ("W1", "W5"):
            cases = [c for c in commits.results if c.case.workload == workload]
            if cases:
                outcomes[workload] = Outcome(cases)
    for workload, run_workload in ALONE.items():
        if workload in only:
            outcomes[workload] = run_workload(ctx)
    return {w: outcomes[w] for w in WORKLOADS if w in outcomes}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    etcd = find_etcd()
    peer = (
        f"peer: {etcd_version(etcd)} ({etcd})" if etcd else f"peer: etcd not found on PATH ({INSTALL_HINT})"
    )
    print(peer, flush=True)
    ctx = Context(sizes, args.runs, args.tmp_dir, etcd, lambda line: print(line, file=sys.stderr, flush=True))
    began, other_load = time.perf_counter(), OtherLoad()
    try:
        outcomes = run(ctx, args.only)
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    wall_s = time.perf_counter() - began
    results = {c.case.key: c for outcome in outcomes.values() for c in outcome.results}
    targets = report.evaluate_targets(results, set(args.only), etcd is not None)
    machine = {
        **machine_facts(args.tmp_dir or Path(tempfile.gettempdir())),
        "etcd": etcd_version(etcd) if etcd else None,
        "git": git_describe(),
        "other_load": other_load.measure(),
    }
    value_bytes = len(orjson.dumps(step_values(agent_name(0), 0)[0][1]))
    document = {
        "benchmark": "python -m benchmarks",
        "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 1),
        "machine": machine,
        "settings": {"runs": args.runs, "quick": args.quick, "only": list(args.only), **vars(sizes)},
        "value_bytes": value_bytes,
        "workloads": report.json_results(outcomes),
        "targets": targets,
    }
    args.json.write_text(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    print_summary(
        document,
        report.render(outcomes, sizes, value_bytes, args.runs),
        report.render_targets(targets, args.quick),
    )
    print(f"\nWall time {wall_s:.0f} s; every run's figures in {args.json}")
    return 0


def print_summary(document: dict[str, Any], table: str, targets: str) -> None:
    machine = document["machine"]
    print(
        f"Machine: {machine['usable_cores']} usable cores of {machine['cpu_count']} "
        f"({machine['cpu_model']}), "
        f"Python {machine['python']}, data dirs on {machine['data_dir_filesystem']}; statehouse "
        f"{machine['packages']['statehouse']} ({machine['git']}); grpcio {machine['packages']['grpcio']}"
    )
    print("Clients are threads of this process; the daemon and etcd are processes on the same cores.")
    load = machine["other_load"]
    if load is not None:
        print(
            f"Other processes used {load['other_cpu_s']:,.0f} CPU-seconds during the run, "
            f"{load['other_share']:.0%} of the machine"
            + (
                "; WARNING: the machine was not quiet, numbers are skewed"
                if load["other_share"] > 0.05
                else ""
            )
        )
    if machine["data_dir_filesystem"] in ("tmpfs", "ramfs"):
        print("WARNING: the data directories are on tmpfs, where fsync costs nothing; pass --tmp-dir.")
    print(table)
    if targets:
        print(targets)


def git_describe() -> str:
    """The checkout's commit, "-dirty" with local changes; "unknown" outside git."""
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
