"""Log lines written together: the ledger logs a line per commit, and a group's lines
leave in one write at the end of the group instead of one write each.

A write to stderr is a system call that releases the GIL, and the ledger,
the sole writer, then waits to take the GIL back from the event loop
before it can start the next group. Loggers that know this module
(`rpc.logs`) hand their line to `hold` first; inside `together()` it is
kept, and written with the rest when the block ends (an exception too).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Writer = Callable[[list[Any]], None]

_local = threading.local()


@contextmanager
def together() -> Iterator[None]:
    """Lines logged on this thread inside the block are written when it ends, in order, one
    write per logger. Nested blocks write at the end of the outermost."""
    if getattr(_local, "held", None) is not None:
        yield
        return
    held: list[tuple[Writer, Any]] = []
    _local.held = held
    try:
        yield
    finally:
        _local.held = None
        by_writer: dict[Writer, list[Any]] = {}
        for writer, line in held:
            by_writer.setdefault(writer, []).append(line)
        for writer, lines in by_writer.items():
            writer(lines)


def hold(writer: Writer, line: Any) -> bool:
    """Keep `line` for `writer` if this thread is inside `together()`; False if it is not
    (the logger writes it now)."""
    held: list[tuple[Writer, Any]] | None = getattr(_local, "held", None)
    if held is None:
        return False
    held.append((writer, line))
    return True
