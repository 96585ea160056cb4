"""The checks of caller domain XML (saltvirt.domain.xmlpolicy): each attack refused, and the
legitimate definitions next to it accepted."""

import os

import pytest

from saltvirt.domain import xmlpolicy
from saltvirt.errors import InvalidArgument
from saltvirt.storage.paths import Roots

EMULATOR = "/usr/bin/qemu-system-x86_64"


@pytest.fixture
def tree(tmp_path):
    for sub in ("images/base", "images/other", "images/web1", "attach", "golden", "fw"):
        (tmp_path / sub).mkdir(parents=True)
    return tmp_path


@pytest.fixture
def policy(tree):
    roots = Roots(str(tree / "images"), image_roots=[str(tree / "golden")], attach_roots=[str(tree / "attach")])
    return xmlpolicy.Policy(roots, (EMULATOR,), firmware_roots=(str(tree / "fw"),),
                            serial_log=lambda name: f"/var/log/libvirt/qemu/{name}-serial.log")


def domain(devices="", os_extra="", extra="", name="web1"):
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <os><type arch='x86_64'>hvm</type><boot dev='hd'/>{os_extra}</os>
  {extra}
  <devices>
    <emulator>{EMULATOR}</emulator>
    {devices}
  </devices>
</domain>"""


def disk(path, extra="", fmt="raw", device="disk"):
    return (f"<disk type='file' device='{device}'><driver name='qemu' type='{fmt}'/>"
            f"<source file='{path}'/><target dev='vda' bus='virtio'/>{extra}</disk>")


def refused(xml, policy, *words):
    with pytest.raises(xmlpolicy.Refused) as info:
        xmlpolicy.check(xml, policy)
    for word in words:
        assert word in str(info.value)
    return info.value


def test_a_legitimate_domain_is_accepted(policy, tree):
    xml = domain(
        disk(tree / "attach" / "data.qcow2", fmt="qcow2")
        + disk(tree / "golden" / "install.iso", device="cdrom", extra="<readonly/>")
        + disk(tree / "images" / "web1" / "system.qcow2", fmt="qcow2")
        + "<interface type='bridge'><source bridge='br0'/><model type='virtio'/><target dev='vnet3'/></interface>"
        + "<serial type='file'><source path='/var/log/libvirt/qemu/web1-serial.log' append='on'/></serial>"
        + "<console type='pty'><source path='/dev/pts/4'/></console>"
        + "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"
        + "<graphics type='vnc' port='-1' listen='127.0.0.1'/>",
        os_extra=f"<loader readonly='yes' type='pflash'>{tree}/fw/OVMF_CODE.fd</loader>"
                 f"<nvram template='{tree}/fw/OVMF_VARS.fd'>/var/lib/libvirt/qemu/nvram/web1_VARS.fd</nvram>",
        extra="<resource><partition>/machine</partition></resource>"
              "<seclabel type='dynamic' model='dac' relabel='yes'/>"
              "<metadata><x:a xmlns:x='urn:x'>/etc/shadow</x:a></metadata><description>/etc/passwd</description>",
    )
    checked = xmlpolicy.check(xml, policy)
    assert checked.name == "web1"
    assert (os.path.realpath(tree / "attach" / "data.qcow2"), False, "qcow2") in checked.disks
    assert (os.path.realpath(tree / "golden" / "install.iso"), True, "raw") in checked.disks


@pytest.mark.parametrize("devices, os_extra, words", [
    (disk("/etc/shadow"), "", ["/etc/shadow", "outside the directories allowed for write"]),
    (disk("../../etc/shadow"), "", ["host paths must be absolute"]),
    ("<disk type='block'><source dev='/dev/sda'/><target dev='vdb'/></disk>", "", ["/dev/sda"]),
    ("<filesystem type='mount'><source dir='/'/><target dir='host'/></filesystem>", "",
     ["<devices/filesystem/source> dir /"]),
    ("", "<kernel>/boot/vmlinuz</kernel><initrd>/etc/shadow</initrd>", ["/boot/vmlinuz", "/etc/shadow"]),
    ("", "<loader>/etc/shadow</loader>", ["<domain/os/loader> /etc/shadow"]),
    ("", "<nvram>/etc/shadow</nvram>", ["/etc/shadow"]),
    ("", "<nvram>/var/lib/libvirt/qemu/nvram/other_VARS.fd</nvram>", ["other_VARS.fd"]),
    ("<serial type='file'><source path='/etc/cron.d/x'/></serial>", "", ["/etc/cron.d/x"]),
    ("<serial type='pty'><log file='/root/.ssh/authorized_keys'/></serial>", "", ["authorized_keys"]),
    ("<console type='file'><source path='/var/log/libvirt/qemu/other-serial.log'/></console>", "",
     ["other-serial.log"]),
    ("<channel type='unix'><source mode='bind' path='/run/libvirt/libvirt-sock'/></channel>", "", ["libvirt-sock"]),
    ("<serial type='dev'><source path='/dev/ttyS0'/></serial>", "", ["/dev/ttyS0"]),
    ("<serial type='tcp'><source mode='bind' host='0.0.0.0' service='2445'/></serial>", "", ["chardev:tcp"]),
    ("<hostdev mode='subsystem' type='pci'><source><address bus='0x01'/></source></hostdev>", "", ["hostdev"]),
    ("<disk type='nvme' device='disk'><source type='pci'/><target dev='vdb'/></disk>", "", ["hostdev"]),
    ("<interface type='ethernet'><script path='/tmp/x.sh'/></interface>", "",
     ["interface:ethernet", "executables", "/tmp/x.sh"]),
    ("<interface type='direct'><source dev='eth0' mode='bridge'/></interface>", "", ["interface:direct"]),
    ("<interface type='user'/>", "", ["interface:user"]),
    ("<disk type='network'><source protocol='nbd' name='x'><host name='10.0.0.1'/></source>"
     "<target dev='vdb'/></disk>", "", ["disk:network"]),
    (disk("/srv/x.vmdk", fmt="vmdk"), "", ["vmdk"]),
    ("<input type='evdev'><source dev='/dev/input/event0'/></input>", "", ["/dev/input/event0"]),
    ("<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm>", "",
     ["/dev/tpm0"]),
    ("<smartcard mode='host'/>", "", ["smartcard"]),
    ("<shmem name='x'><server path='/var/run/x.sock'/></shmem>", "", ["/var/run/x.sock"]),
    ("<memory model='nvdimm'><source><path>/etc/shadow</path></source><target><size>1</size></target></memory>", "",
     ["/etc/shadow"]),
    ("<graphics type='spice'><gl enable='yes' rendernode='/dev/dri/renderD128'/></graphics>", "",
     ["renderD128"]),
    ("<audio id='1' type='file' path='/etc/motd'/>", "", ["/etc/motd"]),
])
def test_host_files_and_devices_are_refused(policy, devices, os_extra, words):
    refused(domain(devices, os_extra), policy, "nothing defined", *words)


def test_other_vms_directories_and_bases_are_not_writable(policy, tree):
    refused(domain(disk(tree / "images" / "other" / "system.qcow2")), policy, "other/system.qcow2")
    refused(domain(disk(tree / "images" / "base" / "centos.qcow2")), policy, "base/centos.qcow2")
    # read-only, a base may be attached (as an installer ISO from the image roots may)
    xmlpolicy.check(domain(disk(tree / "images" / "base" / "centos.qcow2", extra="<readonly/>")), policy)


def test_a_symlink_into_the_roots_is_followed(policy, tree):
    os.symlink("/etc/shadow", tree / "attach" / "innocent.img")
    refused(domain(disk(tree / "attach" / "innocent.img")), policy, "innocent.img")


@pytest.mark.parametrize("extra, word", [
    ("<seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>", "seclabel"),
    ("<seclabel type='none'/>", "seclabel"),
    ("<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
     "<qemu:arg value='-drive'/><qemu:arg value='file=/etc/shadow'/></qemu:commandline>", "qemu_namespace"),
    ("<bootloader>/usr/bin/pygrub</bootloader>", "executables"),
    ("<resource><partition>/system</partition></resource>", "/machine"),
])
def test_what_is_no_path_but_reaches_the_host_is_refused(policy, extra, word):
    refused(domain(extra=extra), policy, word)


def test_the_operator_can_allow_what_is_refused_by_default(tree):
    roots = Roots(str(tree / "images"), attach_roots=[str(tree / "attach")])
    policy = xmlpolicy.Policy.from_config(
        {"allow": ["hostdev", "interface:direct", "qemu_namespace"], "devices": ["/dev/ttyS0"]}, roots, (EMULATOR,))
    xmlpolicy.check(domain(
        "<hostdev mode='subsystem' type='pci'/><interface type='direct'><source dev='eth0'/></interface>"
        "<serial type='dev'><source path='/dev/ttyS0'/></serial>",
        extra="<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'/>"), policy)
    with pytest.raises(InvalidArgument, match="unknown entry 'everything'"):
        xmlpolicy.Policy.from_config({"allow": ["everything"]}, roots)


def test_emulator_and_name_are_checked(policy):
    refused(domain().replace(EMULATOR, "/bin/sh"), policy, "<emulator> /bin/sh")
    with pytest.raises(InvalidArgument, match="invalid domain name"):
        xmlpolicy.check(domain(name="../x"), policy)
    with pytest.raises(InvalidArgument, match="not valid"):
        xmlpolicy.check("<domain", policy)


def test_every_problem_is_reported_and_redacted_mode_quotes_nothing(policy):
    xml = domain(disk("/etc/shadow") + "<hostdev type='usb'/>", name="secretname")
    with pytest.raises(xmlpolicy.Refused) as info:
        xmlpolicy.check(xml, policy, quote=False)
    message = str(info.value)
    assert "hostdev" in message and "disk/source> file" in message
    assert "/etc/shadow" not in message and "secretname" not in message and "usb" not in message
    with pytest.raises(InvalidArgument) as info:
        xmlpolicy.check("root:$6$hash:19000:0:99999:7:::", policy, quote=False)
    assert "root" not in str(info.value) and "hash" not in str(info.value)


def test_volumes_are_resolved_and_checked(policy, tree):
    xml = domain("<disk type='volume'><source pool='p' volume='v'/><target dev='vdb'/></disk>")
    assert xmlpolicy.check(xml, policy, volume_path=lambda p, v: str(tree / "attach" / v)).disks
    with pytest.raises(xmlpolicy.Refused, match="/etc/v"):
        xmlpolicy.check(xml, policy, volume_path=lambda p, v: f"/etc/{v}")


def test_disk_files_of_other_domains_and_backing_chains(policy, tree):
    mine, theirs = str(tree / "attach" / "a.qcow2"), str(tree / "attach" / "b.raw")
    checked = xmlpolicy.Checked("web1", [(mine, False, "qcow2"), (theirs, True, "raw")])
    in_use = {theirs: [{"domain": "db1"}], mine: [{"domain": "web1"}]}
    # read-only raw use of another domain's disk, and its own disk: accepted
    xmlpolicy.check_disk_files(checked, in_use, lambda path, fmt: None, policy)
    checked.disks[1] = (theirs, True, "qcow2")  # read as qcow2 the guest's content decides
    with pytest.raises(xmlpolicy.Refused, match="a disk of db1"):
        xmlpolicy.check_disk_files(checked, in_use, lambda path, fmt: None, policy)
    checked.disks.pop()
    chain = {mine: "../golden/base.qcow2", str(tree / "golden" / "base.qcow2"): "/etc/shadow"}
    with pytest.raises(xmlpolicy.Refused, match="backing file of .*/etc/shadow"):
        xmlpolicy.check_disk_files(checked, {}, lambda path, fmt: chain.get(path), policy)
    chain[str(tree / "golden" / "base.qcow2")] = None
    xmlpolicy.check_disk_files(checked, {}, lambda path, fmt: chain.get(path), policy)


def test_tricks_in_the_document_itself(policy, tree):
    # libvirt reads a path element's whole text, children's text included
    refused(domain(os_extra="<kernel>/etc/sha<b/>dow</kernel>"), policy, "/etc/shadow")
    # entities could hide a value from a check that does not expand them the same way
    xml = "<!DOCTYPE domain [<!ENTITY p '/etc/shadow'>]>" + domain(disk("&p;"))
    with pytest.raises(InvalidArgument, match="no DOCTYPE or entities"):
        xmlpolicy.check(xml, policy)
    # a domain named like the bases' directory does not own it
    refused(domain(disk(tree / "images" / "base" / "centos.qcow2"), name="base"), policy, "base/centos.qcow2")
    # whitespace around the name is no name libvirt and this check would agree on
    with pytest.raises(InvalidArgument, match="whitespace"):
        xmlpolicy.check(domain(name=" web1"), policy)


def test_a_disk_of_unstated_format_is_checked_as_possibly_qcow2(policy, tree):
    xml = domain(f"<disk type='file'><source file='{tree}/attach/x.img'/><target dev='vda'/></disk>")
    checked = xmlpolicy.check(xml, policy)
    assert checked.disks == [(os.path.realpath(tree / "attach" / "x.img"), False, None)]
    seen = []
    with pytest.raises(xmlpolicy.Refused, match="/etc/passwd"):
        xmlpolicy.check_disk_files(checked, {}, lambda path, fmt: seen.append(fmt) or "/etc/passwd", policy)
    assert seen == [None]
    # read-only but of unstated format, another domain's disk is refused too
    checked.disks = [(checked.disks[0][0], True, None)]
    with pytest.raises(xmlpolicy.Refused, match="a disk of db1"):
        xmlpolicy.check_disk_files(checked, {checked.disks[0][0]: [{"domain": "db1"}]}, lambda p, f: None, policy)
