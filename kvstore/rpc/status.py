"""kvstore errors <-> gRPC statuses, both ways.

The server puts the error's class name (and, for quorum failures, the counts) into trailing
metadata; the client rebuilds the same type. Statuses that carry no class name (grpc's own,
or a connection failure) map by status code alone.
"""

from __future__ import annotations

import grpc

from kvstore._pb import kvstore_pb2 as pb
from kvstore.errors import (
    ERRORS_BY_CODE,
    ERRORS_BY_NAME,
    InternalError,
    KvError,
    Overloaded,
    Timeout,
    TransportError,
    Unavailable,
)

ERROR_KEY = "kvstore-error"
ANSWERED_KEY = "kvstore-answered"
REQUIRED_KEY = "kvstore-required"
RETRY_AFTER_KEY = "kvstore-retry-after-ms"


def status_code(error: KvError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN)


def trailing_metadata(error: KvError) -> tuple[tuple[str, str], ...]:
    metadata = [(ERROR_KEY, type(error).__name__)]
    if isinstance(error, Unavailable):
        metadata += [(ANSWERED_KEY, str(error.answered)), (REQUIRED_KEY, str(error.required))]
    if isinstance(error, Overloaded):
        metadata.append((RETRY_AFTER_KEY, str(error.retry_after_ms)))
    return tuple(metadata)


async def abort(context: grpc.aio.ServicerContext, error: KvError) -> None:
    """End the RPC with the error's status; never returns."""
    context.set_trailing_metadata(trailing_metadata(error))
    await context.abort(status_code(error), str(error))


# What gRPC says when a call failed before its request left this process: no connection
# could be made. A reset or a keepalive failure mid-call says otherwise (the node may have
# applied the request), and so does a deadline.
# grpcio 1.85: "failed to connect to all addresses; ..." (refused, or accepted and closed
# before the HTTP/2 handshake) and "errors resolving HOST" (DNS: a stopped container's name).
_NEVER_SENT = ("failed to connect", "connection refused", "errors resolving")


def is_transport_failure(exc: grpc.RpcError) -> bool:
    """True when the request never reached a node (none could be connected to), so it can be
    sent to another node without risking a double write: a write applied twice would leave
    two siblings of one value, one of which no context its writer holds would ever cover.
    A call cut off mid-way is not retried: its outcome is unknown to the caller."""
    code = exc.code() if hasattr(exc, "code") else None
    if code != grpc.StatusCode.UNAVAILABLE or _metadata(exc).get(ERROR_KEY) is not None:
        return False
    details = ((exc.details() if hasattr(exc, "details") else None) or "").lower()
    return any(marker in details for marker in _NEVER_SENT)


def _metadata(exc: grpc.RpcError) -> dict[str, str]:
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    return {k: v for k, v in (trailing or ()) if isinstance(v, str)}


def error_from_rpc(exc: grpc.RpcError, address: str = "") -> KvError:
    """The kvstore error a failed RPC stands for."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    metadata = _metadata(exc)
    return rebuild_error(
        code.name if code else "UNKNOWN",
        metadata.get(ERROR_KEY, ""),
        details,
        int(metadata.get(ANSWERED_KEY, "0") or 0),
        int(metadata.get(REQUIRED_KEY, "0") or 0),
        address,
        _number(metadata.get(RETRY_AFTER_KEY, "")),
    )


def _number(text: str) -> int:
    return int(text) if text.isdigit() and len(text) < 10 else 0


def rebuild_error(
    code: str,
    name: str,
    details: str,
    answered: int = 0,
    required: int = 0,
    address: str = "",
    retry_after_ms: int = 0,
) -> KvError:
    """The kvstore error a failure names: by its class name when the server gave one, else
    by the status code alone (grpc's own failures, a connection that failed)."""
    where = f" ({address})" if address else ""
    if not name:
        if code == "UNAVAILABLE":
            return TransportError(f"cannot reach node{where}: {details}")
        if code == "DEADLINE_EXCEEDED":
            return Timeout(f"deadline exceeded{where}: {details}")
        return ERRORS_BY_CODE.get(code, InternalError)(f"{details}{where}")
    cls = ERRORS_BY_NAME.get(name, ERRORS_BY_CODE.get(code, KvError))
    if issubclass(cls, Unavailable):
        return cls(details, answered, required)
    if issubclass(cls, Overloaded):
        return cls(details, retry_after_ms)
    return cls(details)


def call_error(error: KvError) -> pb.CallError:
    """A failed call of a stream or an item of a batch, as its result carries it: what a
    unary call's status and trailing metadata would say."""
    failure = pb.CallError(code=error.code, error=type(error).__name__, message=str(error))
    if isinstance(error, Unavailable):
        failure.answered = max(error.answered, 0)
        failure.required = max(error.required, 0)
    if isinstance(error, Overloaded):
        failure.retry_after_ms = max(error.retry_after_ms, 0)
    return failure


def error_from_call(failure: pb.CallError, address: str = "") -> KvError:
    """The kvstore error a stream call's or a batch item's CallError stands for."""
    return rebuild_error(
        failure.code,
        failure.error,
        failure.message,
        failure.answered,
        failure.required,
        address,
        failure.retry_after_ms,
    )
