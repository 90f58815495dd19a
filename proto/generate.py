"""Generate kvstore/_pb from proto/kvstore.proto with the pinned grpcio-tools, and
kvstore/_pb/etcd from proto/etcd (the slice of etcd's v3 API that kvbench's --store etcd uses).

The generated modules are committed; tests/unit/test_generated_code.py and
tests/unit/test_bench_etcd.py regenerate them into a temporary folder and fail if anything
differs, so the schemas and the code never drift.

    python proto/generate.py            # rewrite kvstore/_pb and kvstore/_pb/etcd
    python proto/generate.py OUT_DIR    # write somewhere else (OUT_DIR and OUT_DIR/etcd)
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTO_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_DIR.parent / "kvstore" / "_pb"
GENERATED = ("kvstore_pb2.py", "kvstore_pb2.pyi", "kvstore_pb2_grpc.py")
# etcd's files live in their own folder, proto/etcd/, and are compiled from proto/ so they are
# registered as "etcd/kv.proto" and "etcd/rpc.proto" (no clash with another "rpc.proto").
ETCD_PROTOS = ("etcd/kv.proto", "etcd/rpc.proto")
ETCD_GENERATED = ("kv_pb2.py", "kv_pb2.pyi", "rpc_pb2.py", "rpc_pb2.pyi", "rpc_pb2_grpc.py")


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


def generate_etcd(out_dir: Path) -> None:
    """etcd's KV slice into out_dir (a package folder: kvstore/_pb/etcd)."""
    with tempfile.TemporaryDirectory() as scratch:
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_DIR}",
                f"--python_out={scratch}",
                f"--pyi_out={scratch}",
                f"--grpc_python_out={scratch}",
                *(str(PROTO_DIR / name) for name in ETCD_PROTOS),
            ]
        )
        if rc != 0:
            raise SystemExit(f"protoc failed with exit status {rc}")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ETCD_GENERATED:
            text = (Path(scratch) / "etcd" / name).read_text()
            # protoc names the folder as a top-level package (`from etcd import kv_pb2`); the
            # modules live inside kvstore._pb.etcd, so they import each other relatively.
            text = re.sub(
                r"^from etcd import (\w+_pb2) as", r"from . import \1 as", text, flags=re.M
            )
            (out_dir / name).write_text(text)
    package = out_dir / "__init__.py"
    if not package.exists():
        package.write_text("")


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    generate(out)
    generate_etcd(out / "etcd")
