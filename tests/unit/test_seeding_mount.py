"""saltvirt.seeding's mount seeder without libguestfs: filesystem probing, paths inside the
image, the files written, install command handling."""

import os
import subprocess

import pytest

from saltvirt import seeding
from saltvirt.errors import InvalidArgument, NotFound
from saltvirt.seeding import guest


@pytest.fixture(scope="module")
def keys():
    return seeding.gen_minion_keys()


def mkfs(kind, path, size_mib=16):
    with open(path, "wb") as fh:
        fh.truncate(size_mib * 1024 * 1024)
    if kind == "ext4":
        subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "root", str(path)], check=True, capture_output=True)
    elif kind == "vfat":
        subprocess.run(["mkfs.vfat", "-n", "BOOT", str(path)], check=True, capture_output=True)


def partitioned(tmp_path, table, parts, name="disk.img"):
    """A raw disk with ``table`` (dos/gpt) and partitions ``[(kind, size_mib, type)]``."""
    disk = tmp_path / name
    total = 2 + sum(p[1] for p in parts)
    with open(disk, "wb") as fh:
        fh.truncate(total * 1024 * 1024)
    script = f"label: {table}\n" + "".join(f"size={size}MiB, type={ptype}\n" for _k, size, ptype in parts)
    subprocess.run(["sfdisk", "--quiet", str(disk)], input=script, text=True, check=True)
    layout = subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True, check=True).stdout
    import json

    entries = [p for p in json.loads(layout)["partitiontable"]["partitions"] if p["size"] > 4]
    for (kind, size, _t), entry in zip(parts, entries, strict=False):
        if kind is None:
            continue
        fs = tmp_path / f"fs-{entry['start']}"
        mkfs(kind, fs, size)
        subprocess.run(["dd", f"if={fs}", f"of={disk}", "bs=512", f"seek={entry['start']}", "conv=notrunc",
                        "status=none"], check=True)
    return disk


def test_filesystems_mbr_picks_linux_root(tmp_path):
    disk = partitioned(tmp_path, "dos", [("vfat", 16, "e"), ("ext4", 24, "83")])
    found = seeding.filesystems(disk, "raw")
    assert [(f["device"], f["fstype"], f["label"], f["writable"]) for f in found] == [
        ("/dev/sda1", "vfat", "BOOT", True), ("/dev/sda2", "ext4", "root", True)]
    assert seeding.choose_filesystem(found)["device"] == "/dev/sda2"
    assert seeding.choose_filesystem(found, "/dev/sda1")["fstype"] == "vfat"
    with pytest.raises(seeding.SeedError, match="no filesystem /dev/sda3"):
        seeding.choose_filesystem(found, "/dev/sda3")


def test_filesystems_of_qcow2(tmp_path):
    disk = partitioned(tmp_path, "dos", [(None, 4, "83"), ("ext4", 20, "83")])
    qcow = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(disk), str(qcow)], check=True)
    for image in (disk, qcow):
        found = {f["device"]: f["fstype"] for f in seeding.filesystems(image)}
        assert found == {"/dev/sda1": None, "/dev/sda2": "ext4"}, image


def test_filesystems_gpt_and_whole_disk(tmp_path):
    disk = partitioned(tmp_path, "gpt", [("vfat", 16, "U"), ("ext4", 20, "L")])
    assert [f["fstype"] for f in seeding.filesystems(disk)] == ["vfat", "ext4"]
    whole = tmp_path / "whole.img"
    mkfs("ext4", whole)
    assert seeding.filesystems(whole)[0]["device"] == "/dev/sda"


def test_read_only_and_unknown_filesystems_refused(tmp_path):
    ro = tmp_path / "ro.img"
    mkfs("ext4", ro)
    subprocess.run(["tune2fs", "-O", "read-only", str(ro)], check=True, capture_output=True)
    with pytest.raises(seeding.SeedError, match=r"no writable filesystem to seed \(/dev/sda=ext4 \(read-only\)\)"):
        seeding.choose_filesystem(seeding.filesystems(ro), image=str(ro))
    blank = partitioned(tmp_path, "dos", [(None, 8, "83")], name="blank.img")
    with pytest.raises(seeding.SeedError, match=r"no recognisable filesystem \(/dev/sda1=unknown\)"):
        seeding.choose_filesystem(seeding.filesystems(blank), image=str(blank))
    with pytest.raises(NotFound):
        seeding.filesystems(tmp_path / "missing.img")


def test_guest_paths_stay_inside_the_image(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), root / "etc" / "salt")  # absolute: must mean <root>/<outside>
    os.symlink("../../../..", root / "up")
    assert guest._guest_path(str(root), "/etc/salt/minion") == f"{root}{outside}/minion"
    assert guest._guest_path(str(root), "/up/etc") == f"{root}/etc"
    os.symlink("loop", root / "loop")
    with pytest.raises(seeding.SeedError, match="symbolic links"):
        guest._guest_path(str(root), "/loop/x")


def test_write_minion_files(tmp_path, keys):
    priv, pub = keys
    root = tmp_path / "root"
    pki = root / "etc" / "salt" / "pki" / "minion"
    pki.mkdir(parents=True)
    (pki / "minion_master.pub").write_text("old master key")
    os.symlink("/etc/passwd", pki / "minion.pub")  # an image's link is replaced, not followed
    written = seeding.write_minion_files(str(root), "vm1", "10.231.0.1", pub, priv, {"multiprocessing": False})
    assert written == ["/etc/salt/pki/minion/minion.pem", "/etc/salt/pki/minion/minion.pub",
                       "/etc/salt/minion", "-/etc/salt/pki/minion/minion_master.pub"]
    assert (root / "etc/salt/minion").read_text() == "id: vm1\nmaster: 10.231.0.1\nmultiprocessing: false\n"
    assert (pki / "minion.pub").read_text() == pub.strip() + "\n" and not (pki / "minion.pub").is_symlink()
    assert oct((pki / "minion.pem").stat().st_mode & 0o777) == "0o600"
    assert sorted(os.listdir(pki)) == ["minion.pem", "minion.pub"]
    # a custom pki_dir is honoured and created
    seeding.write_minion_files(str(root), "vm1", "m", pub, priv, {"pki_dir": "/srv/pki"})
    assert (root / "srv/pki/minion.pem").read_text() == priv.strip() + "\n"


def test_find_salt_minion_follows_links_inside(tmp_path):
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "opt/salt/bin").mkdir(parents=True)
    assert seeding.find_salt_minion(str(root)) is None
    (root / "opt/salt/bin/salt-minion").write_text("#!/bin/sh\n")
    os.symlink("/opt/salt/bin/salt-minion", root / "usr/bin/salt-minion")
    assert seeding.find_salt_minion(str(root)) == "/usr/bin/salt-minion"


def test_install_argv():
    assert guest._install_argv("chroot {root} sh -c 'apt-get install -y salt-minion'", "/mnt/x", "vm1", "/d.img") == [
        "chroot", "/mnt/x", "sh", "-c", "apt-get install -y salt-minion"]
    assert guest._install_argv(["cp", "-a", "/srv/onedir/.", "{root}/opt"], "/r", "vm", "/i") == [
        "cp", "-a", "/srv/onedir/.", "/r/opt"]
    with pytest.raises(InvalidArgument):
        guest._install_argv("", "/r", "vm", "/i")
    with pytest.raises(InvalidArgument):
        guest._install_argv({"cmd": 1}, "/r", "vm", "/i")


def test_seed_image_checks_arguments_before_mounting(tmp_path, keys):
    priv, pub = keys
    image = tmp_path / "none.img"  # does not even exist: the argument checks come first
    with pytest.raises(InvalidArgument, match="invalid minion id"):
        seeding.seed_image(image, minion_id="bad id", master="m", pub_key_pem=pub, priv_key_pem=priv)
    with pytest.raises(InvalidArgument, match="not a PEM private key"):
        seeding.seed_image(image, minion_id="vm", master="m", pub_key_pem=pub, priv_key_pem=pub)
    with pytest.raises(NotFound):
        seeding.seed_image(image, minion_id="vm", master="m", pub_key_pem=pub, priv_key_pem=priv)


def test_libguestfs_env():
    env = seeding.libguestfs_env(True, base={"LIBGUESTFS_BACKEND_SETTINGS": "force_kvm"})
    assert env["LIBGUESTFS_BACKEND"] == "direct"
    assert env["LIBGUESTFS_BACKEND_SETTINGS"] == "force_kvm:force_tcg"
    assert "LIBGUESTFS_BACKEND_SETTINGS" not in seeding.libguestfs_env(False, base={})
