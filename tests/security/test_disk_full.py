"""A node whose disk fills up, on a real (small) filesystem: writes are refused with the
typed StorageFull, health says NOT_SERVING and the Status counters say so; reads go on;
once space returns the same process (no restart) takes writes again and reports SERVING;
every write acknowledged before, during and after the fault is still there.

The node's data directory is an 8 MiB tmpfs. As root it is mounted here; without the
privilege, the node runs in a user + mount namespace of its own (`unshare -rm`) that mounts
it, and the test reaches that filesystem through /proc/<node pid>/root. Neither possible:
the test fails and says why (it never passes by skipping).
KVSTORE_TEST_SMALL_FS=mount|unshare picks one way (to test the other on a root machine).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvstore import Client
from kvstore.errors import StorageFull
from kvstore.node.local_cluster import LocalCluster, LocalNode, free_ports

pytestmark = [pytest.mark.integration, pytest.mark.security]

DISK = "size=8m"
BALLAST = "ballast"
# The unshare way: the namespace's root mounts the tmpfs on the data directory, then becomes
# the node (same pid, so the cluster signals the node itself).
_MOUNT_THEN_RUN = 'mount -t tmpfs -o "$0" tmpfs "$1" && shift && exec "$@"'


def _can_mount_here() -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory() as probe:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", probe], capture_output=True
        )
        if mounted.returncode != 0:
            return False
        subprocess.run(["umount", probe], check=True, timeout=30)
    return True


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
        capture_output=True,
        timeout=30,
    )
    return probe.returncode == 0


def small_fs_mode() -> str:
    forced = os.environ.get("KVSTORE_TEST_SMALL_FS", "")
    if forced:
        if forced not in ("mount", "unshare"):
            pytest.fail(f"KVSTORE_TEST_SMALL_FS={forced!r}: expected mount or unshare")
        return forced
    if _can_mount_here():
        return "mount"
    if _can_unshare():
        return "unshare"
    pytest.fail(
        "cannot make a small filesystem to fill: not root (mount -t tmpfs refused) and no"
        " user namespaces (unshare -rm refused; see kernel.unprivileged_userns_clone or"
        " kernel.apparmor_restrict_unprivileged_userns). Run as root or allow them."
    )


class SmallDiskCluster(LocalCluster):
    """One node (N=R=W=1) whose data directory is an 8 MiB tmpfs."""

    def __init__(self, data_dir: Path, mode: str) -> None:
        super().__init__(
            1, data_dir, ports=free_ports(1), extra_args=("--n", "1", "--r", "1", "--w", "1")
        )
        self.mode = mode
        self.node = self.nodes[0]
        self.node.data_dir.mkdir(parents=True)
        self.mounted = False
        if mode == "mount":
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", DISK, "tmpfs", str(self.node.data_dir)],
                check=True,
                timeout=30,
            )
            self.mounted = True

    def command(self, node: LocalNode) -> list[str]:
        command = super().command(node)
        if self.mode == "unshare":
            unshare = ["unshare", "-rm", "sh", "-c", _MOUNT_THEN_RUN, DISK, str(node.data_dir)]
            return [*unshare, *command]
        return command

    @property
    def disk(self) -> Path:
        """The node's data directory, as this process reaches it."""
        if self.mode == "mount":
            return self.node.data_dir
        assert self.node.pid is not None
        return Path(f"/proc/{self.node.pid}/root") / self.node.data_dir.relative_to("/")

    def unmount(self) -> None:
        if self.mounted:
            done = subprocess.run(["umount", str(self.node.data_dir)], timeout=30)
            if done.returncode != 0:  # still busy: detach it, the kernel frees it when idle
                subprocess.run(["umount", "-l", str(self.node.data_dir)], timeout=30)
            self.mounted = False


@pytest.fixture
def small_disk_node(tmp_path: Path) -> Iterator[SmallDiskCluster]:
    mode = small_fs_mode()
    cluster = SmallDiskCluster(tmp_path / "cluster", mode)
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            cluster.unmount()


def fill(directory: Path) -> int:
    """Write the ballast file until the filesystem refuses (ENOSPC); its size."""
    written = 0
    fd = os.open(directory / BALLAST, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        # Bounded: 64 KiB chunks, then 4 KiB ones for the tail, far more than 8 MiB in all.
        for chunk in (bytes(1 << 16), bytes(1 << 12)):
            for _ in range(1024):
                try:
                    written += os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
            else:
                pytest.fail(f"the small disk never filled ({written} bytes written)")
    finally:
        os.close(fd)
    return written


def wait_for(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def test_full_disk_refuses_writes_reports_it_and_recovers_without_restart(
    small_disk_node: SmallDiskCluster,
) -> None:
    cluster = small_disk_node
    address = cluster.addresses[0]
    pid = cluster.node.pid
    acknowledged: dict[str, bytes] = {}
    with Client(cluster.seeds, timeout=5.0) as kv:
        wait_for("health SERVING at start", lambda: kv.health(address) == "SERVING")
        assert kv.status(address).counters["storage_fault"] == 0
        for i in range(100):
            key, value = f"before-{i}", os.urandom(512)
            kv.put(key, value)
            acknowledged[key] = value

        assert fill(cluster.disk) > 0
        # What RocksDB still had room for (a partly filled page) takes a few more writes.
        refused: StorageFull | None = None
        for i in range(4000):  # bounded: 4000 x 4 KiB is twice the disk
            key, value = f"filling-{i}", os.urandom(4096)
            try:
                kv.put(key, value)
            except StorageFull as exc:
                refused = exc
                break
            acknowledged[key] = value
        assert refused is not None, "no write was refused on a full disk"
        assert "disk is full: writes refused until space returns" in str(refused)
        with pytest.raises(StorageFull):
            kv.put("during-the-fault", b"refused")

        wait_for("health NOT_SERVING", lambda: kv.health(address) == "NOT_SERVING", 5.0)
        counters = kv.status(address).counters
        assert counters["storage_fault"] == 1 and counters["storage_faults"] == 1
        # Reads go on while the disk is full.
        for key, value in acknowledged.items():
            assert kv.get(key).values == [value], key
        assert not kv.get("during-the-fault").found

        (cluster.disk / BALLAST).unlink()

        def writable() -> bool:
            try:
                kv.put("after-the-fault", b"taken")
            except StorageFull:
                return False
            return True

        wait_for("writes taken again once space returned", writable)
        acknowledged["after-the-fault"] = b"taken"
        wait_for("health SERVING again", lambda: kv.health(address) == "SERVING", 5.0)
        counters = kv.status(address).counters
        assert counters["storage_fault"] == 0
        assert counters["storage_faults"] == 1 and counters["storage_resumes"] == 1
        for i in range(20):
            key, value = f"after-{i}", os.urandom(512)
            kv.put(key, value)
            acknowledged[key] = value

        # Nothing acknowledged was lost: before, while filling, after.
        for key, value in acknowledged.items():
            assert kv.get(key).values == [value], key
        assert not kv.get("during-the-fault").found

    # The same process all along: it recovered by itself.
    assert cluster.node.running and cluster.node.pid == pid
    log = cluster.node.log_path.read_text(errors="replace")
    assert log.count("storage fault, writes refused") == 1, cluster.log_tail(0)
    assert log.count("storage fault over") == 1, cluster.log_tail(0)
