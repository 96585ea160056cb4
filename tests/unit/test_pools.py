"""saltvirt.storage: the pool spec (classic arguments checked), pool XML read and written back
without loss, the operator's pool policy (both sides of every refusal), volume XML and names."""

import xml.etree.ElementTree as ET

import pytest

from saltvirt.errors import InvalidArgument
from saltvirt.storage import paths, poolxml, volumes


def spec(**kwargs):
    return poolxml.PoolSpec.from_kwargs("virt.pool_define", **{"name": "p1", "ptype": "dir", **kwargs})


@pytest.fixture
def policy(tmp_path):
    (tmp_path / "pools").mkdir()
    return paths.PoolPolicy(str(tmp_path / "images"), allowed_targets=[str(tmp_path / "pools")],
                            allowed_devices=["/dev/loop*"], allowed_source_names=["lab_*"])


def test_every_source_argument_round_trips_through_the_xml():
    wanted = spec(ptype="netfs", target="/srv/p", permissions={"mode": 0o750, "owner": 107, "group": "107"},
                  source_hosts=["nfs1:2049", "nfs2"], source_dir="/exports", source_format="nfs")
    view = poolxml.PoolXml.parse(poolxml.build(wanted))
    assert view.settings() == wanted.settings() == {
        "ptype": "netfs", "target": "/srv/p", "permissions": {"mode": "0750", "owner": "107", "group": "107"},
        "source": {"hosts": [{"name": "nfs1", "port": 2049}, {"name": "nfs2"}], "dir": "/exports",
                   "format": "nfs"}}
    adapter = {"type": "scsi_host", "managed": True, "parent_address": {
        "unique_id": 5, "address": {"domain": "0x0000", "bus": "0x00", "slot": "0x1f", "function": "0x2"}}}
    other = spec(ptype="scsi", source_adapter=adapter)
    assert poolxml.PoolXml.parse(poolxml.build(other)).settings()["source"] == other.settings()["source"]
    iscsi = spec(ptype="iscsi-direct", source_hosts=["san"], source_devices=["iqn.2013-06.com.example:disk"],
                 source_initiator="iqn.2013-06.com.example:client",
                 source_auth={"type": "chap", "username": "u", "secret": {"type": "usage", "value": "s"}})
    assert poolxml.PoolXml.parse(poolxml.build(iscsi)).settings() == iscsi.settings()


def test_a_password_becomes_a_secret_reference_and_never_reaches_the_settings():
    rbd = spec(ptype="rbd", source_name="rbdpool", source_hosts=["ceph1"],
               source_auth={"username": "admin", "password": "c2VjcmV0"})
    assert rbd.password == "c2VjcmV0"
    assert rbd.settings()["source"]["auth"] == {"type": "ceph", "username": "admin",
                                                "secret": {"type": "usage", "value": "pool_p1"}}
    assert "c2VjcmV0" not in poolxml.build(rbd)
    with pytest.raises(InvalidArgument, match="needs a pool type with secrets"):
        spec(source_auth={"username": "a", "password": "b"})


def test_an_update_rewrites_what_differs_and_keeps_the_rest():
    libvirt_xml = """<pool type='dir'><name>p1</name><uuid>1f2e</uuid>
      <capacity unit='bytes'>10</capacity><source></source>
      <target><path>/srv/p</path><permissions><mode>0711</mode><owner>0</owner></permissions></target></pool>"""
    view = poolxml.PoolXml.parse(libvirt_xml)
    # What libvirt filled in (mode, owner) is not a difference when the caller does not ask for it.
    assert poolxml.change(view, spec(target="/srv/p")) == {}
    diff = poolxml.change(view, spec(target="/srv/q", permissions={"mode": "0755"}))
    assert diff == {"target": {"old": "/srv/p", "new": "/srv/q"},
                    "permissions": {"old": {"mode": "0711", "owner": "0"}, "new": {"mode": "0755"}}}
    root = ET.fromstring(view.to_xml())
    assert root.findtext("uuid") == "1f2e" and root.find("capacity") is not None
    assert root.findtext("target/path") == "/srv/q" and root.findtext("target/permissions/mode") == "0755"
    assert root.findtext("target/permissions/owner") == "0"
    # Another type: the old type's source settings go.
    nfs = poolxml.PoolXml.parse(poolxml.build(spec(ptype="netfs", target="/t", source_hosts=["h"],
                                                   source_dir="/e")))
    diff = poolxml.change(nfs, spec(target="/t"))
    assert set(diff) == {"ptype", "source:hosts", "source:dir"}
    assert nfs.settings() == {"ptype": "dir", "target": "/t", "permissions": None, "source": {}}


@pytest.mark.parametrize("kwargs, message", [
    ({"ptype": "dri"}, "ptype='dri' is not a libvirt pool type"),
    ({"name": "a/b"}, "pool name 'a/b' is not valid"),
    ({"target": "relative"}, "must be an absolute path"),
    ({"permissions": {"mode": "999"}}, "must be an octal mode"),
    ({"permissions": {"mod": "0755"}}, "must be a mapping of mode, owner, group, label"),
    ({"source_hosts": ["h:x"]}, "port that is not a number"),
    ({"source_devices": [{"pth": "/dev/sdb"}]}, "must be a list of"),
    ({"source_auth": {"type": "ceph", "username": "u"}}, "must be {type: ceph|chap"),
    ({"start": "yes"}, "start='yes' must be True or False"),
    ({"sourec_dir": "/x"}, "unknown argument.*sourec_dir.*did you mean source_dir"),
])
def test_bad_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises(InvalidArgument, match=message):
        spec(**kwargs)


def test_the_policy_allows_targets_under_its_directories_only(policy, tmp_path):
    allowed = spec(target=str(tmp_path / "pools" / "a"))
    policy.check("p1", allowed.settings())  # accepted
    policy.check("p1", spec(target=str(tmp_path / "pools")).settings())  # the directory itself too
    for target, message in ((str(tmp_path / "elsewhere"), "is outside virt:pools:allowed_targets"),
                            ("/etc", "is outside virt:pools:allowed_targets"),
                            (str(tmp_path / "pools" / ".." / "elsewhere"), "outside"),
                            (str(tmp_path / "images" / "web1"), "where VMs keep their disks"),
                            (str(tmp_path), "where VMs keep their disks")):
        with pytest.raises(InvalidArgument, match=message):
            policy.check("p1", spec(target=target).settings())
    with pytest.raises(InvalidArgument, match="needs a target directory"):
        policy.check("p1", spec().settings())


def test_the_policy_allows_listed_devices_and_volume_groups_only(policy):
    policy.check("p1", spec(ptype="logical", source_devices=["/dev/loop7"], source_name="lab_vg").settings())
    with pytest.raises(InvalidArgument, match="source device /dev/sda is not one of virt:pools:allowed_devices"):
        policy.check("p1", spec(ptype="logical", source_devices=["/dev/sda"], source_name="lab_vg").settings())
    with pytest.raises(InvalidArgument, match="source name vg0 .* is not one of virt:pools:allowed_source_names"):
        policy.check("p1", spec(ptype="logical", source_name="vg0").settings())
    # Without source_name, the volume group is named after the pool.
    with pytest.raises(InvalidArgument, match="source name p1"):
        policy.check("p1", spec(ptype="logical").settings())
    with pytest.raises(InvalidArgument, match="source device /dev/sdb"):
        policy.check("p1", spec(ptype="disk", source_devices=["/dev/sdb"]).settings())
    with pytest.raises(InvalidArgument, match="target /etc must be under /dev"):
        policy.check("p1", spec(ptype="disk", source_devices=["/dev/loop1"], target="/etc").settings())
    policy.check("p1", spec(ptype="disk", source_devices=["/dev/loop1"], target="/dev").settings())
    with pytest.raises(InvalidArgument, match="type mpath is not allowed"):
        policy.check("p1", spec(ptype="mpath").settings())
    policy.check("p1", spec(ptype="rbd", source_name="rbd", source_hosts=["ceph"]).settings())  # remote: fine


def test_nothing_is_allowed_unless_configured(tmp_path):
    empty = paths.PoolPolicy(str(tmp_path / "images"))
    with pytest.raises(InvalidArgument, match=r"allowed_targets \(none configured\)"):
        empty.check("p1", spec(target=str(tmp_path / "x")).settings())
    targets_only = paths.PoolPolicy(str(tmp_path / "images"), allowed_targets=[str(tmp_path / "pools")])
    fs_pool = spec(ptype="fs", target=str(tmp_path / "pools" / "fs"), source_devices=["/dev/loop0"])
    with pytest.raises(InvalidArgument, match=r"allowed_devices \(none configured\)"):
        targets_only.check("p1", fs_pool.settings())
    with pytest.raises(InvalidArgument, match="must be absolute paths"):
        paths.PoolPolicy(str(tmp_path / "images"), allowed_targets=["relative"])


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "a..b", None])
def test_volume_names_are_file_names(name):
    with pytest.raises(InvalidArgument, match="volume name"):
        paths.validate_volume_name(name)


def test_volume_xml_keeps_the_classic_units_and_options():
    root = ET.fromstring(volumes.volume_xml("v.qcow2", 8, 2, "qcow2", "file", {"mode": "0640"},
                                            {"path": "/b.img", "format": "raw"}, nocow=True))
    assert root.get("type") == "file" and root.findtext("name") == "v.qcow2"
    assert root.findtext("capacity") == str(8 * 1024) and root.find("capacity").get("unit") == "KiB"
    assert root.findtext("allocation") == str(2 * 1024)
    assert root.find("target/format").get("type") == "qcow2" and root.find("target/nocow") is not None
    assert root.findtext("target/permissions/mode") == "0640"
    assert root.findtext("backingStore/path") == "/b.img"
    with pytest.raises(InvalidArgument, match="the format is never guessed"):
        volumes.volume_xml("v", 8, backing_store={"path": "/b.img"})
    with pytest.raises(InvalidArgument, match="size='big' must be a whole number of MiB"):
        volumes.volume_xml("v", "big")
    with pytest.raises(InvalidArgument, match="type='disk' must be one of"):
        volumes.volume_xml("v", 8, vtype="disk")


def test_sparse_sections_follow_the_files_holes(tmp_path):
    import os

    path = tmp_path / "sparse"
    with open(path, "wb") as fh:
        fh.write(b"x" * 4096)
        fh.seek(1024 * 1024)
        fh.write(b"y" * 4096)
    fd = os.open(path, os.O_RDONLY)
    try:
        first = volumes._hole_or_data(fd)  # pylint: disable=protected-access
        assert first[0] is True and first[1] >= 4096
        os.lseek(fd, first[1], os.SEEK_SET)
        hole = volumes._hole_or_data(fd)  # pylint: disable=protected-access
        assert hole[0] is False and first[1] + hole[1] <= 1024 * 1024
        os.lseek(fd, 0, os.SEEK_END)
        assert volumes._hole_or_data(fd) == [False, 0]  # pylint: disable=protected-access
    finally:
        os.close(fd)
