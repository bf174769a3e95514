"""Drive the published client `statehouse==0.1.1` against a running daemon.

Not a test module and never imported by pytest: tests/rpc/test_compat_old_client.py
runs it with the `.venv-compat` interpreter as `python -I compat_script.py ADDR`,
where `import statehouse` is the old client. It uses only that client's own
API, records what it observes, and prints one JSON object; the test asserts.
Names shared with the test: agents "cross", "cross-wide", "cross-scalar" and
"cross-bytes" (written by our SDK before this runs; the last holds a bytes
value), keys "cross/old" and "wide/old" (written here for the test to read),
CROSS_VALUE and WIDE_VALUE.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import statehouse
from statehouse import StatehouseError, Transaction, TransactionError

AGENT = "compat-agent"
OTHER = "compat-other"
NS_B = "compat-b"
CROSS_VALUE = {"n": 42, "items": [{"a": 1}]}
WIDE_VALUE = {**{f"k{i:02d}": i for i in range(16)}, "obj": {"z": 1, "y": [{"b": 2, "a": 1}], "x": "s"}}

INITIAL = {
    "profile": {
        "name": "Ada",
        "active": True,
        "age": 36,
        "tags": ["x", "y"],
        "address": {"city": "London", "zip": {"code": "N1", "inner": {"deep": False}}},
    },
    "tasks": {"items": [{"id": 1, "done": False}, {"id": 2, "done": True, "sub": [{"k": "v"}]}], "count": 2},
    "misc": {"none": None, "empty_list": [], "empty_obj": {}, "f": 2.5, "neg": -7, "text": ""},
}


def plain(value: Any) -> Any:
    """Struct / ListValue containers as dict / list, leaves as the client returned them."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, Sequence):
        return [plain(item) for item in value]
    return f"<unexpected {type(value).__name__}>"


def state(result: Any) -> dict[str, Any]:
    return {
        "value": plain(result.value),
        "version": result.version,
        "commit_ts": result.commit_ts,
        "exists": result.exists,
    }


def events(stream: Any) -> list[dict[str, Any]]:
    return [
        {
            "txn_id": event.txn_id,
            "commit_ts": event.commit_ts,
            "ops": [[op.key, plain(op.value), op.version] for op in event.operations],
        }
        for event in stream
    ]


def error(call: Callable[[], Any]) -> dict[str, Any] | None:
    """What `call` raised, or None if it raised nothing."""
    try:
        call()
    except Exception as exc:
        return {
            "type": type(exc).__name__,
            "transaction_error": isinstance(exc, TransactionError),
            "statehouse_error": isinstance(exc, StatehouseError),
            "message": str(exc),
        }
    return None


def main(addr: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "dist_version": importlib.metadata.version("statehouse"),
        "module_file": statehouse.__file__,
    }
    ts: dict[str, int] = {}
    client = statehouse.Statehouse(url=addr)
    out["written"] = INITIAL
    out["health"] = client.health()
    out["version"] = list(client.version())

    # Explicit begin / write / commit; one transaction touching two agents.
    tx = client.begin_transaction(timeout_ms=10_000)
    for key, value in INITIAL.items():
        tx.write(AGENT, key, value)
    tx.write(OTHER, "profile", {"owner": "other"})
    initial_txn = tx._txn_id
    ts["initial"] = tx.commit()
    out["initial_txn"] = initial_txn
    out["initial"] = {key: state(client.get_state(AGENT, key)) for key in INITIAL}
    out["recommit"] = error(tx.commit)  # refused by the client itself

    # One key through five versions, both transaction forms, another agent in between.
    with client.begin_transaction() as tx:
        tx.write(AGENT, "counter", {"n": 1})
    ts["counter1"] = client.get_state(AGENT, "counter").commit_ts
    tx = client.begin_transaction()
    tx.write(AGENT, "counter", {"n": 2})
    ts["counter2"] = tx.commit()
    with client.begin_transaction() as tx:
        tx.write(OTHER, "counter", {"n": 100})
    ts["other"] = client.get_state(OTHER, "counter").commit_ts
    with client.begin_transaction() as tx:
        tx.write(AGENT, "counter", {"n": 3})
    ts["counter3"] = client.get_state(AGENT, "counter").commit_ts
    tx = client.begin_transaction()
    tx.delete(AGENT, "counter")
    ts["delete"] = tx.commit()
    out["after_delete"] = state(client.get_state(AGENT, "counter"))
    tx = client.begin_transaction()
    tx.write(AGENT, "counter", {"n": 5})
    ts["counter5"] = tx.commit()
    out["counter"] = state(client.get_state(AGENT, "counter"))
    out["counter_versions"] = [state(client.get_state_at_version(AGENT, "counter", v)) for v in range(1, 6)]
    out["missing_version"] = error(lambda: client.get_state_at_version(AGENT, "counter", 99))

    # Missing keys are not errors.
    out["missing_key"] = state(client.get_state(AGENT, "never-written"))
    out["missing_agent"] = state(client.get_state("no-such-agent", "profile"))

    # Two namespaces: same agent and key, separate values.
    with client.begin_transaction(namespace=NS_B) as tx:
        tx.write(AGENT, "profile", {"ns": "b"})
    ts["ns_b"] = client.get_state(AGENT, "profile", namespace=NS_B).commit_ts
    client_b = statehouse.Statehouse(url=addr, namespace=NS_B)
    out["ns_b_profile"] = state(client_b.get_state(AGENT, "profile"))
    out["ns_b_profile_explicit"] = state(client.get_state(AGENT, "profile", namespace=NS_B))
    out["default_profile"] = state(client.get_state(AGENT, "profile"))
    out["ns_b_keys"] = client_b.list_keys(AGENT)
    out["ns_b_replay"] = events(client_b.replay(AGENT))
    client_b.close()

    # `ns:agent:key` strings once collided; these two must not.
    with client.begin_transaction() as tx:
        tx.write("a", "b:c", {"who": "agent a, key b:c"})
        tx.write("a:b", "c", {"who": "agent a:b, key c"})
    out["colliding"] = [state(client.get_state("a", "b:c")), state(client.get_state("a:b", "c"))]

    # Keys for list_keys / scan_prefix; a deleted key drops out of both.
    with client.begin_transaction() as tx:
        for key in ("note/1", "note/2", "note/3", "notes"):
            tx.write(AGENT, key, {"key": key})
    ts["notes"] = client.get_state(AGENT, "notes").commit_ts
    with client.begin_transaction() as tx:
        tx.delete(AGENT, "note/2")
    ts["notes_delete"] = client.get_state(AGENT, "note/2").commit_ts
    out["list_keys"] = client.list_keys(AGENT)
    out["scan_note"] = [state(r) for r in client.scan_prefix(AGENT, "note/")]
    out["scan_none"] = [state(r) for r in client.scan_prefix(AGENT, "zzz")]

    # Abort, explicit and by an exception in the `with` block.
    tx = client.begin_transaction()
    tx.write(AGENT, "aborted", {"x": 1})
    tx.abort()
    out["abort_again"] = error(tx.abort)  # idempotent in the client
    out["write_after_abort"] = error(lambda: tx.write(AGENT, "aborted", {"x": 2}))
    try:
        with client.begin_transaction() as tx:
            tx.write(AGENT, "aborted-cm", {"x": 1})
            raise RuntimeError("boom")
    except RuntimeError as exc:
        out["cm_exception"] = str(exc)
    out["aborted"] = state(client.get_state(AGENT, "aborted"))
    out["aborted_cm"] = state(client.get_state(AGENT, "aborted-cm"))

    # Replay: whole history, and bounded (both bounds inclusive).
    out["replay"] = events(client.replay(AGENT))
    out["replay_range"] = events(client.replay(AGENT, start_ts=ts["counter2"], end_ts=ts["delete"]))
    out["replay_from"] = events(client.replay(AGENT, start_ts=ts["notes"]))
    out["replay_until"] = events(client.replay(AGENT, end_ts=ts["counter1"]))
    out["replay_other"] = events(client.replay(OTHER))

    # Cross path: read what our SDK wrote, write what it will read.
    out["cross_new"] = state(client.get_state("cross", "cross/new"))
    out["cross_new_types"] = [type(out["cross_new"]["value"]["n"]).__name__]
    out["cross_new_types"].append(type(out["cross_new"]["value"]["items"][0]["a"]).__name__)
    out["cross_scalar"] = state(client.get_state("cross-scalar", "greeting"))
    with client.begin_transaction() as tx:
        tx.write("cross", "cross/old", CROSS_VALUE)
        tx.write("cross-wide", "wide/old", WIDE_VALUE)
    out["cross_replay"] = events(client.replay("cross"))

    # A bytes value (our SDK's extension) is refused clearly, on every read path.
    out["bytes_refused"] = {
        "get_state": error(lambda: client.get_state("cross-bytes", "blob")),
        "scan_prefix": error(lambda: client.scan_prefix("cross-bytes", "")),
        "replay": error(lambda: events(client.replay("cross-bytes"))),
    }
    out["bytes_neighbour"] = state(client.get_state("cross-bytes", "json"))

    # Errors the client reports as TransactionError.
    out["commit_committed"] = error(Transaction(client, initial_txn).commit)
    out["abort_committed"] = error(Transaction(client, initial_txn).abort)
    out["begin_bad_timeout"] = error(lambda: client.begin_transaction(timeout_ms=0))
    bogus: dict[str, dict[str, Any]] = {}
    for txn_id in ("bogus", "default:" + "0" * 24, "no-such-namespace:" + "0" * 24):
        fake = Transaction(client, txn_id)
        bogus[txn_id] = {
            "write": error(lambda fake=fake: fake.write(AGENT, "bogus", {"x": 1})),
            "internal_write": error(lambda t=txn_id: client._write(t, "default", AGENT, "bogus", {"x": 1})),
            "delete": error(lambda fake=fake: fake.delete(AGENT, "profile")),
            "commit": error(Transaction(client, txn_id).commit),
        }
    out["bogus"] = bogus
    out["bogus_key"] = state(client.get_state(AGENT, "bogus"))
    out["profile_after_errors"] = state(client.get_state(AGENT, "profile"))

    # Still serving.
    out["health_after_errors"] = client.health()
    with client.begin_transaction() as tx:
        tx.write(AGENT, "after-errors", {"ok": True})
    out["after_errors"] = state(client.get_state(AGENT, "after-errors"))

    out["ts"] = ts
    client.close()
    return out


if __name__ == "__main__":
    json.dump(main(sys.argv[1]), sys.stdout)
