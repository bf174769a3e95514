"""What `pip install` gives: two distributions from one tree. `pip install .` is the lean
client (`statehouse`: the SDK and statehousectl); `pip install . ./daemon` adds the daemon
(`statehouse-daemon`: statehoused and its packages)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import statehouse

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = (".git", ".venv*", "build", "*.egg-info", "__pycache__", ".*_cache", "statehouse-data*")
# The daemon's packages and their dependencies: none belongs in a client's install.
DAEMON_ONLY = (
    *("actors", "rpc", "storage"),
    *("rocksdict", "pykka", "prometheus_client", "structlog", "grpc_health"),
)


def source_copy(tmp_path: Path) -> Path:
    """A copy of the working tree: pip builds in the source directory, leaving build/ behind."""
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    return source


def venv_with(tmp_path: Path, name: str, *targets: Path) -> Path:
    """A clean venv with `pip install *targets`; its python."""
    venv = tmp_path / name
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", *map(str, targets)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr
    return python


def test_the_two_distributions_share_one_version() -> None:
    client = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    daemon = tomllib.loads((ROOT / "daemon" / "pyproject.toml").read_text())["project"]
    assert client["name"] == "statehouse" and daemon["name"] == "statehouse-daemon"
    assert client["version"] == daemon["version"] == statehouse.__version__
    assert f"statehouse=={client['version']}" in daemon["dependencies"]


def test_a_client_install_has_the_sdk_and_nothing_of_the_daemon(tmp_path: Path) -> None:
    """`pip install .` in a clean venv imports and uses the SDK and the CLI, and has none of
    the daemon's packages (not even the top-level `rpc`, `actors`, `storage`) nor statehoused."""
    python = venv_with(tmp_path, "client", source_copy(tmp_path))
    check = (
        "import importlib.util, statehouse, statehouse.cli;"
        "from statehouse import Statehouse, AsyncStatehouse;"
        f"print([m for m in {DAEMON_ONLY!r} if importlib.util.find_spec(m)])"
    )
    probe = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]", probe.stdout
    bin_dir = python.parent
    ctl = subprocess.run([bin_dir / "statehousectl", "--cli-version"], capture_output=True, text=True)
    assert ctl.returncode == 0 and "statehousectl" in ctl.stdout, ctl.stderr
    assert not (bin_dir / "statehoused").exists()


def test_the_daemon_install_runs_statehoused_from_its_own_files(tmp_path: Path) -> None:
    """`pip install . ./daemon` in a clean venv: statehoused starts from the installed files
    (not the source tree) and the SDK commits to it and reads back."""
    source = source_copy(tmp_path)
    python = venv_with(tmp_path, "daemon", source, source / "daemon")
    shutil.rmtree(source)  # whatever runs now runs from site-packages
    script = (
        "import sys, tempfile, rpc, actors, storage\n"
        "from pathlib import Path\n"
        "from statehouse import Statehouse\n"
        "from statehouse.testing import DaemonProcess\n"
        "assert all('site-packages' in m.__file__ for m in (rpc, actors, storage)), rpc.__file__\n"
        "with tempfile.TemporaryDirectory() as root, DaemonProcess(Path(root) / 'data') as daemon:\n"
        "    with Statehouse(daemon.addr) as client:\n"
        "        with client.begin_transaction() as tx:\n"
        "            tx.write('agent', 'k', {'n': 1})\n"
        "        print(client.get_state('agent', 'k').value)\n"
    )
    run = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "{'n': 1}"
    daemon = subprocess.run([python.parent / "statehoused", "--help"], capture_output=True, text=True)
    assert daemon.returncode == 0 and "--data-dir" in daemon.stdout, daemon.stderr
