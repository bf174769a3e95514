"""The README's `make run`, as a person runs it: two daemons side by side, each with its own
gRPC and HTTP addresses (ADDR, HTTP_ADDR) and data directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

from statehouse import Statehouse

ROOT = Path(__file__).resolve().parent.parent
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
        for process, _, _ in daemons:
            process.communicate(timeout=60)
    assert all((tmp_path / f"data{n}").is_dir() for n in range(2))
