"""storage/recovery.py and `statehoused verify|rebuild`: the event log is the source of truth.

Stores are made by the real daemon (or the real actors), damaged for real by
opening the stopped RocksDB directory with rocksdict, then checked and
repaired through the CLI in a subprocess.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rocksdict import Options, Rdict
from threads import run_threads

from actors import ActorConfig, ActorSystem, Mutation
from statehouse import Statehouse
from statehouse.testing import DaemonProcess
from storage import Store, StoreLockedError, keys, recovery
from storage.records import (
    StatePointer,
    VersionPointer,
    decode_event,
    encode_event,
    encode_state,
    encode_version,
)

W = 10.0


# --- a store made by the real daemon --------------------------------------------------------


@dataclass
class Model:
    """What the clients were told: every key's latest (value, version, commit_ts) and the counts."""

    latest: dict[tuple[str, str, str], tuple[Any, int, int]]
    versions: int
    last_commit_ts: int

    def record(self, ns: str, agent: str, key: str, value: Any, commit_ts: int) -> None:
        old = self.latest.get((ns, agent, key))
        self.latest[(ns, agent, key)] = (value, 1 if old is None else old[1] + 1, commit_ts)
        self.versions += 1
        self.last_commit_ts = commit_ts


def _commit(client: Statehouse, model: Model, writes: list[tuple[str, str, str, Any]], namespace: str) -> int:
    """One transaction; a value of None deletes. Returns and records its commit_ts."""
    with client.begin_transaction(namespace=namespace) as tx:
        for ns, agent, key, value in writes:
            if value is None:
                tx.delete(agent, key, namespace=ns)
            else:
                tx.write(agent, key, value, namespace=ns)
    commit_ts = tx.commit_ts
    assert commit_ts is not None
    for ns, agent, key, value in writes:
        model.record(ns, agent, key, value, commit_ts)
    return commit_ts


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Model]:
    """A data dir written over three daemon runs: clean stop, restart, SIGKILL (WAL recovery)."""
    data = tmp_path_factory.mktemp("template") / "data"
    model = Model({}, 0, 0)
    with DaemonProcess(data) as daemon, Statehouse(daemon.addr, namespace="alpha") as client:
        for n in range(5):
            _commit(client, model, [("alpha", "planner", "goal", {"step": n})], "alpha")
            _commit(client, model, [("alpha", "coder", f"file{n % 2}", f"v{n}")], "alpha")
        # One transaction, two namespaces and three agents, atomically.
        _commit(
            client,
            model,
            [("alpha", "planner", "goal", "done"), ("beta", "critic", "note", [1, 2]), ("beta", "x", "ü", 1)],
            "alpha",
        )
        with client.begin_transaction() as tx:
            pass  # an empty commit: writes no event, so the log stays gap-free
        assert tx.commit_ts == model.last_commit_ts
    with DaemonProcess(data) as daemon, Statehouse(daemon.addr, namespace="alpha") as client:
        _commit(client, model, [("alpha", "coder", "file0", None)], "alpha")  # a delete (tombstone)
        _commit(
            client, model, [("alpha", "coder", "file0", "again"), ("beta", "critic", "note", None)], "beta"
        )
    daemon = DaemonProcess(data).start()
    with Statehouse(daemon.addr, namespace="alpha") as client:
        _commit(client, model, [("gamma", "planner", "goal", {"after": "kill"})], "gamma")
        _commit(client, model, [("alpha", "planner", "goal", "final")], "alpha")
    daemon.kill()
    return data, model


@pytest.fixture
def store_copy(template: tuple[Path, Model], tmp_path: Path) -> tuple[Path, Model]:
    source, model = template
    data = tmp_path / "data"
    shutil.copytree(source, data)
    return data, copy.deepcopy(model)


def dump(data: Path) -> dict[bytes, bytes]:
    """Every key and value of a stopped store."""
    with recovery.open_read_only(data) as db:
        it = db.iter()
        it.seek_to_first()
        found = {}
        while it.valid():
            found[it.key()] = it.value()
            it.next()
    return found


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rpc", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def damage(data: Path, change: Callable[[Any], None]) -> None:
    """Open the stopped store's RocksDB directly and change it."""
    db = Rdict(str(data), Options(raw_mode=True))
    try:
        change(db)
    finally:
        db.close()


def check_served(data: Path, model: Model) -> None:
    """A daemon on `data` serves exactly the model, and new commits continue where it left off."""
    with DaemonProcess(data) as daemon, Statehouse(daemon.addr) as client:
        for (ns, agent, key), (value, version, commit_ts) in model.latest.items():
            state = client.get_state(agent, key, namespace=ns)
            assert (state.exists, state.version, state.commit_ts) == (value is not None, version, commit_ts)
            if value is not None:
                assert state.value == value
        history = [client.get_state_at_version("planner", "goal", v, namespace="alpha").value for v in (1, 6)]
        assert history == [{"step": 0}, "done"]
        replayed = [e.commit_ts for e in client.replay("coder", namespace="alpha")]
        assert replayed == sorted(replayed) and len(replayed) == 7
        _commit(client, model, [("alpha", "planner", "goal", "next")], "alpha")
        assert model.latest[("alpha", "planner", "goal")][2] == model.last_commit_ts
        state = client.get_state("planner", "goal", namespace="alpha")
        assert (state.version, state.commit_ts) == model.latest[("alpha", "planner", "goal")][1:]
    report = recovery.verify(data)
    assert report.ok, report.summary()
    assert report.last_commit_ts == model.last_commit_ts


# --- verify on healthy stores ---------------------------------------------------------------


def test_verify_passes_on_a_healthy_store_and_counts_what_the_clients_wrote(
    store_copy: tuple[Path, Model],
) -> None:
    data, model = store_copy
    report = recovery.verify(data)
    assert report.ok, report.summary()
    assert report.divergence is None
    assert report.events == report.last_commit_ts == model.last_commit_ts == 15
    assert report.keys == len(model.latest) == 6
    assert report.deleted == sum(1 for value, _, _ in model.latest.values() if value is None) == 1
    assert report.versions == model.versions == 18
    # Agent slices: one per (commit, agent touched); the cross-namespace commits touched 3 and 2.
    assert report.agent_events == 18
    result = cli("verify", "--data-dir", str(data))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "ok: 15 events, 6 keys (1 deleted), 18 versions, 18 agent events, last commit_ts 15"
    ]


def test_verify_opens_the_store_read_only(store_copy: tuple[Path, Model]) -> None:
    data, _ = store_copy
    before = {p.name: p.read_bytes() for p in data.iterdir() if p.name != "rocksdict-config.json"}
    assert recovery.verify(data).ok
    after = {p.name: p.read_bytes() for p in data.iterdir() if p.name != "rocksdict-config.json"}
    assert after == before  # not even the WAL left by the SIGKILL was replayed into a new file


def test_verify_checks_a_snapshot_before_it_is_restored(store_copy: tuple[Path, Model]) -> None:
    data, model = store_copy
    with DaemonProcess(data) as daemon, Statehouse(daemon.addr) as client:
        _commit(client, model, [("alpha", "planner", "goal", "snap")], "alpha")
        info = client.create_snapshot()
    snapshot = Path(info.path)
    assert not (snapshot / "LOCK").exists()  # a checkpoint has none: verify must cope
    result = cli("verify", "--data-dir", str(snapshot))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(
        f"ok: 16 events, 6 keys (1 deleted), 19 versions, 19 agent events, last commit_ts {info.commit_ts}"
    )
    assert info.commit_ts == 16


def test_verify_reads_the_data_dir_from_the_environment(store_copy: tuple[Path, Model]) -> None:
    data, _ = store_copy
    result = cli("verify", env={"STATEHOUSE_DATA_DIR": str(data)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: 15 events")


def test_help_of_both_commands() -> None:
    for command in ("verify", "rebuild"):
        result = cli(command, "--help")
        assert result.returncode == 0
        assert f"statehoused {command}" in result.stdout
        for text in ("--data-dir", "STATEHOUSE_DATA_DIR", "--progress-every", "event log"):
            assert text in result.stdout, (command, text)


def test_a_missing_data_dir_is_refused_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    for command in ("verify", "rebuild"):
        result = cli(command, "--data-dir", str(missing))
        assert result.returncode == 4
        assert "is not a Statehouse data directory" in result.stderr
    assert not missing.exists()


# --- damage, named by verify, repaired by rebuild --------------------------------------------


def _last_ts(db: Any) -> int:
    return keys.read_u64(db[keys.META_LAST_COMMIT_TS])


@dataclass
class Damage:
    change: Callable[[Any], None]
    table: str
    where: str
    expected: str  # a fragment of the divergence's expected text
    found: str  # a fragment of its found text


DAMAGE = {
    "state record deleted": Damage(
        lambda db: db.delete(keys.state_key("alpha", "planner", "goal")),
        "STATE",
        "namespace='alpha' agent='planner' key='goal'",
        "version 7, commit_ts 15, the value of op",
        "nothing",
    ),
    "state record altered": Damage(
        lambda db: db.put(keys.state_key("beta", "x", "ü"), encode_state(StatePointer(1, 11, 5, 0))),
        "STATE",
        "namespace='beta' agent='x' key='ü'",
        "version 1, commit_ts 11, the value of op",
        "version 1, commit_ts 11, the value of op 5 of that event",
    ),
    "state record a tombstone too early": Damage(
        lambda db: db.put(keys.state_key("alpha", "coder", "file1"), encode_state(StatePointer(2, 10, 0, 1))),
        "STATE",
        "namespace='alpha' agent='coder' key='file1'",
        "version 2, commit_ts 8, the value of op",
        "version 2, commit_ts 10, deleted",
    ),
    "state record the log never wrote": Damage(
        lambda db: db.put(keys.state_key("alpha", "ghost", "k"), encode_state(StatePointer(1, 3, 0, 0))),
        "STATE",
        "namespace='alpha' agent='ghost' key='k'",
        "nothing",
        "version 1, commit_ts 3, the value of op 0 of that event",
    ),
    "version record deleted": Damage(
        lambda db: db.delete(keys.version_key("alpha", "coder", "file0", 2)),
        "VERSIONS",
        "namespace='alpha' agent='coder' key='file0' version=2",
        "commit_ts 6, the value of op",
        "nothing",
    ),
    "version record altered": Damage(
        lambda db: db.put(
            keys.version_key("alpha", "planner", "goal", 3), encode_version(VersionPointer(5, 7, 0))
        ),
        "VERSIONS",
        "namespace='alpha' agent='planner' key='goal' version=3",
        "commit_ts 5, the value of op",
        "commit_ts 5, the value of op 7 of that event",
    ),
    "version record beyond the latest": Damage(
        lambda db: db.put(
            keys.version_key("beta", "critic", "note", 3), encode_version(VersionPointer(16, 0, 0))
        ),
        "VERSIONS",
        "namespace='beta' agent='critic' key='note' version=3",
        "nothing",
        "commit_ts 16, the value of op 0 of that event",
    ),
    "agent event deleted": Damage(
        lambda db: db.delete(keys.agent_event_key("beta", "critic", 11)),
        "AGENT_EVENTS",
        "namespace='beta' agent='critic' commit_ts=11",
        "with 1 ops ['note' v1 written at slot 1]",
        "nothing",
    ),
    "agent event of another agent's commit": Damage(
        lambda db: db.put(
            keys.agent_event_key("alpha", "coder", 1), db[keys.agent_event_key("alpha", "planner", 1)]
        ),
        "AGENT_EVENTS",
        "namespace='alpha' agent='coder' commit_ts=1",
        "nothing",
        "bytes",
    ),
    "last_commit_ts lowered": Damage(
        lambda db: db.put(keys.META_LAST_COMMIT_TS, keys.u64(_last_ts(db) - 2)),
        "META",
        "name='last_commit_ts'",
        "15",
        "13",
    ),
    "last_commit_ts deleted": Damage(
        lambda db: db.delete(keys.META_LAST_COMMIT_TS),
        "META",
        "name='last_commit_ts'",
        "15",
        "nothing",
    ),
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_verify_names_the_damage_and_rebuild_repairs_it(store_copy: tuple[Path, Model], name: str) -> None:
    data, model = store_copy
    healthy = dump(data)
    case = DAMAGE[name]
    damage(data, case.change)

    report = recovery.verify(data)
    assert not report.ok
    assert report.divergences == 1, report.summary()
    divergence = report.divergence
    assert divergence is not None
    assert (divergence.table, divergence.where) == (case.table, case.where)
    assert case.expected in divergence.expected, divergence
    assert case.found in divergence.found, divergence

    result = cli("verify", "--data-dir", str(data))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == f"DIVERGENCE: {divergence}"
    assert "statehoused rebuild" in result.stdout

    result = cli("rebuild", "--data-dir", str(data))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rebuilt from 15 events: 6 keys, 18 versions, 18 agent events, last commit_ts 15" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("ok: 15 events")
    assert dump(data) == healthy  # byte for byte what the daemon had written
    check_served(data, model)


def test_several_divergences_are_counted_and_the_first_by_precedence_is_named(
    store_copy: tuple[Path, Model],
) -> None:
    data, _ = store_copy
    for name in ("agent event deleted", "version record deleted", "state record deleted"):
        damage(data, DAMAGE[name].change)
    report = recovery.verify(data)
    assert report.divergences == 3
    assert report.by_table == {"STATE": 1, "VERSIONS": 1, "AGENT_EVENTS": 1}
    assert report.divergence is not None and report.divergence.table == "STATE"
    assert [d.table for d in report.firsts()] == ["STATE", "VERSIONS", "AGENT_EVENTS"]


def test_rebuild_of_a_healthy_store_rewrites_it_identically(store_copy: tuple[Path, Model]) -> None:
    data, model = store_copy
    healthy = dump(data)
    result = recovery.rebuild(data)
    assert (result.events, result.state_records, result.versions, result.agent_events) == (15, 6, 18, 18)
    assert result.last_commit_ts == result.previous_last_commit_ts == 15
    assert dump(data) == healthy
    assert recovery.rebuild(data).events == 15  # and again: it only reads the log
    assert dump(data) == healthy
    check_served(data, model)


# --- a damaged log: verify says so, rebuild refuses and changes nothing --------------------


def _drop_event(db: Any) -> None:
    db.delete(keys.event_key(7))


def _bump_a_version(db: Any) -> None:
    event = decode_event(9, db[keys.event_key(9)], None)  # heads: its value stays where it is
    (op,) = event.ops
    bumped = type(op)(op.namespace, op.agent_id, op.key, op.version + 1, op.value)
    db.put(keys.event_key(9), encode_event(type(event)(9, event.txn_id, event.committed_at_ms, (bumped,))))


def _truncate_an_event(db: Any) -> None:
    db.put(keys.event_key(4), db[keys.event_key(4)][:-3])


@pytest.mark.parametrize(
    ("change", "where", "expected", "found"),
    [
        (_drop_event, "commit_ts=8", "commit_ts 7 after 6", "commit_ts 8"),
        (
            _bump_a_version,
            "commit_ts=9 namespace='alpha' agent='planner' key='goal'",
            "version 5",
            "version 6",
        ),
        (_truncate_an_event, "commit_ts=4", "a decodable event", "an undecodable record"),
    ],
    ids=["gap", "version-jump", "truncated"],
)
def test_a_damaged_log_is_named_and_rebuild_refuses_to_touch_anything(
    store_copy: tuple[Path, Model], change: Callable[[Any], None], where: str, expected: str, found: str
) -> None:
    data, _ = store_copy
    damage(data, change)
    report = recovery.verify(data)
    divergence = report.divergence
    assert divergence is not None
    assert (divergence.table, divergence.where) == ("EVENTS", where)
    assert expected in divergence.expected and found in divergence.found, divergence

    before = dump(data)
    result = cli("rebuild", "--data-dir", str(data))
    assert result.returncode == 1
    assert "the event log itself is damaged" in result.stderr
    assert f"EVENTS {where}" in result.stderr
    assert "nothing was changed" in result.stderr
    assert dump(data) == before


# --- interruption, locking ------------------------------------------------------------------


class Interrupt(Exception):
    pass


def test_an_interrupted_rebuild_is_reported_and_a_second_rebuild_completes_it(
    store_copy: tuple[Path, Model],
) -> None:
    data, model = store_copy
    healthy = dump(data)

    def stop_midway(progress: recovery.Progress) -> None:
        if progress.phase == "rebuilding" and progress.done >= 5:
            raise Interrupt

    with pytest.raises(Interrupt):  # small batches, so part of the rewrite is already in the store
        recovery.rebuild(data, progress=stop_midway, progress_every=5, batch_ops=4)
    half = [key for key in dump(data) if key[:1] == keys.VERSIONS]
    assert 0 < len(half) < 18
    report = recovery.verify(data)
    assert report.divergence is not None
    assert report.divergence.where == "name='rebuild_in_progress'"
    assert "interrupted rebuild" in report.divergence.found
    assert report.by_table["VERSIONS"] == 18 - len(half)
    with Rdict(str(data), Options(raw_mode=True)) as db:
        assert _last_ts(db) == 15  # so a daemon started anyway would not overwrite an event

    result = cli("rebuild", "--data-dir", str(data))
    assert result.returncode == 0, result.stdout + result.stderr
    assert dump(data) == healthy
    check_served(data, model)


def test_verify_and_rebuild_refuse_while_a_daemon_holds_the_data_dir(store_copy: tuple[Path, Model]) -> None:
    data, model = store_copy
    with DaemonProcess(data) as daemon, Statehouse(daemon.addr) as client:
        for command in ("verify", "rebuild"):
            result = cli(command, "--data-dir", str(data))
            assert result.returncode == 4, (command, result.stdout, result.stderr)
            assert f"data directory {data} is in use by another statehoused process" in result.stderr
            assert result.stdout == ""
        with pytest.raises(StoreLockedError, match=f"pid {daemon.process.pid}"):  # type: ignore[union-attr]
            recovery.verify(data)
        with pytest.raises(StoreLockedError, match="in use"):
            recovery.rebuild(data)
        _commit(client, model, [("alpha", "planner", "goal", "still serving")], "alpha")
    report = recovery.verify(data)
    assert report.ok, report.summary()
    assert report.last_commit_ts == model.last_commit_ts == 16


def test_verify_in_the_process_holding_the_store_refuses_and_keeps_its_lock(
    store_copy: tuple[Path, Model],
) -> None:
    data, _ = store_copy
    store = Store.open(data)
    try:
        with pytest.raises(StoreLockedError, match="open in this process"):
            recovery.verify(data)
        # POSIX locks fall when any descriptor of LOCK closes; the store must still hold it.
        probe = subprocess.run(
            [sys.executable, "-c", f"from storage import Store; Store.open({str(data)!r})"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode != 0
        assert "StoreLockedError" in probe.stderr
    finally:
        store.close()
    assert recovery.verify(data).ok


def test_a_running_verify_keeps_a_daemon_from_starting(store_copy: tuple[Path, Model]) -> None:
    data, _ = store_copy
    entered, release = threading.Event(), threading.Event()
    outcome: list[object] = []

    def slow_progress(progress: recovery.Progress) -> None:
        entered.set()
        release.wait(W)

    def run() -> None:
        outcome.append(recovery.verify(data, progress=slow_progress, progress_every=1))

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert entered.wait(W)
        result = cli("--addr", "127.0.0.1:0", "--data-dir", str(data))
        assert result.returncode == 4
        assert "in use by another statehoused" in result.stderr
    finally:
        release.set()
        thread.join(W)
    (report,) = outcome
    assert isinstance(report, recovery.Report) and report.ok


# --- a larger log: progress ------------------------------------------------------------------


def test_rebuild_of_a_large_log_prints_progress(data_dir: Path) -> None:
    store = Store.open(data_dir)
    system = ActorSystem(store, ActorConfig()).start()
    try:

        def agent(n: int) -> None:
            for i in range(750):
                txn_id, _ = system.begin(f"ns{n % 2}", None, W)
                mutations = [Mutation(f"ns{n % 2}", f"agent{n}", f"k{i % 50}", b'{"i":%d}' % i)]
                if i % 10 == 0:
                    mutations.append(Mutation("shared", "log", f"from{n}", None if i % 20 else b"1"))
                system.commit(txn_id, mutations, W)

        run_threads(agent, 4)
    finally:
        system.stop()
        store.close()
    damage(data_dir, lambda db: db.delete_range(keys.STATE, keys.VERSIONS))  # lose the whole state table

    result = cli("verify", "--data-dir", str(data_dir), "--progress-every", "1000")
    assert result.returncode == 1
    assert re.search(
        r"^DIVERGENCE: STATE namespace='ns0' agent='agent0' key='k0': expected .*, found nothing$",
        result.stdout,
        re.M,
    ), result.stdout
    assert "204 divergences (STATE 204)" in result.stdout  # 4 agents x 50 keys + 4 "shared" keys

    result = cli("rebuild", "--data-dir", str(data_dir), "--progress-every", "1000")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    rebuilding = [
        m
        for line in lines
        if (m := re.search(r"rebuilding: (\d+)/3000 events \(\d+%\), ([\d,]+) events/s", line))
    ]
    done = [int(m.group(1)) for m in rebuilding]
    assert {1000, 2000, 3000} <= set(done) and done == sorted(done) and done[-1] == 3000, lines
    assert all(int(m.group(2).replace(",", "")) > 0 for m in rebuilding)
    assert any(line.startswith("statehoused rebuild: checking log: 1000/3000 events") for line in lines), (
        lines
    )
    assert result.stdout.splitlines()[-1].startswith("ok: 3000 events, 204 keys")
