"""The Session RPC: unary calls as messages of one stream, each meaning what the
call means on its own; the SDK's use of it, and its falling back to plain calls."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from facade import SDK, LoopThread
from helpers import wait_until
from test_bad_input import CASES, Wire, actor_config, fingerprint, wire  # noqa: F401 -- fixtures

import statehouse
import statehouse._session
from rpc.server import Daemon, DaemonConfig, Pools, StatehouseServicer, service_handler
from rpc.session import Sessions
from statehouse import Statehouse
from statehouse._proto import statehouse_pb2 as pb
from statehouse.testing import DaemonProcess

SESSION = "/statehouse.v1.StatehouseService/Session"
FIRST, SECOND = "ns:" + "1" * 24, "ns:" + "2" * 24  # client-chosen transaction ids
C = grpc.StatusCode
_END = object()


class Stream:
    """One Session stream on the raw wire: `call` sends a message and reads its answer."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._answers = channel.stream_stream(SESSION)(iter(self._requests.get, _END))
        self._ids = iter(range(1, 1 << 30))

    def send_raw(self, raw: bytes) -> bytes:
        self._requests.put(raw)
        return next(self._answers)  # type: ignore[no-any-return]

    def call(self, method: str, request: bytes | Any, timeout_ms: int = 10_000) -> pb.SessionResponse:
        raw = request if isinstance(request, bytes) else request.SerializeToString()
        call_id = next(self._ids)
        message = pb.SessionRequest(id=call_id, method=method, request=raw, timeout_ms=timeout_ms)
        answer = pb.SessionResponse.FromString(self.send_raw(message.SerializeToString()))
        assert answer.id == call_id
        return answer

    def close(self) -> None:
        self._requests.put(_END)
        self._answers.cancel()


@pytest.fixture
def channel(daemon: Daemon) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        yield channel


def commit_request(txn_id: str, key: str, value: bytes, **condition: int) -> pb.CommitRequest:
    request = pb.CommitRequest(
        txn_id=txn_id,
        open=pb.TxnOpen(),
        mutations=[pb.Mutation(namespace="ns", agent_id="a", key=key, value_json=value)],
    )
    if condition:
        request.conditions.add(namespace="ns", agent_id="a", key=key, **condition)
    return request


def test_calls_on_a_session_answer_as_calls_of_their_own(daemon: Daemon, channel: grpc.Channel) -> None:
    stream = Stream(channel)
    answer = stream.call("Commit", commit_request(FIRST, "k", b'{"n": 1}'))
    assert answer.code == 0
    committed = pb.CommitResponse.FromString(answer.response).commit_ts
    assert committed == daemon.store.last_commit_ts  # type: ignore[union-attr]
    read = pb.GetStateRequest(namespace="ns", agent_id="a", key="k", json_values=True)
    on_session = pb.GetStateResponse.FromString(stream.call("GetState", read).response)
    plain = pb.GetStateResponse.FromString(
        channel.unary_unary("/statehouse.v1.StatehouseService/GetState")(read.SerializeToString())
    )
    assert on_session == plain
    assert (on_session.version, on_session.value_json) == (1, b'{"n":1}')
    # A condition that fails: ABORTED, with the conflict trailer the SDK reads.
    failed = stream.call("Commit", commit_request(SECOND, "k", b"2", expected_version=7))
    assert C.ABORTED.value[0] == failed.code
    assert "expected version 7" in failed.message
    trailers = {t.key: t.value for t in failed.trailers}
    conflict = pb.Conflict.FromString(trailers["statehouse-conflict-bin"])
    assert (conflict.key, conflict.expected_version, conflict.actual_version) == ("k", 7, 1)
    # The session outlives the error, and the retry of the first commit is answered with its commit_ts.
    again = stream.call("Commit", commit_request(FIRST, "k", b'{"n": 1}'))
    assert pb.CommitResponse.FromString(again.response).commit_ts == committed
    assert daemon.sessions is not None and daemon.sessions.open == 1
    stream.close()


@pytest.mark.parametrize(
    ("name", "method", "build", "code", "words"),
    [case for case in CASES if case[1] != "Replay"],
    ids=[case[0] for case in CASES if case[1] != "Replay"],
)
def test_bad_request_on_a_session_gets_the_status_it_gets_alone(
    daemon: Daemon,
    wire: Wire,  # noqa: F811 -- test_bad_input's fixture
    channel: grpc.Channel,
    name: str,
    method: str,
    build: Callable[[str], object],
    code: grpc.StatusCode,
    words: str,
) -> None:
    txn = wire.txn()
    before = fingerprint(daemon)
    stream = Stream(channel)
    answer = stream.call(method, build(txn))
    assert (answer.code, words in answer.message) == (code.value[0], True), answer.message
    assert fingerprint(daemon) == before
    assert pb.HealthResponse.FromString(stream.call("Health", b"").response).status == "ok"
    stream.close()


@pytest.fixture
def daemon_config(daemon_config: DaemonConfig) -> DaemonConfig:
    return replace(daemon_config, max_value_bytes=1000)  # as test_bad_input's cases expect


def test_what_cannot_go_on_a_session_is_refused_clearly(daemon: Daemon, channel: grpc.Channel) -> None:
    stream = Stream(channel)
    for method in ("Replay", "Watch", "Session", "NoSuchThing"):
        answer = stream.call(method, b"")
        assert answer.code == C.UNIMPLEMENTED.value[0]
        assert "is not a unary method" in answer.message
    assert pb.HealthResponse.FromString(stream.call("Health", b"").response).status == "ok"
    # A message that is not a SessionRequest ends the stream with INVALID_ARGUMENT; the daemon serves on.
    with pytest.raises(grpc.RpcError) as info:
        stream.send_raw(b"\xff\xff\xff")
    assert info.value.code() == C.INVALID_ARGUMENT
    assert "not a valid statehouse.v1.SessionRequest" in info.value.details()
    assert pb.HealthResponse.FromString(Stream(channel).call("Health", b"").response).status == "ok"


def test_a_call_on_a_session_keeps_its_deadline_when_the_daemon_hangs(tmp_path: Path) -> None:
    """A daemon that stops answering (SIGSTOP) cannot answer DEADLINE_EXCEEDED itself: the
    client's watchdog ends the call at its deadline, and the next call works."""
    with DaemonProcess(tmp_path / "data") as daemon, Statehouse(daemon.addr, timeout=0.5) as client:
        with client.begin_transaction() as tx:
            tx.write("a", "k", 1)  # the session is open
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(statehouse.DeadlineExceededError):
                client.get_state("a", "k")
            waited = time.monotonic() - started
        finally:
            daemon.process.send_signal(signal.SIGCONT)
        print(f"a call to a hung daemon with a 0.5 s timeout ended after {waited:.2f} s")
        assert waited < 5, waited
        assert client.get_state("a", "k").value == 1


def test_sessions_are_bounded_and_the_sdk_falls_back_to_plain_calls(
    daemon_config: DaemonConfig, loop_thread: LoopThread
) -> None:
    daemon = Daemon(replace(daemon_config, max_sessions=1)).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            held = Stream(channel)
            assert held.call("Health", b"").code == 0
            assert daemon.sessions is not None and daemon.sessions.open == 1
            with pytest.raises(grpc.RpcError) as info:
                Stream(channel).call("Health", b"")
            assert info.value.code() == C.RESOURCE_EXHAUSTED
            assert "--max-sessions" in info.value.details()
            for kind in SDK.KINDS:
                sdk = SDK(kind, f"127.0.0.1:{daemon.port}", loop_thread)
                try:
                    client = sdk.connect(timeout=10)
                    with client.begin_transaction() as tx:
                        tx.write("a", kind, {"n": 1})
                    assert client.get_state("a", kind).value == {"n": 1}
                finally:
                    sdk.close()
            assert daemon.sessions.open == 1  # only the one held: the clients made plain calls
            held.close()
    finally:
        daemon.stop()


def test_the_sdk_sends_its_calls_on_sessions(daemon: Daemon, sdk: SDK) -> None:
    """Both clients: every unary call goes on a session, none as a call of its own."""
    client = sdk.client
    target = getattr(client, "_target", client)  # the AsyncStatehouse behind the facade
    plain = target._grpc_stub
    assert target._lanes is not None

    class NoPlainCalls:
        def __getattr__(self, rpc: str) -> Any:
            raise AssertionError(f"{rpc} was sent as a call of its own")

    target._grpc_stub = NoPlainCalls()
    for n in range(20):
        with client.begin_transaction() as tx:
            tx.write("a", "k", {"n": n})
    assert client.get_state("a", "k").value == {"n": 19}
    assert client.get_state("a", "k").version == 20
    # One session stream named the local socket; one connection there took the calls since.
    assert daemon.local is not None and daemon.local.open == 1
    assert daemon.sessions is not None and daemon.sessions.open in (1, 2)
    with pytest.raises(statehouse.ConflictError):
        with client.begin_transaction() as tx:
            tx.write("a", "k", {"n": 0}, expected_version=3)
    target._grpc_stub = plain
    sdk.close()
    wait_until(lambda: daemon.sessions is not None and daemon.sessions.open == 0, "the session ended")


def test_a_client_of_a_daemon_without_sessions_makes_plain_calls(daemon: Daemon) -> None:
    """A daemon from before sessions answers UNIMPLEMENTED; the client's call goes plain."""
    assert daemon.system is not None
    servicer = StatehouseServicer(daemon.system, 1000, "old")
    pools = Pools.of(DaemonConfig(data_dir=daemon.config.data_dir))
    handler = service_handler(servicer, pools, Sessions(1, servicer.count_error, _registry()))
    unary_only = _without(handler, "Session")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()

    def on_loop(work: Any) -> Any:
        async def run() -> Any:
            return await work

        return asyncio.run_coroutine_threadsafe(run(), loop).result(10)

    async def serve() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((unary_only,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = on_loop(serve())
    try:
        with Statehouse(f"127.0.0.1:{port}", timeout=10) as client:
            with client.begin_transaction() as tx:
                tx.write("a", "old", [1, 2])
            assert client.get_state("a", "old").value == [1, 2]
    finally:
        on_loop(server.stop(0))
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        pools.shutdown()


def _registry() -> Any:
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


def _without(handler: grpc.GenericRpcHandler, method: str) -> grpc.GenericRpcHandler:
    class Without(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> Any:
            if details.method.endswith("/" + method):  # type: ignore[attr-defined]
                return None  # grpc answers UNIMPLEMENTED
            return handler.service(details)

    return Without()


def test_open_sessions_hold_no_daemon_thread(tmp_path: Path) -> None:
    """Sessions are served on the daemon's event loop: 100 of them open, each after a commit,
    add no thread to the daemon (each held one of a pool before)."""
    with DaemonProcess(tmp_path / "data") as daemon, grpc.insecure_channel(daemon.addr) as channel:
        assert daemon.process is not None
        tasks = Path(f"/proc/{daemon.process.pid}/task")
        first = Stream(channel)
        assert first.call("Commit", commit_request("ns:" + "f" * 24, "k", b"0")).code == 0
        before = len(list(tasks.iterdir()))
        streams = [Stream(channel) for _ in range(100)]
        for n, stream in enumerate(streams):
            answer = stream.call("Commit", commit_request(f"ns:{n:024x}", f"k{n}", b"1"))
            assert answer.code == 0, answer.message
        during = len(list(tasks.iterdir()))
        for stream in [first, *streams]:
            stream.close()
    print(f"daemon threads: {before} with one session open, {during} with 101")
    assert during - before < 10, (before, during)


@pytest.mark.parametrize("local", [False, True], ids=["grpc streams", "local socket"])
def test_an_idle_client_closes_its_sessions(
    daemon: Daemon, sdk: SDK, monkeypatch: pytest.MonkeyPatch, local: bool
) -> None:
    """Both clients, on gRPC streams or the local socket: a session idle for IDLE_SECONDS
    (30 s; 0.3 s here) is closed, so a client that stopped calling holds none of the daemon's
    --max-sessions; the next call opens one."""
    monkeypatch.setattr(statehouse._session, "IDLE_SECONDS", 0.3)
    client = sdk.connect(local=local)
    assert daemon.sessions is not None and daemon.local is not None
    client.health()
    if local:
        client.health()  # the first went on a stream, which named the socket
    wait_until(lambda: daemon.sessions is not None and daemon.sessions.open == 1, "one session open")
    assert daemon.local.open == int(local)
    wait_until(lambda: daemon.sessions is not None and daemon.sessions.open == 0, "the idle session closed")
    assert client.health() == "ok"
    assert daemon.sessions.open == 1


def test_sync_clients_share_one_loop_thread_for_their_sessions(tmp_path: Path) -> None:
    """`Statehouse` sessions run on the process's I/O loop: 8 clients with two sessions open
    each add that loop's thread (and grpc's poller), not threads of their own (a synchronous
    stream held two: 32 here, and a watchdog per client)."""
    with DaemonProcess(tmp_path / "data") as daemon:
        before = {thread.ident for thread in threading.enumerate()}
        clients = [Statehouse(daemon.addr) for _ in range(8)]
        go = threading.Barrier(16)

        def agent(client: Statehouse, name: str) -> None:
            go.wait()
            for n in range(20):
                with client.begin_transaction() as tx:
                    tx.write(name, "k", n)

        agents = [
            threading.Thread(target=agent, args=(client, f"a{c}-{t}"))
            for c, client in enumerate(clients)
            for t in range(2)
        ]
        for thread in agents:
            thread.start()
        for thread in agents:
            thread.join()
        new = [t.name for t in threading.enumerate() if t.ident not in before]
        assert all(client.get_state(f"a{c}-1", "k").value == 19 for c, client in enumerate(clients))
        for client in clients:
            client.close()
    print(f"threads the 8 clients added: {new}")
    assert "statehouse-io" in new or any(t.name == "statehouse-io" for t in threading.enumerate())
    assert len(new) <= 2, new


RUNS_ONE_AFTER_ANOTHER = """
import asyncio, sys
from statehouse import AsyncStatehouse

async def main(addr: str, run: int) -> None:
    async with AsyncStatehouse(addr, timeout=30) as client:
        async def agent(n: int) -> None:
            for step in range(5):
                async with client.begin_transaction() as tx:
                    tx.write(f"run{run}", f"agent{n}", step)
        await asyncio.gather(*(agent(n) for n in range(16)))

for run in range(6):
    asyncio.run(main(sys.argv[1], run))
"""


def test_an_async_client_closed_with_its_loop_leaves_nothing_for_the_next_loop(tmp_path: Path) -> None:
    """A program that runs `asyncio.run` again and again, each with its own `AsyncStatehouse`
    on sessions: closing a client ends its idle sessions' streams as finished ones, so none of
    their operations completes after `asyncio.run` closed the loop that made it. Cancelled
    instead, grpc reported such late completions as "Event loop is closed" tracebacks (38
    in 20 runs of 3 loops each before this was fixed)."""
    with DaemonProcess(tmp_path / "data") as daemon:
        for _ in range(3):
            ran = subprocess.run(
                [sys.executable, "-c", RUNS_ONE_AFTER_ANOTHER, daemon.addr],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert ran.returncode == 0, ran.stderr
            assert "Event loop is closed" not in ran.stderr, ran.stderr
            assert "Traceback" not in ran.stderr, ran.stderr
        with Statehouse(daemon.addr) as client:
            for run in range(6):
                assert client.get_state(f"run{run}", "agent15").value == 4


def test_closing_a_client_ends_its_sessions_as_finished(daemon: Daemon) -> None:
    """Both clients on gRPC: when `close` returns, the daemon has seen the client's session
    streams end (none left open), and it took less than `END_SECONDS`.

    On gRPC only (`local=False`): a client that learns of the local socket lets its gRPC
    stream go as soon as its call returns, so how many are open just after would be a race
    (the socket's own sessions are test_local's)."""
    assert daemon.sessions is not None

    async def use_and_close() -> float:
        client = statehouse.AsyncStatehouse(f"127.0.0.1:{daemon.port}", timeout=30, local=False)
        await asyncio.gather(*(client.health() for _ in range(4)))
        assert daemon.sessions is not None and daemon.sessions.open >= 1
        started = time.monotonic()
        await client.close()
        return time.monotonic() - started

    assert asyncio.run(use_and_close()) < statehouse._session.END_SECONDS
    assert daemon.sessions.open == 0
    client = Statehouse(f"127.0.0.1:{daemon.port}", timeout=30, local=False)
    client.health()
    assert daemon.sessions.open == 1
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < statehouse._session.END_SECONDS
    assert daemon.sessions.open == 0


@pytest.mark.parametrize("grace", [120.0, 0.0])
@pytest.mark.parametrize("kind", SDK.KINDS)
def test_a_stopping_daemon_ends_idle_sessions_and_clients_carry_on_after_its_restart(
    daemon_config: DaemonConfig, loop_thread: LoopThread, kind: str, grace: float
) -> None:
    """Clients on gRPC streams (old SDKs, remote clients, `local=False`) hold sessions open
    between calls. A daemon's stop ends them at once with UNAVAILABLE (the streams waiting for
    a call) or after the call in flight is answered, rather than waiting out its grace period
    (120 s); with no grace period, the calls in flight are cancelled. The clients, committing
    all along, retry what was cut off (grpc's CANCELLED from a stopping daemon included) and
    carry on against the restarted daemon, and every commit acknowledged is there once."""
    config = replace(daemon_config, shutdown_grace_seconds=grace)
    daemon = Daemon(config).start()
    addr = f"127.0.0.1:{daemon.port}"
    sdk = SDK(kind, addr, loop_thread)
    agents = 4
    clients = [sdk.connect(timeout=60, local=False) for _ in range(agents)]
    acknowledged = [0] * agents
    errors: list[BaseException] = []
    restarted = threading.Event()

    def agent(n: int) -> None:
        try:
            while not restarted.is_set() or acknowledged[n] < 200:
                with clients[n].begin_transaction() as tx:
                    tx.write("a", f"agent{n}", acknowledged[n] + 1)
                acknowledged[n] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(agents)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: min(acknowledged) >= 20, "the agents are committing")
        assert daemon.sessions is not None and daemon.sessions.open == agents
        started = time.monotonic()
        daemon.stop()
        stopped_in = time.monotonic() - started
        print(f"stopped in {stopped_in:.2f} s with {agents} clients committing on sessions")
        assert stopped_in < 60, f"stopping took {stopped_in:.1f} s: session streams held it"
        daemon = Daemon(replace(config, addr=addr)).start()
        restarted.set()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        assert not any(thread.is_alive() for thread in threads)
        for n in range(agents):
            state = clients[n].get_state("a", f"agent{n}")
            assert (state.value, state.version) == (acknowledged[n], acknowledged[n])
    finally:
        restarted.set()
        sdk.close()
        daemon.stop()


@pytest.mark.parametrize("kind", SDK.KINDS)
def test_watches_go_on_across_quick_restarts(
    daemon_config: DaemonConfig, loop_thread: LoopThread, kind: str
) -> None:
    """A stop ends every watch with UNAVAILABLE, and each re-subscribes at once: while the
    daemon is still stopping, grpc cancels such a call (CANCELLED), which ended 25 to 30 of 30
    watches before the SDK took it as UNAVAILABLE. Ten watches, two stops each followed at
    once by a restart: every watch sees every commit, in order, with no error."""
    daemon = Daemon(daemon_config).start()
    addr = f"127.0.0.1:{daemon.port}"
    sdk = SDK(kind, addr, loop_thread)
    try:
        writer = sdk.connect(timeout=60)
        watches = [sdk.connect(timeout=60, local=False).watch("a") for _ in range(10)]
        seen: list[list[int]] = [[] for _ in watches]
        errors: list[BaseException] = []

        def follow(n: int) -> None:
            try:
                for event in watches[n]:
                    seen[n].append(event.commit_ts)
                    if len(seen[n]) == 3:
                        return
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=follow, args=(n,)) for n in range(len(watches))]
        for thread in threads:
            thread.start()
        stamps = [commit_one(writer, 0)]
        for n in (1, 2):
            daemon.stop()
            daemon = Daemon(replace(daemon_config, addr=addr)).start()
            stamps.append(commit_one(writer, n))
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        assert seen == [stamps] * len(watches)
    finally:
        sdk.close()
        daemon.stop()


def commit_one(client: Any, value: int) -> int:
    with client.begin_transaction() as tx:
        tx.write("a", "k", value)
    return int(tx.commit_ts)


FORK_FIRST = """
import os, sys
from statehouse import Statehouse

child = os.fork()  # before this process made any client
with Statehouse(sys.argv[1], timeout=10) as mine:
    with mine.begin_transaction() as tx:
        tx.write("a", "child" if child == 0 else "parent", os.getpid())
    if child == 0:
        os._exit(0)
_, status = os.waitpid(child, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_child_forked_before_the_first_client_makes_its_own(tmp_path: Path) -> None:
    """Forking before a process's first client is safe for gRPC: parent and child then each
    make a client and commit, on sessions."""
    with DaemonProcess(tmp_path / "data") as daemon:
        agent = [sys.executable, "-c", FORK_FIRST, daemon.addr]
        ran = subprocess.run(agent, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        with Statehouse(daemon.addr) as client:
            child, parent = client.get_state("a", "child").value, client.get_state("a", "parent").value
    assert isinstance(child, int) and isinstance(parent, int) and child != parent


FORK_AFTER = """
import asyncio, os, sys
from statehouse import AsyncStatehouse, ForkedProcessError, Statehouse

with Statehouse(sys.argv[1], timeout=10) as parent:
    with parent.begin_transaction() as tx:  # on a session: the process's I/O loop runs now
        tx.write("a", "parent", 1)
    child = os.fork()
    if child == 0:
        def commit(client):
            with client.begin_transaction() as tx:
                tx.write("a", "child", 2)

        refused = []
        for attempt in (
            lambda: Statehouse(sys.argv[1]),
            lambda: AsyncStatehouse(sys.argv[1]),
            lambda: parent.get_state("a", "parent"),  # the client made before the fork
            lambda: commit(parent),
        ):
            try:
                attempt()
            except ForkedProcessError as exc:
                refused.append(str(exc))
        for message in refused:
            print(message, flush=True)
        os._exit(0 if len(refused) == 4 else 1)
    _, status = os.waitpid(child, 0)
    assert parent.get_state("a", "parent").value == 1  # the parent's client still works
    sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_child_forked_after_a_client_was_made_is_refused_clearly(tmp_path: Path) -> None:
    """gRPC cannot be used in a child forked after its parent made a channel (a call there
    crashed the child in 22 of 100 runs): such a child gets ForkedProcessError from a new
    client of either kind and from the parent's client, at once, naming the way out."""
    with DaemonProcess(tmp_path / "data") as daemon:
        agent = [sys.executable, "-c", FORK_AFTER, daemon.addr]
        ran = subprocess.run(agent, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        with Statehouse(daemon.addr) as client:
            assert not client.get_state("a", "child").exists  # the child's commit was never sent
    messages = ran.stdout.splitlines()
    assert len(messages) == 4
    assert all("was forked from process" in m and "'spawn'" in m for m in messages), messages


FORK_AND_CLOSE = """
import os, sys, time
from statehouse import Statehouse

for n in range(10):
    client = Statehouse(sys.argv[1], timeout=10)
    with client.begin_transaction() as tx:  # on a session: grpc's threads are busy now
        tx.write("a", "k", n)
    child = os.fork()
    if child == 0:
        started = time.monotonic()
        client.close()  # the parent's streams and channel: left alone, at once
        os._exit(0 if time.monotonic() - started < 3 else 3)  # it took 5 s when it waited for the loop
    _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"child {n} ended with {os.waitstatus_to_exitcode(status)}")
    client.close()
"""


def test_a_child_can_close_a_client_it_inherited_and_exit(tmp_path: Path) -> None:
    """Ten times: commit, fork, and the child closes the client it inherited and exits. With
    gRPC core's fork handlers on, they logged from fork_posix.cc at each fork and children
    crashed (2 of 10); closing also waited 5 s for the parent's I/O loop, which the child has not."""
    with DaemonProcess(tmp_path / "data") as daemon:
        agent = [sys.executable, "-c", FORK_AND_CLOSE, daemon.addr]
        ran = subprocess.run(agent, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "fork_posix" not in ran.stderr  # gRPC's fork handlers did not run


@pytest.mark.parametrize(("preset", "seen"), [(None, "false"), ("true", "true")])
def test_importing_the_sdk_turns_grpcs_fork_handlers_off_unless_set(preset: str | None, seen: str) -> None:
    """gRPC core's fork handlers crashed a child forked after a commit although it made no gRPC
    call (4 of 80 runs): importing the SDK sets GRPC_ENABLE_FORK_SUPPORT=false, and leaves a
    value the application set."""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    if preset is not None:
        env["GRPC_ENABLE_FORK_SUPPORT"] = preset
    code = "import os, statehouse; print(os.environ['GRPC_ENABLE_FORK_SUPPORT'])"
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert ran.stdout.strip() == seen, ran.stderr
