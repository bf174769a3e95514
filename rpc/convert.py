"""Conversions between wire messages and domain values.

JSON values are stored as canonical JSON bytes whichever way they arrive. A
`google.protobuf.Struct` carries every number as a double, so integral
doubles within +-2**53 are stored as integers: `{"n": 42}` sent as a Struct
and as JSON is stored identically. Reading a value that is not a JSON object
through the Struct path wraps it as `{"value": ...}` (a Struct must be an
object). A value written as `value_bytes` is stored as a `storage.Blob` and
sent only to readers that accept bytes (`bytes_values`).
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf.message import DecodeError
from google.protobuf.struct_pb2 import Struct, Value

from actors import InvalidArgument, Mutation, NotRepresentable, ResourceExhausted
from statehouse import _codec, _names
from storage import Blob

_EXACT_DOUBLE = 2**53


def check_names(namespace: str, agent_id: str, key: str | None = None) -> str:
    """Validate names; returns the namespace with "" mapped to "default"."""
    try:
        return _names.check_names(namespace, agent_id, key)
    except _names.NameError_ as exc:
        raise InvalidArgument(str(exc)) from None


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


def _plain(value: Value) -> Any:
    """A Struct `Value` as a plain JSON value; integral doubles within +-2**53 as ints.

    Our own walk rather than `json_format.MessageToDict`, which is generic and
    cost about a third of a 0.1.1 client's Write on the server. An unset
    Value reads as null, as protobuf's JSON printer reads it.
    """
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) <= _EXACT_DOUBLE:
            return int(number)
        if not math.isfinite(number):
            raise ValueError(f"{number} is not a JSON number (JSON has no NaN or Infinity)")
        return number
    if kind == "struct_value":
        return {name: _plain(item) for name, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(item) for item in value.list_value.values]
    if kind == "bool_value":
        return value.bool_value
    return None


def struct_to_json(struct: Struct, key: str) -> bytes:
    try:
        plain = {name: _plain(item) for name, item in struct.fields.items()}
        return _codec.encode(plain, sort_keys=True)
    except ValueError as exc:  # NaN or Infinity, or nested too deep
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


class ValueForm:
    """How a reader takes values: as Structs (the original contract), as JSON (`json_values`),
    and whether it accepts bytes values (`bytes_values`)."""

    __slots__ = ("bytes", "json")

    def __init__(self, request: Any) -> None:
        self.json: bool = request.json_values
        self.bytes: bool = request.bytes_values


def fill_value(message: Any, key: str, value: bytes | None, form: ValueForm) -> None:
    """Set the value fields of a response message for a stored value (None: leave them unset).

    A bytes value for a reader that does not accept bytes is NotRepresentable
    (FAILED_PRECONDITION), never JSON or a Struct made up from its bytes.
    """
    if value is None:
        return
    if type(value) is Blob:
        if not form.bytes:
            raise NotRepresentable(
                f"value of key {key!r} is bytes ({len(value)} bytes), which this client cannot "
                "receive: it reads values as JSON or google.protobuf.Struct. Read it with a client "
                "that sets bytes_values (the statehouse SDK 0.4 or later)"
            )
        message.value_bytes = value
    elif form.json:
        message.value_json = value
    else:
        message.value.CopyFrom(json_to_struct(value, key))


class ValueCodec:
    """Validates incoming values against the configured size limit."""

    def __init__(self, max_value_bytes: int) -> None:
        self.max_value_bytes = max_value_bytes

    def value(
        self, key: str, value_json: bytes, struct: Struct | None, value_bytes: bytes | None = None
    ) -> bytes:
        """The value to store: a Blob for `value_bytes`, else canonical JSON.

        Raises InvalidArgument for a value that is not valid JSON, and
        ResourceExhausted for one past the limit.
        """
        if value_bytes is not None:
            data: bytes = Blob(value_bytes)
        elif value_json:
            try:
                data = _codec.canonical(value_json)
            except ValueError as exc:
                raise InvalidArgument(f"value_json of key {key!r}: {exc}") from None
        elif struct is not None:
            data = struct_to_json(struct, key)
        else:
            raise InvalidArgument(f"value of key {key!r} is missing (a write needs a value)")
        if len(data) > self.max_value_bytes:
            raise ResourceExhausted(
                f"value of key {key!r} is {len(data)} bytes; the limit is {self.max_value_bytes} bytes "
                "(the daemon's --max-value-bytes)"
            )
        return data

    def mutation(self, m: Any) -> Mutation:
        """A domain Mutation from a wire Mutation (extension message). Each field is read
        once: every read of a protobuf string or bytes field makes a new Python object."""
        agent_id, key = m.agent_id, m.key
        namespace = check_names(m.namespace, agent_id, key)
        if m.delete:
            return Mutation(namespace, agent_id, key, None)
        if m.HasField("value_bytes"):
            value = self.value(key, b"", None, m.value_bytes)
        else:
            value = self.value(key, m.value_json, None)
        return Mutation(namespace, agent_id, key, value, m.if_absent)
