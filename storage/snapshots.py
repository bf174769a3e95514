"""Where snapshots live, what they are called, and how many are kept.

A snapshot is a RocksDB checkpoint directory named
`snapshot-<commit_ts, 20 digits>-<UTC time>`; restoring one is starting
the daemon with `--data-dir` pointing at it (or at a copy of it).
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^snapshot-(\d{20})-(\d{8}T\d{6}(?:\d{3})?Z)(?:-\d+)?$")


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    path: Path
    commit_ts: int


class SnapshotDirectory:
    """The directory holding a data directory's snapshots."""

    def __init__(self, root: Path, keep: int = 0) -> None:
        self.root = root
        self.keep = keep  # 0 keeps every snapshot

    def new_path(self, commit_ts: int) -> Path:
        now = time.time()  # one reading: two could straddle a second and misorder names
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"
        base = f"snapshot-{commit_ts:020d}-{stamp}"
        path, n = self.root / base, 1
        while path.exists():
            path, n = self.root / f"{base}-{n}", n + 1
        return path

    def complete(self) -> list[SnapshotInfo]:
        """Complete snapshots, oldest first (by when they were taken, not commit_ts:
        a data directory restored from an old snapshot makes new ones with lower
        commit_ts than the snapshots already here)."""
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.iterdir():
            match = _NAME.match(path.name)
            if match and path.is_dir():
                found.append((match.group(2), path.name, SnapshotInfo(path, int(match.group(1)))))
        return [info for *_, info in sorted(found)]

    def prune(self, keep_path: Path | None = None) -> list[Path]:
        """Delete the oldest snapshots beyond `keep` (never `keep_path`), and
        leftovers of interrupted ones."""
        removed = []
        if self.root.is_dir():
            for partial in self.root.glob("snapshot-*.partial"):
                shutil.rmtree(partial, ignore_errors=True)
                removed.append(partial)
        if self.keep:
            for info in self.complete()[: -self.keep]:
                if info.path != keep_path:
                    shutil.rmtree(info.path, ignore_errors=True)
                    removed.append(info.path)
        return removed
