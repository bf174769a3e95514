"""What `pip install` gives: a lean client by default, the daemon with the `daemon` extra."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_SOURCE = (".git", ".venv*", "build", "*.egg-info", "__pycache__", ".*_cache", "statehouse-data*")
DAEMON_ONLY = ("rocksdict", "pykka", "prometheus_client", "structlog", "grpc_health")


def test_a_client_install_has_the_sdk_and_not_the_daemons_packages(tmp_path: Path) -> None:
    """A clean venv with `pip install <this repo>` (no extra) imports and uses the SDK and
    the CLI, has none of the daemon's dependencies, and its statehoused says what to install."""
    # A copy of the working tree: pip builds in the source directory, leaving build/ behind.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    venv = tmp_path / "client"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(source)], capture_output=True, text=True, timeout=600
    )
    assert install.returncode == 0, install.stderr
    check = (
        "import importlib.util, statehouse, statehouse.cli;"
        "from statehouse import Statehouse, AsyncStatehouse;"
        f"print([m for m in {DAEMON_ONLY!r} if importlib.util.find_spec(m)])"
    )
    probe = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]", probe.stdout  # none of the daemon's packages
    ctl = subprocess.run([venv / "bin" / "statehousectl", "--cli-version"], capture_output=True, text=True)
    assert ctl.returncode == 0 and "statehousectl" in ctl.stdout, ctl.stderr
    daemon = subprocess.run(
        [venv / "bin" / "statehoused", "--help"], capture_output=True, text=True, timeout=60
    )
    assert daemon.returncode == 1
    assert "this is a client install" in daemon.stderr and 'pip install "statehouse[daemon]"' in daemon.stderr
    assert "Traceback" not in daemon.stderr
