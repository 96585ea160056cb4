"""Seeding failures through the runner on the lab: no key is accepted, nothing is left.

Each fault fails before (or instead of) booting the libguestfs appliance, so these are quick.
"""

import json
import os
import subprocess
import uuid

import pytest

LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
MASTER_PKI = os.path.join(LAB_DIR, "master", "etc", "salt", "pki", "master")


def accepted_keys(lab):
    out = lab.run("salt-key", "-L", "--out=json").stdout
    return json.loads(out)


def assert_nothing_left(lab, vm):
    keys = accepted_keys(lab)
    for state, names in keys.items():
        assert vm not in names, f"key of {vm} left in {state}"
    for hyper in ("hypervisor1", "hypervisor2"):
        assert vm not in lab.domains(hyper)
        vm_dir = os.path.join(LAB_DIR, f"hv{hyper[-1]}", "salt-images", vm)
        assert not os.path.exists(vm_dir) or os.listdir(vm_dir) == [], os.listdir(vm_dir)
    left = lab.hv("hypervisor1", "sh", "-c", "grep -c /dev/fuse /proc/mounts || true").stdout.strip()
    assert left == "0", "a FUSE mount is left on hypervisor1"


@pytest.fixture
def unformatted_disk():
    """A partitioned raw disk whose partition has no filesystem, in hypervisor1's image
    directory (/var/lib/libvirt/images there, one of its image roots)."""
    name = f"svlab-unformatted-{uuid.uuid4().hex[:6]}.img"
    path = os.path.join(LAB_DIR, "hv1", "var-lib-libvirt", "images", name)
    with open(path, "wb") as fh:
        fh.truncate(8 * 1024 * 1024)
    subprocess.run(["sfdisk", "--quiet", path], input="label: dos\nstart=2048, type=83\n", text=True, check=True)
    yield f"/var/lib/libvirt/images/{name}"
    os.unlink(path)


def test_seeding_command_failing_removes_key(lab, vm):
    proc, ret = lab.run_json("virt.init", vm, 1, 128, "salt://centos.qcow2", "host=hypervisor1",
                             "seed_cmd=test.arg", check=False)
    assert proc.returncode != 0
    text = json.dumps(ret)
    assert "seeding" in text and "test.arg" in text and "PRIVATE KEY" not in text
    assert_nothing_left(lab, vm)


def test_no_filesystem_removes_key(lab, vm, unformatted_disk):
    proc, ret = lab.run_json("virt.init", vm, 1, 128, unformatted_disk, "host=hypervisor1",
                             "seed_cmd=seed.apply", check=False)
    assert proc.returncode != 0
    assert "no recognisable filesystem" in json.dumps(ret)
    assert_nothing_left(lab, vm)


def test_master_key_dir_not_writable(lab, vm):
    """The master cannot accept the key: the VM the hypervisor made is removed again."""
    minions = os.path.join(MASTER_PKI, "minions")
    subprocess.run(["chattr", "+i", minions], check=True)
    try:
        proc = lab.run("salt-run", "virt.init", vm, 1, 128, "salt://centos.qcow2", check=False)
    finally:
        subprocess.run(["chattr", "-i", minions], check=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert f"cannot accept the key of {vm}" in output and "is not writable" in output, output
    assert "Traceback" not in output
    assert_nothing_left(lab, vm)
