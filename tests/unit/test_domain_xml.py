"""Domain XML views: parse -> change -> write keeps what the code does not model.

Golden files in ``tests/data/xml``: each ``<case>-in.xml`` is parsed with
:class:`saltvirt.domain.xmlview.DomainXml`, round-tripped unchanged, then changed by the case's
function and compared with ``<case>-out.xml`` (canonical XML, so quoting and the spelling of
empty elements do not matter). ``SALT_VIRT_WRITE_GOLDEN=1`` writes the out files anew.
"""

import os
import xml.etree.ElementTree as ET

import pytest

from saltvirt.domain import chardev, hostdev, tuning
from saltvirt.domain import model as dommod
from saltvirt.domain.xmlview import DomainXml, parse
from saltvirt.errors import InvalidArgument
from saltvirt.storage.paths import Roots

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "xml")


def _canonical(xml):
    return ET.canonicalize(xml, strip_text=True)


def _read(name):
    with open(os.path.join(DATA, name)) as fh:
        return fh.read()


def _grow(view):
    """What virt.update does to a VM: more vCPUs and memory, one more disk."""
    view.vcpus = 4
    view.memory = view.current_memory = 4 * 1024 * 1024
    taken = [d.target for d in view.disks]
    dommod.Disk(target=dommod.next_disk_target(taken), source="/srv/salt-images/x/data.qcow2",
                format="qcow2").to_element(view.make("devices"))


def _console(view):
    """Graphics replaced the way virt.update redefines them; the NIC moved to another bridge."""
    for gfx in view.graphics:
        view.remove_device(gfx)
    dommod.Graphics(type="vnc", listen="127.0.0.1", port=-1, password="N3wpass").to_element(view.make("devices"))
    view.interfaces[0].source = "br1"


def _hardware(view):
    """What virt.update writes for the classic cpu/mem dicts, numatune, serials, consoles and
    host_devices: the rest (the scsi hostdev, the channel, the balloon, dies=) stays."""
    roots = Roots("/srv/salt-images", attach_roots=["/var/lib/serials"])
    sections = [
        tuning.cpu_section({"topology": {"sockets": 2, "cores": 1, "threads": 1}, "current": 2,
                            "features": {"pcid": "disable"}, "iothreads": 2})[1],
        tuning.mem_section({"boot": "1g", "current": "768m", "hard_limit": "2g", "nosharepages": True,
                            "hugepages": [{"size": "2m", "nodeset": "0"}]})[1],
        tuning.numatune_section({"memory": {"mode": "strict", "nodeset": "0"}}),
        chardev.Serials(chardev.serial_entries(
            [{"type": "tcp", "port": 4555, "protocol": "telnet"}, {"type": "file", "path": "/var/lib/serials/hw1"}],
            "/var/log/libvirt/qemu/hw1-serial.log", roots)),
        chardev.Consoles(chardev.console_entries([], roots)),
        hostdev.HostDevices([("usb", "0x046d", "0xc077", 1, 4)]),
    ]
    for section in sections:
        assert section.differences(view), section.name
        section.write(view)
        assert section.differences(view) == {}, section.name


CASES = {"testdriver": _grow, "virt-install": _grow, "live-chain": _console, "hardware": _hardware}


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_keeps_everything(case):
    xml = _read(f"{case}-in.xml")
    assert _canonical(DomainXml.parse(xml).to_xml()) == _canonical(xml)


@pytest.mark.parametrize("case", sorted(CASES))
def test_change_matches_the_golden_file(case):
    view = DomainXml.parse(_read(f"{case}-in.xml"))
    CASES[case](view)
    out = os.path.join(DATA, f"{case}-out.xml")
    if os.environ.get("SALT_VIRT_WRITE_GOLDEN"):
        ET.indent(view.element)
        with open(out, "w") as fh:
            fh.write(view.to_xml() + "\n")
    assert _canonical(view.to_xml()) == _canonical(_read(f"{case}-out.xml"))


def test_the_view_reads_what_libvirt_and_virt_install_write():
    view = DomainXml.parse(_read("virt-install-in.xml"))
    assert (view.name, view.type, view.vcpus, view.memory) == ("web7", "kvm", 2, 2097152)
    assert (view.arch, view.machine, view.cpu_mode, view.features) == (
        "x86_64", "pc-q35-7.2", "host-passthrough", ["acpi", "apic"])
    system, cdrom = view.disks
    assert (system.path, system.format, system.target, system.bus) == (
        "/var/lib/libvirt/images/web7.qcow2", "qcow2", "vda", "virtio")
    assert cdrom.device == "cdrom" and cdrom.readonly and cdrom.path is None
    assert [(n.type, n.source, n.mac, n.model) for n in view.interfaces] == [
        ("network", "default", "52:54:00:6b:3c:58", "virtio")]


def test_files_in_use_cover_backing_chains_and_nvram_not_network_disks():
    view = DomainXml.parse(_read("live-chain-in.xml"))
    assert view.memory == 512 * 1024  # unit='MiB' read as KiB
    system, network, block = view.disks
    assert system.backing == ["/srv/salt-images/base/debian-1f2e3d4c5b6a7988.qcow2"]
    assert (network.type, network.source_protocol, network.source_name, network.shareable) == (
        "network", "rbd", "pool/db1-data", True)
    assert block.path == "/dev/vg0/db1-logs" and block.cache == "none"
    assert view.files() == {
        "/srv/salt-images/db1/system.qcow2", "/srv/salt-images/base/debian-1f2e3d4c5b6a7988.qcow2",
        "/var/lib/libvirt/qemu/nvram/db1_VARS.fd"}


def test_the_inventory_model_reads_through_the_view():
    model = dommod.Domain.from_xml(_read("live-chain-in.xml"))
    assert [d.target for d in model.disks] == ["vda", "vdb", "vdc"]
    assert model.graphics[0].password == "s3cret" and model.graphics[0].listen == "127.0.0.1"
    assert model.serials[0].log == "/var/log/libvirt/qemu/db1-serial.log"
    assert model.to_info()["disks"]["vda"]["backing"] == [
        "/srv/salt-images/base/debian-1f2e3d4c5b6a7988.qcow2"]


def test_setting_none_removes_and_flags_toggle():
    view = DomainXml.parse(_read("testdriver-in.xml"))
    disk = view.disks[0]
    disk.readonly = True
    disk.cache = "none"
    assert "<readonly />" in view.to_xml() and disk.cache == "none"
    disk.readonly = False
    disk.cache = None
    assert "readonly" not in view.to_xml() and disk.find("driver").get("cache") is None
    view.kernel = "/boot/vmlinuz"
    assert view.find("os/kernel").text == "/boot/vmlinuz"
    view.kernel = None
    assert view.find("os/kernel") is None


@pytest.mark.parametrize(("xml", "message"), [
    ("<domain><name>x</name>", "not valid"),
    ("<network><name>x</name></network>", "not domain XML: <network> root"),
    ("<domain type='kvm'/>", "without a <name>"),
])
def test_bad_xml_is_refused_clearly(xml, message):
    with pytest.raises(InvalidArgument, match=message):
        DomainXml.parse(xml)
    assert parse("<domainsnapshot/>").tag == "domainsnapshot"
