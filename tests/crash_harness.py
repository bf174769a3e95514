"""Crash test: the real daemon under concurrent load, SIGKILLed at random moments,
every acknowledged commit checked against a model.

    .venv/bin/python tests/crash_harness.py --kills 20 [--forget] [--clients 4] [--seed S] [--data-dir D]

One round: start `statehoused` on the data directory, let several client
threads (our SDK, one `Statehouse` each) run random transactions -- 1-4
writes/deletes over agents of two namespaces, many keys shared between the
clients so their versions interleave, values naming the writer and its
sequence number, some aborts, some empty commits -- then SIGKILL the daemon
after a random, bounded delay while commits are in flight. The next round
restarts it on the same directory and first checks the store against the
history the clients recorded:

- every acknowledged commit (commit() returned a commit_ts) is in the log at
  that commit_ts with exactly its operations, and each of its versions reads
  back through `get_state_at_version`; a commit whose call failed because
  the daemon died ("maybe") is wholly there or wholly absent, and stays so
  after later restarts; aborted and empty transactions wrote nothing;
- the log (every agent's `replay`, merged by commit_ts) holds commit_ts
  1..last gap-free, one transaction each, per-key versions 1, 2, 3, ... in
  commit_ts order, and is unchanged below the last check's end;
- commit_ts respects real time (a commit acknowledged before another began
  is ordered before it) and continues after each restart;
- folding the log from empty gives exactly what `get_state` and `list_keys`
  answer, and no key has a version past the log's last one.

`--forget` adds what takes history away: a client purging agents and key
prefixes and calling compact(), a retention policy on the daemon, and kills
that wait for a purge or a compaction to be in flight. Its checker
(`ForgetChecker`) settles each commit in flight by redoing it under its
idempotency key, then checks the fold of commits and purges instead of a
log that never changes.

The summary line gives what was checked; the script exits 1 on a violation.
`run_crash_test` is the same thing for pytest; `CrashHarness` has the parts
(start a daemon, drive clients until something happens, verify) that the
named crash point tests in tests/system/test_crash.py reuse.
"""

from __future__ import annotations

import argparse
import bisect
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, this file's directory (tests/) comes first on sys.path, where tests/statehouse/
# (no __init__.py) would pass for the statehouse package unless the repository root is on it too.
sys.path.append(str(Path(__file__).resolve().parents[1]))

from helpers import typed

from statehouse import HistoryCompactedError, NotFoundError, Statehouse, StatehouseError
from statehouse.testing import DaemonProcess

Target = tuple[str, str, str]  # (namespace, agent_id, key)
Agent = tuple[str, str]  # (namespace, agent_id)
Op = tuple[bool, Any]  # (True, value) for a write, (False, None) for a delete

NAMESPACES = ("default", "crash-b")
SHARED_AGENTS: tuple[Agent, ...] = (("default", "shared-0"), ("default", "shared-1"), ("crash-b", "shared-2"))
# Keys every client writes, so versions of one key interleave between clients;
# one non-ASCII key checks list_keys' UTF-8 byte order.
SHARED_KEYS = ("k0", "k1", "k2", "k3", "k4", "task/10", "task/2", "ключ-é")
OWN_KEYS = ("p0", "p1", "p2")

CALL_TIMEOUT = 10.0  # seconds, every client call
JOIN_TIMEOUT = 60.0  # a worker whose daemon is gone finishes well within this
ROUND_TIMEOUT = 600.0  # a round of max_txns transactions per client, without a kill
DEATH_TIMEOUT = 5.0  # how long a worker that saw an error waits for the daemon to be seen dead


def own_agent(client: int) -> Agent:
    return ("default", f"client-{client}")


def same_op(a: Op, b: Op) -> bool:
    return a[0] == b[0] and typed(a[1]) == typed(b[1])


def show(op: Op) -> str:
    return f"write {op[1]!r}" if op[0] else "delete"


@dataclass(frozen=True)
class Profile:
    """What a client's random transactions look like."""

    p_abort: float = 0.08
    p_empty: float = 0.06
    p_delete: float = 0.2
    p_shared: float = 0.7
    p_readback: float = 0.1  # after an ack, read a written key back at once
    max_ops: int = 4


@dataclass
class Attempt:
    """One transaction as its client saw it."""

    client: int
    seq: int
    round: int
    txn_id: str
    ops: dict[Target, Op]
    outcome: str  # "acked", "maybe" (the commit call failed) or "aborted"
    commit_ts: int | None = None
    started: float = 0.0  # time.monotonic() just before commit()
    ended: float = 0.0  # ... and just after it returned or raised
    error: str = ""
    namespace: str = "default"  # the transaction's own
    key: str | None = None  # its idempotency key (forget mode), so that a check can redo it
    redone: bool = False  # a maybe that a check committed by redoing it (it had not committed)

    def describe(self) -> str:
        ops = ", ".join(f"{t[0]}/{t[1]}/{t[2]}: {show(op)}" for t, op in sorted(self.ops.items()))
        ts = f" commit_ts={self.commit_ts}" if self.commit_ts is not None else ""
        return (
            f"txn {self.txn_id} (client {self.client} seq {self.seq} round {self.round}, "
            f"{self.outcome}{ts}) [{ops or 'empty'}]"
        )


@dataclass
class PurgeAttempt:
    """One purge as the forgetter saw it (forget mode)."""

    round: int
    target: Target  # (namespace, agent_id, key_prefix)
    outcome: str  # "acked", "maybe" (the call failed), then, once a check decided, "absent"
    commit_ts: int | None = None
    started: float = 0.0
    ended: float = 0.0
    failed: bool = False  # the call failed (the outcome was "maybe" until a check decided it)

    def describe(self) -> str:
        namespace, agent, prefix = self.target
        ts = f" commit_ts={self.commit_ts}" if self.commit_ts is not None else ""
        return f"purge of {namespace}/{agent} prefix {prefix!r} (round {self.round}, {self.outcome}{ts})"


@dataclass
class History:
    """Everything the clients did, shared by the worker threads."""

    attempts: list[Attempt] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)  # seen live by the clients
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # code -> count, after death
    next_seq: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    purges: list[PurgeAttempt] = field(default_factory=list)  # forget mode
    compactions: int = 0  # forget mode: compact() calls that returned
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, attempt: Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)

    def add_purge(self, purge: PurgeAttempt) -> None:
        with self.lock:
            self.purges.append(purge)

    def seq(self, client: int) -> int:
        with self.lock:
            self.next_seq[client] += 1
            return self.next_seq[client]

    def count(self, outcome: str) -> int:
        with self.lock:
            return sum(1 for a in self.attempts if a.outcome == outcome)


class Worker(threading.Thread):
    """One client: random transactions until told to stop, the daemon dies, or max_txns."""

    def __init__(
        self,
        history: History,
        client: int,
        clients: int,
        daemon: DaemonProcess,
        round_no: int,
        seed: str,
        profile: Profile,
        max_txns: int,
        start_line: threading.Barrier,
        stop: threading.Event,
        killed: threading.Event,
        keyed: bool = False,
    ) -> None:
        super().__init__(name=f"crash-client-{client}", daemon=True)
        self.keyed = keyed  # give each transaction an idempotency key
        self.history = history
        self.client = client
        self.clients = clients
        self.daemon_process = daemon
        self.round_no = round_no
        self.rng = random.Random(seed)
        self.profile = profile
        self.max_txns = max_txns
        self.start_line = start_line
        self.stop = stop
        self.killed = killed
        self.done = 0

    def run(self) -> None:
        try:
            # retry=None: a worker records each call's failure when the daemon dies
            # (it is restarted only after the round); retries are tested in test_retry.py.
            with Statehouse(self.daemon_process.addr, timeout=CALL_TIMEOUT, retry=None) as client:
                self.start_line.wait(JOIN_TIMEOUT)
                for _ in range(self.max_txns):
                    if self.stop.is_set() or not self.one(client):
                        return
                    self.done += 1
        except threading.BrokenBarrierError:
            self.history.violation(f"client {self.client}: the round never started")
        except Exception as exc:  # a bug in the harness or the SDK: never hide it
            self.history.violation(f"client {self.client}: unexpected {exc!r}")

    def target(self) -> Target:
        rng = self.rng
        if rng.random() < self.profile.p_shared:
            return (*rng.choice(SHARED_AGENTS), rng.choice(SHARED_KEYS))
        return (*own_agent(self.client), rng.choice(OWN_KEYS))

    def value(self, seq: int, op: int) -> Any:
        c, r = self.client, self.round_no
        kind = self.rng.randrange(4)
        if kind == 0:
            return {"writer": f"c{c}", "seq": seq, "op": op, "round": r, "trail": [c, seq, {"op": op}]}
        if kind == 1:
            return [f"c{c}", seq, op]
        if kind == 2:
            return f"c{c}/s{seq}/o{op}"
        return c * 10**15 + seq * 10 + op

    def one(self, client: Statehouse) -> bool:
        """One transaction; False when the worker should stop (the daemon is gone)."""
        rng, profile = self.rng, self.profile
        seq = self.history.seq(self.client)
        namespace = rng.choice(NAMESPACES)
        key = f"client-{self.client}/seq-{seq}" if self.keyed else None
        try:
            tx = client.begin_transaction(namespace=namespace, idempotency_key=key)
        except StatehouseError as exc:
            return self.failed("begin", exc)
        roll = rng.random()
        kind = (
            "abort" if roll < profile.p_abort else "empty" if roll < profile.p_abort + profile.p_empty else ""
        )
        ops: dict[Target, Op] = {}
        if kind != "empty":
            for n in range(rng.randint(1, profile.max_ops)):
                target = self.target()
                if rng.random() < profile.p_delete:
                    tx.delete(target[1], target[2], namespace=target[0])
                    ops[target] = (False, None)
                else:
                    value = self.value(seq, n)
                    tx.write(target[1], target[2], value, namespace=target[0])
                    ops[target] = (True, value)  # the last write to a key wins
        attempt = Attempt(
            self.client, seq, self.round_no, tx.txn_id, ops, "aborted", namespace=namespace, key=key
        )
        if kind == "abort":
            self.history.add(attempt)
            try:
                tx.abort()
            except StatehouseError as exc:
                return self.failed("abort", exc)
            return True
        attempt.started = time.monotonic()
        try:
            commit_ts = tx.commit()
        except StatehouseError as exc:
            attempt.ended = time.monotonic()
            attempt.outcome, attempt.error = "maybe", f"{exc.code}: {exc}"
            self.history.add(attempt)
            return self.failed("commit", exc)
        attempt.ended = time.monotonic()
        attempt.outcome, attempt.commit_ts = "acked", commit_ts
        self.history.add(attempt)
        if ops and rng.random() < profile.p_readback:
            return self.read_back(client, attempt)
        return True

    def read_back(self, client: Statehouse, attempt: Attempt) -> bool:
        """Reads see every acknowledged commit: read one key just committed."""
        namespace, agent, key = target = self.rng.choice(sorted(attempt.ops))
        try:
            state = client.get_state(agent, key, namespace=namespace)
        except StatehouseError as exc:
            return self.failed("get_state", exc)
        assert attempt.commit_ts is not None
        if self.keyed and (state.commit_ts, state.exists) == (0, False):
            return True  # forget mode: a purge may have taken the key since
        if state.commit_ts < attempt.commit_ts:
            self.history.violation(
                f"read after ack: {namespace}/{agent}/{key} read at commit_ts {state.commit_ts}, "
                f"but {attempt.describe()} was acknowledged"
            )
        elif state.commit_ts == attempt.commit_ts and not same_op(
            (state.exists, state.value), attempt.ops[target]
        ):
            self.history.violation(
                f"read after ack: {namespace}/{agent}/{key} reads {state.value!r} (exists={state.exists}) "
                f"at the commit_ts of {attempt.describe()}"
            )
        return True

    def failed(self, what: str, exc: StatehouseError) -> bool:
        """A call failed: fine once the daemon is dead (stop), a violation while it lives."""
        process = self.daemon_process.process
        dead = self.killed.is_set()
        if not dead and process is not None:
            try:
                process.wait(DEATH_TIMEOUT)
                dead = True
            except subprocess.TimeoutExpired:
                dead = False
        if not dead:
            self.history.violation(
                f"{self.name}: {what} failed while the daemon was running: {exc.code}: {exc}"
            )
        elif exc.code != "UNAVAILABLE":
            self.history.violation(
                f"{self.name}: {what} failed with {exc.code} when the daemon died "
                f"(expected UNAVAILABLE): {exc}"
            )
        with self.history.lock:
            self.history.errors[exc.code] += 1
        return False


class Forgetter(Worker):
    """Forget mode: purges and compactions beside the clients, until told to stop or the daemon dies.

    It purges a client's own agent (whole, or the keys under "p1") or a
    shared agent (whole, or under "k", "k1" or "task/"), and now and then
    calls compact(), which runs a retention pass first; the daemon's own
    retainer runs meanwhile. It is one thread, so at most its last purge of a
    round has an unknown outcome.
    """

    calling: threading.Event  # set while a purge or compact() call is in flight

    def run(self) -> None:
        self.name = "crash-forgetter"
        try:
            with Statehouse(self.daemon_process.addr, timeout=CALL_TIMEOUT, retry=None) as client:
                self.start_line.wait(JOIN_TIMEOUT)
                # The pause paces the purges among the commits; it orders nothing.
                while not self.stop.wait(self.rng.uniform(0.005, 0.05)):
                    if not self.one(client):
                        return
                    self.done += 1
        except threading.BrokenBarrierError:
            self.history.violation("forgetter: the round never started")
        except Exception as exc:  # a bug in the harness or the SDK: never hide it
            self.history.violation(f"forgetter: unexpected {exc!r}")

    def one(self, client: Statehouse) -> bool:
        rng = self.rng
        if rng.random() < 0.1:
            try:
                self.calling.set()
                client.compact()
            except StatehouseError as exc:
                return self.failed("compact", exc)
            finally:
                self.calling.clear()
            with self.history.lock:
                self.history.compactions += 1
            return True
        if rng.random() < 0.6:
            target = (*own_agent(rng.randrange(self.clients)), rng.choice(("", "p1")))
        else:
            target = (*rng.choice(SHARED_AGENTS), rng.choice(("", "k", "k1", "task/")))
        purge = PurgeAttempt(self.round_no, target, "acked", started=time.monotonic())
        try:
            self.calling.set()
            purge.commit_ts = client.purge(target[1], key_prefix=target[2], namespace=target[0])
        except StatehouseError as exc:
            purge.outcome, purge.failed = "maybe", True
            return self.failed("purge", exc)
        finally:
            self.calling.clear()
            purge.ended = time.monotonic()
            self.history.add_purge(purge)
        return True


@dataclass
class Check:
    """What one verification found."""

    last_ts: int
    log: dict[int, str]  # commit_ts -> txn_id
    violations: list[str]
    acked_verified: int = 0
    versions_read: int = 0
    keys_read: int = 0


class Checker:
    """Compares a running daemon with the history; remembers what earlier checks saw."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.log: dict[int, str] = {}  # commit_ts -> txn_id, as of the last check
        self.maybe_seen: dict[str, bool] = {}  # maybe txn_id -> present at the last check
        self.round_floor: dict[int, int] = {}  # round -> last commit_ts when it started
        self.checks = 0

    def agents(self) -> list[Agent]:
        found = set(SHARED_AGENTS)
        for attempt in self.history.attempts:
            found.update((t[0], t[1]) for t in attempt.ops)
        return sorted(found)

    def _check_latest(
        self, client: Statehouse, target: Target, state: dict[Target, tuple[Op, int, int]], bad: list[str]
    ) -> bool:
        """get_state of `target` answers the fold's `state` (False, and a violation, if not)."""
        namespace, agent, key = target
        got = client.get_state(agent, key, namespace=namespace)
        want = (False, typed(None), 0, 0)
        if target in state:
            op, version, ts = state[target]
            want = (op[0], typed(op[1]), version, ts)
        if (got.exists, typed(got.value), got.version, got.commit_ts) == want:
            return True
        bad.append(
            f"get_state {namespace}/{agent}/{key} = exists={got.exists} value={got.value!r} "
            f"version={got.version} commit_ts={got.commit_ts}; the fold of the log has {want}"
        )
        return False

    def _check_listed(
        self, client: Statehouse, state: dict[Target, tuple[Op, int, int]], bad: list[str]
    ) -> None:
        """list_keys of every agent answers the live keys of the fold's `state`."""
        for namespace, agent in self.agents():
            live = sorted(
                (t[2] for t, (op, _v, _ts) in state.items() if t[:2] == (namespace, agent) and op[0]),
                key=lambda k: k.encode(),
            )
            listed = client.list_keys(agent, namespace=namespace)
            if listed != live:
                bad.append(f"list_keys {namespace}/{agent} = {listed}; the fold of the log has {live}")

    def verify(
        self,
        client: Statehouse,
        *,
        all_versions: bool = True,
        round_starting: int | None = None,
        snapshot_of: int | None = None,
    ) -> Check:
        """Check the daemon behind `client` (no commits may run meanwhile).

        `snapshot_of=ts`: the daemon runs on a snapshot taken at commit_ts
        `ts`: its log must be exactly the last check's log up to `ts`, and
        nothing here is remembered. Otherwise the daemon runs on the data
        directory the history was written to: after this check the log and
        the fate of every "maybe" commit are fixed, and `round_starting` is
        the round whose commits must all be ordered after this point.
        """
        with self.history.lock:
            attempts = list(self.history.attempts)
        bad: list[str] = []
        implicated: set[str] = set()  # txn ids a violation names
        by_txn_attempt = {a.txn_id: a for a in attempts}

        # The newest commit_ts: an empty commit answers it, writing nothing.
        last_ts = client.begin_transaction().commit()

        # The log, folded from every agent's replay (merged by commit_ts).
        txn_at: dict[int, str] = {}
        at_ms: dict[int, int] = {}
        ops_at: dict[int, dict[Target, tuple[Op, int]]] = defaultdict(dict)
        for namespace, agent in self.agents():
            previous = 0
            for event in client.replay(agent, namespace=namespace):
                ts = event.commit_ts
                where = f"replay of {namespace}/{agent}"
                if ts <= previous:
                    bad.append(f"{where}: commit_ts {ts} after {previous} (not increasing)")
                previous = ts
                if ts > last_ts:
                    bad.append(f"{where}: commit_ts {ts} beyond the last commit_ts {last_ts}")
                if txn_at.setdefault(ts, event.txn_id) != event.txn_id:
                    bad.append(f"{where}: commit_ts {ts} is txn {event.txn_id} here, {txn_at[ts]} elsewhere")
                if at_ms.setdefault(ts, event.committed_at_ms) != event.committed_at_ms:
                    bad.append(f"{where}: commit_ts {ts} has two committed_at_ms")
                for op in event.operations:
                    target = (namespace, agent, op.key)
                    if target in ops_at[ts]:
                        bad.append(f"{where}: commit_ts {ts} writes {op.key!r} twice")
                    ops_at[ts][target] = ((not op.deleted, op.value), op.version)
                if not event.operations:
                    bad.append(f"{where}: commit_ts {ts} has no operations")
        missing = sorted(set(range(1, last_ts + 1)) - set(txn_at))
        if missing:
            bad.append(f"log has gaps: commit_ts {_ranges(missing)} missing (last commit_ts {last_ts})")

        # Each logged transaction is one the clients committed, whole and exact.
        ts_of: dict[str, int] = {}
        for ts in sorted(txn_at):
            txn_id = txn_at[ts]
            if txn_id in ts_of:
                implicated.add(txn_id)
                bad.append(f"txn {txn_id} is in the log twice, at commit_ts {ts_of[txn_id]} and {ts}")
            ts_of[txn_id] = ts
            attempt = by_txn_attempt.get(txn_id)
            logged = {target: op for target, (op, _version) in ops_at[ts].items()}
            if attempt is None:
                bad.append(f"commit_ts {ts}: txn {txn_id} was never committed by a client: {logged}")
                continue
            size = len(bad)
            if attempt.outcome == "aborted":
                bad.append(f"commit_ts {ts}: aborted {attempt.describe()} is in the log")
            elif not attempt.ops:
                bad.append(f"commit_ts {ts}: empty {attempt.describe()} wrote an event")
            elif attempt.outcome == "acked" and attempt.commit_ts != ts:
                bad.append(f"commit_ts {ts}: {attempt.describe()} is in the log at another commit_ts")
            absent = sorted(set(attempt.ops) - set(logged))
            extra = sorted(set(logged) - set(attempt.ops))
            if absent:
                bad.append(f"commit_ts {ts}: half of {attempt.describe()} is visible; missing {absent}")
            if extra:
                bad.append(f"commit_ts {ts}: {attempt.describe()} has operations it never wrote: {extra}")
            for target in set(attempt.ops) & set(logged):
                if not same_op(logged[target], attempt.ops[target]):
                    bad.append(
                        f"commit_ts {ts}: {'/'.join(target)} is {show(logged[target])} in the log, "
                        f"but {attempt.describe()} did {show(attempt.ops[target])}"
                    )
            if len(bad) > size:
                implicated.add(txn_id)

        # Acknowledged commits are all there; maybe-commits keep their fate.
        for attempt in attempts:
            present = attempt.txn_id in ts_of
            if attempt.outcome == "acked" and attempt.ops and not present:
                assert attempt.commit_ts is not None
                if snapshot_of is None or attempt.commit_ts <= snapshot_of:
                    implicated.add(attempt.txn_id)
                    bad.append(f"acknowledged commit lost: {attempt.describe()}")
            elif attempt.outcome == "acked" and not attempt.ops:
                assert attempt.commit_ts is not None
                if snapshot_of is None and attempt.commit_ts > last_ts:
                    implicated.add(attempt.txn_id)
                    bad.append(
                        f"empty {attempt.describe()} answered a commit_ts past the log's end {last_ts}"
                    )
            elif attempt.outcome == "maybe" and snapshot_of is None:
                before = self.maybe_seen.get(attempt.txn_id)
                if before is not None and before != present:
                    fate = "appeared" if present else "vanished"
                    bad.append(f"maybe-commit {fate} after a restart: {attempt.describe()}")

        # Per-key versions 1, 2, 3, ... in commit_ts order; the fold of the log.
        state: dict[Target, tuple[Op, int, int]] = {}  # target -> (op, version, commit_ts)
        versions: dict[Target, list[tuple[int, Op, int]]] = defaultdict(list)
        for ts in sorted(ops_at):
            for target, (op, version) in sorted(ops_at[ts].items()):
                expected = state[target][1] + 1 if target in state else 1
                if version != expected:
                    implicated.add(txn_at[ts])
                    bad.append(
                        f"commit_ts {ts}: {'/'.join(target)} has version {version}, expected {expected}"
                    )
                state[target] = (op, version, ts)
                versions[target].append((version, op, ts))

        if snapshot_of is not None:
            if last_ts != snapshot_of:
                bad.append(
                    f"snapshot taken at commit_ts {snapshot_of} restores with last commit_ts {last_ts}"
                )
            expected_log = {ts: t for ts, t in self.log.items() if ts <= snapshot_of}
            if txn_at != expected_log:
                diff = sorted(set(txn_at.items()) ^ set(expected_log.items()))[:5]
                bad.append(f"snapshot log differs from the data directory's log: {diff}")
        else:
            for ts, txn_id in sorted(self.log.items()):
                if txn_at.get(ts) != txn_id:
                    bad.append(f"commit_ts {ts} was txn {txn_id}, now {txn_at.get(ts)}: the log changed")

        # get_state and list_keys answer the fold; versions read back one by one.
        targets: set[Target] = set(state)
        for attempt in attempts:
            targets.update(attempt.ops)
        keys_read = 0
        for target in sorted(targets):
            namespace, agent, key = target
            keys_read += 1
            if not self._check_latest(client, target, state, bad):
                implicated.add(txn_at.get(state[target][2] if target in state else 0, ""))
            beyond = len(versions.get(target, ())) + 1
            try:
                extra_version = client.get_state_at_version(agent, key, beyond, namespace=namespace)
            except NotFoundError:
                pass
            else:
                bad.append(
                    f"{namespace}/{agent}/{key} has a version {beyond} not in the log: {extra_version}"
                )
        self._check_listed(client, state, bad)

        since = 0 if all_versions else max(self.log, default=0)
        versions_read = 0
        for target, history in sorted(versions.items()):
            namespace, agent, key = target
            for version, op, ts in history:
                if ts <= since:
                    continue
                got = client.get_state_at_version(agent, key, version, namespace=namespace)
                versions_read += 1
                if (got.exists, typed(got.value), got.version, got.commit_ts) != (
                    op[0],
                    typed(op[1]),
                    version,
                    ts,
                ):
                    implicated.add(txn_at[ts])
                    bad.append(
                        f"get_state_at_version {namespace}/{agent}/{key} v{version} = exists={got.exists} "
                        f"value={got.value!r} commit_ts={got.commit_ts}; the log has {show(op)} at {ts}"
                    )

        # commit_ts follows real time: acknowledged before another began = ordered before it.
        bad.extend(_real_time_order([a for a in attempts if a.outcome == "acked"], implicated))
        if snapshot_of is None:
            for attempt in attempts:
                floor = self.round_floor.get(attempt.round)
                if attempt.outcome != "acked" or floor is None:
                    continue
                assert attempt.commit_ts is not None
                if attempt.commit_ts < floor or (attempt.ops and attempt.commit_ts == floor):
                    implicated.add(attempt.txn_id)
                    bad.append(
                        f"commit_ts did not continue after the restart before round {attempt.round} "
                        f"(last commit_ts then {floor}): {attempt.describe()}"
                    )

        verified = 0
        for attempt in attempts:
            if attempt.outcome != "acked" or attempt.txn_id in implicated:
                continue
            assert attempt.commit_ts is not None
            if attempt.ops and ts_of.get(attempt.txn_id) == attempt.commit_ts:
                verified += 1
            elif not attempt.ops and attempt.commit_ts <= last_ts:
                verified += 1

        if snapshot_of is None:
            self.log = dict(txn_at)
            for attempt in attempts:
                if attempt.outcome == "maybe":
                    self.maybe_seen[attempt.txn_id] = attempt.txn_id in ts_of
            if round_starting is not None:
                self.round_floor[round_starting] = last_ts
            self.checks += 1
        return Check(last_ts, dict(txn_at), bad, verified, versions_read, keys_read)


# Forget mode: the daemon's retention policy, and what it promises to keep of each key.
FORGET_FLAGS = (
    "--retain-versions",
    "2",
    "--retain-namespace",
    "crash-b=seconds:0.2",
    "--retention-every-seconds",
    "0.05",
)
KEPT_VERSIONS = {"default": 2, "crash-b": 1}  # the newest versions retention never takes


class ForgetChecker(Checker):
    """The checker of forget mode, where purges and retention take history away.

    Every maybe-commit is decided first, by redoing it under its idempotency
    key: the daemon answers a commit that happened with its first commit_ts
    and commits one that did not now. Then:

    - commit_ts 1..last are each one acknowledged commit or purge, but for at
      most one per round: the forgetter's last purge, whose call failed;
    - folding commits and purges in commit_ts order (a purge forgets the keys
      under its prefix, whose versions start again at 1) gives what
      `get_state` and `list_keys` answer;
    - each key's newest versions (KEPT_VERSIONS) read back exactly; older ones
      read back exactly or fail with HistoryCompactedError, and what is kept
      has no holes;
    - every agent's replay from its namespace's horizon is exactly the fold's
      events of that agent: each commit's ops on it that no later purge took,
      and each purge of it; before the horizon the replay refuses.
    """

    def __init__(self, history: History) -> None:
        super().__init__(history)
        self.redone = 0
        self.maybe_purges = {"present": 0, "absent": 0}
        self.compacted_reads = 0

    def verify(
        self,
        client: Statehouse,
        *,
        all_versions: bool = True,
        round_starting: int | None = None,
        snapshot_of: int | None = None,
    ) -> Check:
        if snapshot_of is not None:
            raise ValueError("forget mode checks the data directory, not snapshots")
        bad: list[str] = []
        implicated: set[str] = set()
        before_redo = client.begin_transaction().commit()
        with self.history.lock:
            attempts = list(self.history.attempts)
            purges = list(self.history.purges)
        for attempt in attempts:
            if attempt.outcome == "maybe":
                self._decide(client, attempt, before_redo)
        last_ts = client.begin_transaction().commit()

        # Every commit_ts is one acknowledged commit or purge, or a failed purge's.
        at: dict[int, Attempt | PurgeAttempt] = {}
        settled: list[Attempt | PurgeAttempt] = [a for a in attempts if a.outcome == "acked" and a.ops]
        for done in [*settled, *(p for p in purges if p.outcome == "acked")]:
            assert done.commit_ts is not None
            if done.commit_ts in at or done.commit_ts > last_ts:
                bad.append(f"commit_ts {done.commit_ts}: {done.describe()} clashes with the log's order")
            at[done.commit_ts] = done
        floors = sorted((floor, r) for r, floor in self.round_floor.items())
        open_purges = {p.round: p for p in purges if p.outcome == "maybe"}
        for ts in range(1, last_ts + 1):
            if ts in at:
                continue
            i = bisect.bisect_left(floors, (ts, -1)) - 1
            purge = open_purges.pop(floors[i][1], None) if i >= 0 else None
            if purge is None:
                bad.append(f"commit_ts {ts} is no acknowledged commit or purge (last commit_ts {last_ts})")
                continue
            purge.outcome, purge.commit_ts = "acked", ts
            self.maybe_purges["present"] += 1
            at[ts] = purge
        for purge in open_purges.values():
            purge.outcome = "absent"
            self.maybe_purges["absent"] += 1

        # The fold: state, each key's versions since its last purge, each agent's events.
        state: dict[Target, tuple[Op, int, int]] = {}
        versions: dict[Target, list[tuple[int, Op, int]]] = defaultdict(list)
        events: dict[Agent, dict[int, dict[str, tuple[Any, ...]]]] = defaultdict(dict)
        for ts, done in sorted(at.items()):
            if isinstance(done, PurgeAttempt):
                namespace, agent, prefix = done.target
                for target in [t for t in state if t[:2] == (namespace, agent) and t[2].startswith(prefix)]:
                    del state[target], versions[target]
                for ops in events[(namespace, agent)].values():
                    for key in [k for k, op in ops.items() if op[0] != "purge" and k.startswith(prefix)]:
                        del ops[key]
                events[(namespace, agent)][ts] = {f"purge:{prefix}": ("purge", prefix)}
                continue
            for target, op in done.ops.items():
                version = state[target][1] + 1 if target in state else 1
                state[target] = (op, version, ts)
                versions[target].append((version, op, ts))
                events[target[:2]].setdefault(ts, {})[target[2]] = ("op", op[0], typed(op[1]), version)

        targets: set[Target] = set(state)
        for attempt in attempts:
            targets.update(attempt.ops)
        keys_read = versions_read = 0
        for target in sorted(targets):
            keys_read += 1
            self._check_latest(client, target, state, bad)
            versions_read += self._check_versions(client, target, versions.get(target, []), bad)
        self._check_listed(client, state, bad)
        for namespace, agent in self.agents():
            self._check_replay(client, (namespace, agent), events[(namespace, agent)], at, bad)

        # commit_ts follows real time, and continues after each restart.
        ordered = [a for a in attempts if a.outcome == "acked"]
        ordered += [_as_attempt(p) for p in purges if p.outcome == "acked"]
        bad.extend(_real_time_order(ordered, implicated))
        for done in ordered:
            floor = self.round_floor.get(done.round)
            assert done.commit_ts is not None
            if floor is not None and not done.redone and (done.commit_ts <= floor and done.ops):
                bad.append(
                    f"commit_ts did not continue after the restart before round {done.round}: "
                    f"{done.describe()}"
                )
        verified = sum(
            1 for a in attempts if a.outcome == "acked" and not a.error and a.txn_id not in implicated
        )
        if round_starting is not None:
            self.round_floor[round_starting] = last_ts
        self.log = {ts: getattr(done, "txn_id", "purge") for ts, done in at.items()}
        self.checks += 1
        return Check(last_ts, dict(self.log), bad, verified, versions_read, keys_read)

    def _decide(self, client: Statehouse, attempt: Attempt, last_ts: int) -> None:
        """Redo a maybe-commit under its idempotency key: its first commit_ts, or a new commit."""
        if not attempt.ops:  # it writes nothing either way; it is ordered before every redo
            attempt.outcome, attempt.commit_ts = "acked", last_ts
            return
        tx = client.begin_transaction(namespace=attempt.namespace, idempotency_key=attempt.key)
        for (namespace, agent, key), (write, value) in attempt.ops.items():
            if write:
                tx.write(agent, key, value, namespace=namespace)
            else:
                tx.delete(agent, key, namespace=namespace)
        started = time.monotonic()
        commit_ts = tx.commit()
        attempt.outcome, attempt.commit_ts = "acked", commit_ts
        self.maybe_seen[attempt.txn_id] = commit_ts <= last_ts
        if commit_ts > last_ts:
            attempt.redone, attempt.started, attempt.ended = True, started, time.monotonic()
            self.redone += 1

    def _check_versions(
        self, client: Statehouse, target: Target, history: list[tuple[int, Op, int]], bad: list[str]
    ) -> int:
        """Read the key's versions newest first: exact, or compacted below the kept ones, no holes."""
        namespace, agent, key = target
        name = "/".join(target)
        beyond = len(history) + 1
        try:
            extra = client.get_state_at_version(agent, key, beyond, namespace=namespace)
        except NotFoundError:
            pass
        except HistoryCompactedError as exc:
            bad.append(f"{name} v{beyond}: not in the fold, yet compacted: {exc}")
        else:
            bad.append(f"{name} has a version {beyond} not in the fold: {extra}")
        reads, compacted_from = 0, 0
        for n, (version, op, ts) in enumerate(reversed(history)):
            try:
                got = client.get_state_at_version(agent, key, version, namespace=namespace)
            except HistoryCompactedError:
                if n < KEPT_VERSIONS[namespace]:
                    bad.append(f"{name} v{version} is compacted, but retention keeps its newest")
                compacted_from = version
                self.compacted_reads += 1
                break
            except NotFoundError:
                bad.append(f"{name} v{version} is in the fold but not in the store")
                break
            reads += 1
            if (got.exists, typed(got.value), got.version, got.commit_ts) != (
                op[0],
                typed(op[1]),
                version,
                ts,
            ):
                bad.append(
                    f"get_state_at_version {name} v{version} = exists={got.exists} value={got.value!r} "
                    f"commit_ts={got.commit_ts}; the fold has {show(op)} at {ts}"
                )
        if compacted_from > 1:  # what is kept is the newest versions: v1 is gone too
            try:
                got = client.get_state_at_version(agent, key, 1, namespace=namespace)
            except HistoryCompactedError:
                pass
            else:
                bad.append(f"{name}: v{compacted_from} is compacted but v1 is kept (a hole)")
        return reads

    def _check_replay(
        self,
        client: Statehouse,
        agent: Agent,
        expected: dict[int, dict[str, tuple[Any, ...]]],
        at: dict[int, Attempt | PurgeAttempt],
        bad: list[str],
    ) -> None:
        """The agent's replay from its namespace's horizon is exactly the fold's events of it."""
        namespace, agent_id = agent
        start, replayed = 1, None
        for _ in range(10):  # the retainer may move the horizon between two tries
            try:
                replayed = list(client.replay(agent_id, start if start > 1 else None, namespace=namespace))
                break
            except HistoryCompactedError as exc:
                if exc.horizon <= start:
                    bad.append(f"replay of {namespace}/{agent_id} from {start} refused: {exc}")
                    return
                start = exc.horizon
        if replayed is None:
            bad.append(f"replay of {namespace}/{agent_id}: the horizon kept moving")
            return
        got: dict[int, dict[str, tuple[Any, ...]]] = {}
        for event in replayed:
            ops: dict[str, tuple[Any, ...]] = {}
            for op in event.operations:
                if op.purged:
                    ops[f"purge:{op.key}"] = ("purge", op.key)
                else:
                    ops[op.key] = ("op", not op.deleted, typed(op.value), op.version)
            got[event.commit_ts] = ops
            done = at.get(event.commit_ts)
            if isinstance(done, Attempt) and event.txn_id != done.txn_id:
                bad.append(
                    f"replay of {namespace}/{agent_id}: commit_ts {event.commit_ts} is txn "
                    f"{event.txn_id}, but {done.describe()}"
                )
        want = {ts: ops for ts, ops in expected.items() if ts >= start and ops}
        if got != want:
            diff = sorted(set(got) ^ set(want) | {ts for ts in set(got) & set(want) if got[ts] != want[ts]})
            bad.append(
                f"replay of {namespace}/{agent_id} from {start} differs from the fold at commit_ts "
                f"{_ranges(diff)}: first {diff[0]}: {got.get(diff[0])} vs {want.get(diff[0])}"
            )


def _as_attempt(purge: PurgeAttempt) -> Attempt:
    """A purge as an attempt with one op, for the real-time order check."""
    attempt = Attempt(-1, 0, purge.round, "purge", {purge.target: (False, None)}, "acked", purge.commit_ts)
    attempt.started, attempt.ended = purge.started, purge.ended
    return attempt


def _real_time_order(acked: list[Attempt], implicated: set[str]) -> list[str]:
    bad: list[str] = []
    by_end = sorted(acked, key=lambda a: a.ended)
    ends = [a.ended for a in by_end]
    best: list[Attempt] = []  # best[i]: the highest commit_ts among by_end[: i + 1]
    for attempt in by_end:
        assert attempt.commit_ts is not None
        if not best or attempt.commit_ts > (best[-1].commit_ts or 0):
            best.append(attempt)
        else:
            best.append(best[-1])
    for attempt in acked:
        assert attempt.commit_ts is not None
        i = bisect.bisect_left(ends, attempt.started)
        if not i:
            continue
        before = best[i - 1]
        assert before.commit_ts is not None
        if attempt.commit_ts < before.commit_ts or (attempt.ops and attempt.commit_ts == before.commit_ts):
            implicated.add(attempt.txn_id)
            bad.append(
                f"commit_ts against real time: {attempt.describe()} began after "
                f"{before.describe()} was acknowledged"
            )
    return bad


def _ranges(numbers: list[int]) -> str:
    parts, start = [], None
    for n, nxt in zip(numbers, [*numbers[1:], None], strict=True):
        start = n if start is None else start
        if nxt != n + 1:
            parts.append(str(n) if start == n else f"{start}-{n}")
            start = None
    text = ", ".join(parts[:10])
    return text + (f" (+{len(parts) - 10} more ranges)" if len(parts) > 10 else "")


@dataclass
class Summary:
    kills: int = 0
    commits_acknowledged: int = 0
    commits_verified: int = 0
    maybe: int = 0
    maybe_present: int = 0
    aborted: int = 0
    empty: int = 0
    versions_read: int = 0
    last_commit_ts: int = 0
    verify_command: str = "not_run"
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)
    seed: int = 0
    forget: str = ""  # forget mode: what the forgetter did and the checker found

    def line(self) -> str:
        return (
            f"crash test: kills={self.kills} commits_acknowledged={self.commits_acknowledged} "
            f"commits_verified={self.commits_verified} maybe={self.maybe} "
            f"(present={self.maybe_present} absent={self.maybe - self.maybe_present}) "
            f"aborted={self.aborted} empty={self.empty} last_commit_ts={self.last_commit_ts} "
            f"versions_read={self.versions_read} verify_command={self.verify_command} "
            f"violations={len(self.violations)} seed={self.seed} seconds={self.seconds:.1f}{self.forget}"
        )


class CrashHarness:
    """A data directory, a history of what clients did, and a checker for it."""

    def __init__(
        self,
        data_dir: str | Path,
        clients: int = 4,
        seed: int = 0,
        profile: Profile | None = None,
        daemon_args: Iterable[str] = (),
        forget: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.clients = clients
        self.seed = seed
        self.profile = profile or Profile()
        self.forget = forget  # purges, compactions and a retention policy beside the clients
        self.daemon_args = tuple(daemon_args) + (FORGET_FLAGS if forget else ())
        self.forgetter: Forgetter | None = None  # forget mode: this round's
        self.history = History()
        self.checker = ForgetChecker(self.history) if forget else Checker(self.history)
        self.rounds = 0

    def start(self, env: dict[str, str] | None = None, data_dir: Path | None = None) -> DaemonProcess:
        return DaemonProcess(data_dir or self.data_dir, *self.daemon_args, env=env).start()

    def drive(
        self,
        daemon: DaemonProcess,
        during: Callable[[threading.Event], None] | None = None,
        max_txns: int = 5000,
        clients: int | None = None,
    ) -> list[Worker]:
        """Run one round of clients against `daemon`.

        With `during`, it is called once every client is running, with the
        event to set just before killing the daemon; the clients are stopped
        when it returns. Without it, each client runs `max_txns` transactions.
        Returns the finished workers.
        """
        round_no = self.rounds
        self.rounds += 1
        count = self.clients if clients is None else clients
        start_line = threading.Barrier(count + 1 + self.forget)
        stop, killed = threading.Event(), threading.Event()
        workers = [
            Worker(
                self.history,
                n,
                count,
                daemon,
                round_no,
                f"{self.seed}/{round_no}/{n}",
                self.profile,
                max_txns,
                start_line,
                stop,
                killed,
                keyed=self.forget,
            )
            for n in range(count)
        ]
        clients_only = list(workers)
        if self.forget:
            seed = f"{self.seed}/{round_no}/forget"
            self.forgetter = Forgetter(
                self.history, -1, count, daemon, round_no, seed, self.profile, 0, start_line, stop, killed
            )
            self.forgetter.calling = threading.Event()
            workers.append(self.forgetter)
        for worker in workers:
            worker.start()
        try:
            start_line.wait(JOIN_TIMEOUT)
            if during is not None:
                during(killed)
            else:
                for worker in clients_only:
                    worker.join(ROUND_TIMEOUT)
        finally:
            stop.set()
            for worker in workers:
                worker.join(JOIN_TIMEOUT)
        stuck = [w.name for w in workers if w.is_alive()]
        if stuck:
            self.history.violation(f"clients still running {JOIN_TIMEOUT}s after the round ended: {stuck}")
        return workers

    def verify(self, daemon: DaemonProcess, **kwargs: Any) -> Check:
        with Statehouse(daemon.addr, timeout=CALL_TIMEOUT) as client:
            return self.checker.verify(client, **kwargs)

    def summary(self, final: Check, kills: int, started: float) -> Summary:
        attempts = self.history.attempts
        maybe = [a for a in attempts if a.outcome == "maybe" or a.error]  # forget mode decides them
        forget = ""
        if isinstance(self.checker, ForgetChecker):
            purges = self.history.purges
            forget = (
                f" purges_acknowledged={sum(1 for p in purges if p.outcome == 'acked' and not p.failed)} "
                f"purges_maybe_present={self.checker.maybe_purges['present']} "
                f"purges_maybe_absent={self.checker.maybe_purges['absent']} "
                f"compactions={self.history.compactions} maybe_redone={self.checker.redone} "
                f"versions_found_compacted={self.checker.compacted_reads}"
            )
        return Summary(
            kills=kills,
            commits_acknowledged=sum(1 for a in attempts if a.outcome == "acked" and not a.error),
            commits_verified=final.acked_verified,
            maybe=len(maybe),
            maybe_present=sum(1 for a in maybe if self.checker.maybe_seen.get(a.txn_id)),
            aborted=sum(1 for a in attempts if a.outcome == "aborted"),
            empty=sum(1 for a in attempts if a.outcome == "acked" and not a.ops),
            last_commit_ts=final.last_ts,
            seconds=time.monotonic() - started,
            seed=self.seed,
            forget=forget,
        )


def run_verify_command(data_dir: Path) -> str | None:
    """Run `statehoused verify` on a stopped (or crashed) data directory; None if it passed."""
    result = subprocess.run(
        [sys.executable, "-m", "rpc", "verify", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode == 0:
        return None
    return f"statehoused verify exited {result.returncode}: {result.stdout.strip()} {result.stderr.strip()}"


def run_crash_test(
    data_dir: str | Path,
    kills: int = 20,
    clients: int = 4,
    seed: int | None = None,
    max_delay: float = 1.0,
    daemon_args: Iterable[str] = (),
    out: Callable[[str], None] = print,
    min_delay: float = 0.01,
    forget: bool = False,
) -> Summary:
    """The random-kill crash test; returns the summary (violations listed in it).

    After every kill, before the restart, `statehoused verify` checks the
    crashed data directory offline too.
    """
    started = time.monotonic()
    seed = random.randrange(2**32) if seed is None else seed
    data_dir = Path(data_dir)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ValueError(f"{data_dir} is not empty: the model must know every commit in it")
    rng = random.Random(seed)
    harness = CrashHarness(data_dir, clients, seed, daemon_args=daemon_args, forget=forget)
    verify_runs = 0
    violations: list[str] = []
    versions_read = 0
    daemon = harness.start()
    try:
        for round_no in range(kills):
            check = harness.verify(daemon, all_versions=False, round_starting=round_no)
            versions_read += check.versions_read
            violations += [f"check after restart {round_no}: {v}" for v in check.violations]
            delay = rng.uniform(min_delay, max_delay)

            # Forget mode: every other kill waits, after the delay, for a purge or a compaction
            # to be in flight, so that some land in the middle of one.
            mid_call = forget and rng.random() < 0.5
            into_call = rng.uniform(0, 0.004) if mid_call else 0.0  # at most about a call's length

            def kill(
                killed: threading.Event,
                daemon: DaemonProcess = daemon,
                delay: float = delay,
                mid_call: bool = mid_call,
                into_call: float = into_call,
            ) -> None:
                time.sleep(delay)  # the random moment of the crash: the thing under test
                if mid_call and harness.forgetter is not None:
                    harness.forgetter.calling.wait(CALL_TIMEOUT)
                    time.sleep(into_call)
                killed.set()
                daemon.kill()

            harness.drive(daemon, during=kill)
            if daemon.process is None or daemon.process.returncode != -signal.SIGKILL:
                violations.append(f"round {round_no}: the daemon was not killed by SIGKILL")
            problem = run_verify_command(data_dir)
            verify_runs += 1
            if problem:
                violations.append(f"crashed data directory after kill {round_no + 1}: {problem}")
            daemon = harness.start()
        final = harness.verify(daemon, all_versions=True)
        versions_read += final.versions_read
        violations += [f"final check: {v}" for v in final.violations]
        code = daemon.stop()
        if code != 0:
            violations.append(f"final SIGTERM: the daemon exited {code}, not 0")
    finally:
        daemon.kill()
    problem = run_verify_command(data_dir)
    verify_runs += 1
    if problem:
        violations.append(f"data directory after the final clean stop: {problem}")
    summary = harness.summary(final, kills, started)
    summary.verify_command = f"passed_{verify_runs}_of_{verify_runs}"
    violations = harness.history.violations + violations
    if any("statehoused verify" in v for v in violations):
        summary.verify_command = "FAILED"
    summary.violations = violations
    summary.versions_read = versions_read
    summary.seconds = time.monotonic() - started
    for text in violations[:50]:
        out(f"VIOLATION: {text}")
    if len(violations) > 50:
        out(f"... and {len(violations) - 50} more violations")
    out(summary.line())
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Crash test: concurrent load on a real statehoused, SIGKILL at random moments, "
        "every acknowledged commit checked against a model. Exit 1 on any violation."
    )
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs (rounds), default %(default)s")
    parser.add_argument("--clients", type=int, default=4, help="client threads, default %(default)s")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="empty or new data directory (default: a temp dir)"
    )
    parser.add_argument(
        "--max-delay", type=float, default=1.0, help="longest run before a kill, seconds, default %(default)s"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    parser.add_argument(
        "--forget",
        action="store_true",
        help="forget mode: a purging, compacting client beside the others, and a retention policy",
    )
    parser.add_argument("daemon_args", nargs="*", help="extra statehoused flags, after --")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.clients < 1 or not 0 < args.max_delay <= 60:
        parser.error("--kills and --clients must be at least 1, --max-delay in (0, 60]")
    if args.data_dir is not None and args.data_dir.exists() and any(args.data_dir.iterdir()):
        parser.error(f"--data-dir {args.data_dir} is not empty: the model must know every commit in it")
    temp = None
    data_dir = args.data_dir
    if data_dir is None:
        temp = tempfile.mkdtemp(prefix="statehouse-crash-")
        data_dir = Path(temp) / "data"
    try:
        summary = run_crash_test(
            data_dir,
            args.kills,
            args.clients,
            args.seed,
            args.max_delay,
            daemon_args=args.daemon_args,
            forget=args.forget,
        )
    finally:
        if temp is not None and not args.keep:
            shutil.rmtree(temp, ignore_errors=True)
        elif temp is not None:
            print(f"data directory kept: {data_dir}")
    return 1 if summary.violations else 0


if __name__ == "__main__":
    sys.exit(main())
