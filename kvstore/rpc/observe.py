"""What the servicers tell about each client request: the node's metrics implement
`RequestMetrics` (kvstore.node.metrics.NodeMetrics); this layer only names the interface."""

from __future__ import annotations

from typing import Protocol


class RequestMetrics(Protocol):
    def record(self, operation: str, error: BaseException | None, seconds: float) -> None: ...
    def batch(self, operation: str, items: int) -> None: ...


class NoMetrics:
    """For servicers built without a node's metrics (unit tests)."""

    def record(self, operation: str, error: BaseException | None, seconds: float) -> None:
        pass

    def batch(self, operation: str, items: int) -> None:
        pass


NO_METRICS = NoMetrics()
