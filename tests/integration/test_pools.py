"""Storage pools on the lab, made by the classic states through the lab's master.

* A directory pool (``virt.pool_running`` + ``virt.volume_defined``): ``test=True`` predicts,
  the first run makes it (built, started, autostart), the second changes nothing; a volume
  is filled over libvirt's upload stream; a VM whose system disk lives in the pool (named by
  the pool's name) boots from it and writes to it; purging the VM removes its volume;
  ``virt.pool_deleted`` with ``purge`` removes the volumes, the directory and the pool.
* An LVM pool on a loop device of the hypervisor (a volume group named after this lab):
  libvirt builds the volume group, the pool runs, the second run changes nothing,
  ``pool_deleted`` removes the volume group again. This kernel has no device-mapper, so
  logical volumes cannot be activated here: making a volume fails with libvirt's error, and
  nothing is left behind.
* Refusals: host directories, devices and volume groups the operator did not allow (the
  lab's ``virt:pools`` settings, lab/labctl.py), each next to the accepted path.
"""

import json
import os
import uuid

import pytest

LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
LAB_NETNS = os.environ.get("LAB_NETNS", "svlab")
HOST = "hypervisor1"
IMAGES = "/var/lib/libvirt/images"  # the lab's virt:pools:allowed_targets

DIR_SLS = """\
{%- set p = salt['pillar.get']('pool') %}
{{ p.name }}:
  virt.pool_running:
    - ptype: dir
    - target: {{ p.target }}
    - permissions:
        mode: '0755'
    - autostart: True

{{ p.volume }}:
  virt.volume_defined:
    - pool: {{ p.name }}
    - size: 16
    - format: qcow2
    - require:
      - virt: {{ p.name }}
"""

LVM_SLS = """\
{%- set p = salt['pillar.get']('pool') %}
{{ p.name }}:
  virt.pool_running:
    - ptype: logical
    - source:
        devices:
          - path: {{ p.device }}
        name: {{ p.vg }}
    - autostart: False
"""

DELETED_SLS = """\
{%- set p = salt['pillar.get']('pool') %}
{{ p.name }}:
  virt.pool_deleted:
    - purge: True
"""


def _write_sls(name, text):
    directory = os.path.join(LAB_DIR, "images", "tests")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}.sls")
    with open(path, "w") as fh:
        fh.write(text)
    return path


@pytest.fixture(scope="module")
def sls(lab):
    written = [_write_sls(f"saltvirt_pool_{kind}", text)
               for kind, text in (("dir", DIR_SLS), ("lvm", LVM_SLS), ("deleted", DELETED_SLS))]
    yield {"dir": "tests.saltvirt_pool_dir", "lvm": "tests.saltvirt_pool_lvm", "deleted": "tests.saltvirt_pool_deleted"}
    for path in written:
        os.unlink(path)


def _call(lab, *args, check=True):
    proc = lab.run("salt", HOST, *args, "--out=json", "--static", check=check)
    return json.loads(proc.stdout)[HOST] if proc.stdout.strip() else None


def _apply(lab, sls, pillar, test=False):
    """``{state id: state return}`` of ``state.apply sls`` with ``pillar`` on HOST."""
    args = [HOST, "state.apply", sls, f"pillar={json.dumps({'pool': pillar})}", "--out=json", "--static"]
    if test:
        args.append("test=True")
    out = json.loads(lab.run("salt", *args, check=False, timeout=300).stdout)[HOST]
    assert isinstance(out, dict), out
    return {ret["name"]: ret for ret in out.values()}


def _remove_pool(lab, name):
    lab.run("salt", HOST, "virt.pool_stop", name, check=False)
    lab.run("salt", HOST, "virt.pool_undefine", name, check=False)


@pytest.fixture
def dir_pool(lab):
    tag = uuid.uuid4().hex[:6]
    pool = {"name": f"itpool-{tag}", "target": f"{IMAGES}/itpool-{tag}", "volume": "data.qcow2"}
    yield pool
    _remove_pool(lab, pool["name"])
    lab.hv(HOST, "rm", "-rf", pool["target"], f"{IMAGES}/upload-{tag}.img")
    assert pool["name"] not in _call(lab, "virt.list_pools")


def test_a_dir_pool_by_states_holds_a_booting_vm_and_goes_away(lab, sls, dir_pool, vm):
    name, target = dir_pool["name"], dir_pool["target"]
    made = {name: {name: "Pool defined, marked for autostart, built, started"},
            "data.qcow2": {f"{name}/data.qcow2": {"old": "", "new": "defined"}}}

    predicted = _apply(lab, sls["dir"], dir_pool, test=True)
    assert {n: (r["result"], r["changes"]) for n, r in predicted.items()} == {
        n: (None, c) for n, c in made.items()}, predicted
    assert name not in _call(lab, "virt.list_pools")

    first = _apply(lab, sls["dir"], dir_pool)
    assert {n: (r["result"], r["changes"]) for n, r in first.items()} == {n: (True, c) for n, c in made.items()}, first
    info = _call(lab, "virt.pool_info", name)[name]
    assert (info["state"], info["autostart"], info["type"], info["target_path"]) == ("running", True, "dir", target)
    assert lab.hv(HOST, "stat", "-c", "%a", target).stdout.strip() == "755"

    for test in (False, True):
        again = _apply(lab, sls["dir"], dir_pool, test=test)
        assert {n: (r["result"], r["changes"]) for n, r in again.items()} == {
            name: (True, {}), "data.qcow2": (True, {})}, again

    # A volume filled over libvirt's upload stream from an image under the hypervisor's roots.
    source = f"{IMAGES}/upload-{target.rsplit('-', 1)[1]}.img"
    lab.run("salt", HOST, "cp.get_file", "salt://centos.img", source)
    size = int(lab.hv(HOST, "stat", "-c", "%s", source).stdout)
    assert _call(lab, "virt.volume_define", name, "copy.img", str(-(-size // 2**20)), "format=raw") is True
    assert _call(lab, "virt.volume_upload", name, "copy.img", source) is True
    same = lab.hv(HOST, "cmp", "-n", str(size), source, f"{target}/copy.img", check=False)
    assert same.returncode == 0, same.stdout + same.stderr
    assert _call(lab, "virt.volume_delete", name, "copy.img") is True

    # A VM whose system disk is in the pool, named by the pool's name. Whole or nothing first:
    # seeding fails (the lab's seed_cmds lists test.arg, which does not seed), and the disk
    # made in the pool is removed again.
    disk = f"{target}/{vm}-system.qcow2"
    failed = lab.run("salt", HOST, "virt.init", vm, "1", "128", "salt://centos.qcow2",
                     f"disks=[{{name: system, pool: {name}}}]", "seed_cmd=test.arg", timeout=300, check=False)
    assert failed.returncode != 0 and vm not in lab.domains(HOST), failed.stdout
    assert lab.hv(HOST, "ls", target).stdout.split() == ["data.qcow2"]
    # Then it boots from the disk in the pool and writes to it.
    lab.run("salt", HOST, "virt.init", vm, "1", "128", "salt://centos.qcow2",
            f"disks=[{{name: system, pool: {name}}}]", timeout=300)
    assert _call(lab, "virt.get_disks", vm)["vda"]["file"] == disk
    lab.wait_serial(HOST, vm, r"SALTVIRT-DISK-WRITE ok", timeout=120)
    _call(lab, "virt.pool_refresh", name)
    assert _call(lab, "virt.volume_infos", name, f"{vm}-system.qcow2")[name][f"{vm}-system.qcow2"]["used_by"] == [vm]
    purged = _call(lab, "virt.purge", vm)
    assert disk in purged["removed"]
    assert sorted(_call(lab, "virt.pool_list_volumes", name)) == ["data.qcow2"]

    gone = {"stopped": True, "deleted": True, "undefined": True, "deleted_volumes": ["data.qcow2"]}
    predicted = _apply(lab, sls["deleted"], dir_pool, test=True)[name]
    assert (predicted["result"], predicted["changes"]) == (None, gone), predicted
    deleted = _apply(lab, sls["deleted"], dir_pool)[name]
    assert (deleted["result"], deleted["changes"]) == (True, gone), deleted
    assert name not in _call(lab, "virt.list_pools")
    assert lab.hv(HOST, "test", "-e", target, check=False).returncode == 1
    again = _apply(lab, sls["deleted"], dir_pool)[name]
    assert (again["result"], again["changes"]) == (True, {}), again


@pytest.fixture
def loop_device(lab):
    """A loop device of the hypervisor on a sparse file under the lab's directory; whatever
    volume group ends up on it is removed and the device detached afterwards."""
    tag = uuid.uuid4().hex[:6]
    backing = os.path.join(LAB_DIR, f"pool-{tag}.img")
    with open(backing, "wb") as fh:
        fh.truncate(128 * 2**20)
    device = lab.hv(HOST, "losetup", "-f", "--show", backing).stdout.strip()
    vg = f"{LAB_NETNS}_vg{tag}"
    yield device, vg, f"itlvm-{tag}"
    _remove_pool(lab, f"itlvm-{tag}")
    lab.hv(HOST, "vgremove", "-f", vg, check=False)
    lab.hv(HOST, "pvremove", "-y", device, check=False)
    lab.hv(HOST, "losetup", "-d", device)
    os.unlink(backing)
    assert backing not in lab.hv(HOST, "losetup", "-a").stdout


def test_an_lvm_pool_on_a_loop_device_by_states(lab, sls, loop_device):
    device, vg, name = loop_device
    pool = {"name": name, "device": device, "vg": vg}
    made = {name: "Pool defined, built, started"}
    predicted = _apply(lab, sls["lvm"], pool, test=True)[name]
    assert (predicted["result"], predicted["changes"]) == (None, made), predicted

    first = _apply(lab, sls["lvm"], pool)[name]
    assert (first["result"], first["changes"]) == (True, made), first
    info = _call(lab, "virt.pool_info", name)[name]
    assert (info["state"], info["type"], info["target_path"]) == ("running", "logical", f"/dev/{vg}")
    assert lab.hv(HOST, "vgs", "--noheadings", "-o", "pv_name", vg).stdout.strip() == device
    for test in (False, True):
        again = _apply(lab, sls["lvm"], pool, test=test)[name]
        assert (again["result"], again["changes"]) == (True, {}), again

    # No device-mapper in this kernel: libvirt cannot make a logical volume, says so, and the
    # pool holds nothing afterwards.
    failed = lab.run("salt", HOST, "virt.volume_define", name, "lv1", "8", check=False)
    assert failed.returncode != 0 and f"creating volume {name}/lv1" in failed.stdout, failed.stdout
    assert _call(lab, "virt.pool_list_volumes", name) == []

    deleted = _apply(lab, sls["deleted"], pool)[name]
    assert (deleted["result"], deleted["changes"]) == (
        True, {"stopped": True, "deleted": True, "undefined": True, "deleted_volumes": []}), deleted
    assert lab.hv(HOST, "vgs", vg, check=False).returncode != 0  # the volume group is gone


def test_pools_outside_the_operators_choice_are_refused(lab, sls, loop_device):
    device, vg, name = loop_device
    refused = {
        "target /etc is outside virt:pools:allowed_targets": ["virt.pool_define", name, "dir", "target=/etc"],
        "source device /dev/sda is not one of virt:pools:allowed_devices": [
            "virt.pool_define", name, "logical", "source_devices=[/dev/sda]", f"source_name={vg}"],
        "source name vg0 (volume group or zpool) is not one of": [
            "virt.pool_define", name, "logical", f"source_devices=[{device}]", "source_name=vg0"],
    }
    for message, args in refused.items():
        proc = lab.run("salt", HOST, *args, check=False)
        assert proc.returncode != 0 and message in proc.stdout, (args, proc.stdout)
    assert name not in _call(lab, "virt.list_pools")
    # The state refuses the same before libvirt is asked, and leaves nothing.
    ret = _apply(lab, sls["lvm"], {"name": name, "device": "/dev/sda", "vg": vg})[name]
    assert ret["result"] is False and "/dev/sda" in ret["comment"] and ret["changes"] == {}
    assert name not in _call(lab, "virt.list_pools")
    # The legitimate one right after: accepted.
    ret = _apply(lab, sls["lvm"], {"name": name, "device": device, "vg": vg})[name]
    assert ret["result"] is True and ret["changes"], ret

    # Uploads read only files under the hypervisor's roots; volume names are file names.
    files = f"{name}-files"
    assert _call(lab, "virt.pool_define", files, "dir", f"target={IMAGES}/{files}", "start=False") is True
    try:
        _call(lab, "virt.pool_build", files)
        _call(lab, "virt.pool_start", files)
        _call(lab, "virt.volume_define", files, "x.img", "1")
        for message, args in {
            "volume_upload file /etc/shadow is outside the allowed directories": [files, "x.img", "/etc/shadow"],
            "volume name '../x.img' is not allowed": [files, "../x.img", f"{IMAGES}/{files}/x.img"],
        }.items():
            proc = lab.run("salt", HOST, "virt.volume_upload", *args, check=False)
            assert proc.returncode != 0 and message in proc.stdout, (args, proc.stdout)
    finally:
        lab.run("salt", HOST, "virt.volume_delete", files, "x.img", check=False)
        lab.run("salt", HOST, "virt.pool_stop", files, check=False)
        lab.run("salt", HOST, "virt.pool_delete", files, check=False)
        _remove_pool(lab, files)


def test_volumes_from_caller_xml_through_the_master(lab, dir_pool):
    """``virt.define_vol_xml_str`` / ``define_vol_xml_path`` (the classic functions): a volume
    made from XML lands in the pool, listed and deleted as any; a refused one leaves nothing,
    and a file's content is never echoed back."""
    name, target = dir_pool["name"], dir_pool["target"]
    assert _call(lab, "virt.pool_define", name, "dir", f"target={target}", "start=False") is True
    _call(lab, "virt.pool_build", name)
    _call(lab, "virt.pool_start", name)
    xml = ("<volume><name>{}</name><capacity unit='MiB'>8</capacity><target><format type='qcow2'/></target>{}"
           "</volume>")
    assert _call(lab, "virt.define_vol_xml_str", xml.format("fromxml.qcow2", ""), f"pool={name}") is True
    assert _call(lab, "virt.pool_list_volumes", name) == ["fromxml.qcow2"]
    info = _call(lab, "virt.volume_infos", name, "fromxml.qcow2")[name]["fromxml.qcow2"]
    assert (info["format"], info["capacity"], info["path"]) == ("qcow2", 8 * 2**20, f"{target}/fromxml.qcow2")

    refused = {"<backingStore><path> /etc/shadow: must lie under the image roots":
               xml.format("bad.qcow2", "<backingStore><path>/etc/shadow</path><format type='raw'/></backingStore>"),
               "<name> ../bad: a volume name is a file name": xml.format("../bad", ""),
               "encryption uses a libvirt secret": xml.format("bad.qcow2", "").replace(
                   "</target>", "<encryption format='luks'/></target>")}
    for message, document in refused.items():
        proc = lab.run("salt", HOST, "virt.define_vol_xml_str", document, f"pool={name}", check=False)
        assert proc.returncode != 0 and message in proc.stdout, (message, proc.stdout)
    assert _call(lab, "virt.pool_list_volumes", name) == ["fromxml.qcow2"]
    assert lab.hv(HOST, "ls", target).stdout.split() == ["fromxml.qcow2"]

    # From a file on the hypervisor (under the image roots, beside the pool's directory); a
    # refused file's content is not quoted, and a file outside the roots is not read.
    good, bad = f"{target}.vol.xml", f"{target}.bad.xml"
    try:
        lab.hv(HOST, "sh", "-c", f"printf '%s' \"{xml.format('fromfile.qcow2', '')}\" > {good}")
        assert _call(lab, "virt.define_vol_xml_path", good, f"pool={name}") is True
        lab.hv(HOST, "sh", "-c", f"printf '%s' \"{xml.format('SECRETNAME/x', '')}\" > {bad}")
        proc = lab.run("salt", HOST, "virt.define_vol_xml_path", bad, f"pool={name}", check=False)
        assert proc.returncode != 0 and "volume XML refused" in proc.stdout, proc.stdout
        assert "SECRETNAME" not in proc.stdout, proc.stdout
    finally:
        lab.hv(HOST, "rm", "-f", good, bad)
    proc = lab.run("salt", HOST, "virt.define_vol_xml_path", "/etc/shadow", f"pool={name}", check=False)
    assert proc.returncode != 0 and "/etc/shadow is outside the allowed directories" in proc.stdout, proc.stdout
    _call(lab, "virt.pool_refresh", name)
    assert _call(lab, "virt.pool_list_volumes", name) == ["fromfile.qcow2", "fromxml.qcow2"]
    for volume in ("fromxml.qcow2", "fromfile.qcow2"):
        assert _call(lab, "virt.volume_delete", name, volume) is True
    assert _call(lab, "virt.pool_list_volumes", name) == []
