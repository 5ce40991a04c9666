"""chaos_fs, the power-loss nemesis's disk: a write is read back at once, survives a power loss
(SIGKILL of chaos_fs) only once its file was synced, and a clean unmount writes everything.
Needs root, in a mount namespace of its own (tests/in_netns.sh)."""

import os
import pathlib
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("HAMQ_BIN_DIR", REPO / "build" / "bin"))


class Disk:
    def __init__(self, root):
        self.backing = root / "backing"
        self.mount = root / "mount"
        self.backing.mkdir()
        self.mount.mkdir()
        self.process = None

    def start(self):
        self.process = subprocess.Popen([str(BIN_DIR / "chaos_fs"), str(self.backing),
                                         str(self.mount)])
        deadline = time.monotonic() + 10
        while not os.path.ismount(self.mount):
            assert self.process.poll() is None, "chaos_fs exited: %s" % self.process.returncode
            assert time.monotonic() < deadline, "chaos_fs did not mount in 10 s"
            time.sleep(0.02)

    def power_loss(self):
        self.process.kill()
        self.process.wait()
        subprocess.run(["umount", "-l", str(self.mount)], check=True)

    def unmount(self):
        subprocess.run(["umount", str(self.mount)], check=True)
        assert self.process.wait(10) == 0


@pytest.fixture
def disk(tmp_path):
    if os.environ.get("HAMQ_NETNS") != "1":
        pytest.fail("run in a namespace of its own: tests/in_netns.sh /usr/bin/python3 -m pytest ...")
    disk = Disk(tmp_path)
    disk.start()
    yield disk
    if disk.process.poll() is None:
        disk.power_loss()


def write(path, data, offset=0, sync=False, create=True):
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    try:
        os.pwrite(fd, data, offset)
        if sync:
            os.fdatasync(fd)
    finally:
        os.close(fd)


def test_a_power_loss_keeps_what_was_synced_and_drops_the_rest(disk):
    log = disk.mount / "log"
    write(log, b"synced.", sync=True)
    write(log, b"unsynced", offset=7)
    assert log.read_bytes() == b"synced.unsynced"
    assert log.stat().st_size == 15
    assert (disk.backing / "log").read_bytes() == b"synced."
    disk.power_loss()
    disk.start()
    assert log.read_bytes() == b"synced."


def test_a_sync_through_another_descriptor_or_name_writes_the_file(disk):
    write(disk.mount / "a.tmp", b"contents")
    os.rename(disk.mount / "a.tmp", disk.mount / "a")
    fd = os.open(disk.mount / "a", os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    write(disk.mount / "b", b"never synced")
    disk.power_loss()
    disk.start()
    assert (disk.mount / "a").read_bytes() == b"contents"
    assert (disk.mount / "b").read_bytes() == b""  # its name survives, not its data


def test_an_unsynced_truncate_is_undone_by_a_power_loss(disk):
    log = disk.mount / "log"
    write(log, b"0123456789", sync=True)
    os.truncate(log, 4)
    write(log, b"xy", offset=6, create=False)
    assert log.read_bytes() == b"0123\0\0xy"
    disk.power_loss()
    disk.start()
    assert log.read_bytes() == b"0123456789"
    os.truncate(log, 4)
    fd = os.open(log, os.O_RDWR)
    os.fdatasync(fd)
    os.close(fd)
    disk.power_loss()
    disk.start()
    assert log.read_bytes() == b"0123"


def test_a_removed_file_takes_its_unsynced_writes_with_it(disk):
    write(disk.mount / "gone", b"unsynced")
    os.unlink(disk.mount / "gone")
    write(disk.mount / "gone", b"new", sync=True)
    assert (disk.mount / "gone").read_bytes() == b"new"
    disk.power_loss()
    disk.start()
    assert (disk.mount / "gone").read_bytes() == b"new"


def test_a_clean_unmount_writes_everything(disk):
    write(disk.mount / "log", b"unsynced at the unmount")
    disk.unmount()
    assert (disk.backing / "log").read_bytes() == b"unsynced at the unmount"


def test_a_write_that_the_disk_has_no_room_for_fails_at_once(tmp_path):
    if os.environ.get("HAMQ_NETNS") != "1":
        pytest.fail("run in a namespace of its own: tests/in_netns.sh /usr/bin/python3 -m pytest ...")
    disk = Disk(tmp_path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk.backing)],
                   check=True)
    disk.start()
    try:
        fd = os.open(disk.mount / "big", os.O_RDWR | os.O_CREAT, 0o644)
        chunk = b"x" * 65536
        written = 0
        with pytest.raises(OSError) as full:
            while written < (4 << 20):
                written += os.pwrite(fd, chunk, written)
        assert full.value.errno == 28  # ENOSPC
        assert 0 < written <= 1 << 20
        os.close(fd)
    finally:
        disk.power_loss()
        subprocess.run(["umount", str(disk.backing)], check=True)
