"""The classic statistics and host-fact functions (issue 16) against this host's libvirtd."""

import time
import uuid
import xml.etree.ElementTree as ET

import libvirt
import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from saltvirt.domain import stats


@pytest.fixture(scope="module")
def running_vm(loaders, libvirt_conn):
    """One running test guest (no seeding) shared by this file's domain tests."""
    name = f"svtest-{uuid.uuid4().hex[:8]}"
    virt = loaders.modules.virt
    ret = virt.init(name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, seed=False)
    assert ret["state"] == "running"
    yield name
    try:
        virt.force_off(name)
    except Exception:  # noqa: S110 - already off
        pass
    virt.purge(name)


def _xml(libvirt_conn, name):
    return ET.fromstring(libvirt_conn.lookupByName(name).XMLDesc(0))


def test_get_macs_are_the_domains_macs(virt, running_vm, libvirt_conn):
    expected = [m.get("address") for m in _xml(libvirt_conn, running_vm).findall("devices/interface/mac")]
    assert expected
    assert virt.get_macs(running_vm) == expected


def test_get_loader_of_a_bios_domain(virt, running_vm):
    assert virt.get_loader(running_vm)["path"] == "None"


def test_vm_cputime_of_a_running_domain(virt, running_vm):
    ret = virt.vm_cputime(running_vm)
    assert list(ret) == [running_vm]
    assert ret[running_vm]["cputime"] > 0
    assert 0 <= ret[running_vm]["cputime_percent"]
    assert running_vm in virt.vm_cputime()


def test_vm_diskstats_count_reads(virt, running_vm):
    deadline = time.monotonic() + 120
    while True:  # the guest boots from its disk: reads show up once its firmware reads it
        ret = virt.vm_diskstats(running_vm)[running_vm]
        if ret["rd_req"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(ret) == set(stats.DISK_COUNTERS)
    assert ret["rd_req"] > 0 and ret["rd_bytes"] > 0
    assert running_vm in virt.vm_diskstats()


def test_vm_netstats_keys(virt, running_vm):
    ret = virt.vm_netstats(running_vm)[running_vm]
    assert set(ret) == set(stats.NET_COUNTERS)
    assert all(isinstance(v, int) and v >= 0 for v in ret.values())
    assert running_vm in virt.vm_netstats()


def test_ctrl_alt_del_on_a_running_domain(virt, running_vm):
    assert virt.ctrl_alt_del(running_vm) is True


def test_migrate_start_postcopy_without_a_migration_fails(virt, running_vm):
    with pytest.raises(CommandExecutionError, match=running_vm):
        virt.migrate_start_postcopy(running_vm)


@pytest.mark.parametrize("function", ["get_macs", "get_loader", "vm_cputime", "vm_netstats", "vm_diskstats",
                                      "ctrl_alt_del", "migrate_start_postcopy"])
def test_unknown_vm_is_named(virt, function):
    with pytest.raises(SaltInvocationError, match="svtest-no-such-vm"):
        getattr(virt, function)("svtest-no-such-vm")


def test_ctrl_alt_del_on_a_stopped_domain_is_refused(virt, vm_name, libvirt_conn):
    libvirt_conn.defineXML(f"<domain type='qemu'><name>{vm_name}</name><memory>65536</memory>"
                           "<os><type>hvm</type></os></domain>")
    with pytest.raises(SaltInvocationError, match="not running"):
        virt.ctrl_alt_del(vm_name)
    assert virt.vm_diskstats(vm_name)[vm_name] == dict.fromkeys(stats.DISK_COUNTERS, 0)
    assert virt.get_macs(vm_name) == []


def test_hypervisor_and_virt_type(virt, loaders, libvirt_conn):
    expected = "kvm" if "type='kvm'" in libvirt_conn.getCapabilities() else "qemu"
    assert virt.get_hypervisor() == expected
    assert virt.get_hypervisor(connection="test:///no-such-driver") is None
    assert virt.virt_type() == loaders.grains["virtual"]


def test_domain_capabilities(virt, libvirt_conn):
    caps = virt.domain_capabilities(domain="qemu")
    assert caps["domain"] == "qemu"
    assert caps["arch"] and caps["emulator"] and caps["machine"]
    assert caps["max_vcpus"] > 0
    assert "disk" in caps["devices"] and "diskDevice" in caps["devices"]["disk"]
    with pytest.raises(CommandExecutionError, match="domain capabilities"):
        virt.domain_capabilities(domain="no-such-type")


def test_all_capabilities(virt):
    caps = virt.all_capabilities()
    guests = caps["host"]["guests"]
    assert caps["host"]["host"]["cpu"]["arch"]
    machines = [m for g in guests for m in g["arch"]["machines"]]
    assert machines
    assert "qemu" in {d["domain"] for d in caps["domains"]}
    assert any(d["machine"] for d in caps["domains"])


def test_cpu_baseline(virt):
    xml = virt.cpu_baseline()
    cpu = ET.fromstring(xml)
    assert cpu.tag == "cpu" and cpu.find("model").text
    parsed = virt.cpu_baseline(full=True, migratable=True, out="salt")
    assert parsed["model"] and parsed["features"]
    assert all("name" in f for f in parsed["features"])
    with pytest.raises(SaltInvocationError, match="out"):
        virt.cpu_baseline(out="json")


def test_node_devices(virt, libvirt_conn):
    devices = virt.node_devices()
    pci = {d["name"] for d in devices if d["caps"].split()[0] == "pci"}
    bridges = {dev.name() for dev in libvirt_conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)
               if "pci-bridge" in dev.XMLDesc(0)}
    assert pci and not pci & bridges
    assert all(d.get("address") for d in devices)


def test_get_profiles(virt):
    profiles = virt.get_profiles()
    assert profiles["nic"]["default"] == [{"name": "eth0", "type": "user", "source": None,
                                           "model": "virtio", "mac": None}]
    assert profiles["disk"]["default"][0]["name"] == "system"
    assert virt.get_profiles(hypervisor="qemu") == profiles
    with pytest.raises(SaltInvocationError, match="xen"):
        virt.get_profiles(hypervisor="xen")
