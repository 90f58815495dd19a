"""`kvchaos run`: one chaos scenario against a local or docker cluster, a verdict, a report.

    kvchaos run --backend local --nodes 5 --nemesis isolate --workload unique,hot \
        --duration 40 --fault 20 --report report.json
    kvchaos run --backend docker --project kvstore --nemesis split,kill --duration 60

Exit status: 0 when every check passed, 1 on any violation, 2 when the run itself could not
be made (a bad argument, a backend that cannot inject the fault, a cluster that won't start).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kvstore import __version__
from kvstore.chaos.backend import Backend, ChaosError
from kvstore.chaos.nemesis import NEMESES
from kvstore.chaos.runner import Scenario, run
from kvstore.chaos.workloads import WORKLOADS
from kvstore.errors import KvError
from kvstore.extras import missing_extra


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvchaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run one scenario and judge it")
    p.add_argument("--backend", choices=("local", "docker"), default="local")
    p.add_argument("--nodes", type=int, default=5, help="local: how many node processes")
    p.add_argument("--data-dir", help="local: where the nodes keep data (default: a temp dir)")
    p.add_argument("--node-arg", action="append", default=[],
                   help="local: an extra `kvstore serve` argument (repeat it)")  # fmt: skip
    p.add_argument("--project", default="kvstore", help="docker: the compose project name")
    p.add_argument("--nemesis", default="isolate", help=f"comma-separated: {', '.join(NEMESES)}")
    p.add_argument("--workload", default="unique", help=f"comma-separated: {', '.join(WORKLOADS)}")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of workload")
    p.add_argument("--fault", type=float, default=10.0, help="seconds each fault holds")
    p.add_argument("--calm", type=float, default=5.0, help="seconds between faults")
    p.add_argument("--lead", type=float, default=2.0, help="seconds before the first fault")
    p.add_argument("--processes", type=int, default=10, help="client threads")
    p.add_argument("--rate", type=float, default=10.0, help="operations/s per process")
    p.add_argument("--client-timeout", type=float, default=2.0, help="seconds per request")
    p.add_argument("--converge-timeout", type=float, default=120.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", help="write the JSON report here")
    p.add_argument("--with-history", action="store_true", help="put every operation in it")
    return parser


def make_backend(args: argparse.Namespace, data_dir: str) -> Backend:
    if args.backend == "local":
        from kvstore.chaos.local import LocalBackend

        return LocalBackend(args.nodes, data_dir, node_args=tuple(args.node_arg))
    from kvstore.chaos.docker import DockerBackend

    return DockerBackend(args.project)


def print_verdict(report: dict[str, Any]) -> None:
    figures = report["figures"]
    verdict = "PASS" if report["valid"] else "FAIL"
    print(f"{verdict}: {report['scenario']['nemesis']} / {report['scenario']['workload']}"
          f" on {report['backend']} ({len(report['nodes'])} nodes)")  # fmt: skip
    print(f"  ops {figures['ops']}, writes acknowledged {figures['acknowledged_writes']}"
          f" of {figures['writes_attempted']} ({figures['write_availability']:.1%}),"
          f" unknown {figures['unknown_writes']}, lost {figures['lost_writes']}")  # fmt: skip
    converge = figures["converge_s"]
    print(f"  converged: {'no' if converge is None else f'{converge} s after heal'};"
          f" keys diverged {figures['keys_diverged']}, most siblings {figures['most_siblings']},"
          f" stale reads {figures['stale_reads']}/{figures['reads_after_own_write']}")  # fmt: skip
    for event in report["timeline"]:
        print(f"  {event['at_s']:8.2f} s  {event['event']}")
    for violation in report["violations"][:20]:
        print(f"  VIOLATION {violation['rule']} {violation['key']}: {violation['detail']}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The local backend runs node processes from this environment.
    if args.backend == "local" and (problem := missing_extra("server")):
        print(f"kvchaos --backend local: {problem}", file=sys.stderr)
        return 2
    scenario = Scenario(
        nemesis=args.nemesis,
        workload=args.workload,
        duration_s=args.duration,
        fault_s=args.fault,
        calm_s=args.calm,
        lead_s=args.lead,
        processes=args.processes,
        rate_per_s=args.rate,
        client_timeout_s=args.client_timeout,
        converge_timeout_s=args.converge_timeout,
        seed=args.seed,
    )
    try:
        scenario.check()
        with tempfile.TemporaryDirectory(prefix="kvchaos-") as scratch:
            backend = make_backend(args, args.data_dir or scratch)
            try:
                report = run(backend, scenario, keep_history=args.with_history)
            finally:
                backend.close()
    except (ChaosError, KvError, OSError) as exc:
        print(f"kvchaos: {exc}", file=sys.stderr)
        return 2
    print_verdict(report)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
        print(f"  report: {args.report}")
    return 0 if report["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
