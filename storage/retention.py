"""Retention: which history a policy lets go, found on a read view, applied by the writer.

A policy keeps, of each key, its `versions` newest versions and every version
committed in the last `seconds` (0: no limit of that kind; both 0: keep
everything). Whatever the policy, the latest op of every key is kept: the
latest value of a live key, or the tombstone of a deleted one, which keeps
its version counter going (a purge forgets a key entirely). So a key's kept
versions are always its newest ones, without holes.

Dropping an op deletes its value (VALUES) and its VERSIONS record, rewrites
its event's heads without it (`scrubbed`; the other ops keep their slots,
and an event left with no op stays as its head, so that the log keeps every
commit_ts and its transaction id still answers a retry), and removes it
from the agent's event index. Each namespace then has a *horizon*: the commit_ts from which its
history is whole. Reads that need history from before it fail with
`HistoryCompactedError` instead of answering in part (storage/view.py).

`plan` reads only (a ReadView, off the writer's thread) and finds at most
`limit` ops to drop; `apply` (the writer, between commit groups) drops them
in one write, after checking each is still there and still not the latest
of its key. Two cursors, kept in the store, make each pass look only at
what is new: the commit_ts up to which events were checked against the
`versions` limit, and, per namespace, the one up to which they were checked
against the `seconds` limit.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rocksdict import WriteBatch

from storage import keys, reading
from storage.records import (
    Event,
    VersionPointer,
    decode_event,
    decode_state,
    encode_event,
    encode_slice,
    slots,
)
from storage.view import ReadView

_HORIZON = struct.Struct(">QQ")  # horizon, seconds cursor


@dataclass(frozen=True, slots=True)
class Policy:
    """Keep each key's `versions` newest versions and what the last `seconds` committed
    (0: no such limit); the latest op of a key is always kept."""

    versions: int = 0
    seconds: float = 0.0

    @property
    def keeps_all(self) -> bool:
        return not self.versions and not self.seconds

    def __str__(self) -> str:
        if self.keeps_all:
            return "all"
        parts = [f"versions:{self.versions}"] if self.versions else []
        return ",".join(parts + ([f"seconds:{self.seconds:g}"] if self.seconds else []))

    @classmethod
    def parse(cls, text: str) -> Policy:
        """`all`, or `versions:N`, `seconds:S` or both, comma-separated (ValueError if not)."""
        text = text.strip()
        if text == "all":
            return cls()
        versions, seconds = 0, 0.0
        for part in text.split(","):
            name, _, number = part.strip().partition(":")
            try:
                if name == "versions":
                    versions = int(number)
                elif name == "seconds":
                    seconds = float(number)
                else:
                    raise ValueError(name)
            except ValueError:
                raise ValueError(
                    f"{text!r} is not a retention policy: say all, versions:N, seconds:S or "
                    "versions:N,seconds:S"
                ) from None
        if versions < 0 or not 0 <= seconds < 1e12:  # also refuses nan and inf
            raise ValueError(f"{text!r}: a retention limit is a number from 0, and finite")
        return cls(versions, seconds)


@dataclass(frozen=True, slots=True)
class Policies:
    """The daemon-wide policy and each namespace's own, where it has one."""

    default: Policy = field(default_factory=Policy)
    namespaces: dict[str, Policy] = field(default_factory=dict)

    def of(self, namespace: str) -> Policy:
        return self.namespaces.get(namespace, self.default)

    @property
    def keeps_all(self) -> bool:
        return self.default.keeps_all and all(p.keeps_all for p in self.namespaces.values())

    @classmethod
    def parse_namespaces(cls, text: str) -> dict[str, Policy]:
        """`NS=POLICY;NS=POLICY` (see Policy.parse) into a dict (ValueError if malformed)."""
        found: dict[str, Policy] = {}
        for entry in filter(None, (e.strip() for e in text.split(";"))):
            namespace, equals, policy = entry.partition("=")
            if not equals or not namespace.strip():
                raise ValueError(f"{entry!r} is not NAMESPACE=POLICY")
            found[namespace.strip()] = Policy.parse(policy)
        return found


@dataclass(frozen=True, slots=True)
class Drop:
    """One op to drop: version `version` of a key, op `slot` of the event at `commit_ts`."""

    commit_ts: int
    slot: int
    namespace: str
    agent_id: str
    key: str
    version: int


@dataclass
class Plan:
    """What one pass found: ops to drop, and how far its cursors got."""

    drops: list[Drop] = field(default_factory=list)
    versions_cursor: int = 0  # events up to here were checked against the versions limits
    policies: Policies = field(default_factory=Policies)  # the policies it was found with
    seconds_cursors: dict[str, int] = field(default_factory=dict)  # per namespace, the same


@dataclass(frozen=True, slots=True)
class Applied:
    """What `apply` dropped: ops, events left with none (emptied), and the horizons it moved."""

    ops: int
    events_emptied: int
    horizons: dict[str, int]


def horizon_key(namespace: str) -> bytes:
    return keys.HORIZONS + keys.name(namespace)


def read_horizon(source: Any, namespace: str) -> tuple[int, int]:
    """(horizon, seconds cursor) of a namespace; (0, 0) if retention never dropped anything there."""
    data = reading.get(source, horizon_key(namespace))
    return (0, 0) if data is None else _HORIZON.unpack(data)


def horizons(source: Any) -> Iterator[tuple[str, int]]:
    """Every namespace's horizon."""
    for raw_key, data in reading.scan(source, keys.HORIZONS, "the HORIZONS table"):
        namespace, _pos = keys.read_name(raw_key, 1)
        yield namespace, _HORIZON.unpack(data)[0]


def versions_cursor(source: Any, policies: Policies) -> int:
    """How far the versions pass got; 0 (look again at everything) if the `versions` limits
    changed since (a stricter limit lets go history of keys that are not written again)."""
    data = reading.get(source, keys.META_RETAINED_THROUGH)
    if data is None or len(data) < 8 or data[8:] != _signature(policies):
        return 0
    return keys.read_u64(data)


def _signature(policies: Policies) -> bytes:
    """The `versions` limits the versions cursor was reached with."""
    limits = sorted((ns, p.versions) for ns, p in policies.namespaces.items())
    return repr((policies.default.versions, limits)).encode()


def first_after(view: ReadView, at_ms: int) -> int:
    """The first commit_ts committed after wall-clock time `at_ms` (one past the log if none),
    found by bisection (wall time grows with commit_ts, near enough)."""
    low, high = 1, view.last_commit_ts + 1
    while low < high:
        middle = (low + high) // 2
        event = view.first_event_from(middle)
        if event is None or event.committed_at_ms > at_ms:
            high = middle
        else:
            low = event.commit_ts + 1
    return low


def plan(view: ReadView, policies: Policies, now_ms: int, limit: int = 2000) -> Plan:
    """At most about `limit` ops the policies let go, as of `view` (reads only)."""
    result = Plan(versions_cursor=versions_cursor(view.snapshot, policies), policies=policies)
    if policies.keeps_all:
        result.versions_cursor = view.last_commit_ts
        return result
    seen: set[tuple[str, str, str, int]] = set()
    # Where `seconds` lets history go, per namespace: below this commit_ts.
    seconds_limit: dict[str, int] = {}

    def before_seconds(namespace: str) -> int:
        if namespace not in seconds_limit:
            seconds = policies.of(namespace).seconds
            seconds_limit[namespace] = (
                first_after(view, now_ms - int(seconds * 1000)) if seconds else view.last_commit_ts + 1
            )
        return seconds_limit[namespace]

    def drop(commit_ts: int, slot: int, namespace: str, agent_id: str, key: str, version: int) -> None:
        if (namespace, agent_id, key, version) not in seen:
            seen.add((namespace, agent_id, key, version))
            result.drops.append(Drop(commit_ts, slot, namespace, agent_id, key, version))

    # Versions: when version v of a key is written, its versions up to v - N may go.
    planned: dict[tuple[str, str, str], int] = {}  # the highest version looked at per key
    for event in view.events(result.versions_cursor + 1, values=False):
        if len(result.drops) >= limit:
            break
        for op in event.ops:
            limit_n = policies.of(op.namespace).versions
            if op.purge or not limit_n or op.version <= limit_n:
                continue
            target = (op.namespace, op.agent_id, op.key)
            below, last = before_seconds(op.namespace), op.version - limit_n
            if target in planned:  # looked at already in this pass: the next versions, by point reads
                found: Iterator[tuple[int, VersionPointer | None]] = (
                    (v, view.version_pointer(*target, v)) for v in range(planned[target] + 1, last + 1)
                )
            else:  # the first time: from the oldest version kept
                found = iter(view.versions_of(*target))
            planned.setdefault(target, 0)
            for version, pointer in found:
                if version > last or (pointer is not None and pointer.commit_ts >= below):
                    break
                if pointer is not None:
                    drop(pointer.commit_ts, pointer.slot, *target, version)
                planned[target] = version
        result.versions_cursor = event.commit_ts
    else:
        result.versions_cursor = view.last_commit_ts
    # Seconds: every op committed before the limit may go, unless it is its key's latest (or
    # among its N newest, when the namespace has both limits).
    candidates = {*policies.namespaces, *view.namespaces()}
    timed = {ns: before_seconds(ns) for ns in candidates if policies.of(ns).seconds}
    starts = {ns: read_horizon(view.snapshot, ns)[1] + 1 for ns in timed}
    active = {ns for ns in timed if starts[ns] < timed[ns]}
    if not active:
        return result
    end = max(timed[ns] for ns in active)  # exclusive
    reached = end - 1  # every event up to here was looked at
    for event in view.events(min(starts[ns] for ns in active), values=False):
        if event.commit_ts >= end:
            break
        if len(result.drops) >= limit:
            reached = event.commit_ts - 1
            break
        for slot, op in zip(slots(event), event.ops, strict=True):
            ns = op.namespace
            if op.purge or ns not in active or not starts[ns] <= event.commit_ts < timed[ns]:
                continue
            latest = view.pointer(ns, op.agent_id, op.key)
            if latest is None or (latest.commit_ts, latest.slot) == (event.commit_ts, slot):
                continue  # the latest op of its key (or purged since): kept
            limit_n = policies.of(ns).versions
            if limit_n and op.version > latest.version - limit_n:
                continue
            # With it go the key's older versions still kept (one was its latest when an
            # earlier pass looked), so that what is kept stays the newest, without holes.
            target = (ns, op.agent_id, op.key)
            for version, pointer in view.versions_of(*target, planned.get(target, 0) + 1):
                if version > op.version:
                    break
                drop(pointer.commit_ts, pointer.slot, *target, version)
                planned[target] = version
    for ns in active:
        result.seconds_cursors[ns] = min(reached, timed[ns] - 1)
    return result


def apply(db: Any, batch: WriteBatch, found: Plan) -> Applied:
    """Add to `batch` the drops of `found` that still hold (read from `db`, the writer's
    own handle), the new horizons and the cursors."""
    by_event: dict[int, list[Drop]] = {}
    for drop in found.drops:
        by_event.setdefault(drop.commit_ts, []).append(drop)
    moved: dict[str, int] = {}
    dropped = removed = 0  # ops, and events left with none
    for commit_ts, drops in sorted(by_event.items()):
        data = reading.get(db, keys.event_key(commit_ts))
        if data is None:
            continue
        event = decode_event(commit_ts, data, None)  # heads: the values are dropped by key
        slotted = list(zip(slots(event), event.ops, strict=True))
        going = {drop.slot: drop for drop in drops if _still_droppable(db, drop, slotted)}
        if not going:
            continue
        kept = tuple(op._replace(slot=slot) for slot, op in slotted if slot not in going)
        event = event._replace(ops=kept, scrubbed=True)
        # An event left with no op stays, as its head: the log keeps every commit_ts, and its
        # transaction id still answers a retry of that commit (as after a purge).
        batch.put(keys.event_key(commit_ts), encode_event(event))
        removed += not kept
        for drop in going.values():
            batch.delete(keys.value_key(commit_ts, drop.slot))
            batch.delete(keys.version_key(drop.namespace, drop.agent_id, drop.key, drop.version))
            moved[drop.namespace] = max(moved.get(drop.namespace, 0), commit_ts + 1)
            dropped += 1
        _rewrite_slices(batch, event, slotted, set(going))
    namespaces = {*moved, *found.seconds_cursors}
    for namespace in namespaces:
        horizon, cursor = read_horizon(db, namespace)
        horizon = max(horizon, moved.get(namespace, 0))
        cursor = max(cursor, found.seconds_cursors.get(namespace, 0))
        batch.put(horizon_key(namespace), _HORIZON.pack(horizon, cursor))
    batch.put(keys.META_RETAINED_THROUGH, keys.u64(found.versions_cursor) + _signature(found.policies))
    return Applied(dropped, removed, moved)


def _still_droppable(db: Any, drop: Drop, slotted: list[tuple[int, Any]]) -> bool:
    """The op is still in its event (no purge took it) and still not its key's latest."""
    if not any(
        slot == drop.slot and op.key == drop.key and op.version == drop.version for slot, op in slotted
    ):
        return False
    data = reading.get(db, keys.state_key(drop.namespace, drop.agent_id, drop.key))
    if data is None:
        return False
    latest = decode_state(data)
    return latest.version > drop.version


def _rewrite_slices(batch: WriteBatch, event: Event, slotted: list[tuple[int, Any]], going: set[int]) -> None:
    """Each agent's event index record without the dropped ops (removed if none is left);
    `event` is the event as rewritten."""
    by_agent: dict[tuple[str, str], list[tuple[int, Any]]] = {}
    touched: set[tuple[str, str]] = set()
    for slot, op in slotted:
        agent = (op.namespace, op.agent_id)
        if slot in going:
            touched.add(agent)
        else:
            by_agent.setdefault(agent, []).append((slot, op))
    for namespace, agent_id in touched:
        raw_key = keys.agent_event_key(namespace, agent_id, event.commit_ts)
        left = by_agent.get((namespace, agent_id))
        if left:
            batch.put(raw_key, encode_slice(event, left))
        else:
            batch.delete(raw_key)
