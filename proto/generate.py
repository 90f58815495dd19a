"""Generate kvstore/_pb from proto/kvstore.proto with the pinned grpcio-tools.

The generated modules are committed; tests/unit/test_generated_code.py regenerates them
into a temporary folder and fails if anything differs, so the schema and the code never drift.

    python proto/generate.py            # rewrite kvstore/_pb
    python proto/generate.py OUT_DIR    # write somewhere else (the test does this)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_DIR.parent / "kvstore" / "_pb"
GENERATED = ("kvstore_pb2.py", "kvstore_pb2.pyi", "kvstore_pb2_grpc.py")


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO_DIR / "kvstore.proto"),
        ]
    )
    if rc != 0:
        raise SystemExit(f"protoc failed with exit status {rc}")
    # grpc_tools emits a top-level import; the package needs a relative one.
    grpc_module = out_dir / "kvstore_pb2_grpc.py"
    text = grpc_module.read_text()
    grpc_module.write_text(
        re.sub(r"^import kvstore_pb2 as", "from . import kvstore_pb2 as", text, flags=re.M)
    )


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
