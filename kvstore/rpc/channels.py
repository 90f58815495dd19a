"""One long-lived gRPC channel per address, and the stub over it: what the peer transport and
both clients keep, so a connection is set up once and reused for every call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

StubT = TypeVar("StubT")


class ChannelPool(Generic[StubT]):
    def __init__(self, open_channel: Callable[[str], Any], make_stub: Callable[[Any], StubT]):
        self._open_channel = open_channel
        self._make_stub = make_stub
        self._stubs: dict[str, StubT] = {}
        self.channels: dict[str, Any] = {}

    def stub(self, address: str) -> StubT:
        stub = self._stubs.get(address)
        if stub is None:
            channel = self.channels[address] = self._open_channel(address)
            stub = self._stubs[address] = self._make_stub(channel)
        return stub

    def take(self, address: str) -> Any | None:
        """Forget the channel to `address` and hand it over (None if there is none)."""
        self._stubs.pop(address, None)
        return self.channels.pop(address, None)

    def take_channels(self) -> list[Any]:
        """Forget every channel and hand them over, for the owner to close (sync or async)."""
        channels = list(self.channels.values())
        self.channels.clear()
        self._stubs.clear()
        return channels
