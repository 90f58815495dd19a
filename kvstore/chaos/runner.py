"""One chaos run: workload threads under a nemesis schedule, then heal, settle, and judge.

    lead_s      workload alone (a baseline before the first fault)
    fault_s     a nemesis's fault holds this long, then it is healed
    calm_s      a pause with nothing broken before the next nemesis takes its turn
    ...         until duration_s; then everything is healed, the workload stops, and the
                run waits (at most converge_timeout_s) for every written key's primaries to
                hold identical versions before the checker reads them.

Every loop is bounded by time and count; the report names what happened when.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from kvstore.chaos.backend import Backend, ChaosError
from kvstore.chaos.checker import FinalStates, ReplicaState, Violation, check
from kvstore.chaos.history import History
from kvstore.chaos.nemesis import make_nemeses
from kvstore.chaos.workloads import Process, make_workloads, run_process
from kvstore.client import Client
from kvstore.errors import KvError
from kvstore.storage.codec import decode_context, describe_clock

READ_THREADS = 8


@dataclass(frozen=True)
class Scenario:
    nemesis: str = "isolate"
    workload: str = "unique"
    duration_s: float = 30.0
    fault_s: float = 10.0
    calm_s: float = 5.0
    lead_s: float = 2.0
    processes: int = 10
    rate_per_s: float = 10.0  # per process
    client_timeout_s: float = 2.0
    converge_timeout_s: float = 120.0
    seed: int = 0
    max_ops_per_process: int = 1_000_000

    def check(self) -> None:
        for name in ("duration_s", "fault_s", "rate_per_s", "client_timeout_s"):
            if not getattr(self, name) > 0:
                raise ChaosError(f"{name} must be positive")
        for name in ("calm_s", "lead_s", "converge_timeout_s"):
            if getattr(self, name) < 0:
                raise ChaosError(f"{name} must not be negative")
        if not 1 <= self.processes <= 256:
            raise ChaosError("processes must be in 1..256")
        if self.duration_s > 24 * 3600:
            raise ChaosError("duration_s is at most a day")


class _Timeline:
    def __init__(self, history: History) -> None:
        self._history = history
        self.events: list[dict[str, Any]] = []

    def add(self, what: str) -> None:
        self.events.append({"at_s": round(self._history.now(), 3), "event": what})


def run(backend: Backend, scenario: Scenario, keep_history: bool = False) -> dict[str, Any]:
    """Run the scenario against the backend's cluster; returns the report (see module doc),
    with every operation under "ops" if `keep_history`."""
    scenario.check()
    nemeses = make_nemeses(scenario.nemesis)
    workloads = make_workloads(scenario.workload)
    began = time.monotonic()
    rng = random.Random(scenario.seed)
    backend.wait_serving()
    history = History()
    timeline = _Timeline(history)
    run_id = uuid.uuid4().hex[:8]
    timeline.add(f"run {run_id}: keys and values start with {run_id}-")
    stop = threading.Event()
    processes = []
    for p in range(scenario.processes):
        node = backend.nodes[p % len(backend.nodes)]
        client = Client(
            [backend.client_reachable(node)],
            timeout=scenario.client_timeout_s,
            **backend.client_options(),
        )
        processes.append(Process(p, node, client, history, random.Random(rng.random()), run_id))
    threads = [
        threading.Thread(
            target=run_process,
            args=(
                workloads[p.process % len(workloads)],
                p,
                stop,
                scenario.rate_per_s,
                scenario.max_ops_per_process,
            ),
            name=f"kvchaos-process-{p.process}",
            daemon=True,
        )
        for p in processes
    ]
    harness_errors: list[str] = []
    try:
        for thread in threads:
            thread.start()
        try:
            _nemesis_schedule(backend, scenario, nemeses, rng, stop, timeline)
        finally:
            for nemesis in nemeses:
                try:
                    timeline.add(nemesis.heal(backend))
                except Exception as exc:
                    harness_errors.append(f"heal of {nemesis.name} failed: {exc}")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=scenario.client_timeout_s * 4 + 5)
        harness_errors += [f"{t.name} did not stop" for t in threads if t.is_alive()]
        harness_errors += [f"process {p.process}: {p.failure}" for p in processes if p.failure]
        for process in processes:
            process.client.close()
    timeline.add("workload stopped")
    for node in backend.nodes:
        if not backend.running(node):
            backend.start(node)
    backend.wait_serving()
    healed_at = time.monotonic()
    timeline.add("every node serving")
    final, converge_s = settle(backend, history, scenario.converge_timeout_s)
    timeline.add(
        f"converged after {converge_s:.1f} s" if converge_s is not None else "did not converge"
    )
    verdict = check(history, final)
    verdict.violations += [Violation("harness-error", "", e) for e in harness_errors]
    if not any(op.kind == "write" and op.outcome == "ok" for op in history):
        verdict.violations.append(
            Violation("inconclusive", "", "no write was acknowledged: nothing was tested")
        )
    summary = history.summary()
    writes = summary["write_ok"] + summary["write_fail"] + summary["write_unknown"]
    verdict.figures.update(
        ops=summary["ops"],
        writes_attempted=writes,
        unknown_writes=summary["write_unknown"],
        write_availability=round(summary["write_ok"] / writes, 4) if writes else 0.0,
        converge_s=None if converge_s is None else round(converge_s, 2),
        converge_timeout_s=scenario.converge_timeout_s,
        settle_wait_s=round(time.monotonic() - healed_at, 2),
    )
    return {
        "backend": backend.name,
        "nodes": list(backend.nodes),
        "scenario": asdict(scenario),
        "timeline": timeline.events,
        "history": summary,
        **verdict.to_json(),
        "run_time_s": round(time.monotonic() - began, 1),
        **({"ops": history.to_json()} if keep_history else {}),
    }


def _nemesis_schedule(
    backend: Backend,
    scenario: Scenario,
    nemeses: list[Any],
    rng: random.Random,
    stop: threading.Event,
    timeline: _Timeline,
) -> None:
    start = time.monotonic()
    end = start + scenario.duration_s
    stop.wait(scenario.lead_s)
    max_cycles = int(scenario.duration_s / scenario.fault_s) + 1
    for cycle in range(max_cycles):
        nemesis = nemeses[cycle % len(nemeses)]
        timeline.add(nemesis.inject(backend, cycle, rng))
        stop.wait(max(0.0, min(scenario.fault_s, end - time.monotonic())))
        timeline.add(nemesis.heal(backend))
        if time.monotonic() + scenario.calm_s >= end:
            break
        stop.wait(scenario.calm_s)
    stop.wait(max(0.0, end - time.monotonic()))


def settle(
    backend: Backend, history: History, timeout_s: float
) -> tuple[FinalStates, float | None]:
    """Poll every written key's primaries until each key's copies agree (or `timeout_s`).
    Returns the last states read and how long agreement took (None if it never came)."""
    keys = sorted({op.key for op in history if op.kind == "write"})
    start = time.monotonic()
    addresses = [backend.reachable(n) for n in backend.nodes]
    with (
        Client(addresses, timeout=5.0, **backend.client_options()) as kv,
        ThreadPoolExecutor(READ_THREADS) as pool,
    ):
        primaries = dict(
            zip(keys, pool.map(lambda k: _primaries(kv, addresses, k), keys), strict=True)
        )
        final: dict[str, dict[str, ReplicaState | None]] = {}
        pending = keys
        while True:
            # Where each node answers, read once per round (a Docker API call per node).
            reach = {node: backend.reachable(node) for node in backend.nodes}
            states = list(
                pool.map(lambda k, r=reach: _read_replicas(kv, r, k, primaries[k]), pending)
            )
            for key, replicas in zip(pending, states, strict=True):
                final[key] = replicas
            pending = [key for key in pending if not _agree(final[key])]
            elapsed = time.monotonic() - start
            # Agreement counts once no hint or handoff is still on its way too: a wiped
            # primary agrees with the others before a fallback's hint brings a write back.
            if not pending and not _work_in_flight(kv, addresses):
                return final, elapsed
            if elapsed > timeout_s:
                return final, None
            time.sleep(0.5)


def _work_in_flight(kv: Client, addresses: list[str]) -> bool:
    try:
        statuses = [kv.status(address) for address in addresses]
    except KvError:
        return True
    return any(st.hints_pending or st.handoffs_pending or st.ring_pending for st in statuses)


def _primaries(kv: Client, addresses: list[str], key: str) -> list[str]:
    errors = []
    for address in addresses:
        try:
            return list(kv.locate(address, key).primaries)
        except KvError as exc:
            errors.append(str(exc))
    raise ChaosError(f"no node could locate {key!r}: {errors}")


def _read_replicas(
    kv: Client, reach: dict[str, str], key: str, primaries: list[str]
) -> dict[str, ReplicaState | None]:
    states: dict[str, ReplicaState | None] = {}
    for node in primaries:
        try:
            result = kv.local_get(reach.get(node, node), key)
            states[node] = ReplicaState(
                tuple(sorted(v.decode() for v in result.values)),
                describe_clock(decode_context(result.context, key.encode())),
            )
        except KvError:
            states[node] = None
    return states


def _agree(replicas: dict[str, ReplicaState | None]) -> bool:
    states = list(replicas.values())
    first = states[0]
    return first is not None and all(s is not None and s.same_as(first) for s in states)
