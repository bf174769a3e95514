"""Building and running the gRPC server around an actor system.

`create_server` binds (port 0 picks a free port, for tests) and returns the
server and its port; `Daemon` ties store, actors and server together with
an ordered start and a reverse-ordered stop.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from actors import ActorConfig, ActorSystem, SnapshotPolicy
from rpc.monitor import AddressError, Monitor
from rpc.servicer import StatehouseServicer
from rpc.session import Sessions
from rpc.status import ErrorCounter
from statehouse._names import DEFAULT_MAX_VALUE_BYTES
from statehouse._proto import statehouse_pb2 as pb
from storage import StorageError, Store
from storage.retention import Policies, Policy

log = structlog.get_logger("statehouse.server")

SERVICE_NAME = "statehouse.v1.StatehouseService"


class AddressInUse(RuntimeError):
    """The listen address could not be bound."""


@dataclass(frozen=True)
class DaemonConfig:
    data_dir: Path
    addr: str = "127.0.0.1:50051"
    # The HTTP endpoint (/healthz, /readyz, /actors, /metrics); None: none.
    http_addr: str | None = None
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_message_bytes: int = 64 * 1024 * 1024
    workers: int = 64  # threads for unary calls
    # Replay and watch streams open at once; each holds a thread of its own
    # pool while open, so streams never take the unary calls' threads.
    max_streams: int = 256
    # Session streams open at once (each holds a thread of its own pool while open).
    max_sessions: int = 1024
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
    # How the daemon's own logs are written (rpc.logs.configure); kept here to be shown.
    log_level: str = "info"
    log_format: str = "auto"

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> DaemonConfig:
        """The configuration of `values`: every setting by name (as `--config` files and
        `--print-config` name them), already checked."""
        retention = Policies(
            Policy(values["retain_versions"], values["retain_seconds"]),
            Policies.parse_namespaces(values["retain_namespace"]),
        )
        actors = ActorConfig(retention=retention, **{f: values[name] for name, f in _ACTOR_FIELDS.items()})
        snapshot_dir = values["snapshot_dir"]
        return cls(
            data_dir=Path(values["data_dir"]),
            http_addr=None if values["http_addr"] == "off" else values["http_addr"],
            snapshot_dir=None if snapshot_dir is None else Path(snapshot_dir),
            actors=actors,
            **{name: values[name] for name in _SAME_NAMED},
        )

    def settings(self) -> dict[str, object]:
        """Every setting as this configuration holds it, named as `--config` files and
        `--print-config` name them (None: not set). What a daemon built from it runs with;
        `from_settings` of it gives this configuration again."""
        retention = self.actors.retention
        found: dict[str, object] = {name: getattr(self, name) for name in _SAME_NAMED}
        found.update({name: getattr(self.actors, f) for name, f in _ACTOR_FIELDS.items()})
        found.update(
            data_dir=str(self.data_dir),
            http_addr="off" if self.http_addr is None else self.http_addr,
            snapshot_dir=None if self.snapshot_dir is None else str(self.snapshot_dir),
            retain_versions=retention.default.versions,
            retain_seconds=retention.default.seconds,
            retain_namespace=";".join(f"{name}={policy}" for name, policy in retention.namespaces.items()),
        )
        return {name: found[name] for name in SETTINGS}


# Every setting (a flag of statehoused, a key of its config file), in --help's order. Most map
# to a field of the same name (_SAME_NAMED) or of ActorConfig (_ACTOR_FIELDS); data_dir,
# http_addr, snapshot_dir and the three retain_ settings are converted by DaemonConfig itself.
SETTINGS = (
    "addr", "http_addr", "data_dir", "max_value_bytes", "txn_timeout_ms", "max_txn_timeout_ms",
    "sync_method", "watch_max_events", "watch_max_bytes", "max_streams", "max_sessions",
    "max_open_txns", "max_ops_per_txn", "max_txn_bytes", "max_message_bytes", "snapshot_dir",
    "snapshot_every_commits", "snapshot_every_seconds", "snapshot_keep", "retain_versions",
    "retain_seconds", "retain_namespace", "retention_every_seconds", "log_level", "log_format",
)  # fmt: skip
_SAME_NAMED = (
    "addr", "max_value_bytes", "max_message_bytes", "max_streams", "max_sessions", "sync_method",
    "snapshot_keep", "snapshot_every_commits", "snapshot_every_seconds", "log_level", "log_format",
)  # fmt: skip
_ACTOR_FIELDS = {
    "txn_timeout_ms": "default_txn_timeout_ms",
    "max_txn_timeout_ms": "max_txn_timeout_ms",
    "max_open_txns": "max_open_txns_per_namespace",
    "max_ops_per_txn": "max_ops_per_txn",
    "max_txn_bytes": "max_txn_bytes",
    "watch_max_events": "watch_max_events",
    "watch_max_bytes": "watch_max_bytes",
    "retention_every_seconds": "retention_every_seconds",
}


class HealthService(health.HealthServicer):
    """The standard grpc.health.v1 service, whose Watch streams end at shutdown.

    Left open, each would hold the server for its whole shutdown grace
    period. `shut_down()` sends NOT_SERVING to every watcher, then ends the
    streams (the client reads NOT_SERVING and then the end).
    """

    def __init__(self) -> None:
        super().__init__()
        self._streams_lock = threading.Lock()
        # How to end each Watch stream opened so far (ending one twice is harmless).
        self._ends: dict[int, Callable[[], Any]] = {}
        self._tokens = itertools.count()
        self._shut_down = False

    def Watch(self, request: Any, context: Any, send_response_callback: Any = None) -> Any:
        # grpc's server passes `send_response_callback` (the non-blocking form,
        # where None ends the stream); without it, the stream is returned.
        stream = super().Watch(request, context, send_response_callback)
        end = stream.close if stream is not None else lambda: send_response_callback(None)
        with self._streams_lock:
            if not self._shut_down:
                token = next(self._tokens)
                self._ends[token] = end
                if not context.add_callback(lambda: self._ends.pop(token, None)):
                    del self._ends[token]  # the RPC has ended already
                return stream
        end()
        return stream

    def shut_down(self) -> None:
        self.enter_graceful_shutdown()
        with self._streams_lock:
            self._shut_down = True
            ends, self._ends = list(self._ends.values()), {}
        for end in ends:
            try:
                end()
            except Exception:  # the stream ended meanwhile
                log.debug("health.watch_already_ended", exc_info=True)


@dataclass
class Served:
    """A gRPC server (not started), the port it is bound to, and the parts a daemon tends."""

    server: grpc.Server
    port: int
    servicer: StatehouseServicer
    health: HealthService
    sessions: Sessions


def create_server(system: ActorSystem, config: DaemonConfig, pools: Pools) -> Served:
    """The gRPC server (not started) bound to `config.addr`, with its parts.

    Unary calls run on `config.workers` threads; replay and watch streams,
    and sessions, on pools of their own (see `Pools`), so that streams
    waiting for commits can never starve the calls that would make them.
    """
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # Without this, a second daemon could bind the same port silently.
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rpc"), options=options
    )
    servicer = StatehouseServicer(
        system,
        config.max_value_bytes,
        _git_sha(),
        max_streams=config.max_streams,
        max_message_bytes=config.max_message_bytes,
    )
    sessions = Sessions(config.max_sessions, servicer.count_error, system.metrics.registry)
    server.add_generic_rpc_handlers((service_handler(servicer, pools, sessions),))
    health_servicer = HealthService()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_insecure_port(config.addr)
    except RuntimeError as exc:
        raise AddressInUse(f"cannot listen on {config.addr}: {exc}") from None
    if port == 0:
        raise AddressInUse(f"cannot listen on {config.addr} (address in use or not local)")
    return Served(server, port, servicer, health_servicer, sessions)


@dataclass
class Pools:
    """Threads for replay and watch streams, and for sessions: each a few beyond its
    bound, so that a stream past it is refused at once (RESOURCE_EXHAUSTED) rather
    than queued until another ends."""

    streams: ThreadPoolExecutor
    sessions: ThreadPoolExecutor

    @classmethod
    def of(cls, config: DaemonConfig) -> Pools:
        return cls(
            ThreadPoolExecutor(max_workers=config.max_streams + 8, thread_name_prefix="stream"),
            ThreadPoolExecutor(max_workers=config.max_sessions + 8, thread_name_prefix="session"),
        )

    def shutdown(self) -> None:
        for pool in (self.streams, self.sessions):
            pool.shutdown(wait=False, cancel_futures=True)


def service_handler(servicer: StatehouseServicer, pools: Pools, sessions: Sessions) -> grpc.GenericRpcHandler:
    """Handlers for every RPC of the service that parse requests themselves; the
    server-streaming ones run on the streams pool, sessions on theirs.

    grpc would answer an undecodable request (bad wire bytes, a string field
    that is not UTF-8) with INTERNAL; parsing here makes it INVALID_ARGUMENT.
    """
    service = pb.DESCRIPTOR.services_by_name["StatehouseService"]
    handlers = {}
    for method in service.methods:
        if method.client_streaming:
            continue  # Session: below, once every unary behaviour is known
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        behaviour = _parsing(
            getattr(servicer, method.name), request_type, method.server_streaming, servicer.count_error
        )
        if method.server_streaming:
            behaviour.experimental_thread_pool = pools.streams  # type: ignore[attr-defined]
        else:
            sessions.add(method.name, behaviour)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(behaviour, response_serializer=response_type.SerializeToString)

    def serve(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        return sessions.serve(requests, context)

    serve.experimental_thread_pool = pools.sessions  # type: ignore[attr-defined]
    handlers["Session"] = grpc.stream_stream_rpc_method_handler(serve)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _parsing(
    behaviour: Callable[..., Any], request_type: Any, streaming: bool, count_error: ErrorCounter
) -> Callable[..., Any]:
    def parse(raw: bytes, context: grpc.ServicerContext) -> Any:
        try:
            return request_type.FromString(raw)
        except DecodeError:
            count_error(grpc.StatusCode.INVALID_ARGUMENT)
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
        self.monitor: Monitor | None = None
        self._pools: Pools | None = None
        self.sessions: Sessions | None = None
        self._health: HealthService | None = None

    def start(self) -> Daemon:
        try:
            self.store = Store.open(self.config.data_dir, self.config.sync_method)
            self.system = ActorSystem(
                self.store, self.config.actors, snapshots=self.config.snapshot_policy()
            ).start()
            self._pools = Pools.of(self.config)
            served = create_server(self.system, self.config, self._pools)
            self.server, self.port, self._health, self.sessions = (
                served.server,
                served.port,
                served.health,
                served.sessions,
            )
            self.server.start()
            if self.config.http_addr is not None:
                try:
                    self.monitor = Monitor(
                        self.system, self.config.http_addr, settings=self.config.settings()
                    ).start()
                except AddressError as exc:
                    raise AddressInUse(str(exc)) from None
                served.servicer.http_addr = self.http_addr or ""
        except BaseException:
            self.stop()
            raise
        for service in ("", SERVICE_NAME):
            self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "server.listening",
            addr=self.config.addr,
            port=self.port,
            http_addr=self.config.http_addr,
            http_port=None if self.monitor is None else self.monitor.port,
            data_dir=str(self.config.data_dir),
            last_commit_ts=self.store.last_commit_ts,
        )
        return self

    @property
    def http_addr(self) -> str | None:
        """host:port of the HTTP endpoint as bound (its port resolved), or None for none."""
        if self.monitor is None or self.config.http_addr is None:
            return None
        return f"{self.config.http_addr.rsplit(':', 1)[0]}:{self.monitor.port}"

    def stop(self) -> None:
        """Stop taking RPCs, let in-flight ones finish, stop actors, close RocksDB."""
        try:
            if self.monitor is not None:
                self.monitor.shutting_down()
            if self._health is not None:
                self._health.shut_down()
            if self.system is not None:
                # Watches would hold the server for its whole grace period: end them
                # now, telling each client where to resume.
                self.system.watches.close()
            if self.server is not None:
                self.server.stop(self.config.shutdown_grace_seconds).wait()
            if self._pools is not None:
                self._pools.shutdown()
            if self.monitor is not None:
                self.monitor.stop()
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
        self.monitor = None
