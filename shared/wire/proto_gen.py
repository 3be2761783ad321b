"""Generates the Python gRPC stubs from protos/ into shared/proto/.

Run ``make protos`` (or ``python -m shared.wire.proto_gen``). tests/shared/test_stubs.py
regenerates into a temporary folder and fails if the committed stubs are stale.
Needs grpcio-tools (a dev dependency).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "protos"
OUT = ROOT / "shared" / "proto"
PACKAGE_PREFIX = "shared.proto."


# The generator's own version stamps: they change with every grpcio-tools release while
# the code they sit in stays the same, so freshness is judged with them blanked out.
_STAMPS = (
    re.compile(r"^(GRPC_GENERATED_VERSION = )'[^']*'$", re.M),
    re.compile(r"^(# Protobuf Python Version: ).*$", re.M),
    re.compile(
        r"(ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,)"
        r"\s*\d+,\s*\d+,\s*\d+,\s*'[^']*',"
    ),
)


def without_stamps(text: str) -> str:
    """``text`` of a generated stub with the generator's version stamps blanked out."""
    for stamp in _STAMPS:
        text = stamp.sub(r"\1<version>", text)
    return text


def stale_stubs(committed_dir: Path, generated: list[Path], generated_dir: Path) -> list[str]:
    """Why each committed stub differs from a fresh generation (version stamps aside)."""
    problems: list[str] = []
    for path in generated:
        relative = path.relative_to(generated_dir)
        committed = committed_dir / relative
        if not committed.exists():
            problems.append(f"{committed} is missing: run `make protos`")
        elif without_stamps(committed.read_text()) != without_stamps(path.read_text()):
            problems.append(f"{committed} is stale: run `make protos`")
    return problems


def generate(out_dir: Path = OUT, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Writes *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every .proto; returns the files."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    out_dir.mkdir(parents=True, exist_ok=True)
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{proto_root}",
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
