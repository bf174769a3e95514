"""gRPC and `os.fork()`: a child forked after its parent made a gRPC channel cannot use gRPC.

gRPC's core keeps process-wide state and threads (pollers, timers, the
grpc.aio poller) that a forked child inherits half-copied: a call made
there, even on a channel the child makes itself, can hang or crash the
process. gRPC documents forking as safe only before the process's first
channel. Measured here: a child forked after its parent committed, making
a new `Statehouse` and committing, died of SIGSEGV or SIGABRT in 22 of 100
runs (the client of before the I/O loop hung instead). So the SDK notes the
process that made its first channel, and in a process forked from it every
client, new or inherited, raises `ForkedProcessError` at once instead of
failing at random later. Fork before the first client, or start workers
with multiprocessing's "spawn" or "forkserver" start method.
"""

from __future__ import annotations

import os

# gRPC core's own fork handlers, which run unless this variable turns them off,
# crashed a child forked after a commit even when the child made no gRPC call
# (4 of 80 runs; none of 100 with them off). So they are off, unless the
# application set the variable itself. gRPC reads it when it is imported, so
# this module is the package's first import, and sets it before grpc is
# imported here (an application that imported grpc earlier must set it itself).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from statehouse.exceptions import ForkedProcessError  # after the setting: it imports grpc

# The pid of the process that made the SDK's first gRPC channel.
_CHANNELS_MADE_IN: int | None = None


def channel_made() -> None:
    """Note that this process made a gRPC channel (called after `check`, by the clients)."""
    global _CHANNELS_MADE_IN
    if _CHANNELS_MADE_IN is None:
        _CHANNELS_MADE_IN = os.getpid()


def forked() -> bool:
    """Whether this process was forked after a client made a channel in its parent."""
    return _CHANNELS_MADE_IN is not None and _CHANNELS_MADE_IN != os.getpid()


def check() -> None:
    """Raise ForkedProcessError in a child forked after a client made a channel."""
    if forked():
        raise ForkedProcessError(
            f"this process ({os.getpid()}) was forked from process {_CHANNELS_MADE_IN} after that "
            "made a Statehouse client, and gRPC cannot be used in such a child: its calls can hang "
            "or crash the process. Start worker processes with multiprocessing's 'spawn' or "
            "'forkserver' start method, or fork before the first client is made"
        )
