"""A client with no daemon at its address: within seconds, an error that says so and how
to start one, a public exception class, and one log line while it retries."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import statehouse
from statehouse import _retry
from statehouse.testing import DaemonProcess

ROOT = Path(__file__).resolve().parents[2]
FIRST_CONNECT = statehouse.RetryPolicy().first_connect


def nothing_listening() -> str:
    """An address on which nothing listens (a port just bound and let go), and at which no
    client of this process has reached a daemon before: a port an earlier test's daemon
    had counts as a daemon restarting (statehouse._retry.Reach)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            addr = f"127.0.0.1:{sock.getsockname()[1]}"
        if addr not in _retry._reached:
            return addr


def check_said(error: BaseException, addr: str) -> None:
    assert f"no statehoused at {addr} (connection refused)" in str(error)
    assert "make run" in str(error)
    assert isinstance(error, statehouse.UnavailableError)
    cls = type(error)
    assert cls.__module__ == "statehouse.exceptions" and not cls.__name__.startswith("_"), cls
    assert getattr(statehouse, cls.__name__) is cls  # exported


def test_a_client_with_no_daemon_says_so_within_seconds(caplog: pytest.LogCaptureFixture) -> None:
    addr = nothing_listening()
    caplog.set_level(logging.WARNING, logger="statehouse")
    with statehouse.Statehouse(addr) as client:  # the default 30 s timeout
        started = time.monotonic()
        with pytest.raises(statehouse.UnavailableError) as info:
            client.get_state("agent", "k")
        took = time.monotonic() - started
        print(f"no daemon: get_state failed after {took:.1f} s")
        check_said(info.value, addr)
        assert FIRST_CONNECT <= took < FIRST_CONNECT + 5, took
        # A commit says the same, as a transaction's public class.
        with pytest.raises(statehouse.TransactionUnavailableError) as txn_info:
            with client.begin_transaction() as tx:
                tx.write("agent", "k", 1)
        check_said(txn_info.value, addr)
    said = [r.getMessage() for r in caplog.records if r.name == "statehouse"]
    assert len(said) == 1, said  # one line for the client, not one per attempt
    assert f"no daemon answers at {addr} (connection refused); retrying for up to 5 s" in said[0]


def test_a_client_told_to_wait_for_its_daemon_waits_for_it(tmp_path: Path) -> None:
    """A daemon starting alongside its agents: first_connect keeps the client retrying."""
    addr = nothing_listening()
    policy = statehouse.RetryPolicy(first_connect=60)
    with statehouse.Statehouse(addr, timeout=60, retry=policy) as client:
        started = time.monotonic()
        answer: list[object] = []
        waiting = threading.Thread(target=lambda: answer.append(client.health()))
        waiting.start()
        time.sleep(FIRST_CONNECT + 1)  # past the default first_connect: this client still waits
        assert waiting.is_alive()
        with DaemonProcess(tmp_path / "data", "--addr", addr):
            waiting.join(60)
        assert answer == ["ok"], f"waited {time.monotonic() - started:.1f} s"


def test_an_async_client_with_no_daemon_says_so_within_seconds() -> None:
    addr = nothing_listening()

    async def main() -> tuple[BaseException, float]:
        async with statehouse.AsyncStatehouse(addr) as client:
            started = time.monotonic()
            try:
                await client.get_state("agent", "k")
            except statehouse.StatehouseError as exc:
                return exc, time.monotonic() - started
        raise AssertionError("get_state succeeded with no daemon")

    error, took = asyncio.run(main())
    print(f"no daemon (async): get_state failed after {took:.1f} s")
    check_said(error, addr)
    assert took < FIRST_CONNECT + 5, took


def test_the_quickstart_example_with_no_daemon_says_what_to_do() -> None:
    addr = nothing_listening()
    env = {**os.environ, "STATEHOUSE_ADDR": addr}
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "research_agent.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    print(f"research_agent.py with no daemon exited {run.returncode} after {took:.1f} s")
    assert run.returncode != 0
    assert f"no statehoused at {addr} (connection refused)" in run.stderr, run.stderr
    assert "make run" in run.stderr
    assert "_Txn" not in run.stderr and "_Already" not in run.stderr
    assert took < 30, took  # not the client's 30 s timeout
