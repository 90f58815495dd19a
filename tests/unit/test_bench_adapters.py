"""The Redis adapter's write path without a server: what it pipelines, and a WAIT that comes
back with too few replicas is an error, never a silent success. And what the kvstore and
Redis adapters say of a read of a missing key (not found, counted apart from successes)."""

from __future__ import annotations

import asyncio
from types import TracebackType

import pytest

from kvstore.bench.adapters import KvstoreStore, RedisStore, ReplicaWaitTimeout, StoreUnavailable
from kvstore.bench.workloads import Op
from kvstore.client.results import GetResult, PutResult


class FakePipeline:
    def __init__(self, acknowledged: int, log: list[tuple[object, ...]]) -> None:
        self.acknowledged, self.log = acknowledged, log

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pass

    def get(self, key: str) -> None:
        self.log.append(("GET", key))

    def set(self, key: str, value: bytes) -> None:
        self.log.append(("SET", key))

    def wait(self, replicas: int, timeout_ms: int) -> None:
        self.log.append(("WAIT", replicas, timeout_ms))

    async def execute(self) -> list[object]:
        replies: list[object] = [b"v" if c[0] == "GET" else True for c in self.log]
        if self.log and self.log[-1][0] == "WAIT":
            replies[-1] = self.acknowledged
        return replies


class FakeRedis:
    def __init__(self, acknowledged: int) -> None:
        self.acknowledged = acknowledged
        self.log: list[tuple[object, ...]] = []

    def pipeline(self, transaction: bool) -> FakePipeline:
        assert transaction is False
        return FakePipeline(self.acknowledged, self.log)


def store(acknowledged: int, w: int | None = None) -> tuple[RedisStore, FakeRedis]:
    adapter = RedisStore("127.0.0.1:1", w=w, timeout=2.0)
    fake = FakeRedis(acknowledged)
    adapter._client = fake
    return adapter, fake


def test_a_write_is_pipelined_with_wait_for_w_minus_one_replicas() -> None:
    adapter, fake = store(acknowledged=1)
    asyncio.run(adapter.update("k", b"v"))
    assert fake.log == [("SET", "k"), ("WAIT", 1, 2000)]


def test_too_few_acknowledgements_raise() -> None:
    adapter, _ = store(acknowledged=1, w=3)
    with pytest.raises(ReplicaWaitTimeout, match="1 of 2"):
        asyncio.run(adapter.update("k", b"v"))


def test_a_batch_sends_one_wait_after_all_its_writes() -> None:
    adapter, fake = store(acknowledged=1)
    ops = [(Op.READ, "a"), (Op.UPDATE, "b"), (Op.READ_MODIFY_WRITE, "c"), (Op.READ, "d")]
    asyncio.run(adapter.batch(ops, b"v"))
    assert fake.log == [
        ("GET", "a"), ("SET", "b"), ("GET", "c"), ("SET", "c"), ("GET", "d"), ("WAIT", 1, 2000)
    ]  # fmt: skip


def test_a_read_only_batch_waits_for_nothing() -> None:
    adapter, fake = store(acknowledged=0)
    asyncio.run(adapter.batch([(Op.READ, "a"), (Op.READ, "b")], b"v"))
    assert [c[0] for c in fake.log] == ["GET", "GET"]


@pytest.mark.parametrize(
    "kwargs", [{"r": 2}, {"w": 0}, {"w": 17}, {"seeds": "no-port"}, {"seeds": ":6379"}]
)
def test_options_redis_cannot_honour_are_refused(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"seeds": "127.0.0.1:6379", **kwargs}
    with pytest.raises(StoreUnavailable):
        RedisStore(**arguments)  # type: ignore[arg-type]


# --- reads of missing keys: not_found, as YCSB's NOT_FOUND -----------------------------------


class FakeKvstoreClient:
    """Holds some keys; answers get and put as kvstore's AsyncClient does (results only)."""

    def __init__(self, present: set[str]) -> None:
        self.present = present

    async def get(self, key: str, r: int | None = None) -> GetResult:
        if key in self.present:
            return GetResult(values=[b"v"], context=b"ctx-" + key.encode(), found=True)
        return GetResult(values=[], context=b"", found=False)

    async def put(self, key: str, value: bytes, **options: object) -> PutResult:
        self.present.add(key)
        return PutResult(context=b"ctx-" + key.encode())


def kvstore_adapter(present: set[str]) -> KvstoreStore:
    adapter = KvstoreStore("127.0.0.1:1")
    adapter._client = FakeKvstoreClient(present)  # type: ignore[assignment]
    return adapter


def test_kvstore_read_says_whether_the_key_was_found() -> None:
    adapter = kvstore_adapter({"here"})
    assert asyncio.run(adapter.read("here")) is True
    assert asyncio.run(adapter.read("gone")) is False


def test_kvstore_read_modify_write_reports_its_read_and_still_writes() -> None:
    present: set[str] = set()
    adapter = kvstore_adapter(present)
    assert asyncio.run(adapter.read_modify_write("new", b"v")) is False
    assert present == {"new"}  # written although its read found nothing
    assert asyncio.run(adapter.read_modify_write("new", b"v")) is True


class FakeRedisGets(FakeRedis):
    def __init__(self, present: set[str]) -> None:
        super().__init__(acknowledged=1)
        self.present = present

    async def get(self, key: str) -> bytes | None:
        return b"v" if key in self.present else None


def test_redis_get_of_a_missing_key_is_not_found() -> None:
    adapter, _ = store(acknowledged=1)
    adapter._client = FakeRedisGets({"here"})
    assert asyncio.run(adapter.read("here")) is True
    assert asyncio.run(adapter.read("gone")) is False


class PipelineWithMisses(FakePipeline):
    """GETs of keys named gone* find nothing."""

    async def execute(self) -> list[object]:
        replies = await super().execute()
        return [None if c[0] == "GET" and str(c[1]).startswith("gone") else reply
                for c, reply in zip(self.log, replies, strict=True)]  # fmt: skip


class RedisWithMisses(FakeRedis):
    def pipeline(self, transaction: bool) -> FakePipeline:
        return PipelineWithMisses(self.acknowledged, self.log)


def test_redis_batch_reports_found_per_operation() -> None:
    adapter, _ = store(acknowledged=1)
    adapter._client = RedisWithMisses(acknowledged=1)
    ops = [(Op.READ, "here"), (Op.READ_MODIFY_WRITE, "gone1"), (Op.UPDATE, "x"),
           (Op.READ, "gone2"), (Op.READ_MODIFY_WRITE, "here2")]  # fmt: skip
    assert asyncio.run(adapter.batch(ops, b"v")) == [True, False, True, False, True]
