"""virt.update's mem dict on a running guest: the balloon target and the memory cgroup limits
live (saltvirt.domain.memlive), the rest for the next boot, and the return says which is which."""

import libvirt
import pytest

from saltvirt.domain import memlive, pending, tuning
from saltvirt.domain import update as upd
from saltvirt.domain.model import Domain, Serial
from saltvirt.domain.xmlview import DomainXml
from saltvirt.errors import InvalidArgument
from saltvirt.provision import hardware
from saltvirt.provision.spec import UpdateSpec
from saltvirt.settings import from_dict
from saltvirt.storage.paths import Roots

MIB = 1024
XML = Domain(name="vm1", type="qemu", memory=512 * MIB, serials=[Serial(log="/var/log/vm1.log")]).to_xml()


def _changes(mem, live=True):
    spec = UpdateSpec.from_kwargs("virt.update", name="vm1", mem=mem)
    settings = from_dict({"virt": {"images": "/srv/salt-images"}}, opts={"id": "hv1"})
    hw = hardware.hardware(spec, settings, Roots("/srv/salt-images"), update=True)
    view = DomainXml.parse(XML)
    running = Domain.from_xml(XML) if live else None
    return upd.diff(Domain.from_xml(XML), upd.Wanted(sections=hw.sections), "/srv/salt-images/vm1",
                    live=running, config_view=view)


def test_current_and_the_limits_go_live_the_rest_waits_for_the_next_boot():
    changes = _changes({"boot": "512m", "current": "384m", "soft_limit": "256m", "hard_limit": "1g",
                        "nosharepages": True})
    assert [(c.new, c.when) for c in changes] == [
        ({"current": 384 * MIB}, "live"), ({"soft_limit": 256 * MIB}, "live"), ({"hard_limit": 1024 * MIB}, "live"),
        ({"nosharepages": True}, "next_boot")]
    assert [c.device.want for c in changes][:3] == [{"current": 384 * MIB}, {"soft_limit": 256 * MIB},
                                                    {"hard_limit": 1024 * MIB}]
    report = upd.report(changes)["mem"]
    assert report["when"] == "partly live"
    assert report["live"] == ["current", "soft_limit", "hard_limit"] and report["next_boot"] == ["nosharepages"]
    assert report["new"] == {"current": 384 * MIB, "soft_limit": 256 * MIB, "hard_limit": 1024 * MIB,
                             "nosharepages": True}


def test_what_a_running_guest_cannot_take_waits_for_the_next_boot():
    # Above the memory it started with (the boot size changes too), a limit removed (null).
    changes = _changes({"boot": "1g", "current": "768m"})
    assert [(sorted(c.new), c.when) for c in changes] == [(["boot", "current"], "next_boot")]
    assert changes[0].device.want == tuning.mem_section({"boot": "1g", "current": "768m"}, True)[1].want
    assert upd.report(changes)["mem"]["when"] == "next_boot"
    removed = _changes({"soft_limit": None})
    assert [c.when for c in removed] == []  # nothing set: nothing to remove
    # A stopped guest, or live=False: the definition only, as one change.
    stopped = _changes({"current": "384m", "soft_limit": "256m"}, live=False)
    assert [(c.new, c.when) for c in stopped] == [({"current": 384 * MIB, "soft_limit": 256 * MIB}, "next_boot")]


def test_split_keeps_a_hard_limit_and_its_swap_limit_together():
    found = {"hard_limit": (None, 1 << 20), "swap_hard_limit": (None, 2 << 20), "soft_limit": (1, None),
             "current": (4, 8 << 20)}
    assert memlive.split(found, 4 << 20) == [(["hard_limit", "swap_hard_limit"], True),
                                             (["soft_limit", "current"], False)]


class LiveDom:
    """A running domain; ``refuse``: libvirt's error for memory parameters (no memory cgroup)."""

    def __init__(self, refuse=False):
        self.xml, self.calls, self.refuse = XML, [], refuse

    def isActive(self):  # noqa: N802
        return True

    def name(self):
        return "vm1"

    def XMLDesc(self, _flags):  # noqa: N802
        return self.xml

    def setMemoryFlags(self, kib, flags):  # noqa: N802
        self.calls.append(("setMemoryFlags", kib, flags))

    def setMemoryParameters(self, params, flags):  # noqa: N802
        if self.refuse:
            raise libvirt.libvirtError("Requested operation is not valid: cgroup memory controller is not mounted")
        self.calls.append(("setMemoryParameters", params, flags))


class Conn:
    def __init__(self, dom):
        self.dom = dom

    def defineXML(self, xml):  # noqa: N802
        self.dom.xml = xml
        return self.dom


BOTH = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG


def test_apply_changes_the_running_guest_and_its_definition_together():
    dom = LiveDom()
    applied, _ = upd.apply(Conn(dom), dom, _changes({"current": "384m", "soft_limit": "256m"}))
    assert dom.calls == [("setMemoryFlags", 384 * MIB, BOTH), ("setMemoryParameters", {"soft_limit": 256 * MIB}, BOTH)]
    assert [c.when for c in applied] == ["live", "live"] and dom.xml == XML  # no rewrite of the definition
    assert upd.report(applied)["mem"] == {"old": {"current": 512 * MIB, "soft_limit": None},
                                          "new": {"current": 384 * MIB, "soft_limit": 256 * MIB}, "when": "live"}


def test_a_limit_the_running_guest_refuses_is_written_for_the_next_boot_and_pending():
    dom = LiveDom(refuse=True)
    applied, _ = upd.apply(Conn(dom), dom, _changes({"current": "384m", "soft_limit": "256m"}))
    assert dom.calls == [("setMemoryFlags", 384 * MIB, BOTH)]
    assert [(c.new, c.when) for c in applied] == [({"current": 384 * MIB}, "live"),
                                                  ({"soft_limit": 256 * MIB}, "next_boot")]
    assert DomainXml.parse(dom.xml).find("memtune/soft_limit").text == str(256 * MIB)
    report = upd.report(applied)["mem"]
    assert (report["when"], report["live"], report["next_boot"]) == ("partly live", ["current"], ["soft_limit"])
    assert pending.pending_hardware(DomainXml.parse(XML), DomainXml.parse(dom.xml)) == [
        "mem soft_limit: None -> 262144"]


def test_current_alone_keeps_the_boot_memory_and_may_not_exceed_it():
    assert [(c.new, c.when) for c in _changes({"current": "256m"})] == [({"current": 256 * MIB}, "live")]
    with pytest.raises(InvalidArgument, match="mem: current 786432 KiB exceeds the VM's boot memory 524288 KiB"):
        _changes({"current": "768m"})
    # With boot given, the new boot size holds it: both for the next boot.
    assert [c.when for c in _changes({"boot": "1g", "current": "768m"})] == ["next_boot"]


def test_without_a_memory_cgroup_the_limits_are_predicted_for_the_next_boot():
    class NoCgroup:
        def memoryParameters(self, _flags):  # noqa: N802
            raise libvirt.libvirtError("Requested operation is not valid: cgroup memory controller is not mounted")

    class Cgroup:
        def memoryParameters(self, _flags):  # noqa: N802
            return {"soft_limit": 9007199254740991}

    assert memlive.limits_settable(Cgroup()) is True and memlive.limits_settable(NoCgroup()) is False
    found = {"current": (512 * MIB, 384 * MIB), "soft_limit": (None, 256 * MIB)}
    assert memlive.split(found, 512 * MIB, limits=False) == [(["current"], True), (["soft_limit"], False)]
    assert memlive.split(found, 512 * MIB) == [(["current"], True), (["soft_limit"], True)]
