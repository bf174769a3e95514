"""Building and running the gRPC server around an actor system.

`create_server` binds (port 0 picks a free port, for tests) and returns the
server and its port; `Daemon` ties store, actors and server together with
an ordered start and a reverse-ordered stop.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from actors import ActorConfig, ActorSystem, SnapshotPolicy
from rpc import affinity, aio
from rpc.local import AUTO, LocalSessions, LocalSocketError
from rpc.monitor import AddressError, Monitor
from rpc.servicer import StatehouseServicer
from rpc.session import Sessions
from rpc.status import ErrorCounter
from statehouse._affinity import session_metadata
from statehouse._names import DEFAULT_MAX_VALUE_BYTES
from statehouse._proto import statehouse_pb2 as pb
from storage import StorageError, Store
from storage.retention import Policies, Policy

log = structlog.get_logger("statehouse.server")

SERVICE_NAME = "statehouse.v1.StatehouseService"

T = TypeVar("T")


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
    workers: int = 64  # threads for the unary calls that do not run on the event loop
    # Replay and watch streams open at once; each holds a thread of its own
    # pool while open, so streams never take the unary calls' threads.
    max_streams: int = 256
    # Session streams open at once (each holds a thread of its own pool while open).
    max_sessions: int = 1024
    sync_method: str = "flush_wal"
    # The CPU the daemon's Python threads are kept on: "auto", "off" or a number (rpc.affinity).
    pin_cpu: str = "auto"
    # The Unix socket that SDK clients on this machine send their calls on (rpc/local.py):
    # "auto" (in a directory of this user's under $XDG_RUNTIME_DIR or /tmp), "off", or a path.
    local_socket: str = "auto"
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
    "sync_method", "pin_cpu", "local_socket", "watch_max_events", "watch_max_bytes", "max_streams",
    "max_sessions", "max_open_txns", "max_ops_per_txn", "max_txn_bytes", "max_message_bytes",
    "snapshot_dir", "snapshot_every_commits", "snapshot_every_seconds", "snapshot_keep",
    "retain_versions", "retain_seconds", "retain_namespace", "retention_every_seconds", "log_level",
    "log_format",
)  # fmt: skip
_SAME_NAMED = (
    "addr", "max_value_bytes", "max_message_bytes", "max_streams", "max_sessions", "sync_method",
    "snapshot_keep", "snapshot_every_commits", "snapshot_every_seconds", "pin_cpu", "local_socket",
    "log_level", "log_format",
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


class HealthService(health_pb2_grpc.HealthServicer):
    """The standard grpc.health.v1 service, whose Watch streams end at shutdown.

    Left open, each would hold the server for its whole shutdown grace
    period. `shut_down()` sends NOT_SERVING to every watcher, then ends the
    streams (the client reads NOT_SERVING and then the end). Its methods run
    on the server's event loop.
    """

    def __init__(self) -> None:
        super().__init__()
        self._status: dict[str, int] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._changed = asyncio.Event()
        self._shut_down = False

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no service {request.service!r} here")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> AsyncIterator[Any]:
        last = None
        while True:
            status = self._status.get(request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
                continue  # it may have changed while the message was sent
            if self._shut_down:
                return
            await self._changed.wait()

    def set(self, service: str, status: int) -> None:
        if not self._shut_down:
            self._status[service] = status
            self._wake()

    def shut_down(self) -> None:
        for service in self._status:
            self._status[service] = health_pb2.HealthCheckResponse.NOT_SERVING
        self._shut_down = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


@dataclass
class Served:
    """A gRPC server (not started), the port it is bound to, and the parts a daemon tends."""

    server: grpc.aio.Server
    port: int
    servicer: StatehouseServicer
    health: HealthService
    sessions: Sessions


async def create_server(
    system: ActorSystem, config: DaemonConfig, pools: Pools, cpu: int | None = None
) -> Served:
    """The gRPC server (not started) bound to `config.addr`, with its parts; run on the
    event loop that is to serve it. `cpu`: the one the daemon's Python threads keep to, named
    to the clients of its Session streams (statehouse._affinity).

    Calls that wait for an actor, and short reads, run on the loop; other
    calls on `config.workers` threads; replay and watch streams on a pool of
    their own (see `Pools`), so that streams waiting for commits can never
    starve the calls that would make them.
    """
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # Without this, a second daemon could bind the same port silently.
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.aio.server(options=options)
    servicer = StatehouseServicer(
        system,
        config.max_value_bytes,
        _git_sha(),
        max_streams=config.max_streams,
        max_message_bytes=config.max_message_bytes,
    )
    sessions = Sessions(
        config.max_sessions,
        servicer.count_error,
        system.metrics.registry,
        metadata=session_metadata(cpu),
    )
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
    """Threads for the calls that run synchronously, and for replay and watch streams
    (a few beyond their bound, so that a stream past it is refused at once with
    RESOURCE_EXHAUSTED rather than queued until another ends)."""

    calls: ThreadPoolExecutor
    streams: ThreadPoolExecutor

    @classmethod
    def of(cls, config: DaemonConfig) -> Pools:
        return cls(
            ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rpc"),
            ThreadPoolExecutor(max_workers=config.max_streams + 8, thread_name_prefix="stream"),
        )

    def shutdown(self) -> None:
        for pool in (self.calls, self.streams):
            pool.shutdown(wait=False, cancel_futures=True)


# Unary calls answered on the event loop itself: short, bounded reads.
ON_LOOP = frozenset({"Health", "Version", "GetState", "GetStateAtVersion"})
# Messages a Replay stream takes per step on the streams pool (an event each).
REPLAY_PER_STEP = 64


def service_handler(servicer: StatehouseServicer, pools: Pools, sessions: Sessions) -> grpc.GenericRpcHandler:
    """Handlers for every RPC of the service that parse requests themselves: the async
    methods and `ON_LOOP` on the event loop, other unary ones on the calls pool, the
    server-streaming ones on the streams pool.

    grpc would answer an undecodable request (bad wire bytes, a string field
    that is not UTF-8) with INTERNAL; parsing here makes it INVALID_ARGUMENT.
    """
    service = pb.DESCRIPTOR.services_by_name["StatehouseService"]
    handlers = {}
    for method in service.methods:
        if method.client_streaming:
            continue  # Session: below, once every unary behaviour is known
        request_type = getattr(pb, method.input_type.name)
        serialize = getattr(pb, method.output_type.name).SerializeToString
        parse = _parser(request_type, servicer.count_error)
        behaviour = getattr(servicer, method.name)
        if method.server_streaming:
            per_step = REPLAY_PER_STEP if method.name == "Replay" else 1
            stream = aio.stream_handler(_parsed(behaviour, parse), pools.streams, per_step)
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                stream, response_serializer=serialize
            )
            continue
        if inspect.iscoroutinefunction(behaviour):
            unary = _parsed_async(behaviour, parse)
        elif method.name in ON_LOOP:
            unary = _parsed_on_loop(behaviour, parse)
        else:
            unary = aio.in_pool(_parsed(behaviour, parse), pools.calls)
        sessions.add(method.name, unary)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            aio.unary_handler(unary), response_serializer=serialize
        )
    handlers["Session"] = grpc.stream_stream_rpc_method_handler(sessions.serve)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


Parse = Callable[[bytes, aio.CallContext], Any]


def _parser(request_type: Any, count_error: ErrorCounter) -> Parse:
    def parse(raw: bytes, context: aio.CallContext) -> Any:
        try:
            return request_type.FromString(raw)
        except DecodeError:
            count_error(grpc.StatusCode.INVALID_ARGUMENT)
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request is not a valid {request_type.DESCRIPTOR.full_name} message "
                "(malformed protobuf, or a string field that is not valid UTF-8)",
            )

    return parse


def _parsed(behaviour: Callable[..., T], parse: Parse) -> Callable[[bytes, aio.CallContext], T]:
    def run(raw: bytes, context: aio.CallContext) -> T:
        return behaviour(parse(raw, context), context)

    return run


def _parsed_on_loop(behaviour: Callable[..., Any], parse: Parse) -> aio.Unary:
    async def run(raw: bytes, context: aio.CallContext) -> Any:
        return behaviour(parse(raw, context), context)

    return run


def _parsed_async(behaviour: Callable[..., Awaitable[Any]], parse: Parse) -> aio.Unary:
    async def run(raw: bytes, context: aio.CallContext) -> Any:
        return await behaviour(parse(raw, context), context)

    return run


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


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The server's event loop: uvloop's where it is installed (it is a dependency
    except on Windows), asyncio's own otherwise. uvloop runs the loop's own work
    (its wake-ups, timers, tasks) in C: per gRPC call that is most of what the
    loop does besides grpc's and our code (docs/performance.md, "uvloop")."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Daemon:
    """Store -> actors -> server, started in that order and stopped in reverse.

    The gRPC server runs on an event loop of its own, on a thread of its own
    ("rpc-loop"); `start` and `stop` are called from any other thread.
    """

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.store: Store | None = None
        self.system: ActorSystem | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.monitor: Monitor | None = None
        self._pools: Pools | None = None
        self.sessions: Sessions | None = None
        self.local: LocalSessions | None = None  # the local socket, if one is served
        self._health: HealthService | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self.cpu: int | None = None  # the CPU the daemon's threads keep to (--pin-cpu); None: any

    def _on_loop(self, work: Awaitable[T], timeout: float | None = None) -> T:
        """Run `work` on the server's loop and wait for its result."""
        assert self._loop is not None

        async def run() -> T:
            return await work

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def start(self) -> Daemon:
        try:
            self.store = Store.open(self.config.data_dir, self.config.sync_method)
            # Every thread started from here on keeps to one CPU (RocksDB's own are running already).
            self.cpu = affinity.choose(self.config.pin_cpu)
            with affinity.pinned(self.cpu):
                self.system = ActorSystem(
                    self.store, self.config.actors, snapshots=self.config.snapshot_policy()
                ).start()
                self._pools = Pools.of(self.config)
                self._loop = new_event_loop()
                self._loop_thread = threading.Thread(
                    target=self._loop.run_forever, name="rpc-loop", daemon=True
                )
                self._loop_thread.start()
                served = self._on_loop(create_server(self.system, self.config, self._pools, self.cpu))
                self.server, self.port, self._health, self.sessions = (
                    served.server,
                    served.port,
                    served.health,
                    served.sessions,
                )
                # Named on the first stream already: bound before the server takes calls.
                self._start_local()
                self._on_loop(self.server.start())
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
        health = self._health
        for service in ("", SERVICE_NAME):
            self._on_loop(_call(health.set, service, health_pb2.HealthCheckResponse.SERVING))
        log.info(
            "server.listening",
            addr=self.config.addr,
            port=self.port,
            http_addr=self.config.http_addr,
            http_port=None if self.monitor is None else self.monitor.port,
            data_dir=str(self.config.data_dir),
            last_commit_ts=self.store.last_commit_ts,
            event_loop=type(self._loop).__module__.split(".")[0],
            pin_cpu=self.cpu,
            local_socket=self.local_socket,
            grpc_experiments=os.environ.get("GRPC_EXPERIMENTS", ""),  # see rpc/__init__.py
        )
        return self

    def _start_local(self) -> None:
        """Serve the local socket (rpc/local.py) and name it on Session streams. A path asked
        for that cannot be served stops the start; "auto" that cannot goes on without one."""
        assert self.sessions is not None
        try:
            path = LocalSessions.where(self.config.local_socket, self.config.data_dir)
            if path is None:
                return
            assert self.system is not None
            local = LocalSessions(
                self.sessions, path, self.config.max_message_bytes, self.system.metrics.registry
            )
            self._on_loop(local.start())
        except LocalSocketError as exc:
            if self.config.local_socket != AUTO:
                raise AddressInUse(str(exc)) from None
            log.warning("server.local_socket_unavailable", error=str(exc))
            return
        self.local = local
        entry = local.announcement()
        if entry is not None:
            self.sessions.announce(entry)

    @property
    def local_socket(self) -> str | None:
        """The path of the local socket served, or None for none."""
        return None if self.local is None else str(self.local.path)

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
                self._on_loop(_call(self._health.shut_down))
            if self.system is not None:
                # Watches would hold the server for its whole grace period: end them
                # now, telling each client where to resume.
                self.system.watches.close()
            if self.sessions is not None:
                # So would Session streams waiting for their next call: end them too.
                self._on_loop(_call(self.sessions.stop))
            grace = self.config.shutdown_grace_seconds
            stopping = [part.stop(grace) for part in (self.local, self.server) if part is not None]
            if stopping:  # together: each lets its calls in flight finish within the grace period
                self._on_loop(_together(stopping))
            self.local = None
            if self._pools is not None:
                self._pools.shutdown()
            if self.monitor is not None:
                self.monitor.stop()
        finally:
            try:
                self._stop_loop()
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

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._loop_thread
        self._loop = self._loop_thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def _together(work: list[Awaitable[Any]]) -> None:
    await asyncio.gather(*work)


async def _call(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)
