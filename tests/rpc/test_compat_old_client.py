"""The published client `statehouse==0.1.1` works unchanged against our daemon.

Its import name is ours too, so it lives in its own virtualenv (`.venv-compat`,
built once and reused) and talks to a real `statehoused` from a subprocess
running tests/rpc/compat_script.py. This module checks what that client saw and
crosses over with our SDK: values written one way read back the other.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import statehouse
from statehouse import Statehouse
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from statehouse.testing import DaemonProcess

REPO = Path(__file__).resolve().parents[2]
COMPAT_VENV = REPO / ".venv-compat"
SCRIPT = Path(__file__).with_name("compat_script.py")
OLD_CLIENT = "statehouse==0.1.1"
# The wheel asks for protobuf>=4.25 and grpcio>=1.60, but its generated code
# was made by protoc 6.31.1 and grpcio-tools 1.78.0 and refuses, at import, a
# runtime older than that. Newer runtimes are accepted (protobuf 7.x checks
# only "runtime not older than gencode"; checked with 7.36.2), so these are
# floors that keep pip from choosing an old runtime, not pins.
RUNTIME_FLOORS = ("protobuf>=6.31.1", "grpcio>=1.78.0")
# The 0.1.1 wheel says `__version__ = "0.1.0"`; the dist metadata is the truth.
_PROBE = (
    "import importlib.metadata, statehouse.client; "
    "print(importlib.metadata.version('statehouse')); print(statehouse.client.__file__)"
)
# Under pytest-timeout's 300 s, so a slow build fails with our message, not theirs.
_BUILD_SECONDS = 270
_SCRIPT_SECONDS = 120

# Shared with compat_script.py.
AGENT = "compat-agent"
OTHER = "compat-other"
CROSS_VALUE = {"n": 42, "items": [{"a": 1}]}
# Enough keys that a hash-ordered map cannot come out in insertion order by chance.
WIDE_VALUE = {**{f"k{i:02d}": i for i in range(16)}, "obj": {"z": 1, "y": [{"b": 2, "a": 1}], "x": "s"}}
# (agent, key written by our SDK, key written by the old client, value)
SAME_VALUE_PAIRS = [
    ("cross", "cross/new", "cross/old", CROSS_VALUE),
    ("cross-wide", "wide/new", "wide/old", WIDE_VALUE),
]


def exact(value: Any) -> str:
    """A form that tells 1 from 1.0 and True from 1, for exact comparisons."""
    return json.dumps(value, sort_keys=True)


def as_struct(value: Any) -> Any:
    """`value` as a google.protobuf.Struct reader sees it: every number a float."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return {key: as_struct(item) for key, item in value.items()}
    return [as_struct(item) for item in value]


# -- the compat virtualenv ------------------------------------------------------


def _python() -> Path:
    return COMPAT_VENV / "bin" / "python"


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(command)} took longer than {timeout}s:\n{exc.stderr}", pytrace=False)


def _installed_problem() -> str | None:
    """Why the compat venv cannot be used as it is, or None if it can."""
    if not _python().exists():
        return f"{_python()} does not exist"
    result = _run([str(_python()), "-I", "-c", _PROBE], 60)
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) != 2:
        return f"importing the old client failed:\n{result.stdout}{result.stderr}"
    version, module = lines
    if version != "0.1.1":
        return f"statehouse {version} is installed, not 0.1.1"
    if not Path(module).resolve().is_relative_to(COMPAT_VENV.resolve()):
        return f"the old client was imported from {module}, outside {COMPAT_VENV}"
    return None


@pytest.fixture(scope="session")
def old_client_python() -> Path:
    """The interpreter of a virtualenv holding only the published 0.1.1 client."""
    if _installed_problem() is None:
        return _python()
    shutil.rmtree(COMPAT_VENV, ignore_errors=True)
    steps = [
        [sys.executable, "-m", "venv", str(COMPAT_VENV)],
        [str(_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         OLD_CLIENT, *RUNTIME_FLOORS],
    ]  # fmt: skip
    deadline = time.monotonic() + _BUILD_SECONDS
    for command in steps:
        result = _run(command, max(1.0, deadline - time.monotonic()))
        if result.returncode != 0:
            pytest.fail(
                f"cannot build {COMPAT_VENV} for the old client: {' '.join(command)} exited "
                f"{result.returncode}\n{result.stdout}{result.stderr}",
                pytrace=False,
            )
    problem = _installed_problem()
    if problem is not None:
        pytest.fail(f"{COMPAT_VENV} was built but is unusable: {problem}", pytrace=False)
    return _python()


# -- one daemon, one run of the old client ----------------------------------------


@pytest.fixture(scope="module")
def statehoused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with DaemonProcess(tmp_path_factory.mktemp("compat") / "data") as daemon:
        yield daemon


@pytest.fixture(scope="module")
def seen(statehoused: DaemonProcess, old_client_python: Path) -> dict[str, Any]:
    """What the old client observed; our SDK writes its side of the cross check first."""
    with Statehouse(statehoused.addr) as client:
        with client.begin_transaction() as tx:
            tx.write("cross", "cross/new", CROSS_VALUE)
            tx.write("cross-wide", "wide/new", WIDE_VALUE)
        with client.begin_transaction() as tx:
            tx.write("cross-scalar", "greeting", "hello")
        with client.begin_transaction() as tx:
            tx.write("cross-bytes", "blob", b"\x00\x01binary")
            tx.write("cross-bytes", "json", {"n": 1})
    # -I: no PYTHON* variables, no script dir on sys.path -- only the venv's statehouse.
    result = _run([str(old_client_python), "-I", str(SCRIPT), statehoused.addr], _SCRIPT_SECONDS)
    assert result.returncode == 0, f"compat_script.py failed:\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.fixture
def our_client(statehoused: DaemonProcess) -> Iterator[Statehouse]:
    with Statehouse(statehoused.addr) as client:
        yield client


def _op(key: str, value: Any, version: int) -> list[Any]:
    return [key, None if value is None else as_struct(value), version]


# -- the old client on its own -------------------------------------------------------


def test_it_is_the_published_client_talking_to_our_daemon(seen: dict[str, Any]) -> None:
    assert seen["dist_version"] == "0.1.1"
    assert Path(seen["module_file"]).resolve().is_relative_to(COMPAT_VENV.resolve())
    assert seen["health"] == "ok"
    version, git_sha = seen["version"]
    assert version == statehouse.__version__
    assert isinstance(git_sha, str) and git_sha


def test_struct_values_read_back_as_written(seen: dict[str, Any]) -> None:
    ts = seen["ts"]
    assert set(seen["initial"]) == {"profile", "tasks", "misc"}
    for key, value in seen["written"].items():
        result = seen["initial"][key]
        assert exact(result["value"]) == exact(as_struct(value)), key
        assert (result["version"], result["commit_ts"], result["exists"]) == (1, ts["initial"], True)


def test_versions_increase_and_deletes_are_versions(seen: dict[str, Any]) -> None:
    ts = seen["ts"]
    order = ["initial", "counter1", "counter2", "other", "counter3", "delete", "counter5", "ns_b", "notes"]
    commit_ts = [ts[name] for name in order]
    assert commit_ts == sorted(commit_ts) and len(set(commit_ts)) == len(commit_ts), ts
    assert seen["after_delete"] == {"value": None, "version": 4, "commit_ts": ts["delete"], "exists": False}
    assert seen["counter"] == {"value": {"n": 5.0}, "version": 5, "commit_ts": ts["counter5"], "exists": True}
    by_version = [
        ({"n": 1.0}, ts["counter1"], True),
        ({"n": 2.0}, ts["counter2"], True),
        ({"n": 3.0}, ts["counter3"], True),
        (None, ts["delete"], False),
        ({"n": 5.0}, ts["counter5"], True),
    ]
    expected = [
        {"value": value, "version": version, "commit_ts": at, "exists": exists}
        for version, (value, at, exists) in enumerate(by_version, start=1)
    ]
    assert seen["counter_versions"] == expected
    missing = seen["missing_version"]
    assert missing is not None and missing["statehouse_error"] and not missing["transaction_error"]
    assert "StatusCode.NOT_FOUND" in missing["message"]


def test_missing_keys_read_as_absent(seen: dict[str, Any]) -> None:
    absent = {"value": None, "version": 0, "commit_ts": 0, "exists": False}
    assert seen["missing_key"] == absent
    assert seen["missing_agent"] == absent
    assert seen["bogus_key"] == absent


def test_namespaces_and_agents_do_not_mix(seen: dict[str, Any]) -> None:
    ts = seen["ts"]
    ns_b = {"value": {"ns": "b"}, "version": 1, "commit_ts": ts["ns_b"], "exists": True}
    assert seen["ns_b_profile"] == ns_b
    assert seen["ns_b_profile_explicit"] == ns_b
    assert exact(seen["default_profile"]["value"]) == exact(as_struct(seen["written"]["profile"]))
    assert seen["ns_b_keys"] == ["profile"]
    assert [(e["commit_ts"], e["ops"]) for e in seen["ns_b_replay"]] == [
        (ts["ns_b"], [_op("profile", {"ns": "b"}, 1)])
    ]
    assert [r["value"] for r in seen["colliding"]] == [
        {"who": "agent a, key b:c"},
        {"who": "agent a:b, key c"},
    ]


def test_list_keys_and_scan_prefix(seen: dict[str, Any]) -> None:
    assert seen["list_keys"] == ["counter", "misc", "note/1", "note/3", "notes", "profile", "tasks"]
    notes = seen["ts"]["notes"]
    assert seen["scan_note"] == [
        {"value": {"key": key}, "version": 1, "commit_ts": notes, "exists": True}
        for key in ("note/1", "note/3")
    ]
    assert seen["scan_none"] == []


def test_replay_is_this_agents_commits_in_order(seen: dict[str, Any]) -> None:
    ts = seen["ts"]
    written = seen["written"]
    expected = [
        (ts["initial"], [_op(key, written[key], 1) for key in ("profile", "tasks", "misc")]),
        (ts["counter1"], [_op("counter", {"n": 1}, 1)]),
        (ts["counter2"], [_op("counter", {"n": 2}, 2)]),
        (ts["counter3"], [_op("counter", {"n": 3}, 3)]),
        (ts["delete"], [_op("counter", None, 4)]),
        (ts["counter5"], [_op("counter", {"n": 5}, 5)]),
        (ts["notes"], [_op(key, {"key": key}, 1) for key in ("note/1", "note/2", "note/3", "notes")]),
        (ts["notes_delete"], [_op("note/2", None, 2)]),
    ]

    def events(name: str) -> str:
        return exact([(e["commit_ts"], e["ops"]) for e in seen[name]])

    assert events("replay") == exact(expected)
    assert seen["replay"][0]["txn_id"] == seen["initial_txn"]
    assert len({e["txn_id"] for e in seen["replay"]}) == len(expected)
    assert events("replay_range") == exact(expected[2:5])  # start_ts and end_ts inclusive
    assert events("replay_from") == exact(expected[6:])
    assert events("replay_until") == exact(expected[:2])
    assert events("replay_other") == exact(
        [
            (ts["initial"], [_op("profile", {"owner": "other"}, 1)]),
            (ts["other"], [_op("counter", {"n": 100}, 1)]),
        ]
    )


def test_abort_discards_and_finalizes(seen: dict[str, Any]) -> None:
    absent = {"value": None, "version": 0, "commit_ts": 0, "exists": False}
    assert seen["aborted"] == absent
    assert seen["aborted_cm"] == absent
    assert seen["cm_exception"] == "boom"
    assert seen["abort_again"] is None
    after = seen["write_after_abort"]
    assert after is not None and after["transaction_error"]
    assert after["message"] == "Transaction already finalized"


# -- errors the old client relies on -------------------------------------------------


def test_recommit_is_refused_by_the_client(seen: dict[str, Any]) -> None:
    error = seen["recommit"]
    assert error is not None and error["transaction_error"]
    assert error["message"] == "Transaction already committed"


@pytest.mark.parametrize(
    ("name", "code"),
    [("commit_committed", "FAILED_PRECONDITION"), ("abort_committed", "FAILED_PRECONDITION"),
     ("begin_bad_timeout", "INVALID_ARGUMENT")],
)  # fmt: skip
def test_server_refusals_are_transaction_errors(seen: dict[str, Any], name: str, code: str) -> None:
    error = seen[name]
    assert error is not None, f"{name} did not raise"
    assert error["type"] == "TransactionError"
    assert f"StatusCode.{code}" in error["message"]


def test_unknown_transaction_ids_are_transaction_errors(seen: dict[str, Any]) -> None:
    assert set(seen["bogus"]) == {"bogus", "default:" + "0" * 24, "no-such-namespace:" + "0" * 24}
    for txn_id, calls in seen["bogus"].items():
        assert set(calls) == {"write", "internal_write", "delete", "commit"}
        for call, error in calls.items():
            assert error is not None, f"{call} with {txn_id!r} did not raise"
            assert error["type"] == "TransactionError", (txn_id, call)
            assert "StatusCode.NOT_FOUND" in error["message"], (txn_id, call, error["message"])
    # The refused delete touched nothing.
    assert exact(seen["profile_after_errors"]["value"]) == exact(as_struct(seen["written"]["profile"]))


def test_daemon_keeps_serving_after_errors(
    seen: dict[str, Any], statehoused: DaemonProcess, our_client: Statehouse
) -> None:
    assert seen["health_after_errors"] == "ok"
    assert seen["after_errors"]["value"] == {"ok": True} and seen["after_errors"]["exists"]
    assert statehoused.process is not None and statehoused.process.poll() is None
    assert our_client.health() == "ok"
    assert our_client.get_state(AGENT, "after-errors").value == {"ok": True}
    assert statehoused.events("txn.commit"), "the daemon's log was not captured"
    problems = [r for r in statehoused.log_lines if r.get("level") in ("error", "critical")]
    assert problems == []


# -- the old client and our SDK on the same data -----------------------------------


@pytest.mark.parametrize("read", ["get_state", "scan_prefix", "replay"])
def test_a_bytes_value_is_a_clear_error_for_the_old_client(seen: dict[str, Any], read: str) -> None:
    refused = seen["bytes_refused"][read]
    assert refused is not None, f"the old client's {read} of a bytes value raised nothing"
    assert refused["statehouse_error"], refused
    assert "value of key 'blob' is bytes (8 bytes)" in refused["message"], refused
    assert "bytes_values" in refused["message"], refused
    # The JSON value beside it reads as ever.
    assert seen["bytes_neighbour"]["value"] == {"n": 1}


def test_old_client_writes_read_exactly_through_our_sdk(seen: dict[str, Any], our_client: Statehouse) -> None:
    value = our_client.get_state("cross", "cross/old").value
    assert value == {"n": 42, "items": [{"a": 1}]}
    assert type(value["n"]) is int and type(value["items"][0]["a"]) is int
    for key, written in seen["written"].items():
        assert exact(our_client.get_state(AGENT, key).value) == exact(written), key


def test_our_sdk_writes_are_readable_by_the_old_client(seen: dict[str, Any]) -> None:
    cross = seen["cross_new"]
    assert cross["exists"] and cross["version"] == 1
    assert exact(cross["value"]) == exact({"n": 42.0, "items": [{"a": 1.0}]})
    assert seen["cross_new_types"] == ["float", "float"]
    # A Struct must be an object, so a non-object value is wrapped.
    assert seen["cross_scalar"]["value"] == {"value": "hello"}


def test_struct_and_json_writes_read_back_the_same(
    seen: dict[str, Any], statehoused: DaemonProcess, our_client: Statehouse
) -> None:
    with grpc.insecure_channel(statehoused.addr) as channel:
        stub = pb_grpc.StatehouseServiceStub(channel)
        for agent, ours, theirs, value in SAME_VALUE_PAIRS:
            as_structs = [
                stub.GetState(pb.GetStateRequest(agent_id=agent, key=key), timeout=10).value
                for key in (ours, theirs)
            ]
            assert as_structs[0] == as_structs[1], agent
            assert len(as_structs[0]) == len(value), agent
    for agent, ours, theirs, value in SAME_VALUE_PAIRS:
        for key in (ours, theirs):
            assert exact(our_client.get_state(agent, key).value) == exact(value), key
        events = list(our_client.replay(agent))
        assert [[(op.key, op.version) for op in e.operations] for e in events] == [[(ours, 1)], [(theirs, 1)]]
        assert [exact(e.operations[0].value) for e in events] == [exact(value)] * 2
    # The old client's replay sees both writes as the same Struct.
    assert exact([e["ops"] for e in seen["cross_replay"]]) == exact(
        [[_op("cross/new", CROSS_VALUE, 1)], [_op("cross/old", CROSS_VALUE, 1)]]
    )


def test_struct_and_json_writes_are_stored_byte_identical(
    seen: dict[str, Any], statehoused: DaemonProcess
) -> None:
    with grpc.insecure_channel(statehoused.addr) as channel:
        stub = pb_grpc.StatehouseServiceStub(channel)
        for agent, ours, theirs, _value in reversed(SAME_VALUE_PAIRS):
            stored = [
                stub.GetState(pb.GetStateRequest(agent_id=agent, key=key, json_values=True), timeout=10)
                for key in (ours, theirs)
            ]
            assert stored[0].value_json, f"{agent}/{ours} has no value"
            assert stored[0].value_json == stored[1].value_json, agent
