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


# Names already found valid, per field. The same namespaces, agents and keys come back
# call after call, on every commit, and looking one up here costs a third of checking it
# again. A set is emptied once it holds this many names (at most 8 MiB of 1 KiB keys).
_KNOWN_LIMIT = 8_192
_known: dict[str, set[str]] = {field: set() for field in _LIMITS}


def check_name(field: str, value: object, *, allow_empty: bool = False) -> str:
    """Return `value` if it is a valid name for `field`, else raise NameError_."""
    known = _known[field]
    if type(value) is str and value in known:  # exactly str: a subclass may hash as it likes
        return value
    _check(field, value, allow_empty)
    if value and type(value) is str:
        if len(known) >= _KNOWN_LIMIT:
            known.clear()
        known.add(value)
    return value  # type: ignore[return-value]


def _check(field: str, value: object, allow_empty: bool) -> None:
    if not isinstance(value, str):
        raise NameError_(f"{field} must be a string, got {type(value).__name__}")
    if not value:
        if allow_empty:
            return
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


def check_namespace(value: object) -> str:
    """Validate a namespace; the empty string maps to "default"."""
    if value == "":
        return DEFAULT_NAMESPACE
    return check_name("namespace", value)


def check_names(namespace: object, agent_id: object, key: object = None) -> str:
    """`check_namespace(namespace)`, then `agent_id` and (unless None) `key` checked; returns
    the namespace ("" -> "default"). Names all known valid cost one call, not four (every
    write of every commit names three)."""
    known = _known
    if (
        type(namespace) is str
        and namespace in known["namespace"]
        and type(agent_id) is str
        and agent_id in known["agent_id"]
        and (key is None or (type(key) is str and key in known["key"]))
    ):
        return namespace
    namespace = check_namespace(namespace)
    check_name("agent_id", agent_id)
    if key is not None:
        check_name("key", key)
    return namespace
