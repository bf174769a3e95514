"""Regenerate the committed protobuf/gRPC code in statehouse/_proto/.

Usage: python scripts/generate_proto.py [--check]

grpc_tools writes `from statehouse.v1 import statehouse_pb2`, which would
collide with our own `statehouse` package, so the import is rewritten to
point at `statehouse._proto`. `--check` exits 1 when the committed files
differ from what the .proto produces (tests/test_proto_fresh.py runs it).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_FILE = PROTO_ROOT / "statehouse" / "v1" / "statehouse.proto"
OUT_DIR = ROOT / "statehouse" / "_proto"
GENERATED = ("statehouse_pb2.py", "statehouse_pb2.pyi", "statehouse_pb2_grpc.py")
_IMPORT_FROM = "from statehouse.v1 import statehouse_pb2"
_IMPORT_TO = "from statehouse._proto import statehouse_pb2"


def render() -> dict[str, bytes]:
    """Run protoc on the contract and return {file name: contents}."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"-I{well_known}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                str(PROTO_FILE),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code}")
        out = Path(tmp) / "statehouse" / "v1"
        files = {}
        for name in GENERATED:
            text = (out / name).read_text(encoding="utf-8").replace(_IMPORT_FROM, _IMPORT_TO)
            files[name] = text.encode("utf-8")
        return files


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
            print(f"stale generated code: {', '.join(stale)}; run python scripts/generate_proto.py")
            return 1
        print("generated code is up to date")
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, content in render().items():
        (OUT_DIR / name).write_bytes(content)
    print(f"wrote {', '.join(GENERATED)} to {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
