"""saltvirt.domain.model: building, parsing and reporting libvirt domain XML."""

import re
import subprocess
import xml.etree.ElementTree as ET

import libvirt
import pytest

from saltvirt.domain.model import (
    Disk,
    Domain,
    Graphics,
    Interface,
    Serial,
    next_disk_target,
    random_mac,
    validate_name,
)
from saltvirt.errors import InvalidArgument, VirtError

UUID = "3f2c7a1e-5b8d-4c6e-9a0f-1d2e3b4c5a69"

# Modelled on `virsh dumpxml` of a running domain under libvirt 9.0 / QEMU 7.2 (Debian 12): the
# disk, serial, console and graphics parts are copied from a real run; the rest follows
# libvirt's formatter (aliases, PCI addresses, seclabels, implicit controllers and inputs).
LIVE_XML = """\
<domain type='kvm' id='3'>
  <name>web1</name>
  <uuid>3f2c7a1e-5b8d-4c6e-9a0f-1d2e3b4c5a69</uuid>
  <metadata>
    <saltvirt:vm xmlns:saltvirt="https://salt-virt.example/xmlns/1">
      <saltvirt:profile>small</saltvirt:profile>
    </saltvirt:vm>
  </metadata>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>1048576</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <boot dev='hd'/>
    <boot dev='cdrom'/>
  </os>
  <features>
    <acpi/>
    <apic/>
    <vmport state='off'/>
  </features>
  <cpu mode='host-passthrough' check='none' migratable='on'/>
  <clock offset='utc'>
    <timer name='rtc' tickpolicy='catchup'/>
    <timer name='pit' tickpolicy='delay'/>
    <timer name='hpet' present='no'/>
  </clock>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <pm>
    <suspend-to-mem enabled='no'/>
    <suspend-to-disk enabled='no'/>
  </pm>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' discard='unmap'/>
      <source file='/var/lib/libvirt/images/web1/system.qcow2' index='3'/>
      <backingStore type='file' index='4'>
        <format type='qcow2'/>
        <source file='/var/lib/salt-virt/images/debian-12-patched.qcow2'/>
        <backingStore type='file' index='5'>
          <format type='qcow2'/>
          <source file='/var/lib/salt-virt/images/debian-12.qcow2'/>
          <backingStore/>
        </backingStore>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/web1/cidata.iso' index='1'/>
      <backingStore/>
      <target dev='sda' bus='sata'/>
      <readonly/>
      <alias name='sata0-0-0'/>
      <address type='drive' controller='0' bus='0' target='0' unit='0'/>
    </disk>
    <controller type='usb' index='0' model='qemu-xhci' ports='15'>
      <alias name='usb'/>
      <address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>
    </controller>
    <controller type='sata' index='0'>
      <alias name='ide'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x1f' function='0x2'/>
    </controller>
    <controller type='pci' index='0' model='pcie-root'>
      <alias name='pcie.0'/>
    </controller>
    <interface type='bridge'>
      <mac address='52:54:00:6b:3c:58'/>
      <source bridge='br0'/>
      <target dev='vnet0'/>
      <model type='virtio'/>
      <alias name='net0'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:0a:0b:0c'/>
      <source network='default' portid='0d1b5a3c-2f44-4f4e-8a39-5c9d9b1d2e10' bridge='virbr0'/>
      <target dev='vnet1'/>
      <model type='e1000e'/>
      <alias name='net1'/>
      <address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/>
    </interface>
    <serial type='pty'>
      <source path='/dev/pts/2'/>
      <log file='/var/log/libvirt/qemu/web1-serial0.log' append='on'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
      <alias name='serial0'/>
    </serial>
    <console type='pty' tty='/dev/pts/2'>
      <source path='/dev/pts/2'/>
      <log file='/var/log/libvirt/qemu/web1-serial0.log' append='on'/>
      <target type='serial' port='0'/>
      <alias name='serial0'/>
    </console>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-3-web1/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
      <alias name='channel0'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <input type='tablet' bus='usb'>
      <alias name='input0'/>
      <address type='usb' bus='0' port='1'/>
    </input>
    <input type='mouse' bus='ps2'>
      <alias name='input1'/>
    </input>
    <graphics type='vnc' port='5900' autoport='yes' listen='127.0.0.1'>
      <listen type='address' address='127.0.0.1'/>
    </graphics>
    <audio id='1' type='none'/>
    <video>
      <model type='virtio' heads='1' primary='yes'/>
      <alias name='video0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/>
    </video>
    <memballoon model='virtio'>
      <stats period='5'/>
      <alias name='balloon0'/>
      <address type='pci' domain='0x0000' bus='0x06' slot='0x00' function='0x0'/>
    </memballoon>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
      <alias name='rng0'/>
      <address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x0'/>
    </rng>
  </devices>
  <seclabel type='dynamic' model='apparmor' relabel='yes'>
    <label>libvirt-3f2c7a1e-5b8d-4c6e-9a0f-1d2e3b4c5a69</label>
    <imagelabel>libvirt-3f2c7a1e-5b8d-4c6e-9a0f-1d2e3b4c5a69</imagelabel>
  </seclabel>
  <seclabel type='dynamic' model='dac' relabel='yes'>
    <label>+64055:+64055</label>
    <imagelabel>+64055:+64055</imagelabel>
  </seclabel>
</domain>
"""


def variants():
    """Domains covering every feature the model can write, keyed by a readable id."""
    return {
        "raw-disk": Domain(
            "raw1", type="qemu", memory=262144,
            disks=[Disk("vda", "/var/lib/libvirt/images/raw1/system.img")],
        ),
        "qcow2-disk": Domain(
            "qcow1", uuid=UUID, memory=1048576, current_memory=524288, vcpus=2, type="qemu",
            machine="pc-q35-7.2", boot=["hd", "network"],
            disks=[Disk("vda", "/var/lib/libvirt/images/q/a.qcow2", format="qcow2",
                        cache="none"),
                   Disk("vdb", source_dev="/dev/vg0/data")],
            interfaces=[Interface("bridge", "br0", mac="52:54:00:12:34:56"),
                        Interface("network", mac="52:54:00:12:34:57", model="e1000e")],
            serials=[Serial(log="/var/log/libvirt/qemu/qcow1-serial0.log"), Serial(port=1)],
            rng=True,
        ),
        "cdrom-readonly": Domain(
            "install.test", type="qemu", boot=[],
            disks=[Disk("vda", "/srv/vm/a.qcow2", format="qcow2", boot_order=2),
                   Disk("sda", "/srv/iso/debian.iso", device="cdrom", boot_order=1),
                   Disk("sdb", device="cdrom")],
            graphics=[Graphics("spice")],
        ),
        "vnc-password": Domain(
            "vnc1", type="qemu",
            graphics=[Graphics(password="s3cret!", websocket=-1), Graphics(port=5999)],
        ),
        "user-nic": Domain(
            "user1", type="qemu", memballoon=False,
            interfaces=[Interface("user", mac="52:54:00:aa:bb:cc"),
                        Interface("direct", "eth0", mac="52:54:00:aa:bb:cd", mode="vepa")],
        ),
        "direct-kernel": Domain(
            "kernel1", type="qemu", kernel="/var/lib/salt-virt/boot/vmlinuz",
            initrd="/var/lib/salt-virt/boot/initrd.img", cmdline="console=ttyS0 root=/dev/vda",
            features=["acpi", "apic", "pae"], on_reboot="destroy", on_crash="coredump-destroy",
            cpu_mode="custom", cpu_model="qemu64", serials=[Serial()],
        ),
        "kvm": Domain(
            "kvm-1_a+b", type="kvm", cpu_mode="host-passthrough", vcpus=4, memory=4194304,
            emulator="/usr/bin/qemu-system-x86_64",
            disks=[Disk("sda", "/srv/vm/k.raw", bus="scsi", readonly=True),
                   Disk("hda", "/srv/vm/k2.raw", bus="ide")],
            interfaces=[Interface("bridge", "br-lan")], graphics=[Graphics()],
        ),
    }


VARIANTS = variants()


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_round_trip_is_equal(key):
    dom = VARIANTS[key]
    xml = dom.to_xml()
    again = Domain.from_xml(xml)
    assert again == dom
    assert again.to_xml() == xml
    assert again.to_info() == dom.to_info()


def assert_schema_valid(xml, path):
    """Validate against libvirt's own RelaxNG schema; never skipped (missing tools fail)."""
    path.write_text(xml)
    proc = subprocess.run(["/usr/bin/virt-xml-validate", str(path), "domain"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{proc.stderr}{proc.stdout}\n{xml}"
    assert "validates" in proc.stderr + proc.stdout  # xmllint reports on stderr


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_generated_xml_passes_virt_xml_validate(key, tmp_path):
    assert_schema_valid(VARIANTS[key].to_xml(), tmp_path / f"{key}.xml")


def test_live_model_re_emitted_passes_virt_xml_validate(tmp_path):
    xml = Domain.from_xml(LIVE_XML).to_xml()
    assert "vnet0" not in xml  # libvirt-chosen tap names must not be written back
    assert "backingStore" not in xml
    assert_schema_valid(xml, tmp_path / "live.xml")


def test_to_info_has_the_stable_keys():
    info = VARIANTS["qcow2-disk"].to_info()
    assert set(info) == {"name", "uuid", "type", "cpu", "memory", "os", "graphics", "disks", "nics"}
    assert info["name"] == "qcow1" and info["uuid"] == UUID and info["type"] == "qemu"
    assert info["cpu"] == 2 and info["memory"] == 1048576
    assert info["os"] == {"type": "hvm", "arch": "x86_64", "machine": "pc-q35-7.2",
                          "boot": ["hd", "network"], "kernel": None, "initrd": None,
                          "cmdline": None, "efi": False, "nvram": None}
    assert info["disks"]["vda"] == {"file": "/var/lib/libvirt/images/q/a.qcow2", "type": "file",
                                    "device": "disk", "format": "qcow2", "bus": "virtio",
                                    "readonly": False, "backing": []}
    assert info["disks"]["vdb"]["file"] == "/dev/vg0/data"
    assert info["disks"]["vdb"]["type"] == "block"
    assert info["nics"] == {
        "52:54:00:12:34:56": {"type": "bridge", "source": "br0", "model": "virtio", "target": None},
        "52:54:00:12:34:57": {"type": "network", "source": "default", "model": "e1000e",
                              "target": None},
    }
    assert info["graphics"] == []
    graphics = VARIANTS["vnc-password"].to_info()["graphics"]
    assert graphics == [
        {"type": "vnc", "listen": "127.0.0.1", "port": -1, "autoport": True, "password_set": True},
        {"type": "vnc", "listen": "127.0.0.1", "port": 5999, "autoport": False,
         "password_set": False},
    ]


def test_live_xml_gives_the_right_info():
    dom = Domain.from_xml(LIVE_XML)
    info = dom.to_info()
    assert info["name"] == "web1"
    assert info["uuid"] == UUID
    assert info["type"] == "kvm"
    assert info["cpu"] == 2
    assert info["memory"] == 2097152
    assert dom.current_memory == 1048576
    assert info["os"]["machine"] == "pc-q35-7.2"
    assert info["os"]["boot"] == ["hd", "cdrom"]
    assert info["disks"]["vda"] == {
        "file": "/var/lib/libvirt/images/web1/system.qcow2", "type": "file", "device": "disk",
        "format": "qcow2", "bus": "virtio", "readonly": False,
        # Nearest first, down to the base image.
        "backing": ["/var/lib/salt-virt/images/debian-12-patched.qcow2",
                    "/var/lib/salt-virt/images/debian-12.qcow2"],
    }
    assert info["disks"]["sda"]["device"] == "cdrom"
    assert info["disks"]["sda"]["readonly"] is True
    assert info["disks"]["sda"]["backing"] == []  # an empty <backingStore/> is no backing file
    assert dom.disks[0].cache == "none"
    assert info["nics"] == {
        "52:54:00:6b:3c:58": {"type": "bridge", "source": "br0", "model": "virtio",
                              "target": "vnet0"},
        "52:54:00:0a:0b:0c": {"type": "network", "source": "default", "model": "e1000e",
                              "target": "vnet1"},
    }
    assert info["graphics"] == [{"type": "vnc", "listen": "127.0.0.1", "port": 5900,
                                 "autoport": True, "password_set": False}]
    assert dom.serials == [Serial(port=0, log="/var/log/libvirt/qemu/web1-serial0.log",
                                  tty="/dev/pts/2")]
    assert dom.features == ["acpi", "apic"]  # <vmport state='off'/> carries a setting: skipped
    assert dom.cpu_mode == "host-passthrough" and dom.cpu_model is None
    assert dom.emulator == "/usr/bin/qemu-system-x86_64"
    assert dom.memballoon is True and dom.rng is True
    dom.check()  # what libvirt reports is itself a valid model


def test_live_tcg_cpu_is_read_as_custom_model():
    xml = LIVE_XML.replace(
        "<cpu mode='host-passthrough' check='none' migratable='on'/>",
        "<cpu mode='custom' match='exact' check='full'><model fallback='forbid'>qemu64</model>"
        "<feature policy='require' name='hypervisor'/></cpu>",
    ).replace("<domain type='kvm' id='3'>", "<domain type='qemu' id='3'>")
    dom = Domain.from_xml(xml)
    assert (dom.type, dom.cpu_mode, dom.cpu_model) == ("qemu", "custom", "qemu64")


def test_memory_units_other_than_kib_are_converted():
    dom = Domain.from_xml("<domain type='qemu'><name>m</name><memory unit='GiB'>2</memory>"
                          "<currentMemory unit='MiB'>512</currentMemory></domain>")
    assert dom.memory == 2097152 and dom.current_memory == 524288
    dom = Domain.from_xml("<domain type='qemu'><name>m</name><memory unit='bytes'>1048576"
                          "</memory><currentMemory>1024</currentMemory></domain>")
    assert dom.memory == 1024 and dom.current_memory == 1024  # no unit attribute means KiB
    assert dom.disks == [] and dom.boot == [] and dom.memballoon is False


@pytest.mark.parametrize("bad", ["not xml <", "<network><name>x</name></network>",
                                 "<domain type='kvm'/>"])
def test_from_xml_rejects_non_domain_xml(bad):
    with pytest.raises(InvalidArgument):
        Domain.from_xml(bad)


def test_secure_xml_password_is_never_in_info():
    xml = LIVE_XML.replace("listen='127.0.0.1'>", "listen='127.0.0.1' passwd='hunter22'>")
    dom = Domain.from_xml(xml)
    assert dom.graphics[0].password == "hunter22"
    info = dom.to_info()
    assert info["graphics"][0]["password_set"] is True
    assert "hunter22" not in repr(info)
    assert "password" not in info["graphics"][0]
    assert "hunter22" not in repr(dom)  # keeps it out of logs and tracebacks too


def test_defaults_are_safe():
    dom = Domain("d1", graphics=[Graphics()], serials=[Serial(log="/var/log/s.log")],
                 disks=[Disk("vda", "/srv/a.img")], interfaces=[Interface("bridge", "br0")])
    root = ET.fromstring(dom.to_xml())
    gfx = root.find("devices/graphics")
    assert gfx.get("listen") == "127.0.0.1"
    assert gfx.find("listen").get("address") == "127.0.0.1"
    assert "0.0.0.0" not in dom.to_xml()
    assert (gfx.get("port"), gfx.get("autoport")) == ("-1", "yes")
    assert root.find("features/acpi") is not None and root.find("features/apic") is not None
    assert root.find("devices/memballoon").get("model") == "virtio"
    assert [b.get("dev") for b in root.findall("os/boot")] == ["hd"]
    assert root.find("os/type").get("arch") == "x86_64" and root.find("os/type").text == "hvm"
    assert root.find("memory").text == root.find("currentMemory").text
    assert root.find("cpu") is None  # no host-passthrough unless asked
    assert root.find("devices/interface/model").get("type") == "virtio"
    log = root.find("devices/serial/log")
    assert (log.get("file"), log.get("append")) == ("/var/log/s.log", "on")
    consoles = root.findall("devices/console")
    assert len(consoles) == 1 and consoles[0].find("target").get("type") == "serial"
    assert root.find("devices/interface/target") is None
    assert root.find("devices/rng") is None


def test_explicit_listen_anywhere_is_allowed():
    gfx = ET.fromstring(Domain("d", graphics=[Graphics(listen="0.0.0.0")]).to_xml())
    assert gfx.find("devices/graphics").get("listen") == "0.0.0.0"


def test_cdrom_defaults_to_sata_and_readonly():
    disk = Disk("sda", "/srv/x.iso", device="cdrom")
    assert (disk.bus, disk.readonly, disk.type) == ("sata", True, "file")
    assert Disk("vdb", source_dev="/dev/sdb").type == "block"
    assert Interface("direct", "eth0").mode == "bridge"
    assert Interface("network").source == "default"


@pytest.mark.parametrize("name, reason", [
    ("", "non-empty"),
    ("a" * 65, "65 characters long"),
    ("a/b", "'/'"),
    ("a..b", "'..'"),
    ("a b", "whitespace"),
    ("a\tb", "whitespace"),
    ("a\0b", "NUL"),
    ("-web", "starts with '-'"),
    (".web", "starts with '.'"),
    ("web$1", "'$'"),
    ("wéb", "'é'"),
    ("web;rm", "';'"),
    (None, "non-empty string"),
])
def test_validate_name_rejects(name, reason):
    with pytest.raises(InvalidArgument, match=re.escape(reason)):
        validate_name(name)
    if isinstance(name, str) and name:
        with pytest.raises(InvalidArgument, match=re.escape(reason)):
            Domain(name).to_xml()


@pytest.mark.parametrize("name", ["web1", "a" * 64, "db_2.prod+blue", "A-b", "x"])
def test_validate_name_accepts(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("dom, reason", [
    (Domain("d", type="qemu", cpu_mode="host-passthrough"), "needs type 'kvm'"),
    (Domain("d", type="xen"), "'qemu' or 'kvm'"),
    (Domain("d", memory=0), "memory must be a positive integer"),
    (Domain("d", memory=1024, current_memory=2048), "current_memory exceeds memory"),
    (Domain("d", vcpus=True), "vcpus must be a positive integer"),
    (Domain("d", uuid="nope"), "bad uuid"),
    (Domain("d", boot=["usb"]), "boot devices"),
    (Domain("d", disks=[Disk("vda", "/a", boot_order=1)]), "boot_order needs boot=[]"),
    (Domain("d", initrd="/boot/initrd"), "need a kernel"),
    (Domain("d", cpu_mode="custom"), "cpu_model"),
    (Domain("d", on_crash="explode"), "on_crash"),
    (Domain("d", disks=[Disk("vda", "/a"), Disk("vda", "/b")]), "duplicate disk target vda"),
    (Domain("d", serials=[Serial(), Serial()]), "duplicate serial port 0"),
    (Domain("d", serials=[Serial(log="rel.log")]), "not an absolute path"),
    (Domain("d", disks=[Disk("vda")]), "needs source"),
    (Domain("d", disks=[Disk("sda", "/a")]), "must look like 'vda'"),
    (Domain("d", disks=[Disk("vda", "/a.iso", device="cdrom", bus="virtio")]), "cdrom"),
    (Domain("d", disks=[Disk("vda", "rel.img")]), "not absolute"),
    (Domain("d", disks=[Disk("vda", "/a", source_dev="/dev/b")]), "either source"),
    (Domain("d", disks=[Disk("vda", "/a", cache="fast")]), "cache"),
    (Domain("d", disks=[Disk("sda", "/a", bus="sata", readonly=True)]), "read-only disk"),
    (Domain("d", disks=[Disk("hda", "/a", bus="ide", readonly=True)]), "read-only disk"),
    (Domain("d", interfaces=[Interface("user", "br0")]), "takes no source"),
    (Domain("d", interfaces=[Interface("bridge")]), "needs a source"),
    (Domain("d", interfaces=[Interface("bridge", "br0", mac="01:00:00:00:00:01")]), "unicast"),
    (Domain("d", interfaces=[Interface("bridge", "br0", mac="52:54:00:zz:00:01")]), "MAC"),
    (Domain("d", interfaces=[Interface("bridge", "br0", mode="vepa")]), "direct"),
    (Domain("d", graphics=[Graphics(password="123456789")]), "1 to 8 characters"),
    (Domain("d", graphics=[Graphics(port=5000)]), "5900..65535"),
    (Domain("d", graphics=[Graphics(autoport=False)]), "needs autoport"),
    (Domain("d", graphics=[Graphics("spice", websocket=5700)]), "VNC only"),
    (Domain("d", graphics=[Graphics("sdl")]), "'vnc' or 'spice'"),
])
def test_check_rejects(dom, reason):
    with pytest.raises(InvalidArgument, match=re.escape(reason)):
        dom.to_xml()


def test_next_disk_target():
    assert next_disk_target([]) == "vda"
    assert next_disk_target(["vda", "vdb", "sda"]) == "vdc"
    assert next_disk_target(["vda", "vdc"]) == "vdb"  # fills gaps
    assert next_disk_target(["vda"], "sata") == "sda"
    assert next_disk_target(["sda"], "scsi") == "sdb"  # sata and scsi share the sd namespace
    assert next_disk_target([], "ide") == "hda"
    assert next_disk_target([f"vd{chr(c)}" for c in range(ord("a"), ord("z") + 1)]) == "vdaa"
    many = ["vd" + chr(c) for c in range(ord("a"), ord("z") + 1)] + ["vdaa", "vdab"]
    assert next_disk_target(many) == "vdac"
    with pytest.raises(InvalidArgument, match="no free disk target"):
        next_disk_target(["hda", "hdb", "hdc", "hdd"], "ide")
    with pytest.raises(InvalidArgument, match="unknown disk bus"):
        next_disk_target([], "floppy")


def test_random_mac():
    macs = {random_mac() for _ in range(200)}
    assert len(macs) == 200
    assert all(re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", m) for m in macs)
    assert re.fullmatch(r"02:ab(:[0-9a-f]{2}){4}", random_mac("02:AB"))
    for mac in (random_mac(""), random_mac(None)):
        first = int(mac[:2], 16)
        assert first & 1 == 0 and first & 2 == 2  # unicast, locally administered
    for bad in ("01:00:5e", "5:54", "52:54:00:00:00:00", "xx"):
        with pytest.raises(InvalidArgument, match="MAC prefix"):
            random_mac(bad)


class _Held:
    """A domain whose undefine libvirt refuses: its state change lock is held by ``holder``."""

    def __init__(self, holder, active=False):
        self.holder, self.active = holder, active

    def name(self):
        return "vm1"

    def isActive(self):  # noqa: N802 (libvirt's name)
        return self.active

    def undefineFlags(self, flags):  # noqa: N802
        error = libvirt.libvirtError("")
        error.get_error_message = lambda: ("Timed out during operation: cannot acquire state change lock "
                                           f"(held by monitor={self.holder})")
        raise error


def test_undefine_names_the_migration_job_libvirt_kept_and_the_fix():
    from saltvirt.domain import vmops

    with pytest.raises(VirtError) as kept:
        vmops.undefine(_Held("remoteDispatchDomainMigratePerform3Params"))
    assert str(kept.value).startswith("undefine vm1 failed: Timed out during operation")
    assert str(kept.value).endswith("restart libvirtd on this hypervisor, then purge again")
    # Another holder, or a running domain (a migration under way): the plain error.
    for dom in (_Held("remoteDispatchDomainGetBlockInfo"), _Held("remoteDispatchDomainMigratePerform3Params", True)):
        with pytest.raises(VirtError) as other:
            vmops.undefine(dom)
        assert "restart libvirtd" not in str(other.value) and "state change lock" in str(other.value)
