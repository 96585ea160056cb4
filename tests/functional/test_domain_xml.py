"""Domains from caller XML (define_xml_*/create_xml_*), snapshots reverted and deleted, and the
classic first-argument keywords, against this host's libvirtd (issue 16)."""

import os
import shutil
import subprocess

import libvirt
import pytest
from salt.exceptions import SaltInvocationError

QEMU = "/usr/bin/qemu-system-x86_64"


def domain_xml(name, disk, extra_devices="", fmt="qcow2"):
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <devices>
    <emulator>{QEMU}</emulator>
    <disk type='file' device='disk'>
      {f"<driver name='qemu' type='{fmt}'/>" if fmt else ""}
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <console type='pty'/>
    {extra_devices}
  </devices>
</domain>"""


@pytest.fixture
def disk(qemu_dir, guest_images, vm_name):
    path = qemu_dir / f"{vm_name}.qcow2"
    shutil.copyfile(guest_images / "centos.qcow2", path)
    os.chmod(path, 0o666)  # noqa: S103 (QEMU runs as libvirt-qemu)
    yield path
    path.unlink(missing_ok=True)


def defined(conn, name):
    return name in [d.name() for d in conn.listAllDomains(0)]


def test_define_xml_str_defines_a_legitimate_domain(virt, libvirt_conn, vm_name, disk):
    assert virt.define_xml_str(domain_xml(vm_name, disk)) is True
    assert defined(libvirt_conn, vm_name)
    assert str(disk) in virt.get_xml(vm_name)


@pytest.mark.parametrize("attack, shown", [
    ("<disk type='file'><source file='/etc/shadow'/><target dev='vdb'/></disk>", "/etc/shadow"),
    ("<filesystem type='mount'><source dir='/'/><target dir='root'/></filesystem>", "dir /"),
    ("<serial type='file'><source path='/etc/cron.d/svtest'/></serial>", "/etc/cron.d/svtest"),
    ("<hostdev mode='subsystem' type='usb'><source><vendor id='0x1'/><product id='0x1'/></source></hostdev>",
     "hostdev"),
    ("<interface type='ethernet'><script path='/tmp/svtest.sh'/></interface>", "interface:ethernet"),
])
def test_define_xml_str_refuses_host_files_and_defines_nothing(virt, libvirt_conn, vm_name, disk, attack, shown):
    with pytest.raises(SaltInvocationError, match="nothing defined") as info:
        virt.define_xml_str(domain_xml(vm_name, disk, attack))
    assert shown in str(info.value)
    assert not defined(libvirt_conn, vm_name)
    assert not os.path.exists("/etc/cron.d/svtest")


def test_qemu_commandline_is_refused(virt, libvirt_conn, vm_name, disk):
    xml = domain_xml(vm_name, disk).replace(
        "<domain type='qemu'>", "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
    ).replace("</devices>", "</devices><qemu:commandline><qemu:arg value='-drive'/>"
              "<qemu:arg value='file=/etc/shadow,if=virtio,format=raw'/></qemu:commandline>")
    with pytest.raises(SaltInvocationError, match="qemu_namespace"):
        virt.define_xml_str(xml)
    assert not defined(libvirt_conn, vm_name)


def test_a_qcow2_backing_file_outside_the_roots_is_refused(virt, libvirt_conn, vm_name, qemu_dir):
    evil = qemu_dir / f"{vm_name}-evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/shadow", "-u", str(evil),
                    "64M"], check=True)
    try:
        for fmt in ("qcow2", None):  # stated, or left for libvirt to find out
            with pytest.raises(SaltInvocationError, match="backing file of .*evil.qcow2 /etc/shadow: outside"):
                virt.define_xml_str(domain_xml(vm_name, evil, fmt=fmt))
            assert not defined(libvirt_conn, vm_name)
    finally:
        evil.unlink()


def test_another_domains_disk_is_refused(virt, libvirt_conn, vm_name, disk):
    virt.define_xml_str(domain_xml(vm_name, disk))
    other = f"{vm_name}-b"
    with pytest.raises(SaltInvocationError, match=f"a disk of {vm_name}"):
        virt.define_xml_str(domain_xml(other, disk))
    assert not defined(libvirt_conn, other)
    # its own definition again (same name and disk) is an update, accepted
    uuid = libvirt_conn.lookupByName(vm_name).UUIDString()
    again = domain_xml(vm_name, disk).replace("<memory unit='MiB'>128", f"<uuid>{uuid}</uuid><memory unit='MiB'>160")
    assert virt.define_xml_str(again) is True
    assert libvirt_conn.lookupByName(vm_name).info()[1] == 160 * 1024


def test_define_xml_path_reads_only_under_the_roots_and_never_quotes(virt, libvirt_conn, vm_name, disk, qemu_dir):
    with pytest.raises(SaltInvocationError, match="outside the allowed directories"):
        virt.define_xml_path("/etc/passwd")
    secret = qemu_dir / f"{vm_name}-secret.txt"
    secret.write_text("root:TOPSECRET-hash:19000:0:99999:7:::\n")
    attack = qemu_dir / f"{vm_name}-attack.xml"
    attack.write_text(domain_xml(vm_name, "/etc/shadow"))
    legit = qemu_dir / f"{vm_name}.xml"
    legit.write_text(domain_xml(vm_name, disk))
    try:
        for path, words in ((secret, ["TOPSECRET", "root"]), (attack, ["/etc/shadow", vm_name])):
            with pytest.raises(SaltInvocationError) as info:
                virt.define_xml_path(str(path))
            assert all(word not in str(info.value) for word in words), str(info.value)
        assert not defined(libvirt_conn, vm_name)
        assert virt.define_xml_path(str(legit)) is True
        assert defined(libvirt_conn, vm_name)
    finally:
        for path in (secret, attack, legit):
            path.unlink()


def test_create_xml_str_starts_a_transient_domain(virt, libvirt_conn, vm_name, disk):
    with pytest.raises(SaltInvocationError, match="/etc/shadow"):
        virt.create_xml_str(domain_xml(vm_name, "/etc/shadow"))
    assert not defined(libvirt_conn, vm_name)
    assert virt.create_xml_str(domain_xml(vm_name, disk)) is True
    dom = libvirt_conn.lookupByName(vm_name)
    try:
        assert dom.isActive() and not dom.isPersistent()
    finally:
        dom.destroy()
    assert not defined(libvirt_conn, vm_name)


def test_xml_functions_refuse_unknown_arguments(virt, vm_name, disk):
    with pytest.raises(SaltInvocationError, match="unknown argument.*persist"):
        virt.define_xml_str(domain_xml(vm_name, disk), persist=True)
    with pytest.raises(SaltInvocationError, match="no such file|cannot open"):
        virt.create_xml_path(os.path.join(os.path.dirname(str(disk)), "missing.xml"))


# --------------------------------------------------------------------------- snapshots


def test_revert_and_delete_snapshots(virt, libvirt_conn, vm_name, disk):
    virt.define_xml_str(domain_xml(vm_name, disk))
    with pytest.raises(SaltInvocationError, match="no snapshot to revert to"):
        virt.revert_snapshot(vm_name)
    for snap in ("s1", "s2", "s3"):
        virt.snapshot(vm_name, name=snap)
    # Without a name: the one before the current (s3's parent), as the classic function did.
    assert virt.revert_snapshot(vm_name, test=True) == {"reverted": "s2", "deleted": "N/A"}
    assert virt.revert_snapshot(vm_name) == {"reverted": "s2", "deleted": "N/A"}
    assert libvirt_conn.lookupByName(vm_name).snapshotCurrent(0).getName() == "s2"
    # Named, with cleanup: what came after it goes.
    assert virt.revert_snapshot(vm_name, "s1", cleanup=True) == {"reverted": "s1", "deleted": ["s2", "s3"]}
    assert virt.list_snapshots(vm_name) == {vm_name: ["s1"]}
    with pytest.raises(SaltInvocationError, match="no snapshot named 'nope'"):
        virt.revert_snapshot(vm_name, "nope")
    with pytest.raises(SaltInvocationError, match=r"unknown argument\(s\) snapshot \(did you mean vm_snapshot"):
        virt.revert_snapshot(vm_name, snapshot="s1")

    virt.snapshot(vm_name, name="s4")
    with pytest.raises(SaltInvocationError, match="'nope': nothing deleted"):
        virt.delete_snapshots(vm_name, "s1", "nope")
    with pytest.raises(SaltInvocationError, match="or pass all=True"):
        virt.delete_snapshots(vm_name)
    ret = virt.delete_snapshots(vm_name, "s1")
    assert list(ret["deleted"]) == ["s1"] and set(ret["deleted"]["s1"]) == {"name", "created", "running", "current"}
    assert [s["name"] for s in ret["available"][vm_name]] == ["s4"]
    ret = virt.delete_snapshots(vm_name, all=True)
    assert list(ret["deleted"]) == ["s4"] and ret["available"] == {vm_name: "N/A"}


# --------------------------------------------------------------------------- classic keywords


def test_classic_first_argument_keywords(virt, libvirt_conn, vm_name, disk):
    virt.define_xml_str(domain_xml(vm_name, disk))
    assert virt.setmem(vm_=vm_name, memory=96, config=True)["set"] is True
    assert libvirt_conn.lookupByName(vm_name).info()[1] == 96 * 1024
    assert virt.setvcpus(vm_=vm_name, vcpus=2, config=True)["vcpus"] == 2
    assert virt.set_autostart(vm_=vm_name, state="off") == {"name": vm_name, "autostart": False}
    assert virt.vm_state(name=vm_name) == {vm_name: "shutoff"}
    assert vm_name in virt.get_xml(name=vm_name)
    with pytest.raises(SaltInvocationError, match="given twice"):
        virt.pause(vm_name, vm_=vm_name)
    with pytest.raises(SaltInvocationError, match=r"virt.pause: unknown argument\(s\) forse"):
        virt.pause(vm_name, forse=True)
    with pytest.raises(SaltInvocationError, match="no domain named 'svtest-none'"):
        virt.resume(vm_="svtest-none")
    assert virt.undefine(vm_=vm_name) == {"name": vm_name, "undefined": True}
    assert not defined(libvirt_conn, vm_name)
    with pytest.raises(libvirt.libvirtError):
        libvirt_conn.lookupByName(vm_name)
