"""Building and running the gRPC server around an actor system.

`create_server` binds (port 0 picks a free port, for tests) and returns the
server and its port; `Daemon` ties store, actors and server together with
an ordered start and a reverse-ordered stop.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from actors import ActorConfig, ActorSystem
from rpc.servicer import StatehouseServicer
from statehouse._names import DEFAULT_MAX_VALUE_BYTES
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from storage import Store

log = structlog.get_logger("statehouse.server")

SERVICE_NAME = "statehouse.v1.StatehouseService"


class AddressInUse(RuntimeError):
    """The listen address could not be bound."""


@dataclass(frozen=True)
class DaemonConfig:
    data_dir: Path
    addr: str = "127.0.0.1:50051"
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_message_bytes: int = 64 * 1024 * 1024
    workers: int = 64
    sync_method: str = "flush_wal"
    actors: ActorConfig = field(default_factory=ActorConfig)
    shutdown_grace_seconds: float = 10.0


def create_server(
    system: ActorSystem, config: DaemonConfig
) -> tuple[grpc.Server, int, health.HealthServicer]:
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # Without this, a second daemon could bind the same port silently.
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rpc"), options=options
    )
    pb_grpc.add_StatehouseServiceServicer_to_server(
        StatehouseServicer(system, config.max_value_bytes, _git_sha()), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_insecure_port(config.addr)
    except RuntimeError as exc:
        raise AddressInUse(f"cannot listen on {config.addr}: {exc}") from None
    if port == 0:
        raise AddressInUse(f"cannot listen on {config.addr} (address in use or not local)")
    return server, port, health_servicer


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=2,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


class Daemon:
    """Store -> actors -> server, started in that order and stopped in reverse."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.store: Store | None = None
        self.system: ActorSystem | None = None
        self.server: grpc.Server | None = None
        self.port = 0
        self._health: health.HealthServicer | None = None

    def start(self) -> Daemon:
        try:
            self.store = Store.open(self.config.data_dir, self.config.sync_method)
            self.system = ActorSystem(self.store, self.config.actors).start()
            self.server, self.port, self._health = create_server(self.system, self.config)
            self.server.start()
        except BaseException:
            self.stop()
            raise
        for service in ("", SERVICE_NAME):
            self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "server.listening",
            addr=self.config.addr,
            port=self.port,
            data_dir=str(self.config.data_dir),
            last_commit_ts=self.store.last_commit_ts,
        )
        return self

    def stop(self) -> None:
        """Stop taking RPCs, let in-flight ones finish, stop actors, close RocksDB."""
        try:
            if self._health is not None:
                self._health.enter_graceful_shutdown()
            if self.server is not None:
                self.server.stop(self.config.shutdown_grace_seconds).wait()
        finally:
            try:
                if self.system is not None:
                    self.system.stop()
            finally:
                if self.store is not None:
                    self.store.close()
                    log.info("server.stopped", last_commit_ts=self.store.last_commit_ts)
        self.server = self.system = None
        self.store = None
