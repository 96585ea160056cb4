"""Operating the cloud on the lab: cordon, drain (interrupted and resumed), uncordon.

Three hypervisors (``LAB_HYPERVISORS=3``); small guests printing a heartbeat on their serial
console. A live migration keeps the heartbeat counter going; a new boot would restart it and
print SALTVIRT-BOOT again.
"""

import concurrent.futures
import os
import re
import signal
import subprocess
import time
import uuid

import pytest

from .conftest import BIN
from .test_migration import beats, wait_beat_above

HOSTS = ("hypervisor1", "hypervisor2", "hypervisor3")
BASE = "/var/lib/libvirt/images/centos.qcow2"
LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")


@pytest.fixture(scope="module")
def three_hosts(three_hypervisors):
    return three_hypervisors


@pytest.fixture
def guests(three_hosts):
    """Make VMs ``(cpu, memory MiB, host, start)`` at once; purge them and lift every cordon afterwards."""
    lab, made = three_hosts, []

    def make(*specs):
        names = [f"op-{uuid.uuid4().hex[:5]}" for _ in specs]
        made.extend(names)

        def init(args):
            name, (cpu, memory, host, start) = args
            lab.run("salt", host, "virt.init", name, cpu, memory, BASE, "enable_qcow=True", "seed=False",
                    f"start={start}")

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(specs)) as pool:
            list(pool.map(init, zip(names, specs, strict=True)))
        return names

    yield make
    cordons = os.path.join(LAB_DIR, "master/var/cache/salt/master/saltvirt/cordons")
    for host in HOSTS:
        if os.path.exists(os.path.join(cordons, f"{host}.json")):
            lab.run("salt-run", "virt.uncordon", host, check=False)
    lab.calls("hypervisor*", [("virt.purge", name) for name in made])


def where(lab):
    return {vm: host for host in HOSTS for vm in lab.domains(host)}


def boots(lab, vm):
    return sum(lab.serial_log(h, vm).count("SALTVIRT-BOOT") for h in HOSTS)


def host_info(lab):
    _p, info = lab.run_json("virt.host_info")
    return info


def assert_within_capacity(lab, ratio=4.0):
    """No hypervisor holds more vCPUs or memory than placement allows (default policy)."""
    for host, info in host_info(lab).items():
        cpus, memory = info["node_info"]["cpus"], info["node_info"]["phymemory"]
        assert sum(v["cpu"] for v in info["usage"]) <= cpus * ratio, (host, info["usage"])
        assert sum(v["memory"] for v in info["usage"]) <= memory - 256, (host, info["usage"])


def test_drain_interrupted_then_resumed_keeps_every_guest_running(three_hosts, guests):
    lab = three_hosts
    vms = guests(*[(1, 128, "hypervisor1", True)] * 3)
    before = {vm: wait_beat_above(lab, "hypervisor1", vm, 1) for vm in vms}

    # The plan: every VM has a target among the two others (pre-flight passed); nothing changes.
    _p, plan = lab.run_json("virt.drain", "hypervisor1", "test=True")
    assert plan["test"] is True and plan["result"] is True and set(plan["plan"]) == set(vms), plan
    assert {p["target"] for p in plan["plan"].values()} <= {"hypervisor2", "hypervisor3"}
    assert host_info(lab)["hypervisor1"]["cordoned"] is None
    assert all(where(lab)[vm] == "hypervisor1" for vm in vms)

    # Killed (as by a master restart) once the first VM has left: the host stays cordoned.
    proc = subprocess.Popen([os.path.join(BIN, "salt-run"), "virt.drain", "hypervisor1", "parallel=1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while sum(where(lab).get(vm) == "hypervisor1" for vm in vms) == 3:
        assert proc.poll() is None and time.monotonic() < deadline, "the drain moved nothing"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stayed = [vm for vm in vms if where(lab).get(vm) == "hypervisor1"]
    assert 1 <= len(stayed) <= 2, where(lab)
    assert host_info(lab)["hypervisor1"]["cordoned"].startswith("drain (since ")

    # Cordoned: no new VM, no migration towards it.
    moved_vm = next(vm for vm in vms if vm not in stayed)
    proc = lab.run("salt-run", "virt.migrate", moved_vm, "hypervisor1", check=False)
    assert proc.returncode != 0 and "cordoned on hypervisor1" in proc.stdout, proc.stdout
    _p, explain = lab.run_json("virt.next_host", "explain=True")
    assert "cordoned: drain" in explain["excluded"]["hypervisor1"]

    # Run again: it finishes, and says what the killed run had moved.
    _p, done = lab.run_json("virt.drain", "hypervisor1")
    assert done["result"] is True, done
    assert set(done["moved"]) | set(done["moved_earlier"]) == set(vms), done
    assert moved_vm in done["moved_earlier"]
    placed = where(lab)
    assert not [vm for vm in vms if placed.get(vm) not in ("hypervisor2", "hypervisor3")], placed
    for vm in vms:
        assert wait_beat_above(lab, placed[vm], vm, before[vm]) > before[vm]
        assert boots(lab, vm) == 1, vm  # live-migrated, never rebooted
    assert_within_capacity(lab)

    # A second drain of the now empty host changes nothing.
    _p, again = lab.run_json("virt.drain", "hypervisor1")
    assert again["moved"] == {} and again["stayed"] == {} and again["result"] is True
    assert again["message"] == "hypervisor1 has no VM: nothing to move"
    assert where(lab) == placed

    _p, lifted = lab.run_json("virt.uncordon", "hypervisor1")
    assert lifted["was"].startswith("drain (since ")
    assert host_info(lab)["hypervisor1"]["cordoned"] is None
    _p, explain = lab.run_json("virt.next_host", "explain=True")
    assert "hypervisor1" not in explain["excluded"]


def test_a_vm_that_fits_nowhere_stays_running_and_the_drain_says_why(three_hosts, guests):
    lab = three_hosts
    # hypervisor3 is cordoned by the operator; hypervisor2 (2 CPUs x 4 = 8 vCPUs for placement)
    # keeps one vCPU free (shut-off VMs count): room for the 1-vCPU VM, not for the 2-vCPU one.
    lab.run_json("virt.cordon", "hypervisor3", "reason=maintenance")
    guests(*[(2, 64, "hypervisor2", False)] * 3, (1, 64, "hypervisor2", False))
    stuck, mover = guests((2, 128, "hypervisor1", True), (1, 128, "hypervisor1", True))
    first = wait_beat_above(lab, "hypervisor1", stuck, 1)

    proc, out = lab.run_json("virt.drain", "hypervisor1", check=False)
    assert proc.returncode != 0 and out["result"] is False, out
    assert list(out["stayed"]) == [stuck] and list(out["moved"]) == [mover], out
    reason = out["stayed"][stuck]
    # 1 vCPU left if its turn came before the other VM arrived there, 0 after: either way too few.
    assert re.search(r"hypervisor2: needs 2 vCPUs, [01] of 8 left", reason), reason
    assert "hypervisor3: cordoned: maintenance" in reason, reason
    assert f"still run there ({stuck})" in out["message"]
    assert lab.run("virsh", "hypervisor1", "domstate", stuck).stdout.strip() == "running"
    assert wait_beat_above(lab, "hypervisor1", stuck, max(beats(lab, "hypervisor1", stuck))) > first
    assert boots(lab, stuck) == 1
    assert lab.domains("hypervisor2").count(mover) == 1


def test_shut_off_vms_are_left_with_a_report_or_moved_offline(three_hosts, guests):
    lab = three_hosts
    (off,) = guests((1, 128, "hypervisor1", False))
    _p, left = lab.run_json("virt.drain", "hypervisor1")
    assert left["result"] is True and left["moved"] == {} and list(left["left"]) == [off], left
    assert "shutoff=move" in left["left"][off] and "1 shut off VM(s) left" in left["message"]
    assert where(lab)[off] == "hypervisor1"

    # Asked to move it: definition and disks go offline to a host placement picks.
    _p, moved = lab.run_json("virt.drain", "hypervisor1", "shutoff=move")
    assert moved["result"] is True and list(moved["moved"]) == [off] and moved["left"] == {}, moved
    target = where(lab)[off]
    assert target in ("hypervisor2", "hypervisor3") and off not in lab.domains("hypervisor1")
    assert lab.run("virsh", target, "domstate", off).stdout.strip() == "shut off"
    # Whole: it boots there from the disks that moved with it.
    lab.run("salt", target, "virt.start", off)
    assert wait_beat_above(lab, target, off, 0) >= 1


def test_bad_input_is_refused_before_anything_changes(three_hosts, guests):
    lab = three_hosts
    cases = [
        (("virt.drain", "hypervisor9"), "hypervisor9"),
        (("virt.drain", "hypervisor1", "shutoff=stop"), "shutoff must be leave or move, got 'stop'"),
        (("virt.drain", "hypervisor1", "parallel=0"), "parallel must be a whole number of migrations >= 1"),
        (("virt.uncordon", "hypervisor*"), "hypervisor*"),
    ]
    for args, message in cases:
        proc = lab.run("salt-run", *args, check=False)
        assert proc.returncode != 0 and message in proc.stdout + proc.stderr, (args, proc.stdout)
    assert all(info["cordoned"] is None for info in host_info(lab).values())
