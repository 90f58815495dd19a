"""Storage.update is atomic per key: concurrent read-merge-writes lose nothing."""

from __future__ import annotations

import threading
from pathlib import Path

from kvstore.core import versions
from kvstore.core.versions import EMPTY
from kvstore.storage.engine import Storage


def test_concurrent_updates_of_one_key_lose_no_write(tmp_path: Path) -> None:
    writers, writes_each = 8, 60
    with Storage(tmp_path) as storage:
        actor = storage.claim_identity("atomic")
        barrier = threading.Barrier(writers)

        def blind_writes(worker: int) -> None:
            barrier.wait()
            for i in range(writes_each):
                value = f"{worker}-{i}".encode()
                storage.update(
                    b"hot",
                    lambda current, value=value: versions.write(current or EMPTY, {}, actor, value)[
                        0
                    ],
                )

        threads = [threading.Thread(target=blind_writes, args=(w,)) for w in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        state = storage.get(b"hot")
        assert state is not None
        # Blind writes never replace each other: every one must be a sibling, with its own dot.
        assert len(state.siblings) == writers * writes_each
        assert state.vector == {actor: writers * writes_each}
