"""The systemd example (examples/systemd/) works with the daemon as shipped."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "systemd"
UNIT = EXAMPLE / "statehoused.service"
INSTALLED_BINARY = "/opt/statehouse/.venv/bin/statehoused"
INSTALLED_CONFIG = "/etc/statehouse/statehouse.toml"
STATEHOUSED = Path(sys.executable).parent / "statehoused"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def test_the_unit_runs_statehoused_with_the_example_settings() -> None:
    service = unit()["Service"]
    command = shlex.split(service["ExecStart"])
    assert command[:3] == [INSTALLED_BINARY, "--config", INSTALLED_CONFIG]
    # The same command, with this checkout's binary and the example settings file.
    local = [str(STATEHOUSED), "--config", str(EXAMPLE / "statehouse.toml"), *command[3:], "--print-config"]
    env_name, _, env_value = service["Environment"].partition("=")
    result = subprocess.run(local, capture_output=True, text=True, timeout=60, env={env_name: env_value})
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    assert printed["data_dir"] == "/var/lib/statehouse/data"
    assert printed["snapshot_dir"] == "/var/lib/statehouse/snapshots"
    assert printed["http_addr"] == "127.0.0.1:50052"
    assert printed["log_format"] == "json"  # from the unit's Environment=
    # The data lives under the StateDirectory systemd creates and lets the service write.
    assert printed["data_dir"].startswith(f"/var/lib/{service['StateDirectory']}/")
    assert service["KillSignal"] == "SIGTERM"
    assert set(service["RestartPreventExitStatus"].split()) == {"2", "4"}  # statehoused's exit codes
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_analyze_verify_finds_nothing_wrong(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    # Not a skip: a check that silently does not run is no check. `.ci/run` installs it.
    assert analyze is not None, (
        "systemd-analyze is missing: install systemd (Debian: apt-get install systemd)"
    )
    # verify wants ExecStart's binary to exist: point it at this checkout's.
    text = UNIT.read_text(encoding="utf-8").replace(INSTALLED_BINARY, str(STATEHOUSED))
    copy = tmp_path / "statehoused.service"
    copy.write_text(text, encoding="utf-8")
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # It only warns about unknown keys or bad values, on stderr, naming the file.
    assert "statehoused.service" not in result.stderr, result.stderr
