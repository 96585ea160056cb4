"""The storage pool and volume functions of the execution module and the pool/volume states as
glue, over the real library and one libvirt test-driver connection (in-process; no daemon):
classic arguments and returns, unknown arguments refused by name, the operator's policy (both
sides), library errors as Salt's, the states' changes, test=True predictions and idempotence."""

import contextlib
import importlib.util
import os
import subprocess

import libvirt
import pytest
from salt.exceptions import SaltInvocationError

from saltvirt import settings as vsettings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRIVATE_HOST = "test://" + os.path.join(REPO, "tests", "data", "xml", "testnode-empty.xml")


def _load(kind, file="virt.py"):
    spec = importlib.util.spec_from_file_location(f"saltvirt_test_pool_{kind}", os.path.join(REPO, f"_{kind}", file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


virt = _load("modules", "virt_storage.py")


@pytest.fixture
def host(tmp_path):
    for sub in ("pools", "golden", "images"):
        (tmp_path / sub).mkdir()
    return tmp_path


@pytest.fixture
def conn(monkeypatch, host):
    """One test-driver connection shared by every call (a new one would start empty), and the
    hypervisor's settings: pools allowed under <tmp>/pools, images read from <tmp>/golden."""
    shared = libvirt.open(PRIVATE_HOST)
    opened = []

    @contextlib.contextmanager
    def connection(kwargs):
        opened.append(dict(kwargs))
        yield shared

    settings = vsettings.from_dict({"virt": {
        "images": str(host / "images"), "image_roots": [str(host / "golden")],
        "pools": {"allowed_targets": [str(host / "pools")], "allowed_devices": ["/dev/loop*"],
                  "allowed_source_names": ["lab_*"]}}})
    monkeypatch.setattr(virt, "_connection", connection)
    monkeypatch.setattr(virt, "_settings", lambda: settings)
    shared.opened = opened
    yield shared
    shared.close()


@pytest.fixture
def states(conn):
    module = _load("states")
    module.__opts__ = {"test": False}
    module.__salt__ = {f"virt.{name}": getattr(virt, name) for name in (
        "pool_info", "pool_define", "pool_update", "pool_build", "pool_start", "pool_stop", "pool_set_autostart",
        "pool_undefine", "pool_delete", "pool_refresh", "pool_list_volumes", "volume_delete", "list_pools",
        "volume_infos", "volume_define")}
    return module


def test_module_functions_keep_the_classic_shapes(conn, host):
    target = str(host / "pools" / "p1")
    assert virt.pool_define("p1", "dir", target=target, permissions={"mode": "0755"}, start=False,
                            connection=PRIVATE_HOST, __pub_jid="1") is True
    assert conn.opened[0] == {"connection": PRIVATE_HOST}
    assert virt.list_pools() == ["p1"]
    info = virt.pool_info("p1")["p1"]
    assert info == {"uuid": info["uuid"], "state": "inactive", "capacity": info["capacity"], "allocation": 0,
                    "free": info["free"],
                    "autostart": False, "persistent": True, "target_path": target, "type": "dir"}
    assert virt.pool_info("nosuch") == {}
    assert virt.pool_build("p1") is True and virt.pool_start("p1") is True
    assert virt.pool_info("p1")["p1"]["state"] == "running"
    assert virt.pool_update("p1", "dir", target=target) is False
    assert virt.pool_update("p1", "dir", target=target, permissions={"mode": "0750"}, test=True) is True
    assert "<mode>0755</mode>" in virt.pool_get_xml("p1")
    assert virt.pool_update("p1", "dir", target=target, permissions={"mode": "0750"}, details=True) == {
        "changed": True, "changes": {"permissions": {"old": {"mode": "0755"}, "new": {"mode": "0750"}}},
        "restart_needed": True}
    assert virt.pool_set_autostart("p1", "on") is True and virt.pool_info("p1")["p1"]["autostart"] is True
    assert virt.pool_refresh("p1") is True

    assert virt.volume_define("p1", "data.qcow2", 16, format="qcow2") is True
    assert virt.pool_list_volumes("p1") == ["data.qcow2"]
    vol = virt.volume_infos("p1", "data.qcow2")
    assert vol == {"p1": {"data.qcow2": {
        "type": "file", "key": os.path.join(target, "data.qcow2"), "path": os.path.join(target, "data.qcow2"),
        "capacity": 16 * 1024 * 1024, "allocation": vol["p1"]["data.qcow2"]["allocation"], "used_by": [],
        "backing_store": None, "format": vol["p1"]["data.qcow2"]["format"]}}}
    assert virt.volume_infos("p1", "nosuch") == {}
    assert virt.volume_delete("p1", "data.qcow2") is True and virt.pool_list_volumes("p1") == []
    assert virt.pool_stop("p1") is True and virt.pool_list_volumes("p1") == []
    assert virt.pool_delete("p1") is True and virt.pool_undefine("p1") is True
    assert virt.list_pools() == []


def test_the_operators_policy_refuses_host_paths_and_devices_and_accepts_its_own(conn, host):
    with pytest.raises(SaltInvocationError, match="target /etc is outside virt:pools:allowed_targets"):
        virt.pool_define("etc", "dir", target="/etc")
    with pytest.raises(SaltInvocationError, match="where VMs keep their disks"):
        virt.pool_define("vms", "dir", target=str(host / "images" / "web1"))
    with pytest.raises(SaltInvocationError, match="source device /dev/sda is not one of"):
        virt.pool_define("lvm", "logical", source_devices=[{"path": "/dev/sda"}], source_name="lab_vg")
    with pytest.raises(SaltInvocationError, match="source name vg0 .* is not one of"):
        virt.pool_define("lvm", "logical", source_name="vg0", start=False)
    assert virt.list_pools() == []  # nothing was defined
    # The legitimate ones right after: accepted.
    assert virt.pool_define("lvm", "logical", source_devices=["/dev/loop3"], source_name="lab_vg", start=False)
    assert virt.pool_define("ok", "dir", target=str(host / "pools" / "ok"), start=False) is True
    # An update may not move a pool out of the allowed directories either (test=True too).
    with pytest.raises(SaltInvocationError, match="target /root is outside"):
        virt.pool_update("ok", "dir", target="/root", test=True)
    # A pool the operator defined elsewhere: readable, but callers may not build, delete or
    # fill it.
    conn.storagePoolDefineXML("<pool type='dir'><name>host</name><target><path>/var/tmp</path></target></pool>")
    assert virt.pool_info("host")["host"]["target_path"] == "/var/tmp"
    for call in (lambda: virt.pool_build("host"), lambda: virt.pool_delete("host"),
                 lambda: virt.volume_define("host", "x.img", 1), lambda: virt.volume_delete("host", "x.img")):
        with pytest.raises(SaltInvocationError, match="target /var/tmp is outside virt:pools:allowed_targets"):
            call()


def test_volumes_refuse_bad_names_and_files_outside_the_roots(conn, host):
    virt.pool_define("p2", "dir", target=str(host / "pools" / "p2"))
    for name in ("../escape", "a/b", ".."):
        with pytest.raises(SaltInvocationError, match="volume name .* is not allowed"):
            virt.volume_define("p2", name, 1)
    with pytest.raises(SaltInvocationError, match="backing_store /etc/shadow is outside the allowed directories"):
        virt.volume_define("p2", "o.qcow2", 1, format="qcow2", backing_store={"path": "/etc/shadow", "format": "raw"})
    virt.volume_define("p2", "v.img", 1)
    with pytest.raises(SaltInvocationError, match="file /etc/shadow is outside the allowed directories"):
        virt.volume_upload("p2", "v.img", "/etc/shadow")
    with pytest.raises(SaltInvocationError, match="volume nosuch is not in storage pool p2"):
        virt.volume_upload("p2", "nosuch", str(host / "golden" / "x.img"))
    # Inside the roots the path is accepted, and the file is then inspected as an image: one
    # that would make QEMU read another host file is refused.
    sneaky = host / "golden" / "sneaky.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-u", "-F", "raw", "-b", "/etc/shadow", str(sneaky), "1M"],
                   check=True, capture_output=True)
    with pytest.raises(SaltInvocationError, match="names a backing file"):
        virt.volume_upload("p2", "v.img", str(sneaky))
    assert virt.pool_list_volumes("p2") == ["v.img"]


def test_module_errors_are_salts_and_unknown_arguments_are_named(conn, host):
    with pytest.raises(SaltInvocationError, match="unknown argument.*taget.*did you mean target"):
        virt.pool_define("p3", "dir", taget="/x")
    with pytest.raises(SaltInvocationError, match="virt.pool_info: unknown argument.*nmae"):
        virt.pool_info(nmae="x")
    with pytest.raises(SaltInvocationError, match="storage pool nosuch is not defined"):
        virt.pool_start("nosuch")
    with pytest.raises(SaltInvocationError, match="state='maybe' must be on or off"):
        virt.pool_set_autostart("p3", "maybe")
    virt.pool_define("p3", "dir", target=str(host / "pools" / "p3"), start=False)
    with pytest.raises(SaltInvocationError, match="storage pool p3 is already defined"):
        virt.pool_define("p3", "dir", target=str(host / "pools" / "p3"))
    with pytest.raises(SaltInvocationError, match="volume v is already in storage pool p3"):
        virt.pool_start("p3")
        virt.volume_define("p3", "v", 1)
        virt.volume_define("p3", "v", 1)


def test_pool_running_creates_then_changes_nothing(states, host):
    target = str(host / "pools" / "st")
    states.__opts__["test"] = True
    ret = states.pool_running("st", ptype="dir", target=target)
    assert ret["result"] is None and ret["changes"] == {"st": "Pool defined, marked for autostart, built, started"}
    assert virt.pool_info("st") == {}
    states.__opts__["test"] = False
    ret = states.pool_running("st", ptype="dir", target=target)
    assert ret == {"name": "st", "result": True,
                   "changes": {"st": "Pool defined, marked for autostart, built, started"},
                   "comment": "Pool st: pool defined, marked for autostart, built, started"}
    info = virt.pool_info("st")["st"]
    assert info["state"] == "running" and info["autostart"] is True
    ret = states.pool_running("st", ptype="dir", target=target)
    assert ret["result"] is True and ret["changes"] == {} and ret["comment"] == "Pool st: unchanged; is running"
    states.__opts__["test"] = True
    ret = states.pool_running("st", ptype="dir", target=target, permissions={"mode": "0700"}, autostart=False)
    assert ret["result"] is None and ret["changes"] == {"st": "Pool updated, autostart flag changed, restarted"}
    assert virt.pool_info("st")["st"]["autostart"] is True  # predicted only
    states.__opts__["test"] = False
    assert states.pool_running("st", ptype="dir", target=target, permissions={"mode": "0700"},
                               autostart=False)["changes"] == {"st": "Pool updated, autostart flag changed, restarted"}
    virt.pool_stop("st")
    assert states.pool_running("st", ptype="dir", target=target, autostart=False)["changes"] == {
        "st": "Pool started"}


def test_the_classic_bare_pool_running_starts_the_pool_as_it_is_defined(states, host):
    """The classic docs' ``pool_name: virt.pool_running``: no ptype, an existing pool."""
    target = str(host / "pools" / "bare")
    ret = states.pool_running("bare")
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"] == "Pool bare: it is not defined: ptype (and its settings) are needed to define it"
    assert virt.pool_define("bare", "dir", target=target, permissions={"mode": "0750"}, start=False) is True
    virt.pool_build("bare")
    states.__opts__["test"] = True
    ret = states.pool_running("bare")
    assert ret["result"] is None and ret["changes"] == {"bare": "Pool autostart flag changed, started"}
    assert virt.pool_info("bare")["bare"]["state"] == "inactive"
    states.__opts__["test"] = False
    assert states.pool_running("bare")["changes"] == {"bare": "Pool autostart flag changed, started"}
    ret = states.pool_running("bare")
    assert ret["result"] is True and ret["changes"] == {}
    assert virt.pool_get_xml("bare").count("<mode>0750</mode>") == 1  # its settings kept
    ret = states.pool_running("bare", autostrat=True)
    assert ret["result"] is False and "autostrat" in ret["comment"]


def test_pool_states_refuse_before_libvirt_and_leave_nothing(states, host):
    states.__opts__["test"] = True
    ret = states.pool_defined("bad", ptype="dir", target=str(host / "pools" / "bad"), source={"dri": "/x"})
    assert ret["result"] is False and "unknown argument(s) source_dri" in ret["comment"]
    ret = states.pool_defined("bad", ptype="dir", target=str(host / "pools" / "bad"), autostrat=True)
    assert ret["result"] is False and "autostrat" in ret["comment"]
    states.__opts__["test"] = False
    ret = states.pool_running("bad", ptype="dir", target="/etc")
    assert ret["result"] is False and "outside virt:pools:allowed_targets" in ret["comment"]
    assert ret["changes"] == {} and virt.pool_info("bad") == {}
    assert states.pool_defined("bad", ptype="dir", target=str(host / "pools" / "bad"))["result"] is True
    assert virt.pool_info("bad")["bad"]["state"] == "inactive"


def test_pool_deleted_purges_volumes_and_reports_the_classic_changes(states, host):
    virt.pool_define("gone", "dir", target=str(host / "pools" / "gone"))
    virt.volume_define("gone", "a.img", 1)
    states.__opts__["test"] = True
    ret = states.pool_deleted("gone", purge=True)
    assert ret["result"] is None and ret["changes"] == {"stopped": True, "deleted": True, "undefined": True,
                                                        "deleted_volumes": ["a.img"]}
    assert virt.pool_list_volumes("gone") == ["a.img"]
    states.__opts__["test"] = False
    ret = states.pool_deleted("gone", purge=True)
    assert ret["result"] is True and ret["changes"] == {"stopped": True, "deleted": True, "undefined": True,
                                                        "deleted_volumes": ["a.img"]}
    assert virt.list_pools() == []
    assert states.pool_deleted("gone") == {"name": "gone", "changes": {}, "result": True,
                                           "comment": "Storage pool could not be found: gone"}


def test_volume_defined_is_idempotent_and_refuses_another_format(states, host):
    virt.pool_define("vp", "dir", target=str(host / "pools" / "vp"))
    states.__opts__["test"] = True
    ret = states.volume_defined("vp", "d.qcow2", 8, format="qcow2")
    assert ret["result"] is None and ret["changes"] == {"vp/d.qcow2": {"old": "", "new": "defined"}}
    assert virt.pool_list_volumes("vp") == []
    states.__opts__["test"] = False
    assert states.volume_defined("vp", "d.qcow2", 8, format="qcow2")["changes"] == {
        "vp/d.qcow2": {"old": "", "new": "defined"}}
    ret = states.volume_defined("vp", "d.qcow2", 8, format="qcow2")
    assert ret == {"name": "d.qcow2", "changes": {}, "result": True, "comment": "volume is existing"}
    assert "no resize performed" in states.volume_defined("vp", "d.qcow2", 16, format="qcow2")["comment"]
    ret = states.volume_defined("vp", "d.qcow2", 8, format="raw")
    assert ret["result"] is False and "different backing store or format" in ret["comment"]
    ret = states.volume_defined("nosuch", "d.qcow2", 8)
    assert ret["result"] is False and "storage pool nosuch is not defined" in ret["comment"]
    # test=True: a pool an earlier state of the same run would define is no error.
    states.__opts__["test"] = True
    assert states.volume_defined("nosuch", "d.qcow2", 8)["result"] is None


def test_vm_disks_in_a_pool_of_block_volumes_are_made_through_libvirt_and_undone(conn, host):
    from saltvirt import provision
    from saltvirt.storage import paths, volumes

    policy = paths.PoolPolicy(str(host / "images"), allowed_targets=[str(host / "pools")],
                              allowed_source_names=["lab_*"])
    conn.storagePoolDefineXML("<pool type='logical'><name>lvm</name><source><name>lab_vg</name></source>"
                              "<target><path>/dev/lab_vg</path></target></pool>").create()
    virt.pool_define("files", "dir", target=str(host / "pools" / "files"))
    assert volumes.disk_pool(conn, "files", policy) == ("dir", str(host / "pools" / "files"))
    assert volumes.disk_pool(conn, "lvm", policy) == ("volume", "lvm")
    conn.storagePoolDefineXML("<pool type='logical'><name>hostvg</name><source><name>vg0</name></source>"
                              "<target><path>/dev/vg0</path></target></pool>").create()
    with pytest.raises(Exception, match="source name vg0 .* is not one of"):
        volumes.disk_pool(conn, "hostvg", policy)
    conn.storagePoolDefineXML("<pool type='dir'><name>off</name><target><path>/x</path></target></pool>")
    with pytest.raises(Exception, match="storage pool off is not running: start it"):
        volumes.disk_pool(conn, "off", policy)

    (plan,) = provision.plan_disks("web1", [{"name": "data", "size": 8 * 2**20, "volume_pool": "lvm"}], "/srv/img")
    assert (plan.volume_pool, plan.volume, plan.format) == ("lvm", "web1-data", "raw")
    with pytest.raises(Exception, match="overlay_image needs a directory pool"):
        provision.plan_disks("web1", [{"name": "s", "volume_pool": "lvm", "image": "/i.qcow2", "overlay_image": True}],
                             "/srv/img", formats={"/i.qcow2": "qcow2"})
    undo = provision.Undo()
    provision.build_disks([plan], undo, conn=conn)
    assert plan.path == "/dev/lab_vg/web1-data" and virt.pool_list_volumes("lvm") == ["web1-data"]
    disk = plan.to_disk()
    assert (disk.type, disk.source_dev, disk.source) == ("block", "/dev/lab_vg/web1-data", None)
    assert [v.name() for v in volumes.owned_volumes(conn, "web1", [plan.path])] == ["web1-data"]
    assert volumes.owned_volumes(conn, "web", [plan.path]) == []  # another VM's name: not its volume
    with pytest.raises(Exception, match="volume web1-data is already in storage pool lvm"):
        provision.build_disks([provision.plan_disks("web1", [{"name": "data", "size": 1, "volume_pool": "lvm"}],
                                                    "/srv/img")[0]], provision.Undo(), conn=conn)
    assert undo.run() == [] and virt.pool_list_volumes("lvm") == []  # whole or nothing


def test_virt_update_refuses_disks_in_a_pool_of_block_volumes(conn, host):
    from saltvirt.provision import change
    from saltvirt.provision.spec import UpdateSpec

    conn.storagePoolDefineXML("<pool type='logical'><name>lvm</name><source><name>lab_vg</name></source>"
                              "<target><path>/dev/lab_vg</path></target></pool>").create()
    conn.defineXML("<domain type='test'><name>web1</name><memory>131072</memory><vcpu>1</vcpu>"
                   "<os><type>hvm</type></os></domain>")
    spec = UpdateSpec.from_kwargs("virt.update", name="web1", disks=[{"name": "data", "pool": "lvm", "size": 8}])
    with pytest.raises(Exception, match="virt.update does not manage disks in pool lvm of block volumes yet"):
        change.update_vm(conn, spec, virt._settings())
    assert virt.pool_list_volumes("lvm") == []


def test_define_vol_xml_str_creates_in_the_pool_it_may_fill_and_refusals_leave_nothing(conn, host, monkeypatch):
    virt.pool_define("px", "dir", target=str(host / "pools" / "px"))
    xml = ("<volume><name>{}</name><capacity unit='MiB'>8</capacity><target><format type='qcow2'/></target>"
           "{}</volume>")
    assert virt.define_vol_xml_str(xml.format("a.qcow2", ""), pool="px") is True
    assert virt.pool_list_volumes("px") == ["a.qcow2"]
    refused = [(xml.format("../a", ""), "volume name is a file name|<name> ../a"),
               (xml.format("b.qcow2", "<backingStore><path>/etc/shadow</path><format type='raw'/></backingStore>"),
                "<backingStore><path> /etc/shadow: must lie under the image roots"),
               (xml.format("a.qcow2", ""), "a volume a.qcow2 is already in storage pool px")]
    for document, message in refused:
        with pytest.raises(SaltInvocationError, match=message):
            virt.define_vol_xml_str(document, pool="px")
    assert virt.pool_list_volumes("px") == ["a.qcow2"]
    # The pool must exist, run and pass the operator's policy, like volume_define's.
    conn.storagePoolCreateXML("<pool type='dir'><name>host</name><target><path>/var/tmp</path></target></pool>")
    for pool, message in (("host", "target /var/tmp is outside virt:pools:allowed_targets"),
                          ("nosuch", "storage pool nosuch is not defined")):
        with pytest.raises(SaltInvocationError, match=message):
            virt.define_vol_xml_str(xml.format("c.qcow2", ""), pool=pool)
    virt.pool_stop("px")
    with pytest.raises(SaltInvocationError, match="storage pool px is not running"):
        virt.define_vol_xml_str(xml.format("c.qcow2", ""), pool="px")
    with pytest.raises(SaltInvocationError, match="define_vol_xml_str: unknown argument.*pol"):
        virt.define_vol_xml_str(xml.format("c.qcow2", ""), pol="px")
    # Classic default: virt:storagepool, else the pool named default.
    virt.pool_define("default", "dir", target=str(host / "pools" / "default"))
    assert virt.define_vol_xml_str(xml.format("d.qcow2", "")) is True
    assert virt.pool_list_volumes("default") == ["d.qcow2"]
    settings = vsettings.from_dict({"virt": {"storagepool": "px2", "images": str(host / "images"),
                                             "pools": {"allowed_targets": [str(host / "pools")]}}})
    monkeypatch.setattr(virt, "_settings", lambda: settings)
    virt.pool_define("px2", "dir", target=str(host / "pools" / "px2"))
    assert virt.define_vol_xml_str(xml.format("e.qcow2", "")) is True
    assert virt.pool_list_volumes("px2") == ["e.qcow2"] and virt.pool_list_volumes("default") == ["d.qcow2"]


def test_define_vol_xml_path_reads_only_under_the_roots_and_never_quotes_the_file(conn, host):
    virt.pool_define("py", "dir", target=str(host / "pools" / "py"))
    good = host / "golden" / "v.xml"
    good.write_text("<volume><name>v.img</name><capacity unit='MiB'>1</capacity></volume>")
    assert virt.define_vol_xml_path(str(good), pool="py") is True
    assert virt.pool_list_volumes("py") == ["v.img"]
    for path, message in (("/etc/passwd", "volume XML file /etc/passwd is outside the allowed directories"),
                          (str(host / "golden" / "missing.xml"), "cannot open volume XML file .*missing.xml"),
                          (str(host / "golden"), "is not a regular file")):
        with pytest.raises(SaltInvocationError, match=message):
            virt.define_vol_xml_path(path, pool="py")
    secret = "s3cr3t-in-the-file"
    bad = host / "golden" / "bad.xml"
    for content in (f"<volume><name>{secret}/x</name><capacity>1</capacity></volume>",
                    f"<volume><name>w</name><capacity>1</capacity><backingStore><path>/etc/{secret}</path>"
                    "<format type='raw'/></backingStore></volume>", f"{secret}<"):
        bad.write_text(content)
        with pytest.raises(SaltInvocationError) as info:
            virt.define_vol_xml_path(str(bad), pool="py")
        assert secret not in str(info.value)
    assert virt.pool_list_volumes("py") == ["v.img"]
