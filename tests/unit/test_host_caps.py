"""Pure parsing of libvirt's capabilities, node device and domain XML (issue 16's classic functions)."""

import pytest

from saltvirt.domain import stats
from saltvirt.errors import VirtError
from saltvirt.host import capabilities as caps
from saltvirt.host import devices
from saltvirt.provision import profiles

DOMAIN_CAPS = """<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path><domain>kvm</domain><machine>pc-q35-7.2</machine>
  <arch>x86_64</arch><vcpu max='255'/><iothreads supported='yes'/>
  <os supported='yes'>
    <loader supported='yes'>
      <value>/usr/share/OVMF/OVMF_CODE.fd</value>
      <enum name='type'><value>rom</value><value>pflash</value></enum>
      <enum name='readonly'><value>yes</value><value>no</value></enum>
    </loader>
  </os>
  <cpu>
    <mode name='host-passthrough' supported='yes'/>
    <mode name='host-model' supported='yes'>
      <model fallback='forbid'>EPYC</model><vendor>AMD</vendor>
      <feature policy='require' name='x2apic'/>
    </mode>
    <mode name='custom' supported='yes'>
      <model usable='yes'>qemu64</model><model usable='no'>Skylake</model>
    </mode>
    <mode name='maximum' supported='no'/>
  </cpu>
  <devices>
    <disk supported='yes'><enum name='diskDevice'><value>disk</value><value>cdrom</value></enum></disk>
    <hostdev supported='no'/>
  </devices>
  <features><gic supported='no'/><vmcoreinfo supported='yes'/></features>
</domainCapabilities>"""

HOST_CAPS = """<capabilities>
  <host>
    <uuid>0b7e0f2c-0000-0000-0000-000000000001</uuid>
    <cpu><arch>x86_64</arch><model>EPYC</model><vendor>AMD</vendor>
      <topology sockets='1' cores='2' threads='1'/>
      <feature name='x2apic'/><pages unit='KiB' size='4'/></cpu>
    <power_management><suspend_mem/></power_management>
    <migration_features><live/><uri_transports><uri_transport>tcp</uri_transport></uri_transports></migration_features>
    <topology><cells num='1'><cell id='0'><memory unit='KiB'>4000000</memory>
      <cpus num='2'><cpu id='0' socket_id='0' core_id='0' siblings='0'/>
        <cpu id='1' socket_id='0' core_id='1' siblings='1'/></cpus>
    </cell></cells></topology>
    <secmodel><model>apparmor</model><doi>0</doi></secmodel>
  </host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'>
      <wordsize>64</wordsize><emulator>/usr/bin/qemu-system-x86_64</emulator>
      <machine maxCpus='255'>pc-i440fx-7.2</machine>
      <machine canonical='pc-i440fx-7.2' maxCpus='255'>pc</machine>
      <domain type='qemu'/>
      <domain type='kvm'><emulator>/usr/bin/kvm</emulator></domain>
    </arch>
    <features><acpi default='on' toggle='yes'/><pae/></features>
  </guest>
</capabilities>"""


def test_domain_caps():
    parsed = caps.parse_domain_caps(DOMAIN_CAPS)
    assert parsed["emulator"] == "/usr/bin/qemu-system-x86_64"
    assert (parsed["domain"], parsed["machine"], parsed["arch"]) == ("kvm", "pc-q35-7.2", "x86_64")
    assert parsed["max_vcpus"] == 255 and parsed["iothreads"] is True
    assert parsed["os"]["loader"] == {"values": ["/usr/share/OVMF/OVMF_CODE.fd"], "type": ["rom", "pflash"],
                                      "readonly": ["yes", "no"]}
    assert parsed["cpu"] == {
        "host-passthrough": True,
        "host-model": {"model": {"name": "EPYC", "fallback": "forbid"}, "vendor": "AMD",
                       "features": {"x2apic": "require"}},
        "custom": {"models": {"qemu64": "yes", "Skylake": "no"}},
    }
    assert parsed["devices"] == {"disk": {"diskDevice": ["disk", "cdrom"]}}
    assert parsed["features"] == {"vmcoreinfo": {}}


def test_domain_caps_minimal_and_wrong_root():
    assert caps.parse_domain_caps("<domainCapabilities/>") == {
        "emulator": None, "domain": None, "machine": None, "arch": None}
    with pytest.raises(VirtError, match="domainCapabilities"):
        caps.parse_domain_caps("<capabilities/>")
    with pytest.raises(VirtError, match="unreadable"):
        caps.parse_domain_caps("<domainCapabilities>")


def test_host_caps():
    parsed = caps.parse_capabilities(HOST_CAPS)
    host = parsed["host"]
    assert host["uuid"].startswith("0b7e0f2c")
    assert host["cpu"] == {"arch": "x86_64", "model": "EPYC", "vendor": "AMD", "features": ["x2apic"],
                           "pages": [{"size": "4 KiB"}], "sockets": 1, "cores": 2, "threads": 1}
    assert host["power_management"] == ["suspend_mem"]
    assert host["migration"] == {"live": True, "transports": ["tcp"]}
    (cell,) = host["topology"]["cells"]
    assert cell["memory"] == "4000000 KiB" and cell["cpus"][1] == {"id": 1, "socket_id": 0, "core_id": 1,
                                                                    "siblings": "1"}
    assert host["security"] == [{"model": "apparmor", "doi": "0", "baselabels": []}]
    (guest,) = parsed["guests"]
    assert guest["os_type"] == "hvm"
    arch = guest["arch"]
    assert arch["wordsize"] == 64
    assert arch["machines"] == {"pc-i440fx-7.2": {"alternate_names": ["pc"], "maxcpus": 255}}
    assert arch["domains"]["kvm"]["emulator"] == "/usr/bin/kvm"
    assert guest["features"]["acpi"] == {"toggle": True, "default": True}
    assert guest["features"]["pae"] == {"toggle": False, "default": True}
    assert caps.guest_domains(parsed) == [("x86_64", "qemu", "/usr/bin/qemu-system-x86_64"),
                                          ("x86_64", "kvm", "/usr/bin/kvm")]
    assert caps.hypervisor_types(parsed) == ["kvm", "qemu"]


def test_cpu_baseline_parsing():
    assert "<model>EPYC</model>" in caps.host_cpu_xml(HOST_CAPS)
    cpu = caps.parse_cpu("<cpu mode='custom'><model fallback='forbid'>EPYC</model><vendor>AMD</vendor>"
                         "<feature policy='require' name='x2apic'/></cpu>")
    assert cpu == {"model": "EPYC", "vendor": "AMD", "features": [{"policy": "require", "name": "x2apic"}]}
    with pytest.raises(VirtError, match="no <cpu>"):
        caps.host_cpu_xml("<capabilities><host/></capabilities>")


PCI = """<device><name>pci_0000_3b_00_0</name><parent>pci_0000_00_02_0</parent>
  <capability type='pci'><class>0x020000</class><domain>0</domain><bus>59</bus><slot>0</slot><function>0</function>
    <product id='0x1572'>Ethernet Controller X710</product><vendor id='0x8086'>Intel Corporation</vendor>
    <capability type='virt_functions'><address domain='0x0000' bus='0x3b' slot='0x02' function='0x0'/></capability>
  </capability></device>"""
BRIDGE = """<device><name>pci_0000_00_1c_0</name><capability type='pci'><domain>0</domain><bus>0</bus>
  <slot>28</slot><function>0</function><product id='0x1'/><vendor id='0x8086'/>
  <capability type='pci-bridge'/></capability></device>"""
USB = """<device><name>usb_1_2</name><capability type='usb_device'><bus>1</bus><device>2</device>
  <product id='0x5678'/><vendor id='0x1234'>Acme</vendor></capability></device>"""
ROOT_HUB = """<device><name>usb_usb1</name><capability type='usb_device'><bus>1</bus><device>1</device>
  <product id='0x0002'>2.0 root hub</product><vendor id='0x1d6b'>Linux Foundation</vendor></capability></device>"""
NET = """<device><name>net_eth0_52_54_00_aa_bb_cc</name><parent>pci_0000_00_03_0</parent>
  <capability type='net'><interface>eth0</interface><address>52:54:00:aa:bb:cc</address>
  <link speed='1000' state='up'/></capability></device>"""
VIRTUAL_NET = NET.replace("pci_0000_00_03_0", "computer")


def test_node_devices_parsing():
    assert devices.parse_node_device(PCI) == {
        "caps": "pci", "name": "pci_0000_3b_00_0", "vendor_id": "0x8086", "product_id": "0x1572",
        "vendor": "Intel Corporation", "product": "Ethernet Controller X710", "address": "0000:3b:00.0",
        "PCI class": "0x020000", "virtual functions": ["0000:3b:02.0"]}
    assert devices.parse_node_device(USB) == {
        "caps": "usb_device", "name": "usb_1_2", "vendor_id": "0x1234", "product_id": "0x5678",
        "vendor": "Acme", "address": "001:002"}
    assert devices.parse_node_device(NET) == {
        "caps": "net", "name": "eth0", "address": "52:54:00:aa:bb:cc", "device name": "pci_0000_00_03_0",
        "state": "up"}
    for skipped in (BRIDGE, ROOT_HUB, VIRTUAL_NET, "<device><name>computer</name></device>"):
        assert devices.parse_node_device(skipped) is None


DOMAIN = """<domain type='kvm'><name>vm1</name>
  <os><type>hvm</type><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader></os>
  <devices>
    <disk type='file' device='disk'><source file='/srv/vm1/system.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>
    <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/><target dev='vnet3'/></interface>
    <interface type='user'><mac address='52:54:00:00:00:02'/></interface>
  </devices></domain>"""


def test_domain_readers():
    assert stats.macs(DOMAIN) == ["52:54:00:00:00:01", "52:54:00:00:00:02"]
    assert stats.interface_devices(DOMAIN) == ["vnet3"]
    assert stats.disk_devices(DOMAIN) == ["vda"]  # the empty CD-ROM has no counters
    assert stats.loader(DOMAIN) == {"path": "/usr/share/OVMF/OVMF_CODE.fd", "readonly": "yes", "type": "pflash"}
    assert stats.loader("<domain><name>vm2</name><os><type>hvm</type></os></domain>") == {"path": "None"}


def test_counters():
    assert stats.cpu_percent(0, 4, 2) == 0
    assert stats.cpu_percent(8 * 10**9, 4, 2) == 100
    assert stats.add_counters(stats.DISK_COUNTERS, [(1, 2, 3, 4, 0), (10, 20, 30, 40, 1)]) == {
        "rd_req": 11, "rd_bytes": 22, "wr_req": 33, "wr_bytes": 44, "errs": 1}
    assert stats.add_counters(stats.NET_COUNTERS, []) == dict.fromkeys(stats.NET_COUNTERS, 0)


def test_all_profiles():
    nic = {"two": {"eth0": {"bridge": "br1"}, "eth1": {"network": "default"}}}
    disk = {"big": [{"name": "system", "size": "2G"}]}
    found = profiles.all_profiles(disk, nic)
    assert set(found["nic"]) == {"default", "two"} and set(found["disk"]) == {"default", "big"}
    assert found["nic"]["default"] == profiles.nic_profile("default")
    assert [n["source"] for n in found["nic"]["two"]] == ["br1", "default"]
    assert found["disk"]["big"] == [{"name": "system", "size": 2 << 30}]
    assert profiles.all_profiles() == {"disk": {"default": profiles.disk_profile("default")},
                                       "nic": {"default": profiles.nic_profile("default")}}
