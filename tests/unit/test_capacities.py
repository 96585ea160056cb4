"""The master's copy of the hypervisors' capacity (``virt.init``'s placement without a survey):
fresh for the TTL only, kept true by the runner's own changes and the engine's events, and
discarded when it cannot be."""

import os
import stat

import pytest

from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.fleet import capacities, hosts
from tests.unit.attesting import Keys


def _answer(*vms, cpus=4, memory=8192, disk_free=10000):
    usage = [{"name": n, "cpu": c, "memory": m, "state": s} for n, c, m, s in vms]
    info = {"node_info": {"cpus": cpus, "phymemory": memory}, "disk_free": disk_free, "usage": usage}
    capacities._totals(info)
    return info


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def view(tmp_path, clock):
    return capacities.Capacities(str(tmp_path / "saltvirt" / "capacities.json"), ttl=60, clock=clock)


def test_a_survey_serves_for_the_ttl_and_not_after(view, clock):
    assert view.current() is None  # nothing seen yet
    view.saw({"hv1": _answer(("a", 1, 1024, "running")), "hv2": _answer()}, {"hv3": "hv3 did not answer"})
    answers, errors = view.current()
    assert sorted(answers) == ["hv1", "hv2"] and errors == {"hv3": "hv3 did not answer"}
    assert answers["hv1"]["freemem"] == 8192 - 1024
    clock.now += 60
    assert view.current() is not None
    clock.now += 1
    assert view.current() is None  # too old: the next placement asks the hypervisors
    clock.now -= 3600
    assert view.current() is None  # a copy from the future (the clock went back) is not trusted
    mode = os.stat(view.path).st_mode
    assert stat.S_IMODE(mode) == 0o600 and stat.S_IMODE(os.stat(os.path.dirname(view.path)).st_mode) == 0o700


def test_a_ttl_of_zero_never_uses_the_copy(tmp_path):
    view = capacities.Capacities(str(tmp_path / "c.json"), ttl=lambda: 0)
    view.saw({"hv1": _answer()}, {})
    assert view.current() is None


def test_answers_without_node_info_are_not_kept(view):
    view.saw({"hv1": "virt.capacity is not available", "hv2": {"usage": []}}, {})
    assert view.current() is None


def test_a_new_vm_takes_its_claims_on_its_host(view):
    view.saw({"hv1": _answer(), "hv2": _answer()}, {})
    view.defined("hv1", {"name": "web1", "cpu": 2, "memory": 2048, "state": "running"}, disk_mib=500)
    hv1 = view.current()[0]["hv1"]
    assert hv1["freemem"] == 8192 - 2048 and hv1["freecpu"] == 2 and hv1["disk_free"] == 9500
    assert hosts.vm_names(hv1) == ["web1"]
    # The engine's event of the same VM replaces its entry rather than adding a second one.
    view.defined("hv1", {"name": "web1", "cpu": 2, "memory": 2048, "state": "shutoff"})
    hv1 = view.current()[0]["hv1"]
    assert hosts.vm_names(hv1) == ["web1"] and hv1["freemem"] == 8192


def test_start_purge_and_migration_follow_the_vm(view):
    view.saw({"hv1": _answer(("web1", 1, 1024, "shutoff")), "hv2": _answer()}, {})
    view.state("hv1", "web1", "running")
    assert view.current()[0]["hv1"]["freemem"] == 8192 - 1024
    view.moved("web1", "hv1", "hv1")  # a migration that left it where it was
    assert hosts.vm_names(view.current()[0]["hv1"]) == ["web1"]
    view.moved("web1", "hv1", "hv2")
    answers = view.current()[0]
    assert hosts.vm_names(answers["hv1"]) == [] and answers["hv1"]["freemem"] == 8192
    assert answers["hv2"]["usage"] == [{"name": "web1", "cpu": 1, "memory": 1024, "state": "running"}]
    assert view.undefined("hv2", "web1")["name"] == "web1"
    assert view.current()[0]["hv2"]["freemem"] == 8192
    assert view.undefined("hv2", "web1") is None  # already gone: nothing changes
    assert view.current() is not None


@pytest.mark.parametrize("change", [
    lambda v: v.state("hv1", "ghost", "running"),  # a VM the copy does not know
    lambda v: v.defined("hv9", {"name": "x", "cpu": 1, "memory": 1, "state": "running"}),  # an unknown host
    lambda v: v.moved("ghost", "hv1", "hv2"),
    lambda v: v.discard(),
])
def test_what_the_copy_cannot_follow_discards_it(view, change):
    view.saw({"hv1": _answer(("web1", 1, 1024, "running")), "hv2": _answer()}, {})
    change(view)
    assert view.current() is None


def test_one_hosts_answer_refreshes_that_host_only(view):
    view.saw({"hv1": _answer(), "hv2": _answer()}, {"hv3": "down"})
    view.saw_host("hv3", _answer(("x", 1, 512, "running")))
    answers, errors = view.current()
    assert hosts.vm_names(answers["hv3"]) == ["x"] and errors == {}
    view.discard()
    view.saw_host("hv1", _answer())  # one host's answer never makes a copy of all of them
    assert view.current() is None


@pytest.mark.parametrize("value", ["soon", -1, True, None, [60]])
def test_a_bad_ttl_is_a_clear_error(value):
    with pytest.raises(InvalidArgument, match=r"virt:capacity_ttl: .* is not a number of seconds"):
        hosts.capacity_ttl({"virt": {"capacity_ttl": value}})


def test_the_ttl_setting():
    assert hosts.capacity_ttl({}) == capacities.DEFAULT_TTL
    assert hosts.capacity_ttl({"virt": {"capacity_ttl": 0}}) == 0
    assert hosts.capacity_ttl({"virt": {"capacity_ttl": "30"}}) == 30


def _fleet(tmp_path, view, keys=None):
    opts = {"virt": {"hypervisors": "hypervisor*"}, "cachedir": str(tmp_path / "cache"),
            "pki_dir": keys.pki_dir if keys else str(tmp_path / "pki")}
    return hosts.Fleet(opts, client_factory=None, check_minions=lambda *_a: [], capacities=view)


XML = "<domain type='qemu'><name>web1</name><memory unit='KiB'>1048576</memory><vcpu>2</vcpu></domain>"


def test_the_engines_events_keep_the_copy_true(tmp_path, view):
    from saltvirt.fleet import operations

    keys = Keys(tmp_path, "hypervisor1", "hypervisor2", "web1")
    fleet = _fleet(tmp_path, view, keys)
    view.saw({"hypervisor1": _answer(), "hypervisor2": _answer()}, {})
    operations.remember(fleet, "hypervisor1", "web1",
                        keys.definition("hypervisor1", "web1", {"xml": XML, "state": "running", "seen": 10.0}))
    hv1 = view.current()[0]["hypervisor1"]
    assert hv1["usage"] == [{"name": "web1", "cpu": 2, "memory": 1024, "state": "running"}]
    assert hv1["freemem"] == 8192 - 1024
    # An older event handled late (the reactor runs them in parallel) changes nothing.
    operations.remember(fleet, "hypervisor1", "web1",
                        keys.definition("hypervisor1", "web1", {"xml": XML, "state": "shutoff", "seen": 5.0}))
    assert view.current()[0]["hypervisor1"]["usage"][0]["state"] == "running"
    # An event in hypervisor1's name that it did not sign (another minion sent it; or signed by
    # hypervisor2, or for another VM, or changed after signing) changes nothing.
    forged = [
        {"seen": 20.0},
        keys.definition("hypervisor1", "web1", {"seen": 20.0}, signer="hypervisor2"),
        keys.definition("hypervisor1", "web1", {"seen": 20.0}, signer="web1"),
        dict(keys.definition("hypervisor1", "web1", {"seen": 20.0}), seen=21.0),
        dict(keys.definition("hypervisor1", "other", {"seen": 20.0})),
        "not a record",
    ]
    for definition in forged:
        with pytest.raises(VirtError, match="hypervisor1's definition of web1"):
            operations.remember(fleet, "hypervisor1", "web1", definition)
    assert view.current()[0]["hypervisor1"]["usage"][0]["state"] == "running"
    operations.remember(fleet, "hypervisor1", "web1", keys.definition("hypervisor1", "web1", {"seen": 11.0}))
    assert view.current()[0]["hypervisor1"]["usage"] == []  # undefined there
    # An event from a minion that is not a hypervisor is refused before it reaches the copy.
    with pytest.raises(InvalidArgument):
        operations.remember(fleet, "web1", "web2",
                            keys.definition("web1", "web2", {"xml": XML, "state": "running", "seen": 12.0}))
    assert view.current()[0]["hypervisor1"]["usage"] == []


def test_an_event_whose_definition_cannot_be_read_discards_the_copy(tmp_path, view):
    from saltvirt.fleet import operations

    keys = Keys(tmp_path, "hypervisor1")
    fleet = _fleet(tmp_path, view, keys)
    view.saw({"hypervisor1": _answer()}, {})
    operations.remember(fleet, "hypervisor1", "web1",
                        keys.definition("hypervisor1", "web1", {"xml": "<domain", "state": "running", "seen": 1.0}))
    assert view.current() is None
