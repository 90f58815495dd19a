"""The server processes a benchmark starts (redis-server, etcd): stopped by their own pids,
politely first, and the small `ensure` command each setup module offers `make`."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Sequence


def terminate(processes: Sequence[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM to each still running, then wait for all; one that outlasts `timeout` is
    killed."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def ensure_command(
    argv: list[str], module: str, ensure: Callable[[], str], failure: type[Exception]
) -> int:
    """`python -m <module> ensure`: print the program's path, installing it if need be."""
    if argv != ["ensure"]:
        print(f"usage: python -m {module} ensure", file=sys.stderr)
        return 2
    try:
        print(ensure())
    except failure as exc:
        print(f"{module.rsplit('.', 1)[-1]}: {exc}", file=sys.stderr)
        return 1
    return 0
