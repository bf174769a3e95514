"""Recovery: the global event log is the source of truth, and damage is reported, never hidden.

The maintenance commands of `statehoused`, gathered here:

- `verify` (storage/verify.py) folds the log and compares every derived
  table with it, and reports damage (what could not be read at all);
- `rebuild` and `rebuild_into` (storage/rebuild.py) write the derived
  tables again from the log, in place or into a new directory;
- `recover_wal` (storage/walrecovery.py) cuts a store with a damaged or
  missing write-ahead log back to what can be read, when the operator
  accepts the loss.

`open_read_only` (storage/opening.py) opens a store for these, with writers
locked out.
"""

from storage.keys import META_REBUILD_IN_PROGRESS
from storage.logwalk import (
    PRECEDENCE,
    Damage,
    Divergence,
    LogDamagedError,
    Progress,
    ProgressCallback,
    Report,
)
from storage.opening import open_read_only
from storage.rebuild import RebuildResult, TablesDamagedError, rebuild, rebuild_into
from storage.verify import verify
from storage.walrecovery import WalRecovery, recover_wal

__all__ = [
    "META_REBUILD_IN_PROGRESS",
    "PRECEDENCE",
    "Damage",
    "Divergence",
    "LogDamagedError",
    "Progress",
    "ProgressCallback",
    "RebuildResult",
    "Report",
    "TablesDamagedError",
    "WalRecovery",
    "open_read_only",
    "rebuild",
    "rebuild_into",
    "recover_wal",
    "verify",
]
