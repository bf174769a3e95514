"""A model-based test of the actors and storage, for real.

A hypothesis `RuleBasedStateMachine` drives a real `Store` (RocksDB in a
temp dir) and a real `ActorSystem` on a fake clock through random sequences
of begin / stage / commit / abort / expire / tick / restart and every read
(get, get_version, keys, scan, replay, events), and compares each result
with a small in-memory model of docs/semantics.md.

The model also knows the namespace actors' life: an actor starts on `begin`
and retires when ticked while idle, its open transactions left dormant
(without a thread) for the next actor, which the next call to the namespace
starts, or the reaper when one of them comes due; the system remembers
finished transactions across retirements (so a second commit is "closed",
not "unknown"). A restart loses every open and finished transaction,
except that a transaction that committed something is still known as
committed (the durable transaction index); commit_ts and versions continue.

No ReadView outlives a step: rocksdict keeps the database locked while a
snapshot object is alive, and a restart reopens the same directory.

More examples, and what the runs covered:
    STATEHOUSE_MODEL_EXAMPLES=1000 .venv/bin/python -m pytest tests/actors/test_model.py \
        --hypothesis-show-statistics
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import event as note_event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from actors import (
    ActorConfig,
    ActorSystem,
    InvalidArgument,
    Mutation,
    TransactionClosed,
    TransactionExpired,
    TransactionNotFound,
)
from statehouse._codec import canonical, encode
from storage import Blob, Event, EventOp, HistoryCompactedError, StateRecord, Store, VersionRecord
from storage import keys as storage_keys
from storage.retention import Policies, Policy

W = 10.0  # seconds any single call may wait

NAMESPACES = ("default", "n:1", "é")
# Agent "a" with key "b:c" and agent "a:b" with key "c" must stay distinct;
# "é" (one code point) and "e\u0301" (two) are different names.
AGENTS = ("a", "a:b", "é")
# "\ufb01" sorts before "\U0001f600" in UTF-8 byte order but after it in UTF-16.
KEYS = ("k", "c", "b:c", "a:b", "é", "e\u0301", "x\u0301", "task/2", "task/10", "\U0001f600", "\ufb01")
PREFIXES = ("", "a", "b:", "e", "é", "x", "task/", "task/1", "\U0001f600", "zz")

CONFIG = ActorConfig(
    default_txn_timeout_ms=1000,
    max_txn_timeout_ms=600_000,
    idle_actor_seconds=2.0,
    tick_seconds=3600.0,  # the background reaper never runs; the machine ticks by hand
)

# Ids that were never issued: well formed for each namespace, and malformed.
UNKNOWN_IDS = (*(f"{ns}:{'0f' * 12}" for ns in NAMESPACES), "nonsense", "default:short", ":" + "0" * 24)

Target = tuple[str, str, str]
Value = bytes | None  # None is a tombstone


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _id_namespace(txn_id: str) -> str | None:
    """The namespace an id names ("<namespace>:<24 hex>"), or None if malformed."""
    match = re.fullmatch(r"(.+):([0-9a-f]{24})", txn_id, flags=re.DOTALL)
    return match.group(1) if match else None


# -- strategies ------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=5,
)
# JSON values, and now and then a bytes value (a Blob: read back as bytes, not JSON).
values = json_values.map(lambda v: canonical(encode(v))) | st.binary(max_size=6).map(Blob)
# About one write in four is insert-if-absent.
if_absent = st.sampled_from((False, False, False, True))
mutations = st.builds(
    Mutation,
    st.sampled_from(NAMESPACES),
    st.sampled_from(AGENTS),
    st.sampled_from(KEYS),
    st.one_of(values, values, values, st.none()),  # about one in four is a delete
    if_absent,
)
# A hot agent, so that one batch often writes a key twice, keys get many
# versions, and keys whose order differs between encodings live side by side.
hot_mutations = st.builds(
    Mutation,
    st.just("default"),
    st.just("a"),
    st.sampled_from(("k", "b:c")) | st.sampled_from(("\U0001f600", "\ufb01", "task/2", "task/10")),
    st.one_of(values, values, values, st.none()),
    if_absent,
)
batches = st.lists(st.one_of(mutations, hot_mutations), max_size=4)
timeouts = st.one_of(
    st.none(),
    st.sampled_from([1, 500, 1000, 5000, 600_000]),
    st.integers(1, 20_000),
)
bad_timeouts = st.sampled_from([0, -1, 600_001])
clock_steps = st.one_of(
    st.sampled_from([0.001, 0.5, 0.999, 1.0, 5.0, 10.0, 61.0]),
    st.integers(1, 20_000).map(lambda ms: ms / 1000),
)


# -- the model -------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class ModelTxn:
    txn_id: str
    namespace: str
    timeout_ms: int
    deadline: float
    staged: dict[Target, Mutation] = field(default_factory=dict)  # last write per key wins


@dataclass
class ModelActor:
    """What one namespace's actor holds: a live actor, or (`dormant`) the open transactions
    a retired one left for the next."""

    last_activity: float
    open: dict[str, ModelTxn] = field(default_factory=dict)
    commits: int = 0  # by the live actor; a new one starts at 0
    dormant: bool = False


@dataclass
class ModelEvent:
    commit_ts: int
    txn_id: str
    committed_at_ms: int
    ops: tuple[EventOp, ...]


def _past(names: list[str], after: str | None, reverse: bool) -> list[str]:
    """Names in byte order (descending if `reverse`) strictly past `after` in that order."""
    ordered = names[::-1] if reverse else names
    if after is None:
        return ordered
    cursor = after.encode("utf-8")
    return [n for n in ordered if (n.encode("utf-8") < cursor if reverse else n.encode("utf-8") > cursor)]


def _sorted_ops(ops: tuple[EventOp, ...] | list[EventOp]) -> list[EventOp]:
    # The semantics promise event order, not the order of ops inside one event; slots (where
    # an op's value sits in a stored event) are the store's own.
    return sorted((op._replace(slot=-1) for op in ops), key=lambda op: (op.namespace, op.agent_id, op.key))


def _event_tuple(event: Event | ModelEvent) -> tuple[int, str, int, list[EventOp]]:
    return (event.commit_ts, event.txn_id, event.committed_at_ms, _sorted_ops(event.ops))


class Model:
    def __init__(self) -> None:
        self.commit_ts = 0
        self.history: dict[Target, list[VersionRecord]] = {}  # index = version - 1
        self.events: list[ModelEvent] = []
        self.actors: dict[str, ModelActor] = {}  # live namespace actors, and dormant ones
        # What the running system remembers of finished transactions, txn_id ->
        # ("committed", commit_ts) | ("aborted", 0) | ("expired", timeout_ms).
        self.finished: dict[str, tuple[str, int]] = {}
        self.issued: list[str] = []  # every txn id ever begun, in order
        # Retention: how many of each key's first versions were let go, and each namespace's
        # horizon (the commit_ts from which its history is whole).
        self.dropped: dict[Target, int] = {}
        self.horizons: dict[str, int] = {}

    def latest(self, target: Target) -> StateRecord | None:
        versions = self.history.get(target)
        if not versions:
            return None
        last = versions[-1]
        return StateRecord(len(versions), last.commit_ts, last.value)

    def compacted(self, target: Target, version: int) -> bool:
        """Whether retention let that version of the key go."""
        return 1 <= version <= self.dropped.get(target, 0)

    def apply_retain(self, namespace: str, keep: int) -> int:
        """Retention keeping each key's `keep` newest versions in `namespace`: the older ones
        leave their events (removed if no op is left); the ops dropped."""
        gone: set[tuple[int, Target]] = set()
        for target, versions in self.history.items():
            if target[0] != namespace:
                continue
            first, last = self.dropped.get(target, 0), len(versions) - keep
            gone.update((versions[v - 1].commit_ts, target) for v in range(first + 1, last + 1))
            if last > first:
                self.dropped[target] = last
        if not gone:
            return 0
        kept = []
        for event in self.events:
            ops = tuple(
                op
                for op in event.ops
                if op.purge or (event.commit_ts, (op.namespace, op.agent_id, op.key)) not in gone
            )
            event.ops = ops  # an event left with no op stays, as its head
            kept.append(event)
        self.events = kept
        horizon = max(commit_ts for commit_ts, _ in gone) + 1
        self.horizons[namespace] = max(self.horizons.get(namespace, 0), horizon)
        return len(gone)

    def version(self, target: Target, version: int) -> VersionRecord | None:
        versions = self.history.get(target, [])
        return versions[version - 1] if 1 <= version <= len(versions) else None

    def live_keys(self, namespace: str, agent: str, prefix: str = "") -> list[str]:
        found = [
            key
            for (ns, ag, key), versions in self.history.items()
            if (ns, ag) == (namespace, agent) and versions[-1].value is not None and key.startswith(prefix)
        ]
        return sorted(found, key=lambda k: k.encode("utf-8"))

    def open_txns(self) -> list[str]:
        return [txn_id for actor in self.actors.values() for txn_id in actor.open]

    def apply_commit(self, txn: ModelTxn) -> tuple[int, tuple[EventOp, ...]]:
        """The ledger: a write with if_absent is skipped when its key has a live value; a commit
        left with nothing to write returns the latest commit_ts and writes nothing."""
        writes = {}
        for target, m in txn.staged.items():
            latest = self.latest(target)
            if m.if_absent and m.value is not None and latest is not None and latest.value is not None:
                continue
            writes[target] = m.value
        if not writes:
            return self.commit_ts, ()
        self.commit_ts += 1
        ops = []
        for target, value in writes.items():
            versions = self.history.setdefault(target, [])
            versions.append(VersionRecord(self.commit_ts, value))
            ops.append(EventOp(*target, len(versions), value))
        return self.commit_ts, tuple(ops)

    def apply_purge(self, namespace: str, agent: str, prefix: str) -> int:
        """A purge: the agent's keys under `prefix` lose their history, and their ops leave every
        earlier event (which stays, perhaps with no op); the purge is the next commit."""

        def gone(op: EventOp) -> bool:
            return (
                not op.purge
                and (op.namespace, op.agent_id) == (namespace, agent)
                and op.key.startswith(prefix)
            )

        for target in [t for t in self.history if t[:2] == (namespace, agent) and t[2].startswith(prefix)]:
            del self.history[target]
            self.dropped.pop(target, None)
        for event in self.events:
            event.ops = tuple(op for op in event.ops if not gone(op))
        self.commit_ts += 1
        return self.commit_ts

    def agents(self, namespace: str, prefix: str = "") -> list[str]:
        """The agents of `namespace` under `prefix` that hold a live key, in byte order."""
        return sorted(
            {ag for (ns, ag, _key) in self.history if ns == namespace and ag.startswith(prefix)
             and self.live_keys(ns, ag)},
            key=lambda name: name.encode("utf-8"),
        )  # fmt: skip

    def reach(self, namespace: str, now: float) -> ModelActor:
        """A call reaches the namespace: its actor, started (adopting what is dormant) if need be."""
        actor = self.actors.setdefault(namespace, ModelActor(now))
        if actor.dormant:
            actor.dormant, actor.commits = False, 0
            note_event("a dormant transaction adopted")
        actor.last_activity = now
        return actor

    def expire(self, actor: ModelActor, txn: ModelTxn) -> None:
        del actor.open[txn.txn_id]
        self.finished[txn.txn_id] = ("expired", txn.timeout_ms)

    def closed(self, txn_id: str) -> tuple[type[Exception], str]:
        """The error for using a transaction that is not open."""
        outcome = self.finished.get(txn_id)
        if outcome is None:
            if txn_id in self.issued:
                note_event("use of a transaction forgotten in a restart")
            return TransactionNotFound, "not found"
        kind, detail = outcome
        if kind == "expired":
            return TransactionExpired, f"expired: not committed within its {detail} ms timeout"
        if kind == "aborted":
            return TransactionClosed, "was aborted"
        return TransactionClosed, f"already committed (commit_ts {detail})"

    def use(self, txn_id: str, now: float) -> ModelTxn | tuple[type[Exception], str]:
        """Stage or commit: the open transaction, or the error expected."""
        namespace = _id_namespace(txn_id)
        if namespace is None:
            return TransactionNotFound, "not found"
        if namespace not in self.actors:  # no actor: nothing of this namespace is open
            if txn_id in self.finished:
                note_event("use of a finished transaction after its actor retired")
            return self.closed(txn_id)
        actor = self.reach(namespace, now)
        txn = actor.open.get(txn_id)
        if txn is None:
            return self.closed(txn_id)
        if txn.deadline <= now:
            note_event("use of an overdue transaction")
            self.expire(actor, txn)
            return self.closed(txn_id)
        return txn


# -- the machine -------------------------------------------------------------------


class StatehouseMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.clock = FakeClock()
        self.path = Path(tempfile.mkdtemp(prefix="statehouse-model-"))
        self.store: Store | None = None
        self.system: ActorSystem | None = None
        try:
            self._open("flush_wal")
        except BaseException:
            self.teardown()
            raise

    def _open(self, sync_method: str) -> None:
        self.store = Store.open(self.path / "data", sync_method=sync_method)
        self.system = ActorSystem(self.store, CONFIG, clock=self.clock).start()

    def _close(self) -> None:
        system, store = self.system, self.store
        self.system = self.store = None
        try:
            if system is not None:
                system.stop()
        finally:
            if store is not None:
                store.close()

    def teardown(self) -> None:
        try:
            self._close()
        finally:
            shutil.rmtree(self.path, ignore_errors=True)

    @property
    def sys(self) -> ActorSystem:
        assert self.system is not None
        return self.system

    def _expect_error(self, expected: tuple[type[Exception], str], call: Callable[[], object]) -> None:
        cls, text = expected
        note_event(f"refused: {cls.__name__} ({text.split(' (')[0].split(':')[0]})")
        with pytest.raises(cls) as info:
            call()
        assert type(info.value) is cls, f"expected exactly {cls.__name__}, got {info.value!r}"
        assert text in str(info.value), f"{text!r} not in {info.value!s}"

    def _pick_txn(self, data: st.DataObject) -> str:
        """Mostly an open transaction; sometimes a finished, lost or never-issued one."""
        open_ids = self.model.open_txns()
        if open_ids and data.draw(st.integers(0, 9), label="pick_open") < 7:
            return data.draw(st.sampled_from(open_ids), label="txn")
        return data.draw(st.sampled_from(self.model.issued + list(UNKNOWN_IDS)), label="txn")

    # -- transactions ------------------------------------------------------------

    @rule(namespace=st.sampled_from(NAMESPACES), timeout_ms=timeouts | bad_timeouts)
    def begin(self, namespace: str, timeout_ms: int | None) -> None:
        now = self.clock.now
        if timeout_ms is not None and not 1 <= timeout_ms <= CONFIG.max_txn_timeout_ms:
            self._expect_error(
                (InvalidArgument, "timeout_ms must be between 1 and 600000"),
                lambda: self.sys.begin(namespace, timeout_ms, W),
            )
            # The actor was started (and touched) to answer.
            self.model.reach(namespace, now)
            return
        txn_id, applied = self.sys.begin(namespace, timeout_ms, W)
        assert re.fullmatch(re.escape(namespace) + r":[0-9a-f]{24}", txn_id), txn_id
        assert txn_id not in self.model.issued
        assert applied == (CONFIG.default_txn_timeout_ms if timeout_ms is None else timeout_ms)
        actor = self.model.reach(namespace, now)
        actor.open[txn_id] = ModelTxn(txn_id, namespace, applied, now + applied / 1000)
        self.model.issued.append(txn_id)

    @rule(data=st.data(), batch=batches)
    def stage(self, data: st.DataObject, batch: list[Mutation]) -> None:
        self._stage(self._pick_txn(data), batch)

    def _stage(self, txn_id: str, batch: list[Mutation]) -> None:
        expected = self.model.use(txn_id, self.clock.now)
        if isinstance(expected, ModelTxn):
            self.sys.stage(txn_id, batch, W)
            for m in batch:
                expected.staged[m.target] = m
        else:
            self._expect_error(expected, lambda: self.sys.stage(txn_id, batch, W))

    def _commit(self, txn_id: str, batch: list[Mutation]) -> None:
        expected = self.model.use(txn_id, self.clock.now)
        if not isinstance(expected, ModelTxn):
            self._expect_error(expected, lambda: self.sys.commit(txn_id, batch, W))
            return
        txn = expected
        for m in batch:
            txn.staged[m.target] = m
        earlier = self.sys.view()
        previous = {target: self.model.latest(target) for target in txn.staged}
        before = _now_ms()
        commit_ts = self.sys.commit(txn_id, batch, W)
        after = _now_ms()
        # A view taken before the commit keeps reading as of its own commit_ts.
        assert earlier.last_commit_ts == self.model.commit_ts
        assert {target: earlier.get(*target) for target in txn.staged} == previous
        del earlier
        expected_ts, ops = self.model.apply_commit(txn)
        note_event("commit: " + ("writes" if ops else "empty"))
        assert commit_ts == expected_ts
        actor = self.model.actors[txn.namespace]
        del actor.open[txn_id]
        self.model.finished[txn_id] = ("committed", commit_ts)
        actor.commits += 1
        view = self.sys.view()
        assert view.last_commit_ts == commit_ts  # acknowledged means visible
        if ops:
            [event] = list(view.events(commit_ts))
            assert before <= event.committed_at_ms <= after
            self.model.events.append(ModelEvent(commit_ts, txn_id, event.committed_at_ms, ops))
            assert _event_tuple(event) == _event_tuple(self.model.events[-1])

    @rule(
        namespace=st.sampled_from(NAMESPACES),
        agent=st.sampled_from(AGENTS),
        prefix=st.sampled_from(("", "k", "task/", "b:", "zz")),
    )
    def purge(self, namespace: str, agent: str, prefix: str) -> None:
        result = self.sys.purge(namespace, agent, prefix, W)
        expected_ts = self.model.apply_purge(namespace, agent, prefix)
        assert result.commit_ts == expected_ts
        [event] = list(self.sys.view().events(expected_ts))
        op = EventOp(namespace, agent, prefix, 0, None, True)
        assert event.ops == (op,)
        self.model.events.append(ModelEvent(expected_ts, event.txn_id, event.committed_at_ms, (op,)))
        note_event("purge")

    @rule(namespace=st.sampled_from(NAMESPACES), keep=st.integers(1, 3), compact=st.booleans())
    def retain(self, namespace: str, keep: int, compact: bool) -> None:
        """Retention keeping `keep` versions of each key of `namespace`, run now by the
        daemon's own retainer (through the ledger), or by `compact()`, which then rewrites
        every data file."""
        self.sys.retainer.policies = Policies(Policy(), {namespace: Policy(versions=keep)})
        if compact:
            self.sys.compact()
            self.model.apply_retain(namespace, keep)
            note_event("retain: compact")
            return
        retained = self.sys.retainer.run()
        assert retained.ops == self.model.apply_retain(namespace, keep)
        note_event("retain: " + ("dropped" if retained.ops else "nothing"))

    @rule(data=st.data(), batch=batches)
    def commit(self, data: st.DataObject, batch: list[Mutation]) -> None:
        self._commit(self._pick_txn(data), batch)

    @rule(namespace=st.sampled_from(NAMESPACES), batch=batches)
    def begin_and_commit(self, namespace: str, batch: list[Mutation]) -> None:
        self.begin(namespace, None)
        self._commit(self.model.issued[-1], batch)

    @initialize(
        commits=st.lists(st.tuples(st.sampled_from(NAMESPACES), batches), max_size=5),
        opened=st.lists(st.tuples(st.sampled_from(NAMESPACES), timeouts), max_size=3),
    )
    def seed(self, commits: list[tuple[str, list[Mutation]]], opened: list[tuple[str, int | None]]) -> None:
        """Start most runs with some history and open transactions to work on."""
        for namespace, batch in commits:
            self.begin_and_commit(namespace, batch)
        for namespace, timeout_ms in opened:
            self.begin(namespace, timeout_ms)

    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        txn_id = self._pick_txn(data)
        namespace = _id_namespace(txn_id)
        if namespace is None:
            # An id the server could never have issued is refused even by abort.
            self._expect_error((TransactionNotFound, "not found"), lambda: self.sys.abort(txn_id, W))
            return
        actor = self.model.reach(namespace, self.clock.now) if namespace in self.model.actors else None
        if actor is not None and txn_id in actor.open:
            txn = actor.open.pop(txn_id)
            if txn.deadline <= self.clock.now:
                # Past its timeout, reaped or not: the abort succeeds and it stays expired.
                note_event("abort of an overdue transaction")
                self.model.finished[txn_id] = ("expired", txn.timeout_ms)
            else:
                self.model.finished[txn_id] = ("aborted", 0)
        elif self.model.finished.get(txn_id, ("", 0))[0] == "committed":
            self._expect_error((TransactionClosed, "already committed"), lambda: self.sys.abort(txn_id, W))
            return
        # Open, aborted, expired, forgotten or never issued: abort succeeds (and again).
        elif txn_id not in self.model.finished:
            # Never seen (or forgotten): remembered as aborted, so a late commit of it is refused.
            self.model.finished[txn_id] = ("aborted", 0)
        assert self.sys.abort(txn_id, W) is None
        assert self.sys.abort(txn_id, W) is None
        if self.model.finished.get(txn_id) == ("aborted", 0):
            # Using it afterwards says so (and nothing of it was written: see the invariants).
            self._commit(txn_id, [])

    # -- time, the reaper, restarts -------------------------------------------------

    @rule(seconds=clock_steps)
    def advance_clock(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(data=st.data(), offset=st.sampled_from([-0.001, 0.0, 0.0, 0.5]), then_use=st.booleans())
    def advance_to_deadline(self, data: st.DataObject, offset: float, then_use: bool) -> None:
        """Move the clock to just before, exactly at, or past an open transaction's deadline
        (and perhaps use it right away, before anything else can expire it)."""
        open_ids = self.model.open_txns()
        if not open_ids:
            return  # (a precondition instead makes hypothesis give up on some runs)
        txn_id = data.draw(st.sampled_from(open_ids), label="txn")
        txn = self.model.actors[_id_namespace(txn_id) or ""].open[txn_id]
        self.clock.now = max(self.clock.now, txn.deadline + offset)
        if then_use:
            self._stage(txn_id, [])

    @rule(data=st.data(), offset=st.sampled_from([-0.001, 0.0, 0.0, 0.5]), then_tick=st.booleans())
    def advance_to_idle(self, data: st.DataObject, offset: float, then_tick: bool) -> None:
        """Move the clock to just before, exactly at, or past when an actor may retire
        (and perhaps tick right away)."""
        if not self.model.actors:
            return
        namespace = data.draw(st.sampled_from(sorted(self.model.actors)), label="namespace")
        idle_at = self.model.actors[namespace].last_activity + CONFIG.idle_actor_seconds
        self.clock.now = max(self.clock.now, idle_at + offset)
        if then_tick:
            self.tick()

    @rule()
    def tick(self) -> None:
        self.sys.tick_all(W)
        now = self.clock.now
        for namespace, actor in list(self.model.actors.items()):
            due = [t for t in actor.open.values() if t.deadline <= now]
            if actor.dormant and not due:
                continue  # nothing wakes it
            if actor.dormant:  # the reaper starts an actor for it, which adopts and ticks
                actor.dormant, actor.commits = False, 0
                note_event("tick: a dormant transaction expired")
            for txn in due:
                self.model.expire(actor, txn)
            if now - actor.last_activity >= CONFIG.idle_actor_seconds:
                if actor.open:
                    actor.dormant = True  # retired, its open transactions left for the next
                    note_event("tick: an actor retired holding transactions")
                else:
                    del self.model.actors[namespace]  # retired (finished ones are still remembered)
                    note_event("tick: an actor retired")

    @rule(sync_method=st.sampled_from(["flush_wal", "sync_write"]))
    def restart(self, sync_method: str) -> None:
        self._close()
        self._open(sync_method)
        self.model.actors.clear()  # open and finished transactions are lost,
        # but not the commits that wrote something: the durable index knows them.
        logged = {event.txn_id for event in self.model.events}
        self.model.finished = {
            txn_id: outcome
            for txn_id, outcome in self.model.finished.items()
            if outcome[0] == "committed" and txn_id in logged
        }
        note_event("restart")

    # -- reads ---------------------------------------------------------------------

    @rule(
        namespace=st.sampled_from(NAMESPACES),
        agent=st.sampled_from(AGENTS),
        key=st.sampled_from(KEYS),
        data=st.data(),
    )
    def read_key(self, namespace: str, agent: str, key: str, data: st.DataObject) -> None:
        target = (namespace, agent, key)
        known = len(self.model.history.get(target, []))
        version = data.draw(st.integers(0, known + 2), label="version")  # 0 and beyond: never existed
        view = self.sys.view()
        got, want = view.get(*target), self.model.latest(target)
        assert got == want
        # A Blob equals the same bytes as JSON: its type is what says it is a bytes value.
        assert type(got and got.value) is type(want and want.value)
        self._check_version(view, target, version)

    def _check_version(self, view: Any, target: Target, version: int) -> None:
        if self.model.compacted(target, version):
            with pytest.raises(HistoryCompactedError):
                view.get_version(*target, version)
        else:
            assert view.get_version(*target, version) == self.model.version(target, version)

    @rule(
        namespace=st.sampled_from(NAMESPACES),
        agent=st.sampled_from(AGENTS),
        prefix=st.sampled_from(PREFIXES),
    )
    def list_and_scan(self, namespace: str, agent: str, prefix: str) -> None:
        view = self.sys.view()
        assert [key for key, _ in view.scan(namespace, agent)] == self.model.live_keys(namespace, agent)
        expected = [
            (key, self.model.latest((namespace, agent, key)))
            for key in self.model.live_keys(namespace, agent, prefix)
        ]
        assert list(view.scan(namespace, agent, prefix)) == expected

    @rule(
        namespace=st.sampled_from(NAMESPACES),
        agent=st.sampled_from(AGENTS),
        prefix=st.sampled_from(PREFIXES),
        after=st.none() | st.sampled_from(KEYS),
        reverse=st.booleans(),
    )
    def cursors(self, namespace: str, agent: str, prefix: str, after: str | None, reverse: bool) -> None:
        """A listing from a cursor, either way: the model's keys past `after` in that order."""
        keys = _past(self.model.live_keys(namespace, agent, prefix), after, reverse)
        got = [
            key for key, _ in self.sys.view().scan_at(namespace, agent, prefix, None, after, reverse=reverse)
        ]
        assert got == keys

    @rule(
        namespace=st.sampled_from(NAMESPACES),
        prefix=st.sampled_from(("", "a", "a:", "é", "z")),
        after=st.none() | st.sampled_from(AGENTS),
        reverse=st.booleans(),
    )
    def agents(self, namespace: str, prefix: str, after: str | None, reverse: bool) -> None:
        agents = _past(self.model.agents(namespace, prefix), after, reverse)
        assert list(self.sys.view().agents(namespace, prefix, after, reverse)) == agents

    @rule(namespace=st.sampled_from(NAMESPACES), agent=st.sampled_from(AGENTS), data=st.data())
    def replay(self, namespace: str, agent: str, data: st.DataObject) -> None:
        bound = st.none() | st.integers(0, self.model.commit_ts + 2)
        start = data.draw(bound, label="start_ts")
        end = data.draw(bound, label="end_ts")
        expected = []
        for event in self.model.events:
            if (start is not None and event.commit_ts < start) or (end is not None and event.commit_ts > end):
                continue
            ops = tuple(op for op in event.ops if (op.namespace, op.agent_id) == (namespace, agent))
            if ops:
                expected.append(
                    _event_tuple(ModelEvent(event.commit_ts, event.txn_id, event.committed_at_ms, ops))
                )
        horizon = self.model.horizons.get(namespace, 0)
        if horizon > 1 and (start or 1) < horizon:
            with pytest.raises(HistoryCompactedError):
                list(self.sys.view().replay(namespace, agent, start, end))
            return
        got = [_event_tuple(e) for e in self.sys.view().replay(namespace, agent, start, end)]
        assert got == expected

    @rule(data=st.data())
    def events(self, data: st.DataObject) -> None:
        start = data.draw(st.integers(0, self.model.commit_ts + 2), label="start_ts")
        got = [_event_tuple(e) for e in self.sys.view().events(start)]
        assert got == [_event_tuple(e) for e in self.model.events if e.commit_ts >= start]

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def commit_ts_matches(self) -> None:
        assert self.store is not None
        assert self.store.last_commit_ts == self.model.commit_ts
        assert self.sys.view().last_commit_ts == self.model.commit_ts

    @invariant()
    def log_reproduces_state(self) -> None:
        """Folding the log from empty gives exactly the stored state and history."""
        view = self.sys.view()
        log = list(view.events())
        assert [_event_tuple(e) for e in log] == [_event_tuple(e) for e in self.model.events]
        state: dict[Target, StateRecord] = {}
        history: dict[bytes, VersionRecord] = {}
        for event in log:
            targets = [(op.namespace, op.agent_id, op.key) for op in event.ops]
            assert len(set(targets)) == len(targets), "one version per key per transaction"
            for op, target in zip(event.ops, targets, strict=True):
                if op.purge:
                    for gone in [t for t in state if t[:2] == target[:2] and t[2].startswith(op.key)]:
                        del state[gone]
                    continue
                previous = state.get(target)
                first = self.model.dropped.get(target, 0)  # retention let the ones before go
                assert op.version == (first if previous is None else previous.version) + 1
                state[target] = StateRecord(op.version, event.commit_ts, op.value)
                history[storage_keys.version_key(*target, op.version)] = VersionRecord(
                    event.commit_ts, op.value
                )
        for target in self.model.history.keys() | state.keys():
            assert view.get(*target) == state.get(target) == self.model.latest(target), target
            versions = self.model.history.get(target, [])
            for version in range(len(versions) + 2):  # 0 and the next one never existed
                self._check_version(view, target, version)
        assert dict(view.states()) == {storage_keys.state_key(*t): r for t, r in state.items()}
        assert dict(view.versions()) == history

    @invariant()
    def listings_match(self) -> None:
        view = self.sys.view()
        for namespace in NAMESPACES:
            for agent in AGENTS:
                expected = self.model.live_keys(namespace, agent)
                assert [key for key, _ in view.scan(namespace, agent)] == expected

    @invariant()
    def actors_match(self) -> None:
        """Which namespace actors live or are dormant, and what each holds open."""
        status = self.sys.status(W)
        assert status["ledger"]["last_commit_ts"] == self.model.commit_ts
        got = {
            s["namespace"]: (s["state"], s["open_transactions"], s.get("commits"))
            for s in status["namespaces"]
        }
        expected = {
            ns: ("dormant", len(a.open), None) if a.dormant else ("ok", len(a.open), a.commits)
            for ns, a in self.model.actors.items()
        }
        assert got == expected


StatehouseMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("STATEHOUSE_MODEL_EXAMPLES", "75")),
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# A failure is shrunk for up to 5 minutes (hypothesis's own limit); let it report.
TestActorsAndStorageMatchTheModel = pytest.mark.timeout(900)(StatehouseMachine.TestCase)
