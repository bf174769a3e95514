"""A single-node etcd on a temporary data directory and free loopback ports.

    with EtcdProcess(data_dir) as etcd:
        stub = KVStub(grpc.insecure_channel(etcd.addr))

etcd keeps its default durability (the WAL is fsync'd before a write is
acknowledged), so it does the same work per commit as statehoused.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc

from benchmarks.etcd import rpc_pb2 as etcd_pb
from benchmarks.etcd import rpc_pb2_grpc as etcd_grpc

_STARTUP_SECONDS = 30.0
# The preload of the read workload sends 1000 puts of ~1 KB in one Txn; etcd's
# defaults (128 operations, 1.5 MiB per request) are limits, not costs.
MAX_TXN_OPS = 1000
MAX_REQUEST_BYTES = 8 * 1024 * 1024
INSTALL_HINT = "Debian: apt install etcd-server"


def find_etcd() -> str | None:
    """The etcd binary on PATH, or None."""
    return shutil.which("etcd")


def etcd_version(binary: str) -> str:
    """The first line of `etcd --version`, e.g. "etcd Version: 3.4.23"."""
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    return (result.stdout.splitlines() or ["unknown"])[0]


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS may hand it out again; unlikely here)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EtcdProcess:
    """`etcd` serving clients on 127.0.0.1:<free port>, and on a Unix socket beside
    `data_dir` (`unix_addr`, for a comparison with our SDK's local socket); its data and
    log under `data_dir`."""

    def __init__(self, data_dir: str | os.PathLike[str], binary: str = "etcd") -> None:
        self.data_dir = Path(data_dir)
        self.binary = binary
        self.client_port = 0
        self.unix_port = 0  # etcd names its Unix socket "localhost:<port>", in its working directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def unix_addr(self) -> str:
        """The gRPC target of etcd's Unix socket."""
        return f"unix:{self.data_dir.parent.absolute()}/localhost:{self.unix_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def start(self) -> EtcdProcess:
        if self.process is not None:
            raise RuntimeError("this EtcdProcess was started already")
        self.client_port, peer_port, self.unix_port = free_port(), free_port(), free_port()
        client_url, peer_url = f"http://{self.addr}", f"http://127.0.0.1:{peer_port}"
        command = [
            self.binary,
            "--name", "default",
            "--data-dir", str(self.data_dir.absolute()),
            "--listen-client-urls", f"{client_url},unix://localhost:{self.unix_port}",
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"default={peer_url}",
            "--initial-cluster-state", "new",
            "--max-txn-ops", str(MAX_TXN_OPS),
            "--max-request-bytes", str(MAX_REQUEST_BYTES),
            "--logger", "zap",
            "--log-level", "warn",
        ]  # fmt: skip
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir.parent
            )
        try:
            self._wait_until_serving()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_until_serving(self) -> None:
        """Poll with a Range until etcd answers (it has elected itself leader by then)."""
        deadline = time.monotonic() + _STARTUP_SECONDS
        with grpc.insecure_channel(self.addr) as channel:
            stub = etcd_grpc.KVStub(channel)
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"etcd exited with code {self.process.returncode}:\n{self._log_tail()}"
                    )
                try:
                    stub.Range(etcd_pb.RangeRequest(key=b"/ready"), timeout=1.0)
                    return
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"etcd did not answer within {_STARTUP_SECONDS:.0f} s:\n{self._log_tail()}"
                        ) from None
                    time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EtcdProcess:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
