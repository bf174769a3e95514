"""RocksDB storage: key layout, record codecs, the atomic commit write, reads.

Only the ledger actor writes (through `Store.append`); readers use the
`ReadView` of the last durable commit group.
"""

from storage.errors import (
    DataLossError,
    HistoryCompactedError,
    StorageError,
    StoreFailedError,
    StoreLockedError,
    StoreRefusedError,
    ViewMoved,
)
from storage.records import AgentEvent, Blob, Event, EventOp, StateRecord, VersionRecord
from storage.snapshots import SnapshotDirectory, SnapshotInfo
from storage.store import PurgeResult, Store
from storage.view import ReadView

__all__ = [
    "AgentEvent",
    "Blob",
    "DataLossError",
    "Event",
    "EventOp",
    "HistoryCompactedError",
    "PurgeResult",
    "ReadView",
    "SnapshotDirectory",
    "SnapshotInfo",
    "StateRecord",
    "StorageError",
    "StoreFailedError",
    "Store",
    "StoreLockedError",
    "StoreRefusedError",
    "VersionRecord",
    "ViewMoved",
]
