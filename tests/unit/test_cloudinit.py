"""cloud_init passthrough: the caller's user-data, meta-data and network-config merged with the
minion seeding in one cidata ISO (saltvirt.seeding.cloudinit, cidata, methods)."""

import io

import pycdlib
import pytest
import yaml

from saltvirt import seeding
from saltvirt.errors import InvalidArgument
from saltvirt.provision.spec import VmSpec
from saltvirt.seeding import cloudinit, methods
from saltvirt.settings import from_dict
from saltvirt.storage.paths import Roots


@pytest.fixture(scope="module")
def keys():
    return seeding.gen_minion_keys()


def iso_files(path):
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out = {}
        for child in iso.list_children(rr_path="/"):
            name = child.rock_ridge.name().decode() if child.rock_ridge else ""
            if child.is_file():
                data = io.BytesIO()
                iso.get_file_from_iso_fp(data, rr_path="/" + name)
                out[name] = data.getvalue().decode()
        return out
    finally:
        iso.close()


CALLER = {
    "user_data": "#cloud-config\npackages: [nginx]\nusers: [{name: ops}]\nsalt_minion:\n  grains: {role: web}\n"
                 "  conf: {log_level: debug}\n",
    "meta_data": {"local-hostname": "web1.example.com", "region": "lab"},
    "network_config": {"version": 2, "ethernets": {"eth0": {"dhcp4": True}}},
}


def test_the_iso_holds_the_callers_documents_and_the_minion_seeding(tmp_path, keys):
    priv, pub = keys
    dest = tmp_path / "cidata.iso"
    seeding.make_cidata(dest, minion_id="web1", master="salt", pub_key_pem=pub, priv_key_pem=priv,
                        extra_minion_config={"multiprocessing": False},
                        cloud_init=cloudinit.normalise(None, CALLER))
    files = iso_files(dest)
    assert sorted(files) == ["meta-data", "network-config", "user-data"]
    assert files["user-data"].startswith("#cloud-config\n")
    user = yaml.safe_load(files["user-data"])
    assert user["packages"] == ["nginx"] and user["users"] == [{"name": "ops"}]
    assert user["salt_minion"]["grains"] == {"role": "web"}
    assert user["salt_minion"]["conf"] == {"id": "web1", "master": "salt", "log_level": "debug",
                                           "multiprocessing": False}
    assert (user["salt_minion"]["public_key"], user["salt_minion"]["private_key"]) == (pub, priv)
    assert yaml.safe_load(files["meta-data"]) == {"instance-id": "web1", "local-hostname": "web1.example.com",
                                                  "region": "lab"}
    assert yaml.safe_load(files["network-config"]) == CALLER["network_config"]


def test_without_cloud_init_the_iso_is_as_before(tmp_path, keys):
    priv, pub = keys
    seeding.make_cidata(tmp_path / "c.iso", minion_id="vm1", master="salt", pub_key_pem=pub, priv_key_pem=priv)
    assert sorted(iso_files(tmp_path / "c.iso")) == ["meta-data", "user-data"]


@pytest.mark.parametrize("user_data, message", [
    ({"salt_minion": {"conf": {"id": "other"}}}, "sets 'id' to 'other'"),
    ({"salt_minion": {"conf": {"master": "evil.example.com"}}}, "sets 'master'"),
    ({"salt_minion": {"private_key": "-----BEGIN RSA PRIVATE KEY-----"}}, "salt_minion:private_key is refused"),
    ({"salt_minion": {"public_key": "x"}}, "salt_minion:public_key is refused"),
    ({"salt_minion": {"pki_dir": "/tmp"}}, "salt_minion:pki_dir is refused"),
])
def test_a_caller_cannot_override_the_minions_identity_or_keys(tmp_path, keys, user_data, message):
    priv, pub = keys
    with pytest.raises(InvalidArgument, match=message):
        seeding.make_cidata(tmp_path / "c.iso", minion_id="vm1", master="salt", pub_key_pem=pub, priv_key_pem=priv,
                            cloud_init=cloudinit.normalise(None, {"user_data": user_data}))
    assert not (tmp_path / "c.iso").exists()


def test_the_same_id_and_master_are_accepted():
    docs = cloudinit.normalise(None, {"user_data": {"salt_minion": {"conf": {"id": "vm1", "master": "salt"}}}})
    rest, conf, extras = cloudinit.minion_extras(docs["user_data"])
    assert (rest, conf, extras) == ({}, {"id": "vm1", "master": "salt"}, {})
    assert seeding.minion_config("vm1", "salt", conf) == {"id": "vm1", "master": "salt"}


@pytest.mark.parametrize("given, message", [
    ({"user_data": "#!/bin/sh\necho hi\n"}, "must be a #cloud-config document"),
    ({"user_data": "#cloud-config\n[1, 2]\n"}, "must be a mapping, not list"),
    ({"user_data": "#cloud-config\nkey: [unclosed\n"}, "not valid YAML"),
    ({"vendor_data": {}}, "unknown key.* vendor_data"),
    ({"network_config": {"ethernets": {}}}, "needs version: 1 or 2"),
    ({"meta_data": {"local-hostname": "bad_host!"}}, None),
    ("user-data", "cloud_init must be a dict"),
])
def test_bad_cloud_init_is_refused(tmp_path, keys, given, message):
    if message is None:  # a bad hostname is caught when the ISO is written
        priv, pub = keys
        with pytest.raises(InvalidArgument, match="invalid hostname 'bad_host!'"):
            seeding.make_cidata(tmp_path / "c.iso", minion_id="vm1", master="salt", pub_key_pem=pub,
                                priv_key_pem=priv, cloud_init=cloudinit.normalise(None, given))
        return
    with pytest.raises(InvalidArgument, match=message):
        cloudinit.normalise(None, given)


def test_operator_defaults_are_merged_under_the_callers():
    defaults = {"user_data": {"packages": ["curl"], "write_files": [{"path": "/etc/motd"}],
                              "ntp": {"enabled": True, "servers": ["a"]}},
                "meta-data": {"region": "eu"}}
    docs = cloudinit.normalise(defaults, {"user_data": {"packages": ["nginx"], "ntp": {"servers": ["b"]}}})
    assert docs["user_data"] == {"packages": ["nginx"], "write_files": [{"path": "/etc/motd"}],
                                 "ntp": {"enabled": True, "servers": ["b"]}}
    assert docs["meta_data"] == {"region": "eu"}


def _settings(tmp_path, **virt):
    return from_dict({"virt": {"images": str(tmp_path / "images"), **virt}}, opts={"id": "hv1", "master": "salt"})


def test_the_seeder_writes_cloud_init_into_the_cidata_iso(tmp_path):
    settings = _settings(tmp_path, cloud_init={"user_data": {"timezone": "UTC"}})
    spec = VmSpec.from_kwargs("virt.init", name="vm1", cpu=1, mem=256, cloud_init=CALLER)
    roots = Roots(str(tmp_path / "images"))
    seed, report = methods.seeder(settings, spec, roots)
    (disk,) = seed([], _Undo())
    assert report["cloud_init"] == ["meta_data", "network_config", "user_data"]
    user = yaml.safe_load(iso_files(disk.source)["user-data"])
    assert user["timezone"] == "UTC" and user["packages"] == ["nginx"]
    assert user["salt_minion"]["conf"]["id"] == "vm1"


def test_cloud_init_needs_the_cidata_method_and_seeding(tmp_path):
    spec = VmSpec.from_kwargs("virt.init", name="vm1", cpu=1, mem=256, cloud_init=CALLER, seed_cmd="seed.apply")
    roots = Roots(str(tmp_path / "images"))
    with pytest.raises(InvalidArgument, match="does not go with seed_cmd seed.apply"):
        methods.seeder(_settings(tmp_path), spec, roots)
    spec = VmSpec.from_kwargs("virt.init", name="vm1", cpu=1, mem=256, cloud_init=CALLER, seed=False)
    with pytest.raises(InvalidArgument, match="needs seed=True"):
        methods.seeder(_settings(tmp_path), spec, roots, wanted=False)
    # A bad minion override is refused before any disk is made.
    spec = VmSpec.from_kwargs("virt.init", name="vm1", cpu=1, mem=256,
                              cloud_init={"user_data": {"salt_minion": {"conf": {"id": "vm2"}}}})
    with pytest.raises(InvalidArgument, match="sets 'id'"):
        methods.seeder(_settings(tmp_path), spec, roots)


class _Undo:
    def push(self, *args):
        pass
