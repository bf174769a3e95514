"""Errors raised by the storage layer."""


class StorageError(Exception):
    """RocksDB failed to read or write; the store may need attention."""


class StoreLockedError(StorageError):
    """The data directory is already open in another process."""


class StoreFailedError(StorageError):
    """A write may have reached memory but not disk; the store refuses writes until restart."""
