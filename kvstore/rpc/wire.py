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
# PeerCall: read = 3, merge = 4, forward = 5 (messages).
_CALL_READ_TAG = b"\x1a"
_CALL_MERGE_TAG = b"\x22"
_CALL_FORWARD_TAG = b"\x2a"


def merge_request_bytes(key: bytes, record: bytes, hint_for: str = "") -> bytes:
    """A serialized ReplicaMergeRequest around an encoded KeyRecord."""
    request = _field(_KEY_TAG, key) if key else b""
    # A message field is written when set, even empty: as `record=KeyRecord()` would be.
    request += _field(_RECORD_TAG, record)
    if hint_for:
        request += _field(_HINT_FOR_TAG, hint_for.encode())
    return request


def read_call(key: bytes, data_only: bool = False) -> bytes:
    """The body of a PeerCall carrying a ReplicaReadRequest."""
    request = _field(_KEY_TAG, key) if key else b""
    if data_only:
        request += _DATA_ONLY
    return _field(_CALL_READ_TAG, request)


def merge_call(key: bytes, record: bytes, hint_for: str = "") -> bytes:
    """The body of a PeerCall carrying a ReplicaMergeRequest around an encoded KeyRecord."""
    return _field(_CALL_MERGE_TAG, merge_request_bytes(key, record, hint_for))


def forward_call(request: bytes) -> bytes:
    """The body of a PeerCall carrying a serialized ForwardPutRequest."""
    return _field(_CALL_FORWARD_TAG, request)
