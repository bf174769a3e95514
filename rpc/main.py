"""`statehoused`: run the Statehouse daemon, or one of its maintenance commands.

statehoused [flags]                 serve (see --help; --config FILE, --print-config)
statehoused snapshot [--addr A]     ask a running daemon for a snapshot
statehoused verify [--data-dir D]   check state and indexes against the event log, report damage
statehoused rebuild [--data-dir D] [--into NEW]  rebuild state and indexes from the event log, then verify
statehoused recover-wal [--data-dir D] [--accept-loss]  cut a store with a damaged log back to what reads
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from rpc import affinity, logs
from rpc.monitor import AddressError, split_address
from rpc.server import AddressInUse, Daemon, DaemonConfig
from statehouse import Statehouse, StatehouseError, UnavailableError, __version__
from statehouse._names import DEFAULT_MAX_VALUE_BYTES
from storage import StorageError, StoreLockedError
from storage.retention import Policies
from storage.store import SYNC_METHODS

EXIT_OK, EXIT_USAGE, EXIT_ADDRESS, EXIT_DATA_DIR = 0, 2, 3, 4


def _at_least(minimum: float, convert: type = int) -> Callable[[str], Any]:
    """An argparse type: a number (int or float) no smaller than `minimum`."""
    kind = "a whole number" if convert is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    return parse


def _http_addr(text: str) -> str:
    """An argparse type: HOST:PORT for the HTTP endpoint, or "off"."""
    if text != "off":
        try:
            split_address(text)
        except AddressError as exc:
            raise argparse.ArgumentTypeError(f"{exc}, nor off") from None
    return text


def _pin_cpu(text: str) -> str:
    """An argparse type: auto, off or a CPU number (rpc.affinity)."""
    try:
        return affinity.check(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_positive_int = _at_least(1)
_count = _at_least(0)
_seconds = _at_least(0, float)


def _finite_seconds(text: str) -> float:
    """An argparse type: seconds, at least 0 and finite."""
    seconds = float(_seconds(text))
    if not seconds < 1e12:  # inf, or a time no clock reaches
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {text}")
    return seconds


def _namespace_policies(text: str) -> str:
    """An argparse type: per-namespace retention, `NS=POLICY;NS=POLICY` (checked, kept as text)."""
    try:
        Policies.parse_namespaces(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


# Options that are not settings: they are never read from a config file.
_NOT_SETTINGS = {"help", "version", "config", "print_config"}


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and the key."""


def _settings(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in _NOT_SETTINGS}


def load_config(path: Path, parser: argparse.ArgumentParser) -> dict[str, str]:
    """A TOML config file's settings, checked like the flags they stand for, as strings.

    Keys are the flags' names with underscores (`data_dir`, `max_value_bytes`).
    """
    try:
        with path.open("rb") as file:
            table = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    settings = _settings(parser)
    unknown = sorted(set(table) - set(settings))
    if unknown:
        known = ", ".join(sorted(settings))
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}; known keys: {known}")
    found = {}
    for key, value in table.items():
        action = settings[key]
        if isinstance(value, (dict, list, bool)) or value is None:
            raise ConfigError(f"config file {path}: {key} must be a string or a number, got {value!r}")
        text = str(value)
        try:
            if action.type is not None:
                action.type(text)  # type: ignore[operator]
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise ConfigError(f"config file {path}: {key} = {value!r}: {exc}") from None
        if action.choices is not None and text not in action.choices:
            choices = ", ".join(map(str, action.choices))
            raise ConfigError(f"config file {path}: {key} = {value!r}: must be one of {choices}")
        found[key] = text
    return found


def build_parser(config: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """The daemon's flags. Each default is its environment variable (STATEHOUSE_ and the
    flag's name) if set, else the config file's value (`config`), else the built-in default."""
    env = {**{f"STATEHOUSE_{key.upper()}": value for key, value in (config or {}).items()}, **os.environ}
    parser = argparse.ArgumentParser(
        prog="statehoused",
        description="Statehouse daemon: transactional, versioned, durable state for AI agents.",
        epilog=(
            "Maintenance commands: statehoused snapshot | verify | rebuild | recover-wal (each has --help). "
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
        "--http-addr",
        type=_http_addr,
        default=env.get("STATEHOUSE_HTTP_ADDR", "127.0.0.1:50052"),
        help="HOST:PORT of the HTTP endpoint for operators (/healthz, /readyz, /actors, /metrics), "
        "or off; port 0 picks a free port (env STATEHOUSE_HTTP_ADDR, default %(default)s)",
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
        "--pin-cpu",
        type=_pin_cpu,
        default=env.get("STATEHOUSE_PIN_CPU", affinity.AUTO),
        help=(
            "keep the daemon's Python threads, which share one GIL, on one CPU: auto = the one it "
            "starts on (when it may use more than one), off = wherever the OS puts them, or a CPU "
            "number; RocksDB's background threads use every CPU (env STATEHOUSE_PIN_CPU, "
            "default %(default)s)"
        ),
    )
    parser.add_argument(
        "--local-socket",
        default=env.get("STATEHOUSE_LOCAL_SOCKET", "auto"),
        help=(
            "the Unix socket that SDK clients on this machine send their calls on once they have "
            "reached the daemon over --addr: auto = one for this data directory in "
            "$XDG_RUNTIME_DIR/statehoused-<uid> (or under /tmp), off = none, or a path "
            "(env STATEHOUSE_LOCAL_SOCKET, default %(default)s)"
        ),
    )
    limits = [
        ("--max-open-txns", "STATEHOUSE_MAX_OPEN_TXNS", 10_000, "open transactions per namespace"),
        ("--max-ops-per-txn", "STATEHOUSE_MAX_OPS_PER_TXN", 10_000, "writes/deletes per transaction"),
        ("--max-txn-bytes", "STATEHOUSE_MAX_TXN_BYTES", 64 * 1024 * 1024, "bytes staged per transaction"),
        ("--max-message-bytes", "STATEHOUSE_MAX_MESSAGE_BYTES", 64 * 1024 * 1024, "bytes per gRPC message"),
    ]
    for flag, var, default, what in [
        ("--watch-max-events", "STATEHOUSE_WATCH_MAX_EVENTS", 10_000, "events"),
        ("--watch-max-bytes", "STATEHOUSE_WATCH_MAX_BYTES", 16 * 1024 * 1024, "bytes"),
    ]:
        parser.add_argument(
            flag,
            type=_positive_int,
            default=env.get(var, str(default)),
            help=f"a watcher with more {what} than this waiting for it is cut off and must resume "
            f"(env {var}, default %(default)s)",
        )
    parser.add_argument(
        "--max-streams",
        type=_positive_int,
        default=env.get("STATEHOUSE_MAX_STREAMS", "256"),
        help="most replay and watch streams open at once, each holding a thread while open; more is "
        "RESOURCE_EXHAUSTED (env STATEHOUSE_MAX_STREAMS, default %(default)s)",
    )
    parser.add_argument(
        "--max-sessions",
        type=_positive_int,
        default=env.get("STATEHOUSE_MAX_SESSIONS", "1024"),
        help="most session streams (the SDK's, one per client busy at a time) open at once, each "
        "holding a thread while open; a client refused one makes plain calls instead "
        "(env STATEHOUSE_MAX_SESSIONS, default %(default)s)",
    )
    for flag, var, default, what in limits:
        parser.add_argument(
            flag,
            type=_positive_int,
            default=env.get(var, str(default)),
            help=f"most {what}; more is RESOURCE_EXHAUSTED (env {var}, default %(default)s)",
        )
    parser.add_argument(
        "--snapshot-dir",
        type=Path,
        default=env.get("STATEHOUSE_SNAPSHOT_DIR"),
        help="where snapshots go (env STATEHOUSE_SNAPSHOT_DIR, default: <data-dir>.snapshots beside it)",
    )
    parser.add_argument(
        "--snapshot-every-commits",
        type=_count,
        default=env.get("STATEHOUSE_SNAPSHOT_EVERY_COMMITS", "0"),
        help="take a snapshot after this many commits, 0 = never (env STATEHOUSE_SNAPSHOT_EVERY_COMMITS)",
    )
    parser.add_argument(
        "--snapshot-every-seconds",
        type=_seconds,
        default=env.get("STATEHOUSE_SNAPSHOT_EVERY_SECONDS", "0"),
        help="take a snapshot this often, 0 = never (env STATEHOUSE_SNAPSHOT_EVERY_SECONDS)",
    )
    parser.add_argument(
        "--snapshot-keep",
        type=_count,
        default=env.get("STATEHOUSE_SNAPSHOT_KEEP", "0"),
        help="keep only the newest N snapshots, 0 = keep all (env STATEHOUSE_SNAPSHOT_KEEP)",
    )
    retention = [
        ("--retain-versions", _count, "0", "keep each key's N newest versions and let older history go, "
         "0 = keep all; a key's latest value is always kept"),
        ("--retain-seconds", _finite_seconds, "0", "keep the history of the last S seconds and let older "
         "history go, 0 = keep all; with --retain-versions, history goes only once both let it"),
        ("--retain-namespace", _namespace_policies, "", "retention of some namespaces instead of the "
         "daemon-wide one: NS=POLICY;NS=POLICY, where POLICY is all, versions:N, seconds:S or both"),
        ("--retention-every-seconds", _at_least(0.001, float), "60", "how often retention lets go what "
         "the policies allow, in the background (statehousectl compact does it at once)"),
    ]  # fmt: skip
    for option, kind, initial, text in retention:
        name = "STATEHOUSE_" + option[2:].upper().replace("-", "_")
        shown = f"{text} (env {name}, default {initial or 'none'})"
        parser.add_argument(option, type=kind, default=env.get(name, initial), help=shown)
    parser.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default=env.get("STATEHOUSE_LOG_LEVEL", "info"),
        help="env STATEHOUSE_LOG_LEVEL, default %(default)s",
    )
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=env.get("STATEHOUSE_LOG_FORMAT", "auto"),
        help="auto = console on a terminal, JSON lines otherwise (env STATEHOUSE_LOG_FORMAT)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=env.get("STATEHOUSE_CONFIG"),
        help="a TOML file of settings, keys named like the flags (data_dir = ...); precedence: "
        "flags, then environment variables, then this file, then defaults (env STATEHOUSE_CONFIG)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective settings as TOML (a valid --config file) and exit",
    )
    parser.add_argument("--version", action="version", version=f"statehoused {__version__}")
    return parser


def print_config(config: DaemonConfig) -> None:
    """The settings a daemon built from `config` runs with, as a TOML file `--config` accepts."""
    print(f"# statehoused {__version__}: effective settings (flags > environment > config file > defaults)")
    for dest, value in config.settings().items():
        if value is None:
            print(f"# {dest} is not set")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            print(f"{dest} = {value}")
        else:
            print(f"{dest} = {json.dumps(str(value))}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    return serve(argv)


def snapshot(argv: list[str]) -> int:
    """`statehoused snapshot`: ask a running daemon for an online snapshot."""
    parser = argparse.ArgumentParser(
        prog="statehoused snapshot",
        description="Take an online snapshot of a running daemon (commits continue). "
        "Prints the snapshot directory; restore by starting statehoused with --data-dir on a copy of it.",
    )
    parser.add_argument(
        "--addr",
        default=os.environ.get("STATEHOUSE_ADDR", "127.0.0.1:50051"),
        help="the daemon's HOST:PORT (env STATEHOUSE_ADDR, default %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        with Statehouse(args.addr) as client:
            info = client.create_snapshot()
    except StatehouseError as exc:
        print(f"statehoused snapshot: {exc}", file=sys.stderr)
        return EXIT_ADDRESS if isinstance(exc, UnavailableError) else 1
    print(f"{info.path}\tcommit_ts={info.commit_ts}")
    return EXIT_OK


def _maintenance_parser(command: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"statehoused {command}",
        description=description,
        epilog=epilog
        or "Exit codes: 0 consistent, 1 damage or divergence found (DAMAGE: names what could not be read, "
        "DIVERGENCE: the first divergence), 2 bad arguments, 4 no store there, or in use by a running "
        "statehoused (stop it first).",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("STATEHOUSE_DATA_DIR", "./statehouse-data")),
        help="the RocksDB data directory (env STATEHOUSE_DATA_DIR, default %(default)s)",
    )
    parser.add_argument(
        "--progress-every",
        type=_positive_int,
        default=100_000,
        help="print progress to stderr every N events (and at least once a second), default %(default)s",
    )
    return parser


def _advice(report: Any, data_dir: Path) -> list[str]:
    """What to do about what verify found: what a rebuild can and cannot bring back."""
    if report.ok:
        return []
    if report.damage and all(d.table == "MARK" for d in report.damage):
        return [
            f"nothing else is damaged: remove {data_dir / 'DURABLE_COMMIT_TS'} "
            "(the next start writes it again)"
        ]
    if report.damaged("STORE"):
        return [
            "no rebuild can bring back what the store lost: restore a snapshot kept on other storage; or, "
            "when the write-ahead log is what is damaged or missing, see what point-in-time recovery "
            f"would cut: statehoused recover-wal --data-dir {data_dir}"
        ]
    events = [d for d in report.damage if d.table == "EVENTS"]
    if events:
        lost = ", ".join(
            f"{d.first_ts} to {d.last_ts if d.last_ts is not None else 'the end'}" for d in events
        )
        return [
            f"the event log itself is damaged: no rebuild can bring back commit_ts {lost}; restore a "
            "snapshot kept on other storage (a snapshot on the same disk shares its table files with "
            "the store: see docs/failure-modes.md, damaged data)"
        ]
    if report.damage:
        return [
            "the event log is whole, so everything can be brought back: "
            f"statehoused rebuild --data-dir {data_dir} --into NEW_DIR  (writes a new store from the log; "
            "then start the daemon on NEW_DIR)"
        ]
    if report.divergence is not None and report.divergence.table == "EVENTS":
        return ["the event log itself is damaged; rebuild cannot repair that (restore a snapshot)"]
    return [f"repair: statehoused rebuild --data-dir {data_dir}  (rebuilds everything from the log)"]


def verify(argv: list[str]) -> int:
    """`statehoused verify`: fold the event log and compare it with the stored tables."""
    from storage import recovery

    args = _maintenance_parser(
        "verify",
        "Fold the event log from empty and check that it equals the stored state, version history, "
        "per-agent event index, transaction-id index and last commit_ts, and that the log itself is "
        "whole (commit_ts 1, 2, 3, ... and every key's versions 1, 2, 3, ...). Reads every record, so "
        "it also finds damaged data (DAMAGE: what could not be read, with the commits lost). Opens the "
        "store read-only; the daemon must be stopped (or verify a snapshot of it).",
    ).parse_args(argv)
    try:
        report = recovery.verify(
            args.data_dir,
            progress=lambda p: print(f"statehoused verify: {p}", file=sys.stderr, flush=True),
            progress_every=args.progress_every,
        )
    except StorageError as exc:  # StoreLockedError included: a daemon holds the directory
        print(f"statehoused verify: {exc}", file=sys.stderr)
        return EXIT_DATA_DIR
    print(report.summary())
    for line in _advice(report, args.data_dir):
        print(line)
    return EXIT_OK if report.ok else 1


def rebuild(argv: list[str]) -> int:
    """`statehoused rebuild`: rewrite state and indexes from the event log alone, then verify."""
    from storage import recovery

    parser = _maintenance_parser(
        "rebuild",
        "Rebuild the state table, version history, per-agent event index, transaction-id index and "
        "last commit_ts from the event log alone (the way out of a damaged state table), then run "
        "verify. In place by default; with --into, a new store is written there and the data directory "
        "is left as it is (the way out when the tables hold damaged blocks). Changes nothing if the log "
        "itself is damaged. Safe to run again if interrupted. The daemon must be stopped.",
    )
    parser.add_argument(
        "--into",
        type=Path,
        help="write the rebuilt store into this new directory (it must not exist) and leave --data-dir "
        "unchanged",
    )
    args = parser.parse_args(argv)

    def progress(p: object) -> None:
        print(f"statehoused rebuild: {p}", file=sys.stderr, flush=True)

    try:
        if args.into is None:
            result = recovery.rebuild(args.data_dir, progress=progress, progress_every=args.progress_every)
        else:
            result = recovery.rebuild_into(
                args.data_dir, args.into, progress=progress, progress_every=args.progress_every
            )
    except (recovery.LogDamagedError, recovery.TablesDamagedError) as exc:
        print(f"statehoused rebuild: {exc}; nothing was changed", file=sys.stderr)
        if isinstance(exc, recovery.LogDamagedError):
            print("restore a snapshot: a rebuild can only reproduce what the log says", file=sys.stderr)
        return 1
    except StorageError as exc:
        print(f"statehoused rebuild: {exc}", file=sys.stderr)
        return EXIT_DATA_DIR
    print(result.summary())
    checked = args.data_dir if args.into is None else args.into
    return verify(["--data-dir", str(checked), "--progress-every", str(args.progress_every)])


def recover_wal(argv: list[str]) -> int:
    """`statehoused recover-wal`: cut a store whose write-ahead log is damaged back to what can be read."""
    from storage import recovery

    parser = _maintenance_parser(
        "recover-wal",
        "For a store the daemon refuses because its write-ahead log is damaged before its end, or ends "
        "before its durable mark (a log file removed or cut short): say how far point-in-time recovery "
        "would cut it back, and with --accept-loss do it. The log files are first copied to "
        "<data-dir>.wal-<time>/. The alternative is to restore a snapshot. The daemon must be stopped.",
        epilog="Exit codes: 0 recovered, or nothing to recover; 1 a recovery is needed and was not done "
        "(run again with --accept-loss); 2 bad arguments; 4 no store there, in use by a running "
        "statehoused, or damaged beyond the log (restore a snapshot).",
    )
    parser.add_argument(
        "--accept-loss",
        action="store_true",
        help="do it: drop every commit after the first damage of the log (they are listed first)",
    )
    args = parser.parse_args(argv)
    try:
        result = recovery.recover_wal(args.data_dir, accept_loss=args.accept_loss)
    except StorageError as exc:
        print(f"statehoused recover-wal: {exc}", file=sys.stderr)
        return EXIT_DATA_DIR
    print(result.summary())
    return 1 if result.needed and not result.done else EXIT_OK


def build_config(args: argparse.Namespace) -> DaemonConfig:
    """The daemon's configuration from the parsed settings (checked by `serve`)."""
    return DaemonConfig.from_settings(vars(args))


def serve(argv: list[str]) -> int:
    first = build_parser()
    known, _ = first.parse_known_args(argv)
    settings: dict[str, str] = {}
    if known.config is not None:
        try:
            settings = load_config(known.config, first)
        except ConfigError as exc:
            print(f"statehoused: {exc}", file=sys.stderr)
            return EXIT_USAGE
    parser = build_parser(settings)
    args = parser.parse_args(argv)
    if args.print_config:
        print_config(build_config(args))
        return EXIT_OK
    # argparse checks `choices` only for values given on the command line, not env defaults.
    if args.log_level not in logs.LEVELS:
        parser.error(f"--log-level / STATEHOUSE_LOG_LEVEL must be one of {', '.join(logs.LEVELS)}")
    if args.log_format not in logs.FORMATS:
        parser.error(f"--log-format / STATEHOUSE_LOG_FORMAT must be one of {', '.join(logs.FORMATS)}")
    if args.sync_method not in SYNC_METHODS:
        parser.error(f"--sync-method / STATEHOUSE_SYNC_METHOD must be one of {', '.join(SYNC_METHODS)}")
    try:
        affinity.choose(args.pin_cpu)
    except affinity.AffinityError as exc:
        parser.error(f"--pin-cpu / STATEHOUSE_PIN_CPU: {exc}")
    logs.configure(args.log_level, args.log_format)
    log = structlog.get_logger("statehouse.main")
    if args.max_message_bytes <= args.max_value_bytes:
        print("statehoused: --max-message-bytes must be larger than --max-value-bytes", file=sys.stderr)
        return EXIT_USAGE
    if args.txn_timeout_ms > args.max_txn_timeout_ms:
        print("statehoused: --txn-timeout-ms cannot exceed --max-txn-timeout-ms", file=sys.stderr)
        return EXIT_USAGE
    config = build_config(args)
    # The handler only appends to a list: setting a threading.Event from a signal handler can
    # deadlock, when the signal lands while the main thread holds the Event's own lock (in
    # wait()), which the handler, run on that same thread, then waits for forever.
    signalled: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: signalled.append(received))
    # A data directory this start creates is removed again if the start fails before serving.
    created = not Path(config.data_dir).exists()
    try:
        daemon = Daemon(config).start()
    except AddressInUse as exc:
        if created:
            shutil.rmtree(config.data_dir, ignore_errors=True)
        print(
            f"statehoused: {exc} (another statehoused there? --addr and --http-addr pick others)",
            file=sys.stderr,
        )
        return EXIT_ADDRESS
    except StoreLockedError as exc:
        print(f"statehoused: {exc}", file=sys.stderr)
        return EXIT_DATA_DIR
    except StorageError as exc:
        print(f"statehoused: {exc}", file=sys.stderr)
        return EXIT_DATA_DIR
    print(ready_message(daemon), flush=True)
    try:
        while not signalled:
            time.sleep(0.2)  # the handler runs meanwhile; the loop sees it within 0.2 s
        log.info("server.stopping", reason="signal", signal=signal.Signals(signalled[0]).name)
    finally:
        daemon.stop()
    return EXIT_OK


def ready_message(daemon: Daemon) -> str:
    """What a person reads on stdout once the daemon serves: where, and what to try next."""
    config = daemon.config
    host = config.addr.rsplit(":", 1)[0]
    addr = f"{host}:{daemon.port}"
    lines = [f"statehoused {__version__} is ready", f"  gRPC  {addr}"]
    if daemon.http_addr is not None:
        lines.append(f"  HTTP  http://{daemon.http_addr}  (/healthz /readyz /actors /metrics)")
    assert daemon.store is not None
    lines.append(f"  data  {Path(config.data_dir).resolve()}  (last commit_ts {daemon.store.last_commit_ts})")
    ctl = Path(sys.executable).with_name("statehousectl")
    if ctl.is_relative_to(Path.cwd()):
        ctl = ctl.relative_to(Path.cwd())
    lines.append(
        f"try:   {ctl if ctl.exists() else 'statehousectl'} --addr {addr} health    (Ctrl-C stops it)"
    )
    return "\n".join(lines)


COMMANDS = {"snapshot": snapshot, "verify": verify, "rebuild": rebuild, "recover-wal": recover_wal}

if __name__ == "__main__":
    sys.exit(main())
