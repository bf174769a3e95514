"""Session calls over a Unix socket: the way to the daemon for a client on its machine.

A Session stream (rpc/session.py) saves grpc's per-call work, but each
message still goes through grpc's HTTP/2 framing, its completion queue and
its poller thread on both sides: for one agent's sequential commit that was
about a quarter of the round trip (docs/performance.md, "A local socket").
So the daemon also serves the same Session messages on a Unix socket, and
names it, with a token of this run, in the initial metadata of every
Session stream (`statehouse-local: <boot id> <token> <path>`). An SDK client
that reads it there, under the same kernel, sends its calls on the socket
from then on; the gRPC API stays the contract, and the socket carries
nothing else.

The protocol, per connection. Every message is a frame: its length in 4
bytes (big-endian), then the message. On connecting, the daemon sends one
`SessionResponse` with id 0: `message` is its token, or `code` says it will
not serve the connection (RESOURCE_EXHAUSTED: `--max-sessions` are open,
local and gRPC ones counted together). Then the client sends
`SessionRequest`s and reads one `SessionResponse` per request, in order,
one call at a time, exactly as on a Session stream: the calls run through
the same handlers (`Sessions.answer`), with the request's own `timeout_ms`
as their deadline. A frame the daemon cannot take (longer than
`--max-message-bytes`, or not a `SessionRequest`) is answered with a
`SessionResponse` of id 0 and the status (RESOURCE_EXHAUSTED,
INVALID_ARGUMENT), and the connection is closed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import secrets
import socket
import stat
import tempfile
from pathlib import Path
from typing import cast

import grpc
import structlog
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Gauge

from rpc.session import Sessions
from statehouse._affinity import boot_id
from statehouse._proto import statehouse_pb2 as pb

log = structlog.get_logger("statehouse.rpc")

KEY = "statehouse-local"
AUTO = "auto"
OFF = "off"
# How long the check for a live socket at the path waits for it to take a connection.
PROBE_SECONDS = 1.0
# The longest path a Unix socket can be bound to everywhere (Linux allows 107 bytes, macOS 103).
MAX_PATH_BYTES = 103


class LocalSocketError(RuntimeError):
    """The socket asked for (a path of --local-socket) cannot be served."""


def _private_directory(path: Path) -> Path:
    """`path`, a directory of this user's that no one else may enter: made so, or checked."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        found = os.lstat(path)
    except OSError as exc:
        raise LocalSocketError(f"cannot make the directory of the local socket {path}: {exc}") from None
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
        raise LocalSocketError(
            f"{path} is not a directory of this user's that others cannot enter (mode "
            f"{stat.filemode(found.st_mode)}, owner {found.st_uid}): not serving a local socket there"
        )
    return path


def frame(message: bytes) -> bytes:
    """`message` as a frame: its length in 4 bytes, big-endian, then itself."""
    return len(message).to_bytes(4, "big") + message


class LocalSessions:
    """Serves Session calls on a Unix socket at `path` (see the module's docstring), on the
    server's event loop."""

    def __init__(
        self,
        sessions: Sessions,
        path: Path,
        max_message_bytes: int,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._sessions = sessions
        self.path = path
        self._max_bytes = max_message_bytes
        self.token = secrets.token_hex(16)
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._closing = False
        self._inode: int | None = None
        self.answered = 0  # calls answered on the socket
        if registry is not None:
            gauge = Gauge(
                "statehouse_local_sessions_open",
                "Connections open on the local socket (counted in statehouse_sessions_open too)",
                registry=registry,
            )
            gauge.set_function(lambda: len(self._connections))

    @property
    def open(self) -> int:
        """Connections open on the socket (each a session, counted in `Sessions.open` too)."""
        return len(self._connections)

    @classmethod
    def where(cls, setting: str, data_dir: Path) -> Path | None:
        """The socket's path for `setting` ("auto", "off" or a path), or None for none.

        "auto": `<runtime dir>/statehoused-<uid>/<hash of the data directory>.sock`, the
        runtime dir being $XDG_RUNTIME_DIR, else the system's temporary directory: a
        directory of this user's only (made 0700; one that is another's, or open to others,
        is refused), and the same path for the same data directory at every start, so that
        a socket left by a daemon killed is replaced by the next.
        """
        if setting == OFF:
            return None
        if setting != AUTO:
            path = Path(setting).absolute()
        else:
            if not hasattr(os, "getuid"):  # not POSIX: no Unix sockets to serve
                return None
            base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
            directory = _private_directory(base / f"statehoused-{os.getuid()}")
            digest = hashlib.sha256(os.fsencode(data_dir.resolve())).hexdigest()[:16]
            path = directory / f"{digest}.sock"
        if len(os.fsencode(path)) > MAX_PATH_BYTES:
            raise LocalSocketError(
                f"the local socket {path}: a Unix socket's path is at most {MAX_PATH_BYTES} bytes"
            )
        return path

    async def start(self) -> None:
        """Bind and listen. A socket file left by a daemon that is gone is replaced; anything
        else at the path (a live socket, a file that is not a socket) is left and refused."""
        self._clear_stale()
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_unix_server(lambda: _Connection(self), path=str(self.path))
        except OSError as exc:
            raise LocalSocketError(f"cannot listen on the local socket {self.path}: {exc}") from None
        self._inode = os.stat(self.path).st_ino

    def announcement(self) -> tuple[str, str] | None:
        """The metadata entry naming this socket on Session streams; None where the boot id
        that scopes it is unknown (not Linux)."""
        boot = boot_id()
        if boot is None:
            return None
        return (KEY, f"{boot} {self.token} {self.path}")

    def _clear_stale(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise LocalSocketError(
                f"cannot listen on the local socket {self.path}: a file that is not a socket is there"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(PROBE_SECONDS)  # a live daemon too busy to accept counts as live
        try:
            probe.connect(str(self.path))
        except ConnectionRefusedError:  # nobody listens: left by a daemon that is gone
            self.path.unlink()
            return
        except TimeoutError:
            raise LocalSocketError(
                f"cannot listen on the local socket {self.path}: another process holds it"
            ) from None
        except OSError as exc:
            raise LocalSocketError(f"cannot listen on the local socket {self.path}: {exc}") from None
        finally:
            probe.close()
        raise LocalSocketError(f"cannot listen on the local socket {self.path}: another process serves it")

    async def stop(self, grace: float) -> None:
        """Take no more connections; answer the calls in flight (at most `grace` seconds),
        then close every connection and remove the socket."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        busy = [connection.close_when_answered() for connection in list(self._connections)]
        running = [task for task in busy if task is not None]
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        with contextlib.suppress(OSError):
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                self.path.unlink()


class _Connection(asyncio.Protocol):
    """One client's connection: frames in, each call answered in order, one at a time."""

    def __init__(self, local: LocalSessions) -> None:
        self._local = local
        self._sessions = local._sessions
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        # Requests read and not answered yet; a refusal (a SessionResponse) ends them.
        self._requests: collections.deque[pb.SessionRequest | pb.SessionResponse] = collections.deque()
        self._task: asyncio.Task[None] | None = None  # answering the requests, while there are any
        self._counted = False
        self._ending = False  # no more requests are read
        self._paused = False  # reading paused while the requests read are answered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass
        local = self._local
        if local._closing or not self._sessions.enter():
            code = grpc.StatusCode.UNAVAILABLE if local._closing else grpc.StatusCode.RESOURCE_EXHAUSTED
            self._sessions.count_error(code)
            transport.write(frame(self._sessions.refusal(code).SerializeToString()))
            self._ending = True
            transport.close()
            return
        self._counted = True
        local._connections.add(self)
        transport.write(frame(pb.SessionResponse(id=0, message=local.token).SerializeToString()))

    def data_received(self, data: bytes) -> None:
        if self._ending:
            return
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 4:
            size = int.from_bytes(buffer[:4], "big")
            if size > self._local._max_bytes:
                self._refuse(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"a session message of {size} bytes is larger than this daemon takes "
                    f"(--max-message-bytes {self._local._max_bytes})",
                )
                return
            if len(buffer) < 4 + size:
                return
            try:
                request = pb.SessionRequest.FromString(bytes(buffer[4 : 4 + size]))
            except DecodeError:
                self._refuse(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "a session message is not a valid statehouse.v1.SessionRequest",
                )
                return
            del buffer[: 4 + size]
            self._requests.append(request)
        if not self._requests:
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._answer())
        elif not self._paused:
            # A client sending ahead of its answers (or not reading them): read no more until
            # those read are answered, so it holds a few requests and answers, not more.
            assert self._transport is not None
            self._transport.pause_reading()
            self._paused = True

    async def _answer(self) -> None:
        requests, sessions = self._requests, self._sessions
        try:
            while requests:
                request = requests.popleft()
                if isinstance(request, pb.SessionResponse):
                    answer = request  # a refusal: the connection closes after it
                else:
                    try:
                        answer = await sessions.answer(request, None)
                    except Exception as exc:  # a bug: answered as grpc answers a handler that raised
                        log.exception("rpc.local_call_failed", method=request.method)
                        answer = pb.SessionResponse(
                            id=request.id,
                            code=grpc.StatusCode.UNKNOWN.value[0],
                            message=f"Unexpected {type(exc).__name__}: {exc}",
                        )
                if self._transport is None or self._transport.is_closing():
                    return
                self._transport.write(frame(answer.SerializeToString()))
                self._local.answered += 1
        finally:
            self._task = None
            if self._transport is not None:
                if self._ending:
                    self._transport.close()
                elif self._paused:
                    self._paused = False
                    self._transport.resume_reading()

    def _refuse(self, code: grpc.StatusCode, message: str) -> None:
        """Answer a frame that cannot be taken with `code`, after the calls before it, and close."""
        self._sessions.count_error(code)
        self._ending = True
        self._buffer.clear()
        self._requests.append(pb.SessionResponse(id=0, code=code.value[0], message=message))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._answer())

    def close_when_answered(self) -> asyncio.Task[None] | None:
        """Read no more requests; close once the calls read are answered (the task doing so,
        or None if the connection is closed at once)."""
        self._ending = True
        if self._task is None:
            if self._transport is not None:
                self._transport.close()
            return None
        return self._task

    def connection_lost(self, exc: Exception | None) -> None:
        self._ending = True
        self._transport = None
        if self._task is not None:  # nobody to answer: the call goes on in its actor, unawaited
            self._task.cancel()
        if self._counted:
            self._counted = False
            self._sessions.leave()
            self._local._connections.discard(self)
