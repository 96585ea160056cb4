"""Untrusted inputs stay in their boundaries: images that would read host files, call
arguments naming host paths or commands. Each refusal names the value and leaves nothing:
no domain, no file under ``virt:images``. The legitimate path next to each refusal works."""

import os
import subprocess

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from saltvirt.errors import InvalidArgument
from saltvirt.storage import images


def state(libvirt_conn, minion_opts):
    root = minion_opts["virt"]["images"]
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs) if os.path.isdir(root) else []
    return sorted(d.name() for d in libvirt_conn.listAllDomains()), files


@pytest.fixture
def unchanged(libvirt_conn, minion_opts):
    before = state(libvirt_conn, minion_opts)
    yield
    assert state(libvirt_conn, minion_opts) == before


@pytest.fixture
def secret(qemu_dir):
    """A host file no guest may see (in a directory QEMU could read)."""
    path = qemu_dir / "secret.raw"
    path.write_bytes(b"HOST-SECRET-" * 100000)
    return str(path)


def qemu_img(*args):
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True)


def test_image_with_a_backing_file_is_refused(virt, vm_name, qemu_dir, secret, minion_opts, unchanged):
    evil = qemu_dir / f"{vm_name}-evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", evil)
    with pytest.raises(SaltInvocationError, match=r"names a backing file \(.*secret.raw\).*may not read other files"):
        virt.init(vm_name, 1, 128, image=str(evil), seed=False, start=False)
    # the same through the master's file server
    served = os.path.join(minion_opts["file_roots"]["base"][0], f"{vm_name}-evil.qcow2")
    os.link(evil, served)
    try:
        with pytest.raises(SaltInvocationError, match="names a backing file"):
            virt.init(vm_name, 1, 128, image=f"salt://{vm_name}-evil.qcow2", enable_qcow=True, seed=False)
    finally:
        os.unlink(served)
    # a json: backing name reaches any protocol QEMU speaks: refused the same way
    jsonish = qemu_dir / f"{vm_name}-json.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", 'json:{"driver":"raw","file":{"driver":"file",'
             f'"filename":"{secret}"}}}}', "-F", "raw", jsonish, "1M")
    with pytest.raises(SaltInvocationError, match=r"names a backing file \(json:"):
        virt.init(vm_name, 1, 128, image=str(jsonish), seed=False, start=False)


def test_image_with_an_external_data_file_is_refused(virt, vm_name, qemu_dir, secret, unchanged):
    evil = qemu_dir / f"{vm_name}-data.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={secret},data_file_raw=on", evil, "1M")
    with pytest.raises(SaltInvocationError, match="keeps its data in an external file"):
        virt.init(vm_name, 1, 128, image=str(evil), seed=False, start=False)


def test_format_is_never_probed_beyond_raw_and_qcow2(qemu_dir, secret):
    """A VMDK descriptor names other files (extents): as an untrusted image it is raw bytes."""
    descriptor = qemu_dir / "evil.vmdk"
    descriptor.write_text(f'# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                          f'createType="monolithicFlat"\nRW 2048 FLAT "{secret}" 0\n')
    assert images.inspect_untrusted(str(descriptor))["format"] == "raw"
    with pytest.raises(InvalidArgument, match="not recognised as a disk image"):
        images.check_source(str(descriptor), fmt="raw")


def test_virtual_size_limit(minion_opts, vm_name, libvirt_conn, unchanged, virt_with):
    limited = virt_with(image_policy={"max_virtual_size": "1M"})
    with pytest.raises(SaltInvocationError, match=r"virtual size of \d+ bytes, more than virt:image_policy"):
        limited.init(vm_name, 1, 128, image="salt://centos.qcow2", seed=False, start=False)


def test_downloads_need_a_checksum(virt, vm_name, unchanged):
    with pytest.raises(SaltInvocationError, match=r"a download needs image_hash=sha256="):
        virt.init(vm_name, 1, 128, image="http://127.0.0.1:9/centos.img", seed=False, start=False)


@pytest.mark.parametrize("disks, message", [
    ([{"name": "system", "source_file": "/etc/shadow", "format": "raw"}],
     r"source_file /etc/shadow is outside the allowed directories"),
    ([{"name": "../../../etc/cron.d/x", "size": 16}], r"disk name '../../../etc/cron.d/x' is not allowed"),
    ([{"name": "data", "size": 16, "pool": "/etc"}], r"pool /etc is outside the allowed directories"),
    ([{"name": "data", "size": "inf"}], r"not a finite number|invalid size"),
])
def test_disk_arguments_stay_in_their_roots(virt, vm_name, disks, message, unchanged):
    with pytest.raises(SaltInvocationError, match=message):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", disks=disks, seed=False, start=False)


def test_another_vms_disk_is_not_a_source(virt, vm_name, minion_opts, libvirt_conn):
    other = f"{vm_name}-other"
    ret = virt.init(other, 1, 128, image="salt://centos.qcow2", enable_qcow=True, seed=False, start=False)
    disk = ret["disks"]["vda"]["file"]
    try:
        before = state(libvirt_conn, minion_opts)
        for kwargs in ({"image": disk}, {"disks": [{"name": "system", "source_file": disk}]}):
            with pytest.raises(SaltInvocationError, match="where VMs keep their disks and keys: refused"):
                virt.init(vm_name, 1, 128, seed=False, start=False, **kwargs)
        assert state(libvirt_conn, minion_opts) == before
    finally:
        virt.purge(other)


def test_attached_file_inside_the_roots_works(virt, vm_name, qemu_dir, minion_opts):
    data = qemu_dir / f"{vm_name}-data.img"
    qemu_img("create", "-q", "-f", "raw", data, "16M")
    ret = virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, seed=False, start=False,
                    disks=[{"name": "system"}, {"name": "data", "source_file": str(data)}])
    try:
        files = {d["file"]: d["format"] for d in ret["disks"].values()}
        assert files[str(data)] == "raw"
    finally:
        virt.purge(vm_name)
    assert data.exists()  # an operator's file is never removed


def test_seed_keys_and_commands_come_from_the_hypervisor(virt, vm_name, unchanged):
    with pytest.raises(SaltInvocationError, match=r"seed key /etc/shadow is outside the allowed directories"):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", pub_key="-----BEGIN PUBLIC KEY-----x",
                  priv_key="/etc/shadow")
    with pytest.raises(SaltInvocationError, match=r"seed_install_cmd 'rm -rf /' is not one of virt:seed_install_cmds"):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", seed_cmd="seed.apply", seed_install_cmd="rm -rf /")
    with pytest.raises(SaltInvocationError, match=r"seed_cmd 'cmd.run' is not configured on this hypervisor"):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", seed_cmd="cmd.run")


def test_remove_image_only_where_base_images_live(virt, qemu_dir):
    with pytest.raises(SaltInvocationError, match=r"image to remove /etc/hostname is outside the allowed"):
        virt.remove_image("/etc/hostname")
    assert os.path.exists("/etc/hostname")
    base = qemu_dir / "unused-base.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", base, "1M")
    assert virt.remove_image(str(base)) == {"path": str(base), "removed": True}


def test_relative_images_dir_is_refused(minion_opts, virt_with):
    with pytest.raises((SaltInvocationError, CommandExecutionError), match=r"virt:images is 'relative/images'"):
        virt_with(images="relative/images").full_info()


def test_stop_without_timeout_only_requests(virt, vm_name):
    virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, seed=False)
    try:
        ret = virt.stop(vm_name)
        assert (ret["requested"], ret["stopped"], ret["status"]) == (True, False, "requested")
    finally:
        virt.purge(vm_name)


def test_a_thin_disk_that_could_not_fill_is_refused(virt, vm_name, minion_opts, unchanged, virt_with):
    with pytest.raises(SaltInvocationError, match=r"not enough space in .*: the new disks need \d+ MiB \(thin disks "
                                                  r"counted at their virtual size"):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, seed=False, start=False,
                  disks=[{"name": "system", "size": "100T"}])
    # with the operator's over-commit, the same thin disk is made
    overcommit = virt_with(disk_overcommit=True)
    ret = overcommit.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, seed=False, start=False,
                          disks=[{"name": "system", "size": "100T"}])
    try:
        assert ret["disks"]["vda"]["size"] == 100 << 40
    finally:
        overcommit.purge(vm_name)


@pytest.mark.parametrize("kwargs, message", [
    ({"serials": [{"type": "file", "path": "/etc/cron.d/saltvirt"}]},
     r"serials\[0\]:path /etc/cron.d/saltvirt is outside the allowed directories"),
    ({"consoles": [{"type": "unix", "path": "/run/saltvirt.sock", "target_type": "virtio"}]},
     r"consoles\[0\]:path /run/saltvirt.sock is outside the allowed directories"),
    ({"host_devices": ["pci_0000_00_00_0"]},
     r"host device\(s\) pci_0000_00_00_0 may not be passed through .*virt:host_devices:allowed"),
])
def test_serial_files_and_host_devices_stay_in_the_operators_bounds(virt, vm_name, kwargs, message, unchanged):
    with pytest.raises(SaltInvocationError, match=message):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", seed=False, start=False, **kwargs)


def test_a_serial_file_inside_the_roots_works(virt, vm_name, qemu_dir, libvirt_conn):
    path = str(qemu_dir / f"{vm_name}-ttyS1.log")
    virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, seed=False, start=False,
              serials=[{"type": "pty"}, {"type": "file", "path": path}])
    try:
        xml = libvirt_conn.lookupByName(vm_name).XMLDesc(0)
        assert f"<source path='{path}' append='on'/>" in xml
        assert f"{vm_name}-serial.log" in xml  # port 0 still logs where salt-virt reads it
    finally:
        virt.purge(vm_name)
