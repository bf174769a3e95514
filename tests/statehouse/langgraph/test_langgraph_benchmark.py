"""`python -m benchmarks.langgraph` runs (tiny counts) and prints its table; a peer that cannot
run here is skipped with the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_langgraph_benchmark_runs_and_reports(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ".venv/bin/python -m benchmarks.langgraph " in readme
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.langgraph", "--quick", "--only", "statehouse,sqlite,nosuch"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "nosuch: skipped: no such saver (choose from statehouse, sqlite, postgres)" in out
    for row in (
        "| 1 thread steps/s |",
        "| 16 threads steps/s |",
        "| 4 processes x 4 threads steps/s |",
        "| disk MB after 10,000 steps |",
        "| latest get_tuple p50 ms, 10,000 checkpoints |",
        "| durability | fsync per commit group",
    ):
        assert row in out, out
    # SQLite's saver is in the test install: it runs beside Statehouse, and the ratio is printed.
    assert "| | statehouse | sqlite | statehouse/sqlite |" in out, out
