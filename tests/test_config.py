"""`statehoused --config FILE` and `--print-config`, run as a user runs them (subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from statehouse import ResourceExhaustedError, Statehouse
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

    operations = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text(
        encoding="utf-8"
    )
    (block,) = re.findall(r"```toml\n(.*?)```", operations, re.S)
    result = run("--config", str(write(tmp_path / "statehouse.toml", block)), "--print-config")
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    assert {key: printed[key] for key in tomllib.loads(block)} == tomllib.loads(block)
