"""The Struct values of the 0.1.1 contract, converted by our own walk, against
protobuf's JSON printer as the oracle.

`rpc.convert.struct_to_json` reads a `google.protobuf.Struct` without
`json_format` (which cost about a third of a Struct Write on the server).
Whatever a Struct holds, it must store exactly what protobuf's printer
gives, with integral doubles within +-2**53 narrowed to ints.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct, Value
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import InvalidArgument
from rpc.convert import struct_to_json
from statehouse import _codec

NUMBERS = st.one_of(
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.5, -0.0, 1e300, 2.0**53, 2.0**53 + 2, -(2.0**60), 1e-310]),
)
JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=25,
)
OBJECTS = st.dictionaries(st.text(max_size=6), JSON, max_size=5)


def oracle(struct: Struct) -> bytes:
    """What protobuf's own printer makes of `struct`, integral doubles narrowed."""

    def narrow(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
            return int(value)
        if isinstance(value, dict):
            return {k: narrow(v) for k, v in value.items()}
        if isinstance(value, list):
            return [narrow(v) for v in value]
        return value

    return _codec.encode(narrow(json_format.MessageToDict(struct)), sort_keys=True)


@settings(max_examples=300, deadline=None)
@given(OBJECTS)
def test_a_struct_is_stored_as_protobufs_printer_reads_it(value: dict[str, Any]) -> None:
    struct = Struct()
    struct.update(value)
    assert struct_to_json(struct, "k") == oracle(struct)


def test_an_unset_value_reads_as_null_as_protobuf_reads_it() -> None:
    struct = Struct()
    struct.fields["empty"].CopyFrom(Value())
    struct.fields["list"].list_value.values.add()
    assert struct_to_json(struct, "k") == oracle(struct) == b'{"empty":null,"list":[null]}'


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_a_number_json_has_not_is_refused_with_the_key(number: float) -> None:
    struct = Struct()
    struct.update({"deep": [{"n": number}]})
    with pytest.raises(InvalidArgument, match="value of key 'k' is not valid JSON"):
        struct_to_json(struct, "k")
    with pytest.raises(ValueError):
        oracle(struct)
