"""Rules for namespace, agent_id and key names, shared by the SDK and the daemon.

Names are non-empty UTF-8 strings without NUL characters, bounded in bytes.
An empty namespace means "default" (the original contract's default).
"""

from __future__ import annotations

DEFAULT_NAMESPACE = "default"
MAX_NAMESPACE_BYTES = 128
MAX_AGENT_ID_BYTES = 256
MAX_KEY_BYTES = 1024
DEFAULT_MAX_VALUE_BYTES = 16 * 1024 * 1024

_LIMITS = {
    "namespace": MAX_NAMESPACE_BYTES,
    "agent_id": MAX_AGENT_ID_BYTES,
    "key": MAX_KEY_BYTES,
    "prefix": MAX_KEY_BYTES,
    "start_after": MAX_KEY_BYTES,
}


class NameError_(ValueError):
    """A name that breaks the rules; the message names the field."""


def check_name(field: str, value: object, *, allow_empty: bool = False) -> str:
    """Return `value` if it is a valid name for `field`, else raise NameError_."""
    if not isinstance(value, str):
        raise NameError_(f"{field} must be a string, got {type(value).__name__}")
    if not value:
        if allow_empty:
            return value
        raise NameError_(f"{field} must not be empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise NameError_(f"{field} is not valid UTF-8 (lone surrogate)") from None
    limit = _LIMITS[field]
    if size > limit:
        raise NameError_(f"{field} is {size} bytes; the limit is {limit} bytes")
    if "\x00" in value:
        raise NameError_(f"{field} must not contain NUL characters")
    return value


def check_namespace(value: object) -> str:
    """Validate a namespace; the empty string maps to "default"."""
    if value == "":
        return DEFAULT_NAMESPACE
    return check_name("namespace", value)
