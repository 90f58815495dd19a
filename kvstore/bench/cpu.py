"""CPU time used by processes during a measured phase, so a figure can say what each
operation cost the client and each server, not only how fast it went."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

CLIENT = "client"
_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc), threads included."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces; fields after its ')' are fixed.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class CpuProbe:
    """Samples this process's CPU (as "client") and that of named server processes."""

    def __init__(self, servers: Mapping[str, int] | None = None) -> None:
        self.servers = dict(servers or {})
        if CLIENT in self.servers:
            raise ValueError(f"{CLIENT!r} names this process; give servers other names")

    def sample(self) -> dict[str, float]:
        seconds = {CLIENT: time.process_time()}
        for name, pid in self.servers.items():
            try:
                seconds[name] = process_cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                seconds[name] = float("nan")  # it exited: its figure is unknown, not zero
        return seconds

    @staticmethod
    def used(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
        return {name: after[name] - before[name] for name in before if name in after}


def parse_server_pids(specs: list[str]) -> dict[str, int]:
    """`--server-pid NAME=PID` (or a bare PID, named pid-PID) into {name: pid}."""
    servers: dict[str, int] = {}
    for spec in specs:
        name, _, pid = spec.rpartition("=")
        if not pid.isdigit() or int(pid) < 1:
            raise ValueError(f"--server-pid wants NAME=PID or PID, got {spec!r}")
        name = name or f"pid-{pid}"
        if name in servers or name == CLIENT:
            raise ValueError(f"--server-pid name {name!r} is used twice or reserved")
        servers[name] = int(pid)
    return servers
