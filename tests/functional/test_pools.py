"""Storage pools and volumes against this host's libvirtd: a directory pool defined, built and
started, volumes created, filled over libvirt's upload stream (whole and sparse), grown,
listed with the domains using them, deleted; the pool deleted and undefined; refusals on the
real daemon leave nothing behind."""

import hashlib
import os
import subprocess
import uuid

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError


def _sha(path, length=None):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        digest.update(fh.read() if length is None else fh.read(length))
    return digest.hexdigest()


@pytest.fixture
def pool(virt, qemu_dir, libvirt_conn):
    name = f"svtest-pool-{uuid.uuid4().hex[:6]}"
    target = str(qemu_dir / "pools" / name)
    yield name, target
    if name in virt.list_pools():
        p = libvirt_conn.storagePoolLookupByName(name)
        if p.isActive():
            for vol in p.listAllVolumes():
                vol.delete()
            p.destroy()
        p.delete()
        p.undefine()
    assert not os.path.exists(target)


def test_a_dir_pool_from_definition_to_deletion(virt, pool, guest_images, qemu_dir):
    name, target = pool
    assert virt.pool_define(name, "dir", target=target, permissions={"mode": "0755"}, start=False) is True
    assert virt.pool_build(name) is True and os.path.isdir(target)
    assert oct(os.stat(target).st_mode & 0o777) == "0o755"
    assert virt.pool_start(name) is True and virt.pool_info(name)[name]["state"] == "running"
    # Identical settings: no change; a new mode: changed in the definition it starts with next.
    assert virt.pool_update(name, "dir", target=target, permissions={"mode": "0755"}) is False
    assert virt.pool_update(name, "dir", target=target, permissions={"mode": "0750"}) is True
    assert "<mode>0750</mode>" in virt.pool_get_xml(name, inactive=True)
    assert virt.pool_update(name, "dir", target=target, permissions={"mode": "0750"}) is False

    source = str(guest_images / "centos.img")
    image = qemu_dir / "pools" / "upload-source.img"  # the upload's source must be under the roots
    image.write_bytes(open(source, "rb").read())
    size_mib = -(-os.path.getsize(image) // (1024 * 1024))
    assert virt.volume_define(name, "system.img", size_mib, format="raw") is True
    assert virt.volume_upload(name, "system.img", str(image)) is True
    assert _sha(os.path.join(target, "system.img"), os.path.getsize(image)) == _sha(image)
    assert virt.volume_define(name, "sparse.img", size_mib, format="raw") is True
    assert virt.volume_upload(name, "sparse.img", str(image), sparse=True) is True
    assert _sha(os.path.join(target, "sparse.img"), os.path.getsize(image)) == _sha(image)

    assert virt.volume_resize(name, "sparse.img", size_mib + 4) is True
    infos = virt.volume_infos(name)[name]
    assert infos["sparse.img"]["capacity"] == (size_mib + 4) * 1024 * 1024
    assert infos["system.img"]["format"] == "raw" and infos["system.img"]["used_by"] == []
    with pytest.raises(SaltInvocationError, match="shrinking it to 1 MiB would lose data"):
        virt.volume_resize(name, "sparse.img", 1)

    assert virt.pool_list_volumes(name) == ["sparse.img", "system.img"]
    assert virt.volume_delete(name, "sparse.img") is True and virt.volume_delete(name, "system.img") is True
    assert virt.pool_stop(name) is True and virt.pool_delete(name) is True and not os.path.exists(target)
    assert virt.pool_undefine(name) is True and name not in virt.list_pools()
    image.unlink()


def test_refusals_on_the_real_daemon_leave_nothing(virt, pool, qemu_dir):
    name, target = pool
    with pytest.raises(SaltInvocationError, match="target /srv is outside virt:pools:allowed_targets"):
        virt.pool_define(name, "dir", target="/srv")
    with pytest.raises(SaltInvocationError, match="type mpath is not allowed"):
        virt.pool_define(name, "mpath")
    assert name not in virt.list_pools()
    # A pool that cannot start is not left defined (all or nothing): its directory is missing.
    with pytest.raises(Exception, match="starting storage pool"):
        virt.pool_define(name, "dir", target=target)
    assert name not in virt.list_pools()


def test_pool_capabilities_come_from_libvirt(virt):
    caps = virt.pool_capabilities()
    assert caps["computed"] is False
    kinds = {p["name"]: p for p in caps["pool_types"]}
    assert kinds["dir"]["supported"] is True
    assert "qcow2" in kinds["dir"]["options"]["volume"]["targetFormatType"]
    assert kinds["dir"]["options"]["volume"]["default_format"] == "raw"


def test_vm_disks_in_a_pool_named_by_its_name(virt, pool, vm_name, libvirt_conn):
    name, target = pool
    virt.pool_define(name, "dir", target=target, start=False)
    virt.pool_build(name)
    # A stopped pool takes no disks (nothing is made); started, it does.
    with pytest.raises(SaltInvocationError, match=f"storage pool {name} is not running"):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", seed=False, start=False,
                  disks=[{"name": "data", "pool": name, "size": 16}])
    assert vm_name not in virt.list_domains()
    virt.pool_start(name)
    # Whole or nothing: a second disk that cannot be made removes the first one again.
    with pytest.raises(SaltInvocationError, match="nosuch"):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", seed=False, start=False,
                  disks=[{"name": "data", "pool": name, "size": 16}, {"name": "more", "pool": "nosuch", "size": 16}])
    assert os.listdir(target) == []
    ret = virt.init(vm_name, 1, 128, image="salt://centos.qcow2", seed=False, start=False,
                    disks=[{"name": "data", "pool": name, "size": 16}])
    data = os.path.join(target, f"{vm_name}-data.qcow2")
    assert ret["disks"]["vdb"]["file"] == data and os.path.isfile(data)
    virt.pool_refresh(name)
    assert virt.volume_infos(name)[name][f"{vm_name}-data.qcow2"]["used_by"] == [vm_name]
    # The same disks again (as virt.running/virt.defined do): nothing to change.
    again = virt.update(vm_name, disks=[{"name": "data", "pool": name, "size": 16}], test=True)
    assert again["changes"] == {} and again["comment"] == f"{vm_name} is up to date", again
    purged = virt.purge(vm_name)
    assert data in purged["removed"] and os.listdir(target) == []
    assert virt.pool_list_volumes(name) == []


def test_a_password_becomes_the_pools_own_secret_and_goes_with_it(virt, libvirt_conn):
    import libvirt

    name = f"svtest-iscsi-{uuid.uuid4().hex[:6]}"
    usage = f"pool_{name}"
    iscsi = {"source_hosts": ["127.0.0.1"], "source_devices": ["iqn.2013-06.com.example:x"]}
    try:
        # libvirt refuses an iSCSI pool without a target: the secret made for it goes too.
        with pytest.raises(CommandExecutionError, match="missing storage pool target path"):
            virt.pool_define(name, "iscsi", source_auth={"username": "u", "password": "s3cret"}, start=False, **iscsi)
        with pytest.raises(libvirt.libvirtError):
            libvirt_conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_ISCSI, usage)
        assert virt.pool_define(name, "iscsi", target="/dev/disk/by-path", start=False,
                                source_auth={"username": "u", "password": "s3cret"}, **iscsi) is True
        secret = libvirt_conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_ISCSI, usage)
        assert secret.usageID() == usage  # private: libvirt never gives its value back
        xml = virt.pool_get_xml(name)
        assert f"usage='{usage}'" in xml and "s3cret" not in xml
        # The same settings: unchanged (the password, which cannot be compared, is set again).
        assert virt.pool_update(name, "iscsi", target="/dev/disk/by-path",
                                source_auth={"username": "u", "password": "n3w"}, **iscsi) is False
        same = libvirt_conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_ISCSI, usage)
        assert same.UUIDString() == secret.UUIDString()
        assert virt.pool_undefine(name) is True
        with pytest.raises(libvirt.libvirtError):
            libvirt_conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_ISCSI, usage)
    finally:
        if name in virt.list_pools():
            libvirt_conn.storagePoolLookupByName(name).undefine()
        try:
            libvirt_conn.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_ISCSI, usage).undefine()
        except libvirt.libvirtError:
            pass


def test_volumes_from_caller_xml_on_the_real_daemon(virt, pool, qemu_dir):
    name, target = pool
    assert virt.pool_define(name, "dir", target=target, start=False) is True
    assert virt.pool_build(name) is True and virt.pool_start(name) is True
    base = qemu_dir / f"{name}-base.qcow2"  # under the image roots
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(base), "8M"], check=True, capture_output=True)
    overlay = ("<volume><name>overlay.qcow2</name><capacity unit='MiB'>8</capacity><target><format type='qcow2'/>"
               f"<permissions><mode>0640</mode></permissions></target><backingStore><path>{base}</path>"
               "<format type='qcow2'/></backingStore></volume>")
    assert virt.define_vol_xml_str(overlay, pool=name) is True
    info = virt.volume_infos(name, "overlay.qcow2")[name]["overlay.qcow2"]
    assert info["format"] == "qcow2" and info["backing_store"] == {"path": str(base), "format": "qcow2"}
    assert oct(os.stat(os.path.join(target, "overlay.qcow2")).st_mode & 0o777) == "0o640"
    xml_file = qemu_dir / f"{name}-vol.xml"
    xml_file.write_text("<volume><name>plain.img</name><capacity unit='MiB'>4</capacity>"
                        "<target><format type='raw'/></target></volume>")
    assert virt.define_vol_xml_path(str(xml_file), pool=name) is True
    assert os.path.getsize(os.path.join(target, "plain.img")) == 4 * 1024 * 1024
    # Refused before libvirt: a backing store outside the roots, a target outside the pool.
    for inner, message in (("<backingStore><path>/etc/shadow</path><format type='raw'/></backingStore>",
                            "must lie under the image roots"),
                           ("<target><path>/var/tmp/escape.img</path></target>", "pool's own directory")):
        with pytest.raises(SaltInvocationError, match=message):
            virt.define_vol_xml_str(f"<volume><name>bad.img</name><capacity>1</capacity>{inner}</volume>",
                                    pool=name)
    assert virt.pool_list_volumes(name) == ["overlay.qcow2", "plain.img"]
    assert not os.path.exists("/var/tmp/escape.img")
    # libvirt's own refusal (an unknown format) is reported with the pool and volume named.
    with pytest.raises(CommandExecutionError, match=f"libvirt refused volume {name}/odd.img"):
        virt.define_vol_xml_str("<volume><name>odd.img</name><capacity>1</capacity><target>"
                                "<format type='nosuchformat'/></target></volume>", pool=name)
    assert virt.pool_list_volumes(name) == ["overlay.qcow2", "plain.img"]
