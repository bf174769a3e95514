"""`--pin-cpu`: the daemon's Python threads keep to one CPU, RocksDB's keep them all; the
daemon names that CPU on Session streams, and a sync client keeps its I/O thread off it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from rpc import affinity
from rpc.server import Daemon, DaemonConfig
from statehouse import Statehouse
from statehouse._affinity import KEY, KeepOff, boot_id, daemon_cpu
from statehouse._proto import statehouse_pb2 as pb
from statehouse.testing import DaemonProcess

USABLE = os.sched_getaffinity(0)


def work(addr: str) -> None:
    """Commits in several namespaces and a read: actors, ledger and pools all start threads."""
    with Statehouse(addr, timeout=30) as client:
        for n in range(6):
            with client.begin_transaction(namespace=f"ns{n}") as tx:
                tx.write("a", "k", {"n": n})
        assert client.get_state("a", "k", namespace="ns5").value == {"n": 5}
        assert client.get_state_at_version("a", "k", 1, namespace="ns2").value == {"n": 2}


def task_cpus(pid: int) -> dict[int, tuple[str, set[int]]]:
    """Each thread of process `pid`: its name as the OS knows it, and the CPUs it may run on."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            found[int(tid)] = (name, os.sched_getaffinity(int(tid)))
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return found


def test_the_daemons_threads_keep_to_the_cpu_it_names_and_the_caller_gets_its_own_back(
    data_dir: Path,
) -> None:
    cpu = max(USABLE)
    before = {thread.ident for thread in threading.enumerate()}
    daemon = Daemon(DaemonConfig(data_dir=data_dir, addr="127.0.0.1:0", pin_cpu=str(cpu))).start()
    try:
        assert daemon.cpu == cpu
        assert os.sched_getaffinity(0) == USABLE  # the thread that started it is unchanged
        work(f"127.0.0.1:{daemon.port}")
        started = [thread for thread in threading.enumerate() if thread.ident not in before]
        names = {thread.name for thread in started}
        assert "rpc-loop" in names
        for actor in ("Ledger-", "NamespaceActor-"):  # Pykka numbers its threads process-wide
            assert any(name.startswith(actor) for name in names), names
        client_threads = {"statehouse-io"}  # the SDK's I/O loop, started by this test's client
        for thread in started:
            if thread.name not in client_threads and thread.native_id is not None:
                assert os.sched_getaffinity(thread.native_id) == {cpu}, thread.name
    finally:
        daemon.stop()


def test_off_leaves_every_thread_where_the_os_puts_it(data_dir: Path) -> None:
    before = {thread.ident for thread in threading.enumerate()}
    daemon = Daemon(DaemonConfig(data_dir=data_dir, addr="127.0.0.1:0", pin_cpu="off")).start()
    try:
        assert daemon.cpu is None
        work(f"127.0.0.1:{daemon.port}")
        for thread in threading.enumerate():
            if thread.ident not in before and thread.native_id is not None:
                assert os.sched_getaffinity(thread.native_id) == USABLE, thread.name
    finally:
        daemon.stop()


def test_a_daemon_process_keeps_rocksdbs_threads_on_every_cpu_and_says_where_it_runs(
    tmp_path: Path,
) -> None:
    cpu = min(USABLE)
    with DaemonProcess(tmp_path / "data", "--pin-cpu", str(cpu)) as daemon:
        work(daemon.addr)
        assert daemon.process is not None
        tasks = task_cpus(daemon.process.pid)
        (listening,) = daemon.events("server.listening")
    assert listening["pin_cpu"] == cpu
    rocksdb = [cpus for name, cpus in tasks.values() if name.startswith("rocksdb")]
    assert rocksdb and all(cpus == USABLE for cpus in rocksdb)  # flushes and compactions
    grpc_core = [cpus for name, cpus in tasks.values() if name == "event_engine"]
    assert grpc_core and all(cpus == {cpu} for cpus in grpc_core)
    pinned = [tid for tid, (_, cpus) in tasks.items() if cpus == {cpu}]
    assert len(pinned) >= len(tasks) // 2, tasks  # most of them: loop, actors, ledger, pools, grpc


def test_auto_picks_one_cpu_the_process_may_use() -> None:
    chosen = affinity.choose("auto")
    if len(USABLE) < 2:
        assert chosen is None  # one CPU: nothing to choose
    else:
        assert chosen in USABLE


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("9999", "CPU 9999 is not one this process may use (it may use "),
        ("two", "'two' is not auto, off or a CPU number"),
        ("-1", "'-1' is not auto, off or a CPU number"),
    ],
)
def test_a_cpu_it_cannot_use_is_a_usage_error_before_anything_opens(
    tmp_path: Path, value: str, message: str
) -> None:
    data_dir = tmp_path / "data"
    for args, env in ((["--pin-cpu", value], {}), ([], {"STATEHOUSE_PIN_CPU": value})):
        result = subprocess.run(
            [sys.executable, "-m", "rpc", "--data-dir", str(data_dir), "--addr", "127.0.0.1:0", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **env},
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert not data_dir.exists()


# The client's side: a daemon names its CPU on Session streams, and a `Statehouse`
# client on the same machine keeps its I/O thread off it (statehouse._affinity).


def session_cpu_metadata(addr: str) -> list[str]:
    """The `statehouse-cpu` values of a Session stream's initial metadata, after one call on it."""
    request = pb.SessionRequest(id=1, method="Health", request=pb.HealthRequest().SerializeToString())
    with grpc.insecure_channel(addr) as channel:
        session = channel.stream_stream(
            "/statehouse.v1.StatehouseService/Session",
            request_serializer=pb.SessionRequest.SerializeToString,
            response_deserializer=pb.SessionResponse.FromString,
        )
        call = session(iter([request]))
        answers = list(call)
        assert [answer.id for answer in answers] == [1] and answers[0].code == 0
        return [value for key, value in call.initial_metadata() if key == KEY]


def test_a_pinned_daemon_names_its_cpu_on_its_session_streams_and_an_unpinned_one_does_not(
    tmp_path: Path,
) -> None:
    cpu = min(USABLE)
    with DaemonProcess(tmp_path / "pinned", "--pin-cpu", str(cpu)) as daemon:
        named = session_cpu_metadata(daemon.addr)
    assert named == [f"{boot_id()} {cpu}"]
    with DaemonProcess(tmp_path / "off", "--pin-cpu", "off") as daemon:
        assert session_cpu_metadata(daemon.addr) == []


CLIENT = """
import asyncio, os, sys, threading
from statehouse import AsyncStatehouse, Statehouse

if sys.argv[2] == "sync":
    with Statehouse(sys.argv[1], timeout=30) as client:
        with client.begin_transaction() as tx:
            tx.write("a", "k", 1)
        (io,) = [thread for thread in threading.enumerate() if thread.name == "statehouse-io"]
        print(sorted(os.sched_getaffinity(io.native_id)), sorted(os.sched_getaffinity(0)))
else:
    async def main() -> None:
        async with AsyncStatehouse(sys.argv[1], timeout=30) as client:
            async with client.begin_transaction() as tx:
                tx.write("a", "k", 2)
            print(sorted(os.sched_getaffinity(0)))

    asyncio.run(main())
"""


def client_cpus(addr: str, kind: str) -> str:
    """What CLIENT prints: the CPUs of its threads after a commit (a process of its own, so
    that its I/O thread starts there)."""
    result = subprocess.run(
        [sys.executable, "-c", CLIENT, addr, kind], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_sync_clients_io_thread_keeps_off_a_local_daemons_cpu_and_nothing_else_moves(
    tmp_path: Path,
) -> None:
    cpu = min(USABLE)
    rest = sorted(USABLE - {cpu}) or sorted(USABLE)  # one CPU: nowhere else to go
    with DaemonProcess(tmp_path / "data", "--pin-cpu", str(cpu)) as daemon:
        assert client_cpus(daemon.addr, "sync") == f"{rest} {sorted(USABLE)}"
        # An AsyncStatehouse's calls run on the application's loop: its thread stays put.
        assert client_cpus(daemon.addr, "async") == f"{sorted(USABLE)}"
    with DaemonProcess(tmp_path / "off", "--pin-cpu", "off") as daemon:
        assert client_cpus(daemon.addr, "sync") == f"{sorted(USABLE)} {sorted(USABLE)}"


@pytest.mark.parametrize(
    ("metadata", "cpu"),
    [
        ([(KEY, f"{boot_id()} 3")], 3),
        ([("other", "x"), (KEY, f"{boot_id()} 0".encode())], 0),
        ([(KEY, "another-machine 3")], None),  # a CPU number of another kernel means nothing here
        ([(KEY, f"{boot_id()} three")], None),
        ([(KEY, f"{boot_id()}")], None),
        ([("other", "x")], None),
        (None, None),
    ],
)
def test_a_daemons_cpu_is_taken_only_from_a_daemon_under_this_kernel(
    metadata: list[tuple[str, str | bytes]] | None, cpu: int | None
) -> None:
    assert daemon_cpu(metadata) == cpu


def test_keeping_a_thread_off_cpus_never_leaves_it_none() -> None:
    seen: list[set[int]] = []

    def run() -> None:
        keep = KeepOff()
        first, last = min(USABLE), max(USABLE)
        keep.avoid(first)
        seen.append(os.sched_getaffinity(0))
        keep.avoid(first)  # named again: nothing changes
        seen.append(os.sched_getaffinity(0))
        keep.avoid(last)  # on a 2-CPU machine nothing would be left: it stays
        seen.append(os.sched_getaffinity(0))
        seen.append(keep.avoided)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    first, last = min(USABLE), max(USABLE)
    if len(USABLE) == 1:
        assert seen == [USABLE, USABLE, USABLE, set()]
    else:
        after_last = USABLE - {first, last} or USABLE - {first}
        assert seen[:3] == [USABLE - {first}, USABLE - {first}, after_last]
        assert seen[3] == ({first, last} if len(USABLE) > 2 else {first})
    assert os.sched_getaffinity(0) == USABLE  # the test's own thread was never moved
