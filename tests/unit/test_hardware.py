"""The classic hardware arguments: cpu/mem dicts, numatune, serials, consoles, host_devices
(saltvirt.domain.tuning/chardev/hostdev, saltvirt.provision.hardware) and their updates."""

import libvirt
import pytest

from saltvirt.domain import chardev, hostdev, pending, tuning
from saltvirt.domain import update as upd
from saltvirt.domain.model import Domain, Serial
from saltvirt.domain.xmlview import DomainXml
from saltvirt.errors import InvalidArgument, NotFound
from saltvirt.provision import hardware
from saltvirt.provision.spec import UpdateSpec, VmSpec
from saltvirt.settings import from_dict
from saltvirt.storage.paths import Roots

ROOTS = Roots("/srv/salt-images", attach_roots=["/var/lib/serials"])
LOG = "/var/log/libvirt/qemu/vm1-serial.log"


def built(*sections, **kw):
    """The view of a new domain (as virt.init builds it) with ``sections`` written."""
    kw.setdefault("serials", [Serial(log=LOG)])
    return DomainXml.parse(Domain(name="vm1", type="qemu", sections=list(sections), **kw).to_xml())


# --------------------------------------------------------------------------- cpu


def test_a_plain_cpu_is_a_count_without_section():
    assert tuning.cpu_section(2) == (2, None)
    assert tuning.cpu_section("3") == (3, None)
    with pytest.raises(InvalidArgument, match="cpu must be at least 1, not 0"):
        tuning.cpu_section(0)
    with pytest.raises(InvalidArgument, match="cpu and mem must be integers"):
        tuning.cpu_section("two")


def test_the_cpu_dict_is_written_and_read_back_as_asked():
    count, section = tuning.cpu_section({
        "placement": "static", "cpuset": "0-1", "current": 2, "mode": "custom", "match": "exact",
        "model": {"name": "qemu64", "fallback": "forbid"}, "vendor": "AMD",
        "topology": {"sockets": 2, "cores": 2, "threads": 1}, "cache": {"level": 3, "mode": "emulate"},
        "features": {"pcid": "disable", "x2apic": None}, "iothreads": 2,
        "numa": {0: {"cpus": "0-1", "memory": "256m"}, "1": {"cpus": "2-3", "memory": 256, "discard": True,
                                                              "memAccess": "shared"}},
    })
    assert count == 4
    view = built(section, vcpus=count)
    cpu = view.find("cpu")
    assert (cpu.get("mode"), cpu.get("match")) == ("custom", "exact")
    assert view.find("cpu/model").text == "qemu64" and view.find("cpu/model").get("fallback") == "forbid"
    assert view.find("cpu/topology").attrib == {"sockets": "2", "cores": "2", "threads": "1"}
    assert view.find("cpu/cache").attrib == {"level": "3", "mode": "emulate"}
    assert {f.get("name"): f.get("policy") for f in cpu.findall("feature")} == {"pcid": "disable", "x2apic": "require"}
    assert [c.attrib for c in cpu.findall("numa/cell")] == [
        {"id": "0", "cpus": "0-1", "memory": "262144", "unit": "KiB"},
        {"id": "1", "cpus": "2-3", "memory": "262144", "unit": "KiB", "discard": "yes", "memAccess": "shared"}]
    assert (view.find("vcpu").text, view.find("vcpu").get("current"), view.find("vcpu").get("cpuset")) == (
        "4", "2", "0-1")
    assert view.find("iothreads").text == "2"
    assert section.differences(view) == {}


def test_the_vcpu_count_comes_from_maximum_current_or_the_topology():
    assert tuning.cpu_section({"current": 2})[0] == 2
    assert tuning.cpu_section({"current": 1, "maximum": 4})[0] == 4
    assert tuning.cpu_section({"topology": {"sockets": 1, "cores": 2}})[0] == 2
    with pytest.raises(InvalidArgument, match="topology gives 2 vCPUs .* maximum 4"):
        tuning.cpu_section({"maximum": 4, "topology": {"sockets": 1, "cores": 2, "threads": 1}})
    with pytest.raises(InvalidArgument, match="current 3 exceeds maximum 2"):
        tuning.cpu_section({"current": 3, "maximum": 2})
    with pytest.raises(InvalidArgument, match="the number of vCPUs is not known"):
        tuning.cpu_section({"mode": "host-model"})


@pytest.mark.parametrize("cpu, message", [
    ({"current": 1, "tuning": {"vcpupin": {0: "1"}}}, r"cpu:tuning \(CPU tuning .*\) is not supported"),
    ({"current": 1, "vcpus": {0: {"enabled": True}}}, r"cpu:vcpus \(per-vCPU settings .*\) is not supported"),
    ({"current": 1, "sockets": 1}, "cpu: unknown key.* sockets"),
    ({"current": 1, "mode": "host"}, "'host' is not one of custom, host-model"),
    ({"current": 1, "features": {"pcid": "maybe"}}, "cpu:features:pcid: 'maybe'"),
    ({"current": 1, "cpuset": "0-3;5"}, "is not a CPU/node set"),
    ({"current": 1, "topology": {"dies": 2}}, "cpu:topology: unknown key.* dies"),
    ({"current": 1, "numa": {0: {"cpus": "0"}}}, "cpu:numa:0: cpus and memory must be given"),
    ({"current": 1, "numa": {0: {"cpus": "0", "memory": 1, "distances": {}}}}, "NUMA distances"),
])
def test_cpu_dict_refusals_name_the_key(cpu, message):
    with pytest.raises(InvalidArgument, match=message):
        tuning.cpu_section(cpu)


def test_libvirt_dropping_current_equal_to_maximum_is_no_difference():
    _count, section = tuning.cpu_section({"current": 2, "maximum": 2})
    view = DomainXml.parse("<domain><name>x</name><vcpu placement='static'>2</vcpu></domain>")
    assert section.differences(view) == {}
    view = DomainXml.parse("<domain><name>x</name><vcpu placement='static' current='1'>2</vcpu></domain>")
    assert section.differences(view) == {"current": (1, 2)}


# --------------------------------------------------------------------------- mem


def test_plain_mem_takes_units_and_bare_numbers_are_mib():
    assert tuning.mem_section(512) == (512, None)
    assert tuning.mem_section("1g") == (1024, None)
    assert tuning.mem_section("1536 MiB") == (1536, None)
    with pytest.raises(InvalidArgument, match="mem: invalid size"):
        tuning.mem_section("lots")
    with pytest.raises(InvalidArgument, match="mem must be a positive number of MiB, not 0"):
        tuning.mem_section(0)


def test_the_mem_dict_is_written_in_kib_and_read_back():
    mib, section = tuning.mem_section({
        "boot": "1g", "current": "512m", "max": "4g", "slots": 4, "hard_limit": "2g", "soft_limit": 1024,
        "swap_hard_limit": "3g", "min_guarantee": "256m", "nosharepages": True, "locked": True,
        "source": "memfd", "access": "shared", "allocation": "immediate", "discard": True,
        "hugepages": [{"size": "2m", "nodeset": "0"}, {"size": "1g"}],
    })
    assert mib == 1024
    view = built(section, memory=mib * 1024)
    assert view.memory == 1048576 and view.current_memory == 524288
    assert (view.find("maxMemory").text, view.find("maxMemory").get("slots")) == ("4194304", "4")
    assert {e.tag: e.text for e in view.find("memtune")} == {
        "hard_limit": "2097152", "soft_limit": "1048576", "swap_hard_limit": "3145728", "min_guarantee": "262144"}
    backing = view.find("memoryBacking")
    assert {e.tag for e in backing} == {"nosharepages", "locked", "discard", "source", "access", "allocation",
                                        "hugepages"}
    assert [p.attrib for p in backing.findall("hugepages/page")] == [
        {"size": "2048", "unit": "KiB", "nodeset": "0"}, {"size": "1048576", "unit": "KiB"}]
    assert section.differences(view) == {}


def test_mem_boot_and_current_default_to_each_other():
    assert tuning.mem_section({"current": "256m"})[1].want == {"current": 262144, "boot": 262144}
    assert tuning.mem_section({"boot": 300})[1].want == {"boot": 307200, "current": 307200}


@pytest.mark.parametrize("mem, message", [
    ({"hard_limit": "1g"}, "give boot or current"),
    ({"boot": 256, "current": 512}, "current 524288 KiB exceeds boot 262144 KiB"),
    ({"boot": 256, "max": "1g"}, "max and slots go together"),
    ({"boot": "1g", "max": 512, "slots": 2}, "max must be at least boot"),
    ({"boot": 256, "source": "disk"}, "'disk' is not one of anonymous, file, memfd"),
    ({"boot": 256, "balloon": True}, "mem: unknown key.* balloon"),
    ({"boot": "0.5k"}, "whole number of KiB"),
])
def test_mem_dict_refusals(mem, message):
    with pytest.raises(InvalidArgument, match=message):
        tuning.mem_section(mem)


def test_a_flag_asked_off_is_removed_and_compared():
    _mib, section = tuning.mem_section({"boot": 256, "locked": False})
    view = built(tuning.mem_section({"boot": 256, "locked": True})[1])
    assert section.differences(view) == {"locked": (True, False)}
    section.write(view)
    assert view.find("memoryBacking/locked") is None and section.differences(view) == {}


def test_null_removes_a_memory_setting_of_an_existing_vm():
    """The classic virt.running example ``mem: {hard_limit: null, soft_limit: null}``."""
    view = built(tuning.mem_section({"boot": 256, "hard_limit": "1g", "soft_limit": "512m"})[1])
    mib, section = tuning.mem_section({"hard_limit": None, "soft_limit": None}, update=True)
    assert mib is None  # the memory size is left alone
    assert section.differences(view) == {"hard_limit": (1048576, None), "soft_limit": (524288, None)}
    section.write(view)
    assert view.find("memtune/hard_limit") is None and view.find("memtune/soft_limit") is None
    assert view.find("memory").text == str(256 * 1024)
    assert section.differences(view) == {}
    # Without update (a new VM) the size is still needed, and boot cannot be removed.
    with pytest.raises(InvalidArgument, match="give boot or current"):
        tuning.mem_section({"hard_limit": None})
    with pytest.raises(InvalidArgument, match="boot and current cannot be removed"):
        tuning.mem_section({"boot": None}, update=True)
    with pytest.raises(InvalidArgument, match="max needs boot"):
        tuning.mem_section({"max": "2g", "slots": 2}, update=True)
    # An attribute given as null is removed too, its element kept.
    view = built(tuning.mem_section({"boot": 256, "source": "memfd", "access": "shared"})[1])
    tuning.mem_section({"access": None}, update=True)[1].write(view)
    assert view.find("memoryBacking/access") is None or view.find("memoryBacking/access").get("mode") is None
    assert view.find("memoryBacking/source").get("type") == "memfd"


FULL_CPU = {"maximum": 2, "current": 1, "placement": "auto", "cpuset": "0-1", "mode": "host-model", "match": "minimum",
            "model": {"name": "qemu64", "fallback": "forbid"}, "vendor": "Intel",
            "topology": {"sockets": 1, "cores": 2, "threads": 1}, "cache": {"mode": "emulate", "level": 3},
            "features": {"pcid": "require"}, "numa": {0: {"cpus": "0-1", "memory": "256m"}}, "iothreads": 2}


def test_null_removes_a_cpu_setting_of_an_existing_vm():
    """``cpu: {placement: null, topology: null, ...}`` as ``mem``'s nulls: removed, then idempotent."""
    view = built(tuning.cpu_section(FULL_CPU)[1], vcpus=2)
    nulls = {key: None for key in FULL_CPU if key not in ("maximum", "model")}
    nulls["model"] = {"fallback": None}
    count, section = tuning.cpu_section(nulls, update=True)
    assert count is None  # the vCPU count is left alone
    assert section.differences(view) == {
        "current": (1, None), "placement": ("auto", None), "cpuset": ("0-1", None), "mode": ("host-model", None),
        "match": ("minimum", None), "model_fallback": ("forbid", None),
        "vendor": ("Intel", None), "topology": ({"sockets": "1", "cores": "2", "threads": "1"}, None),
        "cache": ({"level": "3", "mode": "emulate"}, None), "iothreads": (2, None),
        "features": ({"pcid": "require"}, None), "numa": ([{"id": 0, "cpus": "0-1", "memory": 262144}], None),
    }
    section.write(view)
    for path in ("cpu/vendor", "cpu/topology", "cpu/cache", "cpu/feature", "cpu/numa", "iothreads"):
        assert view.find(path) is None, path
    vcpu = view.find("vcpu")
    assert vcpu.text == "2" and vcpu.attrib == {}
    assert view.find("cpu").attrib == {} and view.find("cpu/model").attrib == {}
    assert section.differences(view) == {}  # the second run: nothing
    # What libvirt writes back when a setting is removed satisfies the null (idempotent on
    # libvirt's own XML): placement static, a custom CPU matched exactly, a model that may fall back.
    view.find("vcpu").set("placement", "static")
    view.find("cpu").attrib.update(mode="custom", match="exact", check="none")
    view.find("cpu/model").set("fallback", "allow")
    assert section.differences(view) == {}
    # One at a time, the others kept.
    view = built(tuning.cpu_section(FULL_CPU)[1], vcpus=2)
    view.find("cpu/topology").set("dies", "1")  # what libvirt adds: removed with the element
    tuning.cpu_section({"placement": None, "topology": None}, update=True)[1].write(view)
    assert view.find("vcpu").get("placement") is None and view.find("vcpu").get("cpuset") == "0-1"
    assert view.find("cpu/topology") is None and view.element.findtext("cpu/model") == "qemu64"
    assert view.find("cpu/numa/cell") is not None and view.find("cpu/feature").get("name") == "pcid"
    assert view.find("cpu/model").get("fallback") == "forbid"
    # A count given with nulls: both.
    count, section = tuning.cpu_section({"maximum": 2, "current": None}, update=True)
    assert count == 2 and section.want == {"maximum": 2, "current": None}


@pytest.mark.parametrize(("cpu", "update", "message"), [
    ({"maximum": None}, True, "maximum cannot be removed"),
    ({"model": None}, True, "cpu:model cannot be removed"),
    ({"model": {"name": None}}, True, "cpu:model cannot be removed"),
    ({"maximum": None, "current": 1}, False, "maximum cannot be removed"),
    ({"topology": {"sockets": None, "cores": 2, "threads": 1}}, True, "cpu:topology: a single key cannot be removed"),
    ({"cache": {"mode": None}}, True, "cpu:cache: a single key cannot be removed"),
    ({"placement": None}, False, "give maximum, current or topology"),  # a new VM: nulls ignored
])
def test_cpu_nulls_that_cannot_be_honoured_are_refused(cpu, update, message):
    with pytest.raises(InvalidArgument, match=message):
        tuning.cpu_section(cpu, update=update)
    # A new VM ignores nulls next to a count, as before.
    assert tuning.cpu_section({"maximum": 2, "placement": None, "topology": None})[1].want == {"maximum": 2}


def test_cpu_nulls_are_predicted_and_refused_before_the_hypervisor():
    view = built(tuning.cpu_section(FULL_CPU)[1], vcpus=2)
    spec = UpdateSpec.from_kwargs("virt.update", name="vm1", cpu={"placement": None, "topology": None})
    hw = hardware.hardware(spec, settings(), ROOTS, update=True)
    assert hw.vcpus is None and not hw.plain_cpu
    changes = upd.diff(Domain.from_xml(view.to_xml()), upd.Wanted(sections=hw.sections), "/srv/salt-images/vm1",
                       config_view=view)
    assert [c.key for c in changes] == ["cpu"]
    assert changes[0].summary() == {"old": {"placement": "auto", "topology": {"sockets": "1", "cores": "2",
                                                                                "threads": "1"}},
                                    "new": {"placement": None, "topology": None}, "when": "next_boot"}
    from saltvirt.provision.spec import check_values  # noqa: PLC0415
    check_values(spec, update=True)  # the states' test=True check: accepted for an existing VM
    with pytest.raises(InvalidArgument, match="a single key cannot be removed"):
        check_values(UpdateSpec.from_kwargs("virt.update", name="vm1", cpu={"topology": {"sockets": None}}),
                     update=True)


def test_the_state_docs_single_cpu_feature_is_a_feature():
    _count, section = tuning.cpu_section({"maximum": 1, "feature": {"policy": "optional", "name": "lahf_lm"}})
    assert section.lists["features"] == {"lahf_lm": "optional"}
    _count, section = tuning.cpu_section({"maximum": 1, "features": {"pcid": "require"},
                                          "feature": {"name": "lahf_lm"}})
    assert section.lists["features"] == {"pcid": "require", "lahf_lm": "require"}
    with pytest.raises(InvalidArgument, match="given in both feature and features"):
        tuning.cpu_section({"maximum": 1, "features": ["pcid"], "feature": {"name": "pcid"}})
    with pytest.raises(InvalidArgument, match=r"cpu:feature='pcid' must be \{name, policy\}"):
        tuning.cpu_section({"maximum": 1, "feature": "pcid"})


# --------------------------------------------------------------------------- numatune


def test_numatune_memory_and_memnodes():
    section = tuning.numatune_section({"memory": {"mode": "interleave", "nodeset": "0-1"},
                                       "memnodes": {1: {"mode": "preferred", "nodeset": "1"}, 0: {"nodeset": 0}}})
    view = built(section)
    assert view.find("numatune/memory").attrib == {"mode": "interleave", "nodeset": "0-1"}
    assert [n.attrib for n in view.element.findall("numatune/memnode")] == [
        {"cellid": "0", "mode": "strict", "nodeset": "0"}, {"cellid": "1", "mode": "preferred", "nodeset": "1"}]
    assert section.differences(view) == {}
    assert tuning.numatune_section(None) is None
    with pytest.raises(InvalidArgument, match="numatune: empty"):
        tuning.numatune_section({})
    with pytest.raises(InvalidArgument, match="numatune:memory:mode: 'loose'"):
        tuning.numatune_section({"memory": {"mode": "loose"}})


# --------------------------------------------------------------------------- serials, consoles


def test_without_serials_port_0_is_the_logged_pty():
    assert chardev.serial_entries(None, LOG, ROOTS) == [{"type": "pty", "target_port": 0, "log": LOG}]


def test_the_callers_port_0_gets_the_log_and_a_missing_port_0_is_added():
    entries = chardev.serial_entries([{"type": "tcp", "port": 4555, "protocol": "telnet"}], LOG, ROOTS)
    assert entries == [{"type": "tcp", "target_port": 0, "port": 4555, "host": "127.0.0.1", "mode": "bind",
                        "protocol": "telnet", "log": LOG}]
    entries = chardev.serial_entries([{"type": "pty", "target_port": 2}], LOG, ROOTS)
    assert entries == [{"type": "pty", "target_port": 0, "log": LOG}, {"type": "pty", "target_port": 2}]
    # A file serial on port 0 is its own log.
    entries = chardev.serial_entries([{"type": "file", "path": "/var/lib/serials/vm1.out"}], LOG, ROOTS)
    assert entries == [{"type": "file", "target_port": 0, "path": "/var/lib/serials/vm1.out"}]


@pytest.mark.parametrize("path", ["/etc/cron.d/evil", "/var/lib/serials/../../../etc/passwd", "relative/file"])
def test_serial_files_outside_the_roots_are_refused(path):
    for kind in ("file", "unix"):
        with pytest.raises(InvalidArgument, match="path"):
            chardev.serial_entries([{"type": kind, "path": path}], LOG, ROOTS)


def test_serial_files_under_the_roots_are_accepted():
    entries = chardev.serial_entries([{"type": "unix", "path": "/var/lib/serials/vm1.sock"}], LOG, ROOTS)
    assert entries[0]["path"] == "/var/lib/serials/vm1.sock"
    with pytest.raises(InvalidArgument, match="outside the allowed directories"):
        chardev.serial_entries([{"type": "unix", "path": "/var/lib/serials/vm1.sock"}], LOG,
                               Roots("/srv/salt-images"))


@pytest.mark.parametrize("serials, message", [
    ([{"type": "dev", "path": "/dev/ttyS0"}], "type 'dev' .* is not supported"),
    ([{"type": "udp"}], "type 'udp'"),
    ([{"type": "tcp"}], r"serials\[0\]:port must be an integer 1..65535"),
    ([{"type": "tcp", "port": 1, "protocol": "ssh"}], "protocol one of raw, telnet"),
    ([{"type": "pty", "port": 4}], "port does not go with type pty"),
    ([{"type": "file"}], "a file serial needs a path"),
    ([{"type": "pty"}, {"type": "pty", "target_port": 0}], "duplicate target_port"),
    ([{"type": "pty", "speed": 9600}], "unknown key.* speed"),
    ({"type": "pty"}, "serials must be a list"),
])
def test_serial_refusals(serials, message):
    with pytest.raises(InvalidArgument, match=message):
        chardev.serial_entries(serials, LOG, ROOTS)


def test_serials_and_consoles_in_xml_and_back():
    serials = chardev.Serials(chardev.serial_entries(
        [{"type": "pty"}, {"type": "tcp", "port": 4555, "host": "0.0.0.0", "mode": "bind", "tls": True}], LOG, ROOTS))
    consoles = chardev.Consoles(chardev.console_entries(["pty", {"type": "pty", "target_type": "virtio"}], ROOTS))
    view = built(serials, consoles, serials=[])
    kinds = [(e.tag, e.get("type"), e.find("target").get("type"), e.find("target").get("port"))
             for e in view.find("devices") if e.tag in ("serial", "console")]
    # The first console is serial port 0's alias; the virtio one comes after it.
    assert kinds == [("serial", "pty", None, "0"), ("serial", "tcp", None, "1"), ("console", "pty", "serial", "0"),
                     ("console", "pty", "virtio", "1")]
    assert view.find("devices/serial/log").get("file") == LOG
    assert view.element.findall("devices/serial")[1].find("source").attrib == {
        "mode": "bind", "host": "0.0.0.0", "service": "4555", "tls": "yes"}
    assert serials.differences(view) == {} and consoles.differences(view) == {}
    # What libvirt adds (target types, models, pty paths, aliases) is no difference.
    for target in view.element.findall("devices/serial/target"):
        target.set("type", "isa-serial")
    view.find("devices/serial").append(DomainXml.parse("<domain><name>x</name></domain>").make("source"))
    view.find("devices/serial/source").set("path", "/dev/pts/3")
    assert serials.differences(view) == {}
    fewer = chardev.Serials(chardev.serial_entries(None, LOG, ROOTS))
    assert list(fewer.differences(view)) == ["serials"]
    fewer.write(view)
    assert len(view.device_elements("serial")) == 1 and fewer.differences(view) == {}
    assert consoles.differences(view) == {}  # the virtio console stays


def test_a_serial_console_is_only_the_alias_of_port_0():
    assert chardev.console_entries([{"type": "pty"}], ROOTS) == []
    with pytest.raises(InvalidArgument, match="alias of serial port 0"):
        chardev.console_entries([{"type": "tcp", "port": 5, "target_type": "serial"}], ROOTS)
    with pytest.raises(InvalidArgument, match="alias of serial port 0"):
        chardev.console_entries([{"type": "pty", "target_type": "virtio"}, {"type": "pty", "target_type": "serial"}],
                                ROOTS)


# --------------------------------------------------------------------------- host devices


class FakeNodeDev:
    def __init__(self, xml, caps):
        self.xml, self.caps = xml, caps

    def XMLDesc(self, flags):  # noqa: N802 (libvirt's name)
        return self.xml

    def listCaps(self):  # noqa: N802
        return self.caps


PCI_XML = """<device><name>pci_0000_3b_00_1</name><parent>computer</parent>
<capability type='pci'><class>0x020000</class><domain>0</domain><bus>59</bus><slot>0</slot><function>1</function>
<product id='0x1572'>Ethernet Controller X710</product><vendor id='0x8086'>Intel Corporation</vendor></capability>
</device>"""
USB_XML = """<device><name>usb_1_4</name><parent>usb_usb1</parent>
<capability type='usb_device'><bus>1</bus><device>4</device><product id='0xc077'>Mouse</product>
<vendor id='0x046d'>Logitech</vendor></capability></device>"""
NET_XML = """<device><name>net_eth0_52_54_00_00_00_01</name><parent>pci_0000_00_03_0</parent>
<capability type='net'><interface>eth0</interface><address>52:54:00:00:00:01</address></capability></device>"""


class FakeConn:
    DEVICES = {"pci_0000_3b_00_1": (PCI_XML, ["pci"]), "usb_1_4": (USB_XML, ["usb_device"]),
               "net_eth0_52_54_00_00_00_01": (NET_XML, ["net"])}

    def nodeDeviceLookupByName(self, name):  # noqa: N802
        if name not in self.DEVICES:
            raise libvirt.libvirtError(f"Node device not found: no node device with matching name '{name}'")
        return FakeNodeDev(*self.DEVICES[name])


def test_host_devices_are_refused_unless_the_operator_allows_them():
    with pytest.raises(InvalidArgument, match=r"pci_0000_3b_00_1 may not be passed through on hv1: .*"
                                              r"\(none configured\); an operator must add them"):
        hostdev.check_allowed(["pci_0000_3b_00_1"], [], "hv1")
    with pytest.raises(InvalidArgument, match="usb_1_4 may not be passed through"):
        hostdev.check_allowed(["pci_0000_3b_00_1", "usb_1_4"], ["pci_0000_3b_*"], "hv1")
    assert hostdev.check_allowed(["pci_0000_3b_00_1", "usb_1_4", "usb_1_4"], ["pci_0000_3b_*", "usb_1_4"]) == [
        "pci_0000_3b_00_1", "usb_1_4"]
    assert hostdev.check_allowed(None, []) is None
    assert hostdev.check_allowed([], []) == []


def test_allowed_host_devices_become_hostdev_elements():
    keys = hostdev.resolve(FakeConn(), ["pci_0000_3b_00_1", "usb_1_4"])
    assert keys == {"pci_0000_3b_00_1": ("pci", 0, 0x3b, 0, 1), "usb_1_4": ("usb", "0x046d", "0xc077", 1, 4)}
    section = hostdev.HostDevices(keys.values())
    view = built(section)
    pci, usb = view.device_elements("hostdev")
    assert pci.find("source/address").attrib == {"domain": "0x0000", "bus": "0x3b", "slot": "0x00", "function": "0x1"}
    assert (usb.find("source/vendor").get("id"), usb.find("source/product").get("id")) == ("0x046d", "0xc077")
    assert section.differences(view) == {}
    none = hostdev.HostDevices([])
    assert none.differences(view) == {"host_devices": (["pci 0000:3b:00.1", "usb 0x046d:0xc077 at 001:004"], [])}
    none.write(view)
    assert view.device_elements("hostdev") == []


def test_unknown_and_network_host_devices_are_refused():
    with pytest.raises(NotFound, match="host device pci_9: .*virt.node_devices lists them"):
        hostdev.resolve(FakeConn(), ["pci_9"])
    with pytest.raises(InvalidArgument, match="only PCI and USB devices"):
        hostdev.resolve(FakeConn(), ["net_eth0_52_54_00_00_00_01"])


# --------------------------------------------------------------------------- specs and updates


def settings(**config):
    return from_dict({"virt": {"images": "/srv/salt-images", "attach_roots": ["/var/lib/serials"], **config}},
                     opts={"id": "hv1"})


def test_the_spec_takes_the_classic_arguments_and_hardware_splits_them():
    spec = VmSpec.from_kwargs("virt.init", name="vm1", cpu={"topology": {"sockets": 1, "cores": 2}},
                              mem={"boot": "1g", "current": "512m"}, numatune={"memory": {"nodeset": "0"}},
                              serials=[{"type": "pty"}], consoles=[{"type": "pty", "target_type": "virtio"}])
    hw = hardware.hardware(spec, settings(), ROOTS)
    assert (hw.vcpus, hw.mem_mib, hw.plain_cpu, hw.plain_mem) == (2, 1024, False, False)
    assert [s.name for s in hw.sections] == ["cpu", "mem", "numatune", "serials", "consoles"]
    plain = hardware.hardware(VmSpec.from_kwargs("virt.init", name="vm1", cpu=2, mem="2g"), settings(), ROOTS)
    assert (plain.vcpus, plain.mem_mib, plain.sections) == (2, 2048, [])


def test_host_devices_through_the_spec_need_the_operators_allowance():
    spec = UpdateSpec.from_kwargs("virt.update", name="vm1", host_devices=["usb_1_4"])
    with pytest.raises(InvalidArgument, match="only the devices in virt:host_devices:allowed"):
        hardware.hardware(spec, settings(), ROOTS, FakeConn())
    hw = hardware.hardware(spec, settings(host_devices={"allowed": ["usb_*"]}), ROOTS, FakeConn())
    assert [s.keys for s in hw.sections] == [[("usb", "0x046d", "0xc077", 1, 4)]]


def _update_changes(spec_kwargs, view):
    spec = UpdateSpec.from_kwargs("virt.update", name="vm1", **spec_kwargs)
    hw = hardware.hardware(spec, settings(), ROOTS)
    want = upd.Wanted(sections=hw.sections, vcpus=hw.vcpus if hw.plain_cpu else None,
                      memory_mib=hw.mem_mib if hw.plain_mem else None)
    return upd.diff(Domain.from_xml(view.to_xml()), want, "/srv/salt-images/vm1", config_view=view)


def test_update_reports_only_what_differs_and_is_then_idempotent():
    view = built(vcpus=2)
    args = {"cpu": {"topology": {"sockets": 1, "cores": 2, "threads": 1}}, "mem": {"boot": 512, "soft_limit": "1g"},
            "serials": [{"type": "pty"}, {"type": "pty"}]}
    changes = {c.key: c for c in _update_changes(args, view)}
    assert changes["cpu"].summary() == {"old": {"sockets": None, "cores": None, "threads": None},
                                        "new": {"sockets": 1, "cores": 2, "threads": 1}, "when": "next_boot"}
    assert changes["mem"].new == {"soft_limit": 1048576}  # boot and current were already 512 MiB
    assert [e["target_port"] for e in changes["serials"].new] == [0, 1] and len(changes["serials"].old) == 1
    assert "serials 1 -> 2 device(s), replaced (on next boot)" in upd.describe(list(changes.values()))
    assert "cpu sockets None -> 1, cores None -> 2, threads None -> 1 (on next boot)" in upd.describe(
        list(changes.values()))
    for change in changes.values():
        change.device.write(view)
    assert _update_changes(args, view) == []


class FakeDom:
    def __init__(self, xml):
        self.xml, self.defined = xml, []

    def isActive(self):  # noqa: N802
        return True

    def name(self):
        return "vm1"

    def XMLDesc(self, flags):  # noqa: N802
        assert flags & libvirt.VIR_DOMAIN_XML_INACTIVE and flags & libvirt.VIR_DOMAIN_XML_SECURE
        return self.xml


class DefiningConn:
    def __init__(self, dom):
        self.dom = dom

    def defineXML(self, xml):  # noqa: N802
        self.dom.xml = xml
        self.dom.defined.append(xml)
        return self.dom


def test_apply_rewrites_the_definition_and_keeps_what_it_does_not_manage():
    xml = Domain(name="vm1", type="qemu", vcpus=2, rng=True, serials=[Serial(log=LOG)]).to_xml()
    dom = FakeDom(xml)
    changes = _update_changes({"cpu": {"topology": {"sockets": 2, "cores": 1, "threads": 1}}},
                              DomainXml.parse(xml))
    applied, _password = upd.apply(DefiningConn(dom), dom, changes)
    assert [c.key for c in applied] == ["cpu"] and len(dom.defined) == 1
    view = DomainXml.parse(dom.xml)
    assert view.find("cpu/topology").attrib == {"sockets": "2", "cores": "1", "threads": "1"}
    assert view.device_elements("rng") and view.device_elements("serial")
    assert _update_changes({"cpu": {"topology": {"sockets": 2, "cores": 1, "threads": 1}}}, view) == []


def test_pending_hardware_is_what_the_running_guest_does_not_have_yet():
    topology = tuning.cpu_section({"topology": {"sockets": 2, "cores": 1, "threads": 1}})[1]
    live = built(topology, vcpus=2)
    assert pending.pending_hardware(live, built(topology, vcpus=2)) == []
    config = built(tuning.cpu_section({"topology": {"sockets": 1, "cores": 2, "threads": 1}})[1],
                   tuning.mem_section({"boot": 512, "soft_limit": "1g"})[1],
                   chardev.Serials(chardev.serial_entries([{"type": "pty"}, {"type": "pty"}], LOG, ROOTS)),
                   hostdev.HostDevices([("pci", 0, 1, 2, 0)]), vcpus=2, serials=[])
    assert pending.pending_hardware(live, config) == [
        "cpu sockets: 2 -> 1", "cpu cores: 1 -> 2", "mem soft_limit: None -> 1048576", "serials/consoles",
        "host_devices"]
    # libvirt expands a host-model CPU into a model in the live XML: that is not pending.
    host_model = tuning.cpu_section({"current": 1, "mode": "host-model"})[1]
    expanded = built(tuning.cpu_section({"current": 1, "mode": "custom", "model": "Skylake-Client"})[1])
    assert pending.pending_hardware(expanded, built(host_model)) == []
    assert pending.pending_hardware(expanded, built(tuning.cpu_section({"current": 1, "model": "qemu64",
                                                                    "mode": "custom"})[1])) == [
        "cpu model: Skylake-Client -> qemu64"]


def test_pending_of_a_stopped_domain_is_empty_and_a_running_one_compares_both_definitions():
    class Dom:
        def __init__(self, active, live, config):
            self.active, self.xml = active, {0: live, libvirt.VIR_DOMAIN_XML_INACTIVE: config}

        def isActive(self):  # noqa: N802
            return self.active

        def XMLDesc(self, flags):  # noqa: N802
            return self.xml[flags]

    live = built(vcpus=1).to_xml()
    config = built(tuning.cpu_section({"topology": {"sockets": 1, "cores": 2, "threads": 1}})[1], vcpus=2).to_xml()
    assert pending.pending_of(Dom(False, live, config)) == []
    assert pending.pending_of(Dom(True, live, config)) == [
        "cpu 1 -> 2", "cpu sockets: None -> 1", "cpu cores: None -> 2", "cpu threads: None -> 1"]


def test_placement_counts_the_vcpus_and_boot_memory_of_the_dicts():
    from saltvirt.fleet import hosts  # noqa: PLC0415 (only this test needs the fleet)

    request = hosts.request("vm1", {"topology": {"sockets": 2, "cores": 2, "threads": 1}}, {"boot": "2g"})
    assert (request.cpu, request.memory_mib) == (4, 2048)
    assert (hosts.request("vm1", 2, "1g").memory_mib, hosts.request("vm1", "2", "512").cpu) == (1024, 2)
    with pytest.raises(InvalidArgument, match="cpu: give maximum, current or topology"):
        hosts.request("vm1", {"mode": "custom"}, 512)
