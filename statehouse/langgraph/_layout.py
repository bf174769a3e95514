"""Where the adapters keep things: Statehouse keys built from LangGraph's names.

Each part of a key is escaped ("%" as "%25", "/" as "%2F") and ends with
"/", so no part runs into the next and a key's prefix names exactly the
records under it: a purge of `checkpoint/<ns>/<id>/` takes that checkpoint
and nothing else. Keys stay readable: `checkpoint//1f0a.../`.
"""

from __future__ import annotations

from statehouse._names import MAX_AGENT_ID_BYTES


def part(text: str) -> str:
    """One escaped part of a key, with its closing "/"."""
    return text.replace("%", "%25").replace("/", "%2F") + "/"


def parts(key: str) -> list[str]:
    """The unescaped parts of a key made of `part`s."""
    return [p.replace("%2F", "/").replace("%25", "%") for p in key.split("/")[:-1]]


def checkpoint_key(checkpoint_ns: str, checkpoint_id: str) -> str:
    return "checkpoint/" + part(checkpoint_ns) + part(checkpoint_id)


def checkpoints_prefix(checkpoint_ns: str | None) -> str:
    """The checkpoints of one checkpoint namespace, or (None) of all."""
    return "checkpoint/" + ("" if checkpoint_ns is None else part(checkpoint_ns))


def writes_prefix(checkpoint_ns: str, checkpoint_id: str) -> str:
    return "write/" + part(checkpoint_ns) + part(checkpoint_id)


def write_key(checkpoint_ns: str, checkpoint_id: str, task_id: str, idx: int) -> str:
    return writes_prefix(checkpoint_ns, checkpoint_id) + part(task_id) + part(str(idx))


def blob_key(checkpoint_ns: str, channel: str, version: str | int | float) -> str:
    return blobs_prefix(checkpoint_ns) + part(channel) + part(str(version))


def blobs_prefix(checkpoint_ns: str) -> str:
    return "blob/" + part(checkpoint_ns)


def run_key(run_id: str) -> str:
    """In a thread: marks that run `run_id` wrote a checkpoint of it."""
    return "run/" + part(run_id)


def run_index_key(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> str:
    """In a run's agent of the runs namespace: one checkpoint the run wrote."""
    return part(thread_id) + part(checkpoint_ns) + part(checkpoint_id)


def agent_id(kind: str, name: str) -> str:
    """`name` as an agent id, or a ValueError that says why it cannot be one."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise ValueError(f"a {kind} must not contain NUL characters: {name!r}")
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_AGENT_ID_BYTES:
        raise ValueError(
            f"a {kind} is stored as a Statehouse agent_id, at most {MAX_AGENT_ID_BYTES} bytes; "
            f"{name[:40]!r}... is {size} bytes"
        )
    return name
