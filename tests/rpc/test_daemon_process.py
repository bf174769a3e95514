"""statehoused as a real process: restart, crash, signals, flags, logs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import orjson
import pytest

from statehouse import Statehouse, StatehouseError
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from statehouse.testing import DaemonProcess

ROOT = Path(__file__).resolve().parents[2]


def test_versions_and_commit_ts_continue_after_restart(data_dir: Path) -> None:
    with DaemonProcess(data_dir) as daemon:
        with Statehouse(daemon.addr) as client:
            for n in range(3):
                with client.begin_transaction() as tx:
                    tx.write("a", "k", {"n": n})
            last_ts = tx.commit_ts
    assert daemon.process.returncode == 0
    with DaemonProcess(data_dir) as daemon:
        with Statehouse(daemon.addr) as client:
            assert client.get_state("a", "k").value == {"n": 2}
            with client.begin_transaction() as tx:
                tx.write("a", "k", {"n": 3})
            assert tx.commit_ts == last_ts + 1
            assert client.get_state("a", "k").version == 4
            assert [e.commit_ts for e in client.replay("a")] == [1, 2, 3, 4]


def test_acknowledged_commits_survive_sigkill(data_dir: Path) -> None:
    acknowledged: dict[str, int] = {}
    with DaemonProcess(data_dir) as daemon:
        with Statehouse(daemon.addr) as client:
            for n in range(50):
                with client.begin_transaction() as tx:
                    tx.write("a", f"k{n}", n)
                    tx.write("b", f"k{n}", n)
                acknowledged[f"k{n}"] = tx.commit_ts
        daemon.kill()
    with DaemonProcess(data_dir) as daemon:
        with Statehouse(daemon.addr) as client:
            for key, commit_ts in acknowledged.items():
                for agent in ("a", "b"):
                    state = client.get_state(agent, key)
                    assert (state.value, state.commit_ts) == (int(key[1:]), commit_ts)


@pytest.mark.parametrize("local", [True, False], ids=["local socket", "grpc"])
def test_sigterm_while_committing_loses_nothing_acknowledged(data_dir: Path, local: bool) -> None:
    acknowledged: list[tuple[str, int]] = []
    failures: list[Exception] = []
    started = threading.Barrier(5)

    def agent(daemon: DaemonProcess, name: str) -> None:
        # retry=None: once the daemon stops, each agent's next commit fails at once.
        with Statehouse(daemon.addr, timeout=10, retry=None, local=local) as client:
            started.wait()
            for n in range(10_000):
                try:
                    with client.begin_transaction() as tx:
                        tx.write(name, f"k{n}", n)
                except StatehouseError as exc:
                    failures.append(exc)
                    return
                acknowledged.append((f"{name}/k{n}", tx.commit_ts))

    daemon = DaemonProcess(data_dir).start()
    threads = [threading.Thread(target=agent, args=(daemon, f"agent{i}")) for i in range(4)]
    for t in threads:
        t.start()
    started.wait()
    while len(acknowledged) < 100:  # let commits flow, then stop mid-stream
        threads[0].join(0.01)
    assert daemon.stop() == 0
    for t in threads:
        t.join()
    # A stopping daemon's CANCELLED reaches the SDK as UNAVAILABLE too (statehouse.exceptions).
    assert all(getattr(f, "code", "") == "UNAVAILABLE" for f in failures), failures
    with DaemonProcess(data_dir) as daemon, Statehouse(daemon.addr) as client:
        for path, commit_ts in acknowledged:
            agent_id, key = path.split("/")
            assert client.get_state(agent_id, key).commit_ts == commit_ts


def test_port_in_use_exits_with_a_clear_message(tmp_path: Path) -> None:
    fresh = tmp_path / "new-data"  # a start that fails does not leave a directory it created
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "rpc", "--addr", f"127.0.0.1:{port}", "--data-dir", str(fresh)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "add_port.cc" not in result.stderr  # only the daemon's own words, not gRPC's core
    assert result.stderr.splitlines()[-1].startswith("statehoused: cannot listen")
    assert not fresh.exists()


def test_http_port_in_use_exits_3_and_off_serves_no_endpoint(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "rpc", "--addr", "127.0.0.1:0", "--http-addr", f"127.0.0.1:{port}",
             "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
    assert result.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port} for HTTP" in result.stderr
    with DaemonProcess(data_dir, "--http-addr", "off") as daemon, Statehouse(daemon.addr) as client:
        assert client.health() == "ok"
        (listening,) = daemon.events("server.listening")
        assert listening["http_addr"] is None and listening["http_port"] is None
        assert daemon.http_port == 0


def test_locked_data_dir_exits_with_a_clear_message(data_dir: Path) -> None:
    with DaemonProcess(data_dir):
        result = subprocess.run(
            [sys.executable, "-m", "rpc", "--addr", "127.0.0.1:0", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 4
    assert "in use by another statehoused" in result.stderr


def test_help_documents_every_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rpc", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for flag in (
        "--addr",
        "STATEHOUSE_ADDR",
        "--data-dir",
        "STATEHOUSE_DATA_DIR",
        "--max-value-bytes",
        "--txn-timeout-ms",
    ):
        assert flag in result.stdout


def test_bad_flag_value_is_a_usage_error(data_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rpc", "--data-dir", str(data_dir), "--max-value-bytes", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--max-value-bytes" in result.stderr


def test_transaction_lifecycle_is_logged_as_json(data_dir: Path) -> None:
    with DaemonProcess(data_dir, "--txn-timeout-ms", "1") as daemon:
        with Statehouse(daemon.addr) as client:
            # The SDK opens a transaction with its commit: one txn.commit line, no txn.begin.
            with client.begin_transaction(timeout_ms=5000) as tx:
                tx.write("a", "k", 1)
                tx.write("a", "j", 2)
        with grpc.insecure_channel(daemon.addr) as channel:
            stub = pb_grpc.StatehouseServiceStub(channel)
            aborted = stub.BeginTransaction(pb.BeginTransactionRequest(timeout_ms=5000)).txn_id
            stub.Abort(pb.AbortRequest(txn_id=aborted))
            expired = stub.BeginTransaction(pb.BeginTransactionRequest()).txn_id  # the 1 ms default
            time.sleep(0.01)  # let that timeout pass: expiry is what is tested
            with pytest.raises(grpc.RpcError) as info:
                stub.Commit(pb.CommitRequest(txn_id=expired))
            assert info.value.code() == grpc.StatusCode.ABORTED
    assert [e["txn_id"] for e in daemon.events("txn.begin")] == [aborted, expired]
    begin = daemon.events("txn.begin")[0]
    assert begin["timeout_ms"] == 5000 and begin["level"] == "info"
    commit = daemon.events("txn.commit")[0]
    assert commit["txn_id"] == tx.txn_id and commit["commit_ts"] == tx.commit_ts
    assert commit["ops"] == 2 and commit["duration_ms"] >= 0 and "timestamp" in commit
    assert [e["txn_id"] for e in daemon.events("txn.abort")] == [aborted]
    assert [e["txn_id"] for e in daemon.events("txn.expire")] == [expired]
    # The gRPC server runs on uvloop's loop (a dependency on this platform), and says so.
    assert daemon.events("server.listening")[0]["event_loop"] == "uvloop"


def _listening_line(data_dir: Path, env: dict[str, str]) -> dict[str, object]:
    """The server.listening line of a daemon started with exactly `env`, which is then stopped."""
    process = subprocess.Popen(
        [sys.executable, "-m", "rpc", "--addr", "127.0.0.1:0", "--http-addr", "off",
         "--data-dir", str(data_dir), "--log-format", "json"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if b'"server.listening"' in line:
                return dict(orjson.loads(line))
        raise AssertionError(f"the daemon exited ({process.wait()}) without listening")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_the_daemon_serves_on_grpcs_polling_engine_unless_told_otherwise(data_dir: Path) -> None:
    # rpc/__init__.py turns gRPC's EventEngine listener off (docs/performance.md, "gRPC's
    # EventEngine listener"), before grpc is imported; a GRPC_EXPERIMENTS of the user's own wins.
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    assert _listening_line(data_dir, env)["grpc_experiments"] == "-event_engine_listener"
    mine = {**env, "GRPC_EXPERIMENTS": "-event_engine_dns"}
    assert _listening_line(data_dir, mine)["grpc_experiments"] == "-event_engine_dns"
    # operations.md's way back to the EventEngine: the variable set, empty.
    documented = "GRPC_EXPERIMENTS= .venv/bin/statehoused --data-dir ./data"
    assert documented in (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert _listening_line(data_dir, {**env, "GRPC_EXPERIMENTS": ""})["grpc_experiments"] == ""


def test_daemon_keeps_serving_when_its_stderr_goes_away(data_dir: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rpc",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
            "--log-format",
            "json",
        ],
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        port = 0
        for line in process.stderr:
            if b'"server.listening"' in line:
                port = int(line.split(b'"port":')[1].split(b",")[0])
                break
        process.stderr.close()  # nobody reads the logs any more: writes get EPIPE
        with Statehouse(f"127.0.0.1:{port}") as client:
            for n in range(5):
                with client.begin_transaction() as tx:
                    tx.write("a", "k", n)
            assert client.get_state("a", "k").value == 4
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        process.kill()
        process.wait()


def test_unusable_data_dir_and_bad_env_values_exit_with_documented_codes(tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    result = subprocess.run(
        [sys.executable, "-m", "rpc", "--addr", "127.0.0.1:0", "--data-dir", str(a_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 4, result.stderr
    assert "cannot open data directory" in result.stderr
    for var, value in [("STATEHOUSE_LOG_LEVEL", "verbose"), ("STATEHOUSE_SYNC_METHOD", "never")]:
        result = subprocess.run(
            [sys.executable, "-m", "rpc", "--data-dir", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, var: value},
        )
        assert result.returncode == 2, (var, result.stderr)
        assert var in result.stderr


def test_entering_a_started_daemon_process_does_not_start_another(data_dir: Path) -> None:
    daemon = DaemonProcess(data_dir).start()
    with daemon as entered:
        assert entered is daemon
        with pytest.raises(RuntimeError, match="started already"):
            daemon.start()
    assert daemon.process is not None and daemon.process.returncode == 0
