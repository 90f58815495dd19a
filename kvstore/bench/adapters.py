"""Stores kvbench can drive, chosen with --store. Each adapter names what it supports; a
workload needing anything else is refused before it starts."""

from __future__ import annotations

from typing import Any

from kvstore.bench.wire.etcd import EtcdKV
from kvstore.bench.workloads import Op
from kvstore.client import AsyncClient, HedgePolicy
from kvstore.client.results import PutItem


class StoreUnavailable(ValueError):
    """The adapter cannot be used as asked (a missing optional package, a bad option)."""


class ReplicaWaitTimeout(Exception):
    """Redis WAIT returned before enough replicas acknowledged the write: not durable as asked."""


class KvstoreStore:
    """kvstore through its own async client. Updates carry the last context this process saw
    for the key (from a read or a put), as a well-behaved blind writer should: without it every
    update would add a sibling. An update asks for return_body and keeps the context it gets
    back, which covers the concurrent versions it was shown (another task's update of the same
    key): the next update replaces them unread, as a cache or a benchmark means to (a plain
    put's context covers only its own write, and concurrent updates of one hot key would pile
    up as siblings). Read-modify-write reads and writes back with that read's context (YCSB
    workload F)."""

    name = "kvstore"
    supported = frozenset({Op.READ, Op.UPDATE, Op.INSERT, Op.READ_MODIFY_WRITE})

    default_seeds = "127.0.0.1:8101,127.0.0.1:8102,127.0.0.1:8103"  # `make run`'s client ports

    def __init__(
        self,
        seeds: str,
        r: int | None = None,
        w: int | None = None,
        timeout: float = 5.0,
        max_contexts: int = 1_000_000,
        hedge: bool = True,
    ) -> None:
        self._client = AsyncClient(
            seeds, timeout=timeout, hedge=None if hedge else HedgePolicy.never()
        )
        self._r, self._w = r, w
        self._contexts: dict[str, bytes] = {}
        self._max_contexts = max_contexts

    def _remember(self, key: str, context: bytes) -> None:
        if key not in self._contexts and len(self._contexts) >= self._max_contexts:
            del self._contexts[next(iter(self._contexts))]  # oldest first: bounded memory
        self._contexts[key] = context

    async def read(self, key: str) -> bool:
        result = await self._client.get(key, r=self._r)
        self._remember(key, result.context)
        return result.found

    async def update(self, key: str, value: bytes) -> None:
        result = await self._client.put(
            key, value, context=self._contexts.get(key), w=self._w, return_body=True
        )
        self._remember(key, result.context)

    async def insert(self, key: str, value: bytes) -> None:
        await self.update(key, value)

    async def read_modify_write(self, key: str, value: bytes) -> bool:
        read = await self._client.get(key, r=self._r)
        result = await self._client.put(key, value, context=read.context, w=self._w)
        self._remember(key, result.context)
        return read.found

    async def batch(self, operations: list[tuple[Op, str]], value: bytes) -> list[bool | Exception]:
        """The batch's reads (and the reads of its read-modify-writes) in one get_many,
        then its writes in one put_many, each with the context it would carry alone. Each
        operation's outcome is its own: a key that failed fails alone."""
        outcomes: list[bool | Exception] = [True] * len(operations)
        reading = [i for i, (op, _) in enumerate(operations) if op in _READS]
        reads = await self._client.get_many([operations[i][1] for i in reading], r=self._r)
        read_context: dict[int, bytes] = {}
        for i, got in zip(reading, reads, strict=True):
            if isinstance(got, Exception):
                outcomes[i] = got
                continue
            self._remember(operations[i][1], got.context)
            read_context[i] = got.context
            outcomes[i] = got.found
        writing = [
            i
            for i, (op, _) in enumerate(operations)
            if op is not Op.READ and not isinstance(outcomes[i], Exception)
        ]
        items = [
            PutItem(
                operations[i][1],
                value,
                read_context[i] if i in read_context else self._contexts.get(operations[i][1]),
                return_body=operations[i][0] is not Op.READ_MODIFY_WRITE,
            )
            for i in writing
        ]
        written = await self._client.put_many(items, w=self._w)
        for i, put in zip(writing, written, strict=True):
            if isinstance(put, Exception):
                outcomes[i] = put
            else:
                self._remember(operations[i][1], put.context)
        return outcomes

    async def close(self) -> None:
        await self._client.close()


_READS = (Op.READ, Op.READ_MODIFY_WRITE)


class RedisStore:
    """Redis through redis-py's asyncio client, as a replicated store: reads go to the primary
    (the first address of --seeds); each write is followed on the same connection by
    `WAIT w-1` (pipelined, one round trip), so it returns once w copies hold it. The default
    w=2 with two replicas is the closest analogue to kvstore's N=3 W=2. Read-modify-write is a
    GET then a SET, not atomic, as in YCSB's Redis binding."""

    name = "redis"
    supported = frozenset({Op.READ, Op.UPDATE, Op.INSERT, Op.READ_MODIFY_WRITE})
    default_seeds = "127.0.0.1:6379"

    def __init__(
        self, seeds: str, r: int | None = None, w: int | None = None, timeout: float = 5.0
    ) -> None:
        try:
            import redis.asyncio
        except ImportError:
            raise StoreUnavailable(
                "--store redis needs redis-py: pip install 'kvstore-dynamo[bench]'"
            ) from None
        if r not in (None, 1):
            raise StoreUnavailable("Redis reads one copy (the primary): --r must be 1 or unset")
        if w is not None and not 1 <= w <= 16:
            raise StoreUnavailable("--w for Redis counts copies (primary + replicas): 1..16")
        self._replicas = (2 if w is None else w) - 1
        self._wait_ms = max(int(timeout * 1000), 1)
        host, _, port = seeds.split(",")[0].strip().rpartition(":")
        if not host or not port.isdigit():
            raise StoreUnavailable(f"--seeds for Redis is the primary's HOST:PORT, got {seeds!r}")
        # The socket waits a second longer than WAIT does, so a replica that does not
        # acknowledge shows as ReplicaWaitTimeout, not as a socket timeout.
        self._client: Any = redis.asyncio.Redis(
            host=host, port=int(port), socket_timeout=timeout + 1, socket_connect_timeout=timeout
        )

    async def read(self, key: str) -> bool:
        return await self._client.get(key) is not None

    async def update(self, key: str, value: bytes) -> None:
        if not self._replicas:
            await self._client.set(key, value)
            return
        await self.batch([(Op.UPDATE, key)], value)

    async def batch(self, operations: list[tuple[Op, str]], value: bytes) -> list[bool]:
        """The whole batch in one pipeline (one round trip), its writes covered by one WAIT.
        A read-modify-write in a batch pipelines its GET and SET: the SET does not wait for
        the GET's answer. Returns, per operation, whether its GET found the key."""
        writes = 0
        async with self._client.pipeline(transaction=False) as pipe:
            for op, key in operations:
                if op in (Op.READ, Op.READ_MODIFY_WRITE):
                    pipe.get(key)
                if op is not Op.READ:
                    pipe.set(key, value)
                    writes += 1
            if writes and self._replicas:
                pipe.wait(self._replicas, self._wait_ms)
            replies = await pipe.execute()
        if writes and self._replicas and replies[-1] < self._replicas:
            raise ReplicaWaitTimeout(f"{replies[-1]} of {self._replicas} replicas acknowledged")
        found: list[bool] = []
        position = 0  # the replies are in command order: a GET's, then a SET's, per operation
        for op, _ in operations:
            if op in (Op.READ, Op.READ_MODIFY_WRITE):
                found.append(replies[position] is not None)
                position += 1
            else:
                found.append(True)
            position += op is not Op.READ
        return found

    async def insert(self, key: str, value: bytes) -> None:
        await self.update(key, value)

    async def read_modify_write(self, key: str, value: bytes) -> bool:
        found = await self._client.get(key) is not None
        await self.update(key, value)
        return found

    async def close(self) -> None:
        await self._client.aclose()


class EtcdStore:
    """etcd (v3 API) over grpc.aio with stubs generated from proto/etcd: reads are
    linearizable Ranges, writes Puts (each committed by a Raft majority, fsynced on each
    member: etcd's default), a read-modify-write a Range then a Put (not atomic, as Redis's).
    --seeds lists the members' client addresses; calls go to them in turn (see EtcdKV for
    why not only to the leader). A key is the key name's UTF-8 bytes."""

    name = "etcd"
    supported = frozenset({Op.READ, Op.UPDATE, Op.INSERT, Op.READ_MODIFY_WRITE})
    default_seeds = "127.0.0.1:2379"

    def __init__(
        self, seeds: str, r: int | None = None, w: int | None = None, timeout: float = 5.0
    ) -> None:
        if r is not None or w is not None:
            raise StoreUnavailable("etcd commits and reads through a Raft majority: no --r/--w")
        endpoints = [address.strip() for address in seeds.split(",") if address.strip()]
        for address in endpoints:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise StoreUnavailable(f"--seeds for etcd are HOST:PORT,..., got {address!r}")
        if not endpoints:
            raise StoreUnavailable("--seeds for etcd: the members' client addresses, HOST:PORT")
        self._kv = EtcdKV(endpoints, timeout)

    async def read(self, key: str) -> bool:
        response = await self._kv.range(key.encode())
        return len(response.kvs) > 0

    async def update(self, key: str, value: bytes) -> None:
        await self._kv.put(key.encode(), value)

    async def insert(self, key: str, value: bytes) -> None:
        await self.update(key, value)

    async def read_modify_write(self, key: str, value: bytes) -> bool:
        found = await self.read(key)
        await self.update(key, value)
        return found

    async def close(self) -> None:
        await self._kv.close()


STORES: dict[str, type[KvstoreStore] | type[RedisStore] | type[EtcdStore]] = {
    "kvstore": KvstoreStore,
    "redis": RedisStore,
    "etcd": EtcdStore,
}
