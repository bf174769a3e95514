"""Regenerate the committed Python code for benchmarks/etcd/rpc.proto.

    python -m benchmarks.etcd.generate           # rewrite rpc_pb2.py, rpc_pb2.pyi, rpc_pb2_grpc.py
    python -m benchmarks.etcd.generate --check   # exit 1 if the committed files are stale

protoc runs from the repository root, so the generated gRPC module imports
its messages as `benchmarks.etcd.rpc_pb2` and needs no rewriting.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_FILE = Path("benchmarks") / "etcd" / "rpc.proto"
OUT_DIR = ROOT / PROTO_FILE.parent
GENERATED = ("rpc_pb2.py", "rpc_pb2.pyi", "rpc_pb2_grpc.py")


def render() -> dict[str, bytes]:
    """Run protoc on rpc.proto and return {file name: contents}."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{ROOT}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                str(ROOT / PROTO_FILE),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code}")
        out = Path(tmp) / PROTO_FILE.parent
        return {name: (out / name).read_bytes() for name in GENERATED}


def stale_files() -> list[str]:
    """Names of committed generated files that differ from a fresh render."""
    return [
        name
        for name, content in render().items()
        if not (OUT_DIR / name).exists() or (OUT_DIR / name).read_bytes() != content
    ]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = stale_files()
        if stale:
            print(f"stale generated code: {', '.join(stale)}; run python -m benchmarks.etcd.generate")
            return 1
        print("generated etcd code is up to date")
        return 0
    for name, content in render().items():
        (OUT_DIR / name).write_bytes(content)
    print(f"wrote {', '.join(GENERATED)} to {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
