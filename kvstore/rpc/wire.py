"""Peer requests built from bytes already encoded: a write's record is encoded once, on the
coordinator, and the same bytes go into the merge request for every replica.

The bytes are exactly what protobuf would serialize for the same ReplicaMergeRequest
(fields in number order, empty scalars left out), so the wire format does not change.
"""

from __future__ import annotations

# ReplicaMergeRequest: key = 1 (bytes), record = 2 (KeyRecord), hint_for = 3 (string); all
# length-delimited (wire type 2).
_KEY_TAG = b"\x0a"
_RECORD_TAG = b"\x12"
_HINT_FOR_TAG = b"\x1a"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, data: bytes) -> bytes:
    return tag + _varint(len(data)) + data


def merge_request_bytes(key: bytes, record: bytes, hint_for: str = "") -> bytes:
    """A serialized ReplicaMergeRequest around an encoded KeyRecord."""
    request = _field(_KEY_TAG, key) if key else b""
    # A message field is written when set, even empty: as `record=KeyRecord()` would be.
    request += _field(_RECORD_TAG, record)
    if hint_for:
        request += _field(_HINT_FOR_TAG, hint_for.encode())
    return request
