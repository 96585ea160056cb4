"""lab-up / lab-down on a second, throw-away lab: idempotent, repairs stale state, leaves nothing."""

import json
import os
import shutil
import signal
import subprocess

import pytest

from tests.integration.conftest import Lab, _last_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, LAB_NETNS="svlabt", LAB_DIR="/var/lib/svlab-lifecycle", LAB_HYPERVISORS="1")


def labctl(*args, check=True, env=None):
    """``labctl.py`` on this test's own lab (``env``: more LAB_* variables)."""
    return Lab(dict(ENV, **(env or {}))).labctl(*args, check=check, timeout=600)


@pytest.fixture(autouse=True, scope="module")
def fresh_state():
    """Each run starts from an empty state directory (no VMs or keys left by an earlier run)."""
    labctl("down")
    shutil.rmtree(ENV["LAB_DIR"], ignore_errors=True)
    yield
    labctl("down")
    shutil.rmtree(ENV["LAB_DIR"], ignore_errors=True)


def netns_inode():
    return os.stat("/run/netns/svlabt").st_ino


def processes_in_netns(inode):
    """Pids of processes whose network namespace is the throw-away lab's (by nsfs inode)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                found.append(int(pid))
        except OSError:
            continue
    return found


def lab_bin(tool, *args):
    proc = subprocess.run([os.path.join(REPO, "lab", "bin", tool), *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def place_on_two_hypervisors():
    """Placement with two hosts: the full one is excluded, with its reason."""
    info = json.loads(lab_bin("salt-run", "virt.host_info", "--out=json"))
    assert sorted(info) == ["hypervisor1", "hypervisor2"]
    total = info["hypervisor1"]["node_info"]["phymemory"]
    lab_bin("salt", "hypervisor1", "virt.init", "hog", 1, total - 512,
            "image=/var/lib/libvirt/images/centos.qcow2", "enable_qcow=True", "start=False", "seed=False")
    explain = json.loads(lab_bin("salt-run", "virt.next_host", "mem=1024", "explain=True", "--out=json"))
    assert set(explain["excluded"]) == {"hypervisor1"}
    assert "memory" in explain["excluded"]["hypervisor1"]
    out = lab_bin("salt-run", "virt.init", "fits", 1, 1024, "salt://centos.qcow2", "enable_qcow=True",
                  "start=False", "seed=False", "--out=json")
    assert _last_json(out)["host"] == "hypervisor2"


def test_up_twice_grow_repair_then_down_leaves_nothing():
    # One throw-away lab for every step (each hypervisor costs half a minute or more on two cores).
    two = {"LAB_HYPERVISORS": "2"}
    try:
        labctl("up")
        inode = netns_inode()
        assert len(processes_in_netns(inode)) >= 5  # master + libvirtd, virtlogd, minion, holder
        first = labctl("status")
        assert "hypervisor1: namespace pid" in first.stdout
        again = labctl("up")  # reuses the running lab
        assert "hypervisor1 up" not in again.stdout
        assert labctl("status").stdout == first.stdout
        # A second hypervisor joins the running lab through the bundle's formula alone.
        more = labctl("up", env=two)
        assert "hypervisor2 up" in more.stdout and "hypervisor1 up" not in more.stdout
        holder = open(f"{ENV['LAB_DIR']}/hv1/holder.pid").read().strip()
        uri = subprocess.run(
            ["nsenter", "-t", holder, "-m", "-n", "virsh", "-c", "qemu+tls://127.0.0.3/system", "uri"],
            capture_output=True, text=True, timeout=60,
        )
        assert uri.stdout.strip() == "qemu+tls://127.0.0.3/system", uri.stderr
        place_on_two_hypervisors()

        # A stale lab is repaired: hypervisor1's namespace holder killed behind the lab's back
        # (its daemons live on).
        os.kill(int(holder), signal.SIGKILL)
        assert labctl("status", check=False, env=two).returncode != 0
        repaired = labctl("up")  # (the repair starts from nothing: one hypervisor is enough to show it)
        assert "stale" in repaired.stdout and "hypervisor1 up" in repaired.stdout
        assert labctl("status").returncode == 0
        inode = netns_inode()
    finally:
        labctl("down")
    assert not os.path.exists("/run/netns/svlabt")
    assert processes_in_netns(inode) == []
    with open("/proc/self/mountinfo") as fh:
        assert "svlab-lifecycle" not in fh.read()
    assert labctl("status", check=False).returncode != 0
