"""Every read of RocksDB goes through here, so that damage is never taken for an answer.

An iterator that stops being `valid()` has either reached the end of its
range or hit an error (a block whose checksum does not match, a table file
that is gone); only `status()` tells which. `scan` asks it every time a scan
ends, and `get` classifies what a point read raises, so a read over damaged
data fails with `DataLossError` naming what was being read and how far it
got, instead of answering with the part before the damage.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rocksdict import ReadOptions

from storage import keys
from storage.errors import DataLossError, StorageError

# rocksdict raises a bare Exception for a snapshot read of a missing key.
MISSING = "key not found"

# What RocksDB says when the bytes it needs are damaged or gone, as opposed to
# a failure that may pass (an I/O error of another kind, a closed handle).
_DAMAGE_MARKERS = ("Corruption", "No such file or directory", "Input/output error", "size mismatch")

ADVICE = "stop the daemon and run `statehoused verify` (docs/failure-modes.md, damaged data)"


def is_damage(text: str) -> bool:
    """Whether a RocksDB error message says stored data is damaged or missing."""
    return any(marker in text for marker in _DAMAGE_MARKERS)


def read_error(exc: BaseException, what: str, after: bytes | None = None) -> StorageError:
    """The storage error for a failed read of `what`: DataLossError if the data is damaged."""
    text = str(exc)
    if is_damage(text):
        return DataLossError(
            f"{what} could not be read, the data directory is damaged ({text}); {ADVICE}",
            detail=text,
            after=after,
        )
    return StorageError(f"reading {what} failed: {text}")


def get(source: Any, key: bytes, what: str | None = None) -> bytes | None:
    """The value stored under `key` in a snapshot or an open Rdict, or None.

    Raises DataLossError if the block holding it is damaged.
    """
    try:
        getter = getattr(source, "get", None)
        if getter is not None:  # an Rdict
            return getter(key)  # type: ignore[no-any-return]
        return source[key]  # type: ignore[no-any-return]  # a Snapshot has no get()
    except Exception as exc:
        if str(exc) == MISSING:
            return None
        raise read_error(exc, what or keys.describe_key(key)) from exc


def get_many(source: Any, wanted: list[bytes], what: str) -> list[bytes | None]:
    """The values of many keys of an open Rdict in one multi-get (None where missing)."""
    try:
        return source.get(wanted)  # type: ignore[no-any-return]
    except Exception as exc:
        raise read_error(exc, what) from exc


def scan(
    source: Any, prefix: bytes, what: str, start: bytes | None = None, *, reverse: bool = False
) -> Iterator[tuple[bytes, bytes]]:
    """Yield (key, value) of the keys that begin with `prefix`, lazily, in key order.

    Forward: from the first key >= `start` (None: the prefix's first key).
    Reverse: descending, from the last key <= `start` (None: the prefix's last).
    A scan that ends early because RocksDB could not read on raises
    DataLossError (or StorageError) naming `what` and the last key it gave;
    the caller has then received only keys that were read whole.
    """
    options = ReadOptions()
    options.set_verify_checksums(True)  # RocksDB's default; damage is found by reading
    end = keys.prefix_end(prefix)
    if end is not None:
        options.set_iterate_upper_bound(end)
    try:
        it = source.iter(options)
        if reverse:
            if start is None:
                it.seek_to_last()
            else:
                it.seek_for_prev(start)
        else:
            it.seek(prefix if start is None else max(start, prefix))
    except Exception as exc:
        raise read_error(exc, what) from exc
    last: bytes | None = None
    step = it.prev if reverse else it.next
    while it.valid():
        key = it.key()
        if not key.startswith(prefix):  # below the prefix (rocksdict ignores a lower bound)
            return
        yield key, it.value()
        last = key
        step()
    try:
        it.status()
    except Exception as exc:
        where = "at its start" if last is None else f"after {keys.describe_key(last)}"
        raise read_error(exc, f"{what} ({where})", last) from exc


def last_key(source: Any, prefix: bytes, what: str) -> bytes | None:
    """The greatest key that begins with `prefix`, or None if there is none."""
    for key, _value in scan(source, prefix, what, reverse=True):
        return key
    return None
