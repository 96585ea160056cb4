"""Runner placement, concurrency and faults on the lab's real hypervisors."""

import concurrent.futures
import os
import time
import uuid

import pytest

LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
BASE = "image=/var/lib/libvirt/images/centos.qcow2"


def _hosts(lab):
    _proc, info = lab.run_json("virt.host_info")
    return {h: v for h, v in info.items() if "node_info" in v}


@pytest.fixture
def names(lab):
    """Unique VM names; every VM by these names is purged from every hypervisor afterwards."""
    made = []

    def make(prefix):
        name = f"{prefix}-{uuid.uuid4().hex[:5]}"
        made.append(name)
        return name

    yield make

    def remove(name):
        lab.run("salt-run", "virt.purge", name, check=False)  # also drops its reservation
        lab.run("salt", "hypervisor*", "virt.purge", name, check=False)
        lab.run("salt-key", "-y", "-d", name, check=False)

    # A few at a time: twenty names one after the other took about a minute.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(remove, made))


def test_too_big_for_hypervisor1_lands_on_hypervisor2(lab, names):
    hosts = _hosts(lab)
    total = hosts["hypervisor1"]["node_info"]["phymemory"]
    hog, vm = names("hog"), names("fit")
    # A defined (stopped) VM still claims its memory: hypervisor1 has no room left.
    lab.run("salt", "hypervisor1", "virt.init", hog, "1", str(total - 512), BASE,
            "enable_qcow=True", "start=False", "seed=False")
    _p, explain = lab.run_json("virt.next_host", "mem=1024", "explain=True")
    assert "hypervisor1" in explain["excluded"]
    assert "memory" in explain["excluded"]["hypervisor1"]
    _p, result = lab.run_json("virt.init", vm, "1", "1024", "salt://centos.qcow2", "enable_qcow=True",
                              "start=False")
    assert result["host"] == "hypervisor2" and result["state"] == "shutoff"


def test_request_that_fits_nowhere_says_why(lab, names):
    hosts = _hosts(lab)
    biggest = max(h["node_info"]["phymemory"] for h in hosts.values())
    vm = names("huge")
    proc, result = lab.run_json("virt.init", vm, "1", str(biggest * 2), "salt://centos.qcow2", check=False)
    assert proc.returncode != 0
    for host in hosts:
        assert f"{host}: needs {biggest * 2} MiB memory" in result["error"]
    assert vm not in lab.run("salt-key", "-l", "all").stdout  # no key left accepted


def test_concurrent_inits_never_overcommit(lab, names):
    hosts = _hosts(lab)
    ratio = 4.0  # the default vCPU over-commit ratio (master config virt:placement)
    capacity = 0
    for info in hosts.values():
        used = sum(vm["cpu"] for vm in info["usage"])
        capacity += max(0, int(info["node_info"]["cpus"] * ratio) - used)
    attempts = 20
    vms = [names("cc") for _ in range(attempts)]

    def init(name):
        proc, result = lab.run_json("virt.init", name, "1", "64", "salt://centos.qcow2",
                                    "enable_qcow=True", "start=False", "seed=False", check=False)
        return proc.returncode, result

    with concurrent.futures.ThreadPoolExecutor(max_workers=attempts) as pool:
        outcomes = list(pool.map(init, vms))
    ok = [r for rc, r in outcomes if rc == 0]
    refused = [r for rc, r in outcomes if rc != 0]
    for result in refused:
        assert "vCPU" in result["error"], result
    assert len(ok) == min(attempts, capacity), refused[:3]
    after = _hosts(lab)
    for host, info in after.items():
        assert sum(vm["cpu"] for vm in info["usage"]) <= info["node_info"]["cpus"] * ratio, host


def test_vm_on_two_hypervisors_is_reported_not_guessed(lab, names):
    dup = names("dup")
    lab.run("salt", "hypervisor*", "virt.init", dup, "1", "64", BASE, "enable_qcow=True",
            "start=False", "seed=False")
    proc, result = lab.run_json("virt.start", dup, check=False)
    assert proc.returncode != 0
    assert "hypervisor1 (shutoff)" in result["error"] and "hypervisor2 (shutoff)" in result["error"]
    _p, started = lab.run_json("virt.start", dup, "host=hypervisor2")
    assert started["started"] is True and started["host"] == "hypervisor2"


def test_stopped_hypervisor_minion_does_not_hang_the_runner(lab, names):
    vm = names("alive")
    lab.run("salt", "hypervisor1", "virt.init", vm, "1", "64", BASE, "enable_qcow=True",
            "start=False", "seed=False")
    pidfile = f"{LAB_DIR}/hv2/minion/var/run/salt-minion.pid"
    with open(pidfile) as fh:
        pid = int(fh.read())
    os.kill(pid, 15)
    try:
        for _ in range(100):
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.1)
        started = time.monotonic()
        # timeout=5: the runner's own bound (virt:timeout, 30 s in the lab) is then not waited out.
        proc, listing = lab.run_json("virt.list", "timeout=5", timeout=120, check=False)
        elapsed = time.monotonic() - started
        assert proc.returncode != 0 and listing["retcode"] == 1  # scripts notice the missing host
        assert "did not answer" in listing["hypervisor2"]["error"]
        assert vm in listing["hypervisor1"]["shutoff"]
        # Bounded by the timeout and Salt's check on the silent minion, which the caller's timeout
        # bounds too (the lab's gather_job_timeout of 30 s alone took this past 35 s).
        assert elapsed < 30, elapsed
        # Per-VM commands still work for VMs on the hypervisors that answer.
        _p, started_vm = lab.run_json("virt.start", vm)
        assert started_vm["started"] is True
    finally:
        lab.labctl("minion", "hypervisor2")  # started as the lab starts it, once it answers a ping
