"""Errors raised by the storage layer.

StorageError                RocksDB failed to read or write; the store may need attention
├── StoreLockedError        the data directory is open in another process
├── StoreFailedError        a write may be in memory but not on disk; writes refused until reopened
├── DataLossError           stored data could not be read whole (damaged or missing); never retried
└── StoreRefusedError       the data directory cannot be opened as a whole store; nothing was changed

HistoryCompactedError       a read asked for history that retention let go (not a failure)
"""


class StorageError(Exception):
    """RocksDB failed to read or write; the store may need attention."""


class StoreLockedError(StorageError):
    """The data directory is already open in another process."""


class StoreFailedError(StorageError):
    """A write may have reached memory but not disk; the store refuses writes until restart."""


class DataLossError(StorageError):
    """Stored data could not be read whole: a block failed its checksum, a file is gone.

    A read that meets damage raises this rather than answer with the part it
    could read; trying again does not help. `detail` is what RocksDB said;
    a scan sets `after` to the last key it read whole (None: none).
    """

    def __init__(self, message: str, *, detail: str = "", after: bytes | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message
        self.after = after


class StoreRefusedError(StorageError):
    """The data directory holds a store that cannot be opened whole (damaged or incomplete
    files, a damaged write-ahead log); it was refused and nothing in it was changed."""


class HistoryCompactedError(Exception):
    """A read needs history from before `horizon` (a commit_ts), which retention let go
    (storage/retention.py). Nothing is wrong with the store; ask from the horizon on."""

    def __init__(self, message: str, horizon: int) -> None:
        super().__init__(message)
        self.horizon = horizon


class ViewMoved(Exception):
    """A read over a `ReadView` met a purge or a retention pass written after the view was
    taken, so what it listed may be partly of the later store (see `Fence` in
    storage/view.py). Nothing is wrong with the store: read again on a new view."""
