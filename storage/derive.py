"""What an event implies: the records beside it in the log that point to its values.

The commit path (`Store.append`), `statehoused rebuild` and the upgrade of an
older store all write what `derived_records` yields, so they cannot drift
apart; `verify` compares the tables with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from rocksdict import WriteBatch

from storage import keys
from storage.records import (
    Event,
    EventOp,
    commit_records,
    encode_event,
    encode_slice,
    slots,
    state_record,
    value_flags,
    value_records,
    version_record,
)


def agent_slices(event: Event) -> dict[tuple[str, str], Event]:
    """Each agent's slice of an event: only that agent's ops, in the event's order."""
    by_agent: dict[tuple[str, str], list[EventOp]] = {}
    for op in event.ops:
        by_agent.setdefault((op.namespace, op.agent_id), []).append(op)
    if len(by_agent) == 1 and not event.scrubbed:
        return dict.fromkeys(by_agent, event)  # one agent: the slice is the event itself
    return {
        agent: Event(event.commit_ts, event.txn_id, event.committed_at_ms, tuple(ops))
        for agent, ops in by_agent.items()
    }


def agent_ops(
    event: Event, slot_list: list[int] | None = None
) -> dict[tuple[str, str], list[tuple[int, EventOp]]]:
    """Each agent's ops in an event with their slots (its AGENT_EVENTS record), in order
    (`slot_list`: the event's `slots`, if the caller has them)."""
    by_agent: dict[tuple[str, str], list[tuple[int, EventOp]]] = {}
    for slot, op in zip(slots(event) if slot_list is None else slot_list, event.ops, strict=True):
        by_agent.setdefault((op.namespace, op.agent_id), []).append((slot, op))
    return by_agent


def derived_records(
    event: Event,
    state_for: Callable[[EventOp], bool] | None = None,
    slot_list: list[int] | None = None,
) -> Iterator[tuple[bytes, bytes]]:
    """The STATE, VERSIONS, AGENT_EVENTS, AGENTS and TXNS records an event implies: each
    points to the op's value in VALUES, which alone holds it.

    The commit path and `statehoused rebuild` both write what this yields, so
    they cannot drift apart. `state_for` picks the ops whose STATE record is
    written (default: all, the last one of a key wins). `slot_list`: the event's `slots`, if
    the caller has them.
    """
    if slot_list is None:
        slot_list = slots(event)
    writers: set[tuple[str, str]] = set()
    for slot, op in zip(slot_list, event.ops, strict=True):
        if op.purge:
            continue  # a purge writes no state: `_purge_records` removes it
        flags = value_flags(op.value)
        writers.add((op.namespace, op.agent_id))
        if state_for is None or state_for(op):
            yield (
                keys.state_key(op.namespace, op.agent_id, op.key),
                state_record(op.version, event.commit_ts, slot, flags),
            )
        yield (
            keys.version_key(op.namespace, op.agent_id, op.key, op.version),
            version_record(event.commit_ts, slot, flags),
        )
    for (namespace, agent_id), mine in agent_ops(event, slot_list).items():
        yield keys.agent_event_key(namespace, agent_id, event.commit_ts), encode_slice(event, mine)
        if (namespace, agent_id) in writers:
            yield keys.agent_key(namespace, agent_id), b""
    yield keys.txn_key(event.txn_id), keys.u64(event.commit_ts)


def add_event(batch: WriteBatch, event: Event) -> None:
    """Add to `batch` the event, its values and every record it implies."""
    put = batch.put
    records = commit_records(event)  # a new commit's, in one pass
    if records is not None:
        for key, value in records:
            put(key, value)
        return
    slot_list = slots(event)
    batch.put(keys.event_key(event.commit_ts), encode_event(event, slot_list))
    for key, value in value_records(event, slot_list):
        batch.put(key, value)
    for key, value in derived_records(event, None, slot_list):
        batch.put(key, value)
