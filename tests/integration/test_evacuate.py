"""Evacuating a dead hypervisor on the lab, and the lock manager that makes a double start
impossible.

hypervisor1 "loses power" (``labctl.py crash``: every process of it, its guests' QEMUs
included, killed at once) and ``virt.evacuate`` restarts its VM on shared storage elsewhere,
from the definition the master kept (refreshed by the reactor on the libvirt_events engine's
events). Afterwards the lab brings hypervisor1 back (``labctl.py up``).
"""

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time

import pytest

from .conftest import Lab
from .test_migration import master_virt_config, wait_beat_above

LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
SHARED = os.path.join(LAB_DIR, "shared-storage")
DEFINITIONS = os.path.join(LAB_DIR, "master", "var", "cache", "salt", "master", "saltvirt", "definitions")
HOSTS = ("hypervisor1", "hypervisor2", "hypervisor3")


def labctl(*args):
    """``labctl.py`` on the lab grown to three hypervisors (``up`` keeps the third)."""
    return Lab(dict(os.environ, LAB_HYPERVISORS="3")).labctl(*args).stdout


def lease_held(path):
    """Whether some virtlockd holds the lease of disk ``path`` (a lock on the file's first byte:
    the formula's leases are locks on the disk files themselves): what stops any other host's
    libvirt from starting it."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the lock if this test got it
    return False


def remembered(host, name):
    with contextlib.suppress(FileNotFoundError, ValueError):
        with open(os.path.join(DEFINITIONS, host, f"{name}.json")) as fh:
            return json.load(fh)
    return None


def wait_remembered(name, host, state, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = remembered(host, name)
        if record and record["state"] == state:
            return record
        time.sleep(0.5)
    raise AssertionError(f"the master's copy of {name} on {host} never said {state}: {remembered(host, name)}")


@pytest.fixture
def crashable(three_hypervisors):
    lab = three_hypervisors
    yield lab
    if not os.path.exists(f"{LAB_DIR}/hv1/holder.pid"):
        labctl("up")  # hypervisor1 back, as the lab had it
    lab.run("salt-run", "virt.uncordon", "hypervisor1", check=False)


def test_a_dead_hypervisors_shared_storage_vm_restarts_elsewhere_and_never_twice(crashable, vm):
    lab = crashable
    local = f"{vm}-local"
    shared_dir = os.path.join(SHARED, vm)
    disk = os.path.join(shared_dir, f"{vm}-system.qcow2")
    os.makedirs(shared_dir, exist_ok=True)
    try:
        lab.run_json("virt.init", vm, "1", "128", "salt://centos.qcow2", "host=hypervisor1", "seed=False",
                     f"disks={json.dumps([{'name': 'system', 'pool': shared_dir}])}")
        lab.run_json("virt.init", local, "1", "128", "/var/lib/libvirt/images/centos.qcow2", "enable_qcow=True",
                     "host=hypervisor1", "seed=False")
        wait_beat_above(lab, "hypervisor1", vm, 1)
        # The reactor on the engine's events keeps the master's copy of both definitions.
        wait_remembered(vm, "hypervisor1", "running")
        wait_remembered(local, "hypervisor1", "running")

        # hypervisor1's virtlockd holds the disk's lease on the shared storage, and hypervisor2
        # cannot start the same disk while it runs there. (On the lab's one kernel QEMU's own image
        # lock answers first; the lease alone is proven by the next test.)
        assert lease_held(disk)
        xml = lab.run("virsh", "hypervisor1", "dumpxml", "--inactive", vm).stdout
        copy = os.path.join(shared_dir, "copy.xml")
        with open(copy, "w") as fh:
            fh.write(xml)
        lab.run("virsh", "hypervisor2", "define", copy)
        try:
            refused = lab.run("virsh", "hypervisor2", "start", vm, check=False)
        finally:
            lab.run("virsh", "hypervisor2", "undefine", vm)
            os.unlink(copy)
        assert refused.returncode != 0 and "lock" in refused.stderr, refused.stderr
        assert lab.run("virsh", "hypervisor1", "domstate", vm).stdout.strip() == "running"

        # A host that answers is not evacuated.
        proc = lab.run("salt-run", "virt.evacuate", "hypervisor1", "fenced=True", check=False)
        assert proc.returncode != 0 and "hypervisor1 answers: it is not dead" in proc.stdout, proc.stdout

        # Every evacuation from here on pings the dead host and waits virt:evacuate_timeout for it
        # (then Salt's job check): 3 s instead of the default 10 for these runs.
        with master_virt_config(evacuate_timeout=3):
            labctl("crash", "hypervisor1")
            assert not lease_held(disk)  # its virtlockd died with it: the lease is free

            # Not without the operator's word that the host is fenced.
            proc = lab.run("salt-run", "virt.evacuate", "hypervisor1", check=False)
            assert proc.returncode != 0 and "confirm with fenced=True" in proc.stdout, proc.stdout
            assert "hypervisor1 did not answer a ping within 3s" in proc.stdout  # the setting above is read
            assert all(vm not in lab.domains(h) for h in ("hypervisor2", "hypervisor3"))

            _p, plan = lab.run_json("virt.evacuate", "hypervisor1", "test=True")
            assert plan["vms"][vm]["action"] == "would_start" and plan["vms"][vm]["target"] in HOSTS[1:], plan

            proc, done = lab.run_json("virt.evacuate", "hypervisor1", "fenced=True", check=False)
            assert proc.returncode != 0 and done["result"] is False, done  # the local-disk VM cannot move
            moved = done["vms"][vm]
            assert moved["action"] == "started" and moved["state"] == "running", done
            assert moved["dropped"] == []  # no seed ISO: nothing left out
            assert done["vms"][local]["action"] == "failed"
            assert "not on storage this hypervisor sees" in done["vms"][local]["reason"]
            assert f"/srv/salt-images/{local}/system.qcow2" in done["vms"][local]["reason"]
            target = moved["target"]
            assert lab.domains(target).count(vm) == 1 and local not in lab.domains(target)
            # A new boot on the new host, from the same shared disk.
            lab.wait_serial(target, vm, r"SALTVIRT-HEARTBEAT 2\b", timeout=90)
            assert lease_held(disk)
            # Evacuated again (the operator re-runs it): nothing doubles.
            _p, again = lab.run_json("virt.evacuate", "hypervisor1", "fenced=True", check=False)
            assert again["vms"][vm]["action"] == "skipped", again

        # hypervisor1 comes back with its stale copy: libvirt refuses to start it.
        labctl("up")
        assert vm in lab.domains("hypervisor1")
        stale = lab.run("virsh", "hypervisor1", "start", vm, check=False)
        assert stale.returncode != 0 and "lock" in stale.stderr, stale.stderr
        assert lab.run("virsh", target, "domstate", vm).stdout.strip() == "running"
        _p, info = lab.run_json("virt.host_info", "host=hypervisor1")
        assert info["hypervisor1"]["cordoned"].startswith("evacuated")
        lab.run("salt", "hypervisor1", "virt.undefine", vm)  # the operator drops the stale copy
    finally:
        lab.run("salt", "hypervisor*", "virt.purge", local, check=False)
        shutil.rmtree(shared_dir, ignore_errors=True)


def _lease(path):
    """Take the lease of disk ``path`` the way a virtlockd on some other host does (a lock on the
    file), so that only the lock manager, not QEMU's own image lock, stands in the way."""
    fd = os.open(path, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    return fd


def test_the_lock_manager_alone_refuses_a_disk_leased_elsewhere(lab, vm):
    """libvirt asks virtlockd for a disk's lease before the guest's CPUs start: a disk whose lease
    another host holds is refused by the lock manager even where no QEMU has the image open (the
    case QEMU's own locking cannot see: another kernel, storage without lock forwarding), and the
    same start is accepted once the lease is free."""
    shared_dir = os.path.join(SHARED, vm)
    disk = os.path.join(shared_dir, "disk.qcow2")
    xml = os.path.join(shared_dir, "domain.xml")
    os.makedirs(shared_dir, exist_ok=True)
    try:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16M"], check=True)
        with open(xml, "w") as fh:
            fh.write(f"""<domain type='qemu'><name>{vm}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
    <source file='{disk}'/><target dev='vda' bus='virtio'/></disk></devices></domain>""")
        fd = _lease(disk)
        try:
            refused = lab.run("virsh", "hypervisor2", "create", xml, check=False)
        finally:
            os.close(fd)
        assert refused.returncode != 0, refused.stdout
        assert f"Lockspace resource '{disk}' is locked" in refused.stderr, refused.stderr
        assert vm not in lab.domains("hypervisor2")

        # The lease free: the same start is accepted, and hypervisor2's virtlockd now holds it.
        lab.run("virsh", "hypervisor2", "create", xml)
        assert lab.run("virsh", "hypervisor2", "domstate", vm).stdout.strip() == "running"
        assert lease_held(disk)
    finally:
        lab.run("virsh", "hypervisor2", "destroy", vm, check=False)
        shutil.rmtree(shared_dir, ignore_errors=True)
