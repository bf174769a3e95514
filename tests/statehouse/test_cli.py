"""statehousectl as a user runs it: a subprocess against a real daemon, checking output and exit codes."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from statehouse import Statehouse
from statehouse.testing import DaemonProcess

ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with DaemonProcess(tmp_path_factory.mktemp("cli") / "data") as process:
        with Statehouse(process.addr, namespace="cli") as client:
            with client.begin_transaction() as tx:
                tx.write("planner", "goal", {"text": "book a flight", "budget": 400})
                tx.write("planner", "step", 1)
                tx.write("planner", "plan/a", [1, 2])
            with client.begin_transaction() as tx:
                tx.write("planner", "step", 2)
                tx.delete("planner", "goal")
        yield process


def ctl(*args: str, addr: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "statehouse.cli"]
    if addr is not None:
        command += ["--addr", addr, "-n", "cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)


def ok(daemon: DaemonProcess, *args: str) -> str:
    result = ctl(*args, addr=daemon.addr)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_health_and_version(daemon: DaemonProcess) -> None:
    assert ok(daemon, "health").startswith("ok")
    assert json.loads(ok(daemon, "health", "--json")) == {"status": "ok", "addr": daemon.addr}
    assert "statehoused" in ok(daemon, "version")
    answer = json.loads(ok(daemon, "version", "--json"))
    assert answer["daemon"]["version"] == answer["cli"]["version"] == "0.5.0"


def test_global_options_may_follow_the_command(daemon: DaemonProcess) -> None:
    after = ctl("get", "planner", "step", "--json", "--addr", daemon.addr, "-n", "cli", "--timeout=10")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["value"] == 2
    assert after.stdout == ctl("get", "planner", "step", "--json", addr=daemon.addr).stdout
    # What follows "--" is an argument, whatever it looks like.
    missing = ctl("--addr", daemon.addr, "-n", "cli", "get", "planner", "--", "--addr")
    assert missing.returncode == 1 and "--addr" in missing.stderr, missing.stderr


def test_get(daemon: DaemonProcess) -> None:
    out = ok(daemon, "get", "planner", "step")
    assert "value      2\n" in out and "version    2\n" in out
    assert "commit_ts  2  (logical commit counter, not a time)" in out
    assert json.loads(ok(daemon, "get", "planner", "step", "--json")) == {
        "agent": "planner",
        "key": "step",
        "value": 2,
        "version": 2,
        "commit_ts": 2,
    }
    old = json.loads(ok(daemon, "get", "planner", "goal", "--version", "1", "--json"))
    assert old["value"] == {"text": "book a flight", "budget": 400}
    assert 'value      {"budget":400,"text":"book a flight"}' in ok(
        daemon, "get", "planner", "goal", "--version", "1"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["get", "planner", "goal"],
        ["get", "planner", "nope", "--json"],
        ["get", "planner", "step", "--version", "9"],
    ],
)
def test_missing_key_exits_1(daemon: DaemonProcess, args: list[str]) -> None:
    result = ctl(*args, addr=daemon.addr)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("statehousectl: ") and "not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_keys_and_scan(daemon: DaemonProcess) -> None:
    assert ok(daemon, "keys", "planner") == "plan/a\nstep\n"
    assert json.loads(ok(daemon, "keys", "planner", "--prefix", "plan", "--json")) == ["plan/a"]
    assert json.loads(ok(daemon, "keys", "planner", "--at", "1", "--json")) == ["goal", "plan/a", "step"]
    assert ok(daemon, "scan", "planner", "plan").splitlines() == [
        "KEY     VERSION  COMMIT_TS  VALUE",
        "plan/a  1        1          [1,2]",
    ]
    entries = json.loads(ok(daemon, "scan", "planner", "", "--at", "1", "--json"))
    assert [(e["key"], e["value"], e["commit_ts"]) for e in entries] == [
        ("goal", {"text": "book a flight", "budget": 400}, 1),
        ("plan/a", [1, 2], 1),
        ("step", 1, 1),
    ]


def test_history_newest_first_with_tombstones(daemon: DaemonProcess) -> None:
    lines = ok(daemon, "history", "planner", "goal").splitlines()
    assert lines[0].split() == ["VERSION", "COMMIT_TS", "COMMITTED_AT", "(UTC)", "VALUE"]
    assert lines[1].split()[:2] == ["2", "2"] and lines[1].endswith("(deleted)")
    assert lines[2].split()[:2] == ["1", "1"] and lines[2].endswith('{"budget":400,"text":"book a flight"}')
    versions = json.loads(ok(daemon, "history", "planner", "goal", "--json"))
    assert [(v["version"], v["deleted"], v["value"]) for v in versions] == [
        (2, True, None),
        (1, False, {"text": "book a flight", "budget": 400}),
    ]
    assert all(v["committed_at"].endswith("Z") and v["committed_at_ms"] > 0 for v in versions)
    assert len(json.loads(ok(daemon, "history", "planner", "goal", "--limit", "1", "--json"))) == 1
    assert ctl("history", "planner", "never", addr=daemon.addr).returncode == 1


def test_replay_and_tail(daemon: DaemonProcess) -> None:
    lines = ok(daemon, "replay", "planner").splitlines()
    assert len(lines) == 5
    assert (
        lines[0].startswith("[commit_ts 1] ") and 'goal = {"budget":400,"text":"book a flight"}' in lines[0]
    )
    assert lines[-1].startswith("[commit_ts 2] ") and lines[-1].endswith("goal deleted  (version 2)")
    events = [
        json.loads(line) for line in ok(daemon, "replay", "planner", "--from", "2", "--json").splitlines()
    ]
    assert [e["commit_ts"] for e in events] == [2]
    assert events[0]["operations"] == [
        {"key": "step", "value": 2, "version": 2, "deleted": False},
        {"key": "goal", "value": None, "version": 2, "deleted": True},
    ]
    assert [
        json.loads(line)["commit_ts"]
        for line in ok(daemon, "replay", "planner", "--to", "1", "--json").splitlines()
    ] == [1]
    last = [json.loads(line) for line in ok(daemon, "tail", "planner", "--lines", "1", "--json").splitlines()]
    assert [e["commit_ts"] for e in last] == [2]
    assert ok(daemon, "tail", "planner", "--prefix", "plan").splitlines()[0].startswith("[commit_ts 1] ")
    assert len(ok(daemon, "tail", "planner", "--prefix", "plan").splitlines()) == 1
    assert len(ok(daemon, "tail", "planner", "--from", "2").splitlines()) == 2


def test_dump(daemon: DaemonProcess) -> None:
    assert json.loads(ok(daemon, "dump", "planner")) == {"step": 2, "plan/a": [1, 2]}
    compact = ok(daemon, "dump", "planner", "--at", "1", "--json")
    assert compact.count("\n") == 1
    assert json.loads(compact) == {
        "goal": {"text": "book a flight", "budget": 400},
        "step": 1,
        "plan/a": [1, 2],
    }


def test_snapshot(daemon: DaemonProcess) -> None:
    answer = json.loads(ok(daemon, "snapshot", "--json"))
    assert Path(answer["path"]).is_dir() and answer["commit_ts"] >= 2
    assert "(logical commit counter, not a time)" in ok(daemon, "snapshot")


@pytest.mark.parametrize(
    "args",
    [["get", "planner"], ["frobnicate"], ["get", "a", "k", "--version", "zero"], ["keys", "a", "--at", "0"]],
)
def test_bad_usage_exits_2(daemon: DaemonProcess, args: list[str]) -> None:
    result = ctl(*args, addr=daemon.addr)
    assert result.returncode == 2
    assert "Usage:" in result.stderr and "Traceback" not in result.stderr


def test_help_documents_exit_codes() -> None:
    result = ctl("--help")
    assert result.returncode == 0
    for line in ["0    ok", "1    not found", "2    usage", "3    unavailable", "130  interrupted"]:
        assert line in result.stdout


def test_unreachable_daemon_exits_3() -> None:
    result = ctl("--timeout", "2", "get", "planner", "step", addr="127.0.0.1:1")
    assert result.returncode == 3
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("statehousectl: no statehoused at 127.0.0.1:1 (connection refused): start one")


def test_addr_from_environment(daemon: DaemonProcess) -> None:
    env = {**os.environ, "STATEHOUSE_ADDR": daemon.addr}
    command = [sys.executable, "-m", "statehouse.cli", "health", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(result.stdout)["addr"] == daemon.addr


def test_actors_shows_the_health_endpoints_view(daemon: DaemonProcess) -> None:
    out = ok(daemon, "--http-addr", daemon.http_addr, "actors")
    lines = out.splitlines()
    assert re.match(r"ledger  ok  last_commit_ts \d+  queue 0$", lines[0]), lines[0]
    header = next(line for line in lines if line.startswith("NAMESPACE"))
    assert header.split() == [
        "NAMESPACE",
        "STATE",
        "OPEN_TXNS",
        "OLDEST_TXN_S",
        "MAILBOX",
        "COMMITS",
        "IDLE_S",
    ]
    (row,) = [line.split() for line in lines if line.startswith("cli ")]
    assert row[:6] == ["cli", "ok", "0", "-", "0", "2"]
    assert re.search(r"\d+ live actors?, 0 stuck; 0 watches open", lines[-1])
    report = json.loads(ok(daemon, "--http-addr", daemon.http_addr, "actors", "--json"))
    (cli_actor,) = [ns for ns in report["namespaces"] if ns["namespace"] == "cli"]
    assert cli_actor["state"] == "ok" and cli_actor["commits"] == 2
    assert report["ledger"]["state"] == "ok"
    env = {**os.environ, "STATEHOUSE_HTTP_ADDR": daemon.http_addr}
    command = [sys.executable, "-m", "statehouse.cli", "actors", "--json"]
    from_env = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert from_env.returncode == 0 and "namespaces" in json.loads(from_env.stdout)


def test_actors_asks_the_daemon_where_its_endpoint_is(daemon: DaemonProcess, tmp_path: Path) -> None:
    """Without --http-addr, `actors` reads the endpoint of the daemon at --addr, on whatever port."""
    env = {k: v for k, v in os.environ.items() if k != "STATEHOUSE_HTTP_ADDR"}
    command = [sys.executable, "-m", "statehouse.cli", "--addr", daemon.addr, "actors", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ledger"]["state"] == "ok"
    with Statehouse(daemon.addr) as client:
        assert client.http_addr() == daemon.http_addr
    with DaemonProcess(tmp_path / "plain", "--http-addr", "off") as without:
        with Statehouse(without.addr) as client:
            assert client.http_addr() is None
        command[4] = without.addr
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 3 and result.stdout == ""
        assert (
            result.stderr.strip()
            == f"statehousectl: statehoused at {without.addr} runs without an HTTP endpoint"
        )


def test_actors_without_the_health_endpoint_exits_3() -> None:
    result = ctl("--http-addr", "127.0.0.1:1", "actors")
    assert result.returncode == 3 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("statehousectl: statehoused's HTTP endpoint at 127.0.0.1:1 is unavailable")


def lines_of(stream: IO[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """Lines read from `stream` by a thread, so a test can wait for one with a timeout."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def test_tail_follow_prints_new_commits_and_ctrl_c_exits_130(daemon: DaemonProcess) -> None:
    command = [sys.executable, "-m", "statehouse.cli", "--addr", daemon.addr, "-n", "cli"]
    follower = subprocess.Popen(
        [*command, "tail", "follower", "-f", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None and follower.stderr is not None
        (out, _), (err, err_reader) = lines_of(follower.stdout), lines_of(follower.stderr)
        assert "following agent 'follower'" in err.get(timeout=30)  # the watch is registered
        with Statehouse(daemon.addr, namespace="cli") as client:
            for n in (1, 2):
                with client.begin_transaction() as tx:
                    tx.write("follower", "count", n)
                event = json.loads(out.get(timeout=30))
                assert event["commit_ts"] == tx.commit_ts
                assert event["operations"] == [{"key": "count", "value": n, "version": n, "deleted": False}]
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=30) == 130
        err_reader.join(timeout=30)
        rest = []
        while not err.empty():
            rest.append(err.get())
        assert "Traceback" not in "".join(rest)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
