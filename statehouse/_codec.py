"""Exact JSON encoding of state values, shared by the SDK and the daemon.

orjson is the fast path. Two gaps in it would break exact round trips, so
they take the stdlib path instead: integers beyond 64 bits (orjson refuses to
encode them and decodes them as floats) and NaN/Infinity (orjson writes
them as `null`; JSON has no such numbers, so we refuse them).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

# A run of 19+ digits may be an integer orjson would turn into a float. To
# find one, every digit is mapped to "0" and the result searched for 19 of
# them: ten times faster than the regex \d{19}, which cost 15 us on a 1 KB value.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19
# Only JSON types: a datetime or dataclass would not come back as itself.
# Subclasses of dict, list, str and int (OrderedDict, an str Enum) are
# accepted and come back as the plain type, as through a Struct.
_PLAIN_ONLY = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class ValueError_(ValueError):
    """A value that is not exactly representable as JSON."""


def _reject_constant(name: str) -> Any:
    raise ValueError_(f"{name} is not valid JSON")


def _check_finite(value: Any) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError_(f"{value!r} is not valid JSON (JSON has no NaN or Infinity)")
    elif isinstance(value, dict):
        for item in value.values():
            _check_finite(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_finite(item)


# How deeply arrays and objects may nest in a value (orjson's limit when it encodes).
MAX_DEPTH = 254


def encode(value: Any, sort_keys: bool = False) -> bytes:
    """Encode a JSON value (dict, list, str, int, float, bool, None) to compact bytes."""
    try:
        data = orjson.dumps(value, option=_PLAIN_ONLY | (orjson.OPT_SORT_KEYS if sort_keys else 0))
    except orjson.JSONEncodeError as exc:
        if "Recursion limit" in str(exc):
            raise ValueError_(
                f"value nests arrays and objects more than {MAX_DEPTH} levels deep; the limit is {MAX_DEPTH}"
            ) from None
        if "64-bit" not in str(exc):
            raise ValueError_(f"value is not JSON-serializable: {exc}") from None
        try:
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
                "utf-8"
            )
        except (TypeError, ValueError) as inner:
            raise ValueError_(f"value is not JSON-serializable: {inner}") from None
        except RecursionError:
            raise ValueError_("value is nested too deeply") from None
    # orjson writes NaN/Infinity as null: only then is a slow check needed.
    if b"null" in data:
        _check_finite(value)
    return data


def decode(data: bytes) -> Any:
    """Decode JSON bytes exactly (large integers stay integers)."""
    if _NINETEEN_DIGITS in data.translate(_DIGITS_TO_ZERO):
        try:
            return json.loads(data, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise ValueError_(f"value is not valid JSON: {exc}") from None
        except RecursionError:
            raise ValueError_("value is nested too deeply") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError_(f"value is not valid JSON: {exc}") from None


def canonical(data: bytes) -> bytes:
    """Validate JSON bytes and return their canonical encoding: compact, object keys sorted.

    JSON objects are unordered, and a Struct cannot keep the writer's order,
    so sorting is what makes a value stored the same whichever way it came.
    """
    if _NINETEEN_DIGITS in data.translate(_DIGITS_TO_ZERO):
        return encode(decode(data), sort_keys=True)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError_(f"value is not valid JSON: {exc}") from None
    # What orjson parsed holds only JSON types, finite numbers and 64-bit integers, so
    # `encode`'s checks have nothing to find: only its nesting limit is left.
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return encode(value, sort_keys=True)  # raises ValueError_, saying why
