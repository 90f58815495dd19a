"""Installing a Debian package that the benchmarks compare against (redis-server,
etcd-server) when its program is missing: `make test` runs those tiers on a fresh machine
rather than skipping them, so they cannot report green without having run."""

from __future__ import annotations

import os
import shutil
import subprocess

# apt-get update and install each get this long: a hung mirror fails the run, never hangs it.
APT_TIMEOUT_S = 600.0


class PackageUnavailable(RuntimeError):
    """The program is missing and its package could not be installed."""


def ensure_program(program: str, package: str) -> str:
    """The path of `program`, installing Debian's `package` first when it is missing and
    this process may (root, or sudo without a password)."""
    found = shutil.which(program)
    if found:
        return found
    if not shutil.which("apt-get"):
        raise PackageUnavailable(
            f"{program} is not installed and there is no apt-get to install it"
        )
    sudo: list[str] = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        try:
            done = subprocess.run(
                [*sudo, *command], env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise PackageUnavailable(
                f"{program} is missing and `{' '.join(command)}` took over {APT_TIMEOUT_S:.0f} s"
            ) from None
        if done.returncode != 0:
            raise PackageUnavailable(
                f"{program} is missing and `{' '.join(command)}` failed; install it by hand"
                f" (apt-get install {package}):\n{done.stderr[-2000:]}"
            )
    found = shutil.which(program)
    if not found:
        raise PackageUnavailable(f"installed {package} but {program} is not on PATH")
    return found
