"""The committed generated code matches proto/statehouse/v1/statehouse.proto."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
generator = runpy.run_path(str(ROOT / "scripts" / "generate_proto.py"))


def test_generated_code_is_fresh() -> None:
    assert generator["stale_files"]() == [], "run: python scripts/generate_proto.py"


def test_staleness_is_detected(tmp_path: Path, monkeypatch) -> None:
    fake_out = tmp_path / "_proto"
    fake_out.mkdir()
    for name, content in generator["render"]().items():
        (fake_out / name).write_bytes(content)
    (fake_out / "statehouse_pb2.py").write_bytes(b"# edited by hand\n")
    stale = generator["stale_files"]
    monkeypatch.setitem(stale.__globals__, "OUT_DIR", fake_out)
    assert stale() == ["statehouse_pb2.py"]


def test_wire_contract_numbers_are_kept() -> None:
    from statehouse._proto import statehouse_pb2 as pb

    expected = {
        "BeginTransactionRequest": {"timeout_ms": 1},
        "WriteRequest": {"txn_id": 1, "namespace": 2, "agent_id": 3, "key": 4, "value": 5},
        "GetStateResponse": {"value": 1, "version": 2, "commit_ts": 3, "exists": 4},
        "GetStateAtVersionRequest": {"namespace": 1, "agent_id": 2, "key": 3, "version": 4},
        "StateEntry": {"key": 1, "value": 2, "version": 3, "commit_ts": 4},
        "ReplayRequest": {"namespace": 1, "agent_id": 2, "start_ts": 3, "end_ts": 4},
        "ReplayEvent": {"txn_id": 1, "commit_ts": 2, "operations": 3},
        "Operation": {"key": 1, "value": 2, "version": 3},
        "VersionResponse": {"version": 1, "git_sha": 2},
        "CommitResponse": {"commit_ts": 1},
    }
    for message, fields in expected.items():
        descriptor = pb.DESCRIPTOR.message_types_by_name[message]
        assert {f: descriptor.fields_by_name[f].number for f in fields} == fields, message
    service = pb.DESCRIPTOR.services_by_name["StatehouseService"]
    assert service.full_name == "statehouse.v1.StatehouseService"
    replay = service.methods_by_name["Replay"]
    assert replay.server_streaming and replay.output_type.name == "ReplayEvent"
    assert not service.methods_by_name["GetState"].server_streaming
