"""`statehousectl`: inspect a running statehoused from the shell, through the public SDK only.

Every command prints a readable table or lines for people, or JSON with
`--json` for scripts; exit codes are listed in `EXIT_CODES_HELP`.
"""

from __future__ import annotations

import base64
import collections
import datetime
import functools
import logging
import statistics
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import click
import orjson

from statehouse import __version__
from statehouse._watch import Watch
from statehouse.client import Statehouse
from statehouse.exceptions import (
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    StatehouseError,
    UnavailableError,
)
from statehouse.types import KeyVersion, ReplayEvent, StateResult

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "cli",
    "main",
]

EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_ERROR = 4
EXIT_INTERRUPTED = 130

DEFAULT_CLI_ADDR = "127.0.0.1:50051"
DEFAULT_CLI_HTTP_ADDR = "127.0.0.1:50052"
DEFAULT_CLI_TIMEOUT = 10.0

EXIT_CODES_HELP = """\b
Exit codes:
  0    ok
  1    not found (a missing key, version or history)
  2    usage error (bad option or argument, or a name the daemon rejects)
  3    unavailable (daemon unreachable, or no answer within --timeout)
  4    any other error the daemon reports
  130  interrupted (Ctrl-C)

commit_ts is a logical commit counter (1, 2, 3, ...), not a time;
COMMITTED_AT is the commit's wall-clock time in UTC, where the daemon
recorded one."""

F = TypeVar("F", bound=Callable[..., Any])


# -- formatting -----------------------------------------------------------------------


# How --json writes a bytes value: an object with this one key, holding the bytes in base64.
BYTES_MARKER = "$base64"
# How many bytes of a bytes value a table shows, in hex.
BYTES_SHOWN = 16


def _bytes_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {BYTES_MARKER: base64.b64encode(value).decode("ascii")}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def compact(value: Any) -> str:
    """A value as compact JSON (ints stay ints); a bytes value as its size and first bytes in hex."""
    if isinstance(value, bytes):
        shown = value[:BYTES_SHOWN].hex()
        more = "..." if len(value) > BYTES_SHOWN else ""
        return f"<{len(value)} bytes: {shown}{more}>" if value else "<0 bytes>"
    return orjson.dumps(value, default=_bytes_json).decode()


def wall_clock(committed_at_ms: int) -> str | None:
    """ISO-8601 UTC time of a commit, or None when the daemon recorded none (0)."""
    if not committed_at_ms:
        return None
    moment = datetime.datetime.fromtimestamp(committed_at_ms / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def echo_json(value: Any, *, indent: bool = False) -> None:
    """Print JSON; a bytes value is written as {"$base64": "..."}."""
    option = orjson.OPT_INDENT_2 if indent else 0
    click.echo(orjson.dumps(value, default=_bytes_json, option=option).decode())


def echo_table(headers: list[str], rows: Iterable[list[str]]) -> None:
    for line in table_lines(headers, list(rows)):
        click.echo(line)


def table_lines(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Rows under headers, in columns as wide as their widest cell."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=False)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]


def state_json(agent: str, key: str, state: StateResult) -> dict[str, Any]:
    return {
        "agent": agent,
        "key": key,
        "value": state.value,
        "version": state.version,
        "commit_ts": state.commit_ts,
    }


def version_json(version: KeyVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "commit_ts": version.commit_ts,
        "committed_at": wall_clock(version.committed_at_ms),
        "committed_at_ms": version.committed_at_ms or None,
        "deleted": version.deleted,
        "value": version.value,
    }


def event_json(event: ReplayEvent) -> dict[str, Any]:
    return {
        "commit_ts": event.commit_ts,
        "committed_at": wall_clock(event.committed_at_ms),
        "committed_at_ms": event.committed_at_ms or None,
        "txn_id": event.txn_id,
        "namespace": event.namespace,
        "agent": event.agent_id,
        "operations": [
            {"key": op.key, "purged": True}
            if op.purged
            else {"key": op.key, "value": op.value, "version": op.version, "deleted": op.deleted}
            for op in event.operations
        ],
    }


def event_lines(event: ReplayEvent) -> Iterator[str]:
    """One line per operation: `[commit_ts 7] 2026-...Z  key = value  (version 2)`."""
    when = wall_clock(event.committed_at_ms) or "-"
    for op in event.operations:
        if op.purged:
            yield f"[commit_ts {event.commit_ts}] {when}  keys under {op.key!r} purged, history included"
            continue
        change = f"{op.key} deleted" if op.deleted else f"{op.key} = {compact(op.value)}"
        yield f"[commit_ts {event.commit_ts}] {when}  {change}  (version {op.version})"


def only_prefix(event: ReplayEvent, prefix: str) -> ReplayEvent | None:
    """The event with only the operations on keys under `prefix`; None if none are."""
    if not prefix:
        return event
    operations = [
        op
        for op in event.operations
        if op.key.startswith(prefix) or (op.purged and prefix.startswith(op.key))
    ]
    if not operations:
        return None
    return ReplayEvent(
        event.txn_id, event.commit_ts, operations, event.namespace, event.agent_id, event.committed_at_ms
    )


def print_event(event: ReplayEvent, as_json: bool) -> None:
    if as_json:
        echo_json(event_json(event))
    else:
        for line in event_lines(event):
            click.echo(line)


# -- errors and the command group ----------------------------------------------------------


def fail(code: int, message: str) -> NoReturn:
    click.echo(f"statehousectl: {message}", err=True)
    raise click.exceptions.Exit(code)


# The group's options, each of which takes a value; they may also follow the command.
GLOBAL_OPTIONS = ("--addr", "--http-addr", "--namespace", "-n", "--timeout")


def globals_first(args: list[str]) -> list[str]:
    """`args` with the global options that follow the command moved before it, so that
    `statehousectl get AGENT KEY --addr X` means `statehousectl --addr X get AGENT KEY`."""
    joined = tuple(f"{option}=" for option in GLOBAL_OPTIONS if option.startswith("--"))
    moved: list[str] = []
    rest: list[str] = []
    n = 0
    while n < len(args):
        token = args[n]
        if token == "--":  # what follows is arguments, whatever it looks like
            rest.extend(args[n:])
            break
        if token in GLOBAL_OPTIONS:
            moved.extend(args[n : n + 2])
            n += 2
            continue
        (moved if token.startswith(joined) else rest).append(token)
        n += 1
    return moved + rest


class StatehouseGroup(click.Group):
    """Turns SDK errors and Ctrl-C into one stderr line and the documented exit code; takes
    the global options after the command too."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, globals_first(args))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except NotFoundError as exc:
            fail(EXIT_NOT_FOUND, f"not found: {exc}")
        except InvalidArgumentError as exc:
            fail(EXIT_USAGE, f"invalid argument: {exc}")
        except (UnavailableError, DeadlineExceededError) as exc:
            session = ctx.find_object(Session)
            where = session.addr if session is not None else "the daemon"
            said = str(exc)
            fail(
                EXIT_UNAVAILABLE,
                said
                if said.startswith("no statehoused at")
                else f"statehoused at {where} is unavailable: {said}",
            )
        except StatehouseError as exc:
            fail(EXIT_ERROR, f"error{f' ({exc.code})' if exc.code else ''}: {exc}")


@dataclass
class Session:
    """The global options, and the client made from them on first use."""

    addr: str
    namespace: str
    timeout: float
    ctx: click.Context
    http_addr: str = DEFAULT_CLI_HTTP_ADDR
    # --http-addr or $STATEHOUSE_HTTP_ADDR given; if not, `actors` asks the daemon for it.
    http_addr_given: bool = True
    _client: Statehouse | None = field(default=None, repr=False)

    @property
    def client(self) -> Statehouse:
        if self._client is None:
            self._client = self.ctx.with_resource(
                Statehouse(self.addr, namespace=self.namespace, timeout=self.timeout)
            )
        return self._client


def json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(command)


def with_client(command: Callable[..., None]) -> Callable[..., None]:
    """Pass the command the client as its first argument."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        command(click.get_current_context().find_object(Session).client, *args, **kwargs)  # type: ignore[union-attr]

    return run


commit_ts_type = click.IntRange(min=1)


@click.group(
    cls=StatehouseGroup, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--addr",
    envvar="STATEHOUSE_ADDR",
    default=DEFAULT_CLI_ADDR,
    show_default=True,
    show_envvar=True,
    help="host:port of statehoused.",
)
@click.option(
    "--http-addr",
    envvar="STATEHOUSE_HTTP_ADDR",
    default=DEFAULT_CLI_HTTP_ADDR,
    show_default=True,
    show_envvar=True,
    help="host:port of statehoused's HTTP endpoint (for `actors`).",
)
@click.option("--namespace", "-n", default="default", show_default=True, help="Namespace to read.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_CLI_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the daemon (calls are retried while it is unavailable).",
)
@click.version_option(__version__, "--cli-version", prog_name="statehousectl")
@click.pass_context
def cli(ctx: click.Context, addr: str, http_addr: str, namespace: str, timeout: float) -> None:
    """Inspect a running statehoused: read keys, history and commits, follow them live, take snapshots."""
    # The SDK's warning while it retries a daemon it never reached: the CLI's own error line says it.
    logging.getLogger("statehouse").setLevel(logging.ERROR)
    given = ctx.get_parameter_source("http_addr") != click.core.ParameterSource.DEFAULT
    ctx.obj = Session(addr, namespace, timeout, ctx, http_addr, given)


# -- service ------------------------------------------------------------------------------


@cli.command()
@json_option
@with_client
def health(client: Statehouse, as_json: bool) -> None:
    """Whether the daemon is serving (exit 3 if not)."""
    status = client.health()
    if as_json:
        echo_json({"status": status, "addr": client.url})
    else:
        click.echo(f"{status}  ({client.url})")
    if status != "ok":
        raise click.exceptions.Exit(EXIT_UNAVAILABLE)


@cli.command()
@json_option
@with_client
def version(client: Statehouse, as_json: bool) -> None:
    """The daemon's version and git sha, and this CLI's version."""
    daemon_version, git_sha = client.version()
    if as_json:
        echo_json(
            {"daemon": {"version": daemon_version, "git_sha": git_sha}, "cli": {"version": __version__}}
        )
    else:
        echo_table(
            ["", "VERSION", "GIT_SHA"],
            [["statehoused", daemon_version, git_sha or "-"], ["statehousectl", __version__, "-"]],
        )


@cli.command("purge")
@click.argument("agent")
@click.option("--prefix", default="", help="Only the keys starting with this (default: every key).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@with_client
def purge_command(client: Statehouse, agent: str, prefix: str, yes: bool, as_json: bool) -> None:
    """Remove AGENT's keys (or those under --prefix) and their whole history, for good."""
    what = f"every key of agent {agent!r}" if not prefix else f"the keys of agent {agent!r} under {prefix!r}"
    if not yes:
        click.confirm(f"Purge {what} in namespace {client.namespace!r}, history included?", abort=True)
    commit_ts = client.purge(agent, key_prefix=prefix)
    if as_json:
        echo_json({"agent": agent, "prefix": prefix, "commit_ts": commit_ts})
    else:
        click.echo(f"purged {what} at commit_ts {commit_ts}")


@cli.command("compact")
@json_option
@with_client
def compact_command(client: Statehouse, as_json: bool) -> None:
    """Apply retention now, and rewrite the daemon's data files so that purged or retired data
    leaves them; waits until done."""
    seconds = client.compact()
    if as_json:
        echo_json({"seconds": seconds})
    else:
        click.echo(f"compacted in {seconds:.3f} s")


@cli.command()
@json_option
@with_client
def snapshot(client: Statehouse, as_json: bool) -> None:
    """Take an online snapshot; prints its path on the daemon's machine and its commit_ts."""
    info = client.create_snapshot()
    if as_json:
        echo_json({"path": info.path, "commit_ts": info.commit_ts})
    else:
        click.echo(f"path       {info.path}")
        click.echo(f"commit_ts  {info.commit_ts}  (logical commit counter, not a time)")


@cli.command()
@click.option(
    "--wait",
    type=click.FloatRange(min=0, min_open=True, max=30),
    default=1.0,
    show_default=True,
    help="Seconds each actor has to answer before it shows as stuck.",
)
@json_option
@click.pass_obj
def actors(session: Session, wait: float, as_json: bool) -> None:
    """The ledger and every namespace actor: open transactions, mailboxes, stuck ones.

    Read from the daemon's HTTP endpoint: --http-addr, or else the one the daemon at --addr
    says it has.
    """
    if not session.http_addr_given:
        told = session.client.http_addr()
        if told is None:
            fail(EXIT_UNAVAILABLE, f"statehoused at {session.addr} runs without an HTTP endpoint")
        session.http_addr = told
    url = f"http://{session.http_addr}/actors?timeout={wait:g}"
    try:
        with urllib.request.urlopen(url, timeout=session.timeout + wait) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:
        fail(EXIT_ERROR, f"{url} answered {exc.code}: {exc.read().decode(errors='replace').strip()}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(EXIT_UNAVAILABLE, f"statehoused's HTTP endpoint at {session.http_addr} is unavailable: {reason}")
    report = orjson.loads(body)
    if as_json:
        echo_json(report)
        return
    for line in actors_lines(report):
        click.echo(line)


def actors_lines(report: dict[str, Any]) -> Iterator[str]:
    """The /actors report for people: the ledger, a table of namespace actors, the watches."""
    ledger = report["ledger"]
    state, queue = ledger["state"], ledger["queue_depth"]
    yield f"ledger  {state}  last_commit_ts {ledger['last_commit_ts']}  queue {queue}"
    if ledger["state"] == "ok":
        sizes = ledger["recent_group_sizes"]
        syncs = ledger["recent_sync_ms"]
        if syncs:
            yield (
                f"        synced writes {ledger['synced_writes']}, {ledger['commits_per_synced_write']} "
                f"commits each; recent {len(syncs)}: sizes {min(sizes)}-{max(sizes)}, "
                f"p50 {statistics.median(syncs):.2f} ms, max {max(syncs):.2f} ms"
            )
    yield ""
    rows = [
        [
            ns["namespace"],
            ns["state"],
            str(ns["open_transactions"]),
            "-" if ns.get("oldest_transaction_age_s") is None else f"{ns['oldest_transaction_age_s']:.3f}",
            str(ns["mailbox_depth"]),
            str(ns.get("commits", "-")),
            f"{ns['idle_s']:.3f}",
        ]
        for ns in report["namespaces"]
    ]
    if rows:
        headers = ["NAMESPACE", "STATE", "OPEN_TXNS", "OLDEST_TXN_S", "MAILBOX", "COMMITS", "IDLE_S"]
        yield from table_lines(headers, rows)
    else:
        yield "no live namespace actors"
    watches = report["watches"]
    yield ""
    dormant = report.get("dormant_namespaces", 0)
    yield (
        f"{report['live_actors']} live actor{'' if report['live_actors'] == 1 else 's'}, "
        f"{report['stuck_actors']} stuck"
        + (f", {dormant} namespace{'' if dormant == 1 else 's'} dormant" if dormant else "")
        + "; "
        f"{watches['open']} watches open, {watches['cut_offs']} cut off since start; "
        f"answered in {report['answered_in_ms']:.1f} ms"
    )


# -- reads --------------------------------------------------------------------------------


@cli.command()
@click.argument("agent")
@click.argument("key")
@click.option("--version", "at_version", type=click.IntRange(min=1), help="Read this version of the key.")
@json_option
@with_client
def get(client: Statehouse, agent: str, key: str, at_version: int | None, as_json: bool) -> None:
    """A key's value, version and commit_ts (exit 1 if it does not exist)."""
    if at_version is None:
        state = client.get_state(agent, key)
    else:
        state = client.get_state_at_version(agent, key, at_version)
    if not state.exists:
        which = f"version {at_version} of key" if at_version is not None else "key"
        fail(
            EXIT_NOT_FOUND, f"{which} {key!r} of agent {agent!r} not found in namespace {client.namespace!r}"
        )
    if as_json:
        echo_json(state_json(agent, key, state))
        return
    click.echo(f"agent      {agent}")
    click.echo(f"key        {key}")
    click.echo(f"value      {compact(state.value)}")
    click.echo(f"version    {state.version}")
    click.echo(f"commit_ts  {state.commit_ts}  (logical commit counter, not a time)")


def cursor_options(command: Callable[..., None]) -> Callable[..., None]:
    """--reverse, --limit and --after, handed to the command as one `cursor` dict of the
    keyword arguments list_keys, scan_prefix and list_agents take."""

    @functools.wraps(command)
    def with_cursor(
        *args: Any, reverse: bool, limit: int | None, start_after: str | None, **kwargs: Any
    ) -> None:
        command(*args, cursor={"reverse": reverse, "limit": limit, "start_after": start_after}, **kwargs)

    options = (
        click.option("--reverse", is_flag=True, help="Descending order."),
        click.option("--limit", type=click.IntRange(min=1), help="At most N."),
        click.option("--after", "start_after", help="Start after this name (below it with --reverse)."),
    )
    for option in reversed(options):
        with_cursor = option(with_cursor)
    return with_cursor


def echo_names(names: list[str], as_json: bool) -> None:
    """Names one a line, or (--json) a list."""
    if as_json:
        echo_json(names)
    else:
        for name in names:
            click.echo(name)


@cli.command()
@click.argument("agent")
@click.option("--prefix", default="", help="Only keys starting with this.")
@click.option("--at", "at_commit_ts", type=commit_ts_type, help="As of this commit_ts (time travel).")
@cursor_options
@json_option
@with_client
def keys(
    client: Statehouse,
    agent: str,
    prefix: str,
    at_commit_ts: int | None,
    cursor: dict[str, Any],
    as_json: bool,
) -> None:
    """The agent's live keys, in order, one a line."""
    echo_names(client.list_keys(agent, at_commit_ts=at_commit_ts, prefix=prefix, **cursor), as_json)


@cli.command()
@click.option("--prefix", default="", help="Only agents whose id starts with this.")
@cursor_options
@json_option
@with_client
def agents(client: Statehouse, prefix: str, cursor: dict[str, Any], as_json: bool) -> None:
    """The namespace's agents that hold live keys, in order, one a line."""
    echo_names(client.list_agents(prefix=prefix, **cursor), as_json)


@cli.command()
@click.argument("agent")
@click.argument("prefix")
@click.option("--at", "at_commit_ts", type=commit_ts_type, help="As of this commit_ts (time travel).")
@cursor_options
@json_option
@with_client
def scan(
    client: Statehouse,
    agent: str,
    prefix: str,
    at_commit_ts: int | None,
    cursor: dict[str, Any],
    as_json: bool,
) -> None:
    """Live keys starting with PREFIX ("" for all), with their values, as a table."""
    entries = client.scan_prefix(agent, prefix, at_commit_ts=at_commit_ts, **cursor)
    if as_json:
        echo_json([state_json(agent, entry.key or "", entry) for entry in entries])
        return
    echo_table(
        ["KEY", "VERSION", "COMMIT_TS", "VALUE"],
        ([e.key or "", str(e.version), str(e.commit_ts), compact(e.value)] for e in entries),
    )


@cli.command()
@click.argument("agent")
@click.argument("key")
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N versions.")
@json_option
@with_client
def history(client: Statehouse, agent: str, key: str, limit: int | None, as_json: bool) -> None:
    """A key's versions, newest first; deletes show as deleted (exit 1 if it never existed)."""
    versions = client.key_history(agent, key, limit=limit)
    if not versions:
        fail(
            EXIT_NOT_FOUND, f"key {key!r} of agent {agent!r} has no history in namespace {client.namespace!r}"
        )
    if as_json:
        echo_json([version_json(v) for v in versions])
        return
    echo_table(
        ["VERSION", "COMMIT_TS", "COMMITTED_AT (UTC)", "VALUE"],
        (
            [
                str(v.version),
                str(v.commit_ts),
                wall_clock(v.committed_at_ms) or "-",
                "(deleted)" if v.deleted else compact(v.value),
            ]
            for v in versions
        ),
    )


@cli.command()
@click.argument("agent")
@click.option("--at", "at_commit_ts", type=commit_ts_type, help="As of this commit_ts (time travel).")
@json_option
@with_client
def dump(client: Statehouse, agent: str, at_commit_ts: int | None, as_json: bool) -> None:
    """The agent's whole state as one JSON object, key -> value (indented; compact with --json)."""
    state = client.get_agent_state(agent, at_commit_ts=at_commit_ts)
    echo_json(state.values, indent=not as_json)


# -- commits ------------------------------------------------------------------------------


@cli.command()
@click.argument("agent")
@click.option("--from", "start_ts", type=commit_ts_type, help="First commit_ts (inclusive).")
@click.option("--to", "end_ts", type=commit_ts_type, help="Last commit_ts (inclusive).")
@json_option
@with_client
def replay(client: Statehouse, agent: str, start_ts: int | None, end_ts: int | None, as_json: bool) -> None:
    """The agent's commits in commit_ts order: one line per operation, or one JSON object per commit."""
    for event in client.replay(agent, start_ts, end_ts):
        print_event(event, as_json)


@cli.command()
@click.argument("agent")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new commits until Ctrl-C.")
@click.option("--prefix", default="", help="Only operations on keys starting with this.")
@click.option("--from", "start_ts", type=commit_ts_type, help="Every commit from this commit_ts on.")
@click.option(
    "--lines",
    "-l",
    "count",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Without --from: how many of the last commits to print first.",
)
@json_option
@with_client
def tail(
    client: Statehouse,
    agent: str,
    follow: bool,
    prefix: str,
    start_ts: int | None,
    count: int,
    as_json: bool,
) -> None:
    """The agent's last commits (or those from --from); with -f, then follow new ones live."""
    if start_ts is None:
        matching = (only_prefix(e, prefix) for e in client.replay(agent))
        last = collections.deque((e for e in matching if e is not None), maxlen=count)
        for event in last:
            print_event(event, as_json)
        # Follow from right after the last commit read, so none is missed in between.
        start_ts = last[-1].commit_ts + 1 if last else 1
    elif not follow:
        for event in client.replay(agent, start_ts):
            selected = only_prefix(event, prefix)
            if selected is not None:
                print_event(selected, as_json)
    if not follow:
        return
    with client.watch(agent, key_prefix=prefix, start_ts=start_ts) as watch:
        click.echo(
            f"statehousectl: following agent {agent!r} from commit_ts {start_ts} (Ctrl-C to stop)", err=True
        )
        follow_until_interrupted(watch, as_json)


def follow_until_interrupted(watch: Watch, as_json: bool) -> None:
    """Print the watch's events from a helper thread, so that Ctrl-C always reaches the main
    thread (not one blocked inside gRPC) and ends the watch cleanly."""
    failure: list[BaseException] = []

    def follow() -> None:
        try:
            for event in watch:
                print_event(event, as_json)
        except BaseException as exc:  # handed to the main thread
            failure.append(exc)

    follower = threading.Thread(target=follow, name="statehousectl-follow", daemon=True)
    follower.start()
    try:
        while follower.is_alive():
            follower.join(0.2)
    except KeyboardInterrupt:
        watch.cancel()
        follower.join(5)
        raise
    if failure:
        raise failure[0]


# -- LangGraph ----------------------------------------------------------------------------


@cli.command()
@click.argument("thread_id")
@click.option(
    "--checkpoint-ns", default=None, help="Only this checkpoint namespace (a subgraph's); default: all."
)
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N checkpoints.")
@json_option
@click.pass_obj
def thread(
    session: Session, thread_id: str, checkpoint_ns: str | None, limit: int | None, as_json: bool
) -> None:
    """A LangGraph thread kept by StatehouseSaver, oldest checkpoint first: each checkpoint's step,
    source and the channels it changed, then its pending writes. Reads namespace "langgraph"
    unless --namespace is given; needs `pip install "statehouse[langgraph]"`."""
    try:
        from statehouse.langgraph import StatehouseSaver
    except ImportError as exc:
        fail(EXIT_USAGE, str(exc))
    ctx = click.get_current_context()
    explicit = ctx.parent is not None and ctx.parent.get_parameter_source("namespace") not in (
        click.core.ParameterSource.DEFAULT,
        None,
    )
    namespace = session.namespace if explicit else "langgraph"
    saver = StatehouseSaver(session.client, namespace=namespace)
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id}}
    if checkpoint_ns is not None:
        config["configurable"]["checkpoint_ns"] = checkpoint_ns
    found = list(saver.list(config, limit=limit))  # type: ignore[arg-type]
    if not found:
        fail(EXIT_NOT_FOUND, f"not found: no checkpoint of thread {thread_id!r} in namespace {namespace!r}")
    found.sort(key=lambda item: item.config["configurable"]["checkpoint_id"])  # ids grow with time
    by_id = {
        (i.config["configurable"]["checkpoint_ns"], i.config["configurable"]["checkpoint_id"]): i
        for i in found
    }
    rows = [
        checkpoint_json(item, by_id.get((item.config["configurable"]["checkpoint_ns"], parent_id(item))))
        for item in found
    ]
    if as_json:
        echo_json(rows)
        return
    click.echo(f"thread {thread_id!r} (namespace {namespace!r}): {len(rows)} checkpoints, oldest first")
    for row in rows:
        where = f" in {row['checkpoint_ns']!r}" if row["checkpoint_ns"] else ""
        click.echo(f"step {row['step']} ({row['source']}){where}")
        click.echo(f"  checkpoint {row['checkpoint_id']}")
        for channel, value in row["changed"].items():
            click.echo(f"  {channel} = {value}")
        for write in row["writes"]:
            click.echo(f"  pending write {write['channel']} = {write['value']}")


def parent_id(item: Any) -> str | None:
    return item.parent_config["configurable"]["checkpoint_id"] if item.parent_config else None


def short(value: Any, width: int = 100) -> str:
    """repr() of a value, cut to `width` characters."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def checkpoint_json(item: Any, parent: Any) -> dict[str, Any]:
    """A checkpoint tuple as `statehousectl thread` shows it (values as short reprs)."""
    configurable = item.config["configurable"]
    versions = item.checkpoint.get("channel_versions", {})
    before = parent.checkpoint.get("channel_versions", {}) if parent is not None else {}
    values = item.checkpoint.get("channel_values", {})
    return {
        "checkpoint_id": configurable["checkpoint_id"],
        "checkpoint_ns": configurable.get("checkpoint_ns", ""),
        "parent_id": parent_id(item),
        "step": item.metadata.get("step"),
        "source": item.metadata.get("source"),
        "changed": {
            channel: short(values[channel])
            for channel, version in versions.items()
            if before.get(channel) != version and channel in values and not channel.startswith("branch:")
        },
        "writes": [
            {"task_id": task, "channel": channel, "value": short(value)}
            for task, channel, value in item.pending_writes or ()
        ],
    }


def main() -> None:
    cli.main(prog_name="statehousectl")


if __name__ == "__main__":
    main()
