"""`python -m benchmarks.deployment` runs (tiny counts) and prints its rows; without etcd on PATH
it says so and leaves etcd's rows out. `python -m benchmarks.paired` runs and compares two daemons,
and with --clients two SDKs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def test_the_paired_benchmark_compares_two_daemons() -> None:
    assert ".venv/bin/python -m benchmarks.paired " in (ROOT / "README.md").read_text(encoding="utf-8")
    paired("--b-env", "STATEHOUSE_SYNC_METHOD=sync_write")


def test_the_paired_benchmark_compares_two_clients_in_agent_processes_of_their_own() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ".venv/bin/python -m benchmarks.paired --clients" in readme
    paired("--clients", "--b-env", "GRPC_EXPERIMENTS=-event_engine_client")
