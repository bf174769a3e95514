"""The README's and docs' Python snippets run as written against a real daemon."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from actors import ActorConfig
from rpc.server import Daemon, DaemonConfig

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED_ADDR = "127.0.0.1:50051"
DOCUMENTED_HTTP_ADDR = "127.0.0.1:50052"


@pytest.fixture
def daemon_config(data_dir: Path, actor_config: ActorConfig) -> DaemonConfig:
    return DaemonConfig(data_dir=data_dir, addr="127.0.0.1:0", http_addr="127.0.0.1:0", actors=actor_config)


def http_addr(daemon: Daemon) -> str:
    assert daemon.monitor is not None
    return f"127.0.0.1:{daemon.monitor.port}"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def test_readme_quickstart_runs(daemon: Daemon) -> None:
    (quickstart,) = python_blocks(ROOT / "README.md")
    assert DOCUMENTED_ADDR in quickstart
    code = quickstart.replace(DOCUMENTED_ADDR, f"127.0.0.1:{daemon.port}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("{'facts': ['sky is blue'], 'steps': 42} 1 ")
    assert lines[1].endswith("[('memory', 1), ('plan', 1)]")
    assert len(lines) == 2


def test_sdk_guide_runs_as_written(daemon: Daemon) -> None:
    """docs/sdk.md: every block, in order, in one interpreter, as a reader would paste them."""
    blocks = python_blocks(ROOT / "docs" / "sdk.md")
    assert len(blocks) >= 8
    names: dict[str, object] = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for n, block in enumerate(blocks):
            assert DOCUMENTED_ADDR in block or n > 0
            code = block.replace(DOCUMENTED_ADDR, f"127.0.0.1:{daemon.port}")
            exec(compile(code, f"docs/sdk.md block {n + 1}", "exec"), names)
    assert out.getvalue().splitlines() == [
        "True 1",
        "step 1 2",  # the conflict: expected version 1, found 2
        "1 2",
        "3",
        "6",  # the idempotent step: the same commit_ts twice,
        "6",
        "1",  # and written once
        "planner [('approval', {'approved': True, 'by': 'dana'})]",
        "dana 1",
        "2 True None",
        "1 False {'budget': 400, 'text': 'book a flight'}",
        "True",
        "book a flight False",
        "ckpt:0002 4",
        "['first', 10]",
        "['thread-1']",
        "[True]",
        "True ['thread-1']",
        "True",  # the retention handler: the replay of thread-1 has events
        "10",
        "status done",
        "['approval', 'goal', 'result-2', 'step', 'visits']",
    ]


def test_package_docstring_example_runs(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    import statehouse

    (example,) = re.findall(r"```python\n(.*?)```", statehouse.__doc__ or "", re.S)
    monkeypatch.setenv("STATEHOUSE_ADDR", f"127.0.0.1:{daemon.port}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, "statehouse/__init__.py", "exec"), {})
    assert out.getvalue() == "{'facts': ['sky is blue'], 'n': 42}\n"


def test_documented_daemon_help_command_works() -> None:
    statehoused = Path(sys.executable).parent / "statehoused"
    assert ".venv/bin/statehoused --help" in (ROOT / "README.md").read_text(encoding="utf-8")
    result = subprocess.run([str(statehoused), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    table = [
        line
        for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `--")
    ]
    flags = [flag for line in table for flag in re.findall(r"`(--[a-z-]+)", line)]
    assert len(flags) >= 12
    for flag in flags:  # the daemon's flag table
        assert flag in result.stdout, f"README documents {flag}, statehoused --help does not"


def test_documented_restore_commands_work(tmp_path: Path) -> None:
    from statehouse import Statehouse
    from statehouse.testing import DaemonProcess

    (block,) = [
        block
        for block in re.findall(
            r"```sh\n(.*?)```", (ROOT / "docs" / "operations.md").read_text(encoding="utf-8"), re.S
        )
        if "restored-data" in block
    ]
    copy_lines, start_line = block.splitlines()[:-1], block.splitlines()[-1]
    assert start_line == ".venv/bin/statehoused --data-dir restored-data"
    with DaemonProcess(tmp_path / "statehouse-data") as daemon, Statehouse(daemon.addr) as client:
        with client.begin_transaction() as tx:
            tx.write("a", "k", {"n": 1})
        client.create_snapshot()
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(copy_lines)], cwd=tmp_path, check=True, timeout=60
    )
    with DaemonProcess(tmp_path / "restored-data") as daemon, Statehouse(daemon.addr) as client:
        assert client.get_state("a", "k").value == {"n": 1}


BENCHMARK_ROWS = (
    "W1 agent steps",
    "statehouse  32 agents, one shared client",
    "W2 reads",
    "statehouse  get at version, 8 readers",
    "W3 replay",
    "statehouse  SDK replay()",
    "W4 many namespaces",
    "W5 the old contract",
    "W6 watch wake latency",
    "statehouse  1 watcher, SDK watch()",
    "W7 contended counter",
    "statehouse  16 clients, one client each",
    "W8 paging and time travel",
    "statehouse  get_agent_state(at_commit_ts=middle)",
    "W9 adapter primitives",
    "statehouse  get_many of 100 keys (one call)",
    "W10 forgetting",
    "W11 growth",
    "W12 retention",
    "statehouse  2,000 steps of 3 prose writes, 32 threads on one client, --retain-versions 1 every 0.5 s",
    "Targets (issue 4)",
)


def run_benchmark(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )


def test_documented_benchmarks_run(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in (
        "make bench",
        ".venv/bin/python -m benchmarks --quick --runs 1",
        ".venv/bin/python -m benchmarks --only W1,W3",
        ".venv/bin/python -m benchmarks.commits",
        ".venv/bin/python -m benchmarks.monitor",
        ".venv/bin/python -m benchmarks.etcd.generate",
    ):
        assert command in readme
    assert "$(BIN)/python -m benchmarks" in (ROOT / "Makefile").read_text(encoding="utf-8")

    results = tmp_path / "bench.json"
    result = run_benchmark("benchmarks", "--quick", "--runs", "1", "--json", str(results))
    assert result.returncode == 0, result.stderr
    for row in BENCHMARK_ROWS:
        assert row in result.stdout, row
    document = json.loads(results.read_text(encoding="utf-8"))
    assert list(document["workloads"]) == [f"W{n}" for n in range(1, 13)]
    assert all(len(case["runs"]) == 1 for w in document["workloads"].values() for case in w["cases"])
    assert len(document["targets"]) == 7
    if shutil.which("etcd"):
        assert "etcd  32 agents, one shared channel" in result.stdout
        assert "etcd  range at revision, 8 readers" in result.stdout
        assert "n/a" not in result.stdout
    else:
        assert "peer: etcd not found on PATH (Debian: apt install etcd-server)" in result.stdout

    # Without etcd on PATH the peer rows are left out, not failed.
    no_etcd = os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "etcd").exists()
    )
    result = run_benchmark(
        "benchmarks", "--quick", "--runs", "1", "--only", "W1", "--json", str(results),
        env={**os.environ, "PATH": no_etcd},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "peer: etcd not found on PATH (Debian: apt install etcd-server)" in result.stdout
    assert "statehouse  32 agents, one client each" in result.stdout
    assert "one shared channel" not in result.stdout and "rate vs etcd" not in result.stdout
    assert "W1 32 agents commits/s >= 1.0x etcd" in result.stdout and "n/a (no etcd)" in result.stdout

    result = run_benchmark("benchmarks.commits", "--txns", "40", "--runs", "1", "--warmup", "2",
                           "--json", str(tmp_path / "commits.json"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "commits/synced write" in result.stdout

    result = run_benchmark("benchmarks.monitor", "--txns", "5", "--runs", "1", "--agents", "4")
    assert result.returncode == 0, result.stderr
    assert re.search(r"nonstop +commits/s +\d+ .*/actors answered \d+ times", result.stdout), result.stdout

    result = run_benchmark("benchmarks.etcd.generate", "--check")
    assert result.returncode == 0, result.stdout


def test_readme_statehousectl_lines_work(daemon: Daemon) -> None:
    """After the quickstart, each README `statehousectl` line (but the endless `tail -f`) exits 0."""
    test_readme_quickstart_runs(daemon)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = [
        line.split("#")[0].split()
        for line in readme.splitlines()
        if line.startswith(".venv/bin/statehousectl ")
    ]
    assert len(lines) >= 4
    for words in lines:
        if "-f" in words:
            continue
        args = [w if w != DOCUMENTED_ADDR else f"127.0.0.1:{daemon.port}" for w in words[1:]]
        if "--addr" not in args:
            args = ["--addr", f"127.0.0.1:{daemon.port}", "--http-addr", http_addr(daemon), *args]
        result = subprocess.run(
            [sys.executable, "-m", "statehouse.cli", *args], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, (words, result.stdout, result.stderr)
        assert result.stdout.strip(), words


def test_readme_curl_lines_answer(daemon: Daemon) -> None:
    """Each `curl` line of the README gets 200 and what its comment promises."""
    import urllib.request

    test_readme_quickstart_runs(daemon)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    urls = re.findall(r"^curl -s (\S+)", readme, re.M)
    assert [url.rsplit("/", 1)[1] for url in urls] == ["readyz", "actors", "metrics", "config"]
    answers = {}
    for url in urls:
        assert url.startswith(f"http://{DOCUMENTED_HTTP_ADDR}/")
        with urllib.request.urlopen(
            url.replace(DOCUMENTED_HTTP_ADDR, http_addr(daemon)), timeout=10
        ) as answer:
            assert answer.status == 200
            answers[url.rsplit("/", 1)[1]] = answer.read().decode()
    assert answers["readyz"] == "ready\n"
    assert json.loads(answers["actors"])["ledger"]["last_commit_ts"] == 1
    assert "statehouse_commits_total 1.0" in answers["metrics"]
    assert "statehouse_open_transactions 0.0" in answers["metrics"]
    assert json.loads(answers["config"])["max_value_bytes"] == daemon.config.max_value_bytes
