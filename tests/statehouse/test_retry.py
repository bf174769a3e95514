"""Retries against a real daemon process that goes away and comes back on the same port.

Each case runs with the sync client and with the async one (through the
blocking facade of tests/facade.py). The SDK's stub methods are
wrapped to record each attempt's outcome: the real calls still go through.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from facade import SDK, LoopThread, client_of_a_stopped_daemon

import statehouse
from actors import ActorConfig
from rpc.server import Daemon
from statehouse.testing import DaemonProcess

WAIT = 60.0


@pytest.fixture(params=SDK.KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Recorded:
    """Records the status of each attempt of one stub method of a client, on a session or
    as a call of its own; `failed`: one failed."""

    def __init__(self, client: Any, method: str) -> None:
        self.codes: list[str] = []
        self.failed = threading.Event()
        target = getattr(client, "_target", client)  # the AsyncStatehouse behind the facade
        is_async = isinstance(target, statehouse.AsyncStatehouse)
        original = getattr(target._stub, method)

        def recorded(request: Any, **kwargs: Any) -> Any:
            if is_async:
                return self._recorded_async(original(request, **kwargs))
            return self._recorded(lambda: original(request, **kwargs))

        setattr(target._stub, method, recorded)
        lanes = target._lanes  # the clients send calls on sessions first
        if lanes is not None:
            send = lanes.call

            def on_session(rpc: str, request: Any, timeout: float) -> Any:
                if rpc != method:
                    return send(rpc, request, timeout)
                if is_async:
                    return self._recorded_async(send(rpc, request, timeout))
                return self._recorded(lambda: send(rpc, request, timeout))

            lanes.call = on_session

    def _recorded(self, attempt: Callable[[], Any]) -> Any:
        try:
            response = attempt()
        except grpc.RpcError as exc:
            self._note(exc.code().name)
            raise
        return self._answered(response)

    async def _recorded_async(self, attempt: Awaitable[Any]) -> Any:
        try:
            response = await attempt
        except grpc.RpcError as exc:
            self._note(exc.code().name)
            raise
        return self._answered(response)

    def _answered(self, response: Any) -> Any:
        if response is not None:  # None from a session: sent as a call of its own, recorded there
            self._note("OK")
        return response

    def _note(self, code: str) -> None:
        self.codes.append(code)
        if code != "OK":
            self.failed.set()


class Counted:
    """Counts the calls of one stub method of a client (a stream: the calls are not awaited here)."""

    def __init__(self, client: Any, method: str) -> None:
        self.calls = 0
        stub = getattr(client, "_target", client)._stub
        original = getattr(stub, method)

        def counted(request: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(request, **kwargs)

        setattr(stub, method, counted)


class InThread:
    """Runs a call in a thread and keeps its result or exception."""

    def __init__(self, call: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,))
        self._thread.start()

    def _run(self, call: Any) -> None:
        try:
            self.result = call()
        except BaseException as exc:
            self.error = exc

    def join(self) -> Any:
        self._thread.join(WAIT)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.result


def commit_one(client: Any, value: Any) -> int:
    with client.begin_transaction() as tx:
        tx.write("agent", "k", value)
    return int(tx.commit_ts)


def test_commit_sent_while_the_daemon_is_down_succeeds_once_it_is_back(
    tmp_path: Path, kind: str, loop_thread: LoopThread
) -> None:
    data_dir = tmp_path / "data"
    sdk, addr = client_of_a_stopped_daemon(data_dir, kind, loop_thread)
    try:
        client = sdk.connect(timeout=WAIT)
        attempts = Recorded(client, "Commit")
        commit = InThread(lambda: commit_one(client, {"sent": "while down"}))
        assert attempts.failed.wait(WAIT)  # the daemon is down: the first attempt failed
        with DaemonProcess(data_dir, "--addr", addr) as second:
            assert second.addr == addr
            commit_ts = commit.join()
            assert attempts.codes[0] == "UNAVAILABLE" and attempts.codes[-1] == "OK"
            state = client.get_state("agent", "k")
            assert (state.value, state.version, state.commit_ts) == ({"sent": "while down"}, 1, commit_ts)
        nothing_retried = sdk.connect(retry=None)
        with pytest.raises(statehouse.UnavailableError):  # the daemon is gone again, and no retry
            nothing_retried.health()
    finally:
        sdk.close()


def test_a_commit_whose_answer_was_lost_is_applied_once(
    tmp_path: Path, kind: str, loop_thread: LoopThread
) -> None:
    data_dir = tmp_path / "data"
    crashing = DaemonProcess(data_dir, env={"STATEHOUSE_CRASH_AT": "ledger.after_sync"}).start()
    addr = crashing.addr
    sdk = SDK(kind, addr, loop_thread)
    try:
        client = sdk.connect(timeout=WAIT)
        attempts = Recorded(client, "Commit")
        commit = InThread(lambda: commit_one(client, "durable, never acknowledged"))
        # The daemon dies with the commit on disk, before answering it.
        assert crashing.process is not None and crashing.process.wait(WAIT) != 0
        with DaemonProcess(data_dir, "--addr", addr) as restarted:
            assert restarted.addr == addr
            commit_ts = commit.join()
            assert attempts.codes[0] == "UNAVAILABLE" and attempts.codes[-1] == "OK"
            history = client.key_history("agent", "k")
            assert [(v.version, v.commit_ts, v.value) for v in history] == [
                (1, commit_ts, "durable, never acknowledged")
            ]
            assert [e.commit_ts for e in client.replay("agent")] == [commit_ts]
    finally:
        sdk.close()
        crashing.kill()


def test_a_watch_goes_on_across_a_daemon_restart(tmp_path: Path, kind: str, loop_thread: LoopThread) -> None:
    data_dir = tmp_path / "data"
    first = DaemonProcess(data_dir).start()
    addr = first.addr
    sdk = SDK(kind, addr, loop_thread)
    try:
        writer = sdk.connect(timeout=WAIT)
        watcher = sdk.connect(timeout=WAIT)
        subscriptions = Counted(watcher, "Watch")
        stamps = [commit_one(writer, n) for n in range(3)]
        watch = watcher.watch("agent", start_ts=1)
        seen = [next(watch).commit_ts for _ in range(3)]
        first.stop()
        with DaemonProcess(data_dir, "--addr", addr):
            stamps += [commit_one(writer, n) for n in range(3, 6)]
            seen += [next(watch).commit_ts for _ in range(3)]
            watch.cancel()
        assert seen == stamps == [1, 2, 3, 4, 5, 6]
        assert subscriptions.calls >= 2  # it did re-subscribe
    finally:
        sdk.close()
        first.kill()


def test_a_replay_resumes_after_the_last_commit_it_yielded(
    tmp_path: Path, kind: str, loop_thread: LoopThread
) -> None:
    data_dir = tmp_path / "data"
    first = DaemonProcess(data_dir).start()
    addr = first.addr
    sdk = SDK(kind, addr, loop_thread)
    try:
        client = sdk.connect(timeout=WAIT)
        # 24 MB of history: more than gRPC's flow control lets the daemon send
        # ahead of a reader that took one event, so the stream is mid-way.
        blob = "x" * 500_000
        stamps = [commit_one(client, {"n": n, "blob": blob}) for n in range(48)]
        streams = Counted(client, "ReplayBatches")
        replay = client.replay("agent")
        seen = [next(replay).commit_ts]
        first.kill()  # the stream breaks under the reader
        with DaemonProcess(data_dir, "--addr", addr):
            seen += [event.commit_ts for event in replay]
        assert seen == stamps
        assert streams.calls >= 2  # it did resume
    finally:
        sdk.close()
        first.kill()


@pytest.fixture
def actor_config() -> ActorConfig:
    # Watchers are cut off early, so that a slow one is easy to make.
    return ActorConfig(watch_max_events=4)


def test_a_watcher_cut_off_for_reading_slowly_resumes_without_gap(
    daemon: Daemon, kind: str, loop_thread: LoopThread
) -> None:
    sdk = SDK(kind, f"127.0.0.1:{daemon.port}", loop_thread)
    try:
        subscriptions = Counted(sdk.client, "Watch")
        watch = sdk.client.watch("agent")
        blob = "x" * 200_000  # large events fill the stream's flow-control window
        stamps = [commit_one(sdk.client, {"n": n, "blob": blob}) for n in range(40)]
        seen = []
        for event in watch:  # read only now: the daemon cut the watcher off meanwhile
            seen.append((event.commit_ts, event.operations[0].value["n"]))
            if len(seen) == len(stamps):
                break
        watch.cancel()
        assert seen == [(ts, n) for n, ts in enumerate(stamps)]
        assert subscriptions.calls >= 2  # it was cut off, and re-subscribed
    finally:
        sdk.close()


def test_commits_combined_in_one_call_are_retried_if_they_opened_their_transaction(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with DaemonProcess(data_dir) as first:
        addr = first.addr
        with statehouse.Statehouse(addr) as setup:
            staged = setup.begin_transaction()
            for n in range(3):  # past 1 MiB: sent ahead, so its commit carries no `open`
                staged.write("agent", f"staged{n}", "x" * 500_000)
    with statehouse.Statehouse(addr, timeout=WAIT) as client:
        txns = [client.begin_transaction() for _ in range(3)]
        for n, tx in enumerate(txns):
            tx.write("agent", f"k{n}", n)
        calls = [tx._commit_call() for tx in txns] + [staged._commit_call()]
        attempts = Recorded(client, "CommitBatch")
        batch = InThread(lambda: client._commit_many(calls))  # as the combiner sends concurrent commits
        assert attempts.failed.wait(WAIT)
        with DaemonProcess(data_dir, "--addr", addr):
            answers = batch.join()
            assert attempts.codes[0] == "UNAVAILABLE" and attempts.codes[-1] == "OK"
            assert isinstance(answers[3], statehouse.UnavailableError)  # not retried: outcome unknown
            assert sorted(answers[:3]) == [1, 2, 3]  # type: ignore[type-var]
            for n in range(3):
                state = client.get_state("agent", f"k{n}")
                assert (state.value, state.version, state.commit_ts) == (n, 1, answers[n])


def test_retry_schedule_grows_to_its_bound_with_jitter_and_stops_at_the_deadline() -> None:
    policy = statehouse.RetryPolicy(initial_backoff=0.1, max_backoff=0.4, multiplier=2.0, jitter=0.5)
    delays = policy.delays()
    bounds = [0.1, 0.2, 0.4, 0.4, 0.4]
    for bound in bounds:
        assert bound * 0.5 <= next(delays) <= bound
    exact = statehouse.RetryPolicy(initial_backoff=0.1, max_backoff=0.4, jitter=0.0).delays()
    assert [round(next(exact), 6) for _ in bounds] == bounds
    with pytest.raises(statehouse.InvalidArgumentError):
        statehouse.RetryPolicy(initial_backoff=2.0, max_backoff=1.0)

    from statehouse._retry import Attempts

    unavailable = statehouse.UnavailableError("down")
    attempts = Attempts(statehouse.RetryPolicy(initial_backoff=0.05), timeout=0.2)
    assert attempts.backoff(statehouse.NotFoundError("no")) is None  # only UNAVAILABLE is retried
    assert attempts.backoff(unavailable) is not None
    assert Attempts(statehouse.RetryPolicy(initial_backoff=0.5), timeout=0.2).backoff(unavailable) is None
    assert Attempts(None, timeout=10).backoff(unavailable) is None
    # A retry cut short by the deadline reports what was being retried.
    deadline = statehouse.DeadlineExceededError("late")
    assert attempts.cause(deadline).code == "UNAVAILABLE" and "retried" in str(attempts.cause(deadline))
    assert Attempts(statehouse.RetryPolicy(), timeout=10).cause(deadline) is deadline


def test_wait_for_keeps_its_timeout_when_the_daemon_hangs(
    tmp_path: Path, kind: str, loop_thread: LoopThread
) -> None:
    """A daemon that stops answering (SIGSTOP) must not hold wait_for past its own timeout."""
    import signal
    import time

    with DaemonProcess(tmp_path / "data") as daemon:
        sdk = SDK(kind, daemon.addr, loop_thread)
        try:
            client = sdk.connect(timeout=WAIT)
            assert client.health() == "ok"
            assert daemon.process is not None
            daemon.process.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(statehouse.DeadlineExceededError, match=r"did not qualify within 0\.5 s"):
                    client.wait_for("agent", "approval", timeout=0.5)
                waited = time.monotonic() - started
            finally:
                daemon.process.send_signal(signal.SIGCONT)
            assert waited < WAIT / 4, waited  # its own 0.5 s, not the client's 60 s
        finally:
            sdk.close()


def test_a_watch_gives_up_on_a_hung_daemon(
    tmp_path: Path, kind: str, loop_thread: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon that stops answering (SIGSTOP) sends no heartbeat: the watch must not wait forever."""
    import signal
    import time

    import statehouse._watch

    monkeypatch.setattr(statehouse._watch, "IDLE_SECONDS", 1.0)  # instead of 20 s: a short test
    with DaemonProcess(tmp_path / "data") as daemon:
        sdk = SDK(kind, daemon.addr, loop_thread)
        try:
            client = sdk.connect(timeout=3.0)
            watch = client.watch("agent")
            commit_one(client, 1)
            assert next(watch).commit_ts == 1
            assert daemon.process is not None
            daemon.process.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                waiting = InThread(lambda: next(watch))
                with pytest.raises((statehouse.DeadlineExceededError, statehouse.UnavailableError)):
                    waiting.join()
                waited = time.monotonic() - started
            finally:
                daemon.process.send_signal(signal.SIGCONT)
            assert waited < WAIT / 4, waited  # the idle limit and the client's timeout, not forever
        finally:
            sdk.close()
