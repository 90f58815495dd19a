"""One exception hierarchy for the whole project, mapped to gRPC status codes both ways.

This module imports nothing from grpc: each error names its status code as a string, and
kvstore.rpc.status turns names into grpc.StatusCode (server side) and back (client side).
The server sends the error's class name in the trailing metadata key `kvstore-error`, so a
client rebuilds the exact type rather than guessing from the code.
"""

from __future__ import annotations


class KvError(Exception):
    """Base of every error kvstore raises on purpose."""

    code = "UNKNOWN"


class InvalidArgument(KvError):
    """The request itself is wrong; retrying it unchanged will fail the same way."""

    code = "INVALID_ARGUMENT"


class InvalidKey(InvalidArgument):
    """Empty, too long, or not bytes/str."""


class ValueTooLarge(InvalidArgument):
    """The value exceeds the configured maximum."""


class InvalidContext(InvalidArgument):
    """The causal context is not one kvstore produced (or is from an unknown format)."""


class InvalidOption(InvalidArgument):
    """A request option (r, w, timeout) is out of range."""


class BatchTooLarge(InvalidArgument):
    """A get_many / put_many / delete_many with more items than the limit (max_batch_items),
    or too many bytes for one message: refused whole, nothing done."""


class ConfigError(KvError):
    """A configuration file, environment variable or flag is unknown or out of range."""

    code = "INVALID_ARGUMENT"


class TooManySiblings(KvError):
    """The write would leave more concurrent versions than the limit: read, resolve, write."""

    code = "FAILED_PRECONDITION"


class Unavailable(KvError):
    """Not enough replicas answered. `answered` of `required` replicas acknowledged."""

    code = "UNAVAILABLE"

    def __init__(self, message: str, answered: int = 0, required: int = 0) -> None:
        super().__init__(message)
        self.answered = answered
        self.required = required


class TransportError(Unavailable):
    """No node could be reached at all (client side)."""


class Draining(Unavailable):
    """The node is draining (`kvstore drain`): it takes no new client request. Refused
    before anything was done, so the same request is safe to send to another node, which
    the client does by itself."""


class Stalled(Unavailable):
    """The node's event loop just stood still (a pause, a frozen VM): it refuses the client
    writes it reads right after, untouched, as their clients may have given up on them and
    written again elsewhere (see kvstore.node.stallfence). Safe to send to another node."""


class ClusterRefused(KvError):
    """A peer's cluster state cannot be merged (another partition count or n), or a
    membership change is not allowed in this node's state."""

    code = "FAILED_PRECONDITION"


class HintsFull(KvError):
    """A fallback holds as many hint bytes as it may (hint_max_bytes)."""

    code = "RESOURCE_EXHAUSTED"


class Unauthenticated(KvError):
    """The call carried no credentials this node accepts (no client certificate from the
    cluster CA, no known token)."""

    code = "UNAUTHENTICATED"


class PermissionDenied(KvError):
    """The caller is known but its role does not allow this call (a reader writing, a
    client calling an admin verb, a member speaking for another)."""

    code = "PERMISSION_DENIED"


class Overloaded(KvError):
    """The node holds as many client requests (or request bytes) in flight as it may
    (max_inflight_requests, max_inflight_request_bytes): the request was refused before
    anything was done, so it is safe to retry, after `retry_after_ms` or on another node."""

    code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_ms: int = 0) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Timeout(KvError):
    """The request deadline passed before the operation finished; its outcome is unknown."""

    code = "DEADLINE_EXCEEDED"


class StorageError(KvError):
    """The local storage engine failed or holds a record this version cannot read."""

    code = "INTERNAL"


class StorageUnavailable(StorageError):
    """The node's storage failed a write for a reason outside kvstore (an IO error): it refuses
    writes, still answers reads, and takes writes again on its own once a probe finds the
    storage writable (no restart). UNAVAILABLE: the same write may succeed on another node or
    later; nothing of it was stored here."""

    code = "UNAVAILABLE"


class StorageFull(StorageUnavailable):
    """The node's disk is full: writes are refused until space returns."""


class InternalError(KvError):
    """A bug or an unexpected failure on the server."""

    code = "INTERNAL"


# Every concrete class, by name: how a client turns a server's `kvstore-error` back into a type.
ERRORS_BY_NAME: dict[str, type[KvError]] = {
    cls.__name__: cls
    for cls in (
        KvError,
        InvalidArgument,
        InvalidKey,
        ValueTooLarge,
        InvalidContext,
        InvalidOption,
        BatchTooLarge,
        ConfigError,
        TooManySiblings,
        Unavailable,
        TransportError,
        Draining,
        Stalled,
        HintsFull,
        Unauthenticated,
        PermissionDenied,
        Overloaded,
        ClusterRefused,
        Timeout,
        StorageError,
        StorageUnavailable,
        StorageFull,
        InternalError,
    )
}

# The type a bare status code maps to when the server named no class (e.g. grpc's own errors).
ERRORS_BY_CODE: dict[str, type[KvError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "FAILED_PRECONDITION": TooManySiblings,
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": Timeout,
    "INTERNAL": InternalError,
    "RESOURCE_EXHAUSTED": InvalidArgument,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
}
