"""The README's `make run`, as a person runs it: two daemons side by side, each with its own
gRPC and HTTP addresses (ADDR, HTTP_ADDR) and data directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from statehouse import Statehouse

ROOT = Path(__file__).resolve().parents[2]
# As a person's shell runs it: not as a sub-make of `make test` (whose MAKEFLAGS, MAKELEVEL
# and jobserver would make this make a sub-make that does not pass SIGTERM on to the daemon).
SHELL_ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_make_run_serves_two_daemons_side_by_side(tmp_path: Path) -> None:
    assert "HTTP_ADDR=" in (ROOT / "README.md").read_text(encoding="utf-8")
    daemons = []
    try:
        for n in range(2):
            grpc_port, http_port = free_port(), free_port()
            command = [
                "make", "-s", "run", f"DATA_DIR={tmp_path / f'data{n}'}",
                f"ADDR=127.0.0.1:{grpc_port}", f"HTTP_ADDR=127.0.0.1:{http_port}",
            ]  # fmt: skip
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=SHELL_ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            daemons.append((process, grpc_port, http_port))
        for n, (_process, grpc_port, http_port) in enumerate(daemons):
            with Statehouse(f"127.0.0.1:{grpc_port}", timeout=120) as client:  # retried until it serves
                assert client.health() == "ok"
                with client.begin_transaction() as tx:
                    tx.write("agent", "which", n)
                assert client.get_state("agent", "which").value == n  # its own data directory
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=30) as answer:
                assert answer.status == 200
    finally:
        for process, _, _ in daemons:
            os.killpg(process.pid, signal.SIGTERM)  # make and the daemon it runs
        printed = [process.communicate(timeout=60)[0].decode() for process, _, _ in daemons]
    assert all((tmp_path / f"data{n}").is_dir() for n in range(2))
    # Each said, in words, that it is ready, where, and what to try next.
    for n, ((_process, grpc_port, http_port), out) in enumerate(zip(daemons, printed, strict=True)):
        assert "statehoused 0." in out and "is ready" in out, out
        assert f"gRPC  127.0.0.1:{grpc_port}\n" in out
        assert f"HTTP  http://127.0.0.1:{http_port}  (/healthz /readyz /actors /metrics)" in out
        assert f"data  {tmp_path / f'data{n}'}  (last commit_ts 0)" in out
        assert f".venv/bin/statehousectl --addr 127.0.0.1:{grpc_port} health" in out


def test_the_first_make_run_sets_up_the_daemon_alone(tmp_path: Path) -> None:
    """From a fresh clone, `make run`'s setup installs the daemon, SDK and CLI, and not the
    test tools (pytest, mypy, ruff, grpcio-tools), saying what it does."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    setup = subprocess.run(
        ["make", "-s", ".venv/bin/statehoused", f"PYTHON={sys.executable}"],
        cwd=clone,
        env=SHELL_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert setup.returncode == 0, setup.stderr
    assert "setting up .venv with statehoused, the SDK and statehousectl" in setup.stdout
    assert "Editable installation" not in setup.stderr, setup.stderr  # setuptools' banner
    venv = clone / ".venv" / "bin"
    version = subprocess.run([venv / "statehoused", "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith("statehoused 0."), version
    assert (venv / "statehousectl").exists()
    assert not [tool for tool in ("pytest", "mypy", "ruff") if (venv / tool).exists()]
