"""Hypervisor identity: the operator's id set, VM names that would join it, exact host=."""

import pytest

from saltvirt import trust
from saltvirt.errors import InvalidArgument


def test_hypervisors_from_config_shapes():
    glob = trust.Hypervisors.from_config("hypervisor*")
    assert glob.target() == ("hypervisor*", "glob")
    assert glob.matches("hypervisor9") and not glob.matches("web1")
    listed = trust.Hypervisors.from_config(["hv1", "hv2"])
    assert listed.target() == (["hv1", "hv2"], "list")
    assert listed.matches("hv1") and not listed.matches("hv10")
    pcre = trust.Hypervisors.from_config({"tgt": "hv[0-9]+$", "tgt_type": "pcre"})
    assert pcre.matches("hv12") and not pcre.matches("web-hv1") and not pcre.matches("hv1x")


@pytest.mark.parametrize("value, message", [
    (None, "virt:hypervisors is not set in the master config"),
    ("", "virt:hypervisors is not set"),
    ({"tgt": "virtual_host:true", "tgt_type": "grain"}, "tgt_type 'grain', which a VM could satisfy"),
    ({"tgt": "G@virt:true", "tgt_type": "compound"}, "tgt_type 'compound'"),
    ({"tgt": "(", "tgt_type": "pcre"}, "is not a regular expression"),
    ([], "a list of minion ids is needed"),
])
def test_hypervisors_config_refused(value, message):
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(")):
        trust.Hypervisors.from_config(value)


def test_vm_name_that_would_be_a_hypervisor_is_refused():
    hypervisors = trust.Hypervisors.from_config("hypervisor*")
    with pytest.raises(InvalidArgument) as exc:
        trust.check_vm_name("hypervisor9", hypervisors, {"hypervisor1"})
    assert str(exc.value) == (
        "refusing VM name 'hypervisor9': it matches the hypervisor target virt:hypervisors "
        "(glob 'hypervisor*'), so its minion would be trusted as a hypervisor; choose a name "
        "outside that target")
    with pytest.raises(InvalidArgument, match=r"already has a minion key with that id.*salt-key -d web1"):
        trust.check_vm_name("web1", hypervisors, {"hypervisor1", "web1"})
    # the legitimate path
    assert trust.check_vm_name("web2", hypervisors, {"hypervisor1", "web1"}) == "web2"


@pytest.mark.parametrize("host", ["hv*", "hypervisor[12]", "hypervisor1,hypervisor2", "", None, "web1"])
def test_host_must_name_exactly_one_hypervisor(host):
    hypervisors = trust.Hypervisors.from_config("hypervisor*")
    with pytest.raises(InvalidArgument, match=r"host=.*(exactly one hypervisor|is not a hypervisor)"):
        trust.check_host(host, hypervisors)
    assert trust.check_host("hypervisor1", hypervisors) == "hypervisor1"


def test_formula_allows_the_client_unit_of_the_pki():
    import os

    from saltvirt import pki

    sls = os.path.join(os.path.dirname(__file__), "..", "..", "virt", "libvirtd.sls")
    with open(sls) as fh:
        text = fh.read()
    assert f"'{pki.ALLOWED_CLIENT_DN}'" in text
    # QEMU's units are not matched by the libvirt client pattern
    import fnmatch
    for kind, unit in pki.UNITS.items():
        dn = f"O=Lab,OU={unit},CN=hypervisor1"
        assert fnmatch.fnmatchcase(dn, pki.ALLOWED_CLIENT_DN) == (kind == "client")
