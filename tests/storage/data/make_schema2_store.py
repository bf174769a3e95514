"""Writes tests/storage/data/schema2-store.tar.gz: a data directory of schema 2, as statehouse 0.4.0
(git f4143b4) wrote it, and the answers that store gave (schema2-expected.json).

Kept for the record; it runs against 0.4.0 only (`git worktree add /tmp/v040 f4143b4`,
then run this file from there). tests/storage/test_upgrade.py opens the result with
today's code and expects the same answers.
"""

from __future__ import annotations

import base64
import shutil
import tarfile
import tempfile
from pathlib import Path

import orjson

from statehouse import Statehouse
from statehouse.testing import DaemonProcess

HERE = Path(__file__).parent


def write(client: Statehouse) -> None:
    for step in range(1, 6):
        with client.begin_transaction() as tx:
            tx.write("planner", "memory", {"step": step, "notes": ["a"] * step, "big": 2**60 + step})
            tx.write("planner", f"scratch/{step}", f"scratch {step}")
            tx.write("coder", "memory", {"step": step})
    with client.begin_transaction() as tx:
        tx.write("coder", "blob", b"\x00\x01\xffbytes")
        tx.delete("planner", "scratch/2")
    with client.begin_transaction(namespace="other") as tx:
        tx.write("solo", "k", [1, 2.5, None, True])
    client.purge("planner", key_prefix="scratch/3")
    with client.begin_transaction() as tx:
        tx.write("gone", "k", "soon purged")
        tx.write("coder", "after", "kept")
    client.purge("gone")


def answers(client: Statehouse) -> dict[str, object]:
    def show(value: object) -> object:
        return {"$base64": base64.b64encode(value).decode()} if isinstance(value, bytes) else value

    out: dict[str, object] = {}
    for ns in ("default", "other"):
        for agent in client.list_agents(namespace=ns):
            state = client.get_agent_state(agent, namespace=ns)
            out[f"{ns}/{agent}"] = {key: show(value) for key, value in sorted(state.values.items())}
            out[f"{ns}/{agent}/replay"] = [
                [event.commit_ts, [[o.key, o.version, show(o.value), o.purged] for o in event.operations]]
                for event in client.replay(agent, namespace=ns)
            ]
    out["default/planner/memory@3"] = client.get_state_at_version("planner", "memory", 3).value
    out["last_commit_ts"] = client.get_state("coder", "memory").commit_ts
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "store"
        with DaemonProcess(data) as daemon, Statehouse(daemon.addr) as client:
            write(client)
            expected = answers(client)
        with tarfile.open(HERE / "schema2-store.tar.gz", "w:gz") as tar:
            tar.add(data, arcname="store")
        shutil.rmtree(data)
    (HERE / "schema2-expected.json").write_bytes(orjson.dumps(expected, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
