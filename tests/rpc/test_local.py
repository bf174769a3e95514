"""The local socket (rpc/local.py, statehouse._local): the daemon serves Session calls on a
Unix socket it names on its streams; clients on its machine move there, answers mean the
same, and anything wrong with the socket sends them back to gRPC rather than failing."""

from __future__ import annotations

import os
import signal
import socket
import stat
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from facade import SDK, LoopThread, client_of_a_stopped_daemon
from helpers import wait_until

import statehouse
import statehouse._session
from rpc.local import KEY, frame
from rpc.server import AddressInUse, Daemon, DaemonConfig
from statehouse import Statehouse
from statehouse._proto import statehouse_pb2 as pb
from statehouse.testing import DaemonProcess

C = grpc.StatusCode


class Raw:
    """A connection to the local socket on the raw wire: frames in and out."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def read(self) -> pb.SessionResponse | None:
        """The next answer; None when the daemon has closed the connection."""
        head = self._exactly(4)
        if head is None:
            return None
        body = self._exactly(int.from_bytes(head, "big"))
        assert body is not None
        return pb.SessionResponse.FromString(body)

    def call(self, call_id: int, method: str, request: Any, timeout_ms: int = 10_000) -> pb.SessionResponse:
        message = pb.SessionRequest(
            id=call_id, method=method, request=request.SerializeToString(), timeout_ms=timeout_ms
        )
        self.send(frame(message.SerializeToString()))
        answer = self.read()
        assert answer is not None
        return answer

    def _exactly(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def commit(txn: str, key: str, value: bytes) -> pb.CommitRequest:
    return pb.CommitRequest(
        txn_id=txn,
        open=pb.TxnOpen(),
        mutations=[pb.Mutation(namespace="ns", agent_id="a", key=key, value_json=value)],
    )


def commits_work(addr: str, kind: str, loop: LoopThread, count: int = 5) -> None:
    """A new client of `kind` commits `count` values and reads the last back, whichever
    way its calls go."""
    sdk = SDK(kind, addr, loop)
    try:
        for n in range(count):
            with sdk.client.begin_transaction() as tx:
                tx.write("a", "k", n)
        assert sdk.client.get_state("a", "k").value == count - 1
    finally:
        sdk.close()


def named_on_streams(daemon: Daemon) -> str:
    """What the daemon names on its Session streams under KEY."""
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        call = channel.stream_stream("/statehouse.v1.StatehouseService/Session")(iter(()))
        metadata = dict(call.initial_metadata())
        call.cancel()
    return str(metadata[KEY])


def test_the_sdk_moves_to_the_local_socket_and_its_answers_mean_the_same(daemon: Daemon, sdk: SDK) -> None:
    """Both clients: after the first call (on a gRPC stream, which names the socket) every
    call goes on the socket, with the same values, versions and errors."""
    assert daemon.local is not None and daemon.local_socket is not None
    client = sdk.client
    client.health()  # on a gRPC session stream: it names the socket
    before = daemon.local.answered
    for n in range(20):
        with client.begin_transaction() as tx:
            tx.write("a", "k", {"n": n, "big": 2**70})
    state = client.get_state("a", "k")
    assert (state.value, state.version) == ({"n": 19, "big": 2**70}, 20)
    with pytest.raises(statehouse.ConflictError):
        with client.begin_transaction() as tx:
            tx.write("a", "k", {"n": 0}, expected_version=3)
    assert client.get_state("a", "k").version == 20  # the conflict lost nothing
    assert daemon.local.answered - before >= 22, daemon.local.answered - before
    assert daemon.local.open == 1  # one connection carried them, one call at a time
    # ... and the stream that named the socket is let go: it held a session, and the daemon's stop.
    wait_until(lambda: daemon.sessions is not None and daemon.sessions.open == 1, "only the socket's left")
    sdk.close()
    wait_until(lambda: daemon.sessions is not None and daemon.sessions.open == 0, "the sessions ended")


def test_a_client_told_not_to_stays_on_grpc(daemon: Daemon, sdk: SDK) -> None:
    client = sdk.connect(local=False)
    for n in range(5):
        with client.begin_transaction() as tx:
            tx.write("a", "k", n)
    assert client.get_state("a", "k").value == 4
    assert daemon.local is not None and daemon.local.answered == 0 and daemon.local.open == 0


def test_a_daemon_with_the_socket_off_serves_grpc_only(
    daemon_config: DaemonConfig, sdk_kind: str, loop_thread: LoopThread
) -> None:
    daemon = Daemon(replace(daemon_config, local_socket="off")).start()
    try:
        assert daemon.local is None and daemon.local_socket is None
        with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            call = channel.stream_stream("/statehouse.v1.StatehouseService/Session")(iter(()))
            assert KEY not in dict(call.initial_metadata())
            call.cancel()
        commits_work(f"127.0.0.1:{daemon.port}", sdk_kind, loop_thread)
    finally:
        daemon.stop()


@pytest.fixture(params=SDK.KINDS)
def sdk_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_socket_is_named_with_this_runs_token_and_answers_calls(daemon: Daemon) -> None:
    boot, token, path = named_on_streams(daemon).split(" ", 2)
    assert path == daemon.local_socket and len(token) == 32
    assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    raw = Raw(path)
    try:
        hello = raw.read()
        assert hello is not None and (hello.id, hello.code, hello.message) == (0, 0, token)
        answer = raw.call(1, "Commit", commit("ns:" + "1" * 24, "k", b'{"n":1}'))
        assert (answer.id, answer.code) == (1, 0), answer.message
        assert pb.CommitResponse.FromString(answer.response).commit_ts > 0
        # A call's own status comes back as on a stream: the connection goes on.
        unknown = raw.call(2, "NoSuchMethod", pb.HealthRequest())
        assert (unknown.id, unknown.code) == (2, C.UNIMPLEMENTED.value[0]), unknown
        bad = raw.call(3, "Commit", commit("ns:" + "2" * 24, "k", b"{not json"))
        assert (bad.id, bad.code) == (3, C.INVALID_ARGUMENT.value[0]), bad
        read = pb.GetStateRequest(namespace="ns", agent_id="a", key="k", json_values=True)
        again = raw.call(4, "GetState", read)
        assert again.code == 0 and pb.GetStateResponse.FromString(again.response).value_json == b'{"n":1}'
    finally:
        raw.close()


@pytest.mark.parametrize(
    ("message", "code", "said"),
    [
        (frame(b"\xff\xff\xff"), C.INVALID_ARGUMENT, "not a valid statehouse.v1.SessionRequest"),
        ((1 << 31).to_bytes(4, "big"), C.RESOURCE_EXHAUSTED, "--max-message-bytes"),
    ],
    ids=["not a request", "too long"],
)
def test_a_frame_the_daemon_cannot_take_is_refused_clearly_and_loses_nothing(
    daemon: Daemon, message: bytes, code: grpc.StatusCode, said: str
) -> None:
    assert daemon.local_socket is not None
    raw = Raw(daemon.local_socket)
    try:
        assert raw.read() is not None  # the hello
        assert raw.call(1, "Commit", commit("ns:" + "3" * 24, "k", b"7")).code == 0
        raw.send(message)
        refusal = raw.read()
        assert refusal is not None and (refusal.id, refusal.code) == (0, code.value[0]), refusal
        assert said in refusal.message
        assert raw.read() is None  # and the connection closed
    finally:
        raw.close()
    assert daemon.local is not None
    wait_until(lambda: daemon.local is not None and daemon.local.open == 0, "the connection was let go")
    with Statehouse(f"127.0.0.1:{daemon.port}") as client:  # the daemon serves on, the commit kept
        assert client.get_state("a", "k", namespace="ns").value == 7
        assert client.get_state("a", "k", namespace="ns").value == 7  # the second, on the socket
    assert daemon.local.answered >= 2


def test_local_connections_count_against_max_sessions_and_the_sdk_falls_back(
    daemon_config: DaemonConfig, sdk_kind: str, loop_thread: LoopThread
) -> None:
    daemon = Daemon(replace(daemon_config, max_sessions=1)).start()
    try:
        assert daemon.local_socket is not None and daemon.sessions is not None
        held = Raw(daemon.local_socket)
        hello = held.read()
        assert hello is not None and hello.code == 0 and daemon.sessions.open == 1
        refused = Raw(daemon.local_socket)
        answer = refused.read()
        assert answer is not None and answer.code == C.RESOURCE_EXHAUSTED.value[0]
        assert "--max-sessions" in answer.message and refused.read() is None
        refused.close()
        commits_work(f"127.0.0.1:{daemon.port}", sdk_kind, loop_thread)
        held.close()
    finally:
        daemon.stop()


def test_a_socket_that_answers_with_another_token_is_not_used(
    daemon_config: DaemonConfig, tmp_path: Path, sdk_kind: str, loop_thread: LoopThread
) -> None:
    """The path a daemon names can mean another file where the client runs (a container with
    a directory of its own there): the socket there answers with another daemon's token, and
    the client keeps to gRPC. Made real here by moving another daemon's socket to the path."""
    other = Daemon(replace(daemon_config, data_dir=tmp_path / "other")).start()
    daemon = Daemon(daemon_config).start()
    try:
        assert other.local_socket is not None and daemon.local_socket is not None
        os.replace(other.local_socket, daemon.local_socket)
        commits_work(f"127.0.0.1:{daemon.port}", sdk_kind, loop_thread)
        assert other.local is not None and other.local.answered == 0  # the hello only
        with Statehouse(f"127.0.0.1:{other.port}", sessions=False) as client:
            assert client.get_state("a", "k").value is None  # nothing went to the other daemon
    finally:
        daemon.stop()
        other.stop()


def test_where_the_socket_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ "auto": in a directory of this user's under $XDG_RUNTIME_DIR (or /tmp), one path per
    data directory, the same at every start; never in the data directory itself."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()
    mine = tmp_path / "run" / f"statehoused-{os.getuid()}"
    long_dir = tmp_path / ("d" * 150)  # a socket's path could not be in it
    paths = []
    for data_dir in (long_dir, long_dir, tmp_path / "other"):
        daemon = Daemon(DaemonConfig(data_dir=data_dir, addr="127.0.0.1:0")).start()
        try:
            assert daemon.local_socket is not None
            paths.append(Path(daemon.local_socket))
            assert paths[-1].parent == mine and paths[-1].exists()
            assert not [p for p in data_dir.iterdir() if p.is_socket()]
        finally:
            daemon.stop()
        assert not paths[-1].exists()  # removed at the end
    assert paths[0] == paths[1] != paths[2]
    assert stat.S_IMODE(mine.stat().st_mode) == 0o700
    # A directory others may enter is not used: the daemon serves on without a socket.
    mine.chmod(0o755)
    daemon = Daemon(DaemonConfig(data_dir=tmp_path / "other", addr="127.0.0.1:0")).start()
    try:
        assert daemon.local is None
        with Statehouse(f"127.0.0.1:{daemon.port}") as client:
            client.health()
            client.health()
    finally:
        daemon.stop()
    # A path asked for that cannot be a socket's stops the start, clearly.
    too_long = str(tmp_path / ("s" * 200))
    with pytest.raises(AddressInUse, match="at most 103 bytes"):
        Daemon(DaemonConfig(data_dir=tmp_path / "a", addr="127.0.0.1:0", local_socket=too_long)).start()


def test_what_is_at_the_path_already(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    config = DaemonConfig(data_dir=tmp_path / "a", addr="127.0.0.1:0", local_socket=str(path))
    # A socket left by a daemon that is gone (nobody listens) is replaced.
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(path))
    left.close()
    daemon = Daemon(config).start()
    try:
        assert daemon.local_socket == str(path)
        # A live one (this daemon's) is not taken over by a second daemon, nor removed.
        with pytest.raises(AddressInUse, match="another process serves it"):
            Daemon(replace(config, data_dir=tmp_path / "b")).start()
        assert path.exists()
        with Statehouse(f"127.0.0.1:{daemon.port}") as client:
            client.health()
            client.health()
        assert daemon.local is not None and daemon.local.answered >= 1
    finally:
        daemon.stop()
    assert not path.exists()  # removed at the end
    # A file that is not a socket is left as it is.
    path.write_text("not mine")
    with pytest.raises(AddressInUse, match="not a socket"):
        Daemon(config).start()
    assert path.read_text() == "not mine"


def test_a_call_waiting_on_the_socket_when_the_client_closes_ends(tmp_path: Path) -> None:
    """A thread waiting for an answer on the socket (the daemon stopped with SIGSTOP) is
    woken when its client is closed, with an error, long before its timeout."""
    with DaemonProcess(tmp_path / "data") as daemon:
        client = Statehouse(daemon.addr, timeout=60, retry=None)
        client.health()
        client.health()  # on the socket
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGSTOP)
        outcome: list[BaseException | str] = []

        def call() -> None:
            try:
                outcome.append(client.health())
            except BaseException as exc:
                outcome.append(exc)

        waiting = threading.Thread(target=call)
        try:
            waiting.start()
            wait_until(lambda: any(lane for lane in _busy(client)), "the call is on the socket")
            started = time.monotonic()
            client.close()
            waiting.join(10)
        finally:
            daemon.process.send_signal(signal.SIGCONT)
        assert not waiting.is_alive() and time.monotonic() - started < 10
        assert isinstance(outcome[0], statehouse.StatehouseError), outcome
        assert outcome[0].code == "CANCELLED", outcome


def _busy(client: Statehouse) -> list[object]:
    lanes = client._lanes
    local = None if lanes is None else lanes._local
    return [] if local is None else list(local._busy)


def test_clients_follow_a_restarted_daemon_to_its_new_socket(
    tmp_path: Path, sdk_kind: str, loop_thread: LoopThread
) -> None:
    def on_the_socket(client: Any) -> None:
        with client.begin_transaction() as tx:
            tx.write("a", "k", 1)

    data_dir = tmp_path / "data"
    sdk, addr = client_of_a_stopped_daemon(data_dir, sdk_kind, loop_thread, first=on_the_socket)
    try:
        with DaemonProcess(data_dir, "--addr", addr) as second:
            for n in range(2, 5):  # the first finds the old socket gone, and is retried
                with sdk.client.begin_transaction() as tx:
                    tx.write("a", "k", n)
            assert sdk.client.get_state("a", "k").version == 4
            # On the new daemon's socket (another token) by now, not left on gRPC.
            metrics = urllib.request.urlopen(f"http://{second.http_addr}/metrics", timeout=10).read()
            assert b"statehouse_local_sessions_open 1.0" in metrics, metrics
    finally:
        sdk.close()


def test_a_refused_lane_leaves_the_calls_in_flight_alone(tmp_path: Path) -> None:
    """A thread's call waits on one lane (the daemon stopped with SIGSTOP); another thread
    cannot open a second (no greeting in time): that failure pauses the socket for new
    lanes, and does not end the first call, which is answered once the daemon runs."""
    with DaemonProcess(tmp_path / "data") as daemon:
        client = Statehouse(daemon.addr, timeout=10, retry=None)
        try:
            client.health()
            client.health()  # on the socket: one lane, idle
            lanes = client._lanes
            assert lanes is not None and lanes._local is not None
            local = lanes._local
            assert daemon.process is not None
            daemon.process.send_signal(signal.SIGSTOP)
            outcomes: list[Any] = []

            def call() -> None:
                try:
                    outcomes.append(client.health())
                except BaseException as exc:
                    outcomes.append(exc)

            first, second = threading.Thread(target=call), threading.Thread(target=call)
            try:
                first.start()
                wait_until(lambda: len(local._busy) == 1, "the first call is on its lane")
                second.start()  # opens a second lane: connects, and no greeting comes
                wait_until(lambda: local._paused_until > 0, "the second lane was given up")
            finally:
                daemon.process.send_signal(signal.SIGCONT)
            first.join(20)
            second.join(20)
            assert outcomes == ["ok", "ok"], outcomes
            assert lanes._local is local and not local.unusable  # only paused, for a while
        finally:
            client.close()


def test_the_async_client_gets_the_greeting_however_early_it_comes(daemon: Daemon) -> None:
    """uvloop can hand the protocol the daemon's greeting before the connection is returned
    to the code that opened it; every one of many connections must still be used."""

    import uvloop

    from statehouse._local import AsyncLocalConnection, announced

    place = announced([(KEY, named_on_streams(daemon))])
    assert place is not None

    async def main() -> None:
        for _ in range(60):
            connection = await AsyncLocalConnection.open(place)
            connection.close()

    uvloop.run(main())


def test_a_socket_that_is_not_a_daemons_is_not_used(tmp_path: Path) -> None:
    """Whatever answers at the path (here a listener that sends a frame head of 4 GiB) is
    found unusable, without reading on."""
    from statehouse._local import LocalConnection, Place, Unusable

    path = str(tmp_path / "other.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def answer() -> None:
        connection, _ = server.accept()
        connection.sendall(b"\xff\xff\xff\xff" + b"x" * 100)
        connection.recv(1)
        connection.close()

    serving = threading.Thread(target=answer)
    serving.start()
    try:
        with pytest.raises(Unusable, match="more than a message may be"):
            LocalConnection(Place("t", path))
    finally:
        serving.join(10)
        server.close()


def test_requests_sent_ahead_are_answered_in_order(daemon: Daemon) -> None:
    assert daemon.local_socket is not None
    raw = Raw(daemon.local_socket)
    try:
        assert raw.read() is not None
        frames = b"".join(
            frame(
                pb.SessionRequest(
                    id=n, method="Commit", request=commit(f"ns:{n:024x}", f"k{n}", b"1").SerializeToString()
                ).SerializeToString()
            )
            for n in range(1, 6)
        )
        raw.send(frames)  # five at once: read one at a time, answered in order
        answers = [raw.read() for _ in range(5)]
        assert [(a.id, a.code) for a in answers if a is not None] == [(n, 0) for n in range(1, 6)]
    finally:
        raw.close()
