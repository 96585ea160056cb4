"""The ``virt`` execution module against this host's real libvirtd and QEMU (TCG) guests."""

import hashlib
import json
import os
import re
import subprocess
import time
import xml.etree.ElementTree as ET

import libvirt
import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def serial_log(name):
    try:
        with open(f"/var/log/libvirt/qemu/{name}-serial.log", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


def wait_serial(name, pattern, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, serial_log(name))
        if match:
            return match
        time.sleep(0.5)
    raise AssertionError(f"{pattern!r} not in {name}'s console:\n{serial_log(name)[-1500:]}")


@pytest.fixture
def base_qcow2(minion_opts, qemu_dir, vm_name):
    """A private, writable copy of the guest qcow2 (virt.init makes bases read-only)."""
    src = os.path.join(minion_opts["file_roots"]["base"][0], "centos.qcow2")
    dst = qemu_dir / f"{vm_name}-base.qcow2"
    subprocess.run(["cp", "--sparse=always", src, dst], check=True)
    return str(dst)


def images_dir(minion_opts):
    return minion_opts["virt"]["images"]


def test_init_qcow_overlay_boots_and_keeps_base_intact(virt, vm_name, base_qcow2, minion_opts):
    before = sha256(base_qcow2)
    ret = virt.init(vm_name, 1, 192, image=base_qcow2, enable_qcow=True, seed=False)
    assert ret["state"] == "running"
    assert ret["hypervisor_type"] in ("qemu", "kvm") and ret["hypervisor_reason"]
    overlay = os.path.join(images_dir(minion_opts), vm_name, "system.qcow2")
    assert ret["disks"]["vda"]["file"] == overlay
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", "--backing-chain", overlay],
        check=True, capture_output=True, text=True).stdout)
    assert info[0]["backing-filename"] == base_qcow2
    assert info[0]["backing-filename-format"] == "qcow2"
    # The guest runs and writes its disk (heartbeat.log on its boot partition).
    wait_serial(vm_name, r"SALTVIRT-DISK-WRITE ok")
    wait_serial(vm_name, r"SALTVIRT-HEARTBEAT 2\b")  # (its first beat is written and synced)
    assert sha256(base_qcow2) == before
    assert not os.stat(base_qcow2).st_mode & 0o222  # base made read-only
    virt.force_off(vm_name)
    purged = virt.purge(vm_name)
    assert overlay in purged["removed"]
    assert os.path.exists(base_qcow2)  # a base image is never purged


def test_init_salt_url_full_copy_start_false(virt, vm_name, minion_opts):
    ret = virt.init(vm_name, 1, 128, image="salt://centos.img", start=False, seed=False)
    assert ret["state"] == "shutoff"
    disk = ret["disks"]["vda"]
    assert disk["format"] == "qcow2" and disk["backing"] == []
    assert virt.vm_state(vm_name) == {vm_name: "shutoff"}
    assert vm_name in virt.list_inactive_vms()
    virt.purge(vm_name)
    assert not os.path.exists(os.path.join(images_dir(minion_opts), vm_name))


def test_cidata_seed_is_read_by_the_guest(virt, vm_name, minion_opts, tmp_path):
    from salt.utils.crypt import pem_finger

    from saltvirt import seeding

    priv, pub = seeding.gen_minion_keys()
    ret = virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True,
                    pub_key=pub, priv_key=priv, seed_cmd="cidata")
    assert ret["seeded"]["method"] == "cidata"
    assert wait_serial(vm_name, r"SALTVIRT-MINION-ID: (\S+)").group(1) == vm_name
    (tmp_path / "minion.pub").write_text(pub)
    expected = pem_finger(str(tmp_path / "minion.pub"), sum_type="sha256")
    assert wait_serial(vm_name, r"SALTVIRT-MINION-KEY: (\S+)").group(1) == expected
    seed = os.path.join(images_dir(minion_opts), vm_name, "cidata.iso")
    assert os.stat(seed).st_mode & 0o777 == 0o600  # it holds the private key
    virt.purge(vm_name)
    assert not os.path.exists(seed)


def test_vnc_listens_on_loopback_and_reports_port(virt, vm_name):
    ret = virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, seed=False,
                    enable_vnc=True)
    (gfx,) = virt.get_graphics(vm_name)
    assert gfx["type"] == "vnc" and gfx["listen"] == "127.0.0.1"
    assert gfx["port"] >= 5900
    assert ret["graphics"][0]["listen"] != "0.0.0.0"
    virt.purge(vm_name)


def test_lifecycle(virt, vm_name):
    virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, seed=False)
    wait_serial(vm_name, r"SALTVIRT-HEARTBEAT 1\b")
    assert virt.pause(vm_name)["paused"] is True
    assert virt.vm_state(vm_name)[vm_name] == "paused"
    assert virt.resume(vm_name)["resumed"] is True
    assert virt.reset(vm_name)["reset"] is True
    assert virt.set_autostart(vm_name, "on")["autostart"] is True
    # A clean ACPI shutdown: the guest powers itself off.
    wait_serial(vm_name, r"SALTVIRT-HEARTBEAT 2\b")
    assert virt.stop(vm_name, timeout=90)["stopped"] is True
    assert virt.vm_state(vm_name)[vm_name] == "shutoff"
    assert virt.setmem(vm_name, 256)["set"] is True
    assert virt.setvcpus(vm_name, 2)["set"] is True
    info = virt.vm_info(vm_name)[vm_name]
    assert info["memory"] == 256 * 1024 and info["cpu"] == 2 and info["autostart"] is True
    assert virt.start(vm_name)["started"] is True
    assert virt.force_off(vm_name)["destroyed"] is True
    assert virt.undefine(vm_name)["undefined"] is True
    assert vm_name not in virt.list_domains()


def test_inventory(virt, libvirt_conn):
    node = virt.node_info()
    assert node["cpus"] == libvirt_conn.getInfo()[2]
    assert isinstance(virt.freemem(), int) and isinstance(virt.freecpu(), int)
    full = virt.full_info()
    assert {"node_info", "freemem", "freecpu", "disk_free", "vm_info", "usage", "address"} <= set(full)
    assert virt.is_hyper() is True
    caps = virt.capabilities()
    assert "<capabilities>" in caps["xml"] and isinstance(caps["kvm_works"], bool)


BAD_NAMES = ["", "a/b", "..", "has space", "x" * 65, "-lead", "a\0b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_and_leave_nothing(virt, name, minion_opts, libvirt_conn):
    before = set(os.listdir(images_dir(minion_opts))) if os.path.isdir(images_dir(minion_opts)) else set()
    domains = {d.name() for d in libvirt_conn.listAllDomains()}
    with pytest.raises(SaltInvocationError, match="domain name"):
        virt.init(name, 1, 128, image="salt://centos.qcow2", seed=False)
    after = set(os.listdir(images_dir(minion_opts))) if os.path.isdir(images_dir(minion_opts)) else set()
    assert after == before
    assert {d.name() for d in libvirt_conn.listAllDomains()} == domains


@pytest.mark.parametrize("cpu,mem,match", [
    (0, 128, "cpu must be at least 1"),
    (-1, 128, "cpu must be at least 1"),
    (512, 128, "more than this host has"),
    (1, 0, "mem must be a positive"),
    (1, 10 ** 9, "more than this host has"),
    ("two", 128, "must be integers"),
])
def test_bad_resources_are_refused(virt, vm_name, cpu, mem, match, minion_opts):
    with pytest.raises(SaltInvocationError, match=match):
        virt.init(vm_name, cpu, mem, image="salt://centos.qcow2", seed=False)
    assert not os.path.exists(os.path.join(images_dir(minion_opts), vm_name))


def test_bad_images_are_refused_and_leave_nothing(virt, vm_name, tmp_path, minion_opts, libvirt_conn):
    tmp_path.chmod(0o755)
    text = tmp_path / "notes.txt"
    text.write_text("this is not a disk image\n" * 100)
    corrupt = tmp_path / "corrupt.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", corrupt, "64M"], check=True)
    with open(corrupt, "r+b") as fh:  # smash the L1 table offset in the header
        fh.seek(40)
        fh.write(b"\xff" * 8)
    for image, match in ((str(tmp_path / "missing.img"), "does not exist"),
                         (str(text), "not recognised as a disk image"),
                         (str(corrupt), "corrupt|not a usable|could not"),
                         ("salt://no/such.img", "could not be fetched"),
                         ("relative.img", "absolute path")):
        with pytest.raises((SaltInvocationError, CommandExecutionError), match=match):
            virt.init(vm_name, 1, 128, image=image, seed=False)
        assert not os.path.exists(os.path.join(images_dir(minion_opts), vm_name)), image
        assert vm_name not in {d.name() for d in libvirt_conn.listAllDomains()}


def test_unknown_profile_and_existing_name(virt, vm_name, minion_opts):
    with pytest.raises(SaltInvocationError, match="unknown nic profile 'nope'"):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", nic="nope", seed=False)
    with pytest.raises(SaltInvocationError, match="unknown disk profile 'nope'"):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", disk="nope", seed=False)
    virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, start=False, seed=False)
    with pytest.raises(SaltInvocationError, match="already exists"):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", seed=False)
    # The refused second call did not touch the first VM's disk.
    assert os.path.exists(os.path.join(images_dir(minion_opts), vm_name, "system.qcow2"))
    virt.purge(vm_name)


def test_failure_after_disks_rolls_back(virt, vm_name, minion_opts, libvirt_conn):
    # libvirt refuses the definition (an unknown network): disks made before are removed.
    with pytest.raises(CommandExecutionError, match="network|default"):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, seed=False,
                  interfaces=[{"name": "eth0", "type": "network", "source": "no-such-net"}])
    assert not os.path.exists(os.path.join(images_dir(minion_opts), vm_name))
    assert vm_name not in {d.name() for d in libvirt_conn.listAllDomains()}


@pytest.fixture
def http_images(minion_opts):
    """The file server's images over HTTP on loopback (a real server, stopped afterwards)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=minion_opts["file_roots"]["base"][0])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_http_image_with_checksum(virt, vm_name, http_images, minion_opts):
    local = os.path.join(minion_opts["file_roots"]["base"][0], "centos.qcow2")
    digest = sha256(local)
    with pytest.raises(SaltInvocationError, match="sha256 is"):
        virt.init(vm_name, 1, 128, image=f"{http_images}/centos.qcow2", image_hash="sha256=" + "0" * 64,
                  start=False, seed=False)
    assert not os.path.exists(os.path.join(images_dir(minion_opts), vm_name))
    ret = virt.init(vm_name, 1, 128, image=f"{http_images}/centos.qcow2", image_hash=f"sha256={digest}",
                    enable_qcow=True, start=False, seed=False)
    assert ret["disks"]["vda"]["backing"][0].startswith(os.path.join(images_dir(minion_opts), "base"))
    virt.purge(vm_name)


def test_generated_xml_passes_libvirt_schema(virt, vm_name, tmp_path):
    virt.init(vm_name, 2, 128, image="salt://centos.qcow2", enable_qcow=True, start=False,
              enable_vnc=True, disks=[{"name": "data", "size": 16, "format": "raw"}],
              interfaces=[{"name": "eth1", "type": "user"}])
    xml = tmp_path / "domain.xml"
    xml.write_text(virt.get_xml(vm_name, inactive=True))
    check = subprocess.run(["virt-xml-validate", str(xml), "domain"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    info = virt.vm_info(vm_name)[vm_name]
    assert set(info["disks"]) == {"vda", "vdb", "vdc"}  # system, data, cidata seed
    assert info["disks"]["vdb"]["format"] == "raw"
    assert len(info["nics"]) == 2
    virt.purge(vm_name)


def test_forced_hypervisor_type_and_bad_type(virt, vm_name):
    ret = virt.init(vm_name, 1, 128, image="salt://centos.qcow2", enable_qcow=True, start=False,
                    seed=False, hypervisor="qemu")
    assert ret["hypervisor_type"] == "qemu" and ret["hypervisor_reason"] == "qemu requested"
    assert "type='qemu'" in virt.get_xml(vm_name)
    virt.purge(vm_name)
    with pytest.raises(SaltInvocationError, match="hypervisor must be one of kvm, qemu"):
        virt.init(vm_name, 1, 128, image="salt://centos.qcow2", seed=False, hypervisor="xen")


def test_cpu_nulls_remove_settings_libvirt_keeps_and_update_is_then_idempotent(virt, vm_name, libvirt_conn):
    cpu = {"maximum": 2, "placement": "static", "cpuset": "0", "topology": {"sockets": 1, "cores": 2, "threads": 1},
           "mode": "custom", "model": {"name": "qemu64", "fallback": "forbid"}, "features": {"pcid": "disable"},
           "iothreads": 1}
    virt.init(vm_name, cpu, 128, image="salt://centos.qcow2", enable_qcow=True, seed=False, start=False)
    try:
        def config():
            return ET.fromstring(libvirt_conn.lookupByName(vm_name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))

        assert config().find("cpu/topology") is not None and config().find("vcpu").get("cpuset") == "0"
        nulls = {"placement": None, "cpuset": None, "topology": None, "features": None, "iothreads": None,
                 "model": {"fallback": None}}
        before = libvirt_conn.lookupByName(vm_name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        predicted = virt.update(vm_name, cpu=nulls, test=True)
        assert predicted["test"] and set(predicted["changes"]) == {"cpu"}
        assert libvirt_conn.lookupByName(vm_name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == before
        ret = virt.update(vm_name, cpu=nulls)
        assert set(ret["changes"]) == {"cpu"} and ret["changes"] == predicted["changes"]
        root = config()
        for path in ("cpu/topology", "cpu/feature", "iothreads"):
            assert root.find(path) is None, path
        assert root.find("vcpu").get("cpuset") is None and root.findtext("vcpu") == "2"
        # libvirt's defaults written back: they satisfy the nulls.
        assert root.find("vcpu").get("placement") == "static" and root.find("cpu/model").get("fallback") == "allow"
        assert virt.update(vm_name, cpu=nulls)["changes"] == {}  # the second run: nothing
        with pytest.raises(SaltInvocationError, match="cpu:model cannot be removed"):
            virt.update(vm_name, cpu={"model": None}, test=True)
    finally:
        virt.purge(vm_name)
