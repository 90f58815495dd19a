"""Protobuf messages <-> the domain values the roles take and return (kvstore.core.requests).
The servicers and the peer transport translate with these and nothing else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from kvstore._pb import kvstore_pb2 as pb
from kvstore.core.requests import (
    ForwardedPut,
    GetAnswer,
    Location,
    NodeInfo,
    NodeStatus,
    PutAnswer,
    PutCommand,
    Topology,
)
from kvstore.errors import KvError
from kvstore.rpc.status import call_error


def put_command(request: pb.PutRequest) -> PutCommand:
    return PutCommand(
        key=request.key,
        value=None if request.tombstone else request.value,
        context=request.context,
        w=request.w,
        timeout_ms=request.timeout_ms,
        strict=request.strict,
        return_body=request.return_body,
        write_id=request.write_id,
    )


def put_request(command: PutCommand) -> pb.PutRequest:
    return pb.PutRequest(
        key=command.key,
        value=command.value or b"",
        context=command.context,
        w=command.w,
        timeout_ms=command.timeout_ms,
        tombstone=command.value is None,
        strict=command.strict,
        return_body=command.return_body,
        write_id=command.write_id,
    )


def forwarded_put(request: pb.ForwardPutRequest) -> ForwardedPut:
    return ForwardedPut(
        command=put_command(request.request),
        hops=request.hops,
        ring_epoch=request.ring_epoch,
        sender=request.sender,
    )


def forward_put_request(forward: ForwardedPut) -> pb.ForwardPutRequest:
    return pb.ForwardPutRequest(
        request=put_request(forward.command),
        hops=forward.hops,
        ring_epoch=forward.ring_epoch,
        sender=forward.sender,
    )


def put_response(answer: PutAnswer) -> pb.PutResponse:
    return pb.PutResponse(context=answer.context, values=answer.values)


def put_answer(response: pb.PutResponse) -> PutAnswer:
    return PutAnswer(context=response.context, values=tuple(response.values))


def get_response(answer: GetAnswer) -> pb.GetResponse:
    return pb.GetResponse(values=answer.values, context=answer.context, found=answer.found)


def put_many_commands(request: pb.PutManyRequest) -> list[PutCommand]:
    """The batch's items as puts, each with the batch's w, timeout and strictness."""
    w, timeout_ms, strict = request.w, request.timeout_ms, request.strict
    return [
        replace(put_command(item), w=w, timeout_ms=timeout_ms, strict=strict)
        for item in request.items
    ]


def get_many_response(answers: Sequence[GetAnswer | KvError]) -> pb.GetManyResponse:
    return pb.GetManyResponse(
        items=[
            pb.GetManyItem(error=call_error(a))
            if isinstance(a, KvError)
            else pb.GetManyItem(ok=get_response(a))
            for a in answers
        ]
    )


def put_many_response(answers: Sequence[PutAnswer | KvError]) -> pb.PutManyResponse:
    return pb.PutManyResponse(
        items=[
            pb.PutManyItem(error=call_error(a))
            if isinstance(a, KvError)
            else pb.PutManyItem(ok=put_response(a))
            for a in answers
        ]
    )


def node_info_response(info: NodeInfo) -> pb.NodeInfoResponse:
    return pb.NodeInfoResponse(
        node_id=info.node_id,
        actor=info.actor,
        address=info.address,
        members=info.members,
        partitions=info.partitions,
        n=info.n,
    )


def locate_response(location: Location) -> pb.LocateResponse:
    return pb.LocateResponse(
        ring_epoch=location.ring_epoch,
        primaries=location.primaries,
        pending_primaries=location.pending_primaries,
    )


def topology_response(topology: Topology) -> pb.TopologyResponse:
    return pb.TopologyResponse(
        ring_epoch=topology.ring_epoch,
        partitions=topology.partitions,
        n=topology.n,
        members=[
            pb.TopologyMember(
                address=m.address, client_address=m.client_address, status=m.status, up=m.up
            )
            for m in topology.members
        ],
        ring=pb.RingLayoutState(members=topology.ring_members, owners=topology.owners),
        has_ring=bool(topology.owners),
    )


def status_response(status: NodeStatus) -> pb.StatusResponse:
    return pb.StatusResponse(
        address=status.address,
        node_id=status.node_id,
        ring_epoch=status.ring_epoch,
        ring_pending=status.ring_pending,
        members=[
            pb.MemberReport(
                address=m.address,
                node_id=m.node_id,
                status=m.status,
                up=m.up,
                phi=m.phi,
                partitions_owned=m.partitions_owned,
                partitions_pending=m.partitions_pending,
            )
            for m in status.members
        ],
        hints_pending=status.hints_pending,
        hint_bytes=status.hint_bytes,
        handoffs_pending=status.handoffs_pending,
        counters=dict(status.counters),
    )
