"""The examples run as a user would run them, against a real daemon."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from statehouse.testing import DaemonProcess

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(addr: str, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "resumable_steps.py"), "--addr", addr, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.splitlines()


def test_resumable_steps_continue_after_a_restart(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "data") as daemon:
        first = run(daemon.addr, "--steps", "2")
    assert first[0] == "starting fresh" and first[-1] == "step 2 committed at commit_ts 2"
    with DaemonProcess(tmp_path / "data") as daemon:
        second = run(daemon.addr, "--steps", "4")
        history = run(daemon.addr, "--replay")
    assert second == [
        "resuming after step 2",
        "step 3 committed at commit_ts 3",
        "step 4 committed at commit_ts 4",
    ]
    assert history[0] == "commit_ts 1: step/0001@v1, progress@v1"
    assert history[-1] == "commit_ts 4: step/0004@v1, progress@v4"
    assert len(history) == 4
