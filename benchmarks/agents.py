"""The workers that drive statehoused, and the checks that make their numbers trustworthy.

Each worker is one simulated agent (or reader) for `benchmarks.harness`:
`SdkAgent` commits agent steps through the SDK, `LegacyAgent` does the same
step the way a `statehouse==0.1.1` client does (BeginTransaction, one Write
per key with a `google.protobuf.Struct` value, Commit), `SdkReader` reads
preloaded keys. The daemon runs as a subprocess (`statehouse.testing.
DaemonProcess`); nothing here imports the daemon's code.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from google.protobuf.struct_pb2 import Struct

from benchmarks.common import KEYS, BenchmarkError, agent_state, percentile
from statehouse import Statehouse
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from statehouse.testing import DaemonProcess

RPC_TIMEOUT_S = 30.0
# W2's store: values cycle through this many agent-state dicts, so the
# preload builds few dicts and a reader knows what each key must hold.
VALUE_POOL = 64
READER_AGENTS = 10


def agent_name(index: int) -> str:
    return f"agent-{index:02d}"


def step_values(agent: str, step: int) -> list[tuple[str, dict[str, Any]]]:
    """The three (key, value) writes of one agent step."""
    return [(key, agent_state(agent, key, step)) for key in KEYS]


class SdkAgent:
    """An agent step through the SDK: `with begin_transaction() as tx`, three writes, commit on exit."""

    def __init__(self, client: Statehouse, agent: str) -> None:
        self.client = client
        self.agent = agent
        self.commit_ts: list[int] = []

    def prepare(self, step: int) -> list[tuple[str, dict[str, Any]]]:
        return step_values(self.agent, step)

    def run(self, values: list[tuple[str, dict[str, Any]]]) -> None:
        with self.client.begin_transaction() as tx:
            for key, value in values:
                tx.write(self.agent, key, value)
        if tx.commit_ts is None:
            raise BenchmarkError(f"{self.agent}: the transaction left the with block without a commit_ts")
        self.commit_ts.append(tx.commit_ts)


class LegacyAgent:
    """An agent step as statehouse 0.1.1 sends it: 5 RPCs, each value converted to a Struct."""

    def __init__(self, stub: pb_grpc.StatehouseServiceStub, agent: str) -> None:
        self.stub = stub
        self.agent = agent
        self.commit_ts: list[int] = []

    def prepare(self, step: int) -> list[tuple[str, dict[str, Any]]]:
        return step_values(self.agent, step)

    def run(self, values: list[tuple[str, dict[str, Any]]]) -> None:
        begun = self.stub.BeginTransaction(pb.BeginTransactionRequest(), timeout=RPC_TIMEOUT_S)
        for key, value in values:
            struct = Struct()
            struct.update(value)
            request = pb.WriteRequest(
                txn_id=begun.txn_id, namespace="default", agent_id=self.agent, key=key, value=struct
            )
            self.stub.Write(request, timeout=RPC_TIMEOUT_S)
        committed = self.stub.Commit(pb.CommitRequest(txn_id=begun.txn_id), timeout=RPC_TIMEOUT_S)
        self.commit_ts.append(committed.commit_ts)


def check_agent(client: Statehouse, agent: str, steps: int, commit_ts: Sequence[int]) -> None:
    """The agent's keys have one version per step and hold the last step's values.

    Numbers written as Struct doubles come back as integers (the daemon
    stores integral doubles as integers), so the comparison is exact for
    both contracts.
    """
    if len(commit_ts) != steps:
        raise BenchmarkError(f"{agent}: {len(commit_ts)} commit_ts for {steps} steps")
    if any(later <= earlier for earlier, later in itertools.pairwise(commit_ts)):
        raise BenchmarkError(f"{agent}: commit_ts not increasing across its own sequential commits")
    for key, expected in step_values(agent, steps - 1):
        state = client.get_state(agent, key)
        if state.version != steps or state.value != expected or state.commit_ts != commit_ts[-1]:
            raise BenchmarkError(
                f"{agent}/{key}: expected version {steps} holding step {steps - 1} at commit_ts "
                f"{commit_ts[-1]}, got version {state.version} holding step "
                f"{(state.value or {}).get('step')} at commit_ts {state.commit_ts}"
            )


# -- the read workload's keys --------------------------------------------------------


def reader_key(index: int) -> tuple[str, str]:
    """(agent, key) of key number `index` of W2's store: spread over a few agents."""
    return f"reader-{index % READER_AGENTS}", f"k{index:06d}"


def reader_value(index: int) -> dict[str, Any]:
    return agent_state("reader", "memory", index % VALUE_POOL)


class SdkReader:
    """Reads keys of W2's store by index: latest (`get_state`) or version 1 (`get_state_at_version`)."""

    def __init__(self, client: Statehouse, picks: Sequence[int], at_version: bool) -> None:
        self.client = client
        self.picks = picks
        self.at_version = at_version

    def prepare(self, step: int) -> tuple[str, str, int]:
        index = self.picks[step % len(self.picks)]
        return (*reader_key(index), index)

    def run(self, pick: tuple[str, str, int]) -> None:
        agent, key, index = pick
        if self.at_version:
            state = self.client.get_state_at_version(agent, key, 1)
        else:
            state = self.client.get_state(agent, key)
        if state.version != 1 or state.value["step"] != index % VALUE_POOL:
            raise BenchmarkError(f"{agent}/{key}: read version {state.version}, value {state.value!r:.80}")


def preload(client: Statehouse, indices: Iterable[int]) -> None:
    """Write keys `indices` of W2's store in one transaction."""
    pool = [reader_value(i) for i in range(VALUE_POOL)]
    with client.begin_transaction() as tx:
        for index in indices:
            tx.write(*reader_key(index), pool[index % VALUE_POOL])


# -- the daemon's lifecycle and its log ------------------------------------------------


def start_daemon(data_dir: Path, *flags: str) -> DaemonProcess:
    """A fresh statehoused with `flags`; `--log-level info` whatever the environment says (its
    txn lines are data)."""
    daemon = DaemonProcess(data_dir, "--log-level", "info", *flags)
    try:
        return daemon.start()
    except RuntimeError as exc:
        raise BenchmarkError(str(exc)) from exc


@contextmanager
def running_daemon(data_dir: Path, *flags: str) -> Iterator[DaemonProcess]:
    """A fresh statehoused, stopped and its log checked on leaving; the object stays readable after."""
    daemon = start_daemon(data_dir, *flags)
    try:
        yield daemon
    finally:
        stop_daemon(daemon)


def stop_daemon(daemon: DaemonProcess) -> None:
    """Stop cleanly, wait until every log line has been read, and check the log is whole and clean."""
    try:
        exit_code = daemon.stop()
    except subprocess.TimeoutExpired:
        daemon.kill()
        raise BenchmarkError("statehoused did not stop within 30 s of SIGTERM; killed it") from None
    if exit_code != 0:
        raise BenchmarkError(f"statehoused exited with code {exit_code}")
    if not daemon.events("server.stopped"):
        raise BenchmarkError("the daemon's log is incomplete (no server.stopped line)")
    problems = [line for line in daemon.log_lines if line.get("level") in ("error", "critical")]
    if problems:
        raise BenchmarkError(f"the daemon logged {len(problems)} errors, first: {problems[0]}")


def commit_lines(daemon: DaemonProcess, commit_ts: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The daemon's `txn.commit` line of each commit; checks there is exactly one per commit, no other."""
    if len(set(commit_ts)) != len(commit_ts):
        raise BenchmarkError(f"{len(commit_ts) - len(set(commit_ts))} commit_ts were returned twice")
    # An empty commit logs ops=0; none is made here.
    lines = {int(line["commit_ts"]): line for line in daemon.events("txn.commit") if int(line["ops"]) > 0}
    if set(lines) != set(commit_ts):
        raise BenchmarkError(
            f"{len(commit_ts)} commits acknowledged but {len(lines)} txn.commit log lines "
            f"({len(set(commit_ts) - set(lines))} commits without a line)"
        )
    return lines


def log_figures(lines: Sequence[dict[str, Any]]) -> dict[str, float]:
    """From these commits' log lines: commits per synced write (a write of g commits logs g lines
    with group=g) and the p50 of the daemon's own time from a transaction's begin to durable."""
    groups = [int(line["group"]) for line in lines]
    synced_writes = sum(1 / g for g in groups)
    return {
        "commits_per_synced_write": len(groups) / synced_writes,
        "max_group": max(groups),
        "daemon_p50_ms": percentile(sorted(float(line["duration_ms"]) for line in lines), 50),
    }
