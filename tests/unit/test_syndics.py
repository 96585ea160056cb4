"""virt:syndics: which syndic's master holds the keys of a hypervisor's VMs."""

import pytest

from saltvirt.errors import InvalidArgument
from saltvirt.fleet import syndics


@pytest.mark.parametrize("value", [None, "", {}])
def test_no_syndics_means_this_master(value):
    conf = syndics.Syndics.from_config(value)
    assert not conf
    assert conf.key_minion("hypervisor1") is None


def test_each_hypervisor_maps_to_the_minion_on_its_syndic():
    conf = syndics.Syndics.from_config({
        "syndic1": "hv-east-*",
        "syndic2": ["hv-west-1", "hv-west-2"],
        "syndic3": {"tgt": "^lab[0-9]+$", "tgt_type": "pcre"},
    })
    assert conf
    assert conf.key_minion("hv-east-7") == "syndic1"
    assert conf.key_minion("hv-west-2") == "syndic2"
    assert conf.key_minion("lab12") == "syndic3"
    # not under any syndic: its VMs' keys stay on the master the runner runs on
    assert conf.key_minion("hv-west-3") is None
    assert conf.key_minion("lab12x") is None


def test_overlapping_targets_are_refused_at_use():
    conf = syndics.Syndics.from_config({"syndic1": "hv*", "syndic2": "hv-west-*"})
    assert conf.key_minion("hv-east-1") == "syndic1"
    with pytest.raises(InvalidArgument, match=r"hypervisor hv-west-1 matches several entries of virt:syndics "
                                              r"\(syndic1, syndic2\)"):
        conf.key_minion("hv-west-1")


@pytest.mark.parametrize("value, message", [
    ("syndic1", "virt:syndics must map the minion id on each syndic's host"),
    (["syndic1"], "virt:syndics must map"),
    ({"syndic*": "hv*"}, r"virt:syndics: 'syndic\*' must be exactly one minion id"),
    ({"": "hv*"}, "must be exactly one minion id"),
    ({"syndic1": None}, "virt:syndics:syndic1: name the hypervisors under this syndic"),
    ({"syndic1": []}, "virt:syndics:syndic1: name the hypervisors"),
    ({"syndic1": {"tgt": "virtual:kvm", "tgt_type": "grain"}}, "virt:syndics:syndic1: .*tgt_type 'grain'"),
])
def test_bad_config_is_refused_with_the_fix(value, message):
    with pytest.raises(InvalidArgument, match=message):
        syndics.Syndics.from_config(value)
