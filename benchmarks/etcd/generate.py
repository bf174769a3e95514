"""Regenerate the committed Python code for benchmarks/etcd/rpc.proto.

    python -m benchmarks.etcd.generate           # rewrite rpc_pb2.py, rpc_pb2.pyi, rpc_pb2_grpc.py
    python -m benchmarks.etcd.generate --check   # exit 1 if the committed files are stale

protoc runs from the repository root, so the generated gRPC module imports
its messages as `benchmarks.etcd.rpc_pb2` and needs no rewriting.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_FILE = ROOT / "benchmarks" / "etcd" / "rpc.proto"
OUT_DIR = PROTO_FILE.parent
GENERATED = ("rpc_pb2.py", "rpc_pb2.pyi", "rpc_pb2_grpc.py")

# The protoc run and the write/check logic are the contract's generator's.
_generator = runpy.run_path(str(ROOT / "scripts" / "generate_proto.py"))


def render() -> dict[str, bytes]:
    """Run protoc on rpc.proto and return {file name: contents}."""
    files: dict[str, bytes] = _generator["protoc_render"](ROOT, PROTO_FILE, GENERATED)
    return files


def main(argv: list[str]) -> int:
    code: int = _generator["write_or_check"](
        render(), OUT_DIR, "--check" in argv, "python -m benchmarks.etcd.generate"
    )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
