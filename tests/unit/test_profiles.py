"""Disk and NIC profiles: every accepted shape, defaults, merges and errors."""

import pytest

from saltvirt.errors import InvalidArgument, NotFound
from saltvirt.provision import profiles


def test_default_profiles_are_the_seeds():
    assert profiles.nic_profile("default") == [
        {"name": "eth0", "type": "bridge", "source": "br0", "model": "virtio", "mac": None}
    ]
    (disk,) = profiles.disk_profile("default")
    assert disk["name"] == "system" and disk["size"] == 8192 * 1024 * 1024


@pytest.mark.parametrize("shape", [
    [{"name": "eth0", "bridge": "br1"}, {"name": "eth1", "network": "default"}],
    {"eth0": {"bridge": "br1"}, "eth1": {"network": "default"}},
    [{"eth0": {"bridge": "br1"}}, {"eth1": {"network": "default"}}],
    [{"name": "eth0", "type": "bridge", "source": "br1"}, {"name": "eth1", "type": "network", "source": "default"}],
])
def test_nic_profile_shapes(shape):
    nics = profiles.nic_profile("two", {"two": shape})
    assert [(n["name"], n["type"], n["source"]) for n in nics] == [
        ("eth0", "bridge", "br1"), ("eth1", "network", "default")
    ]


def test_disk_profile_sizes_in_mib_or_units():
    disks = profiles.disk_profile(
        "p", {"p": [{"system": {"size": 2048}}, {"name": "data", "size": "1G", "model": "scsi"}]}
    )
    assert disks[0]["size"] == 2048 * 1024**2
    assert disks[1]["size"] == 1024**3 and disks[1]["bus"] == "scsi"


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(NotFound, match=r"unknown nic profile 'x' \(known: default, lan"):
        profiles.nic_profile("x", {"lan": []})
    with pytest.raises(NotFound, match="unknown disk profile 'x'"):
        profiles.disk_profile("x")


@pytest.mark.parametrize("bad,match", [
    ({"p": [{"name": "eth0", "colour": "red"}]}, "unknown settings colour"),
    ({"p": ["eth0"]}, "entry 0 is not a mapping"),
    ({"p": "eth0"}, "must be a list or a mapping"),
])
def test_bad_nic_profiles(bad, match):
    with pytest.raises(InvalidArgument, match=match):
        profiles.nic_profile("p", bad)


def test_bad_disk_size():
    with pytest.raises(InvalidArgument):
        profiles.disk_profile("p", {"p": [{"system": {"size": "lots"}}]})
    with pytest.raises(InvalidArgument, match="size must be positive"):
        profiles.disk_profile("p", {"p": [{"system": {"size": 0}}]})


def test_merges_override_by_name_and_append_new():
    disks = profiles.merge_disks(profiles.disk_profile("default"),
                                 [{"name": "system", "size": 1024}, {"name": "data", "size": 64}])
    assert [(d["name"], d["size"] // 1024**2) for d in disks] == [("system", 1024), ("data", 64)]
    nics = profiles.merge_nics(profiles.nic_profile("default"),
                               [{"name": "eth0", "type": "user"}, {"name": "eth1", "bridge": "br1"}])
    assert [(n["name"], n["type"], n["source"]) for n in nics] == [
        ("eth0", "user", None), ("eth1", "bridge", "br1")
    ]
    with pytest.raises(InvalidArgument, match=r"disks\[0\] must be a mapping with a 'name'"):
        profiles.merge_disks([], [{"size": 1}])
