"""The per-request data-model work, the pure-Python reference against kvstore._native.

    .venv/bin/python bench/native_versions.py [--repeat 7] [--min-time 0.1]

Times each operation a request runs on a key's state, in microseconds per call, with the
reference (kvstore.core.versions_reference, and the protobuf path of kvstore.storage.codec)
and with the native code kvstore uses, on two shapes of state:

- typical: 3 actors, 1 or 2 siblings of 100-byte values (a key written through its three
  primaries, sometimes concurrently);
- big: 50 actors, 32 siblings (the default max_siblings) of 100-byte values and 8 holes.

"put path" is the whole of a put's data-model work on three replicas: the coordinator
decodes its record, writes and encodes; each of two replicas decodes the shipped record
and its own, merges and encodes; the client's context is decoded and the put's context
made and encoded.

The reference runs on the same classes (cdef classes now): the pure-Python functions on
the dataclasses they replaced were slower still. Ratios are what to read: both columns are
measured in one run, taking turns, on one core; each figure is the best of the rounds.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvstore.core import versions as native
from kvstore.core import versions_reference as reference
from kvstore.core.ring import routed
from kvstore.core.versions import Clock, Dot, KeyState, Sibling
from kvstore.storage import codec

KEY = routed(b"user:4711")
VALUE = bytes(range(100))


@dataclass(frozen=True)
class Shape:
    name: str
    stored: KeyState  # the coordinator's record, before the put
    replica: KeyState  # a replica's record (one write behind)
    context: Clock  # what the client sends: the clock of its last read
    actor: str  # the coordinator's actor id


def actor(i: int) -> str:
    return f"10.0.0.{i}:7101/1700000000"


def typical(siblings: int) -> Shape:
    a, b, c = actor(1), actor(2), actor(3)
    clock = native.make_clock({a: 41, b: 37, c: 29 + siblings})
    dots = [Dot(c, 29 + n) for n in range(1, siblings + 1)]
    stored = native.canonical_state(clock, [Sibling(d, VALUE, 1_700_000_000_000) for d in dots])
    replica = native.canonical_state(
        native.make_clock({a: 41, b: 37, c: 29}), [Sibling(Dot(c, 29), VALUE, 1_699_999_999_000)]
    )
    read = native.make_clock({a: 41, b: 37, c: 29 + siblings})
    return Shape(f"typical, {siblings} sibling{'s' * (siblings > 1)}", stored, replica, read, a)


def big() -> Shape:
    actors = [actor(i) for i in range(50)]
    vector = {x: 1000 + 7 * i for i, x in enumerate(actors)}
    holes = [Dot(actors[i], 500 + i) for i in range(8)]
    clock = native.make_clock(vector, holes)
    dots = [Dot(actors[i], vector[actors[i]]) for i in range(32)]
    stored = native.canonical_state(clock, [Sibling(d, VALUE, 1_700_000_000_000) for d in dots])
    behind = native.make_clock({x: c - 1 for x, c in vector.items()}, holes)
    replica = native.canonical_state(
        behind, [Sibling(Dot(d.actor, d.counter - 1), VALUE, 1) for d in dots[:24]]
    )
    # A read that saw 28 of the 32 siblings (the last 4 arrived after it).
    read = native.without(clock, dots[28:])
    return Shape("big: 50 actors, 32 siblings, holes", stored, replica, read, actors[0])


def put_path(versions: Any, encode: Any, decode: Any, ctx_encode: Any, ctx_decode: Any) -> Any:
    def run(shape: Shape, stored: bytes, replica: bytes, sent: bytes) -> None:
        context = ctx_decode(sent, KEY)
        new, dot = versions.write(decode(stored), context, shape.actor, VALUE, 1_700_000_000_005)
        shipped = encode(new)
        ctx_encode(versions.put_context(new, dot), KEY)
        for _ in range(2):
            encode(versions.merge(decode(replica), decode(shipped)))

    return run


def operations(shape: Shape) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    stored_bytes = codec.encode_record(shape.stored)
    replica_bytes = codec.encode_record(shape.replica)
    sent = codec.encode_context(shape.context, KEY)
    written, dot = native.write(shape.stored, shape.context, shape.actor, VALUE, 5)
    merged = native.merge(shape.replica, written)
    ref_put = put_path(
        reference,
        codec.encode_record_reference,
        codec.decode_record_reference,
        codec.encode_context_reference,
        codec.decode_context_reference,
    )
    native_put = put_path(
        native, codec.encode_record, codec.decode_record, codec.encode_context, codec.decode_context
    )
    s, r, c, a = shape.stored, shape.replica, shape.context, shape.actor
    return [
        (
            "decode_record",
            lambda: codec.decode_record_reference(stored_bytes),
            lambda: codec.decode_record(stored_bytes),
        ),
        (
            "encode_record",
            lambda: codec.encode_record_reference(written),
            lambda: codec.encode_record(written),
        ),
        (
            "write",
            lambda: reference.write(s, c, a, VALUE, 5),
            lambda: native.write(s, c, a, VALUE, 5),
        ),
        ("merge", lambda: reference.merge(r, written), lambda: native.merge(r, written)),
        ("is_stale", lambda: reference.is_stale(r, merged), lambda: native.is_stale(r, merged)),
        (
            "put_context",
            lambda: reference.put_context(written, dot),
            lambda: native.put_context(written, dot),
        ),
        (
            "decode_context",
            lambda: codec.decode_context_reference(sent, KEY),
            lambda: codec.decode_context(sent, KEY),
        ),
        (
            "encode_context",
            lambda: codec.encode_context_reference(c, KEY),
            lambda: codec.encode_context(c, KEY),
        ),
        (
            "put path (3 replicas)",
            lambda: ref_put(shape, stored_bytes, replica_bytes, sent),
            lambda: native_put(shape, stored_bytes, replica_bytes, sent),
        ),
    ]


def per_call_us(fns: tuple[Callable[[], object], ...], repeat: int, min_time: float) -> list[float]:
    """Each function's best time per call over `repeat` rounds, each timing enough calls
    to last about `min_time` seconds. The functions take turns within a round, so a
    machine busy with something else slows them alike."""
    timers, numbers = [], []
    for fn in fns:
        timer = timeit.Timer(fn)
        number, elapsed = timer.autorange()
        timers.append(timer)
        numbers.append(max(1, int(number * min_time / elapsed)))
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, timer in enumerate(timers):
            best[i] = min(best[i], timer.timeit(numbers[i]) / numbers[i] * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="rounds; the best counts")
    parser.add_argument("--min-time", type=float, default=0.1, help="seconds per timing")
    args = parser.parse_args()
    shapes = [typical(1), typical(2), big()]
    print(f"{'operation':<24}{'state':<36}{'reference µs':>14}{'native µs':>12}{'speedup':>10}")
    for shape in shapes:
        for name, ref_fn, native_fn in operations(shape):
            # Same answers first: a fast wrong answer is no result.
            if not name.startswith("put path"):
                assert ref_fn() == native_fn(), name
            ref_us, native_us = per_call_us((ref_fn, native_fn), args.repeat, args.min_time)
            print(
                f"{name:<24}{shape.name:<36}{ref_us:>14.2f}{native_us:>12.2f}"
                f"{ref_us / native_us:>9.1f}x"
            )
        print()


if __name__ == "__main__":
    main()
