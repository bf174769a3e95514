"""The daemon's log writer: a line per write, except the ledger's group, whose lines leave
in one write (actors.loglines); a failing stream drops lines, never the caller."""

from __future__ import annotations

import io
import re
import sys
import threading
from pathlib import Path

import orjson
import pytest
import structlog
from helpers import wait_until

from actors import loglines
from rpc import logs
from rpc.logs import _StderrLogger
from statehouse import ConflictError, Statehouse
from statehouse.testing import DaemonProcess


class Recording(io.BytesIO):
    """A stream that keeps each write it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> int:  # type: ignore[override]
        written = super().write(data)  # raises ValueError once closed
        self.writes.append(bytes(data))
        return written


def test_a_groups_lines_leave_in_one_write() -> None:
    stream = Recording()
    logger = _StderrLogger(stream, binary=True)
    logger.msg(b'{"event":"alone"}')
    with loglines.together():
        logger.msg(b'{"n":1}')
        with loglines.together():  # nested: written with the outer block
            logger.msg(b'{"n":2}')
        logger.msg(b'{"n":3}')
        assert len(stream.writes) == 1
    logger.msg(b'{"event":"after"}')
    assert stream.writes == [
        b'{"event":"alone"}\n',
        b'{"n":1}\n{"n":2}\n{"n":3}\n',
        b'{"event":"after"}\n',
    ]


def test_held_lines_are_written_when_the_block_fails_and_other_threads_are_not_held() -> None:
    stream = Recording()
    logger = _StderrLogger(stream, binary=True)
    with pytest.raises(RuntimeError), loglines.together():
        logger.msg(b"held")
        other = threading.Thread(target=logger.msg, args=(b"other thread",))
        other.start()
        other.join()
        assert stream.writes == [b"other thread\n"]
        raise RuntimeError("the block failed")
    assert stream.writes == [b"other thread\n", b"held\n"]


def test_a_closed_stream_drops_the_group_not_the_caller() -> None:
    stream = Recording()
    stream.close()
    logger = _StderrLogger(stream, binary=True)
    with loglines.together():
        logger.msg(b"lost")
    assert stream.writes == []  # BytesIO refused the write after close: dropped, nothing raised


def test_a_per_commit_line_is_the_line_structlog_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    """loglines.info (the ledger's txn.commit) skips structlog's chain, not its output: the same
    keys in the same order, and nothing when info lines are filtered out."""
    stream = Recording()
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(stream))  # .buffer is `stream`; not a TTY
    fields = {"txn_id": "default:0a1b", "commit_ts": 7, "ops": 3, "duration_ms": 1.25, "group": 2}
    try:
        logs.configure("info", "json")
        log = structlog.get_logger("statehouse.ledger")
        log.info("txn.commit", **fields)
        loglines.info(log, "txn.commit", **fields)
        logs.configure("warning", "json")
        quiet = structlog.get_logger("statehouse.ledger")
        loglines.info(quiet, "txn.commit", **fields)
        quiet.info("txn.commit", **fields)
    finally:
        logs.configure("warning", "console")  # as tests/conftest.py leaves it
    lines = [orjson.loads(line) for write in stream.writes for line in write.splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line.pop("timestamp"))
    assert list(lines[1].items()) == list(lines[0].items())
    assert lines[0] == {**fields, "event": "txn.commit", "level": "info"}


def test_every_commit_of_concurrent_agents_has_its_own_whole_line(tmp_path: Path) -> None:
    """16 agents commit at once, so the ledger writes groups: each commit still gets one
    txn.commit line that parses as JSON on its own, with its commit_ts."""
    with DaemonProcess(tmp_path / "data") as daemon, Statehouse(daemon.addr) as client:
        go = threading.Barrier(16)
        done: dict[str, int] = {}

        def agent(n: int) -> None:
            go.wait()
            for step in range(10):
                with client.begin_transaction() as tx:
                    tx.write(f"agent-{n}", "step", step)
                done[tx.txn_id] = tx.commit_ts

        agents = [threading.Thread(target=agent, args=(n,)) for n in range(16)]
        for thread in agents:
            thread.start()
        for thread in agents:
            thread.join()
        assert len(done) == 160
        # The daemon's lines arrive on a pipe: wait for the last commit's line.
        last = max(done.values())
        wait_until(lambda: any(e["commit_ts"] == last for e in daemon.events("txn.commit")), "the last line")
        logged = {e["txn_id"]: e["commit_ts"] for e in daemon.events("txn.commit")}
    assert {txn_id: logged.get(txn_id) for txn_id in done} == done
    assert max(e["group"] for e in daemon.events("txn.commit")) > 1  # groups were written


def test_a_conflict_is_logged_with_every_field_the_client_gets(tmp_path: Path) -> None:
    """`txn.conflict` names the conflict as the client's ConflictError does (Conflict.fields)."""
    with DaemonProcess(tmp_path / "data") as daemon, Statehouse(daemon.addr) as client:
        with client.begin_transaction() as tx:
            tx.write("a", "k", 1)
        with client.begin_transaction() as tx:
            tx.delete("a", "k")
        with pytest.raises(ConflictError) as raised:
            with client.begin_transaction() as tx:
                tx.expect("a", "k", 1)
                tx.write("a", "k", 2)
        wait_until(lambda: daemon.events("txn.conflict"), "the conflict's log line")
        (line,) = daemon.events("txn.conflict")
    error = raised.value
    assert line["txn_id"].startswith("default:")
    assert {name: line[name] for name in ("namespace", "agent_id", "key", "expected_version")} == {
        "namespace": error.namespace,
        "agent_id": error.agent_id,
        "key": error.key,
        "expected_version": 1,
    }
    assert (line["actual_version"], line["exists"]) == (error.actual_version, error.exists) == (2, False)
