"""The peer transport's request path (PeerClient over the Peer/Stream servicer), real gRPC on
127.0.0.1 in process, the roles behind the servicer replaced by recording fakes: replica
calls of one turn leave in one message, a refused call fails alone, and a forwarded put is
retried elsewhere only when it never left (a stream that breaks under it is outcome
unknown: the coordinator must not send it again)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import grpc
import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore._pb import kvstore_pb2_grpc as pb_grpc
from kvstore.core.requests import ForwardedPut, GetAnswer, PutAnswer, PutCommand
from kvstore.core.transport import PeerFailure, PeerUnreachable
from kvstore.core.versions import EMPTY, EMPTY_CLOCK, KeyState, write
from kvstore.errors import InvalidKey, KvError, TooManySiblings
from kvstore.rpc.auth import open_access
from kvstore.rpc.peer import PeerClient
from kvstore.rpc.server import server_options
from kvstore.rpc.servicers import PeerServicer
from kvstore.rpc.streams import CallStream
from kvstore.rpc.wire import read_call
from kvstore.storage.codec import encode_record

MESSAGE_BYTES = 4 * 1024 * 1024


def state(value: bytes) -> KeyState:
    return write(EMPTY, EMPTY_CLOCK, "n1/ab", value, 1)[0]


class FakeReplica:
    def __init__(self) -> None:
        self.merged: list[bytes] = []
        self.stored: dict[bytes, KeyState] = {}
        self.hold = False  # merges never become durable (a stalled disk)

    def local_get(self, key: bytes) -> GetAnswer:
        raise NotImplementedError

    def read(self, key: bytes, data_only: bool = False) -> KeyState | None:
        if key == b"refuse":
            raise InvalidKey("refused")
        return self.stored.get(key)

    def read_record(self, key: bytes, data_only: bool = False) -> bytes | None:
        state = self.read(key, data_only)
        return None if state is None else encode_record(state)

    def merge(self, key: bytes, state: KeyState, hint_for: str = "") -> asyncio.Future[None]:
        if key == b"refuse":
            raise InvalidKey("refused")
        self.merged.append(key)
        self.stored[key] = state
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.hold:
            asyncio.get_running_loop().call_soon(done.set_result, None)
        return done

    def merge_batch(self, items: list[tuple[bytes, KeyState]]) -> Awaitable[None]:
        raise NotImplementedError

    def purge(self, key: bytes, state: KeyState) -> bool:
        raise NotImplementedError


class FakeCoordinator:
    """Forwarded puts: `hang` never finishes, `full` is refused, others answer."""

    def __init__(self) -> None:
        self.forwarded: list[bytes] = []
        self.started = asyncio.Event()

    async def get(self, key: bytes, r: int, timeout_ms: int, strict: bool) -> GetAnswer:
        raise NotImplementedError

    async def put(self, command: PutCommand, hops: int = 0) -> PutAnswer:
        raise NotImplementedError

    async def forwarded_put(self, forward: ForwardedPut) -> PutAnswer:
        self.forwarded.append(forward.command.key)
        self.started.set()
        if forward.command.key == b"hang":
            await asyncio.sleep(3600)
        if forward.command.key == b"full":
            raise TooManySiblings("too many")
        return PutAnswer(context=b"ctx-" + forward.command.key)

    async def get_many(
        self, keys: Sequence[bytes], r: int, timeout_ms: int, strict: bool
    ) -> list[GetAnswer | KvError]:
        raise NotImplementedError

    async def put_many(self, commands: Sequence[PutCommand]) -> list[PutAnswer | KvError]:
        raise NotImplementedError


class Node:
    def __init__(self) -> None:
        self.replica = FakeReplica()
        self.coordinator = FakeCoordinator()
        self.server: grpc.aio.Server | None = None
        self.address = ""

    async def start(self) -> None:
        # As a node does: the server's frame limit and the one its streams announce agree.
        self.server = grpc.aio.server(options=server_options(MESSAGE_BYTES))
        servicer = PeerServicer(
            self.replica,
            self.coordinator,
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            max_message_bytes=MESSAGE_BYTES,
        )
        pb_grpc.add_PeerServicer_to_server(open_access("Peer", servicer), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)


def run(scenario: Callable[[Node, PeerClient], Awaitable[None]], timeout: float = 30) -> None:
    async def main() -> None:
        node = Node()
        await node.start()
        peers = PeerClient(MESSAGE_BYTES)
        try:
            await asyncio.wait_for(scenario(node, peers), timeout=timeout)
        finally:
            await peers.close()
            await node.stop()

    asyncio.run(main())


def forward(key: bytes) -> ForwardedPut:
    return ForwardedPut(PutCommand(key, b"v"), hops=1, ring_epoch=1, sender="10.0.0.9:7000")


def test_merges_of_one_turn_go_as_one_call_and_a_refused_one_fails_alone() -> None:
    async def scenario(node: Node, peers: PeerClient) -> None:
        record = encode_record(state(b"v"))
        await peers.merge(node.address, b"warm", record, 5)
        stream = peers.stream(node.address)
        before, calls = stream.messages_sent, stream.calls_sent
        keys = [f"k{i}".encode() for i in range(30)]
        outcomes = await asyncio.gather(
            *(peers.merge(node.address, key, record, 5) for key in keys),
            peers.merge(node.address, b"refuse", record, 5),
            return_exceptions=True,
        )
        assert outcomes[:30] == [None] * 30
        assert isinstance(outcomes[30], PeerFailure) and outcomes[30].code == "INVALID_ARGUMENT"
        assert stream.messages_sent - before == 1 and stream.calls_sent - calls == 1
        assert node.replica.merged[1:] == keys
        assert await peers.read(node.address, b"k3", 5) == state(b"v")
        assert await peers.read(node.address, b"nothing", 5) is None

    run(scenario)


def test_a_forward_answers_with_the_peers_put_answer_or_its_error() -> None:
    async def scenario(node: Node, peers: PeerClient) -> None:
        answer = await peers.forward_put(node.address, forward(b"a"), 5)
        assert answer == PutAnswer(context=b"ctx-a")
        with pytest.raises(TooManySiblings):
            await peers.forward_put(node.address, forward(b"full"), 5)

    run(scenario)


def test_a_forward_to_a_node_that_is_not_listening_never_left() -> None:
    async def scenario(node: Node, peers: PeerClient) -> None:
        address = node.address
        await node.stop()
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(PeerUnreachable):
            await peers.forward_put(address, forward(b"a"), 5)
        assert loop.time() - began < 4  # at once, not at the deadline
        assert node.coordinator.forwarded == []

    run(scenario)


def test_a_forward_whose_stream_breaks_is_outcome_unknown_not_unreachable() -> None:
    async def scenario(node: Node, peers: PeerClient) -> None:
        pending = asyncio.ensure_future(peers.forward_put(node.address, forward(b"hang"), 10))
        await asyncio.wait_for(node.coordinator.started.wait(), 5)
        await node.stop()
        with pytest.raises(PeerFailure) as failed:
            await pending
        assert not isinstance(failed.value, PeerUnreachable)
        assert node.coordinator.forwarded == [b"hang"]  # it did arrive: never to be resent

    run(scenario)


def test_a_forward_past_its_deadline_is_outcome_unknown() -> None:
    async def scenario(node: Node, peers: PeerClient) -> None:
        with pytest.raises(PeerFailure) as failed:
            await peers.forward_put(node.address, forward(b"hang"), 0.3)
        assert failed.value.code == "DEADLINE_EXCEEDED"
        assert not isinstance(failed.value, PeerUnreachable)

    run(scenario)


def test_reads_of_one_turn_go_as_one_call_with_an_answer_each() -> None:
    async def scenario(node: Node, peers: PeerClient) -> None:
        node.replica.stored[b"here"] = state(b"v")
        await peers.read(node.address, b"warm", 5)
        stream = peers.stream(node.address)
        calls = stream.calls_sent
        outcomes = await asyncio.gather(
            peers.read(node.address, b"here", 5),
            peers.read(node.address, b"absent", 5),
            peers.read(node.address, b"refuse", 5),
            peers.read(node.address, b"here", 5, data_only=True),
            return_exceptions=True,
        )
        assert stream.calls_sent - calls == 1  # one read_many
        assert outcomes[0] == state(b"v") and outcomes[1] is None and outcomes[3] == state(b"v")
        assert isinstance(outcomes[2], PeerFailure) and outcomes[2].code == "INVALID_ARGUMENT"

    run(scenario)


def test_an_item_of_a_shared_call_keeps_its_own_deadline() -> None:
    async def scenario(node: Node, peers: PeerClient) -> None:
        await peers.read(node.address, b"warm", 5)
        # Two merges in one turn share a call; the peer is made to hold every merge's
        # durability back, so neither is answered: the first gives up at its own 0.2 s.
        node.replica.hold = True
        loop = asyncio.get_running_loop()
        began = loop.time()
        record = encode_record(state(b"v"))
        short = peers.merge(node.address, b"a", record, 0.2)
        long = peers.merge(node.address, b"b", record, 1.0)
        with pytest.raises(PeerFailure) as failed:
            await short
        assert failed.value.code == "DEADLINE_EXCEEDED" and loop.time() - began < 0.8
        with pytest.raises(PeerFailure):
            await long
        assert loop.time() - began >= 0.9

    run(scenario)


def test_large_merges_of_one_turn_are_split_into_calls_that_fit() -> None:
    async def scenario(node: Node, peers: PeerClient) -> None:
        await peers.read(node.address, b"warm", 5)
        stream = peers.stream(node.address)
        calls = stream.calls_sent
        records = {f"big{i}".encode(): encode_record(state(bytes([i]) * 600_000)) for i in range(8)}
        outcomes = await asyncio.gather(
            *(peers.merge(node.address, key, record, 10) for key, record in records.items()),
            return_exceptions=True,
        )
        assert outcomes == [None] * 8  # ~4.8 MB in one turn, each merge fine on its own
        assert stream.calls_sent - calls >= 3
        assert sorted(node.replica.merged) == sorted(records)
        assert stream.streams_opened == 1

    run(scenario)


def test_reads_of_large_records_in_one_turn_all_come_back() -> None:
    async def scenario(node: Node, peers: PeerClient) -> None:
        for i in range(6):
            node.replica.stored[f"big{i}".encode()] = state(bytes([i]) * 700_000)
        await peers.read(node.address, b"warm", 5)
        stream = peers.stream(node.address)
        calls = stream.calls_sent
        got = await asyncio.gather(
            *(peers.read(node.address, f"big{i}".encode(), 10) for i in range(6))
        )
        assert got == [state(bytes([i]) * 700_000) for i in range(6)]
        # One shared call: the peer answered what fitted and left the rest to be read alone.
        assert stream.calls_sent - calls > 1
        assert stream.streams_opened == 1

    run(scenario)


def test_an_idle_stream_that_pings_is_not_cut_off() -> None:
    """A caller pings its long-lived stream while nothing flows (keepalive): the node takes
    pings every 5 s or more (gRPC's default would GOAWAY the connection after a few)."""

    async def scenario(node: Node, peers: PeerClient) -> None:
        channel = grpc.aio.insecure_channel(
            node.address,
            options=[("grpc.keepalive_time_ms", 5_500), ("grpc.keepalive_timeout_ms", 5_000)],
        )
        open_call = channel.stream_stream(
            "/kvstore.v1.Peer/Stream",
            request_serializer=None,
            response_deserializer=pb.PeerResults.FromString,
        )
        stream: CallStream[pb.PeerResult] = CallStream(
            "idle", channel, lambda: open_call(wait_for_ready=True), lambda m: m.results,
            max_inflight_bytes=1 << 20, max_message_bytes=MESSAGE_BYTES, wait_for_ready=True,
        )  # fmt: skip
        await stream.call(read_call(b"k"), 5)
        await asyncio.sleep(20)  # ~3 pings with no data
        assert (await stream.call(read_call(b"k"), 5)).HasField("read")
        assert stream.streams_opened == 1
        await stream.close()
        await channel.close()

    run(scenario, timeout=40)
