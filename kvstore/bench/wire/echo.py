"""The machine's floor: a grpc.aio unary echo at concurrency 1. No kvstore operation over
gRPC can be faster than one unary call on the same machine, so bench/compare reports kvstore's
lone put and get as multiples of this.

    python -m kvstore.bench.wire.echo --port 7300 [--max-seconds 600]   # the server

The server is a generic handler (bytes in, the same bytes out: no protobuf on either side) on
its own grpc.aio server in its own process, as a kvstore node is; it stops on SIGTERM/SIGINT,
or by itself after --max-seconds so a forgotten one cannot linger.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import grpc

SERVICE = "kvbench.Echo"
METHOD = f"/{SERVICE}/Echo"
MAX_CALLS = 10_000_000  # a bound on one timing loop, whatever the duration


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def serve(port: int, max_seconds: float) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
            ),
        )
    )
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(TimeoutError):  # --max-seconds passed: stop by itself
        await asyncio.wait_for(stop.wait(), timeout=max_seconds)
    await server.stop(grace=0.5)


async def time_echo(
    address: str,
    duration: float,
    warmup: float = 0.5,
    payload: bytes = b"x" * 100,
    ready_timeout: float = 10.0,
) -> list[float]:
    """Seconds per call of unary echoes sent one at a time for `duration` seconds after
    `warmup` seconds not recorded (connection set-up, first-call costs)."""
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=ready_timeout)
        call = channel.unary_unary(METHOD)  # no serializers: the payload goes as it is
        latencies: list[float] = []
        began = time.perf_counter()
        record_from, stop_at = began + warmup, began + warmup + duration
        for _ in range(MAX_CALLS):
            sent = time.perf_counter()
            if sent >= stop_at:
                break
            answer = await call(payload, timeout=5.0)
            if answer != payload:
                raise RuntimeError("the echo server answered with other bytes than it was sent")
            if sent >= record_from:
                latencies.append(time.perf_counter() - sent)
        return latencies


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvstore.bench.wire.echo")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.max_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
