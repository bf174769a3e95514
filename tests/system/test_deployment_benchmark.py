"""`python -m benchmarks.deployment` runs (tiny counts) and prints its rows; without etcd on PATH
it says so and leaves etcd's rows out. `python -m benchmarks.paired` runs and compares two daemons,
and with --clients two SDKs. `python -m benchmarks.floor` runs its floor server beside ours."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.paired import start_daemons

ROOT = Path(__file__).resolve().parents[2]


def test_the_deployment_benchmark_runs_and_reports() -> None:
    assert ".venv/bin/python -m benchmarks.deployment " in (ROOT / "README.md").read_text(encoding="utf-8")
    no_etcd = os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "etcd").exists()
    )
    for path in ([os.environ["PATH"]] if shutil.which("etcd") else []) + [no_etcd]:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.deployment",
                "--quick",
                "--runs",
                "1",
                "--processes",
                "2",
                "--threads",
                "2",
            ],
            cwd=ROOT,
            env={**os.environ, "PATH": path},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        for row in (
            "| 2 processes x 2 agents, a client each: commits/s |",
            "| 2 processes x 2 agents, a client each: server CPU us/commit |",
            "| 1 agent, sequential commit p50 ms |",
            "| 32 agents, asyncio tasks on one AsyncStatehouse: commits/s |",
            "32 asyncio agents >= 32 threads on one client:",
            "| 50 namespaces holding a transaction: daemon threads |",
            "| a commit in a fresh namespace, 50 held: ms each |",
        ):
            assert row in out, out
        with_etcd = path != no_etcd
        assert ("peer: etcd not found on PATH" in out) != with_etcd, out
        assert ("separate-process commits/s >= 0.7x etcd's" in out) == with_etcd, out
        # One agent's commits to both systems in turn, when there is a peer; the target uses them.
        assert ("| 1 agent, sequential commit in turn with the peer: p50 ms |" in out) == with_etcd, out
        assert ("sequential p50 <= 1.3x etcd's (commits in turn):" in out) == with_etcd, out
        # ... beside etcd reached over its own Unix socket, as the SDK reaches ours.
        unix_row = "| 1 agent, sequential commit in turn, etcd on its Unix socket: p50 ms |"
        assert (unix_row in out) == with_etcd, out
        assert ("against etcd on its Unix socket, the same commits in turn:" in out) == with_etcd, out


def paired(*options: str) -> None:
    """Run `benchmarks.paired` with tiny counts and `options`; check its two B/A lines and median."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.paired", "--steps", "30", "--reps", "2", *options],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    for line in lines[:2]:
        a, b, ratio = (float(word) for word in line.split() if word[0].isdigit())
        assert a > 0 and b > 0 and abs(ratio - b / a) < 0.005, line
    assert lines[2].startswith("B/A median of 2: "), result.stdout


# A source tree whose "daemon" only says it is listening, on a port no real one reports.
FAKE_MAIN = """
import os, signal, sys, time
sys.stderr.write('{"event": "server.listening", "port": 4242, "cwd": "%s"}\\n' % os.getcwd())
sys.stderr.flush()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
"""


def test_the_paired_benchmark_runs_each_daemon_from_its_own_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `python -m rpc` imports from its working directory first: with the tree only on
    # PYTHONPATH, both daemons ran the checkout the benchmark was started in.
    fake = tmp_path / "fake"
    (fake / "rpc").mkdir(parents=True)
    (fake / "rpc" / "__init__.py").write_text("")
    (fake / "rpc" / "__main__.py").write_text(FAKE_MAIN)
    monkeypatch.chdir(ROOT)  # where the benchmark runs from, with a real rpc package of its own
    daemons = start_daemons({"A": fake, "B": ROOT}, {"A": [], "B": []}, tmp_path)
    try:
        assert daemons["A"].port == 4242
        assert daemons["A"].log_lines[0]["cwd"] == str(fake)
        assert daemons["B"].port not in (0, 4242)  # the real daemon, on a port of its own
    finally:
        for daemon in daemons.values():
            daemon.stop()


def test_the_paired_benchmark_compares_two_daemons() -> None:
    assert ".venv/bin/python -m benchmarks.paired " in (ROOT / "README.md").read_text(encoding="utf-8")
    paired("--b-env", "STATEHOUSE_SYNC_METHOD=sync_write")


def test_the_paired_benchmark_compares_two_clients_in_agent_processes_of_their_own() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ".venv/bin/python -m benchmarks.paired --clients" in readme
    paired("--clients", "--b-env", "GRPC_EXPERIMENTS=-event_engine_client")


def test_the_floor_benchmark_runs_the_floor_server_beside_ours() -> None:
    performance = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert ".venv/bin/python -m benchmarks.floor" in performance
    no_etcd = os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "etcd").exists()
    )
    for path in ([os.environ["PATH"]] if shutil.which("etcd") else []) + [no_etcd]:
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.floor", "--steps", "20", "--reps", "1", "--warm", "5"],
            cwd=ROOT, env={**os.environ, "PATH": path}, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
        rows = {line.split("|")[1].strip(): line for line in table}
        with_etcd = path != no_etcd
        peers = {"etcd", "etcd-unix"} if with_etcd else set()
        assert set(rows) == {"system", "sdk", "sdk-grpc", "bare", "floor"} | peers, result.stdout
        for name in ("sdk", "sdk-grpc", "bare", "floor", *peers):
            p50, p99, ratio, cpu = (cell.strip() for cell in rows[name].split("|")[2:6])
            assert 0 < float(p50) <= float(p99), rows[name]
            assert float(cpu) > 0, rows[name]  # the server's threads ran for its commits
            assert ratio.endswith("x") if with_etcd else ratio == "-", rows[name]
        assert ("peer: etcd not found on PATH" in result.stdout) != with_etcd, result.stdout
