"""Stores kvbench can drive, chosen with --store."""

from __future__ import annotations

from kvstore.bench.workloads import Op
from kvstore.client import AsyncClient


class KvstoreStore:
    """kvstore through its own async client. Updates carry the last context this process saw
    for the key (from a read or a put), as a well-behaved blind writer should: without it every
    update would add a sibling. Read-modify-write reads and writes back with that read's
    context (YCSB workload F)."""

    name = "kvstore"
    supported = frozenset({Op.READ, Op.UPDATE, Op.INSERT, Op.READ_MODIFY_WRITE})

    def __init__(
        self,
        seeds: str,
        r: int | None = None,
        w: int | None = None,
        timeout: float = 5.0,
        max_contexts: int = 1_000_000,
    ) -> None:
        self._client = AsyncClient(seeds, timeout=timeout)
        self._r, self._w = r, w
        self._contexts: dict[str, bytes] = {}
        self._max_contexts = max_contexts

    def _remember(self, key: str, context: bytes) -> None:
        if key not in self._contexts and len(self._contexts) >= self._max_contexts:
            del self._contexts[next(iter(self._contexts))]  # oldest first: bounded memory
        self._contexts[key] = context

    async def read(self, key: str) -> None:
        result = await self._client.get(key, r=self._r)
        self._remember(key, result.context)

    async def update(self, key: str, value: bytes) -> None:
        result = await self._client.put(key, value, context=self._contexts.get(key), w=self._w)
        self._remember(key, result.context)

    async def insert(self, key: str, value: bytes) -> None:
        await self.update(key, value)

    async def read_modify_write(self, key: str, value: bytes) -> None:
        read = await self._client.get(key, r=self._r)
        result = await self._client.put(key, value, context=read.context, w=self._w)
        self._remember(key, result.context)

    async def close(self) -> None:
        await self._client.close()


STORES = ("kvstore",)
