"""The committed protobuf code (kvstore/_pb) is exactly what proto/generate.py makes from
proto/kvstore.proto with the pinned grpcio-tools: the schema and the code never drift."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "kvstore" / "_pb"
FILES = ("kvstore_pb2.py", "kvstore_pb2.pyi", "kvstore_pb2_grpc.py")


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "kvstore_proto_generate", REPO / "proto" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pb")
    load_generator().generate(out)
    return out


def test_generator_names_the_same_files() -> None:
    assert tuple(load_generator().GENERATED) == FILES


@pytest.mark.parametrize("name", FILES)
def test_generated_file_is_byte_identical(generated: Path, name: str) -> None:
    fresh = (generated / name).read_bytes()
    committed = (COMMITTED / name).read_bytes()
    assert fresh, name
    assert fresh == committed, f"kvstore/_pb/{name} is stale: run python proto/generate.py"


def test_grpc_module_imports_its_messages_relatively(generated: Path) -> None:
    text = (generated / "kvstore_pb2_grpc.py").read_text()
    assert "from . import kvstore_pb2 as" in text
    assert "\nimport kvstore_pb2 as" not in text
