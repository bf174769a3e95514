"""The README's and docs' Python snippets run as written against a real daemon."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rpc.server import Daemon

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED_ADDR = "127.0.0.1:50051"


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

    (block,) = re.findall(
        r"```sh\n(.*?)```", (ROOT / "docs" / "operations.md").read_text(encoding="utf-8"), re.S
    )
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


def test_documented_benchmarks_run() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ".venv/bin/python -m benchmarks.replay" in readme
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.replay", "--events", "2000", "--runs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("events/s") == 3
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.commits", "--txns", "40", "--runs", "1", "--warmup", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "commits/synced write" in result.stdout
