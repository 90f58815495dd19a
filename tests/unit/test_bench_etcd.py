"""kvbench's etcd adapter without a server: the committed stubs are what proto/etcd makes,
the schema is etcd's on the wire, the requests are linearizable reads and plain puts, calls
go to the members in turn, a Range with no kvs is not found, failures are named by status."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from kvstore._pb.etcd import kv_pb2, rpc_pb2
from kvstore.bench.adapters import STORES, EtcdStore, StoreUnavailable
from kvstore.bench.wire import etcd as wire
from kvstore.bench.wire.etcd import EtcdError, put_request, range_request

REPO = Path(__file__).resolve().parents[2]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "etcd_proto_generate", REPO / "proto" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_are_what_the_generator_makes(tmp_path: Path) -> None:
    generator = load_generator()
    generator.generate_etcd(tmp_path)
    for name in generator.ETCD_GENERATED:
        fresh = (tmp_path / name).read_bytes()
        committed = (REPO / "kvstore" / "_pb" / "etcd" / name).read_bytes()
        assert fresh and fresh == committed, f"kvstore/_pb/etcd/{name} is stale: make proto"
    assert "from . import rpc_pb2 as" in (tmp_path / "rpc_pb2_grpc.py").read_text()


def test_names_are_etcds_so_the_method_paths_are() -> None:
    service = rpc_pb2.DESCRIPTOR.services_by_name["KV"]
    assert service.full_name == "etcdserverpb.KV"
    assert {m.name for m in service.methods} == {"Range", "Put"}
    assert service.methods_by_name["Range"].input_type.full_name == "etcdserverpb.RangeRequest"
    assert service.methods_by_name["Put"].output_type.full_name == "etcdserverpb.PutResponse"
    assert kv_pb2.KeyValue.DESCRIPTOR.full_name == "mvccpb.KeyValue"


# Field numbers copied from etcd's api/etcdserverpb/rpc.proto and api/mvccpb/kv.proto.
ETCD_FIELDS = {
    rpc_pb2.RangeRequest: {"key": 1, "range_end": 2, "limit": 3, "revision": 4,
                           "sort_order": 5, "sort_target": 6, "serializable": 7, "keys_only": 8,
                           "count_only": 9, "min_mod_revision": 10, "max_mod_revision": 11,
                           "min_create_revision": 12, "max_create_revision": 13},
    rpc_pb2.RangeResponse: {"header": 1, "kvs": 2, "more": 3, "count": 4},
    rpc_pb2.PutRequest: {"key": 1, "value": 2, "lease": 3, "prev_kv": 4, "ignore_value": 5,
                         "ignore_lease": 6},
    rpc_pb2.PutResponse: {"header": 1, "prev_kv": 2},
    rpc_pb2.ResponseHeader: {"cluster_id": 1, "member_id": 2, "revision": 3, "raft_term": 4},
    kv_pb2.KeyValue: {"key": 1, "create_revision": 2, "mod_revision": 3, "version": 4,
                      "value": 5, "lease": 6},
}  # fmt: skip


@pytest.mark.parametrize("message", list(ETCD_FIELDS), ids=lambda m: m.DESCRIPTOR.name)
def test_field_numbers_are_etcds(message: type) -> None:
    fields = {f.name: f.number for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]
    assert fields == ETCD_FIELDS[message]


def test_a_read_is_a_linearizable_range_of_one_key() -> None:
    request = range_request(b"user000000000042")
    assert request.key == b"user000000000042" and request.serializable is False
    assert request.range_end == b"" and request.limit == 0 and request.revision == 0
    # On the wire: field 1 (key) only; serializable=false is proto3's default, not sent.
    assert request.SerializeToString() == b"\x0a\x10user000000000042"


def test_a_write_is_a_put_of_the_key_and_value() -> None:
    request = put_request(b"k", b"value")
    assert request.SerializeToString() == b"\x0a\x01k\x12\x05value"
    assert request.lease == 0 and not request.prev_kv


def test_a_range_response_as_etcd_encodes_it_parses() -> None:
    # header{revision: 7}, kvs[{key: "k", mod_revision: 5, value: "v"}], count: 1
    header = b"\x0a\x02\x18\x07"
    kv = b"\x0a\x01k\x18\x05\x2a\x01v"
    response = rpc_pb2.RangeResponse.FromString(
        header + b"\x12" + bytes([len(kv)]) + kv + b"\x20\x01"
    )
    assert response.header.revision == 7 and response.count == 1
    assert [(x.key, x.mod_revision, x.value) for x in response.kvs] == [(b"k", 5, b"v")]


class FakeKVStub:
    """One member's KV service: records the calls it gets, holds the keys it was given."""

    def __init__(self, name: str, data: dict[bytes, bytes], log: list[tuple[str, str, bytes]]):
        self.name, self.data, self.log = name, data, log

    async def Range(self, request: rpc_pb2.RangeRequest, timeout: float) -> rpc_pb2.RangeResponse:
        self.log.append((self.name, "Range", request.key))
        assert request.serializable is False and timeout == 2.0
        kvs = [kv_pb2.KeyValue(key=request.key, value=self.data[request.key])] if (
            request.key in self.data) else []  # fmt: skip
        return rpc_pb2.RangeResponse(kvs=kvs, count=len(kvs))

    async def Put(self, request: rpc_pb2.PutRequest, timeout: float) -> rpc_pb2.PutResponse:
        self.log.append((self.name, "Put", request.key))
        self.data[request.key] = request.value
        return rpc_pb2.PutResponse()


def new_store() -> EtcdStore:
    """Three members; made inside a running loop, as kvbench does (grpc.aio channels)."""
    return EtcdStore("127.0.0.1:1, 127.0.0.1:2,127.0.0.1:3", timeout=2.0)


def run_with(
    data: dict[bytes, bytes], ops: list[tuple[str, str]]
) -> tuple[list[bool | None], list[tuple[str, str, bytes]]]:
    """Run the adapter's operations against three fake members holding `data`: what each
    operation answered, and which member got which call."""
    log: list[tuple[str, str, bytes]] = []

    async def go() -> list[bool | None]:
        store = new_store()
        store._kv._stubs = [FakeKVStub(f"m{i}", data, log) for i in range(3)]
        try:
            answers: list[bool | None] = []
            for op, key in ops:
                if op == "read":
                    answers.append(await store.read(key))
                else:
                    answers.append(await getattr(store, op)(key, b"new"))
            return answers
        finally:
            await store.close()

    return asyncio.run(go()), log


def test_reads_find_what_is_there_and_a_range_with_no_kvs_is_not_found() -> None:
    data = {b"here": b"v"}
    answers, log = run_with(data, [("read", "here"), ("read", "gone")])
    assert answers == [True, False]
    assert [call[1:] for call in log] == [("Range", b"here"), ("Range", b"gone")]


def test_read_modify_write_is_a_range_then_a_put_and_says_what_it_read() -> None:
    data: dict[bytes, bytes] = {}
    answers, log = run_with(data, [("read_modify_write", "k"), ("read_modify_write", "k")])
    assert answers == [False, True] and data == {b"k": b"new"}
    assert [call[1] for call in log] == ["Range", "Put", "Range", "Put"]


def test_calls_go_to_the_members_in_turn() -> None:
    ops = [("update", f"k{i}") for i in range(4)] + [("read", "k0"), ("insert", "k9")]
    _, log = run_with({}, ops)
    assert [call[0] for call in log] == ["m0", "m1", "m2", "m0", "m1", "m2"]
    assert STORES["etcd"] is EtcdStore


class FailingKVStub:
    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code

    async def Put(self, request: rpc_pb2.PutRequest, timeout: float) -> rpc_pb2.PutResponse:
        raise grpc.aio.AioRpcError(self.code, grpc.aio.Metadata(), grpc.aio.Metadata(), "no")


@pytest.mark.parametrize(
    ("code", "name"),
    [(grpc.StatusCode.UNAVAILABLE, "EtcdUnavailable"),
     (grpc.StatusCode.DEADLINE_EXCEEDED, "EtcdDeadlineExceeded")],
)  # fmt: skip
def test_failures_are_named_by_their_status(code: grpc.StatusCode, name: str) -> None:

    async def write() -> None:
        store = new_store()
        store._kv._stubs = [FailingKVStub(code)] * 3
        try:
            await store.update("k", b"v")
        finally:
            await store.close()

    with pytest.raises(EtcdError) as raised:
        asyncio.run(write())
    # kvbench counts errors by the exception's class name.
    assert type(raised.value).__name__ == name and raised.value.code_name == code.name
    assert wire._ERRORS[code] is type(raised.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"r": 2}, "no --r/--w"), ({"w": 2}, "no --r/--w"), ({"seeds": "nohost"}, "HOST:PORT"),
     ({"seeds": "127.0.0.1:1,:2"}, "HOST:PORT"), ({"seeds": " , "}, "client addresses")],
)  # fmt: skip
def test_options_etcd_cannot_honour_are_refused(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"seeds": "127.0.0.1:2379", **kwargs}
    with pytest.raises(StoreUnavailable, match=message):
        EtcdStore(**arguments)  # type: ignore[arg-type]
