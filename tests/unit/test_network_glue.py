"""The network functions of the execution module and the network states as glue, over the real
library and one libvirt test-driver connection (in-process; no daemon): classic arguments and
returns, unknown arguments refused by name, library errors as Salt's, the states' changes,
test=True predictions and idempotence."""

import contextlib
import importlib.util
import os

import libvirt
import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# libvirt's test driver on an empty host: each connection starts empty (test:///default is
# shared by every open connection in the process).
PRIVATE_HOST = "test://" + os.path.join(REPO, "tests", "data", "xml", "testnode-empty.xml")


def _load(kind, file="virt.py"):
    spec = importlib.util.spec_from_file_location(f"saltvirt_test_network_{kind}",
                                                  os.path.join(REPO, f"_{kind}", file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


virt = _load("modules", "virt_network.py")

NATTED = {"bridge": "natted", "forward": "nat", "ipv4_config": {
    "cidr": "192.168.42.0/24", "dhcp_ranges": [{"start": "192.168.42.10", "end": "192.168.42.25"}]}}


@pytest.fixture
def conn(monkeypatch):
    """One test-driver connection shared by every call (a new one would start empty)."""
    shared = libvirt.open(PRIVATE_HOST)
    opened = []

    @contextlib.contextmanager
    def connection(kwargs):
        opened.append(dict(kwargs))
        yield shared

    monkeypatch.setattr(virt, "_connection", connection)
    shared.opened = opened
    yield shared
    shared.close()


@pytest.fixture
def states(conn):
    module = _load("states")
    module.__opts__ = {"test": False}
    module.__salt__ = {f"virt.{name}": getattr(virt, name) for name in (
        "network_info", "network_define", "network_update", "network_start", "network_set_autostart")}
    return module


def test_module_functions_keep_the_classic_shapes(conn):
    assert virt.network_define("natted", "natted", "nat", ipv4_config=NATTED["ipv4_config"], start=False,
                               connection=PRIVATE_HOST, __pub_jid="1") is True
    assert conn.opened[-1] == {"connection": PRIVATE_HOST}
    assert "natted" in virt.list_networks()
    info = virt.network_info("natted")
    assert set(info["natted"]) == {"uuid", "bridge", "autostart", "active", "persistent", "leases"}
    assert info["natted"]["autostart"] is True and info["natted"]["active"] is False
    assert virt.network_info("nosuch") == {}
    assert virt.network_update("natted", "natted", "nat", ipv4_config=NATTED["ipv4_config"]) is False
    assert virt.network_update("natted", "natted", "nat", ipv4_config=NATTED["ipv4_config"], mtu=9000,
                               test=True) is True
    assert virt.network_update("natted", "natted", "nat", ipv4_config=NATTED["ipv4_config"], mtu=9000,
                               details=True) == {"changed": True, "changes": {"mtu": {"old": None, "new": 9000}},
                                                 "restart_needed": False}
    assert "<mtu size='9000'/>" in virt.network_get_xml("natted")
    assert virt.network_start("natted") is True and virt.network_info("natted")["natted"]["active"] is True
    assert virt.network_set_autostart("natted", "off") is True
    assert virt.network_info("natted")["natted"]["autostart"] is False
    assert virt.network_set_autostart("natted", True) is True
    assert virt.network_stop("natted") is True and virt.network_undefine("natted") is True
    assert virt.list_networks() == []


def test_module_errors_are_salts(conn):
    with pytest.raises(SaltInvocationError, match="unknown argument.*briddge.*did you mean bridge"):
        virt.network_define("n1", "br1", "nat", briddge="x")
    with pytest.raises(SaltInvocationError, match="forward='natt' is not a libvirt forward mode"):
        virt.network_define("n1", "br1", "natt")
    with pytest.raises(SaltInvocationError, match="network nosuch is not defined"):
        virt.network_start("nosuch")
    with pytest.raises(SaltInvocationError, match="state='maybe' must be on or off"):
        virt.network_set_autostart("default", "maybe")
    with pytest.raises(SaltInvocationError, match="forward='nat' needs an address range"):
        virt.network_define("n1", "br1", "nat")
    virt.network_define("n1", "br1", "nat", ipv4_config={"cidr": "10.1.0.0/24"}, start=False)
    with pytest.raises(SaltInvocationError, match="network n1 is already defined"):
        virt.network_define("n1", "br1", "nat", ipv4_config={"cidr": "10.1.0.0/24"})
    virt.network_start("n1")
    with pytest.raises(CommandExecutionError, match="starting network n1: .*already running"):
        virt.network_start("n1")
    assert conn.opened  # every call went through the module's one connection helper


def test_network_running_creates_then_changes_nothing(states):
    states.__opts__["test"] = True
    ret = states.network_running("natted", **NATTED)
    assert ret["result"] is None
    assert ret["changes"] == {"natted": "Network defined, marked for autostart and started"}
    assert "would be defined" in ret["comment"]
    assert virt.network_info("natted") == {}  # test=True made nothing

    states.__opts__["test"] = False
    ret = states.network_running("natted", **NATTED)
    assert ret == {"name": "natted", "result": True,
                   "changes": {"natted": "Network defined, marked for autostart and started"},
                   "comment": "Network natted defined, marked for autostart and started"}
    info = virt.network_info("natted")["natted"]
    assert info["active"] is True and info["autostart"] is True

    ret = states.network_running("natted", **NATTED)
    assert ret["result"] is True and ret["changes"] == {}, ret
    assert ret["comment"] == "Network natted unchanged; is running"
    states.__opts__["test"] = True
    assert states.network_running("natted", **NATTED)["result"] is True  # nothing to predict


def test_network_defined_updates_autostart_and_reports_the_settings(states):
    assert states.network_defined("iso", bridge="sviso0", forward=None, autostart=False)["changes"] == {
        "iso": "Network defined"}
    assert virt.network_info("iso")["iso"]["active"] is False
    states.__opts__["test"] = True
    ret = states.network_defined("iso", bridge="sviso0", forward=None, mtu=9000, autostart=True)
    assert ret["result"] is None and ret["changes"] == {"iso": "Network updated, autostart flag changed"}
    assert "would be updated (mtu), autostart flag changed" in ret["comment"]
    assert "mtu" not in virt.network_get_xml("iso") and virt.network_info("iso")["iso"]["autostart"] is False
    states.__opts__["test"] = False
    ret = states.network_defined("iso", bridge="sviso0", forward=None, mtu=9000, autostart=True)
    assert ret["result"] is True and ret["changes"] == {"iso": "Network updated, autostart flag changed"}
    assert "<mtu size='9000'/>" in virt.network_get_xml("iso") and virt.network_info("iso")["iso"]["autostart"]
    assert states.network_defined("iso", bridge="sviso0", forward=None, mtu=9000)["changes"] == {}
    # A stopped network is started by network_running, and only that is reported.
    ret = states.network_running("iso", bridge="sviso0", forward=None, mtu=9000)
    assert ret["changes"] == {"iso": "Network started"} and ret["comment"] == "Network iso unchanged; started"


def test_states_refuse_unknown_and_bad_arguments_before_libvirt(states):
    states.__opts__["test"] = True
    ret = states.network_running("refused1", bridge="refused1", forward="nat", ipv4_confg={"cidr": "10.0.0.0/24"})
    assert ret["result"] is False and "unknown argument(s) ipv4_confg (did you mean ipv4_config?)" in ret["comment"]
    ret = states.network_running("refused1", bridge="refused1", forward="nat", ipv4_config={"cidr": "10.0.0.0/33"})
    assert ret["result"] is False and "is not an address range" in ret["comment"]
    states.__opts__["test"] = False
    ret = states.network_running("refused1", bridge="refused1", forward="nat", mtu=-1)
    assert ret["result"] is False and ret["changes"] == {}
    assert virt.network_info("refused1") == {}
    # The legitimate path right after: accepted.
    assert states.network_running("refused1", **NATTED)["result"] is True


def test_a_bare_state_keeps_an_existing_networks_settings(states):
    """Only ``name`` (and ``autostart``): the network is taken as it is; the settings' defaults
    (an isolated network) are not applied to it."""
    assert states.network_running("bare", **NATTED)["result"] is True
    xml = virt.network_get_xml("bare", inactive=True)
    assert "<forward mode='nat'" in xml
    for test in (True, False):
        states.__opts__["test"] = test
        ret = states.network_running("bare")
        assert ret == {"name": "bare", "result": True, "changes": {},
                       "comment": "Network bare settings not given, left as they are; is running"}, ret
    assert virt.network_get_xml("bare", inactive=True) == xml
    # Stopped, with autostart off: the bare state starts it and sets the flag, nothing else.
    virt.network_stop("bare")
    virt.network_set_autostart("bare", "off")
    states.__opts__["test"] = True
    ret = states.network_running("bare", autostart=True)
    assert ret["result"] is None and ret["changes"] == {"bare": "Network autostart flag changed and started"}
    assert virt.network_info("bare")["bare"]["active"] is False
    states.__opts__["test"] = False
    ret = states.network_running("bare", autostart=True)
    assert ret["result"] is True and ret["changes"] == {"bare": "Network autostart flag changed and started"}
    info = virt.network_info("bare")["bare"]
    assert info["active"] and info["autostart"] and virt.network_get_xml("bare", inactive=True) == xml
    assert states.network_defined("bare")["changes"] == {}
    # One setting given: compared as before (the others' defaults apply: an isolated network).
    virt.network_stop("bare")
    ret = states.network_defined("bare", bridge=NATTED["bridge"])
    assert ret["changes"] == {"bare": "Network updated"} and "updated (forward, ipv4_config)" in ret["comment"]
    assert "<forward" not in virt.network_get_xml("bare")
