"""`statehoused`: run the Statehouse daemon."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

import structlog

from actors import ActorConfig
from rpc import logs
from rpc.server import AddressInUse, Daemon, DaemonConfig
from statehouse import __version__
from statehouse._names import DEFAULT_MAX_VALUE_BYTES
from storage import StorageError, StoreLockedError
from storage.store import SYNC_METHODS

EXIT_OK, EXIT_USAGE, EXIT_ADDRESS, EXIT_DATA_DIR = 0, 2, 3, 4


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="statehoused",
        description="Statehouse daemon: transactional, versioned, durable state for AI agents.",
        epilog=(
            "Exit codes: 0 clean shutdown, 2 bad arguments, 3 cannot listen on --addr, "
            "4 data directory unusable (for example locked by another statehoused)."
        ),
    )
    parser.add_argument(
        "--addr",
        default=env.get("STATEHOUSE_ADDR", "127.0.0.1:50051"),
        help="HOST:PORT to listen on; port 0 picks a free port (env STATEHOUSE_ADDR, default %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env.get("STATEHOUSE_DATA_DIR", "./statehouse-data")),
        help="RocksDB data directory, created if missing (env STATEHOUSE_DATA_DIR, default %(default)s)",
    )
    parser.add_argument(
        "--max-value-bytes",
        type=_positive_int,
        default=env.get("STATEHOUSE_MAX_VALUE_BYTES", str(DEFAULT_MAX_VALUE_BYTES)),
        help="largest accepted value, in bytes of compact JSON (env STATEHOUSE_MAX_VALUE_BYTES)",
    )
    parser.add_argument(
        "--txn-timeout-ms",
        type=_positive_int,
        default=env.get("STATEHOUSE_TXN_TIMEOUT_MS", "30000"),
        help="timeout of a transaction that names none (env STATEHOUSE_TXN_TIMEOUT_MS, default %(default)s)",
    )
    parser.add_argument(
        "--max-txn-timeout-ms",
        type=_positive_int,
        default=env.get("STATEHOUSE_MAX_TXN_TIMEOUT_MS", "600000"),
        help="largest timeout a client may ask for (env STATEHOUSE_MAX_TXN_TIMEOUT_MS, default %(default)s)",
    )
    parser.add_argument(
        "--sync-method",
        choices=SYNC_METHODS,
        default=env.get("STATEHOUSE_SYNC_METHOD", "flush_wal"),
        help=(
            "how a commit group is made durable: flush_wal = write the batch, then fsync the WAL "
            "(releases the GIL, so more commits join each group); sync_write = one write with "
            "sync=True (holds the GIL throughout) (env STATEHOUSE_SYNC_METHOD, default %(default)s)"
        ),
    )
    parser.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default=env.get("STATEHOUSE_LOG_LEVEL", "info"),
        help="env STATEHOUSE_LOG_LEVEL, default %(default)s",
    )
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default=env.get("STATEHOUSE_LOG_FORMAT", "auto"),
        help="auto = console on a terminal, JSON lines otherwise (env STATEHOUSE_LOG_FORMAT)",
    )
    parser.add_argument("--version", action="version", version=f"statehoused {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    log = structlog.get_logger("statehouse.main")
    if args.txn_timeout_ms > args.max_txn_timeout_ms:
        print("statehoused: --txn-timeout-ms cannot exceed --max-txn-timeout-ms", file=sys.stderr)
        return EXIT_USAGE
    if args.sync_method not in SYNC_METHODS:  # a bad STATEHOUSE_SYNC_METHOD skips argparse's check
        print(f"statehoused: --sync-method must be one of {', '.join(SYNC_METHODS)}", file=sys.stderr)
        return EXIT_USAGE
    config = DaemonConfig(
        data_dir=args.data_dir,
        addr=args.addr,
        max_value_bytes=args.max_value_bytes,
        max_message_bytes=max(64 * 1024 * 1024, 4 * args.max_value_bytes),
        sync_method=args.sync_method,
        actors=ActorConfig(
            default_txn_timeout_ms=args.txn_timeout_ms, max_txn_timeout_ms=args.max_txn_timeout_ms
        ),
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        daemon = Daemon(config).start()
    except AddressInUse as exc:
        print(f"statehoused: {exc}", file=sys.stderr)
        return EXIT_ADDRESS
    except StoreLockedError as exc:
        print(f"statehoused: {exc}", file=sys.stderr)
        return EXIT_DATA_DIR
    except StorageError as exc:
        print(f"statehoused: {exc}", file=sys.stderr)
        return EXIT_DATA_DIR
    while not stop.wait(1.0):
        pass
    log.info("server.stopping", reason="signal")
    daemon.stop()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
