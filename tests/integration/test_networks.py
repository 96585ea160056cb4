"""Virtual networks on the lab: a NAT network with DHCP made by the classic
``virt.network_running`` state on a hypervisor, a guest attached to it that gets a lease from
libvirt's dnsmasq (read back through ``virt.network_info``), the SLS applied twice (the first
run changes, the second none; ``test=True`` predicts the first), a settings change, and bad
input refused without leaving anything behind.

The lab's hypervisors share one network namespace: the network's bridge (``svn<hex>``) and
subnet (``10.232.N.0/24``) are unique per run and cannot meet ``br0`` (10.231.0.0/24).
"""

import json
import os
import time
import uuid

import pytest

LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
LAB_NETNS = os.environ.get("LAB_NETNS", "svlab")
HOST = "hypervisor1"

SLS = """\
{%- set n = salt['pillar.get']('net') %}
{{ n.name }}:
  virt.network_running:
    - bridge: {{ n.bridge }}
    - forward: nat
    - ipv4_config:
        cidr: {{ n.cidr }}
        dhcp_ranges:
          - start: {{ n.start }}
            end: {{ n.end }}
    - nat:
        port:
          start: 1024
          end: 65535
{%- if n.mtu is defined %}
    - mtu: {{ n.mtu }}
{%- endif %}
    - autostart: True
"""


def _write_sls(name, text):
    """Write ``salt://tests/<name>.sls`` on the lab's file server; returns its path."""
    directory = os.path.join(LAB_DIR, "images", "tests")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}.sls")
    with open(path, "w") as fh:
        fh.write(text)
    return path


@pytest.fixture(scope="module")
def sls(lab):
    path = _write_sls("saltvirt_net", SLS)
    yield "tests.saltvirt_net"
    os.unlink(path)


@pytest.fixture
def net(lab):
    tag = uuid.uuid4().hex[:4]
    third = int(tag, 16) % 250 + 1
    network = {"name": f"itnet-{tag}", "bridge": f"svn{tag}", "cidr": f"10.232.{third}.0/24",
               "start": f"10.232.{third}.100", "end": f"10.232.{third}.150"}
    yield network
    lab.calls(HOST, [(f, n) for n in (network["name"], f"{network['name']}-bad")
                     for f in ("virt.network_stop", "virt.network_undefine")])
    assert network["name"] not in _call(lab, "virt.list_networks")


def _call(lab, *args):
    return json.loads(lab.run("salt", HOST, *args, "--out=json", "--static").stdout)[HOST]


def _apply_all(lab, sls, pillar, test=False):
    """``{state name: state return}`` of ``state.apply sls`` with ``pillar`` on HOST."""
    args = [HOST, "state.apply", sls, f"pillar={json.dumps(pillar)}", "--out=json", "--static"]
    if test:
        args.append("test=True")
    out = json.loads(lab.run("salt", *args, check=False, timeout=300).stdout)[HOST]
    assert isinstance(out, dict), out
    return {ret["name"]: ret for ret in out.values()}


def _apply(lab, sls, network, test=False):
    (ret,) = _apply_all(lab, sls, {"net": network}, test=test).values()
    return ret


def _lease(lab, name, mac, timeout=90):
    deadline = time.monotonic() + timeout
    leases = []
    while time.monotonic() < deadline:
        leases = _call(lab, "virt.network_info", name)[name]["leases"]
        found = [lease for lease in leases if lease["mac"] == mac]
        if found:
            return found[0]
        time.sleep(2)
    raise AssertionError(f"no DHCP lease for {mac} on {name} within {timeout}s: {leases}")


def test_nat_network_by_state_gives_a_guest_a_lease(lab, sls, net, vm):
    name = net["name"]
    created = {name: "Network defined, marked for autostart and started"}

    # test=True predicts the first run and makes nothing.
    ret = _apply(lab, sls, net, test=True)
    assert ret["result"] is None and ret["changes"] == created, ret
    assert name not in _call(lab, "virt.list_networks")

    ret = _apply(lab, sls, net)
    assert ret["result"] is True and ret["changes"] == created, ret
    info = _call(lab, "virt.network_info", name)[name]
    assert (info["active"], info["autostart"], info["persistent"], info["bridge"]) == (True, True, True, net["bridge"])
    bridge = lab.run("hv-exec", HOST, "ip", "-o", "-4", "addr", "show", "dev", net["bridge"]).stdout
    assert f"{net['cidr'].rsplit('.', 1)[0]}.1/24" in bridge

    # Second run, and a dry run: nothing to do.
    for test in (False, True):
        ret = _apply(lab, sls, net, test=test)
        assert ret["result"] is True and ret["changes"] == {}, ret
        assert ret["comment"] == f"Network {name} unchanged; is running"

    # A guest on the network: libvirt's dnsmasq leases it an address from the range.
    lab.run("salt", HOST, "virt.init", vm, "1", "128", "salt://centos.img",
            f"interfaces=[{{name: eth0, type: network, source: {name}}}]", timeout=300)
    (mac,) = _call(lab, "virt.get_nics", vm).keys()
    console = lab.wait_serial(HOST, vm, r"SALTVIRT-DHCP eth0 (\S+)", timeout=120).group(1)
    lease = _lease(lab, name, mac)
    assert lease["ipaddr"] == console and lease["type"] == "ipv4" and lease["prefix"] == 24
    third = net["cidr"].split(".")[2]
    assert lease["ipaddr"].startswith(f"10.232.{third}.") and 100 <= int(lease["ipaddr"].rsplit(".", 1)[1]) <= 150
    assert lease["iface"] == net["bridge"]

    # A change to the running network: predicted, made to the definition (the running network
    # keeps its settings until restarted, and the comment says so), then nothing more to do.
    bigger = dict(net, mtu=9000)
    ret = _apply(lab, sls, bigger, test=True)
    assert ret["result"] is None and ret["changes"] == {name: "Network updated"}, ret
    assert "would be updated (mtu)" in ret["comment"]
    assert "<mtu" not in _call(lab, "virt.network_get_xml", name, "inactive=True")
    ret = _apply(lab, sls, bigger)
    assert ret["result"] is True and ret["changes"] == {name: "Network updated"}, ret
    assert "until it is stopped and started again" in ret["comment"]
    assert "<mtu size='9000'/>" in _call(lab, "virt.network_get_xml", name, "inactive=True")
    ret = _apply(lab, sls, bigger)
    assert ret["result"] is True and ret["changes"] == {}, ret


def test_bad_network_input_is_refused_and_leaves_nothing(lab, sls, net):
    bad = dict(net, name=f"{net['name']}-bad")
    # A bridge name taken by the lab's own bridge: libvirt refuses to start the network, and
    # the state does not leave it defined.
    ret = _apply(lab, sls, dict(bad, bridge="br0"))
    assert ret["result"] is False and ret["changes"] == {}, ret
    assert "br0" in ret["comment"]
    assert bad["name"] not in _call(lab, "virt.list_networks")
    # A range outside the network: refused before libvirt is asked, by name.
    ret = _apply(lab, sls, dict(bad, start="10.1.2.3"))
    assert ret["result"] is False and "is outside" in ret["comment"] and "10.1.2.3" in ret["comment"]
    proc = lab.run("salt", HOST, "virt.network_define", bad["name"], net["bridge"], "nat", "ipv4_confg={cidr: "
                   f"{net['cidr']}}}", check=False)
    assert proc.returncode != 0 and "ipv4_confg (did you mean ipv4_config?)" in proc.stdout + proc.stderr
    # The legitimate path: the same network with good input is defined.
    ret = _apply(lab, sls, bad)
    assert ret["result"] is True and ret["changes"], ret


# The classic Salt 3001-3007 documentation's examples of both network states, adapted only in
# names, bridge and subnet (unique per run: the lab's hypervisors share a network namespace).
CLASSIC_SLS = """\
{%- set p = salt['pillar.get']('classic') %}
{{ p.bare }}:
  virt.{{ p.fun }}

{{ p.ovs }}:
  virt.{{ p.fun }}:
    - bridge: {{ p.ovs_bridge }}
    - forward: bridge
    - vport: openvswitch
    - tag: 180
    - autostart: True

{{ p.natted }}:
  virt.{{ p.fun }}:
    - bridge: {{ p.nat_bridge }}
    - forward: nat
    - ipv4_config:
        cidr: {{ p.prefix }}.0/24
        dhcp_ranges:
          - start: {{ p.prefix }}.10
            end: {{ p.prefix }}.25
          - start: {{ p.prefix }}.100
            end: {{ p.prefix }}.150
    - autostart: True
"""


def _bare(lab, name, test=False):
    """``virt.network_running`` with only ``name`` (the classic documentation's bare form)."""
    args = [HOST, "state.single", "virt.network_running", f"name={name}", "--out=json", "--static"]
    out = json.loads(lab.run("salt", *args, *(["test=True"] if test else []), check=False, timeout=300).stdout)[HOST]
    assert isinstance(out, dict), out
    (ret,) = out.values()
    return ret


def test_a_bare_network_running_keeps_an_existing_networks_settings(lab, sls, net):
    """Only ``name``: an existing NAT network is left as it is (not reset to an isolated
    network); a stopped one is started, its settings intact."""
    assert _apply(lab, sls, net)["result"] is True
    name = net["name"]
    xml = _call(lab, "virt.network_get_xml", name, "inactive=True")
    assert "<forward mode='nat'" in xml
    for test in (True, False):
        ret = _bare(lab, name, test=test)
        assert (ret["result"], ret["changes"]) == (True, {}), ret
        assert "settings not given, left as they are" in ret["comment"], ret
    assert _call(lab, "virt.network_get_xml", name, "inactive=True") == xml
    assert _call(lab, "virt.network_stop", name) is True
    predicted = _bare(lab, name, test=True)
    assert (predicted["result"], predicted["changes"]) == (None, {name: "Network started"}), predicted
    ret = _bare(lab, name)
    assert (ret["result"], ret["changes"]) == (True, {name: "Network started"}), ret
    info = _call(lab, "virt.network_info", name)[name]
    assert info["active"] is True and info["bridge"] == net["bridge"], info
    assert _call(lab, "virt.network_get_xml", name, "inactive=True") == xml
    assert _bare(lab, name)["changes"] == {}


@pytest.fixture
def classic(lab):
    path = _write_sls("saltvirt_net_classic", CLASSIC_SLS)
    tag = uuid.uuid4().hex[:4]
    pillar = {"bare": f"itbare-{tag}", "ovs": f"itovs-{tag}", "ovs_bridge": f"svo{tag}",
              "natted": f"itnat-{tag}", "nat_bridge": f"svn{tag}", "prefix": f"10.232.{int(tag, 16) % 250 + 1}"}
    yield "tests.saltvirt_net_classic", pillar
    os.unlink(path)
    lab.calls(HOST, [(f, n) for n in (pillar["bare"], pillar["ovs"], pillar["natted"])
                     for f in ("virt.network_stop", "virt.network_undefine")])
    left = _call(lab, "virt.list_networks")
    assert not {pillar["bare"], pillar["ovs"], pillar["natted"]} & set(left), left


@pytest.mark.parametrize("fun", ["network_defined", "network_running"])
def test_classic_documentation_examples_apply_twice(lab, classic, fun):
    sls, pillar = classic
    pillar = dict(pillar, fun=fun)
    names = (pillar["bare"], pillar["ovs"], pillar["natted"])
    change = "Network defined, marked for autostart" + (" and started" if fun == "network_running" else "")

    predicted = _apply_all(lab, sls, {"classic": pillar}, test=True)
    assert {n: (r["result"], r["changes"]) for n, r in predicted.items()} == {
        n: (None, {n: change}) for n in names}
    assert not set(names) & set(_call(lab, "virt.list_networks"))

    first = _apply_all(lab, sls, {"classic": pillar})
    assert {n: (r["result"], r["changes"]) for n, r in first.items()} == {n: (True, {n: change}) for n in names}
    info = _call(lab, "virt.network_info")
    for name in names:
        assert info[name]["autostart"] is True and info[name]["active"] is (fun == "network_running")
    assert info[pillar["ovs"]]["bridge"] == pillar["ovs_bridge"]
    assert info[pillar["bare"]]["bridge"]  # named by libvirt (virbrN)

    for test in (False, True):
        again = _apply_all(lab, sls, {"classic": pillar}, test=test)
        assert {n: (r["result"], r["changes"]) for n, r in again.items()} == {n: (True, {}) for n in names}, again
