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

class Dot(_message.Message):
    __slots__ = ("actor", "counter")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    actor: str
    counter: int
    def __init__(self, actor: _Optional[str] = ..., counter: _Optional[int] = ...) -> None: ...

class Sibling(_message.Message):
    __slots__ = ("dot_actor", "dot_counter", "value", "tombstone", "timestamp_ms", "write_id")
    DOT_ACTOR_FIELD_NUMBER: _ClassVar[int]
    DOT_COUNTER_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    WRITE_ID_FIELD_NUMBER: _ClassVar[int]
    dot_actor: str
    dot_counter: int
    value: bytes
    tombstone: bool
    timestamp_ms: int
    write_id: bytes
    def __init__(self, dot_actor: _Optional[str] = ..., dot_counter: _Optional[int] = ..., value: _Optional[bytes] = ..., tombstone: _Optional[bool] = ..., timestamp_ms: _Optional[int] = ..., write_id: _Optional[bytes] = ...) -> None: ...

class KeyRecord(_message.Message):
    __slots__ = ("format", "vector", "siblings", "holes")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    SIBLINGS_FIELD_NUMBER: _ClassVar[int]
    HOLES_FIELD_NUMBER: _ClassVar[int]
    format: int
    vector: _containers.RepeatedCompositeFieldContainer[VectorEntry]
    siblings: _containers.RepeatedCompositeFieldContainer[Sibling]
    holes: _containers.RepeatedCompositeFieldContainer[Dot]
    def __init__(self, format: _Optional[int] = ..., vector: _Optional[_Iterable[_Union[VectorEntry, _Mapping]]] = ..., siblings: _Optional[_Iterable[_Union[Sibling, _Mapping]]] = ..., holes: _Optional[_Iterable[_Union[Dot, _Mapping]]] = ...) -> None: ...

class CausalContext(_message.Message):
    __slots__ = ("format", "vector", "key_position", "holes")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    KEY_POSITION_FIELD_NUMBER: _ClassVar[int]
    HOLES_FIELD_NUMBER: _ClassVar[int]
    format: int
    vector: _containers.RepeatedCompositeFieldContainer[VectorEntry]
    key_position: int
    holes: _containers.RepeatedCompositeFieldContainer[Dot]
    def __init__(self, format: _Optional[int] = ..., vector: _Optional[_Iterable[_Union[VectorEntry, _Mapping]]] = ..., key_position: _Optional[int] = ..., holes: _Optional[_Iterable[_Union[Dot, _Mapping]]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("key", "r", "timeout_ms", "strict")
    KEY_FIELD_NUMBER: _ClassVar[int]
    R_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    r: int
    timeout_ms: int
    strict: bool
    def __init__(self, key: _Optional[bytes] = ..., r: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., strict: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("key", "value", "context", "w", "timeout_ms", "tombstone", "strict", "return_body", "write_id")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    RETURN_BODY_FIELD_NUMBER: _ClassVar[int]
    WRITE_ID_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    context: bytes
    w: int
    timeout_ms: int
    tombstone: bool
    strict: bool
    return_body: bool
    write_id: bytes
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., context: _Optional[bytes] = ..., w: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., tombstone: _Optional[bool] = ..., strict: _Optional[bool] = ..., return_body: _Optional[bool] = ..., write_id: _Optional[bytes] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("context", "values")
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    context: bytes
    values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, context: _Optional[bytes] = ..., values: _Optional[_Iterable[bytes]] = ...) -> None: ...

class LocalGetRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    def __init__(self, key: _Optional[bytes] = ...) -> None: ...

class GetManyRequest(_message.Message):
    __slots__ = ("keys", "r", "timeout_ms", "strict")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    R_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    r: int
    timeout_ms: int
    strict: bool
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., r: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., strict: _Optional[bool] = ...) -> None: ...

class CallError(_message.Message):
    __slots__ = ("code", "error", "message", "answered", "required", "retry_after_ms")
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    code: str
    error: str
    message: str
    answered: int
    required: int
    retry_after_ms: int
    def __init__(self, code: _Optional[str] = ..., error: _Optional[str] = ..., message: _Optional[str] = ..., answered: _Optional[int] = ..., required: _Optional[int] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class GetManyItem(_message.Message):
    __slots__ = ("ok", "error")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ok: GetResponse
    error: CallError
    def __init__(self, ok: _Optional[_Union[GetResponse, _Mapping]] = ..., error: _Optional[_Union[CallError, _Mapping]] = ...) -> None: ...

class GetManyResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[GetManyItem]
    def __init__(self, items: _Optional[_Iterable[_Union[GetManyItem, _Mapping]]] = ...) -> None: ...

class PutManyRequest(_message.Message):
    __slots__ = ("items", "w", "timeout_ms", "strict")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[PutRequest]
    w: int
    timeout_ms: int
    strict: bool
    def __init__(self, items: _Optional[_Iterable[_Union[PutRequest, _Mapping]]] = ..., w: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., strict: _Optional[bool] = ...) -> None: ...

class PutManyItem(_message.Message):
    __slots__ = ("ok", "error")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ok: PutResponse
    error: CallError
    def __init__(self, ok: _Optional[_Union[PutResponse, _Mapping]] = ..., error: _Optional[_Union[CallError, _Mapping]] = ...) -> None: ...

class PutManyResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[PutManyItem]
    def __init__(self, items: _Optional[_Iterable[_Union[PutManyItem, _Mapping]]] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClientCall(_message.Message):
    __slots__ = ("id", "get", "put", "get_many", "put_many", "cancel")
    ID_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    GET_MANY_FIELD_NUMBER: _ClassVar[int]
    PUT_MANY_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    id: int
    get: GetRequest
    put: PutRequest
    get_many: GetManyRequest
    put_many: PutManyRequest
    cancel: Cancel
    def __init__(self, id: _Optional[int] = ..., get: _Optional[_Union[GetRequest, _Mapping]] = ..., put: _Optional[_Union[PutRequest, _Mapping]] = ..., get_many: _Optional[_Union[GetManyRequest, _Mapping]] = ..., put_many: _Optional[_Union[PutManyRequest, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ...) -> None: ...

class ClientCalls(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[ClientCall]
    def __init__(self, calls: _Optional[_Iterable[_Union[ClientCall, _Mapping]]] = ...) -> None: ...

class ClientResult(_message.Message):
    __slots__ = ("id", "get", "put", "get_many", "put_many", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    GET_MANY_FIELD_NUMBER: _ClassVar[int]
    PUT_MANY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: int
    get: GetResponse
    put: PutResponse
    get_many: GetManyResponse
    put_many: PutManyResponse
    error: CallError
    def __init__(self, id: _Optional[int] = ..., get: _Optional[_Union[GetResponse, _Mapping]] = ..., put: _Optional[_Union[PutResponse, _Mapping]] = ..., get_many: _Optional[_Union[GetManyResponse, _Mapping]] = ..., put_many: _Optional[_Union[PutManyResponse, _Mapping]] = ..., error: _Optional[_Union[CallError, _Mapping]] = ...) -> None: ...

class ClientResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ClientResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ClientResult, _Mapping]]] = ...) -> None: ...

class TopologyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TopologyMember(_message.Message):
    __slots__ = ("address", "client_address", "status", "up")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    address: str
    client_address: str
    status: str
    up: bool
    def __init__(self, address: _Optional[str] = ..., client_address: _Optional[str] = ..., status: _Optional[str] = ..., up: _Optional[bool] = ...) -> None: ...

class TopologyResponse(_message.Message):
    __slots__ = ("ring_epoch", "partitions", "n", "members", "ring", "has_ring")
    RING_EPOCH_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    RING_FIELD_NUMBER: _ClassVar[int]
    HAS_RING_FIELD_NUMBER: _ClassVar[int]
    ring_epoch: int
    partitions: int
    n: int
    members: _containers.RepeatedCompositeFieldContainer[TopologyMember]
    ring: RingLayoutState
    has_ring: bool
    def __init__(self, ring_epoch: _Optional[int] = ..., partitions: _Optional[int] = ..., n: _Optional[int] = ..., members: _Optional[_Iterable[_Union[TopologyMember, _Mapping]]] = ..., ring: _Optional[_Union[RingLayoutState, _Mapping]] = ..., has_ring: _Optional[bool] = ...) -> None: ...

class ReplicaReadRequest(_message.Message):
    __slots__ = ("key", "data_only")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DATA_ONLY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    data_only: bool
    def __init__(self, key: _Optional[bytes] = ..., data_only: _Optional[bool] = ...) -> None: ...

class ReplicaReadResponse(_message.Message):
    __slots__ = ("found", "record")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    found: bool
    record: KeyRecord
    def __init__(self, found: _Optional[bool] = ..., record: _Optional[_Union[KeyRecord, _Mapping]] = ...) -> None: ...

class ReplicaMergeRequest(_message.Message):
    __slots__ = ("key", "record", "hint_for")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    HINT_FOR_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    record: KeyRecord
    hint_for: str
    def __init__(self, key: _Optional[bytes] = ..., record: _Optional[_Union[KeyRecord, _Mapping]] = ..., hint_for: _Optional[str] = ...) -> None: ...

class ReplicaMergeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplicaMergeBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ReplicaMergeRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[ReplicaMergeRequest, _Mapping]]] = ...) -> None: ...

class ReplicaMergeBatchResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HintRecord(_message.Message):
    __slots__ = ("format", "key", "target", "record", "stored_ms")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    STORED_MS_FIELD_NUMBER: _ClassVar[int]
    format: int
    key: bytes
    target: str
    record: KeyRecord
    stored_ms: int
    def __init__(self, format: _Optional[int] = ..., key: _Optional[bytes] = ..., target: _Optional[str] = ..., record: _Optional[_Union[KeyRecord, _Mapping]] = ..., stored_ms: _Optional[int] = ...) -> None: ...

class MemberState(_message.Message):
    __slots__ = ("address", "node_id", "status", "incarnation", "version", "ready_epoch", "ready_ring", "client_address")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    READY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    READY_RING_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    node_id: str
    status: str
    incarnation: int
    version: int
    ready_epoch: int
    ready_ring: bytes
    client_address: str
    def __init__(self, address: _Optional[str] = ..., node_id: _Optional[str] = ..., status: _Optional[str] = ..., incarnation: _Optional[int] = ..., version: _Optional[int] = ..., ready_epoch: _Optional[int] = ..., ready_ring: _Optional[bytes] = ..., client_address: _Optional[str] = ...) -> None: ...

class RingLayoutState(_message.Message):
    __slots__ = ("members", "owners")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    OWNERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedScalarFieldContainer[str]
    owners: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, members: _Optional[_Iterable[str]] = ..., owners: _Optional[_Iterable[int]] = ...) -> None: ...

class RingStateMessage(_message.Message):
    __slots__ = ("epoch", "current", "pending", "has_pending")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    HAS_PENDING_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    current: RingLayoutState
    pending: RingLayoutState
    has_pending: bool
    def __init__(self, epoch: _Optional[int] = ..., current: _Optional[_Union[RingLayoutState, _Mapping]] = ..., pending: _Optional[_Union[RingLayoutState, _Mapping]] = ..., has_pending: _Optional[bool] = ...) -> None: ...

class ClusterState(_message.Message):
    __slots__ = ("format", "members", "ring", "has_ring", "partitions", "n")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    RING_FIELD_NUMBER: _ClassVar[int]
    HAS_RING_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    format: int
    members: _containers.RepeatedCompositeFieldContainer[MemberState]
    ring: RingStateMessage
    has_ring: bool
    partitions: int
    n: int
    def __init__(self, format: _Optional[int] = ..., members: _Optional[_Iterable[_Union[MemberState, _Mapping]]] = ..., ring: _Optional[_Union[RingStateMessage, _Mapping]] = ..., has_ring: _Optional[bool] = ..., partitions: _Optional[int] = ..., n: _Optional[int] = ...) -> None: ...

class GossipRequest(_message.Message):
    __slots__ = ("state", "sender")
    STATE_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    state: ClusterState
    sender: str
    def __init__(self, state: _Optional[_Union[ClusterState, _Mapping]] = ..., sender: _Optional[str] = ...) -> None: ...

class GossipResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: ClusterState
    def __init__(self, state: _Optional[_Union[ClusterState, _Mapping]] = ...) -> None: ...

class KeyedRecord(_message.Message):
    __slots__ = ("key", "record")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    record: KeyRecord
    def __init__(self, key: _Optional[bytes] = ..., record: _Optional[_Union[KeyRecord, _Mapping]] = ...) -> None: ...

class TreeHashesRequest(_message.Message):
    __slots__ = ("partition", "level", "indices")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    partition: int
    level: int
    indices: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, partition: _Optional[int] = ..., level: _Optional[int] = ..., indices: _Optional[_Iterable[int]] = ...) -> None: ...

class TreeHashesResponse(_message.Message):
    __slots__ = ("hashes",)
    HASHES_FIELD_NUMBER: _ClassVar[int]
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SegmentRecordsRequest(_message.Message):
    __slots__ = ("partition", "segments", "after")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    partition: int
    segments: _containers.RepeatedScalarFieldContainer[int]
    after: bytes
    def __init__(self, partition: _Optional[int] = ..., segments: _Optional[_Iterable[int]] = ..., after: _Optional[bytes] = ...) -> None: ...

class SegmentRecordsResponse(_message.Message):
    __slots__ = ("records", "last", "done")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[KeyedRecord]
    last: bytes
    done: bool
    def __init__(self, records: _Optional[_Iterable[_Union[KeyedRecord, _Mapping]]] = ..., last: _Optional[bytes] = ..., done: _Optional[bool] = ...) -> None: ...

class PartitionRecordsRequest(_message.Message):
    __slots__ = ("partition", "after", "limit")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    partition: int
    after: bytes
    limit: int
    def __init__(self, partition: _Optional[int] = ..., after: _Optional[bytes] = ..., limit: _Optional[int] = ...) -> None: ...

class PartitionRecordsResponse(_message.Message):
    __slots__ = ("records", "last", "done")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[KeyedRecord]
    last: bytes
    done: bool
    def __init__(self, records: _Optional[_Iterable[_Union[KeyedRecord, _Mapping]]] = ..., last: _Optional[bytes] = ..., done: _Optional[bool] = ...) -> None: ...

class ForwardPutRequest(_message.Message):
    __slots__ = ("request", "hops", "ring_epoch", "sender")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    RING_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    request: PutRequest
    hops: int
    ring_epoch: int
    sender: str
    def __init__(self, request: _Optional[_Union[PutRequest, _Mapping]] = ..., hops: _Optional[int] = ..., ring_epoch: _Optional[int] = ..., sender: _Optional[str] = ...) -> None: ...

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

class EncodedMerge(_message.Message):
    __slots__ = ("key", "record", "hint_for")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    HINT_FOR_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    record: bytes
    hint_for: str
    def __init__(self, key: _Optional[bytes] = ..., record: _Optional[bytes] = ..., hint_for: _Optional[str] = ...) -> None: ...

class EncodedMerges(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[EncodedMerge]
    def __init__(self, items: _Optional[_Iterable[_Union[EncodedMerge, _Mapping]]] = ...) -> None: ...

class EncodedRead(_message.Message):
    __slots__ = ("found", "record")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    found: bool
    record: bytes
    def __init__(self, found: _Optional[bool] = ..., record: _Optional[bytes] = ...) -> None: ...

class ReplicaReadManyRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ReplicaReadRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[ReplicaReadRequest, _Mapping]]] = ...) -> None: ...

class EncodedReads(_message.Message):
    __slots__ = ("items", "errors")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[EncodedRead]
    errors: _containers.RepeatedCompositeFieldContainer[CallError]
    def __init__(self, items: _Optional[_Iterable[_Union[EncodedRead, _Mapping]]] = ..., errors: _Optional[_Iterable[_Union[CallError, _Mapping]]] = ...) -> None: ...

class ReplicaMergeManyResponse(_message.Message):
    __slots__ = ("errors",)
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    errors: _containers.RepeatedCompositeFieldContainer[CallError]
    def __init__(self, errors: _Optional[_Iterable[_Union[CallError, _Mapping]]] = ...) -> None: ...

class PeerCall(_message.Message):
    __slots__ = ("id", "read", "merge", "forward", "cancel", "merge_many", "read_many")
    ID_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    MERGE_FIELD_NUMBER: _ClassVar[int]
    FORWARD_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    MERGE_MANY_FIELD_NUMBER: _ClassVar[int]
    READ_MANY_FIELD_NUMBER: _ClassVar[int]
    id: int
    read: ReplicaReadRequest
    merge: EncodedMerge
    forward: ForwardPutRequest
    cancel: Cancel
    merge_many: EncodedMerges
    read_many: ReplicaReadManyRequest
    def __init__(self, id: _Optional[int] = ..., read: _Optional[_Union[ReplicaReadRequest, _Mapping]] = ..., merge: _Optional[_Union[EncodedMerge, _Mapping]] = ..., forward: _Optional[_Union[ForwardPutRequest, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., merge_many: _Optional[_Union[EncodedMerges, _Mapping]] = ..., read_many: _Optional[_Union[ReplicaReadManyRequest, _Mapping]] = ...) -> None: ...

class PeerCalls(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[PeerCall]
    def __init__(self, calls: _Optional[_Iterable[_Union[PeerCall, _Mapping]]] = ...) -> None: ...

class PeerResult(_message.Message):
    __slots__ = ("id", "read", "merge", "forward", "error", "merge_many", "read_many")
    ID_FIELD_NUMBER: _ClassVar[int]
    READ_FIELD_NUMBER: _ClassVar[int]
    MERGE_FIELD_NUMBER: _ClassVar[int]
    FORWARD_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MERGE_MANY_FIELD_NUMBER: _ClassVar[int]
    READ_MANY_FIELD_NUMBER: _ClassVar[int]
    id: int
    read: EncodedRead
    merge: ReplicaMergeResponse
    forward: PutResponse
    error: CallError
    merge_many: ReplicaMergeManyResponse
    read_many: EncodedReads
    def __init__(self, id: _Optional[int] = ..., read: _Optional[_Union[EncodedRead, _Mapping]] = ..., merge: _Optional[_Union[ReplicaMergeResponse, _Mapping]] = ..., forward: _Optional[_Union[PutResponse, _Mapping]] = ..., error: _Optional[_Union[CallError, _Mapping]] = ..., merge_many: _Optional[_Union[ReplicaMergeManyResponse, _Mapping]] = ..., read_many: _Optional[_Union[EncodedReads, _Mapping]] = ...) -> None: ...

class PeerResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PeerResult]
    def __init__(self, results: _Optional[_Iterable[_Union[PeerResult, _Mapping]]] = ...) -> None: ...

class PurgeRequest(_message.Message):
    __slots__ = ("key", "record")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    record: KeyRecord
    def __init__(self, key: _Optional[bytes] = ..., record: _Optional[_Union[KeyRecord, _Mapping]] = ...) -> None: ...

class PurgeResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: bool
    def __init__(self, purged: _Optional[bool] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MemberReport(_message.Message):
    __slots__ = ("address", "node_id", "status", "up", "phi", "partitions_owned", "partitions_pending")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    PHI_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_OWNED_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_PENDING_FIELD_NUMBER: _ClassVar[int]
    address: str
    node_id: str
    status: str
    up: bool
    phi: float
    partitions_owned: int
    partitions_pending: int
    def __init__(self, address: _Optional[str] = ..., node_id: _Optional[str] = ..., status: _Optional[str] = ..., up: _Optional[bool] = ..., phi: _Optional[float] = ..., partitions_owned: _Optional[int] = ..., partitions_pending: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("address", "node_id", "ring_epoch", "ring_pending", "members", "hints_pending", "hint_bytes", "handoffs_pending", "counters")
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RING_EPOCH_FIELD_NUMBER: _ClassVar[int]
    RING_PENDING_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    HINTS_PENDING_FIELD_NUMBER: _ClassVar[int]
    HINT_BYTES_FIELD_NUMBER: _ClassVar[int]
    HANDOFFS_PENDING_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    address: str
    node_id: str
    ring_epoch: int
    ring_pending: bool
    members: _containers.RepeatedCompositeFieldContainer[MemberReport]
    hints_pending: int
    hint_bytes: int
    handoffs_pending: int
    counters: _containers.ScalarMap[str, int]
    def __init__(self, address: _Optional[str] = ..., node_id: _Optional[str] = ..., ring_epoch: _Optional[int] = ..., ring_pending: _Optional[bool] = ..., members: _Optional[_Iterable[_Union[MemberReport, _Mapping]]] = ..., hints_pending: _Optional[int] = ..., hint_bytes: _Optional[int] = ..., handoffs_pending: _Optional[int] = ..., counters: _Optional[_Mapping[str, int]] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LeaveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class RemoveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LocateRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    def __init__(self, key: _Optional[bytes] = ...) -> None: ...

class LocateResponse(_message.Message):
    __slots__ = ("ring_epoch", "primaries", "pending_primaries")
    RING_EPOCH_FIELD_NUMBER: _ClassVar[int]
    PRIMARIES_FIELD_NUMBER: _ClassVar[int]
    PENDING_PRIMARIES_FIELD_NUMBER: _ClassVar[int]
    ring_epoch: int
    primaries: _containers.RepeatedScalarFieldContainer[str]
    pending_primaries: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ring_epoch: _Optional[int] = ..., primaries: _Optional[_Iterable[str]] = ..., pending_primaries: _Optional[_Iterable[str]] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("timeout_ms", "stay")
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    STAY_FIELD_NUMBER: _ClassVar[int]
    timeout_ms: int
    stay: bool
    def __init__(self, timeout_ms: _Optional[int] = ..., stay: _Optional[bool] = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("hints_delivered", "hints_left", "exiting")
    HINTS_DELIVERED_FIELD_NUMBER: _ClassVar[int]
    HINTS_LEFT_FIELD_NUMBER: _ClassVar[int]
    EXITING_FIELD_NUMBER: _ClassVar[int]
    hints_delivered: int
    hints_left: int
    exiting: bool
    def __init__(self, hints_delivered: _Optional[int] = ..., hints_left: _Optional[int] = ..., exiting: _Optional[bool] = ...) -> None: ...

class RepairRequest(_message.Message):
    __slots__ = ("partitions", "timeout_ms")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedScalarFieldContainer[int]
    timeout_ms: int
    def __init__(self, partitions: _Optional[_Iterable[int]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class RepairResponse(_message.Message):
    __slots__ = ("partitions", "exchanges", "keys_repaired", "failed", "errors")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    EXCHANGES_FIELD_NUMBER: _ClassVar[int]
    KEYS_REPAIRED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    partitions: int
    exchanges: int
    keys_repaired: int
    failed: int
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, partitions: _Optional[int] = ..., exchanges: _Optional[int] = ..., keys_repaired: _Optional[int] = ..., failed: _Optional[int] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...
