"""The classic hardware arguments on the lab: cpu/mem dicts, serials and consoles through the
virt.running/virt.defined states (a real guest boots with them), host devices only where the
operator allows them, and cloud_init merged into the cidata seed ISO."""

import io
import json
import os
import uuid
import xml.etree.ElementTree as ET

import pycdlib
import pytest
import yaml

from tests.integration.test_states import states, wait_booted, write_sls

LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
HOST = "hypervisor1"

SLS = """\
{%- set p = salt['pillar.get']('hw', {}) %}
{{ p['name'] }}:
  virt.{{ p.get('state', 'running') }}:
    - cpu: {{ p['cpu'] | tojson }}
    - mem: {{ p['mem'] | tojson }}
    - serials: {{ p['serials'] | tojson }}
    - consoles: {{ p['consoles'] | tojson }}
    - image: salt://centos.qcow2
    - enable_qcow: True
"""

CPU = {"topology": {"sockets": 2, "cores": 1, "threads": 1}, "mode": "custom", "model": "qemu64"}
MEM = {"boot": "256m", "current": "192m"}
SERIALS = [{"type": "tcp", "port": 24555, "protocol": "telnet"}, {"type": "pty"}]
CONSOLES = [{"type": "pty", "target_type": "virtio"}]


@pytest.fixture(scope="module")
def sls(lab):
    return write_sls("saltvirt_hwargs", SLS)


@pytest.fixture
def name(lab):
    vm = f"hw-{uuid.uuid4().hex[:6]}"
    yield vm
    lab.run("salt", HOST, "virt.purge", vm, check=False)


def apply(lab, sls, pillar, test=False):
    args = ["state.apply", sls, f"pillar={json.dumps({'hw': pillar})}", *(["test=True"] if test else [])]
    result = states(lab, HOST, *args)
    (ret,) = result[HOST]
    return ret


def domain_xml(lab, vm, inactive=False):
    args = ["dumpxml", *(["--inactive"] if inactive else []), vm]
    return ET.fromstring(lab.run("virsh", HOST, *args).stdout)


def test_cpu_and_mem_dicts_boot_and_the_states_converge(lab, sls, name):
    pillar = {"name": name, "cpu": CPU, "mem": MEM, "serials": SERIALS, "consoles": CONSOLES}
    ret = apply(lab, sls, pillar)
    assert ret["result"] is True and ret["changes"] == {"definition": True, "started": True}, ret
    # The guest boots, and serial port 0 (tcp here) still logs to the VM's serial log.
    wait_booted(lab, HOST, name, 1)

    live = domain_xml(lab, name)
    assert live.find("cpu/topology").get("sockets") == "2" and live.find("cpu/topology").get("cores") == "1"
    assert live.find("cpu/model").text == "qemu64" and live.find("vcpu").text == "2"
    assert int(live.find("memory").text) == 256 * 1024
    # The balloon target (the live value is what the guest has: it may have no balloon driver).
    assert int(domain_xml(lab, name, inactive=True).find("currentMemory").text) == 192 * 1024
    serial0, serial1 = live.findall("devices/serial")
    assert (serial0.get("type"), serial0.find("source").get("service")) == ("tcp", "24555")
    assert serial0.find("log").get("file") == f"/var/log/libvirt/qemu/{name}-serial.log"
    assert serial1.get("type") == "pty"
    assert [c.find("target").get("type") for c in live.findall("devices/console")] == ["serial", "virtio"]
    # QEMU runs with two sockets of one core.
    cmdline = lab.hv(HOST, "sh", "-c", f"cat /proc/$(cat /run/libvirt/qemu/{name}.pid)/cmdline | tr '\\0' ' '")
    assert "sockets=2" in cmdline.stdout and "cores=1" in cmdline.stdout

    # virt.defined with the same arguments, twice: nothing to do.
    for _ in range(2):
        ret = apply(lab, sls, dict(pillar, state="defined"))
        assert ret["result"] is True and ret["changes"] == {}, ret
        assert "up to date" in ret["comment"]

    # Another topology, a smaller balloon target and a memory limit: the topology for the next
    # boot, the balloon target at once (under the memory the guest started with); the limit live
    # where the guest has a memory cgroup, and this lab's libvirtds run without one
    # (cgroup_controllers = [ ]): there it waits for the next boot, as predicted. Then nothing again.
    changed = dict(pillar, state="defined", cpu=dict(CPU, topology={"sockets": 1, "cores": 2, "threads": 1}),
                   mem=dict(MEM, current="160m", soft_limit="1g"))
    predicted = apply(lab, sls, changed, test=True)
    assert predicted["result"] is None and set(predicted["changes"]) == {"cpu", "mem"}, predicted
    assert domain_xml(lab, name, inactive=True).find("cpu/topology").get("cores") == "1"  # nothing done
    ret = apply(lab, sls, changed)
    assert ret["changes"] == predicted["changes"]
    assert ret["result"] is True, ret
    assert ret["changes"]["cpu"] == {"old": {"sockets": 2, "cores": 1}, "new": {"sockets": 1, "cores": 2},
                                     "when": "next_boot"}
    assert ret["changes"]["mem"] == {"old": {"current": 192 * 1024, "soft_limit": None},
                                     "new": {"current": 160 * 1024, "soft_limit": 1048576},
                                     "when": "partly live", "live": ["current"], "next_boot": ["soft_limit"]}
    inactive = domain_xml(lab, name, inactive=True)
    assert int(inactive.find("currentMemory").text) == 160 * 1024 and inactive.find("memtune/soft_limit") is not None
    assert inactive.find("cpu/topology").get("cores") == "2"
    assert domain_xml(lab, name).find("cpu/topology").get("cores") == "1"  # the running guest keeps its own
    pending = lab.salt_json(HOST, "virt.pending_changes", name)[HOST]
    assert {"cpu sockets: 2 -> 1", "cpu cores: 1 -> 2", "mem soft_limit: None -> 1048576"} <= set(pending), pending
    ret = apply(lab, sls, changed)
    assert ret["result"] is True and ret["changes"] == {}, ret

    # null removes a setting, as for mem (the vCPU count stays): predicted, made, then nothing.
    nulls = dict(changed, cpu=dict(CPU, topology=None), mem=dict(MEM, soft_limit=None))
    predicted = apply(lab, sls, nulls, test=True)
    assert predicted["result"] is None and predicted["changes"]["cpu"] == {
        "old": {"topology": {"sockets": "1", "dies": "1", "cores": "2", "threads": "1"}}, "new": {"topology": None},
        "when": "next_boot"}, predicted
    ret = apply(lab, sls, nulls)
    assert ret["result"] is True and ret["changes"] == predicted["changes"], ret
    inactive = domain_xml(lab, name, inactive=True)
    assert inactive.find("cpu/topology") is None and inactive.find("vcpu").text == "2"
    assert inactive.find("cpu/model").text == "qemu64" and inactive.find("memtune/soft_limit") is None
    ret = apply(lab, sls, nulls)
    assert ret["result"] is True and ret["changes"] == {}, ret


def _allow_host_devices(lab, host, allowed):
    """Pillar for ``host`` with virt:host_devices:allowed (None: back to the lab's own pillar)."""
    pillar = os.path.join(LAB_DIR, "pillar")
    top_file = os.path.join(pillar, "top.sls")
    with open(top_file) as fh:
        top = yaml.safe_load(fh)
    extra = os.path.join(pillar, "hwargs_allowed.sls")
    if allowed is None:
        top["base"][host] = [s for s in top["base"][host] if s != "hwargs_allowed"]
        if os.path.exists(extra):
            os.unlink(extra)
    else:
        with open(extra, "w") as fh:
            json.dump({"virt": {"host_devices": {"allowed": allowed}}}, fh)
        top["base"][host] = [*top["base"][host], "hwargs_allowed"]
    with open(top_file, "w") as fh:
        yaml.safe_dump(top, fh)
    lab.run("salt", host, "saltutil.refresh_pillar", "wait=True")


def test_host_devices_only_where_the_operator_allows_them(lab, name):
    devices = [d["name"] for d in lab.salt_json(HOST, "virt.node_devices")[HOST] if d["caps"] == "pci"]
    device = devices[-1]
    args = [HOST, "virt.init", name, 1, 128, "start=False", f"host_devices=[{device}]", "--out=json"]
    # Not allowed (the default): refused, and nothing is left.
    proc = lab.run("salt", *args, check=False)
    assert proc.returncode != 0
    assert f"host device(s) {device} may not be passed through on {HOST}" in proc.stdout
    assert "virt:host_devices:allowed" in proc.stdout
    assert name not in lab.domains(HOST)
    # Allowed by the operator (pillar here): the domain is defined with the device.
    try:
        _allow_host_devices(lab, HOST, ["pci_0000_00_*"])
        proc = lab.run("salt", *args)
        assert name in lab.domains(HOST), proc.stdout
        hostdevs = domain_xml(lab, name, inactive=True).findall("devices/hostdev")
        address = device.split("_")[1:]
        assert [h.find("source/address").attrib for h in hostdevs] == [
            {"domain": f"0x{address[0]}", "bus": f"0x{address[1]}", "slot": f"0x{address[2]}",
             "function": f"0x{address[3]}"}]
        # Asking for no device removes it (the list is the set).
        ret = lab.salt_json(HOST, "virt.update", name, "host_devices=[]")[HOST]
        assert ret["changes"]["host_devices"]["new"] == [] and ret["changes"]["host_devices"]["when"] == "next_boot"
        assert domain_xml(lab, name, inactive=True).findall("devices/hostdev") == []
    finally:
        _allow_host_devices(lab, HOST, None)


def _iso_file(path, name):
    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path="/" + name)
        return out.getvalue().decode()
    finally:
        iso.close()


def test_cloud_init_is_merged_into_the_seed_iso(lab, name):
    cloud_init = {"user_data": {"packages": ["nginx"], "salt_minion": {"grains": {"role": "web"}}},
                  "network_config": {"version": 2, "ethernets": {"eth0": {"dhcp4": True}}}}
    info = lab.salt_json(HOST, "virt.init", name, 1, 128, "image=salt://centos.qcow2", "enable_qcow=True",
                         "start=False", f"cloud_init={json.dumps(cloud_init)}")[HOST]
    assert info["seeded"]["cloud_init"] == ["network_config", "user_data"], info
    iso = os.path.join(LAB_DIR, "hv1", "salt-images", name, "cidata.iso")
    user = yaml.safe_load(_iso_file(iso, "user-data"))
    assert user["packages"] == ["nginx"] and user["salt_minion"]["grains"] == {"role": "web"}
    assert user["salt_minion"]["conf"]["id"] == name
    assert "BEGIN RSA PRIVATE KEY" in user["salt_minion"]["private_key"]
    assert yaml.safe_load(_iso_file(iso, "network-config")) == cloud_init["network_config"]
    # The public key the master is told about is the one in the ISO.
    with open(os.path.join(LAB_DIR, "hv1", "salt-images", name, "minion.pub")) as fh:
        assert fh.read().strip() == user["salt_minion"]["public_key"].strip()


def test_the_runner_places_and_creates_a_vm_from_the_dicts(lab, vm):
    cpu = {"topology": {"sockets": 1, "cores": 2, "threads": 1}}
    _proc, info = lab.run_json("virt.init", vm, json.dumps(cpu), json.dumps({"boot": "256m", "current": "160m"}),
                               "image=salt://centos.qcow2", "enable_qcow=True")
    assert info["cpu"] == 2 and info["memory"] == 256 * 1024, info
    inactive = ET.fromstring(lab.run("virsh", info["host"], "dumpxml", "--inactive", vm).stdout)
    assert inactive.find("cpu/topology").get("cores") == "2"
    assert int(inactive.find("currentMemory").text) == 160 * 1024
