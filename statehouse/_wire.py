"""Pure request building and response parsing, shared by every client.

Nothing here does I/O; a client sends what these functions build and hands
the answers back to them.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from typing import Any

from statehouse import _codec, _names, _retry
from statehouse._proto import statehouse_pb2 as pb
from statehouse.exceptions import StatehouseError, conflict_error, from_status, invalid
from statehouse.types import KeyVersion, Operation, Page, ReplayEvent, StateResult

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_MAX_UINT32 = 2**32 - 1
_MAX_UINT64 = 2**64 - 1


def channel_options() -> list[tuple[str, int]]:
    """Options of every client's channel: large messages, quick reconnection."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        *_retry.CHANNEL_OPTIONS,
    ]


def names(namespace: str, agent_id: str, key: str | None = None, *, in_txn: bool = False) -> str:
    """Validate names before sending; returns the namespace ("" -> "default")."""
    try:
        return _names.check_names(namespace, agent_id, key)
    except _names.NameError_ as exc:
        raise invalid(str(exc), in_txn) from None


def namespace(name: str, *, in_txn: bool = False) -> str:
    """Validate a namespace ("" -> "default")."""
    try:
        return _names.check_namespace(name)
    except _names.NameError_ as exc:
        raise invalid(str(exc), in_txn) from None


def whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def new_transaction(
    namespace_name: str, timeout_ms: int | None, idempotency_key: str | None = None
) -> tuple[str, str]:
    """A client-chosen transaction id and its namespace, after checking the arguments.

    The id is "<namespace>:<24 hex>", the form the daemon accepts in TxnOpen
    (see the proto): 96 random bits, or with an idempotency key the first 96
    bits of sha256(namespace NUL key), so the same step always gets the same id.
    """
    ns = namespace(namespace_name, in_txn=True)
    if timeout_ms is not None and (not whole(timeout_ms) or not 1 <= timeout_ms <= _MAX_UINT64):
        raise invalid(f"timeout_ms must be a whole number of milliseconds >= 1, got {timeout_ms!r}", True)
    if idempotency_key is None:
        return f"{ns}:{os.urandom(12).hex()}", ns  # what secrets.token_hex(12) is, in fewer calls
    if not isinstance(idempotency_key, str) or not idempotency_key:
        raise invalid(f"idempotency_key must be a non-empty string, got {idempotency_key!r}", True)
    try:
        digest = hashlib.sha256((ns + chr(0) + idempotency_key).encode()).hexdigest()
    except UnicodeEncodeError:
        raise invalid("idempotency_key is not valid UTF-8 (lone surrogate)", True) from None
    return f"{ns}:{digest[:24]}", ns


def txn_open(remaining_ms: float | None) -> pb.TxnOpen:
    """The TxnOpen for a transaction with `remaining_ms` of its timeout left (None: server default)."""
    if remaining_ms is None:
        return pb.TxnOpen()
    return pb.TxnOpen(timeout_ms=max(1, math.ceil(remaining_ms)))


def commit_outcomes(response: pb.CommitBatchResponse, count: int) -> list[int | StatehouseError]:
    """One commit_ts or error per request of a CommitBatch."""
    if len(response.outcomes) != count:
        raise StatehouseError(f"the daemon answered {len(response.outcomes)} outcomes for {count} commits")
    return [_commit_outcome(o) for o in response.outcomes]


def _commit_outcome(outcome: pb.CommitOutcome) -> int | StatehouseError:
    if not outcome.code:
        return int(outcome.commit_ts)
    if outcome.HasField("conflict"):
        return conflict_error(outcome.conflict)
    return from_status(outcome.code, outcome.message, True)


BYTES_TYPES = (bytes, bytearray, memoryview)


def encode_value(key: str, value: Any) -> bytes:
    try:
        return _codec.encode(value)
    except ValueError as exc:
        raise invalid(f"value of key {key!r}: {exc}", True) from None


def _version(field: str, version: object, in_txn: bool, least: int = 0) -> int:
    if not whole(version) or not least <= version <= _MAX_UINT64:  # type: ignore[operator]
        raise invalid(f"{field} must be a whole number >= {least}, got {version!r}", in_txn)
    return version  # type: ignore[return-value]


def write_mutation(
    namespace: str,
    agent_id: str,
    key: str,
    value: Any,
    expected_version: int | None = None,
    if_absent: bool = False,
) -> pb.Mutation:
    """A write: a bytes-like `value` travels as raw bytes, anything else as exact JSON."""
    namespace = names(namespace, agent_id, key, in_txn=True)
    mutation = pb.Mutation(namespace=namespace, agent_id=agent_id, key=key)
    if isinstance(value, BYTES_TYPES):
        mutation.value_bytes = bytes(value)
    else:
        mutation.value_json = encode_value(key, value)
    if expected_version is not None:
        if if_absent:
            raise invalid(
                f"write of key {key!r}: if_absent and expected_version do not go together "
                "(expected_version=0 fails the transaction when the key exists; if_absent skips the write)",
                True,
            )
        mutation.expected_version = _version("expected_version", expected_version, True)
    if not isinstance(if_absent, bool):
        raise invalid(f"if_absent must be True or False, got {if_absent!r}", True)
    mutation.if_absent = if_absent
    return mutation


def delete_mutation(
    namespace: str, agent_id: str, key: str, expected_version: int | None = None
) -> pb.Mutation:
    namespace = names(namespace, agent_id, key, in_txn=True)
    mutation = pb.Mutation(namespace=namespace, agent_id=agent_id, key=key, delete=True)
    if expected_version is not None:
        mutation.expected_version = _version("expected_version", expected_version, True)
    return mutation


def condition(namespace: str, agent_id: str, key: str, version: int) -> pb.Condition:
    namespace = names(namespace, agent_id, key, in_txn=True)
    version = _version("version", version, True)
    return pb.Condition(namespace=namespace, agent_id=agent_id, key=key, expected_version=version)


def get_state(namespace: str, agent_id: str, key: str) -> pb.GetStateRequest:
    namespace = names(namespace, agent_id, key)
    return pb.GetStateRequest(
        namespace=namespace, agent_id=agent_id, key=key, json_values=True, bytes_values=True
    )


def get_state_at_version(
    namespace: str, agent_id: str, key: str, version: int
) -> pb.GetStateAtVersionRequest:
    namespace = names(namespace, agent_id, key)
    version = _version("version", version, False, least=1)
    return pb.GetStateAtVersionRequest(
        namespace=namespace,
        agent_id=agent_id,
        key=key,
        version=version,
        json_values=True,
        bytes_values=True,
    )


def get_many(namespace_name: str, wanted: Any) -> list[pb.GetStateRequest]:
    """The reads of a get_many: one GetStateRequest per (agent_id, key) pair, checked."""
    if isinstance(wanted, (str, bytes)) or not hasattr(wanted, "__iter__"):
        raise invalid(f"get_many takes a list of (agent_id, key) pairs, got {type(wanted).__name__}", False)
    requests = []
    for pair in wanted:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise invalid(f"get_many takes (agent_id, key) pairs, got {pair!r}", False)
        requests.append(get_state(namespace_name, pair[0], pair[1]))
    return requests


def read_batch(
    requests: Sequence[pb.GetStateRequest | pb.GetStateAtVersionRequest], at_commit_ts: int | None = None
) -> pb.ReadBatchRequest:
    batch = pb.ReadBatchRequest()
    if at_commit_ts is not None:
        batch.at_commit_ts = at_commit_ts
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
    found: list[pb.GetStateResponse | StatehouseError] = []
    for o in response.outcomes:
        found.append(from_status(o.code, o.message, False, horizon=o.horizon) if o.code else o.state)
    return found


def _paging(limit: int, page_token: str | None) -> None:
    if not whole(limit) or not 1 <= limit <= _MAX_UINT32:
        raise invalid(f"limit must be a whole number >= 1, got {limit!r}", False)
    if page_token is not None and not isinstance(page_token, str):
        raise invalid(f"page_token must be a string from a previous page, got {page_token!r}", False)


def check_prefix(prefix: str) -> None:
    """Check a key prefix ("" is allowed)."""
    try:
        _names.check_name("prefix", prefix, allow_empty=True)
    except _names.NameError_ as exc:
        raise invalid(str(exc), False) from None


def _cursor(prefix: str, reverse: bool, start_after: str | None) -> None:
    """Check a listing's prefix, order and start-after cursor."""
    try:
        _names.check_name("prefix", prefix, allow_empty=True)
        if start_after is not None:
            _names.check_name("start_after", start_after)
    except _names.NameError_ as exc:
        raise invalid(str(exc), False) from None
    if not isinstance(reverse, bool):
        raise invalid(f"reverse must be True or False, got {reverse!r}", False)


def list_keys(
    namespace: str,
    agent_id: str,
    limit: int,
    page_token: str | None = None,
    at_commit_ts: int | None = None,
    *,
    prefix: str = "",
    reverse: bool = False,
    start_after: str | None = None,
) -> pb.ListKeysRequest:
    """A ListKeys request for one page of at most `limit` keys."""
    namespace = names(namespace, agent_id)
    _cursor(prefix, reverse, start_after)
    _paging(limit, page_token)
    request = pb.ListKeysRequest(
        namespace=namespace,
        agent_id=agent_id,
        limit=limit,
        page_token=page_token or "",
        prefix=prefix,
        reverse=reverse,
        start_after=start_after or "",
    )
    if at_commit_ts is not None:
        request.at_commit_ts = _version("at_commit_ts", at_commit_ts, False)
    return request


def list_agents(
    namespace_name: str,
    prefix: str,
    limit: int,
    start_after: str | None = None,
    page_token: str | None = None,
    *,
    reverse: bool = False,
) -> pb.ListAgentsRequest:
    """A ListAgents request for one page of at most `limit` agent ids."""
    ns = namespace(namespace_name)
    _cursor(prefix, reverse, start_after)
    _paging(limit, page_token)
    return pb.ListAgentsRequest(
        namespace=ns,
        prefix=prefix,
        limit=limit,
        start_after=start_after or "",
        page_token=page_token or "",
        reverse=reverse,
    )


def scan_prefix(
    namespace: str,
    agent_id: str,
    prefix: str,
    limit: int,
    page_token: str | None = None,
    at_commit_ts: int | None = None,
    *,
    reverse: bool = False,
    start_after: str | None = None,
) -> pb.ScanPrefixRequest:
    """A ScanPrefix request for one page of at most `limit` entries."""
    namespace = names(namespace, agent_id)
    _cursor(prefix, reverse, start_after)
    _paging(limit, page_token)
    request = pb.ScanPrefixRequest(
        namespace=namespace,
        agent_id=agent_id,
        prefix=prefix,
        json_values=True,
        bytes_values=True,
        limit=limit,
        page_token=page_token or "",
        reverse=reverse,
        start_after=start_after or "",
    )
    if at_commit_ts is not None:
        request.at_commit_ts = _version("at_commit_ts", at_commit_ts, False)
    return request


def key_history(
    namespace: str, agent_id: str, key: str, limit: int, page_token: str | None = None
) -> pb.KeyHistoryRequest:
    """A KeyHistory request for one page of at most `limit` versions, newest first."""
    namespace = names(namespace, agent_id, key)
    _paging(limit, page_token)
    return pb.KeyHistoryRequest(
        namespace=namespace,
        agent_id=agent_id,
        key=key,
        limit=limit,
        page_token=page_token or "",
        json_values=True,
        bytes_values=True,
    )


def watch(namespace: str, agent_id: str | None, key_prefix: str, start_ts: int | None) -> pb.WatchRequest:
    """A Watch request; an agent_id of None watches every agent of the namespace."""
    try:
        namespace = _names.check_namespace(namespace)
        if agent_id is not None:
            _names.check_name("agent_id", agent_id)
        _names.check_name("prefix", key_prefix, allow_empty=True)
    except _names.NameError_ as exc:
        raise invalid(str(exc), False) from None
    request = pb.WatchRequest(
        namespace=namespace,
        agent_id=agent_id or "",
        key_prefix=key_prefix,
        json_values=True,
        bytes_values=True,
    )
    if start_ts is not None:
        request.start_ts = _version("start_ts", start_ts, False)
    return request


def replay(namespace: str, agent_id: str, start_ts: int | None, end_ts: int | None) -> pb.ReplayRequest:
    namespace = names(namespace, agent_id)
    for field, ts in (("start_ts", start_ts), ("end_ts", end_ts)):
        if ts is not None:
            _version(field, ts, False)
    if start_ts is not None and end_ts is not None and start_ts > end_ts:
        raise invalid(f"start_ts ({start_ts}) is after end_ts ({end_ts})", False)
    return pb.ReplayRequest(
        namespace=namespace,
        agent_id=agent_id,
        start_ts=start_ts,
        end_ts=end_ts,
        json_values=True,
        bytes_values=True,
    )


def resumed_replay(request: pb.ReplayRequest, last: int | None) -> pb.ReplayRequest:
    """`request`, resumed after the commit `last` it already delivered (None: from its start)."""
    if last is None:
        return request
    resumed = pb.ReplayRequest()
    resumed.CopyFrom(request)
    resumed.start_ts = last + 1
    return resumed


def replay_done(request: pb.ReplayRequest, last: int | None) -> bool:
    """Whether a replay that delivered up to `last` has nothing more to deliver."""
    return last is not None and request.HasField("end_ts") and last >= request.end_ts


def _value(message: Any) -> Any:
    """The value a message carries: bytes if it is a bytes value, else decoded JSON (None if none)."""
    if message.HasField("value_bytes"):
        return message.value_bytes
    return _codec.decode(message.value_json) if message.value_json else None


def state_result(response: Any, key: str | None = None) -> StateResult:
    value = _value(response) if response.exists else None
    return StateResult(value, response.version, response.commit_ts, response.exists, key)


def scan_results(response: pb.ScanPrefixResponse) -> list[StateResult]:
    return [StateResult(_value(e), e.version, e.commit_ts, True, e.key) for e in response.entries]


def keys_page(response: pb.ListKeysResponse) -> Page[str]:
    return Page(list(response.keys), response.next_page_token or None, response.commit_ts)


def agents_page(response: pb.ListAgentsResponse) -> Page[str]:
    return Page(list(response.agent_ids), response.next_page_token or None, response.commit_ts)


def scan_page(response: pb.ScanPrefixResponse) -> Page[StateResult]:
    return Page(scan_results(response), response.next_page_token or None, response.commit_ts)


def history_page(response: pb.KeyHistoryResponse) -> Page[KeyVersion]:
    versions = [
        KeyVersion(v.version, v.commit_ts, None if v.deleted else _value(v), v.deleted, v.committed_at_ms)
        for v in response.versions
    ]
    # A key's history has no single commit_ts: the newest version's stands for the page.
    return Page(versions, response.next_page_token or None, versions[0].commit_ts if versions else 0)


def replay_event(message: pb.ReplayEvent, namespace: str, agent_id: str | None = None) -> ReplayEvent:
    """An event of a replay of `agent_id`, or of a watch (None: the agent the event names)."""
    operations = [
        Operation(op.key, None if op.deleted or op.purged else _value(op), op.version, op.deleted, op.purged)
        for op in message.operations
    ]
    return ReplayEvent(
        message.txn_id,
        message.commit_ts,
        operations,
        namespace,
        message.agent_id if agent_id is None else agent_id,
        message.committed_at_ms,
    )
