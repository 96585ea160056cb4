"""Whole or nothing, whatever happens to the runner: ``salt-run virt.init`` interrupted with
SIGINT before it publishes, while the hypervisor works, or cut short by its timeout, or the
master killed mid-init; afterwards, and after ``salt-run virt.reconcile``, every VM is complete
(domain defined once, key accepted, no intent) or absent (no domain, no directory, no key, no
reservation)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import BIN, LAB_DIR, REPO

sys.path.insert(0, os.path.join(REPO, "_utils"))
from saltvirt.placement import reservations

MASTER = os.path.join(LAB_DIR, "master")
CACHE = os.path.join(MASTER, "var/cache/salt/master/saltvirt")
KEYS = os.path.join(MASTER, "etc/salt/pki/master/minions")
HYPERVISORS = ("hypervisor1", "hypervisor2")


def intent(vm):
    return os.path.exists(os.path.join(CACHE, "intents", f"{vm}.json"))


def reserved(vm):
    return any(e.get("name") == vm for e in reservations.Reservations(os.path.join(CACHE, "reservations")).entries())


def where(lab, vm):
    return [h for h in HYPERVISORS if vm in lab.domains(h)]


def vm_dirs(vm):
    return [h for h in HYPERVISORS if os.path.exists(os.path.join(LAB_DIR, f"hv{h[-1]}", "salt-images", vm))]


def assert_whole(lab, vm):
    assert len(where(lab, vm)) == 1, where(lab, vm)
    assert os.path.exists(os.path.join(KEYS, vm)) and not intent(vm)


def assert_absent(lab, vm):
    assert where(lab, vm) == [] and vm_dirs(vm) == []
    assert not os.path.exists(os.path.join(KEYS, vm)) and not intent(vm) and not reserved(vm)


def reconcile_until_settled(lab, vm, timeout=180):
    """Run virt.reconcile until it no longer waits for this VM's job; return its last report."""
    deadline = time.monotonic() + timeout
    while True:
        _proc, report = lab.run_json("virt.reconcile", check=False)
        mine = [i for i in report.get("inits", []) if i["name"] == vm]
        if not mine or mine[0]["action"] != "wait" or time.monotonic() > deadline:
            return report
        time.sleep(3)


def interrupted_init(vm, *args, after=None, delay=0.0):
    """Start ``salt-run virt.init``; SIGINT it ``delay`` s after the line containing ``after``
    (or after ``delay`` s from the start); return its output."""
    proc = subprocess.Popen([os.path.join(BIN, "salt-run"), "virt.init", vm, "1", "128", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    if after:
        for line in proc.stdout:
            out.append(line)
            if after in line:
                break
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out.append(proc.communicate(timeout=120)[0])
    return "".join(out)


def test_sigint_before_the_job_leaves_nothing(lab, vm):
    """Interrupted while it searches for a host: hypervisor2's minion held still and the master's
    copy of the capacities gone, the survey waits for it past the "Searching" line. (A fixed delay
    from the start can land in salt-run's own start-up, where Salt 3008's loader catches the
    interrupt's SystemExit while importing the grains and the run goes on.)"""
    with open(os.path.join(LAB_DIR, "hv2", "minion", "var", "run", "salt-minion.pid")) as fh:
        pid = int(fh.read())
    if os.path.exists(os.path.join(CACHE, "capacities.json")):
        os.unlink(os.path.join(CACHE, "capacities.json"))
    os.kill(pid, signal.SIGSTOP)
    try:
        out = interrupted_init(vm, "salt://centos.qcow2", "enable_qcow=True", after="Searching for hypervisors")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert f"Searching for hypervisors for {vm}" in out and "Creating VM" not in out, out
    time.sleep(5)
    assert_absent(lab, vm)


def test_sigint_during_the_job_then_reconcile_completes(lab, vm):
    # the runner says it creates the VM once the job is out: the hypervisor works on it
    out = interrupted_init(vm, "salt://centos.qcow2", "enable_qcow=True", after="Creating VM")
    assert "accepted on the master" not in out, out
    assert intent(vm) and reserved(vm)  # the runner left its intent and reservation
    report = reconcile_until_settled(lab, vm)
    (mine,) = [i for i in report["inits"] if i["name"] == vm]
    assert (mine["action"], mine["done"]) == ("complete", "completed: key accepted"), report
    assert_whole(lab, vm)
    again = lab.run_json("virt.reconcile")[1]  # nothing left to do
    assert not [i for i in again["inits"] if i["name"] == vm]


def test_sigint_during_a_failing_job_then_reconcile_removes(lab, vm):
    # seed.apply on an image without salt-minion and no install command: fails after the copy
    out = interrupted_init(vm, "salt://centos.img", "seed_cmd=seed.apply", "install=True",
                           after="Creating VM")
    assert intent(vm), out
    report = reconcile_until_settled(lab, vm, timeout=300)
    (mine,) = [i for i in report["inits"] if i["name"] == vm]
    assert (mine["action"], mine["done"]) == ("rollback", "removed"), report
    assert_absent(lab, vm)


def test_sigint_after_the_job_returned_leaves_it_whole(lab, vm):
    out = interrupted_init(vm, "salt://centos.qcow2", "enable_qcow=True", after="accepted on the master")
    assert "Creating VM" in out
    assert_whole(lab, vm)
    assert not [i for i in lab.run_json("virt.reconcile")[1]["inits"] if i["name"] == vm]


def test_a_killed_salt_run_then_reconcile_completes(lab, vm):
    proc = subprocess.Popen([os.path.join(BIN, "salt-run"), "virt.init", vm, "1", "128", "salt://centos.qcow2",
                             "enable_qcow=True"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    for line in proc.stdout:
        if "Creating VM" in line:
            break
    os.killpg(proc.pid, signal.SIGKILL)  # no handler runs: nothing is cleaned up by the runner
    proc.communicate()
    assert intent(vm) and reserved(vm)
    reconcile_until_settled(lab, vm)
    assert_whole(lab, vm)


def test_a_runner_timeout_shorter_than_the_init(lab, vm):
    proc, ret = lab.run_json("virt.init", vm, 1, 128, "salt://centos.img", "timeout=0.2", check=False)
    assert proc.returncode != 0 and "did not finish within 0.2s; it may still complete" in ret["error"], ret
    assert intent(vm) and reserved(vm)
    reconcile_until_settled(lab, vm)
    assert_whole(lab, vm)


def group_alive(pgid):
    """True while a process of the group runs (zombies, waiting for their reaper, do not count)."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def test_master_killed_mid_init(lab, vm):
    pidfile = os.path.join(MASTER, "var/run/salt-master.pid")
    proc = subprocess.Popen([os.path.join(BIN, "salt-run"), "virt.init", vm, "1", "128", "salt://centos.img"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if "Creating VM" in line:
                break
        with open(pidfile) as fh:
            group = os.getpgid(int(fh.read()))
        os.killpg(group, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    # SIGKILL is not instant on a busy machine: a master still exiting would pass for a running one
    deadline = time.monotonic() + 60
    while group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(group), f"the killed master's processes (group {group}) still run"
    # a new master; the hypervisors (and the job) carry on, their minions reconnect
    start = subprocess.run([os.path.join(REPO, ".venv/bin/python"), os.path.join(REPO, "lab/labctl.py"),
                            "start-master"], capture_output=True, text=True, timeout=300)
    assert start.returncode == 0, start.stdout + start.stderr
    assert intent(vm)
    reconcile_until_settled(lab, vm)
    placed = where(lab, vm)
    if placed:
        assert_whole(lab, vm)
    else:
        assert_absent(lab, vm)


def test_reconcile_finds_keys_without_vms_and_stale_reservations(lab):
    ghost = "ghost-vm-a1b2"
    registry = os.path.join(CACHE, "vm-keys")
    os.makedirs(registry, exist_ok=True)
    with open(os.path.join(KEYS, "hypervisor1")) as fh:
        pub = fh.read()
    with open(os.path.join(KEYS, ghost), "w") as fh:
        fh.write(pub)
    with open(os.path.join(registry, ghost), "w") as fh:
        fh.write("hypervisor1")
    book = reservations.Reservations(os.path.join(CACHE, "reservations"))
    book.reserve("hypervisor1", "stale-vm-c3d4", 1, 128)
    try:
        _proc, dry = lab.run_json("virt.reconcile", "test=True")
        assert ghost in dry["keys_without_vms"] and "stale-vm-c3d4" in dry["stale_reservations"]
        assert os.path.exists(os.path.join(KEYS, ghost)) and reserved("stale-vm-c3d4")  # test=True
        _proc, done = lab.run_json("virt.reconcile")
        assert ghost in done["keys_without_vms"] and "stale-vm-c3d4" in done["stale_reservations"]
        assert not os.path.exists(os.path.join(KEYS, ghost)) and not reserved("stale-vm-c3d4")
        # the hypervisors' own keys are not VMs' keys: never touched
        assert all(os.path.exists(os.path.join(KEYS, h)) for h in HYPERVISORS)
    finally:
        for path in (os.path.join(KEYS, ghost), os.path.join(registry, ghost)):
            if os.path.exists(path):
                os.unlink(path)
        book.release("stale-vm-c3d4")


@pytest.fixture(autouse=True)
def _no_intent_left(vm):
    yield
    path = os.path.join(CACHE, "intents", f"{vm}.json")
    if os.path.exists(path):
        os.unlink(path)
    reservations.Reservations(os.path.join(CACHE, "reservations")).release(vm)
