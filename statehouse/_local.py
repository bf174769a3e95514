"""The clients' calls on the daemon's local socket, for a daemon on this machine.

A daemon names a Unix socket in the initial metadata of its Session
streams: `statehouse-local: <boot id> <token> <path>` (rpc/local.py has the
protocol). A client that reads it there, under the same kernel (the boot
id), opens its next lanes on that socket instead of Session streams: the
same `SessionRequest` and `SessionResponse` messages, each as a frame of a
4-byte length and the message, without grpc's HTTP/2 framing, completion
queues and poller threads on either side. For one agent's sequential
commit that is about a quarter of the round trip (docs/performance.md, "A
local socket").

On connecting, the daemon first sends its token: a socket that answers
with another (a different daemon, seen through a path that means another
file here, as from a container), refuses, or cannot be reached is not
used again for that token, and calls go over gRPC as before; a daemon that
restarts names a new token, which its clients then try afresh. A call on a
socket means what it means on a stream: the same answers, errors and
deadlines; a connection that breaks while a call waits raises UNAVAILABLE,
with the call's outcome as unknown, and as retry-safe, as on a stream.

`Statehouse`'s threads use their socket themselves (a blocking socket,
one call at a time on each): no hand-off to the I/O loop on the way.
`AsyncStatehouse` uses it on its own event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf.message import DecodeError

from statehouse._affinity import boot_id
from statehouse._proto import statehouse_pb2 as pb
from statehouse._wire import MAX_MESSAGE_BYTES

KEY = "statehouse-local"
# How long opening a lane on the socket may take before the client gives up on it (less if
# the call's own timeout is sooner).
CONNECT_SECONDS = 2.0
# The longest answer read: what a gRPC answer may be (statehouse._wire), and a little more.
MAX_FRAME_BYTES = MAX_MESSAGE_BYTES + 1024
_FIRST_READ = 65536


@dataclass(frozen=True)
class Place:
    """A local socket a daemon named: its token (of that daemon's run) and its path."""

    token: str
    path: str


def announced(metadata: Iterable[tuple[str, Any]] | None) -> Place | None:
    """The local socket a daemon under this kernel named in `metadata`, or None."""
    for key, value in metadata or ():
        if key != KEY:
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        boot, _, rest = text.partition(" ")
        token, _, path = rest.partition(" ")
        if token and path and boot == boot_id():
            return Place(token, path)
    return None


class Unusable(Exception):
    """The local socket cannot be used now: use gRPC. `lasting`: not for this daemon's
    run (gone, not ours to open, another daemon's); else for a while (it refused a
    session, being full, or did not answer in time)."""

    def __init__(self, message: str, lasting: bool = True) -> None:
        super().__init__(message)
        self.lasting = lasting


class NotSent(Exception):
    """The connection had ended before a call could be sent on it: nothing of it was sent."""


class Broken(Exception):
    """The connection broke while a call waited for its answer: its outcome is unknown."""


def frame(message: bytes) -> bytes:
    return len(message).to_bytes(4, "big") + message


def _greeted(hello: pb.SessionResponse, place: Place) -> None:
    """Check the daemon's first message on a new connection (raises Unusable)."""
    if hello.id != 0:
        raise Unusable(f"{place.path} did not greet as a daemon does")
    if hello.code:  # full (RESOURCE_EXHAUSTED), or stopping: perhaps not for long
        raise Unusable(f"the daemon refused the local socket: {hello.message}", lasting=False)
    if hello.message != place.token:
        raise Unusable(f"{place.path} is another daemon's socket")


def _unusable(exc: BaseException) -> Unusable:
    """A failure to open a connection, as Unusable (a timeout does not last)."""
    if isinstance(exc, Unusable):
        return exc
    return Unusable(str(exc) or type(exc).__name__, lasting=not isinstance(exc, TimeoutError))


def _length(head: bytes | bytearray) -> int:
    """A frame's length from its head; more than a message may be is a broken peer."""
    length = int.from_bytes(head[:4], "big")
    if length > MAX_FRAME_BYTES:
        raise EOFError(f"a frame of {length} bytes is more than a message may be")
    return length


class LocalConnection:
    """One connection to the local socket, used by the calling thread itself, one
    exchange at a time. Opening it connects and checks the daemon's token (raises
    Unusable), within `timeout` seconds at most. Not to be used again after an exchange
    raises."""

    __slots__ = ("_sock", "idle_since", "ids")

    def __init__(self, place: Place, timeout: float = CONNECT_SECONDS) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock = sock
        deadline = time.monotonic() + min(timeout, CONNECT_SECONDS)
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.connect(place.path)
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            _greeted(self._read(), place)
        except (OSError, EOFError, DecodeError, Unusable) as exc:
            sock.close()
            raise _unusable(exc) from None
        self.ids = itertools.count(1)
        self.idle_since = time.monotonic()

    def exchange(self, message: bytes, timeout: float) -> pb.SessionResponse:
        """Send `message` (a serialized SessionRequest) and read the answer, waiting at most
        `timeout` seconds for each. Raises NotSent if the connection had ended, Broken if
        it breaks before the answer, TimeoutError if that does not come in time."""
        self._sock.settimeout(timeout)
        try:
            self._sock.sendall(frame(message))
        except TimeoutError:
            raise
        except OSError:
            raise NotSent() from None
        try:
            return self._read()
        except TimeoutError:
            raise
        except (OSError, EOFError, DecodeError):
            raise Broken() from None

    def _read(self) -> pb.SessionResponse:
        data = self._sock.recv(_FIRST_READ)  # an answer is mostly small: one read
        while len(data) < 4:
            more = self._sock.recv(_FIRST_READ)
            if not more:
                raise EOFError
            data += more
        end = 4 + _length(data)
        if len(data) >= end:
            return pb.SessionResponse.FromString(data[4:end])
        whole = bytearray(end)
        whole[: len(data)] = data
        view, got = memoryview(whole), len(data)
        while got < end:
            n = self._sock.recv_into(view[got:])
            if not n:
                raise EOFError
            got += n
        return pb.SessionResponse.FromString(bytes(view[4:]))

    def wake(self) -> None:
        """End an exchange waiting on this connection (from another thread), as Broken."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self._sock.close()


class AsyncLocalConnection(asyncio.Protocol):
    """`LocalConnection` on an event loop, as an asyncio protocol: the loop's own reads
    hand each answer to the call waiting for it, with no stream reader in between.
    `open` connects and checks the token."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        # The call waiting for the next answer; from the start, the daemon's greeting (which
        # can come before `open` gets the connection back).
        self._waiter: asyncio.Future[pb.SessionResponse] | None = None
        self._greeting: asyncio.Future[pb.SessionResponse] | None = None
        self._ended = False
        self.ids = itertools.count(1)

    @classmethod
    async def open(cls, place: Place) -> AsyncLocalConnection:
        loop = asyncio.get_running_loop()
        connection: AsyncLocalConnection | None = None
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                _, connection = await loop.create_unix_connection(cls, place.path)
                assert connection._greeting is not None  # made when connected
                _greeted(await connection._greeting, place)
        except (OSError, TimeoutError, Broken, Unusable) as exc:
            if connection is not None:
                connection.close()
            raise _unusable(exc) from None
        return connection

    async def exchange(self, message: bytes) -> pb.SessionResponse:
        """`LocalConnection.exchange`, awaited (the caller bounds the wait)."""
        if self._ended or self._transport is None:
            raise NotSent()
        self._transport.write(frame(message))
        return await self._answer()

    def _answer(self) -> asyncio.Future[pb.SessionResponse]:
        waiter = asyncio.get_running_loop().create_future()
        if self._ended:
            waiter.set_exception(Broken())
        else:
            self._waiter = waiter
        return waiter

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass
        self._greeting = self._waiter = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 4:
            try:
                end = 4 + _length(buffer)
                if len(buffer) < end:
                    return
                answer = pb.SessionResponse.FromString(bytes(buffer[4:end]))
            except (EOFError, DecodeError):  # not the daemon we know
                self.close()
                return
            del buffer[:end]
            waiter, self._waiter = self._waiter, None
            if waiter is None or waiter.done():  # nobody asked (cancelled): the lane is dropped
                self.close()
                return
            waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(Broken())

    def ended(self) -> bool:
        return self._ended or self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        self._ended = True
        if self._transport is not None:
            self._transport.close()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(Broken())

    async def end(self) -> None:
        self.close()
