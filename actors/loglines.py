"""Log lines written together: the ledger logs a line per commit, and a group's lines
leave in one write at the end of the group instead of one write each.

A write to stderr is a system call that releases the GIL, and the ledger,
the sole writer, then waits to take the GIL back from the event loop
before it can start the next group. Loggers that know this module
(`rpc.logs`) hand their line to `hold` first; inside `together()` it is
kept, and written with the rest when the block ends (an exception too).

`info` is for a line logged per commit (the ledger's `txn.commit`): the
logging set-up may `install` a renderer that writes it as structlog would,
without structlog's processor chain, which cost more than the rest of the
line's work (docs/performance.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Writer = Callable[[list[Any]], None]
# (event, fields) -> the rendered line, as structlog's chain would render log.info(event, **fields).
Renderer = Callable[[str, dict[str, Any]], Any]

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


# What `install` set: None (lines go through structlog), or (renderer or None when
# info lines are filtered out, writer).
_installed: tuple[Renderer | None, Writer] | None = None


def install(renderer: Renderer | None, writer: Writer | None) -> None:
    """Render `info` lines with `renderer` and write them with `writer` (None for both:
    through structlog again). A None renderer with a writer drops them (info is filtered)."""
    global _installed
    _installed = None if writer is None else (renderer, writer)


def info(logger: Any, event: str, **fields: Any) -> None:
    """`logger.info(event, **fields)`, through the installed renderer if there is one (held
    inside `together()` like any line). Only for lines without bound context."""
    installed = _installed
    if installed is None:
        logger.info(event, **fields)
        return
    renderer, writer = installed
    if renderer is None:
        return
    line = renderer(event, fields)
    if not hold(writer, line):
        writer([line])
