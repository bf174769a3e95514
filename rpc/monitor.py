"""The operators' HTTP endpoint, on its own port beside the gRPC one.

    GET /healthz   200 while the process serves (liveness)
    GET /readyz    200 when the store is open and the ledger answers within
                   a deadline, else 503 saying why (readiness)
    GET /actors    JSON: the ledger and every live namespace actor, each as it
                   answers through its mailbox (`?timeout=SECONDS`, default 1)
    GET /metrics   Prometheus text format
    GET /config    the settings the daemon runs with (as --print-config prints them), JSON

Every answer comes from the actors' mailboxes with a timeout, or from what
they publish; none takes a lock the commit path needs.
"""

from __future__ import annotations

import http.server
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import orjson
import structlog
from prometheus_client import ProcessCollector, exposition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from actors import ActorSystem
from statehouse import __version__

log = structlog.get_logger("statehouse.monitor")

# /readyz: how long the ledger may take to answer before the daemon is "not ready".
READY_TIMEOUT_SECONDS = 1.0
# /actors: the default and the largest `?timeout=`.
ACTORS_TIMEOUT_SECONDS = 1.0
MAX_ACTORS_TIMEOUT_SECONDS = 30.0


class AddressError(RuntimeError):
    """The endpoint's address is malformed or cannot be bound."""


def split_address(addr: str) -> tuple[str, int]:
    """("host", port) of "HOST:PORT" or "[IPv6]:PORT"; AddressError if it is neither."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise AddressError(f"{addr!r} is not HOST:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "127.0.0.1", int(port)


class _PresentGauges(Collector):
    """Gauges read when /metrics is scraped, from what the actors and the store publish."""

    def __init__(self, system: ActorSystem) -> None:
        self._system = system

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        system = self._system
        gauges = system.gauges()
        yield GaugeMetricFamily(
            "statehouse_open_transactions",
            "Transactions open now, over all namespaces",
            value=gauges["open_transactions"],
        )
        yield GaugeMetricFamily(
            "statehouse_live_actors", "Namespace actors running now", value=gauges["live_actors"]
        )
        yield GaugeMetricFamily(
            "statehouse_ledger_queue_depth",
            "Messages waiting in the ledger's mailbox",
            value=gauges["ledger_queue_depth"],
        )
        yield GaugeMetricFamily(
            "statehouse_last_commit_ts",
            "The newest durable commit's commit_ts (a logical counter)",
            value=gauges["last_commit_ts"],
        )
        yield GaugeMetricFamily("statehouse_watchers", "Watch streams open now", value=system.watches.count)
        yield CounterMetricFamily(
            "statehouse_watch_cutoffs",
            "Watches cut off for falling behind (each resumes from where it was)",
            value=system.watches.cut_offs,
        )
        yield GaugeMetricFamily(
            "statehouse_rocksdb_size_bytes",
            "Bytes of the files in the data directory (tables, WAL, manifest)",
            value=system.store.disk_bytes(),
        )


class Monitor:
    """The HTTP endpoint of one daemon. `start()` binds (port 0 picks a free port)."""

    def __init__(
        self,
        system: ActorSystem,
        addr: str,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
        settings: dict[str, object] | None = None,
    ) -> None:
        self.system = system
        self.settings = settings or {}
        self.addr = addr
        self.ready_timeout = ready_timeout
        self.port = 0
        self._started_at = time.monotonic()
        self._stopping = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        registry = system.metrics.registry
        registry.register(_PresentGauges(system))
        ProcessCollector(registry=registry)  # CPU, memory, open files of this process

    def start(self) -> Monitor:
        host, port = split_address(self.addr)
        handler = type("Handler", (_Handler,), {"monitor": self})
        server_class = _IPv6Server if ":" in host else http.server.ThreadingHTTPServer
        try:
            self._server = server_class((host, port), handler)
        except OSError as exc:
            raise AddressError(f"cannot listen on {self.addr} for HTTP: {exc.strerror or exc}") from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="statehouse-monitor", daemon=True
        )
        self._thread.start()
        return self

    def shutting_down(self) -> None:
        """From now on /readyz answers 503 (the daemon is stopping); the rest still answers."""
        self._stopping.set()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    # -- the answers ---------------------------------------------------------------

    def ready(self) -> str | None:
        if self._stopping.is_set():
            return "the daemon is shutting down"
        return self.system.ready(self.ready_timeout)

    def actors(self, timeout: float) -> dict[str, Any]:
        started = time.monotonic()
        status = self.system.status(timeout)
        namespaces = sorted(status["namespaces"], key=lambda ns: ns["namespace"])
        watches = self.system.watches.status()
        # Ready as /readyz would say, from the ledger's answer just taken (not a second question).
        ready = status["not_ready"] is None and not self._stopping.is_set()
        return {
            "daemon": {
                "version": __version__,
                "pid": os.getpid(),
                "uptime_s": round(started - self._started_at, 3),
                "ready": ready,
            },
            "asked_with_timeout_s": timeout,
            "answered_in_ms": round((time.monotonic() - started) * 1000, 3),
            "ledger": status["ledger"],
            "live_actors": sum(ns["state"] != "dormant" for ns in namespaces),
            "dormant_namespaces": sum(ns["state"] == "dormant" for ns in namespaces),
            "stuck_actors": sum(ns["state"] == "stuck" for ns in namespaces)
            + (status["ledger"]["state"] == "stuck"),
            "namespaces": namespaces,
            "watches": {
                "open": len(watches["watchers"]),  # type: ignore[arg-type]
                "cut_offs": watches["cut_offs"],
                "watchers": watches["watchers"],
            },
        }

    def metrics(self) -> bytes:
        return exposition.generate_latest(self.system.metrics.registry)


class _IPv6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    monitor: Monitor
    server_version = f"statehoused/{__version__}"

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/healthz":
            self._send(200, b"ok\n")
        elif url.path == "/readyz":
            reason = self.monitor.ready()
            if reason is None:
                self._send(200, b"ready\n")
            else:
                self._send(503, f"not ready: {reason}\n".encode())
        elif url.path == "/actors":
            timeout = self._timeout(query)
            if timeout is not None:
                body = orjson.dumps(self.monitor.actors(timeout), option=orjson.OPT_INDENT_2)
                self._send(200, body + b"\n", "application/json")
        elif url.path == "/metrics":
            self._send(200, self.monitor.metrics(), exposition.CONTENT_TYPE_LATEST)
        elif url.path == "/config":
            self._send(
                200,
                orjson.dumps(self.monitor.settings, option=orjson.OPT_INDENT_2) + b"\n",
                "application/json",
            )
        else:
            self._send(404, b"not found: try /healthz, /readyz, /actors, /metrics or /config\n")

    def _timeout(self, query: dict[str, list[str]]) -> float | None:
        """The `?timeout=` of /actors, or None after answering 400 for a bad one."""
        text = query.get("timeout", [str(ACTORS_TIMEOUT_SECONDS)])[-1]
        try:
            timeout = float(text)
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= MAX_ACTORS_TIMEOUT_SECONDS:
            self._send(
                400, f"timeout must be seconds, above 0 and at most {MAX_ACTORS_TIMEOUT_SECONDS:g}\n".encode()
            )
            return None
        return timeout

    def do_POST(self) -> None:
        self._send(405, b"method not allowed: the endpoint only answers GET\n", allow="GET")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _send(
        self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8", **headers: str
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.capitalize(), value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http.request", request=self.requestline, code=args[1] if len(args) > 1 else None)
