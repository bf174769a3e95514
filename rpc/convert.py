"""Conversions between wire messages and domain values.

Values are stored as canonical JSON bytes whichever way they arrive. A
`google.protobuf.Struct` carries every number as a double, so integral
doubles within +-2**53 are stored as integers: `{"n": 42}` sent as a Struct
and as JSON is stored identically. Reading a value that is not a JSON object
through the Struct path wraps it as `{"value": ...}` (a Struct must be an
object).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.protobuf.struct_pb2 import Struct

from actors import InvalidArgument, Mutation, NotRepresentable
from statehouse import _codec, _names

_EXACT_DOUBLE = 2**53


def check_names(namespace: str, agent_id: str, key: str | None = None) -> str:
    """Validate names; returns the namespace with "" mapped to "default"."""
    try:
        namespace = _names.check_namespace(namespace)
        _names.check_name("agent_id", agent_id)
        if key is not None:
            _names.check_name("key", key)
    except _names.NameError_ as exc:
        raise InvalidArgument(str(exc)) from None
    return namespace


def check_namespace(namespace: str) -> str:
    """Validate a namespace; "" means "default"."""
    try:
        return _names.check_namespace(namespace)
    except _names.NameError_ as exc:
        raise InvalidArgument(str(exc)) from None


def check_prefix(prefix: str) -> None:
    try:
        _names.check_name("prefix", prefix, allow_empty=True)
    except _names.NameError_ as exc:
        raise InvalidArgument(str(exc)) from None


def _integral(value: Any) -> Any:
    if isinstance(value, float):
        if value.is_integer() and abs(value) <= _EXACT_DOUBLE:
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def struct_to_json(struct: Struct, key: str) -> bytes:
    try:
        return _codec.encode(_integral(json_format.MessageToDict(struct)), sort_keys=True)
    except ValueError as exc:  # NaN or Infinity: JSON has no such numbers
        raise InvalidArgument(f"value of key {key!r} is not valid JSON: {exc}") from None


# Each JSON level costs up to three protobuf message levels in a Struct, and
# protobuf parsers stop at 100: deeper values cannot reach a Struct reader.
STRUCT_MAX_DEPTH = 30


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, counting no further than `limit` + 1."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


def json_to_struct(data: bytes, key: str) -> Struct:
    value = _codec.decode(data)
    struct = Struct()
    try:
        if _depth(value, STRUCT_MAX_DEPTH) > STRUCT_MAX_DEPTH:
            raise ValueError(f"nested deeper than {STRUCT_MAX_DEPTH} levels")
        struct.update(value if isinstance(value, dict) else {"value": value})
    except (OverflowError, ValueError, DecodeError) as exc:
        raise NotRepresentable(
            f"value of key {key!r} cannot be sent as a google.protobuf.Struct ({exc}); "
            "read it as JSON (our SDK does: json_values)"
        ) from None
    return struct


class ValueCodec:
    """Validates incoming values against the configured size limit."""

    def __init__(self, max_value_bytes: int) -> None:
        self.max_value_bytes = max_value_bytes

    def value(self, key: str, value_json: bytes, struct: Struct | None) -> bytes:
        if value_json:
            try:
                data = _codec.canonical(value_json)
            except ValueError as exc:
                raise InvalidArgument(f"value_json of key {key!r}: {exc}") from None
        elif struct is not None:
            data = struct_to_json(struct, key)
        else:
            raise InvalidArgument(f"value of key {key!r} is missing (a write needs a value)")
        if len(data) > self.max_value_bytes:
            raise InvalidArgument(
                f"value of key {key!r} is {len(data)} bytes; the limit is {self.max_value_bytes} bytes"
            )
        return data

    def mutation(self, m: Any) -> Mutation:
        """A domain Mutation from a wire Mutation (extension message)."""
        namespace = check_names(m.namespace, m.agent_id, m.key)
        value = None if m.delete else self.value(m.key, m.value_json, None)
        return Mutation(namespace, m.agent_id, m.key, value)
