"""rpc/wire.py builds a ReplicaMergeRequest around an already-encoded record: the bytes must
be exactly what protobuf serializes for the same message (the wire format is unchanged)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvstore._pb import kvstore_pb2 as pb
from kvstore.core.versions import EMPTY, EMPTY_CLOCK, write
from kvstore.rpc.wire import merge_request_bytes
from kvstore.storage.codec import encode_record

actors = st.sampled_from(["a/1", "b/2", "node-with-a-long-name/deadbeef"])


@given(
    key=st.binary(min_size=1, max_size=300),
    values=st.lists(st.binary(max_size=40_000), min_size=1, max_size=4),
    actor=actors,
    hint_for=st.sampled_from(["", "10.0.0.2:7000", "é"]),
)
def test_the_bytes_are_protobufs_own(
    key: bytes, values: list[bytes], actor: str, hint_for: str
) -> None:
    state = EMPTY
    for value in values:  # concurrent writes: siblings, so records of many sizes
        state, _ = write(state, EMPTY_CLOCK, actor, value, timestamp_ms=7)
    record = encode_record(state)
    expected = pb.ReplicaMergeRequest(
        key=key, record=pb.KeyRecord.FromString(record), hint_for=hint_for
    ).SerializeToString(deterministic=True)
    assert merge_request_bytes(key, record, hint_for) == expected


def test_an_empty_record_is_still_sent() -> None:
    expected = pb.ReplicaMergeRequest(key=b"k", record=pb.KeyRecord()).SerializeToString()
    assert merge_request_bytes(b"k", b"") == expected
    assert pb.ReplicaMergeRequest.FromString(merge_request_bytes(b"k", b"")).HasField("record")
