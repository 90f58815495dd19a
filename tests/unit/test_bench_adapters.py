"""The Redis adapter's write path without a server: what it pipelines, and a WAIT that comes
back with too few replicas is an error, never a silent success."""

from __future__ import annotations

import asyncio
from types import TracebackType

import pytest

from kvstore.bench.adapters import RedisStore, ReplicaWaitTimeout, StoreUnavailable
from kvstore.bench.workloads import Op


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
