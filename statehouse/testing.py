"""Run a real `statehoused` in a subprocess, for tests and benchmarks.

    with DaemonProcess(data_dir) as daemon:
        client = Statehouse(daemon.addr)

The daemon listens on a free port (port 0), serves its HTTP endpoint on
another (`daemon.http_addr`), and logs JSON lines; every line
is kept in `daemon.log_lines` (parsed) so tests can check what it logged.
This module starts the daemon by command; it imports none of its code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson

_STARTUP_SECONDS = 30.0


class DaemonProcess:
    """A statehoused process on 127.0.0.1:<free port> over `data_dir`.

    `env` is added to this process's environment. `tree` runs the daemon of
    another source checkout: it becomes the daemon's working directory and
    the head of its PYTHONPATH (`python -m rpc` looks in the working
    directory before PYTHONPATH, so a PYTHONPATH alone would still run the
    checkout the caller was started in). Default: the code this process
    would import.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *extra_args: str,
        env: dict[str, str] | None = None,
        tree: str | os.PathLike[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.extra_args = extra_args
        self.env = env
        self.tree = None if tree is None else Path(tree).absolute()
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.http_port = 0  # 0 when started with --http-addr off
        self.raw_stderr: list[bytes] = []
        self._parsed: list[dict[str, Any]] = []
        self._parsed_upto = 0
        self._parse_lock = threading.Lock()
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_addr(self) -> str:
        """HOST:PORT of the daemon's HTTP endpoint (/healthz, /readyz, /actors, /metrics)."""
        return f"127.0.0.1:{self.http_port}"

    def start(self) -> DaemonProcess:
        if self.process is not None:
            raise RuntimeError("this DaemonProcess was started already; make a new one to restart")
        command = [
            sys.executable, "-m", "rpc",
            "--addr", "127.0.0.1:0",
            "--http-addr", "127.0.0.1:0",
            "--data-dir", str(self.data_dir),
            "--log-format", "json",
            *self.extra_args,
        ]  # fmt: skip
        env = {**os.environ, **(self.env or {})}
        if self.tree is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(self.tree), env.get("PYTHONPATH"))))
        self.process = subprocess.Popen(
            command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, cwd=self.tree
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        if not self._listening.wait(_STARTUP_SECONDS) or self.port == 0:
            self.kill()
            raise RuntimeError(
                "statehoused did not start:\n" + b"".join(self.raw_stderr).decode(errors="replace")
            )
        return self

    def _read_stderr(self) -> None:
        # Lines are parsed only when asked for (`log_lines`): a benchmark's
        # clients share this process, and parsing every line would slow them.
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.raw_stderr.append(line)
            if not self._listening.is_set() and b'"server.listening"' in line:
                try:
                    record = orjson.loads(line)
                    self.port = int(record["port"])
                    self.http_port = int(record.get("http_port") or 0)
                except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
                    continue
                self._listening.set()
        self._listening.set()  # the process ended; start() reports it

    @property
    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON log line read so far, parsed (lines that are not JSON are left out)."""
        with self._parse_lock:
            lines = self.raw_stderr
            end = len(lines)
            for line in lines[self._parsed_upto : end]:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    self._parsed.append(record)
            self._parsed_upto = end
            return list(self._parsed)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        return code

    def kill(self) -> None:
        """SIGKILL: no shutdown work at all, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._reader is not None:
            self._reader.join(5)

    def events(self, name: str) -> list[dict[str, Any]]:
        """Logged records whose event is `name`."""
        return [r for r in self.log_lines if r.get("event") == name]

    def __enter__(self) -> DaemonProcess:
        # `with DaemonProcess(...).start() as d:` must not start a second daemon.
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
