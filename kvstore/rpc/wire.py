"""Peer requests built from bytes already encoded: a write's record is encoded once, on the
coordinator, and the same bytes go into the merge request for every replica.

The bytes are exactly what protobuf would serialize for the same ReplicaMergeRequest
(fields in number order, empty scalars left out), so the wire format does not change.
The bodies of peer stream calls (a PeerCall's fields but its id: kvstore.rpc.streams adds
that) are built the same way.
"""

from __future__ import annotations

from kvstore.rpc.streams import field as _field

# ReplicaMergeRequest: key = 1 (bytes), record = 2 (KeyRecord), hint_for = 3 (string); all
# length-delimited (wire type 2).
_KEY_TAG = b"\x0a"
_RECORD_TAG = b"\x12"
_HINT_FOR_TAG = b"\x1a"
# ReplicaReadRequest: key = 1, data_only = 2 (varint).
_DATA_ONLY = b"\x10\x01"
# PeerCall: read = 3, merge = 4, forward = 5, merge_many = 7, read_many = 8 (messages).
_CALL_READ_TAG = b"\x1a"
_CALL_MERGE_TAG = b"\x22"
_CALL_FORWARD_TAG = b"\x2a"
_CALL_MERGE_MANY_TAG = b"\x3a"
_CALL_READ_MANY_TAG = b"\x42"
# ReplicaMergeBatchRequest and ReplicaReadManyRequest: items = 1 (messages).
_ITEMS_TAG = b"\x0a"
# Items of one read_many or merge_many call: a receiver refuses more, whole.
MAX_ITEMS_PER_CALL = 1024


def merge_request_bytes(key: bytes, record: bytes, hint_for: str = "") -> bytes:
    """A serialized ReplicaMergeRequest around an encoded KeyRecord."""
    request = _field(_KEY_TAG, key) if key else b""
    # A message field is written when set, even empty: as `record=KeyRecord()` would be.
    request += _field(_RECORD_TAG, record)
    if hint_for:
        request += _field(_HINT_FOR_TAG, hint_for.encode())
    return request


def read_request_bytes(key: bytes, data_only: bool = False) -> bytes:
    """A serialized ReplicaReadRequest."""
    request = _field(_KEY_TAG, key) if key else b""
    return request + _DATA_ONLY if data_only else request


def read_call(key: bytes, data_only: bool = False) -> bytes:
    """The body of a PeerCall carrying a ReplicaReadRequest."""
    return read_call_of_request(read_request_bytes(key, data_only))


def read_call_of_request(request: bytes) -> bytes:
    """The body of a PeerCall carrying a serialized ReplicaReadRequest."""
    return _field(_CALL_READ_TAG, request)


def merge_call_of_request(request: bytes) -> bytes:
    """The body of a PeerCall carrying a serialized ReplicaMergeRequest."""
    return _field(_CALL_MERGE_TAG, request)


def read_many_call(requests: list[bytes]) -> bytes:
    """The body of a PeerCall carrying a ReplicaReadManyRequest of serialized
    ReplicaReadRequests."""
    return _field(_CALL_READ_MANY_TAG, b"".join(_field(_ITEMS_TAG, r) for r in requests))


def merge_many_call(requests: list[bytes]) -> bytes:
    """The body of a PeerCall carrying a ReplicaMergeBatchRequest of serialized
    ReplicaMergeRequests (merge_request_bytes)."""
    return _field(_CALL_MERGE_MANY_TAG, b"".join(_field(_ITEMS_TAG, r) for r in requests))


def merge_call(key: bytes, record: bytes, hint_for: str = "") -> bytes:
    """The body of a PeerCall carrying a ReplicaMergeRequest around an encoded KeyRecord."""
    return merge_call_of_request(merge_request_bytes(key, record, hint_for))


def forward_call(request: bytes) -> bytes:
    """The body of a PeerCall carrying a serialized ForwardPutRequest."""
    return _field(_CALL_FORWARD_TAG, request)
