from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VectorEntry(_message.Message):
    __slots__ = ("actor", "counter")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    actor: str
    counter: int
    def __init__(self, actor: _Optional[str] = ..., counter: _Optional[int] = ...) -> None: ...

class Sibling(_message.Message):
    __slots__ = ("dot_actor", "dot_counter", "value", "tombstone", "timestamp_ms")
    DOT_ACTOR_FIELD_NUMBER: _ClassVar[int]
    DOT_COUNTER_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    dot_actor: str
    dot_counter: int
    value: bytes
    tombstone: bool
    timestamp_ms: int
    def __init__(self, dot_actor: _Optional[str] = ..., dot_counter: _Optional[int] = ..., value: _Optional[bytes] = ..., tombstone: _Optional[bool] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class KeyRecord(_message.Message):
    __slots__ = ("format", "vector", "siblings")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    SIBLINGS_FIELD_NUMBER: _ClassVar[int]
    format: int
    vector: _containers.RepeatedCompositeFieldContainer[VectorEntry]
    siblings: _containers.RepeatedCompositeFieldContainer[Sibling]
    def __init__(self, format: _Optional[int] = ..., vector: _Optional[_Iterable[_Union[VectorEntry, _Mapping]]] = ..., siblings: _Optional[_Iterable[_Union[Sibling, _Mapping]]] = ...) -> None: ...

class CausalContext(_message.Message):
    __slots__ = ("format", "vector", "key_position")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    KEY_POSITION_FIELD_NUMBER: _ClassVar[int]
    format: int
    vector: _containers.RepeatedCompositeFieldContainer[VectorEntry]
    key_position: int
    def __init__(self, format: _Optional[int] = ..., vector: _Optional[_Iterable[_Union[VectorEntry, _Mapping]]] = ..., key_position: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("key", "r", "timeout_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    R_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    r: int
    timeout_ms: int
    def __init__(self, key: _Optional[bytes] = ..., r: _Optional[int] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("values", "context", "found")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    context: bytes
    found: bool
    def __init__(self, values: _Optional[_Iterable[bytes]] = ..., context: _Optional[bytes] = ..., found: _Optional[bool] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("key", "value", "context", "w", "timeout_ms", "tombstone")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    context: bytes
    w: int
    timeout_ms: int
    tombstone: bool
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., context: _Optional[bytes] = ..., w: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., tombstone: _Optional[bool] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("context",)
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    context: bytes
    def __init__(self, context: _Optional[bytes] = ...) -> None: ...

class LocalGetRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    def __init__(self, key: _Optional[bytes] = ...) -> None: ...

class ReplicaReadRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    def __init__(self, key: _Optional[bytes] = ...) -> None: ...

class ReplicaReadResponse(_message.Message):
    __slots__ = ("found", "record")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    found: bool
    record: KeyRecord
    def __init__(self, found: _Optional[bool] = ..., record: _Optional[_Union[KeyRecord, _Mapping]] = ...) -> None: ...

class ReplicaMergeRequest(_message.Message):
    __slots__ = ("key", "record")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    record: KeyRecord
    def __init__(self, key: _Optional[bytes] = ..., record: _Optional[_Union[KeyRecord, _Mapping]] = ...) -> None: ...

class ReplicaMergeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ForwardPutRequest(_message.Message):
    __slots__ = ("request", "hops")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    request: PutRequest
    hops: int
    def __init__(self, request: _Optional[_Union[PutRequest, _Mapping]] = ..., hops: _Optional[int] = ...) -> None: ...

class NodeInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfoResponse(_message.Message):
    __slots__ = ("node_id", "actor", "address", "members", "partitions", "n")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    actor: str
    address: str
    members: _containers.RepeatedScalarFieldContainer[str]
    partitions: int
    n: int
    def __init__(self, node_id: _Optional[str] = ..., actor: _Optional[str] = ..., address: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., partitions: _Optional[int] = ..., n: _Optional[int] = ...) -> None: ...
