"""Declarative VMs on the lab: virt.running / stopped / rebooted / snapshot states.

One SLS (written under the lab's file_roots as ``salt://tests/saltvirt_decl.sls``) defines
one VM per hypervisor, chosen by minion id from pillar, so a single ``state.apply`` on both
hypervisors creates a VM on each.
"""

import json
import os
import time
import uuid

import pytest

LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
HYPERS = ("hypervisor1", "hypervisor2")

SLS = """\
{%- set p = salt['pillar.get']('decl', {}) %}
{%- set vm = p.get('vms', {}).get(grains['id']) %}
{%- if vm %}
{{ vm }}:
  virt.running:
    - cpu: {{ p.get('cpu', 1) }}
    - mem: {{ p.get('mem', 192) }}
    - image: salt://centos.qcow2
    - enable_qcow: True
{%- endif %}
"""


def write_sls(name, text):
    """Put ``text`` on the lab's file server as ``salt://tests/<name>.sls``; its SLS name."""
    directory = os.path.join(LAB_DIR, "images", "tests")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{name}.sls"), "w") as fh:
        fh.write(text)
    return f"tests.{name}"


@pytest.fixture(scope="module")
def sls(lab):
    return write_sls("saltvirt_decl", SLS)


@pytest.fixture
def pair(lab):
    prefix = f"decl-{uuid.uuid4().hex[:5]}"
    vms = {"hypervisor1": f"{prefix}-a", "hypervisor2": f"{prefix}-b"}
    yield prefix, vms
    for host, name in vms.items():
        lab.run("salt", host, "virt.purge", name, check=False)


def states(lab, *args, check=True):
    """``{minion: [state return, ...]}`` of a state.apply/state.single."""
    proc = lab.run("salt", *args, "--out=json", "--static", check=check, timeout=400)
    data = json.loads(proc.stdout)
    out = {}
    for minion, ret in data.items():
        assert isinstance(ret, dict), f"{minion}: {ret}"
        out[minion] = sorted(ret.values(), key=lambda r: r.get("__run_num__", 0))
    return out


def apply(lab, sls, pillar, test=False):
    args = ["-L", ",".join(HYPERS), "state.apply", sls, f"pillar={json.dumps({'decl': pillar})}"]
    if test:
        args.append("test=True")
    return states(lab, *args)


def only(result, minion):
    (ret,) = result[minion]
    return ret


def inactive_memory_kib(lab, host, name):
    xml = lab.run("virsh", host, "dumpxml", "--inactive", name).stdout
    line = next(line for line in xml.splitlines() if "<currentMemory" in line)
    return int(line.split(">")[1].split("<")[0])


def wait_booted(lab, host, name, boots, timeout=120):
    """Wait until the guest's console shows its ``boots``-th boot and a heartbeat after it."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = lab.serial_log(host, name)
        if text.count("SALTVIRT-BOOT") >= boots and "SALTVIRT-HEARTBEAT 2" in text.rsplit("SALTVIRT-BOOT", 1)[1]:
            return
        time.sleep(0.5)
    raise AssertionError(f"{name} did not boot {boots} time(s) within {timeout}s:\n{text[-1500:]}")


def test_declared_vms_converge_and_stay_put(lab, sls, pair):
    prefix, vms = pair
    pillar = {"vms": vms, "mem": 192}

    # Dry run: both would be created, nothing is.
    result = apply(lab, sls, pillar, test=True)
    for host, name in vms.items():
        ret = only(result, host)
        assert ret["result"] is None and ret["changes"] == {"definition": True, "started": True}
        assert name not in lab.domains(host)

    # Created and running, each on its hypervisor.
    result = apply(lab, sls, pillar)
    for host, name in vms.items():
        ret = only(result, host)
        assert ret["result"] is True, ret
        assert ret["changes"] == {"definition": True, "started": True}
        assert lab.run("virsh", host, "domstate", name).stdout.strip() == "running"
        assert inactive_memory_kib(lab, host, name) == 192 * 1024

    # Again: nothing to do.
    result = apply(lab, sls, pillar)
    for host in vms:
        ret = only(result, host)
        assert ret["result"] is True and ret["changes"] == {}, ret
        assert "up to date" in ret["comment"]

    # Less memory, dry run: the diff only.
    smaller = dict(pillar, mem=160)
    result = apply(lab, sls, smaller, test=True)
    for host, name in vms.items():
        ret = only(result, host)
        assert ret["result"] is None
        assert ret["changes"] == {"mem": {"old": 192, "new": 160, "when": "live"}}
        assert inactive_memory_kib(lab, host, name) == 192 * 1024

    # For real: exactly one change, made live (balloon) and in the definition.
    result = apply(lab, sls, smaller)
    for host, name in vms.items():
        ret = only(result, host)
        assert ret["result"] is True
        assert ret["changes"] == {"mem": {"old": 192, "new": 160, "when": "live"}}
        assert "mem 192 -> 160 MiB (live)" in ret["comment"]
        assert inactive_memory_kib(lab, host, name) == 160 * 1024
    result = apply(lab, sls, smaller)
    assert all(only(result, host)["changes"] == {} for host in vms)

    # A second vCPU cannot be hot-plugged: it is for the next boot, and virt.rebooted then
    # power-cycles exactly the VM that has it pending, once.
    host_a, vm_a = "hypervisor1", vms["hypervisor1"]
    result = states(lab, host_a, "state.apply", sls,
                    f"pillar={json.dumps({'decl': dict(smaller, cpu=2)})}")
    assert only(result, host_a)["changes"] == {"cpu": {"old": 1, "new": 2, "when": "next_boot"}}
    assert "(on next boot)" in only(result, host_a)["comment"]
    assert json.loads(lab.run("salt", host_a, "virt.pending_changes", vm_a, "--out=json").stdout)[host_a] == [
        "cpu 1 -> 2"]
    wait_booted(lab, host_a, vm_a, 1)  # booted: it handles ACPI
    result = states(lab, "-L", ",".join(HYPERS), "state.single", "virt.rebooted", f"{prefix}-*")
    rebooted = only(result, host_a)
    assert rebooted["changes"]["rebooted"][0]["domain"] == vm_a
    assert rebooted["changes"]["rebooted"][0]["power_cycle"] is True
    assert only(result, "hypervisor2")["changes"] == {}
    dominfo = lab.run("virsh", host_a, "dominfo", vm_a).stdout
    assert "CPU(s):         2" in dominfo and "running" in dominfo
    result = states(lab, host_a, "state.single", "virt.rebooted", f"{prefix}-*")
    assert only(result, host_a)["changes"] == {}

    # Stop both with a wildcard (ACPI, asked again until the guests are off); then no change.
    wait_booted(lab, host_a, vm_a, 2)
    result = states(lab, "-L", ",".join(HYPERS), "state.single", "virt.stopped", f"{prefix}-*", "timeout=90")
    for host, name in vms.items():
        ret = only(result, host)
        assert ret["result"] is True and ret["changes"] == {"stopped": [{"domain": name, "shutdown": True}]}
        assert lab.run("virsh", host, "domstate", name).stdout.strip() == "shut off"
    result = states(lab, "-L", ",".join(HYPERS), "state.single", "virt.stopped", f"{prefix}-*")
    assert all(only(result, host)["changes"] == {} for host in vms)

    # Snapshots by wildcard: taken once.
    result = states(lab, "-L", ",".join(HYPERS), "state.single", "virt.snapshot", f"{prefix}-*", "suffix=v1")
    for host, name in vms.items():
        assert only(result, host)["changes"] == {"saved": [{"domain": name, "snapshot": f"{name}-v1"}]}
        assert f"{name}-v1" in lab.run("virsh", host, "snapshot-list", name, "--name").stdout
    result = states(lab, "-L", ",".join(HYPERS), "state.single", "virt.snapshot", f"{prefix}-*", "suffix=v1")
    assert all(only(result, host)["changes"] == {} for host in vms)

    # virt.running starts a stopped VM again (and changes nothing else).
    result = states(lab, host_a, "state.apply", sls, f"pillar={json.dumps({'decl': dict(smaller, cpu=2)})}")
    assert only(result, host_a)["changes"] == {"started": True}


def test_wildcard_matching_nothing_fails(lab):
    result = states(lab, "hypervisor1", "state.single", "virt.stopped", "no-such-vm-*", check=False)
    ret = only(result, "hypervisor1")
    assert ret["result"] is False and "No domain matches no-such-vm-*" in ret["comment"]
