"""Pure request building and response parsing, shared by every client.

Nothing here does I/O; a client sends what these functions build and hands
the answers back to them.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from typing import Any

from statehouse import _codec, _names
from statehouse._proto import statehouse_pb2 as pb
from statehouse.exceptions import StatehouseError, from_status, invalid
from statehouse.types import Operation, ReplayEvent, StateResult


def names(namespace: str, agent_id: str, key: str | None = None, *, in_txn: bool = False) -> str:
    """Validate names before sending; returns the namespace ("" -> "default")."""
    try:
        namespace = _names.check_namespace(namespace)
        _names.check_name("agent_id", agent_id)
        if key is not None:
            _names.check_name("key", key)
    except _names.NameError_ as exc:
        raise invalid(str(exc), in_txn) from None
    return namespace


def namespace(name: str, *, in_txn: bool = False) -> str:
    """Validate a namespace ("" -> "default")."""
    try:
        return _names.check_namespace(name)
    except _names.NameError_ as exc:
        raise invalid(str(exc), in_txn) from None


def new_transaction(namespace_name: str, timeout_ms: int | None) -> tuple[str, str]:
    """A fresh client-chosen transaction id and its namespace, after checking the arguments.

    The id is "<namespace>:<24 hex>" with 96 random bits, the form the
    daemon accepts in TxnOpen (see the proto).
    """
    ns = namespace(namespace_name, in_txn=True)
    if timeout_ms is not None and (
        not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool) or not 1 <= timeout_ms < 2**64
    ):
        raise invalid(f"timeout_ms must be a whole number of milliseconds >= 1, got {timeout_ms!r}", True)
    return f"{ns}:{secrets.token_hex(12)}", ns


def txn_open(remaining_ms: float | None) -> pb.TxnOpen:
    """The TxnOpen for a transaction with `remaining_ms` of its timeout left (None: server default)."""
    if remaining_ms is None:
        return pb.TxnOpen()
    return pb.TxnOpen(timeout_ms=max(1, math.ceil(remaining_ms)))


def commit_outcomes(response: pb.CommitBatchResponse, count: int) -> list[int | StatehouseError]:
    """One commit_ts or error per request of a CommitBatch."""
    if len(response.outcomes) != count:
        raise StatehouseError(f"the daemon answered {len(response.outcomes)} outcomes for {count} commits")
    return [from_status(o.code, o.message, True) if o.code else o.commit_ts for o in response.outcomes]


def encode_value(key: str, value: Any) -> bytes:
    try:
        return _codec.encode(value)
    except ValueError as exc:
        raise invalid(f"value of key {key!r}: {exc}", True) from None


def write_mutation(namespace: str, agent_id: str, key: str, value: Any) -> pb.Mutation:
    namespace = names(namespace, agent_id, key, in_txn=True)
    return pb.Mutation(namespace=namespace, agent_id=agent_id, key=key, value_json=encode_value(key, value))


def delete_mutation(namespace: str, agent_id: str, key: str) -> pb.Mutation:
    namespace = names(namespace, agent_id, key, in_txn=True)
    return pb.Mutation(namespace=namespace, agent_id=agent_id, key=key, delete=True)


def get_state(namespace: str, agent_id: str, key: str) -> pb.GetStateRequest:
    namespace = names(namespace, agent_id, key)
    return pb.GetStateRequest(namespace=namespace, agent_id=agent_id, key=key, json_values=True)


def get_state_at_version(
    namespace: str, agent_id: str, key: str, version: int
) -> pb.GetStateAtVersionRequest:
    namespace = names(namespace, agent_id, key)
    if not isinstance(version, int) or version < 1:
        raise invalid(f"version must be a whole number >= 1, got {version!r}", False)
    return pb.GetStateAtVersionRequest(
        namespace=namespace, agent_id=agent_id, key=key, version=version, json_values=True
    )


def read_batch(requests: Sequence[pb.GetStateRequest | pb.GetStateAtVersionRequest]) -> pb.ReadBatchRequest:
    batch = pb.ReadBatchRequest()
    for request in requests:
        if isinstance(request, pb.GetStateRequest):
            batch.reads.add(latest=request)
        else:
            batch.reads.add(at_version=request)
    return batch


def read_outcomes(response: pb.ReadBatchResponse, count: int) -> list[pb.GetStateResponse | StatehouseError]:
    """One state or error per read of a ReadBatch."""
    if len(response.outcomes) != count:
        raise StatehouseError(f"the daemon answered {len(response.outcomes)} outcomes for {count} reads")
    return [from_status(o.code, o.message, False) if o.code else o.state for o in response.outcomes]


def list_keys(namespace: str, agent_id: str) -> pb.ListKeysRequest:
    return pb.ListKeysRequest(namespace=names(namespace, agent_id), agent_id=agent_id)


def scan_prefix(namespace: str, agent_id: str, prefix: str) -> pb.ScanPrefixRequest:
    namespace = names(namespace, agent_id)
    try:
        _names.check_name("prefix", prefix, allow_empty=True)
    except _names.NameError_ as exc:
        raise invalid(str(exc), False) from None
    return pb.ScanPrefixRequest(namespace=namespace, agent_id=agent_id, prefix=prefix, json_values=True)


def replay(namespace: str, agent_id: str, start_ts: int | None, end_ts: int | None) -> pb.ReplayRequest:
    namespace = names(namespace, agent_id)
    for field, ts in (("start_ts", start_ts), ("end_ts", end_ts)):
        if ts is not None and (not isinstance(ts, int) or ts < 0):
            raise invalid(f"{field} must be a whole number >= 0, got {ts!r}", False)
    if start_ts is not None and end_ts is not None and start_ts > end_ts:
        raise invalid(f"start_ts ({start_ts}) is after end_ts ({end_ts})", False)
    return pb.ReplayRequest(
        namespace=namespace, agent_id=agent_id, start_ts=start_ts, end_ts=end_ts, json_values=True
    )


def _value(message: Any) -> Any:
    return _codec.decode(message.value_json) if message.value_json else None


def state_result(response: Any, key: str | None = None) -> StateResult:
    value = _value(response) if response.exists else None
    return StateResult(value, response.version, response.commit_ts, response.exists, key)


def scan_results(response: pb.ScanPrefixResponse) -> list[StateResult]:
    return [StateResult(_value(e), e.version, e.commit_ts, True, e.key) for e in response.entries]


def replay_event(message: pb.ReplayEvent, namespace: str, agent_id: str) -> ReplayEvent:
    operations = [
        Operation(op.key, None if op.deleted else _value(op), op.version, op.deleted)
        for op in message.operations
    ]
    return ReplayEvent(
        message.txn_id, message.commit_ts, operations, namespace, agent_id, message.committed_at_ms
    )
