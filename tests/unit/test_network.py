"""Virtual networks: the classic arguments checked (NetworkSpec), network XML as views
(build, read, change in place, keep the rest) and the libvirt calls against libvirt's
in-process test driver.

Golden files in ``tests/data/xml``: ``network-<case>.xml`` is what a classic call builds;
``network-nat-in.xml`` (libvirt's inactive XML plus an operator's additions) changed by a spec
must equal ``network-nat-out.xml``. ``SALT_VIRT_WRITE_GOLDEN=1`` writes them anew.
"""

import os
import xml.etree.ElementTree as ET

import libvirt
import pytest

from saltvirt.errors import AlreadyExists, InvalidArgument, NotFound, VirtError
from saltvirt.network import ops
from saltvirt.network import xml as netxml
from saltvirt.network.spec import NetworkSpec

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "xml")
# libvirt's test driver on an empty host: unlike test:///default, whose state every open
# connection in the process shares, each connection to a file of its own starts empty.
PRIVATE_HOST = "test://" + os.path.join(DATA, "testnode-empty.xml")


def spec(**kwargs):
    return NetworkSpec.from_kwargs("virt.network_define", **kwargs)


def _canonical(xml):
    return ET.canonicalize(xml, strip_text=True)


def _read(name):
    with open(os.path.join(DATA, name)) as fh:
        return fh.read()


def _golden(name, xml):
    path = os.path.join(DATA, name)
    if os.environ.get("SALT_VIRT_WRITE_GOLDEN"):
        elem = ET.fromstring(xml)
        ET.indent(elem)
        with open(path, "w") as fh:
            fh.write(ET.tostring(elem, encoding="unicode") + "\n")
    assert _canonical(xml) == _canonical(_read(name))


# The classic documentation's examples, and one of each forward mode.
BUILD_CASES = {
    "ovs": dict(name="ovs", bridge="main", forward="bridge", vport="openvswitch", tag=180),
    "natted": dict(
        name="natted", bridge="natted", forward="nat",
        ipv4_config={"cidr": "192.168.42.0/24", "dhcp_ranges": [
            {"start": "192.168.42.10", "end": "192.168.42.25"},
            {"start": "192.168.42.100", "end": "192.168.42.150"}],
            "hosts": {"192.168.42.10": {"mac": "00:16:3e:77:e2:ed", "name": "foo.example.com"}},
            "bootp": {"file": "pxeboot.img", "server": "192.168.42.1"}, "tftp": "/srv/tftp"},
        ipv6_config={"cidr": "2001:db8:ca2:2::/64", "hosts": [{"ip": "2001:db8:ca2:2:3::1", "name": "paul"}]},
        nat={"address": {"start": "1.2.3.4", "end": "1.2.3.10"}, "port": {"start": 500, "end": 1000}},
        domain={"name": "acme.lab", "localOnly": True}, mtu=9000,
        dns={"forwarders": [{"domain": "example.com", "addr": "192.168.1.1"}, {"addr": "8.8.8.8"}],
             "txt": {"example.com.": "v=spf1 a -all"},
             "hosts": {"192.168.42.2": ["mirror.acme.lab", "test.acme.lab"]},
             "srvs": [{"name": "ldap", "protocol": "tcp", "domain": "ldapserver.example.com", "target": ".",
                       "port": 389, "priority": 1, "weight": 10}]}),
    "isolated": dict(name="isolated", bridge=None, forward=None, ipv4_config={"cidr": "10.10.0.0/24"}),
    "route": dict(name="routed", bridge="virbr9", forward="route", ipv4_config={"cidr": "10.20.0.254/24"}),
    "trunk": dict(name="trunk", bridge="br-trunk", forward="bridge",
                  vport={"type": "openvswitch", "parameters": {"interfaceid": "09b11c53-8b5c-4eeb-8f00-d84eaa0aaa4f"}},
                  tag={"trunk": True, "tags": [{"id": 42, "nativeMode": "untagged"}, {"id": 47}]}),
    "passthrough": dict(name="direct", bridge=None, forward="passthrough", interfaces="eth10 eth11 eth12"),
    "hostdev": dict(name="sriov", bridge=None, forward="hostdev", addresses="0000:04:00.1 0000:e3:01.2"),
}


@pytest.mark.parametrize("case", sorted(BUILD_CASES))
def test_build_matches_the_golden_file_and_reads_back_as_asked(case):
    wanted = spec(**BUILD_CASES[case])
    xml = netxml.build(wanted)
    _golden(f"network-{case}.xml", xml)
    # The view reads back exactly what the spec asked for: building and reading cannot drift.
    assert netxml.NetworkXml.parse(xml).settings() == wanted.settings()
    assert netxml.differences(netxml.NetworkXml.parse(xml), wanted.settings(), wanted.owns_bridge) == {}


@pytest.mark.parametrize("case", sorted(BUILD_CASES))
def test_libvirt_accepts_what_is_built_and_nothing_changes_on_update(case, test_conn):
    wanted = spec(**dict(BUILD_CASES[case], start=False))
    assert ops.define(test_conn, wanted) is True
    assert ops.update(test_conn, wanted) == {"changed": False, "changes": {}, "restart_needed": False}


def test_classic_tag_and_vport_strings_become_elements():
    view = netxml.NetworkXml.parse(_read("network-ovs.xml"))
    assert view.find("virtualport").get("type") == "openvswitch"
    assert view.find("vlan/tag").get("id") == "180"
    assert view.find("forward").get("mode") == "bridge" and view.find("bridge").get("name") == "main"


def test_the_view_reads_libvirts_xml():
    view = netxml.NetworkXml.parse(_read("network-nat-in.xml"))
    settings = view.settings()
    assert (view.name, view.uuid) == ("lab-nat", "7f0a9b52-5d0e-4c1a-9d0e-2b7e6c1f3a11")
    assert settings["forward"] == "nat" and settings["bridge"] == "svnat0"
    assert settings["nat"] == {"port": {"start": 1024, "end": 65535}}
    # netmask= is read as a prefix; the port group's <vlan> is not the network's tag.
    assert settings["ipv4_config"] == {"address": "192.168.42.1", "prefix": 24, "hosts": {},
                                       "dhcp_ranges": [{"start": "192.168.42.10", "end": "192.168.42.25"}]}
    assert settings["tag"] is None and settings["mtu"] is None and settings["dns"] is None


def test_round_trip_and_an_unchanged_spec_keep_everything():
    xml = _read("network-nat-in.xml")
    assert _canonical(netxml.NetworkXml.parse(xml).to_xml()) == _canonical(xml)
    same = spec(name="lab-nat", bridge="svnat0", forward="nat", nat={"port": {"start": 1024, "end": 65535}},
                ipv4_config={"cidr": "192.168.42.0/24",
                             "dhcp_ranges": [{"start": "192.168.42.10", "end": "192.168.42.25"}]})
    view = netxml.NetworkXml.parse(xml)
    assert netxml.change(view, same) == {}
    assert _canonical(view.to_xml()) == _canonical(xml)
    # Without a bridge name, the one libvirt has (it names bridges of NAT networks) stays.
    assert netxml.change(view, spec(**dict(same.settings(), name="lab-nat", bridge=None, ipv4_config={
        "cidr": "192.168.42.0/24", "dhcp_ranges": [{"start": "192.168.42.10", "end": "192.168.42.25"}]}))) == {}


def test_change_touches_only_what_differs():
    view = netxml.NetworkXml.parse(_read("network-nat-in.xml"))
    wanted = spec(name="lab-nat", bridge="svnat0", forward="nat", mtu=9000,
                  ipv4_config={"cidr": "192.168.42.0/24", "dhcp_ranges": [
                      {"start": "192.168.42.10", "end": "192.168.42.25"},
                      {"start": "192.168.42.200", "end": "192.168.42.210"}],
                      "hosts": {"192.168.42.30": {"mac": "52:54:00:00:00:30", "name": "db"}}},
                  dns={"hosts": {"192.168.42.30": ["db.lab"]}})
    diff = netxml.change(view, wanted)
    assert sorted(diff) == ["dns", "ipv4_config", "mtu", "nat"]
    assert diff["mtu"] == {"old": None, "new": 9000}
    assert diff["nat"] == {"old": {"port": {"start": 1024, "end": 65535}}, "new": None}
    _golden("network-nat-out.xml", view.to_xml())
    # The kept range keeps its <lease>; the netmask stays (the address did not change);
    # uuid, mac, bandwidth, port group, route, title and metadata are all still there.
    assert view.find("ip/dhcp/range/lease") is not None and view.find("ip").get("netmask")
    for path in ("uuid", "mac", "bandwidth", "portgroup", "route", "title", "metadata"):
        assert view.find(path) is not None, path
    assert netxml.differences(view, wanted.settings(), wanted.owns_bridge) == {}


def test_changing_the_forward_mode_and_going_isolated():
    view = netxml.NetworkXml.parse(_read("network-nat-in.xml"))
    diff = netxml.change(view, spec(name="lab-nat", bridge="svnat0", forward=None,
                                    ipv4_config={"cidr": "192.168.42.0/24"}))
    assert diff["forward"] == {"old": "nat", "new": None}
    assert view.find("forward") is None and view.find("ip/dhcp") is None
    assert view.settings()["ipv4_config"] == {"address": "192.168.42.1", "prefix": 24, "dhcp_ranges": [],
                                              "hosts": {}}
    netxml.change(view, spec(name="lab-nat", bridge="svnat0", forward="route", ipv4_config={
        "cidr": "10.1.0.1/16"}))
    assert view.find("forward").get("mode") == "route"
    ip = view.find("ip")
    assert (ip.get("address"), ip.get("prefix"), ip.get("netmask")) == ("10.1.0.1", "16", None)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(bridge="br1", forward="nat", brige="x"), "unknown argument(s) brige (did you mean bridge?)"),
    (dict(bridge="br1", forward="natt"), "forward='natt' is not a libvirt forward mode"),
    (dict(bridge="br1", forward="nat", ipv4_config={"cidr": "192.168.300.0/24"}), "is not an address range"),
    (dict(bridge="br1", forward="nat", ipv4_config={"cidr": "2001:db8::/64"}), "is not IPv4"),
    (dict(bridge="br1", forward="nat", ipv4_config={"cidr": "10.0.0.0/24", "dhcp": []}), "(unknown: dhcp)"),
    (dict(bridge="br1", forward="nat", ipv4_config={"cidr": "10.0.0.0/24", "dhcp_ranges": [
        {"start": "10.0.1.2", "end": "10.0.1.9"}]}), "is outside 10.0.0.0/24"),
    (dict(bridge="br1", forward="nat", ipv4_config={"cidr": "10.0.0.0/24", "dhcp_ranges": [
        {"start": "10.0.0.9", "end": "10.0.0.2"}]}), "starts after its end"),
    (dict(bridge="br1", forward="route", nat={"port": {"start": 1, "end": 2}}), "needs forward: nat"),
    (dict(bridge="br1", forward="nat", nat={"port": {"start": 0, "end": 70000}}), "is not a port number"),
    (dict(bridge="br1", forward="nat", mtu="big"), "mtu='big' must be a number of bytes"),
    (dict(bridge="a-very-long-bridge-name", forward="nat"), "is not a host interface name"),
    (dict(bridge="br1", forward="bridge", tag=5000), "is not a VLAN id"),
    (dict(bridge=None, forward="bridge"), "needs a bridge"),
    (dict(bridge="br1", forward="route"), "needs an address range"),
    (dict(bridge="br0", forward="bridge", ipv4_config={"cidr": "10.0.0.0/24"}), "cannot have ipv4_config"),
    (dict(bridge="br1", forward="hostdev", addresses="04:00"), "is not a PCI address"),
    (dict(bridge="br1", forward="nat", dns={"forwarder": []}), "(unknown: forwarder)"),
    (dict(bridge="br1", forward="open", autostart="yes"), "autostart='yes' must be True or False"),
])
def test_bad_arguments_are_refused_by_name(kwargs, message):
    with pytest.raises(InvalidArgument) as err:
        spec(name="net1", **kwargs)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_names_and_missing_name():
    with pytest.raises(InvalidArgument, match="network name '../x' is not valid"):
        spec(name="../x", bridge="br1", forward="nat")
    with pytest.raises(InvalidArgument, match="name must be given"):
        NetworkSpec.from_kwargs("virt.network_define", bridge="br1")


def test_connection_and_salt_arguments_are_set_aside():
    made = spec(name="n", bridge="b", forward="open", connection="qemu:///system", __pub_jid="1")
    assert made.extra == {"connection": "qemu:///system"}


# ------------------------------------------------------------------ libvirt (test driver)


@pytest.fixture
def test_conn():
    conn = libvirt.open(PRIVATE_HOST)  # in-process, private to this connection
    yield conn
    conn.close()


def test_lifecycle_on_the_test_driver(test_conn):
    net = spec(name="lab1", bridge="svlab1", forward="nat", start=False, autostart=False,
               ipv4_config={"cidr": "10.77.0.0/24", "dhcp_ranges": [{"start": "10.77.0.10", "end": "10.77.0.20"}]})
    assert ops.define(test_conn, net) is True
    assert "lab1" in ops.list_names(test_conn)
    info = ops.info(test_conn, "lab1")["lab1"]
    assert (info["active"], info["autostart"], info["persistent"], info["bridge"]) == (False, False, True, "svlab1")
    assert info["leases"] == []
    with pytest.raises(AlreadyExists, match="network lab1 is already defined: change it with virt.network_update"):
        ops.define(test_conn, net)

    bigger = spec(**dict(BUILD_CASES["isolated"], name="lab1", bridge="svlab1", forward="nat", mtu=9000,
                         ipv4_config={"cidr": "10.77.0.0/24",
                                      "dhcp_ranges": [{"start": "10.77.0.10", "end": "10.77.0.20"}]}))
    predicted = ops.update(test_conn, bigger, test=True)
    assert predicted == {"changed": True, "changes": {"mtu": {"old": None, "new": 9000}}, "restart_needed": False}
    assert "<mtu" not in ops.get_xml(test_conn, "lab1")  # test=True changed nothing
    assert ops.update(test_conn, bigger) == predicted
    assert "<mtu size='9000'/>" in ops.get_xml(test_conn, "lab1", inactive=True)
    assert ops.update(test_conn, bigger)["changed"] is False

    assert ops.start(test_conn, "lab1") is True
    assert ops.set_autostart(test_conn, "lab1", True) is True
    assert ops.info(test_conn)["lab1"]["active"] is True and ops.info(test_conn)["lab1"]["autostart"] is True
    with pytest.raises(VirtError, match="starting network lab1: .*already running"):
        ops.start(test_conn, "lab1")
    assert ops.stop(test_conn, "lab1") is True
    assert ops.undefine(test_conn, "lab1") is True
    assert "lab1" not in ops.list_names(test_conn) and ops.info(test_conn, "lab1") == {}


@pytest.mark.parametrize("call", [ops.start, ops.stop, ops.undefine, ops.get_xml])
def test_a_missing_network_is_named(test_conn, call):
    with pytest.raises(NotFound, match="network nosuch is not defined on this hypervisor"):
        call(test_conn, "nosuch")


def test_define_leaves_nothing_when_the_network_cannot_start(test_conn, monkeypatch):
    net = spec(name="lab2", bridge="svlab2", forward="nat", ipv4_config={"cidr": "10.78.0.0/24"})

    real = test_conn.networkDefineXML

    def define_then_fail(xml):
        made = real(xml)

        class Failing:
            def __getattr__(self, attr):
                return getattr(made, attr)

            def create(self):
                raise libvirt.libvirtError("Network is already in use by interface svlab2")
        return Failing()

    monkeypatch.setattr(test_conn, "networkDefineXML", define_then_fail)
    with pytest.raises(VirtError, match="^network lab2: "):
        ops.define(test_conn, net)
    assert "lab2" not in ops.list_names(test_conn)


def test_leases_name_their_address_family():
    class Net:
        def isActive(self):
            return 1

        def DHCPLeases(self):
            return [{"type": 0, "ipaddr": "10.0.0.5"}, {"type": 1, "ipaddr": "fd00::5"}, {"type": 9}]

    assert [lease["type"] for lease in ops.leases(Net())] == ["ipv4", "ipv6", "unknown"]
