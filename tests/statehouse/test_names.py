"""The name rules (statehouse._names), shared by the SDK and the daemon, and the set of names
already found valid that spares a commit's names being checked again."""

from __future__ import annotations

import pytest

from statehouse import _names


def test_a_name_found_valid_for_one_field_is_still_checked_for_another() -> None:
    long_name = "k" * 300  # within a key's 1024 bytes, past an agent_id's 256
    assert _names.check_name("key", long_name) == long_name
    assert _names.check_name("key", long_name) == long_name  # known now
    with pytest.raises(_names.NameError_, match="agent_id is 300 bytes; the limit is 256 bytes"):
        _names.check_name("agent_id", long_name)


def test_bad_names_are_refused_every_time() -> None:
    assert _names.check_name("key", "memory") == "memory"
    for _ in range(2):
        with pytest.raises(_names.NameError_, match="NUL"):
            _names.check_name("key", "memory\x00")
        with pytest.raises(_names.NameError_, match="must not be empty"):
            _names.check_name("key", "")
        with pytest.raises(_names.NameError_, match="must be a string"):
            _names.check_name("key", ["memory"])
    assert _names.check_name("prefix", "", allow_empty=True) == ""


def test_a_str_subclass_is_checked_not_looked_up() -> None:
    class Equal(str):
        """Equal to "memory" whatever it holds: a lookup would take it for that name."""

        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return hash("memory")

    _names.check_name("key", "memory")
    with pytest.raises(_names.NameError_, match="NUL"):
        _names.check_name("key", Equal("bad\x00"))


def test_the_known_names_are_bounded() -> None:
    for n in range(_names._KNOWN_LIMIT + 100):
        _names.check_name("start_after", f"name-{n}")
    assert 0 < len(_names._known["start_after"]) <= _names._KNOWN_LIMIT
    assert _names.check_name("start_after", "name-0") == "name-0"  # checked again, still valid


def test_names_checked_together_keep_every_rule() -> None:
    """check_names (every write's namespace, agent and key) takes the known-valid shortcut
    only when all three are known; otherwise each is checked, and "" is "default"."""
    assert _names.check_names("team", "agent-7", "memory") == "team"
    assert _names.check_names("team", "agent-7", "memory") == "team"  # all known now
    assert _names.check_names("", "agent-7", "memory") == "default"
    assert _names.check_names("team", "agent-7") == "team"  # no key
    with pytest.raises(_names.NameError_, match="key must not contain NUL"):
        _names.check_names("team", "agent-7", "memory\x00")
    with pytest.raises(_names.NameError_, match="key must be a string"):
        _names.check_names("team", "agent-7", 7)
    with pytest.raises(_names.NameError_, match="agent_id is 300 bytes"):
        _names.check_names("team", "a" * 300, "memory")
