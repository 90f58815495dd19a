"""The loop every background task of a node runs: one round per interval, for ever.

A round that fails is logged and the next one runs on time: a peer that is down must not
stop gossip, hint delivery, handoff or anti-entropy for the others. Unreachable peers are
ordinary (PeerFailure, logged at debug), and so is a storage fault (StorageUnavailable, which
the node's storage watch reports); anything else is a bug and logged with its trace.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

from kvstore.core.transport import PeerFailure
from kvstore.errors import StorageUnavailable
from kvstore.node.clock import Clock

log = logging.getLogger(__name__)


async def run_every(
    clock: Clock,
    interval_s: float,
    work: Callable[[], Awaitable[object]],
    what: str,
    jitter: float = 0.0,
) -> None:
    """Run `work` every `interval_s` (0 or less: never), each pause stretched by up to
    ±`jitter` of itself, so nodes started together do not act in lockstep."""
    if interval_s <= 0:
        return
    rng = random.Random()
    while True:
        try:
            await work()
        except PeerFailure as exc:
            log.debug("%s: a peer failed: %s", what, exc)
        except StorageUnavailable as exc:
            # A storage fault: the node's storage watch logs its start and end once; a line
            # per round of every task would bury them.
            log.debug("%s: storage refuses writes: %s", what, exc)
        except Exception:
            log.exception("%s round failed", what)
        await clock.sleep(interval_s * rng.uniform(1 - jitter, 1 + jitter))
