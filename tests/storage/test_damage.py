"""Damaged data is never served as if whole, and never destroyed.

Real RocksDB files, damaged for real: a store written by a real daemon is
copied, bytes are inverted in a table file, the write-ahead log or the
MANIFEST, or a file is removed; then a real daemon, the SDK's read paths,
`statehoused verify`, `rebuild` and `recover-wal` are asked about it.
Every answer is either the whole truth (what the undamaged store says) or
a clear refusal: DataLossError / DATA_LOSS, or exit code 4 at start. A
refused start changes no data file.

The sweep over damage offsets runs a few offsets by default; set
STATEHOUSE_DAMAGE_SWEEP=<n> for n evenly spread offsets (48 before a release).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rocksdict import AccessType, Rdict

from statehouse import AsyncStatehouse, DataLossError, Statehouse, StatehouseError
from statehouse.testing import DaemonProcess
from storage import keys, opening, reading
from storage.errors import DataLossError as StorageDataLoss

AGENTS = [("default", f"agent-{n}") for n in range(4)] + [("other", f"bot-{n}") for n in range(2)]
# Enough keys that STATE, which holds no values, fills blocks of its own beside META's.
KEYS = [f"k{n:02d}" for n in range(48)]
COMMITS = 1500
WORDS = (
    "agent plan step tool search result memory summary answer question note fact source page "
    "draft review check retry wait human approve reject budget token model prompt reply"
).split()
DEFAULT_OFFSETS = (0.03, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 0.99)
SWEEP = int(os.environ.get("STATEHOUSE_DAMAGE_SWEEP", "0"))
OFFSETS = tuple((n + 0.5) / SWEEP for n in range(SWEEP)) if SWEEP else DEFAULT_OFFSETS
NOT_DATA = ("LOG", "LOCK")  # RocksDB's info log and lock file: no data


def flip(file: Path, offset: int, count: int = 16) -> None:
    """Invert `count` bytes of `file` at `offset`, as a disk that lies would."""
    with open(file, "r+b") as out:
        out.seek(offset)
        data = out.read(count)
        out.seek(offset)
        out.write(bytes(b ^ 0xFF for b in data))


def data_files(path: Path) -> dict[str, str]:
    """Every data file of a data directory with a digest of its bytes."""
    return {
        file.name: hashlib.sha256(file.read_bytes()).hexdigest()
        for file in sorted(path.iterdir())
        if file.is_file() and not file.name.startswith(NOT_DATA)
    }


def table_file(path: Path) -> Path:
    (sst,) = sorted(path.glob("*.sst"))
    return sst


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rpc", *args], capture_output=True, text=True, timeout=120)


def start(path: Path) -> DaemonProcess | subprocess.CompletedProcess[str]:
    """A daemon serving `path`, or the finished process of one that refused it."""
    daemon = DaemonProcess(path, "--http-addr", "off")
    try:
        return daemon.start()
    except RuntimeError:
        assert daemon.process is not None
        stderr = b"".join(daemon.raw_stderr).decode(errors="replace")
        return subprocess.CompletedProcess(daemon.process.args, daemon.process.wait(), "", stderr)


def _value(rnd: random.Random, n: int) -> dict[str, Any]:
    return {"n": n, "text": " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(30, 70)))}


def _fill(client: Statehouse, commits: int, seed: int) -> int:
    rnd = random.Random(seed)
    last = 0
    for n in range(commits):
        namespace, agent = rnd.choice(AGENTS)
        with client.begin_transaction(namespace=namespace) as tx:
            for key in rnd.sample(KEYS, rnd.randint(1, 3)):
                if n % 25 == 24:
                    tx.delete(agent, key, namespace=namespace)
                else:
                    tx.write(agent, key, _value(rnd, n), namespace=namespace)
        assert tx.commit_ts is not None
        last = tx.commit_ts
    return last


# --- what a store says, path by path ------------------------------------------------------------


@dataclass(frozen=True)
class Lost:
    """A read path that failed with DataLossError, after delivering `delivered` (streams)."""

    delivered: tuple[Any, ...] = ()
    progress_ts: int | None = None


def _event(event: Any) -> tuple[Any, ...]:
    ops = tuple((op.key, op.version, op.value, op.deleted) for op in event.operations)
    return (event.commit_ts, event.agent_id or "", ops)


def _stream(items: Callable[[], Iterator[Any]], stop_at: int | None = None) -> Any:
    delivered: list[Any] = []
    try:
        for item in items():
            delivered.append(_event(item))
            if stop_at is not None and item.commit_ts >= stop_at:
                break
    except DataLossError as exc:
        return Lost(tuple(delivered), exc.progress_ts)
    return tuple(delivered)


def _one(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except DataLossError:
        return Lost()


def read_everything(client: Statehouse, last_ts: dict[str, int], mid: int) -> dict[str, Any]:
    """Every read path of the SDK over every agent and key: path name -> what it said."""
    seen: dict[str, Any] = {}
    for namespace, agent in AGENTS:
        where = f"{namespace}/{agent}"

        def state(r: Any) -> tuple[Any, ...]:
            return (r.value, r.version, r.commit_ts, r.exists)

        for key in KEYS:
            latest = _one(lambda: state(client.get_state(agent, key, namespace)))  # noqa: B023
            seen[f"get {where}/{key}"] = latest
            seen[f"history {where}/{key}"] = _one(
                lambda: tuple(
                    (v.version, v.commit_ts, v.value, v.deleted)
                    for v in client.key_history(agent, key, namespace=namespace)  # noqa: B023
                )
            )
            if isinstance(latest, tuple) and latest[1] > 0:
                for version in sorted({1, (latest[1] + 1) // 2, latest[1]}):
                    seen[f"version {where}/{key}@{version}"] = _one(
                        lambda: state(client.get_state_at_version(agent, key, version, namespace))  # noqa: B023
                    )
        seen[f"keys {where}"] = _one(lambda: tuple(client.list_keys(agent, namespace)))  # noqa: B023
        seen[f"keys@{mid} {where}"] = _one(
            lambda: tuple(client.list_keys(agent, namespace, at_commit_ts=mid))  # noqa: B023
        )
        seen[f"scan {where}"] = _one(
            lambda: tuple((r.key, r.value, r.version) for r in client.scan_prefix(agent, "k0", namespace))  # noqa: B023
        )
        seen[f"agent {where}"] = _one(lambda: client.get_agent_state(agent, namespace=namespace).values)  # noqa: B023
        seen[f"agent@{mid} {where}"] = _one(
            lambda: client.get_agent_state(agent, at_commit_ts=mid, namespace=namespace).values  # noqa: B023
        )
        seen[f"replay {where}"] = _stream(lambda: client.replay(agent, namespace=namespace))  # noqa: B023
        if last_ts.get(where):
            seen[f"watch {where}"] = _stream(
                lambda: client.watch(agent, start_ts=1, namespace=namespace),  # noqa: B023
                stop_at=last_ts[where],
            )
    for namespace in ("default", "other"):
        seen[f"watch {namespace}"] = _stream(
            lambda: client.watch(start_ts=1, namespace=namespace),  # noqa: B023
            stop_at=last_ts[namespace],
        )
    return seen


def check_whole_or_lost(truth: dict[str, Any], seen: dict[str, Any]) -> list[str]:
    """Paths that answered something other than the truth or DataLossError (empty: none)."""
    wrong = []
    for path, said in seen.items():
        expected = truth[path]
        if isinstance(said, Lost):
            if not isinstance(expected, tuple):
                continue  # a point read or listing: refused whole
            if said.progress_ts is not None:  # a watch: everything up to its progress, exactly
                wanted = tuple(e for e in expected if e[0] <= said.progress_ts)
                if said.delivered != wanted:
                    wrong.append(
                        f"{path}: delivered {len(said.delivered)} events up to progress_ts "
                        f"{said.progress_ts}, the truth has {len(wanted)} there"
                    )
            elif said.delivered != expected[: len(said.delivered)]:
                wrong.append(f"{path}: what came before the error is not the log's beginning")
        elif said != expected:
            wrong.append(f"{path}: answered {str(said)[:120]} instead of the truth or DATA_LOSS")
    return wrong


@dataclass
class Template:
    path: Path
    truth: dict[str, Any]
    last_commit_ts: int
    mid: int
    last_ts: dict[str, int]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """A store of 1,500 commits by a real daemon over six agents in two namespaces, stopped
    cleanly (everything in one table file), and everything its read paths say."""
    path = tmp_path_factory.mktemp("damage") / "data"
    with DaemonProcess(path, "--http-addr", "off") as daemon, Statehouse(daemon.addr) as client:
        last = _fill(client, COMMITS, seed=12)
        mid = last // 2
        last_ts: dict[str, int] = {}
        for namespace, agent in AGENTS:
            events = list(client.replay(agent, namespace=namespace))
            if events:
                last_ts[f"{namespace}/{agent}"] = events[-1].commit_ts
                last_ts[namespace] = max(last_ts.get(namespace, 0), events[-1].commit_ts)
        truth = read_everything(client, last_ts, mid)
    assert not any(isinstance(said, Lost) for said in truth.values())
    assert len(list(path.glob("*.sst"))) == 1
    return Template(path, truth, last, mid, last_ts)


def copy_of(template: Template, tmp_path: Path, name: str = "copy") -> Path:
    path = tmp_path / name
    shutil.copytree(template.path, path)
    return path


# --- a damaged table file: the sweep --------------------------------------------------------------


@pytest.mark.parametrize("fraction", OFFSETS, ids=lambda f: f"{f:.3f}")
def test_a_damaged_table_block_is_refused_or_reported_never_answered_around(
    template: Template, tmp_path: Path, fraction: float
) -> None:
    path = copy_of(template, tmp_path)
    sst = table_file(path)
    flip(sst, int(sst.stat().st_size * fraction))
    damaged = data_files(path)

    verified = cli("verify", "--data-dir", str(path))
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert "DAMAGE: " in verified.stdout and "Traceback" not in verified.stderr + verified.stdout
    assert data_files(path) == damaged  # verify reads only

    served = start(path)
    if isinstance(served, subprocess.CompletedProcess):  # the damage is where opening reads
        assert served.returncode == 4, served.stderr
        assert "cannot be opened" in served.stderr or "could not be read" in served.stderr
        assert "Traceback" not in served.stderr
        assert data_files(path) == damaged
        return
    with served as daemon, Statehouse(daemon.addr, timeout=20) as client:
        seen = read_everything(client, template.last_ts, template.mid)
    assert check_whole_or_lost(template.truth, seen) == []
    assert (path / sst.name).read_bytes() == sst.read_bytes()  # the damaged table is kept as it is


# --- a damaged block of each table, and what each read path does about it -------------------------


def _block_of(template: Template, table: bytes, scratch: Path) -> float:
    """An offset (fraction of the table file) whose damage breaks a scan of `table` in the
    middle (not its last block: the daemon reads the log's end when it opens)."""
    sst = table_file(template.path)
    size = sst.stat().st_size
    hits = []
    for step in range(1, 400):
        fraction = step / 400
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(template.path, scratch)
        flip(table_file(scratch), int(size * fraction))
        try:
            db = Rdict(str(scratch), opening.rocksdb_options(), access_type=AccessType.read_only(False))
        except Exception:
            continue
        try:
            for _ in reading.scan(db, table, "t"):
                pass
            if hits:
                break  # past the table's damaged blocks
        except StorageDataLoss:
            if _opens(db):  # not a block the table shares with what opening reads
                hits.append(fraction)
        finally:
            db.close()
    assert len(hits) >= 2, f"no block of table {table!r} found"
    return hits[0]


def _opens(db: Any) -> bool:
    """Whether what a daemon reads when it opens a store (META, the log's end) is readable."""
    try:
        for name in (keys.META_LAST_COMMIT_TS, keys.META_SCHEMA, keys.META_REBUILD_IN_PROGRESS):
            reading.get(db, name)
        reading.last_key(db, keys.EVENTS, "the end of the log")
    except StorageDataLoss:
        return False
    return True


@pytest.fixture(scope="module")
def offsets(template: Template, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    scratch = tmp_path_factory.mktemp("search") / "data"
    return {
        keys.TABLE_NAMES[table]: _block_of(template, table, scratch)
        for table in (keys.STATE, keys.VERSIONS, keys.EVENTS, keys.AGENT_EVENTS)
    }


def damaged_copy(template: Template, tmp_path: Path, offsets: dict[str, float], table: str) -> Path:
    path = copy_of(template, tmp_path)
    sst = table_file(path)
    flip(sst, int(sst.stat().st_size * offsets[table]))
    return path


def lost(seen: dict[str, Any], kind: str) -> list[str]:
    """Where the read paths of one kind ("replay", "history", "get") answered DATA_LOSS."""
    return [
        p.split(" ")[1] for p, said in seen.items() if p.startswith(kind + " ") and isinstance(said, Lost)
    ]


def read_damaged(path: Path, template: Template) -> dict[str, Any]:
    """Every read path against a daemon on the damaged `path`; each said the truth or DATA_LOSS."""
    with DaemonProcess(path, "--http-addr", "off") as daemon, Statehouse(daemon.addr) as client:
        seen = read_everything(client, template.last_ts, template.mid)
    assert check_whole_or_lost(template.truth, seen) == []
    return seen


def test_a_damaged_log_block_ends_watch_and_verify_with_the_commits_lost(
    template: Template, tmp_path: Path, offsets: dict[str, float]
) -> None:
    path = damaged_copy(template, tmp_path, offsets, "EVENTS")
    verified = cli("verify", "--data-dir", str(path))
    assert verified.returncode == 1
    line = next(line for line in verified.stdout.splitlines() if line.startswith("DAMAGE: EVENTS"))
    first, last = (int(n) for n in line.split("commit_ts ")[1].split(" could")[0].split(" to "))
    assert 1 <= first <= last < template.last_commit_ts
    assert f"no rebuild can bring back commit_ts {first} to {last}" in verified.stdout
    before = data_files(path)
    for command in (("rebuild",), ("rebuild", "--into", str(tmp_path / "new"))):
        rebuilt = cli(*command, "--data-dir", str(path))
        assert rebuilt.returncode == 1 and "the event log itself is damaged" in rebuilt.stderr
        assert "nothing was changed" in rebuilt.stderr
    assert data_files(path) == before and not (tmp_path / "new").exists()

    with DaemonProcess(path, "--http-addr", "off") as daemon, Statehouse(daemon.addr) as client:
        seen = read_everything(client, template.last_ts, template.mid)
        # The namespace watch reads the global log: it stops exactly before the damage.
        namespace = next(ns for ns in ("default", "other") if isinstance(seen[f"watch {ns}"], Lost))
        lost = seen[f"watch {namespace}"]
        assert lost.progress_ts == first - 1
        assert all(event[0] < first for event in lost.delivered)
        # A watch started after the damage is not refused: it never reads the damaged part.
        with client.watch(start_ts=last + 1, namespace=namespace) as after:
            assert next(iter(after)).commit_ts > last
    assert check_whole_or_lost(template.truth, seen) == []


def test_a_damaged_agent_index_fails_replay_and_the_whole_log_rebuilds_it_into_a_new_store(
    template: Template, tmp_path: Path, offsets: dict[str, float]
) -> None:
    path = damaged_copy(template, tmp_path, offsets, "AGENT_EVENTS")
    seen = read_damaged(path, template)
    replays = lost(seen, "replay")
    assert replays, "the damage reached no agent's replay"
    assert any(isinstance(seen[f"watch {where}"], Lost) for where in replays)

    verified = cli("verify", "--data-dir", str(path))
    assert verified.returncode == 1 and "DAMAGE: AGENT_EVENTS" in verified.stdout
    assert "the event log is whole" in verified.stdout and "--into NEW_DIR" in verified.stdout
    before = data_files(path)
    in_place = cli("rebuild", "--data-dir", str(path))
    assert in_place.returncode == 1 and "holds damaged blocks" in in_place.stderr
    assert data_files(path) == before

    new = tmp_path / "rebuilt"
    rebuilt = cli("rebuild", "--data-dir", str(path), "--into", str(new))
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert f"last commit_ts {template.last_commit_ts}" in rebuilt.stdout and "\nok: " in rebuilt.stdout
    assert data_files(path) == before  # the damaged store is left as it was
    with DaemonProcess(new, "--http-addr", "off") as daemon, Statehouse(daemon.addr) as client:
        assert read_everything(client, template.last_ts, template.mid) == template.truth
        with client.begin_transaction() as tx:
            tx.write("agent-0", "after", 1)
        assert tx.commit_ts == template.last_commit_ts + 1


def test_a_damaged_version_history_fails_history_and_time_travel_not_silently_empty(
    template: Template, tmp_path: Path, offsets: dict[str, float]
) -> None:
    path = damaged_copy(template, tmp_path, offsets, "VERSIONS")
    seen = read_damaged(path, template)
    histories = lost(seen, "history")
    assert histories, "the damage reached no key's history"
    # get_state of those keys is served from the state table, which is whole.
    for where in histories:
        assert seen[f"get {where}"] == template.truth[f"get {where}"]
    verified = cli("verify", "--data-dir", str(path))
    assert verified.returncode == 1 and "DAMAGE: VERSIONS" in verified.stdout


def test_a_damaged_state_table_fails_reads_at_once_and_only_the_commits_that_need_it(
    template: Template, tmp_path: Path, offsets: dict[str, float]
) -> None:
    path = damaged_copy(template, tmp_path, offsets, "STATE")
    with DaemonProcess(path, "--http-addr", "off") as daemon, Statehouse(daemon.addr, timeout=30) as client:
        seen = read_everything(client, template.last_ts, template.mid)
        assert check_whole_or_lost(template.truth, seen) == []
        broken = lost(seen, "get")
        whole = [p.split(" ")[1] for p in seen if p.startswith("get ") and p.split(" ")[1] not in broken]
        assert broken and whole
        namespace, agent, key = broken[0].split("/")
        started = time.monotonic()
        with pytest.raises(DataLossError) as caught:
            client.get_state(agent, key, namespace)
        assert time.monotonic() - started < 5.0  # not retried for the client's timeout
        assert caught.value.code == "DATA_LOSS" and "could not be read" in str(caught.value)
        # A commit that must read the damaged version fails alone, saying nothing was written.
        with pytest.raises(DataLossError, match="nothing was committed"):
            with client.begin_transaction(namespace=namespace) as tx:
                tx.write(agent, key, "new")
        ok_namespace, ok_agent, ok_key = whole[0].split("/")
        with client.begin_transaction(namespace=ok_namespace) as tx:
            tx.write(ok_agent, ok_key, "new")
        assert tx.commit_ts == template.last_commit_ts + 1
        # The operator hears of it: an error line per refused call, and the commit that failed.
        assert any(r.get("method") == "GetState" for r in daemon.events("rpc.data_loss"))
        assert [r["code"] for r in daemon.events("txn.failed")] == ["DATA_LOSS"]

        async def read_async() -> None:
            async with AsyncStatehouse(daemon.addr) as aclient:
                with pytest.raises(DataLossError):
                    await aclient.get_state(agent, key, namespace)

        import asyncio

        asyncio.run(read_async())
    # statehousectl says so too, with its exit code for daemon errors.
    with DaemonProcess(path, "--http-addr", "off") as daemon:
        shown = subprocess.run(
            [sys.executable, "-m", "statehouse.cli", "--addr", daemon.addr, "--namespace", namespace,
             "get", agent, key],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert shown.returncode == 4 and "DATA_LOSS" in shown.stderr, shown.stderr


# --- damage to the files around the tables --------------------------------------------------------


def _refused(path: Path, *needles: str) -> str:
    before = data_files(path) if path.exists() else None
    served = start(path)
    assert isinstance(served, subprocess.CompletedProcess), "the daemon served a damaged directory"
    assert served.returncode == 4, served.stderr
    assert "Traceback" not in served.stderr
    for needle in needles:
        assert needle in served.stderr, served.stderr
    if before is not None:
        assert data_files(path) == before  # nothing deleted or rewritten
    return served.stderr


def test_a_missing_current_file_is_refused_not_opened_as_a_new_store(
    template: Template, tmp_path: Path
) -> None:
    path = copy_of(template, tmp_path)
    (path / "CURRENT").unlink()
    said = _refused(path, "no CURRENT file", "cannot be opened as a whole store", "Nothing in it was changed")
    assert table_file(path).name in said or ".sst" in said  # it names what it holds
    verified = cli("verify", "--data-dir", str(path))
    assert verified.returncode == 1 and "DAMAGE: STORE" in verified.stdout


@pytest.mark.parametrize(
    "damage",
    ["remove a table file", "cut a table file short", "flip a table file's footer", "flip the MANIFEST"],
)
def test_damage_around_the_tables_refuses_the_start_and_changes_nothing(
    template: Template, tmp_path: Path, damage: str
) -> None:
    path = copy_of(template, tmp_path)
    if damage == "remove a table file":
        table_file(path).unlink()
    elif damage == "cut a table file short":
        sst = table_file(path)
        os.truncate(sst, sst.stat().st_size - 100)
    elif damage == "flip a table file's footer":
        sst = table_file(path)
        flip(sst, sst.stat().st_size - 40)
    else:
        (manifest,) = path.glob("MANIFEST-*")
        flip(manifest, manifest.stat().st_size // 2, 8)
    _refused(path, "cannot be opened as a whole store", "Nothing in it was changed")
    verified = cli("verify", "--data-dir", str(path))
    assert verified.returncode == 1 and "DAMAGE: STORE" in verified.stdout
    assert "Traceback" not in verified.stderr + verified.stdout


def test_a_directory_is_created_only_when_new_or_empty(tmp_path: Path) -> None:
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    _refused(foreign, "not empty and holds no Statehouse store", "notes.txt")
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    other = tmp_path / "another-rocksdb"  # a RocksDB database of some other program
    db = Rdict(str(other), opening.rocksdb_options(create=True))
    db[b"user:1"] = b"theirs"
    db.close()
    _refused(other, "a RocksDB database that is not a Statehouse store")
    assert not (other / "DURABLE_COMMIT_TS").exists()
    leftover = tmp_path / "failed-start"  # what a start that died while creating leaves
    leftover.mkdir()
    (leftover / "LOG").write_text("")
    (leftover / "LOCK").write_text("")
    for path in (tmp_path / "new", leftover):
        with DaemonProcess(path, "--http-addr", "off") as daemon, Statehouse(daemon.addr) as client:
            with client.begin_transaction() as tx:
                tx.write("a", "k", 1)
            assert tx.commit_ts == 1


# --- the write-ahead log ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A store killed with SIGKILL after 600 acknowledged commits, all still only in its WAL."""
    path = tmp_path_factory.mktemp("crashed") / "data"
    daemon = DaemonProcess(path, "--http-addr", "off").start()
    with Statehouse(daemon.addr) as client:
        last = _fill(client, 600, seed=3)
    daemon.kill()
    assert not list(path.glob("*.sst"))
    return path, last


def crashed_copy(crashed: tuple[Path, int], tmp_path: Path) -> tuple[Path, Path, int]:
    source, last = crashed
    path = tmp_path / "data"
    shutil.copytree(source, path)
    (wal,) = [file for file in path.glob("*.log") if file.stat().st_size]
    return path, wal, last


def test_a_damaged_wal_is_refused_and_recover_wal_says_and_does_exactly_what_it_cuts(
    crashed: tuple[Path, int], tmp_path: Path
) -> None:
    path, wal, last = crashed_copy(crashed, tmp_path)
    flip(wal, wal.stat().st_size // 10)
    said = _refused(path, "write-ahead log", wal.name, f"commits up to at least commit_ts {last}",
                    "recover-wal")  # fmt: skip
    reached = int(said.split("the store ends at commit_ts ")[1].split(".")[0])
    assert 0 < reached < last // 5  # acknowledged commits after the damage were not dropped silently
    verified = cli("verify", "--data-dir", str(path))
    assert verified.returncode == 1 and "DAMAGE: STORE" in verified.stdout and wal.name in verified.stdout

    before = data_files(path)
    damaged_wal = wal.read_bytes()
    dry = cli("recover-wal", "--data-dir", str(path))
    assert dry.returncode == 1 and "Nothing was changed" in dry.stdout
    assert f"cut the store back to commit_ts {reached}, losing commits {reached + 1} to {last}" in dry.stdout
    assert data_files(path) == before

    done = cli("recover-wal", "--data-dir", str(path), "--accept-loss")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"the store now ends at commit_ts {reached}; lost commits {reached + 1} to {last}" in done.stdout
    (kept,) = tmp_path.glob("data.wal-*")
    assert (kept / wal.name).read_bytes() == damaged_wal  # kept for whoever wants to salvage more
    assert "lost commits" in (kept / "CUT_BACK.txt").read_text()
    assert cli("verify", "--data-dir", str(path)).returncode == 0
    with DaemonProcess(path, "--http-addr", "off") as daemon, Statehouse(daemon.addr) as client:
        with client.begin_transaction() as tx:
            tx.write("agent-0", "after", 1)
        assert tx.commit_ts == reached + 1


def test_a_torn_last_write_is_dropped_but_damage_before_it_or_a_cut_behind_the_mark_is_not(
    crashed: tuple[Path, int], tmp_path: Path
) -> None:
    # A power cut in the middle of the last write leaves that record cut short. Its commit
    # was never acknowledged (the fsync did not return), so the durable mark, written only
    # after the fsync, still names the commit before it.
    path, wal, last = crashed_copy(crashed, tmp_path / "torn")
    os.truncate(wal, wal.stat().st_size - 100)
    (path / "DURABLE_COMMIT_TS").write_text(f"{last - 1:020d}\n")
    with DaemonProcess(path, "--http-addr", "off") as daemon, Statehouse(daemon.addr) as client:
        assert client.get_agent_state("agent-0").commit_ts == last - 1
    # The same cut, but behind commits the mark says were on disk: refused.
    path, wal, last = crashed_copy(crashed, tmp_path / "cut")
    os.truncate(wal, wal.stat().st_size - 100)
    _refused(path, f"ends at commit_ts {last - 1}, but commits up to {last} were on disk", "recover-wal")
    # Garbage over the last record (not a clean cut) is damage: refused too.
    path, wal, last = crashed_copy(crashed, tmp_path / "garbage")
    flip(wal, wal.stat().st_size - 40)
    _refused(path, "write-ahead log", "recover-wal")


def test_a_removed_wal_is_caught_by_the_durable_mark(crashed: tuple[Path, int], tmp_path: Path) -> None:
    path, wal, last = crashed_copy(crashed, tmp_path)
    wal.unlink()
    _refused(path, f"ends at commit_ts 0, but commits up to {last} were on disk", "*.log")
    into = cli("rebuild", "--data-dir", str(path), "--into", str(tmp_path / "new"))
    assert into.returncode == 1 and "recover-wal" in into.stderr  # no quiet way around the mark
    assert not (tmp_path / "new").exists()
    verified = cli("verify", "--data-dir", str(path))
    assert (
        verified.returncode == 1
        and f"DAMAGE: STORE: the store ends at commit_ts 0, but commits up to {last}" in verified.stdout
    )
    assert "recover-wal" in verified.stdout
    dry = cli("recover-wal", "--data-dir", str(path))
    assert dry.returncode == 1 and f"losing commits 1 to {last}" in dry.stdout
    done = cli("recover-wal", "--data-dir", str(path), "--accept-loss")
    assert done.returncode == 0, done.stdout + done.stderr
    with DaemonProcess(path, "--http-addr", "off") as daemon, Statehouse(daemon.addr) as client:
        with client.begin_transaction() as tx:
            tx.write("agent-0", "after", 1)
        assert tx.commit_ts == 1


def test_recover_wal_on_a_whole_store_changes_nothing(template: Template, tmp_path: Path) -> None:
    path = copy_of(template, tmp_path)
    before = data_files(path)
    done = cli("recover-wal", "--data-dir", str(path), "--accept-loss")
    assert done.returncode == 0 and "nothing to recover" in done.stdout
    assert data_files(path) == before


def test_sdk_reads_never_retry_data_loss(
    template: Template, tmp_path: Path, offsets: dict[str, float]
) -> None:
    """DATA_LOSS is not UNAVAILABLE: the SDK raises it at once, and it is a StatehouseError."""
    assert issubclass(DataLossError, StatehouseError) and DataLossError("m").code == "DATA_LOSS"
    path = damaged_copy(template, tmp_path, offsets, "VERSIONS")
    with DaemonProcess(path, "--http-addr", "off") as daemon, Statehouse(daemon.addr, timeout=60) as client:
        broken = None
        for namespace, agent in AGENTS:
            for key in KEYS:
                try:
                    client.key_history(agent, key, namespace=namespace)
                except DataLossError:
                    broken = (namespace, agent, key)
                    break
            if broken:
                break
        assert broken is not None
        started = time.monotonic()
        with pytest.raises(DataLossError):
            client.key_history(broken[1], broken[2], namespace=broken[0])
        assert time.monotonic() - started < 5.0
        errors = [r for r in daemon.log_lines if r.get("event") == "rpc.internal_error"]
        assert errors == []


# --- several write-ahead log files, several table files ----------------------------------------------

# A store whose 1,200 commits sit in several write-ahead log files (a small write buffer, and
# memtables kept unflushed), written with the store's own batches, then a crash: os._exit.
_MANY_LOGS = """
import os, sys
from pathlib import Path
from rocksdict import Rdict, WriteBatch, WriteOptions
from storage import durable, keys, opening
from storage.records import Event, EventOp
from storage.derive import add_event
path = Path(sys.argv[1])
options = opening.rocksdb_options(create=True)
options.set_write_buffer_size(256 * 1024)
options.set_max_write_buffer_number(8)
options.set_min_write_buffer_number_to_merge(8)
db = Rdict(str(path), options)
db.put(keys.META_SCHEMA, keys.u64(keys.SCHEMA_VERSION))
synced = WriteOptions()
synced.sync = True
versions = {}
for ts in range(1, 1201):
    target = ("ns", f"agent-{ts % 3}", f"k{ts % 10}")
    versions[target] = versions.get(target, 0) + 1
    batch = WriteBatch(raw_mode=True)
    add_event(batch, Event(ts, f"ns:{ts:024x}", ts, (EventOp(*target, versions[target], os.urandom(400)),)))
    batch.put(keys.META_LAST_COMMIT_TS, keys.u64(ts))
    db.write(batch, synced)
durable.write_mark(path, 1200)
os._exit(0)
"""


@pytest.fixture(scope="module")
def many_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "data"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", _MANY_LOGS, str(path)], check=True, cwd=root, timeout=120)
    assert len([f for f in path.glob("*.log") if f.stat().st_size]) >= 3
    return path


@pytest.mark.parametrize(
    "damage", ["remove the first", "remove a middle one", "cut the first in half", "remove the last"]
)
def test_a_log_file_removed_or_cut_among_several_is_never_a_silent_gap(
    many_logs: Path, tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "data"
    shutil.copytree(many_logs, path)
    logs = sorted(f for f in path.glob("*.log") if f.stat().st_size)
    if damage == "remove the first":
        logs[0].unlink()
    elif damage == "remove a middle one":
        logs[1].unlink()
    elif damage == "cut the first in half":
        os.truncate(logs[0], logs[0].stat().st_size // 2)
    else:
        logs[-1].unlink()
    said = _refused(path, "Nothing was changed")
    assert "has a gap" in said or "were on disk before" in said, said
    verified = cli("verify", "--data-dir", str(path))  # the gap, or the commits past the mark
    assert verified.returncode == 1, verified.stdout
    assert "DAMAGE: STORE" in verified.stdout or "DIVERGENCE: EVENTS" in verified.stdout, verified.stdout
    recovered = cli("recover-wal", "--data-dir", str(path), "--accept-loss")
    if "has a gap" in said:  # no cut of the log's end can help: say so, change nothing
        assert recovered.returncode == 4 and "cannot help" in recovered.stderr, recovered.stderr
    else:
        assert recovered.returncode == 0 and "lost commits" in recovered.stdout


def test_damage_under_the_log_in_an_older_table_file_is_named_and_verify_ends(tmp_path: Path) -> None:
    """An older table file whose keys span the log's (other tables' keys on both sides of it)
    with a damaged block there: scans of the log fail where point reads work. verify walks the
    whole log by point reads, names the damage where it is, and finishes."""
    from storage import recovery
    from storage.records import Event, EventOp, encode_event

    built = tmp_path / "built"
    db = Rdict(str(built), opening.rocksdb_options(create=True))
    db[keys.META_SCHEMA] = keys.u64(keys.SCHEMA_VERSION)
    for n in range(200):
        db[keys.version_key("ns", "a", "k", n + 1)] = random.Random(n).randbytes(300)
        db[keys.agent_event_key("ns", "a", n + 1)] = random.Random(-n).randbytes(300)
    db.flush()
    for ts in range(1, 101):
        db[keys.event_key(ts)] = encode_event(
            Event(ts, f"t{ts}", ts, (EventOp("ns", "b", f"k{ts}", 1, b"1"),))
        )
    db[keys.META_LAST_COMMIT_TS] = keys.u64(100)
    db.flush()
    db.close()
    older = sorted(built.glob("*.sst"))[0]
    for step in range(80):
        path = tmp_path / f"try{step}"
        shutil.copytree(built, path)
        flip(path / older.name, older.stat().st_size * step // 80)
        with opening.open_read_only(path) as copy:
            try:
                next(iter(reading.scan(copy, keys.EVENTS, "the log")))
                continue
            except StorageDataLoss as exc:
                if exc.after is not None or reading.get(copy, keys.event_key(1)) is None:
                    continue
        break  # a scan of the log fails at its start, and a point read of its first commit works
    else:
        pytest.fail("no offset of the older table file breaks the log's scan")
    started = time.monotonic()
    report = recovery.verify(path)
    assert time.monotonic() - started < 30
    assert report.events == 100 and not report.damaged("EVENTS"), report.summary()
    assert report.damaged("VERSIONS") or report.damaged("AGENT_EVENTS"), report.summary()


def test_a_damaged_durable_mark_is_named_and_the_rest_is_still_verified(
    template: Template, tmp_path: Path
) -> None:
    path = copy_of(template, tmp_path)
    (path / "DURABLE_COMMIT_TS").write_text("garbage")
    _refused(path, "DURABLE_COMMIT_TS is damaged")
    verified = cli("verify", "--data-dir", str(path))
    assert verified.returncode == 1 and "DAMAGE: MARK" in verified.stdout
    assert f"last commit_ts {template.last_commit_ts}" in verified.stdout  # the store was walked
    assert "remove" in verified.stdout and "DURABLE_COMMIT_TS" in verified.stdout
    (path / "DURABLE_COMMIT_TS").unlink()
    assert cli("verify", "--data-dir", str(path)).returncode == 0


def test_a_reopen_that_finds_damage_refuses_reads_and_writes_at_once(tmp_path: Path) -> None:
    """After a failed write the store reopens itself; if the reopen finds damage, every read and
    write answers DATA_LOSS at once, not UNAVAILABLE (retried) nor after a wait. The failed write
    is stood in for by setting the store's failure directly (tests/storage/test_disk_full.py causes one
    for real); the damage is real."""
    from storage import Event, EventOp, Store

    store = Store.open(tmp_path / "data")
    store.append([Event(1, "ns:" + "0" * 24, 0, (EventOp("ns", "a", "k", 1, b"1"),))])
    store._failed = "write failed: (stand-in for ENOSPC)"
    (tmp_path / "data" / "DURABLE_COMMIT_TS").write_text("garbage")
    with pytest.raises(StorageDataLoss, match="refused"):
        store.reopen(drain_seconds=0.1)
    for _ in range(2):  # within the back-off too
        with pytest.raises(StorageDataLoss, match="nothing was committed"):
            store.reopen(drain_seconds=0.1)
    started = time.monotonic()
    with pytest.raises(StorageDataLoss):
        store.view()
    assert time.monotonic() - started < 1.0
    with pytest.raises(StorageDataLoss):
        store.append([Event(2, "ns:" + "1" * 24, 0, (EventOp("ns", "a", "k", 2, b"2"),))])
    store.close()
