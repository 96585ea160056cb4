"""virt.init / virt.update with boot (kernel, UEFI), boot_dev, stop_on_reboot, clock and
hypervisor_features against this host's libvirtd: what libvirt keeps, what virt.update then
finds (nothing when asked again), and boot files outside the roots refused with nothing left."""

import os
import xml.etree.ElementTree as ET

import libvirt
import pytest
from salt.exceptions import SaltInvocationError


def inactive_xml(conn, name):
    return ET.fromstring(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


@pytest.fixture
def kernel(qemu_dir):
    """A stand-in kernel and initrd inside the image roots (the domains are never started)."""
    for name in ("vmlinuz", "initrd.gz"):
        (qemu_dir / name).write_bytes(b"not booted")
    return {"kernel": str(qemu_dir / "vmlinuz"), "initrd": str(qemu_dir / "initrd.gz")}


def test_the_classic_arguments_reach_libvirt_and_update_finds_nothing_more(virt, vm_name, libvirt_conn, kernel,
                                                                           minion_opts):
    args = {"boot": dict(kernel, cmdline="console=ttyS0", efi=True), "boot_dev": "cdrom hd",
            "stop_on_reboot": True, "hypervisor_features": {"kvm-hidden": True},
            "clock": {"utc": False, "timers": {"rtc": {"tickpolicy": "catchup"}, "hpet": {"present": False}}}}
    info = virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, seed=False, start=False,
                     **args)
    try:
        nvram = os.path.join(minion_opts["virt"]["images"], vm_name, "nvram.fd")
        assert info["os"]["efi"] is True and info["os"]["nvram"] == nvram
        assert info["os"]["boot"] == ["cdrom", "hd"] and info["os"]["kernel"] == kernel["kernel"]
        root = inactive_xml(libvirt_conn, vm_name)
        assert root.find("os").get("firmware") == "efi" and root.find("os/nvram").text == nvram
        assert root.findtext("on_reboot") == "destroy"
        assert root.find("features/kvm/hidden").get("state") == "on"
        assert root.find("clock").get("offset") == "localtime"
        assert {t.get("name") for t in root.findall("clock/timer")} == {"rtc", "hpet"}
        assert virt.update(vm_name, **args)["changes"] == {}

        ret = virt.update(vm_name, boot={"efi": False, "cmdline": None}, stop_on_reboot=False,
                          hypervisor_features={"kvm-hidden": None}, clock={"timezone": "Europe/Paris"})
        assert set(ret["changes"]) == {"boot:efi", "boot:cmdline", "stop_on_reboot", "hypervisor_features:kvm-hidden",
                                       "clock"}
        assert ret["next_boot"] and not ret["live"]
        root = inactive_xml(libvirt_conn, vm_name)
        assert root.find("os").get("firmware") is None and root.find("os/nvram") is None
        assert root.find("os/cmdline") is None and root.findtext("os/kernel") == kernel["kernel"]
        assert root.findtext("on_reboot") == "restart" and root.find("features/kvm") is None
        assert root.find("clock").get("timezone") == "Europe/Paris"
        assert virt.update(vm_name, boot={"efi": False}, clock={"timezone": "Europe/Paris"})["changes"] == {}
    finally:
        virt.purge(vm_name)


def test_update_test_mode_only_reports(virt, vm_name, libvirt_conn):
    virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, seed=False, start=False)
    try:
        before = libvirt_conn.lookupByName(vm_name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        ret = virt.update(vm_name, boot={"efi": True}, boot_dev="network", test=True)
        assert ret["test"] and set(ret["changes"]) == {"boot:efi", "boot_dev"}
        assert libvirt_conn.lookupByName(vm_name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == before
    finally:
        virt.purge(vm_name)


@pytest.mark.parametrize(("boot", "message"), [
    ({"kernel": "/etc/shadow"}, "boot:kernel /etc/shadow is outside the allowed directories"),
    ({"loader": "/etc/passwd"}, "boot:loader /etc/passwd is outside the allowed directories"),
    ({"loader": "/usr/share/OVMF/OVMF_CODE_4M.fd", "efi": True}, "either efi .* or loader/nvram, not both"),
    ({"cmdline": "console=ttyS0"}, "initrd and cmdline need a kernel"),
])
def test_bad_boot_arguments_are_refused_and_leave_nothing(virt, vm_name, libvirt_conn, minion_opts, boot, message):
    with pytest.raises(SaltInvocationError, match=message):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, seed=False, start=False, boot=boot)
    assert vm_name not in [d.name() for d in libvirt_conn.listAllDomains()]
    assert not os.path.exists(os.path.join(minion_opts["virt"]["images"], vm_name))


def test_the_distributions_ovmf_is_accepted_as_a_loader(virt, vm_name, libvirt_conn, minion_opts):
    boot = {"loader": "/usr/share/OVMF/OVMF_CODE_4M.fd", "nvram": "/usr/share/OVMF/OVMF_VARS_4M.fd"}
    virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, seed=False, start=False, boot=boot)
    try:
        root = inactive_xml(libvirt_conn, vm_name)
        assert root.findtext("os/loader") == boot["loader"] and root.find("os/loader").get("type") == "pflash"
        assert root.find("os/nvram").get("template") == boot["nvram"]
        assert virt.update(vm_name, boot=boot)["changes"] == {}
    finally:
        virt.purge(vm_name)
