"""Regenerate the committed protobuf/gRPC code in statehouse/_proto/.

Usage: python scripts/generate_proto.py [--check]

grpc_tools writes `from statehouse.v1 import statehouse_pb2`, which would
collide with our own `statehouse` package, so the import is rewritten to
point at `statehouse._proto`. `--check` exits 1 when the committed files
differ from what the .proto produces (tests/rpc/test_proto_fresh.py runs it).
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


def protoc_render(
    include: Path, proto_file: Path, names: tuple[str, ...], rewrite: tuple[str, str] | None = None
) -> dict[str, bytes]:
    """Run protoc on `proto_file` (under `include`); return {generated file name: contents}.

    `rewrite` replaces one string in every file (an import path). Shared with
    benchmarks/etcd/generate.py.
    """
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{include}",
                f"-I{well_known}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                str(proto_file),
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code}")
        out = Path(tmp) / proto_file.parent.relative_to(include)
        files = {}
        for name in names:
            text = (out / name).read_text(encoding="utf-8")
            if rewrite is not None:
                text = text.replace(*rewrite)
            files[name] = text.encode("utf-8")
        return files


def stale(files: dict[str, bytes], out_dir: Path) -> list[str]:
    """Names of committed files in `out_dir` that differ from `files`."""
    return [
        name
        for name, content in files.items()
        if not (out_dir / name).exists() or (out_dir / name).read_bytes() != content
    ]


def write_or_check(files: dict[str, bytes], out_dir: Path, check: bool, command: str) -> int:
    """Write `files` into `out_dir`, or with `check` report (exit 1) whether they are stale."""
    if check:
        names = stale(files, out_dir)
        if names:
            print(f"stale generated code: {', '.join(names)}; run {command}")
            return 1
        print(f"generated code in {out_dir.relative_to(ROOT)} is up to date")
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (out_dir / name).write_bytes(content)
    print(f"wrote {', '.join(files)} to {out_dir.relative_to(ROOT)}")
    return 0


def render() -> dict[str, bytes]:
    """Run protoc on the contract and return {file name: contents}."""
    return protoc_render(PROTO_ROOT, PROTO_FILE, GENERATED, (_IMPORT_FROM, _IMPORT_TO))


def stale_files() -> list[str]:
    """Names of committed generated files that differ from a fresh render."""
    return stale(render(), OUT_DIR)


def main(argv: list[str]) -> int:
    return write_or_check(render(), OUT_DIR, "--check" in argv, "python scripts/generate_proto.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
