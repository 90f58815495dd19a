"""kvchaos: break a cluster on purpose and prove nothing acknowledged was lost.

Backends run the nodes (local processes, docker containers), nemeses break them, workloads
record a history of every operation, and checkers judge the history against what the
replicas hold after the cluster healed. `kvchaos run ...` (kvstore.chaos.cli) ties them up.
"""

from kvstore.chaos.backend import Backend, ChaosError, Unsupported
from kvstore.chaos.checker import ReplicaState, Verdict, Violation, check
from kvstore.chaos.history import History, Op
from kvstore.chaos.nemesis import NEMESES, make_nemeses
from kvstore.chaos.runner import Scenario, run
from kvstore.chaos.workloads import WORKLOADS, make_workloads

__all__ = [
    "NEMESES",
    "WORKLOADS",
    "Backend",
    "ChaosError",
    "History",
    "Op",
    "ReplicaState",
    "Scenario",
    "Unsupported",
    "Verdict",
    "Violation",
    "check",
    "make_nemeses",
    "make_workloads",
    "run",
]
