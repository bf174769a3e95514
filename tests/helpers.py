"""Small helpers test modules of different directories share: call bounds, ids, mutations, waits."""

from __future__ import annotations

import secrets
import time
from typing import Any

import grpc

from actors import ActorSystem
from statehouse._proto import statehouse_pb2 as pb

C = grpc.StatusCode
W = 10.0  # seconds any single call may wait


def fresh_id(namespace: str = "ns") -> str:
    return f"{namespace}:{secrets.token_hex(12)}"


def put(key: str, value_json: bytes = b"1", namespace: str = "ns", agent: str = "a") -> pb.Mutation:
    return pb.Mutation(namespace=namespace, agent_id=agent, key=key, value_json=value_json)


def stored(system: ActorSystem, namespace: str, key: str) -> tuple[bytes | None, int]:
    """(value, commit_ts) of agent "a"'s `key`, read straight from the store."""
    record = system.view().get(namespace, "a", key)
    assert record is not None, (namespace, key)
    return record.value, record.commit_ts


def wait_until(condition: Any, what: str) -> None:
    """Poll a condition the daemon reaches on its own (bounded; fails loudly)."""
    deadline = time.monotonic() + W
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.005)


def typed(value: Any) -> Any:
    """A comparable form that tells 1 from 1.0 and True from 1."""
    if isinstance(value, dict):
        return ("dict", sorted((k, typed(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, repr(value))
