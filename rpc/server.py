"""Building and running the gRPC server around an actor system.

`create_server` binds (port 0 picks a free port, for tests) and returns the
server and its port; `Daemon` ties store, actors and server together with
an ordered start and a reverse-ordered stop.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from actors import ActorConfig, ActorSystem, SnapshotPolicy
from rpc.servicer import StatehouseServicer
from statehouse._names import DEFAULT_MAX_VALUE_BYTES
from statehouse._proto import statehouse_pb2 as pb
from storage import StorageError, Store

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
    snapshot_dir: Path | None = None  # default: "<data_dir>.snapshots" beside the data directory
    snapshot_keep: int = 0
    snapshot_every_commits: int = 0
    snapshot_every_seconds: float = 0.0

    def snapshot_policy(self) -> SnapshotPolicy:
        data_dir = self.data_dir.resolve()
        directory = self.snapshot_dir or data_dir.with_name(data_dir.name + ".snapshots")
        return SnapshotPolicy(
            directory, self.snapshot_keep, self.snapshot_every_commits, self.snapshot_every_seconds
        )

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
    server.add_generic_rpc_handlers(
        (
            service_handler(
                StatehouseServicer(
                    system, config.max_value_bytes, _git_sha(), max_streams=max(1, config.workers // 2)
                )
            ),
        )
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


def service_handler(servicer: StatehouseServicer) -> grpc.GenericRpcHandler:
    """Handlers for every RPC of the service that parse requests themselves.

    grpc would answer an undecodable request (bad wire bytes, a string field
    that is not UTF-8) with INTERNAL; parsing here makes it INVALID_ARGUMENT.
    """
    service = pb.DESCRIPTOR.services_by_name["StatehouseService"]
    handlers = {}
    for method in service.methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        behaviour = _parsing(getattr(servicer, method.name), request_type, method.server_streaming)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(behaviour, response_serializer=response_type.SerializeToString)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _parsing(behaviour: Callable[..., Any], request_type: Any, streaming: bool) -> Callable[..., Any]:
    def parse(raw: bytes, context: grpc.ServicerContext) -> Any:
        try:
            return request_type.FromString(raw)
        except DecodeError:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request is not a valid {request_type.DESCRIPTOR.full_name} message "
                "(malformed protobuf, or a string field that is not valid UTF-8)",
            )

    if streaming:

        def stream(raw: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
            yield from behaviour(parse(raw, context), context)

        return stream

    def unary(raw: bytes, context: grpc.ServicerContext) -> Any:
        return behaviour(parse(raw, context), context)

    return unary


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
            self.system = ActorSystem(
                self.store, self.config.actors, snapshots=self.config.snapshot_policy()
            ).start()
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
            if self.system is not None:
                # Watches would hold the server for its whole grace period: end them
                # now, telling each client where to resume.
                self.system.watches.close()
            if self.server is not None:
                self.server.stop(self.config.shutdown_grace_seconds).wait()
        finally:
            try:
                if self.system is not None:
                    self.system.stop()
            finally:
                if self.store is not None:
                    try:
                        self.store.close()
                    except StorageError as exc:  # what was acknowledged was fsynced already
                        log.error("server.close_failed", error=str(exc))
                    log.info("server.stopped", last_commit_ts=self.store.last_commit_ts)
        self.server = self.system = None
        self.store = None
