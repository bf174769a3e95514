"""`statehoused --config FILE` and `--print-config`, run as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import grpc
import pytest

from rpc.main import _settings, build_parser
from rpc.server import SETTINGS
from statehouse import ResourceExhaustedError, Statehouse
from statehouse._proto import statehouse_pb2 as pb
from statehouse.testing import DaemonProcess

STATEHOUSED = [sys.executable, "-m", "rpc"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STATEHOUSE_")}
    return subprocess.run(
        [*STATEHOUSED, *args], capture_output=True, text=True, timeout=60, env={**clean, **(env or {})}
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_precedence_is_flags_then_environment_then_file_then_defaults(tmp_path: Path) -> None:
    config = write(
        tmp_path / "statehouse.toml",
        'data_dir = "/srv/statehouse"\nmax_value_bytes = 2048\nmax_message_bytes = 1048576\n'
        'sync_method = "sync_write"\nsnapshot_every_seconds = 2.5\n',
    )
    result = run(
        "--config",
        str(config),
        "--max-message-bytes",
        "2097152",
        "--print-config",
        env={"STATEHOUSE_MAX_VALUE_BYTES": "4096"},
    )
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)  # the output is itself a valid config file
    assert printed["data_dir"] == "/srv/statehouse"  # from the file
    assert printed["max_value_bytes"] == 4096  # the environment beats the file
    assert printed["max_message_bytes"] == 2097152  # a flag beats both
    assert printed["sync_method"] == "sync_write"
    assert printed["snapshot_every_seconds"] == 2.5
    assert printed["txn_timeout_ms"] == 30000  # a default
    again = run("--config", str(write(tmp_path / "printed.toml", result.stdout)), "--print-config")
    assert again.returncode == 0, again.stderr
    assert tomllib.loads(again.stdout) == printed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1\n", "unknown key(s) bogus; known keys: addr, data_dir"),
        ("max_value_bytes = 0\n", "max_value_bytes = 0: must be at least 1, got 0"),
        ('sync_method = "fast"\n', "sync_method = 'fast': must be one of flush_wal, sync_write"),
        ("max_value_bytes = [1]\n", "max_value_bytes must be a string or a number"),
        ("max_value_bytes = \n", "is not valid TOML"),
        ('http_addr = "nowhere"\n', "http_addr = 'nowhere': 'nowhere' is not HOST:PORT, nor off"),
    ],
)
def test_a_bad_config_file_fails_at_start_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path / "bad.toml", text)
    result = run("--config", str(config), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    assert f"statehoused: config file {config}" in result.stderr or "not valid TOML" in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "data").exists()  # nothing was started


def test_a_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run("--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2
    assert "cannot read config file" in result.stderr and "No such file" in result.stderr


def test_the_daemon_runs_with_the_settings_of_its_config_file(tmp_path: Path) -> None:
    config = write(tmp_path / "statehouse.toml", "max_value_bytes = 64\n")
    with (
        DaemonProcess(tmp_path / "data", "--config", str(config)) as daemon,
        Statehouse(daemon.addr) as client,
    ):
        with client.begin_transaction() as tx:
            tx.write("a", "small", "x" * 10)
        with pytest.raises(ResourceExhaustedError, match="the limit is 64 bytes"):
            with client.begin_transaction() as tx:
                tx.write("a", "big", "x" * 100)


def test_the_documented_config_file_is_accepted(tmp_path: Path) -> None:
    import re

    operations = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```toml\n(.*?)```", operations, re.S)
    result = run("--config", str(write(tmp_path / "statehouse.toml", block)), "--print-config")
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    assert {key: printed[key] for key in tomllib.loads(block)} == tomllib.loads(block)


# Every setting but the three DaemonProcess gives, each with a value that is not its default.
NOT_DEFAULTS = {
    "max_value_bytes": 2000,
    "txn_timeout_ms": 1234,
    "max_txn_timeout_ms": 99_999,
    "sync_method": "sync_write",
    "pin_cpu": "off",
    "local_socket": "off",
    "watch_max_events": 77,
    "watch_max_bytes": 123_456,
    "max_streams": 2,
    "max_sessions": 1,
    "max_open_txns": 3,
    "max_ops_per_txn": 4,
    "max_txn_bytes": 5000,
    "max_message_bytes": 3_000_000,
    "snapshot_every_commits": 1000,
    "snapshot_every_seconds": 3600.0,
    "snapshot_keep": 2,
    "retain_versions": 5,
    "retain_seconds": 86_400.0,
    "retain_namespace": "kept=versions:2",
    "retention_every_seconds": 30.0,
    "log_level": "debug",  # not above info: DaemonProcess reads the port from an info line
    "log_format": "json",
}


def test_every_setting_reaches_the_running_daemon(tmp_path: Path) -> None:
    """Each setting, given as a flag to a real daemon, is what it runs with (its /config and
    --print-config say so), and the limits among them are obeyed."""
    assert tuple(_settings(build_parser())) == SETTINGS  # the flags, and what builds the config
    given = {**NOT_DEFAULTS, "snapshot_dir": str(tmp_path / "snapshots")}
    assert set(given) | {"addr", "http_addr", "data_dir"} == set(_settings(build_parser())), (
        "a setting without a value here: add one, so that this test checks it"
    )
    flags = [part for name, value in given.items() for part in (f"--{name.replace('_', '-')}", str(value))]
    with DaemonProcess(tmp_path / "data", *flags) as daemon:
        with urllib.request.urlopen(f"http://{daemon.http_addr}/config", timeout=30) as answer:
            running = json.loads(answer.read())
        assert {name: running[name] for name in given} == given
        assert running["data_dir"] == str(tmp_path / "data")
        printed = run(*flags, "--data-dir", str(tmp_path / "data"), "--print-config")
        assert printed.returncode == 0, printed.stderr
        from_print = tomllib.loads(printed.stdout)
        assert {name: from_print[name] for name in given} == given

        with Statehouse(daemon.addr, timeout=30) as client:
            with pytest.raises(ResourceExhaustedError, match="limit is 2000 bytes"):  # max_value_bytes
                with client.begin_transaction() as tx:
                    tx.write("a", "big", "x" * 2500)
            with pytest.raises(ResourceExhaustedError, match="4"):  # max_ops_per_txn
                with client.begin_transaction() as tx:
                    for n in range(5):
                        tx.write("a", f"k{n}", n)
            with pytest.raises(ResourceExhaustedError, match="5000"):  # max_txn_bytes
                with client.begin_transaction() as tx:
                    for n in range(3):
                        tx.write("a", f"v{n}", "y" * 1900)
            held = [client.watch("a") for _ in range(2)]  # max_streams
            with pytest.raises(ResourceExhaustedError, match="2 replay or watch streams"):
                next(client.replay("a"), None)
            for watch in held:
                watch.cancel()
        with grpc.insecure_channel(daemon.addr) as channel:
            begin = channel.unary_unary("/statehouse.v1.StatehouseService/BeginTransaction")
            request = pb.BeginTransactionRequest(namespace="limits").SerializeToString()
            for _ in range(3):  # max_open_txns
                begin(request, timeout=30)
            with pytest.raises(grpc.RpcError) as info:
                begin(request, timeout=30)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limit 3" in (info.value.details() or "")
