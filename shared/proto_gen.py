"""Generates the Python gRPC stubs from protos/ into shared/proto/.

Run ``make protos`` (or ``python -m shared.proto_gen``). tests/shared/test_stubs.py
regenerates into a temporary folder and fails if the committed stubs are stale.
Needs grpcio-tools (a dev dependency).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT = ROOT / "shared" / "proto"
PACKAGE_PREFIX = "shared.proto."


def generate(out_dir: Path = OUT) -> list[Path]:
    """Writes *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every .proto; returns the files."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    out_dir.mkdir(parents=True, exist_ok=True)
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {protos}")
    written: list[Path] = []
    for path in sorted(out_dir.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        text = path.read_text()
        # protoc writes absolute imports ("from recserve.v1 import x_pb2"); the stubs
        # live inside the shared package.
        fixed = re.sub(r"^from recserve\.", f"from {PACKAGE_PREFIX}recserve.", text, flags=re.M)
        path.write_text(fixed)
        written.append(path)
    for folder in [out_dir, *[p for p in out_dir.rglob("*") if p.is_dir()]]:
        if folder.name != "__pycache__":
            init = folder / "__init__.py"
            if not init.exists():
                init.write_text("")
            written.append(init)
    return sorted(set(written))


if __name__ == "__main__":
    files = generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
    print(f"generated {len(files)} files under {files[0].parent if files else OUT}")
