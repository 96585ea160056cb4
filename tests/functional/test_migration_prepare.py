"""saltvirt.migration.prepare_disks on a target whose disk fills up: all or nothing (real qemu-img)."""

import os
import subprocess

import pytest

from saltvirt import cmd, migration
from saltvirt.errors import VirtError


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs: too small for any disk image."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_disk_full_during_preparation_leaves_nothing(tmp_path, tiny_fs):
    base = tmp_path / "base.qcow2"
    cmd.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"])
    journal = str(tmp_path / "journal.json")
    create = [
        {"kind": "blank", "path": str(tiny_fs / "vm1" / "data.raw"), "virtual_size": 1024 * 1024,
         "format": "raw"},
        {"kind": "overlay", "path": str(tiny_fs / "vm1" / "system.qcow2"), "backing": str(base),
         "virtual_size": 64 * 1024 * 1024},
    ]
    with pytest.raises(VirtError, match="system.qcow2"):
        migration.prepare_disks(create, journal, name="vm1")
    assert os.listdir(tiny_fs) == []  # the raw disk and the directory made for it are gone
    assert not os.path.exists(journal)
