"""storage/upgrade.py: a data directory written by statehouse 0.4.0 (schema 2, each value
stored four times) is upgraded in place by the first daemon that opens it, and answers
as it did. The directory is tests/storage/data/schema2-store.tar.gz, written by 0.4.0 itself
(tests/storage/data/make_schema2_store.py); the answers it gave are schema2-expected.json."""

from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from statehouse import Statehouse
from statehouse.testing import DaemonProcess
from storage import StorageError, Store, keys, opening, reading, upgrade
from storage.rebuild import rebuild
from storage.records import is_legacy_event
from storage.verify import verify

DATA = Path(__file__).parent / "data"


def _unpack(tmp_path: Path) -> Path:
    with tarfile.open(DATA / "schema2-store.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "store"


def _generator() -> Any:
    """tests/storage/data/make_schema2_store.py, whose `answers` asked 0.4.0 what is asked again here."""
    spec = importlib.util.spec_from_file_location("make_schema2_store", DATA / "make_schema2_store.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _schema(path: Path) -> int:
    with opening.open_read_only(path) as db:
        raw = reading.get(db, keys.META_SCHEMA)
        assert raw is not None
        return keys.read_u64(raw)


def test_a_schema_2_directory_is_upgraded_in_place_and_answers_as_before(tmp_path: Path) -> None:
    path = _unpack(tmp_path)
    assert _schema(path) == 2
    with pytest.raises(StorageError, match="start statehoused on it once"):
        verify(path)
    expected = orjson.loads((DATA / "schema2-expected.json").read_bytes())
    with DaemonProcess(path) as daemon, Statehouse(daemon.addr) as client:
        assert _generator().answers(client) == expected
        with client.begin_transaction() as tx:  # and it goes on: versions carry on from the old ones
            tx.write("planner", "memory", {"step": 6})
        assert client.get_state("planner", "memory").version == 6
        assert client.get_state("planner", "memory").commit_ts == 11  # 0.4.0 wrote 10 commits
    assert _schema(path) == 3
    report = verify(path)
    assert report.ok, report.summary()
    with opening.open_read_only(path) as db:
        assert not any(is_legacy_event(data) for _key, data in reading.scan(db, keys.EVENTS, "the log"))
    rebuild(path)
    assert verify(path).ok


def test_an_upgrade_cut_short_goes_on_from_where_it_stopped(tmp_path: Path) -> None:
    """An upgrade killed between two batches: made here by running the upgrade's own batches
    on the RocksDB handle and stopping after the first, as a kill would (the later batches
    never reach the write-ahead log)."""
    path = _unpack(tmp_path)
    db = opening.open_read_write(path)
    reached: list[int] = []

    class Stop(Exception):
        pass

    def stop_after_first(commit_ts: int) -> None:
        reached.append(commit_ts)
        raise Stop

    with pytest.raises(Stop):
        upgrade.upgrade(db, path, 2, progress=stop_after_first, batch_bytes=1)
    db.close()
    assert reached == [1]
    assert _schema(path) == 2  # not done: the schema is written last
    store = Store.open(path)  # goes on from commit_ts 2
    try:
        assert store.view().get("default", "coder", "after") is not None
    finally:
        store.close()
    assert _schema(path) == 3
    assert verify(path).ok
