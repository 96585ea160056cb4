"""Seeding in virt.init against this host's libvirtd: cidata, the mount seeder (seed.apply),
the guestfs module under Salt core's seed.apply, and every failure leaving nothing behind.

The mount tests boot the libguestfs appliance under TCG (25-40 s each); the fault tests that
can fail before it (no filesystem, read-only image, bad seeding command) take milliseconds.
"""

import os
import shutil
import subprocess

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from saltvirt import seeding

# --------------------------------------------------------------------------- helpers


def snapshot(scopes):
    """FUSE mounts, and libguestfs processes and guestfs mount records naming a path under
    ``scopes``, that exist now (the lab or other sessions may have their own: tests compare
    against what was there before)."""
    with open("/proc/mounts") as fh:
        mounts = {line.split()[1] for line in fh if line.split()[0] == "/dev/fuse"}
    procs = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        prog = os.path.basename(argv[0])
        joined = " ".join(argv)
        if not any(scope in joined for scope in scopes):
            continue
        if prog == "guestmount" or (prog.startswith("qemu-system") and "guestfs" in joined):
            procs.add((int(pid), joined[:160]))
    records = {r["mountpoint"] for r in seeding.active_mounts()
               if any(r["image"].startswith(scope) for scope in scopes)}
    return {"mounts": mounts, "processes": procs, "records": records, "scopes": scopes}


def assert_clean(before):
    after = snapshot(before["scopes"])
    new = {k: after[k] - before[k] for k in ("mounts", "processes", "records")}
    assert new == {"mounts": set(), "processes": set(), "records": set()}, new


@pytest.fixture
def before(minion_opts, tmp_path):
    return snapshot([minion_opts["virt"]["images"], str(tmp_path)])


def vm_dir(minion_opts, name):
    return os.path.join(minion_opts["virt"]["images"], name)


def assert_rolled_back(libvirt_conn, minion_opts, name):
    assert name not in [d.name() for d in libvirt_conn.listAllDomains()]
    directory = vm_dir(minion_opts, name)
    assert not os.path.exists(directory) or os.listdir(directory) == [], os.listdir(directory)


def fat_file(image, path, workdir, offset=1024 * 1024):
    """Read a file from the FAT partition of an image with mtools (no mounting)."""
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    if not image.endswith(".img"):
        raw = os.path.join(workdir, os.path.basename(image) + ".raw")
        if not os.path.exists(raw):
            subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", image, raw], check=True)
        image = raw
    proc = subprocess.run(["mtype", "-i", f"{image}@@{offset}", f"::{path}"], env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"mtype {image} {path}: {proc.stderr}"
    return proc.stdout


def ext_file(image, path):
    """Read a file from an ext4 image with debugfs (no mounting)."""
    proc = subprocess.run(["debugfs", "-R", f"cat {path}", image], capture_output=True, text=True, check=True)
    return proc.stdout


@pytest.fixture(scope="module")
def keys():
    return seeding.gen_minion_keys()


@pytest.fixture
def purge(virt, libvirt_conn):
    names = []
    yield names.append
    for name in names:
        if name in [d.name() for d in libvirt_conn.listAllDomains()]:
            virt.purge(name)


@pytest.fixture(scope="module")
def fake_minion_ext4(tmp_path_factory):
    """A tiny ext4 image (no partition table) with busybox as /bin/sh and a fake salt-minion:
    enough for Salt core's seed.apply, which chroots into the image to look for salt-minion."""
    base = tmp_path_factory.mktemp("ext4")
    tree = base / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "usr" / "bin").mkdir(parents=True)
    (tree / "etc").mkdir()
    shutil.copy("/bin/busybox", tree / "bin" / "busybox")
    os.symlink("busybox", tree / "bin" / "sh")
    minion = tree / "usr" / "bin" / "salt-minion"
    minion.write_text("#!/bin/sh\nexit 0\n")
    minion.chmod(0o755)
    image = base / "ext4.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(image), "32M"], check=True,
                   capture_output=True)
    return image


# --------------------------------------------------------------------------- cidata


def test_cidata_per_call_and_by_config(before, virt, vm_name, minion_opts, keys, purge, virt_with):
    priv, pub = keys
    # The configured default is used when seed_cmd is not given (a loader of its own: the
    # session's shared opts must not change under other tests)...
    configured = virt_with(seed_cmd="test.arg")
    with pytest.raises(CommandExecutionError, match="test.arg failed: it returned dict"):
        configured.init(vm_name, 1, 128, image="salt://centos.qcow2", start=False, pub_key=pub,
                        priv_key=priv)
    # ...and seed_cmd=cidata overrides it per call.
    purge(vm_name)
    ret = virt.init(vm_name, 1, 128, image="salt://centos.qcow2", start=False, seed_cmd="cidata",
                    pub_key=pub, priv_key=priv, config={"master": "10.0.2.2"})
    seeded = ret["seeded"]
    assert seeded["method"] == "cidata" and seeded["preseeded"] is True
    assert seeded["seconds"] < 1.0  # bench/bench_seeding.py measures it properly
    iso = os.path.join(vm_dir(minion_opts, vm_name), "cidata.iso")
    assert any(d["file"] == iso for d in ret["disks"].values())
    assert_clean(before)


def test_unknown_seed_cmd_is_refused_before_any_disk(before, virt, vm_name, minion_opts, libvirt_conn):
    with pytest.raises(SaltInvocationError, match="seed_cmd 'nope' is not configured on this hypervisor"):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", seed_cmd="nope")
    assert_rolled_back(libvirt_conn, minion_opts, vm_name)


# --------------------------------------------------------------------------- mount seeder


def test_seed_apply_installs_only_when_missing(before, virt, vm_name, minion_opts, keys, purge, tmp_path, virt_with):
    """seed.apply on the lab image (FAT, no salt-minion): the install command runs once,
    then config and keys are written; the disk is released for the domain to start."""
    priv, pub = keys
    log = tmp_path / "install.log"
    install = ["sh", "-c", f'echo "$1" >> {log}; mkdir -p "$1/usr/bin"; '
               'printf "#!/bin/sh\\n" > "$1/usr/bin/salt-minion"', "sh", "{root}"]
    purge(vm_name)
    # The command comes from the hypervisor's configuration; the call names it.
    virt = virt_with(seed_install_cmds={"fake-minion": install})
    ret = virt.init(vm_name, 1, 128, image="salt://centos.img", seed_cmd="seed.apply",
                    seed_install_cmd="fake-minion", pub_key=pub, priv_key=priv,
                    config={"master": "10.0.2.2", "multiprocessing": False}, start=False)
    seeded = ret["seeded"]
    assert seeded["method"] == "seed.apply"
    assert (seeded["device"], seeded["fstype"]) == ("/dev/sda1", "vfat")
    assert seeded["installed"] is True and seeded["salt_minion"] == "/usr/bin/salt-minion"
    assert len(log.read_text().splitlines()) == 1  # ran exactly once, on the mounted tree
    assert set(seeded["seconds"]) == {"mount", "write", "umount", "total"}
    assert_clean(before)

    disk = ret["disks"]["vda"]["file"]
    conf = fat_file(disk, "/etc/salt/minion", tmp_path)
    assert f"id: {vm_name}" in conf and "master: 10.0.2.2" in conf and "multiprocessing: false" in conf
    assert fat_file(disk, "/etc/salt/pki/minion/minion.pub", tmp_path).strip() == pub.strip()
    assert fat_file(disk, "/etc/salt/pki/minion/minion.pem", tmp_path).strip() == priv.strip()
    # the image is unlocked: the domain starts
    assert virt.start(vm_name)["started"] is True


def test_seed_apply_without_minion_and_install_false_still_seeds(before, virt, vm_name, minion_opts, keys, purge,
                                                                tmp_path):
    """Salt core's seed.apply writes nothing and returns False here; ours writes and warns."""
    priv, pub = keys
    purge(vm_name)
    ret = virt.init(vm_name, 1, 128, image="salt://centos.img", seed_cmd="seed.apply", install=False,
                    pub_key=pub, priv_key=priv, start=False)
    seeded = ret["seeded"]
    assert seeded["installed"] is False and seeded["salt_minion"] is None
    assert "not installed" in seeded["warning"]
    disk = ret["disks"]["vda"]["file"]
    assert fat_file(disk, "/etc/salt/pki/minion/minion.pub", tmp_path).strip() == pub.strip()
    assert f"id: {vm_name}" in fat_file(disk, "/etc/salt/minion", tmp_path)
    assert_clean(before)


# --------------------------------------------------------------------------- faults


def test_no_recognisable_filesystem(before, virt, vm_name, minion_opts, libvirt_conn, tmp_path):
    """A partitioned disk whose partition was never formatted (and a blank qcow2)."""
    blank = tmp_path / "blank.img"
    blank.write_bytes(b"\0" * (8 * 1024 * 1024))
    subprocess.run(["sfdisk", "--quiet", str(blank)], input="label: dos\nstart=2048, type=83\n",
                   text=True, check=True)
    with pytest.raises(CommandExecutionError, match=r"no recognisable filesystem \(/dev/sda1=unknown\)"):
        virt.init(vm_name, 1, 128, image=str(blank), seed_cmd="seed.apply")
    assert_rolled_back(libvirt_conn, minion_opts, vm_name)
    blank_qcow = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank_qcow), "16M"], check=True)
    with pytest.raises(CommandExecutionError, match=r"no recognisable filesystem \(no partitions\)"):
        virt.init(vm_name, 1, 128, image=str(blank_qcow), seed_cmd="seed.apply")
    assert_rolled_back(libvirt_conn, minion_opts, vm_name)
    assert_clean(before)


def test_read_only_filesystem(before, virt, vm_name, minion_opts, libvirt_conn, tmp_path):
    """An ext4 image with the read-only feature: refused before the appliance boots."""
    image = tmp_path / "ro-ext4.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", str(image), "16M"], check=True, capture_output=True)
    subprocess.run(["tune2fs", "-O", "read-only", str(image)], check=True, capture_output=True)
    with pytest.raises(CommandExecutionError, match=r"no writable filesystem.*ext4 \(read-only\)"):
        virt.init(vm_name, 1, 128, image=str(image), seed_cmd="seed.apply")
    assert_rolled_back(libvirt_conn, minion_opts, vm_name)
    assert_clean(before)


def test_read_only_disk_file(before, virt, vm_name, minion_opts, libvirt_conn, guest_images, tmp_path):
    """An operator-supplied system disk that is immutable: clear error, and the operator's
    file is left alone (never removed)."""
    disk = tmp_path / "operator.img"
    shutil.copyfile(guest_images / "centos.img", disk)
    subprocess.run(["chattr", "+i", str(disk)], check=True)
    try:
        with pytest.raises(CommandExecutionError, match="is read-only"):
            virt.init(vm_name, 1, 128, image=str(disk), seed_cmd="seed.apply",
                      disks=[{"name": "system", "source_file": str(disk)}])
        assert disk.exists()
    finally:
        subprocess.run(["chattr", "-i", str(disk)], check=True)
    assert_rolled_back(libvirt_conn, minion_opts, vm_name)
    assert_clean(before)


def test_seeding_command_failing(before, virt, vm_name, minion_opts, libvirt_conn, keys):
    """A seed_cmd that does not return True (test.arg echoes its arguments): error, rollback,
    and the private key it was given is not in the message."""
    priv, pub = keys
    with pytest.raises(CommandExecutionError) as err:
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", seed_cmd="test.arg",
                  pub_key=pub, priv_key=priv)
    assert "seeding" in str(err.value) and "test.arg" in str(err.value)
    assert "PRIVATE KEY" not in str(err.value)
    assert_rolled_back(libvirt_conn, minion_opts, vm_name)
    assert_clean(before)


def test_install_command_failing(before, virt, vm_name, minion_opts, libvirt_conn, keys):
    priv, pub = keys
    with pytest.raises(CommandExecutionError, match="installing salt-minion into .* failed: .*exited with 3"):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", seed_cmd="seed.apply",
                  seed_install_cmd="no-network", pub_key=pub, priv_key=priv)
    assert_rolled_back(libvirt_conn, minion_opts, vm_name)
    assert_clean(before)


def test_no_install_command_configured(before, virt, vm_name, minion_opts, libvirt_conn, keys):
    priv, pub = keys
    with pytest.raises(CommandExecutionError, match="salt-minion is not installed .* no install command"):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", seed_cmd="seed.apply",
                  pub_key=pub, priv_key=priv)
    assert_rolled_back(libvirt_conn, minion_opts, vm_name)
    assert_clean(before)


# --------------------------------------------------------------------------- guestfs module


def test_core_seed_apply_uses_guestfs_module(before, loaders, fake_minion_ext4, keys, tmp_path):
    """Salt core's seed.apply, unchanged, works on Salt 3008 through our guestfs module."""
    priv, pub = keys
    image = tmp_path / "disk.img"
    shutil.copyfile(fake_minion_ext4, image)
    seed = loaders.modules.seed
    assert seed.apply(str(image), id_="core1", config={"master": "10.0.2.2"}, install=False,
                      pub_key=pub, priv_key=priv, approve_key=False) is True
    assert_clean(before)
    conf = ext_file(str(image), "/etc/salt/minion")
    assert "id: core1" in conf and "master: 10.0.2.2" in conf
    assert ext_file(str(image), "/etc/salt/pki/minion/minion.pub").strip() == pub.strip()


def test_guestfs_mount_umount(before, loaders, fake_minion_ext4, tmp_path):
    image = tmp_path / "disk.img"
    shutil.copyfile(fake_minion_ext4, image)
    guestfs = loaders.modules.guestfs
    assert guestfs.filesystems(str(image))[0]["fstype"] == "ext4"
    mountpoint = guestfs.mount(str(image), access="ro")
    try:
        assert os.path.isfile(os.path.join(mountpoint, "usr/bin/salt-minion"))
        assert [m["mountpoint"] for m in guestfs.mounts()] == [mountpoint]
        with pytest.raises(OSError):
            open(os.path.join(mountpoint, "etc/x"), "w").close()
    finally:
        ret = guestfs.umount(mountpoint, disk=str(image))
    assert ret["killed"] == [] and not os.path.exists(mountpoint)
    assert_clean(before)
    # unlocked: qemu-img info (which takes the image lock) opens it at once
    subprocess.run(["qemu-img", "info", str(image)], check=True, capture_output=True)


# --------------------------------------------------------------------------- the seed's lifetime


def test_seed_iso_serves_one_boot_in_the_vms_own_directory(virt, vm_name, minion_opts, keys, purge, qemu_dir,
                                                          libvirt_conn):
    """The ISO holds the VM's private key: 0600, in the VM's own directory even when its disks
    are in a shared pool, detached and deleted on the next start after the first boot."""
    priv, pub = keys
    purge(vm_name)
    pool = qemu_dir / f"{vm_name}-pool"
    ret = virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, start=False,
                    pub_key=pub, priv_key=priv, disks=[{"name": "system", "pool": str(pool)}])
    iso = os.path.join(vm_dir(minion_opts, vm_name), "cidata.iso")
    assert ret["disks"]["vda"]["file"] == str(pool / f"{vm_name}-system.qcow2")
    assert any(d["file"] == iso for d in ret["disks"].values())
    assert os.stat(iso).st_mode & 0o777 == 0o600 and os.listdir(pool) == [f"{vm_name}-system.qcow2"]
    assert virt.start(vm_name) == {"name": vm_name, "started": True}  # the first boot: seeded
    assert os.path.exists(iso)
    virt.force_off(vm_name)
    again = virt.start(vm_name)  # a later boot: the seed goes first
    assert again == {"name": vm_name, "unseeded": True, "started": True}
    assert not os.path.exists(iso)
    xml = libvirt_conn.lookupByName(vm_name).XMLDesc(2)  # the persistent definition
    assert "cidata.iso" not in xml
    assert virt.unseed(vm_name) == {"name": vm_name, "detached": False, "removed": None}
    virt.purge(vm_name)
    assert not os.path.exists(vm_dir(minion_opts, vm_name))
    shutil.rmtree(pool, ignore_errors=True)


def test_unseed_of_a_running_vm_and_purge_in_every_layout(virt, vm_name, minion_opts, keys, libvirt_conn):
    priv, pub = keys
    virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, pub_key=pub, priv_key=priv)
    iso = os.path.join(vm_dir(minion_opts, vm_name), "cidata.iso")
    ret = virt.unseed(vm_name)
    assert ret == {"name": vm_name, "detached": True, "removed": iso} and not os.path.exists(iso)
    assert "cidata.iso" not in libvirt_conn.lookupByName(vm_name).XMLDesc(2)
    purged = virt.purge(vm_name)
    assert purged["purged"] is True and not os.path.exists(vm_dir(minion_opts, vm_name))
