"""saltvirt.domain.update: the diff between a domain and what a state asks for, and its application."""

import os

import libvirt
import pytest

from saltvirt.domain import pending
from saltvirt.domain import update as upd
from saltvirt.domain.model import Disk, Domain, Graphics, Interface
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.provision import profiles

VM_DIR = "/srv/salt-images/web1"
MAC0 = "52:54:00:00:00:01"
MAC1 = "52:54:00:00:00:02"


def make_domain(**over):
    """What virt.init makes: qcow2 system disk, cidata ISO, one NIC on br0, 256 MiB, 1 vCPU."""
    dom = Domain(
        name="web1", vcpus=1, memory=256 * 1024, type="qemu",
        disks=[
            Disk(target="vda", source=f"{VM_DIR}/system.qcow2", format="qcow2"),
            Disk(target="vdb", source=f"{VM_DIR}/cidata.iso", format="raw", readonly=True),
        ],
        interfaces=[Interface(type="bridge", source="br0", mac=MAC0)],
    )
    for key, value in over.items():
        setattr(dom, key, value)
    return dom


def default_disks(extra=None):
    return profiles.merge_disks(profiles.disk_profile("default"), extra)


def default_nics(extra=None):
    return profiles.merge_nics(profiles.nic_profile("default"), extra)


def wanted(**kw):
    base = dict(vcpus=1, memory_mib=256, disks=default_disks(), nics=default_nics())
    base.update(kw)
    return upd.Wanted(**base)


def diff(config, want, live=None, autostart=None):
    return upd.diff(config, want, VM_DIR, live=live, autostart=autostart)


def by_key(changes):
    return {c.key: c for c in changes}


# --------------------------------------------------------------------------- nothing to do


def test_what_init_made_is_up_to_date():
    dom = make_domain()
    assert diff(dom, wanted()) == []
    assert diff(dom, wanted(), live=make_domain()) == []


def test_none_leaves_everything_unmanaged():
    dom = make_domain()
    assert diff(dom, upd.Wanted()) == []


def test_system_disk_matches_whatever_its_file_is_called():
    dom = make_domain(disks=[Disk(target="vda", source="/var/lib/libvirt/images/other.img")])
    assert diff(dom, wanted()) == []


def test_raw_system_disk_matches_by_name():
    dom = make_domain(disks=[Disk(target="vda", source=f"{VM_DIR}/system.img", format="raw")])
    assert diff(dom, wanted()) == []


# --------------------------------------------------------------------------- cpu and memory


def test_cpu_is_next_boot_running_or_not():
    for live in (None, make_domain()):
        (change,) = diff(make_domain(), wanted(vcpus=2), live=live)
        assert (change.kind, change.old, change.new, change.when) == ("cpu", 1, 2, upd.NEXT_BOOT)


def test_cpu_must_be_positive():
    with pytest.raises(InvalidArgument):
        diff(make_domain(), wanted(vcpus=0))


def test_memory_shrink_of_running_vm_is_live():
    (change,) = diff(make_domain(), wanted(memory_mib=192), live=make_domain())
    assert (change.kind, change.old, change.new, change.when) == ("mem", 256, 192, upd.LIVE)


def test_memory_up_to_the_live_maximum_is_live():
    config = make_domain(current_memory=128 * 1024)
    (change,) = diff(config, wanted(memory_mib=256), live=make_domain())
    assert change.when == upd.LIVE and change.old == 128


def test_memory_above_the_maximum_is_next_boot():
    (change,) = diff(make_domain(), wanted(memory_mib=512), live=make_domain())
    assert (change.old, change.new, change.when) == (256, 512, upd.NEXT_BOOT)


def test_memory_of_a_stopped_vm_is_next_boot():
    (change,) = diff(make_domain(), wanted(memory_mib=192))
    assert change.when == upd.NEXT_BOOT


def test_live_false_keeps_to_the_definition():
    want = wanted(memory_mib=192, live=False, disks=default_disks([{"name": "data", "size": 64}]))
    changes = diff(make_domain(), want, live=make_domain())
    assert {c.when for c in changes} == {upd.NEXT_BOOT}


def test_memory_compares_the_current_amount_and_needs_room_under_the_maximum():
    # A live shrink left maximum 256, current 192: asking 192 again is no change.
    config = make_domain(current_memory=192 * 1024)
    assert diff(config, wanted(memory_mib=192), live=make_domain()) == []
    # A maximum below the current amount (hand-edited XML) is a change.
    odd = make_domain(memory=128 * 1024, current_memory=128 * 1024)
    assert len(diff(odd, wanted(memory_mib=128))) == 0
    (change,) = diff(odd, wanted(memory_mib=256))
    assert change.new == 256


# --------------------------------------------------------------------------- disks


def test_new_disk_gets_the_next_free_target_after_the_seed_iso():
    want = wanted(disks=default_disks([{"name": "data", "size": 4096}]))
    (change,) = diff(make_domain(), want, live=make_domain())
    assert (change.kind, change.key, change.action, change.when) == ("disk", "data", "add", upd.LIVE)
    assert change.device.target == "vdc"
    assert change.device.source == f"{VM_DIR}/data.qcow2" and change.device.format == "qcow2"
    assert change.new == {"file": f"{VM_DIR}/data.qcow2", "target": "vdc", "format": "qcow2",
                          "bus": "virtio", "size_mib": 4096}
    assert change.old is None


def test_existing_extra_disk_is_matched_by_name_and_pool():
    dom = make_domain()
    # in a pool directory, which VMs share, the file carries the VM's name (<vm>-<disk>)
    vm = os.path.basename(VM_DIR)
    dom.disks.append(Disk(target="vdc", source=f"/data/pool/{vm}-data.img", format="raw"))
    assert diff(dom, wanted(disks=default_disks([{"name": "data", "size": 64, "pool": "/data/pool"}]))) == []
    # Same name in another directory is another disk.
    (change,) = diff(dom, wanted(disks=default_disks([{"name": "data", "size": 64}])))
    assert change.device.target == "vdd"


def test_sata_and_cdrom_disks_cannot_be_hot_plugged():
    want = wanted(disks=default_disks([{"name": "slow", "size": 64, "bus": "sata"},
                                       {"name": "cd", "source_file": "/isos/x.iso", "device": "cdrom",
                                        "format": "raw"}]))
    changes = by_key(diff(make_domain(), want, live=make_domain()))
    assert changes["slow"].when == upd.NEXT_BOOT and changes["slow"].device.target == "sda"
    assert changes["cd"].when == upd.NEXT_BOOT and changes["cd"].device.target == "sdb"
    assert changes["cd"].device.source == "/isos/x.iso" and changes["cd"].device.readonly


def test_source_file_disk_matches_by_path():
    dom = make_domain()
    dom.disks.append(Disk(target="vdc", source="/srv/shared/db.qcow2", format="qcow2"))
    want = wanted(disks=default_disks([{"name": "db", "source_file": "/srv/shared/db.qcow2"}]))
    assert diff(dom, want) == []


def test_disk_from_an_image_of_unknown_format_is_completed_later():
    want = wanted(disks=default_disks([{"name": "tools", "image": "/img/tools.img"}]))
    (change,) = diff(make_domain(), want)
    assert change.spec["format"] is None and change.new["format"] == "(from the image)"
    upd.complete_disk(change, VM_DIR, "raw")
    assert change.device.source == f"{VM_DIR}/tools.img" and change.device.format == "raw"
    assert change.new["file"] == f"{VM_DIR}/tools.img"
    with pytest.raises(InvalidArgument):
        upd.complete_disk(diff(make_domain(), want)[0], VM_DIR, "vmdk")


def test_overlay_disk_is_qcow2():
    want = wanted(disks=default_disks([{"name": "tools", "image": "/img/tools.img", "overlay_image": True}]))
    (change,) = diff(make_domain(), want)
    assert change.device.format == "qcow2" and change.device.source == f"{VM_DIR}/tools.qcow2"


def test_new_disk_needs_an_image_or_a_size():
    with pytest.raises(InvalidArgument, match="neither an image nor a size"):
        diff(make_domain(), wanted(disks=default_disks([{"name": "empty"}])))


def test_disks_not_asked_for_are_never_removed():
    dom = make_domain()
    dom.disks.append(Disk(target="vdc", source="/elsewhere/keep.qcow2", format="qcow2"))
    assert diff(dom, wanted()) == []


def test_vm_without_disks_gets_its_system_disk():
    (change,) = diff(make_domain(disks=[]), wanted())
    assert change.key == "system" and change.device.target == "vda"


# --------------------------------------------------------------------------- NICs


def test_nic_added_live():
    want = wanted(nics=default_nics([{"name": "eth1", "network": "default"}]))
    (change,) = diff(make_domain(), want, live=make_domain())
    assert (change.kind, change.key, change.action, change.when) == ("nic", "eth1", "add", upd.LIVE)
    assert change.device.type == "network" and change.device.source == "default"
    assert change.new["mac"] == change.device.mac


def test_nic_moved_to_another_bridge_is_live_but_a_new_model_is_not():
    want = wanted(nics=default_nics([{"name": "eth0", "bridge": "br1"}]))
    (change,) = diff(make_domain(), want, live=make_domain())
    assert (change.action, change.when) == ("update", upd.LIVE)
    assert change.device.mac == MAC0 and change.device.source == "br1"
    assert change.old["source"] == "br0" and change.new["source"] == "br1"
    want = wanted(nics=default_nics([{"name": "eth0", "bridge": "br0", "model": "e1000"}]))
    (change,) = diff(make_domain(), want, live=make_domain())
    assert (change.action, change.when) == ("update", upd.NEXT_BOOT)


def test_nics_match_by_mac_first_then_in_order():
    dom = make_domain(interfaces=[Interface(type="bridge", source="br0", mac=MAC0),
                                  Interface(type="network", source="default", mac=MAC1)])
    # eth0 pinned to the second interface: eth1 (no MAC) takes the first one.
    want = wanted(nics=[{"name": "eth0", "type": "network", "source": "default", "model": "virtio", "mac": MAC1},
                        {"name": "eth1", "type": "bridge", "source": "br0", "model": "virtio", "mac": None}])
    assert diff(dom, want) == []
    # A MAC nobody has is a new interface.
    want = wanted(nics=default_nics([{"name": "eth1", "bridge": "br0", "mac": "52:54:00:00:00:09"}]))
    (change,) = diff(dom, want)
    assert change.action == "add" and change.device.mac == "52:54:00:00:00:09"


def test_extra_interfaces_are_never_removed():
    dom = make_domain(interfaces=[Interface(type="bridge", source="br0", mac=MAC0),
                                  Interface(type="bridge", source="br0", mac=MAC1)])
    assert diff(dom, wanted()) == []


# --------------------------------------------------------------------------- graphics, autostart


def vnc(**kw):
    return Graphics(**dict({"type": "vnc", "listen": "127.0.0.1", "port": -1}, **kw))


def test_graphics_none_is_unmanaged_and_empty_removes():
    dom = make_domain(graphics=[vnc()])
    assert diff(dom, wanted(graphics=None)) == []
    (change,) = diff(dom, wanted(graphics=[]), live=make_domain(graphics=[vnc()]))
    assert change.kind == "graphics" and change.when == upd.NEXT_BOOT and change.new == []


def test_graphics_added_on_next_boot():
    (change,) = diff(make_domain(), wanted(graphics=[vnc()]), live=make_domain())
    assert change.when == upd.NEXT_BOOT
    assert change.new == [{"type": "vnc", "listen": "127.0.0.1", "port": "auto", "password_set": False}]


def test_graphics_same_console_is_up_to_date_and_listen_matters():
    dom = make_domain(graphics=[vnc()])
    assert diff(dom, wanted(graphics=[vnc()])) == []
    (change,) = diff(dom, wanted(graphics=[vnc(listen="10.0.0.5")]))
    assert change.old[0]["listen"] == "127.0.0.1" and change.new[0]["listen"] == "10.0.0.5"
    (change,) = diff(dom, wanted(graphics=[vnc(port=5910)]))
    assert change.new[0]["port"] == 5910


def test_graphics_password_only_is_live():
    running = make_domain(graphics=[vnc(password="old")])
    (change,) = diff(make_domain(graphics=[vnc(password="old")]), wanted(graphics=[vnc(password="s3cr3tX")]),
                     live=running)
    assert change.when == upd.LIVE
    assert change.new[0]["password_set"] and "s3cr3tX" not in repr(change.summary())


def test_any_password_accepts_an_existing_one():
    want = wanted(graphics=[vnc(password=upd.ANY_PASSWORD)])
    assert diff(make_domain(graphics=[vnc(password="secret")]), want) == []
    (change,) = diff(make_domain(graphics=[vnc()]), want, live=make_domain(graphics=[vnc()]))
    assert change.when == upd.LIVE and change.new[0]["password_set"]


def test_autostart_only_when_asked():
    assert diff(make_domain(), wanted(), autostart=False) == []
    (change,) = diff(make_domain(), wanted(autostart=True), autostart=False)
    assert (change.key, change.old, change.new) == ("autostart", False, True)
    assert diff(make_domain(), wanted(autostart=True), autostart=True) == []


# --------------------------------------------------------------------------- reporting


def test_report_groups_disks_and_nics_and_describe_says_when():
    want = wanted(vcpus=2, memory_mib=192, disks=default_disks([{"name": "data", "size": 64}]),
                  nics=default_nics([{"name": "eth1", "bridge": "br0"}]))
    changes = diff(make_domain(), want, live=make_domain())
    out = upd.report(changes)
    assert set(out) == {"cpu", "mem", "disks", "nics"}
    assert out["mem"] == {"old": 256, "new": 192, "when": "live"}
    assert out["cpu"]["when"] == "next_boot"
    assert out["disks"]["data"]["action"] == "add" and out["nics"]["eth1"]["when"] == "live"
    lines = upd.describe(changes)
    assert "cpu 1 -> 2 (on next boot)" in lines
    assert "mem 256 -> 192 MiB (live)" in lines
    assert any(line.startswith("disk data added as vdc") and line.endswith("(live)") for line in lines)


# --------------------------------------------------------------------------- pending


def test_pending_sees_what_the_guest_does_not_run_with():
    live = make_domain(graphics=[vnc(port=5900, autoport=True)])
    assert pending.pending(live, make_domain(graphics=[vnc()])) == []
    # A balloon change (current memory) is not pending.
    assert pending.pending(live, make_domain(current_memory=128 * 1024, graphics=[vnc()])) == []
    config = make_domain(vcpus=2, memory=512 * 1024)
    config.disks.append(Disk(target="vdc", source=f"{VM_DIR}/data.qcow2", format="qcow2"))
    config.interfaces[0].model = "e1000"
    found = pending.pending(live, config)
    assert found[:2] == ["cpu 1 -> 2", "max memory 256 -> 512 MiB"]
    assert any(f.startswith("disk vdc:") for f in found)
    assert any(f.startswith(f"nic {MAC0}") for f in found)
    assert "graphics" in found


# --------------------------------------------------------------------------- apply (fake libvirt)


class FakeDom:
    def __init__(self, active=True, refuse_live=False):
        self.calls = []
        self.active = active
        self.refuse_live = refuse_live

    def isActive(self):
        return self.active

    def name(self):
        return "web1"

    def setVcpusFlags(self, value, flags):
        self.calls.append(("vcpus", value, flags))

    def setMemoryFlags(self, kib, flags):
        self.calls.append(("mem", kib, flags))

    def attachDeviceFlags(self, xml, flags):
        if self.refuse_live and flags & libvirt.VIR_DOMAIN_AFFECT_LIVE:
            raise libvirt.libvirtError("no hot-plug here")
        self.calls.append(("attach", xml, flags))

    def updateDeviceFlags(self, xml, flags):
        self.calls.append(("update", xml, flags))

    def setAutostart(self, flag):
        self.calls.append(("autostart", flag))


CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
MAXIMUM_VCPU = libvirt.VIR_DOMAIN_VCPU_MAXIMUM
MAXIMUM_MEM = libvirt.VIR_DOMAIN_MEM_MAXIMUM


def test_apply_cpu_raises_the_maximum_first_and_lowers_it_last():
    dom = FakeDom()
    upd.apply(None, dom, diff(make_domain(), wanted(vcpus=2)))
    assert dom.calls == [("vcpus", 2, CONFIG | MAXIMUM_VCPU), ("vcpus", 2, CONFIG)]
    dom = FakeDom()
    upd.apply(None, dom, diff(make_domain(vcpus=4), wanted(vcpus=2)))
    assert dom.calls == [("vcpus", 2, CONFIG), ("vcpus", 2, CONFIG | MAXIMUM_VCPU)]


def test_apply_memory_live_and_next_boot():
    dom = FakeDom()
    upd.apply(None, dom, diff(make_domain(), wanted(memory_mib=192), live=make_domain()))
    assert dom.calls == [("mem", 192 * 1024, CONFIG | LIVE)]
    dom = FakeDom()
    upd.apply(None, dom, diff(make_domain(), wanted(memory_mib=512), live=make_domain()))
    assert dom.calls == [("mem", 512 * 1024, CONFIG | MAXIMUM_MEM), ("mem", 512 * 1024, CONFIG)]
    dom = FakeDom(active=False)
    upd.apply(None, dom, diff(make_domain(), wanted(memory_mib=128)))
    assert dom.calls == [("mem", 128 * 1024, CONFIG), ("mem", 128 * 1024, CONFIG | MAXIMUM_MEM)]


def test_apply_falls_back_to_the_definition_when_the_guest_refuses():
    dom = FakeDom(refuse_live=True)
    built, undone = [], []

    def build(change):
        built.append(change.device.source)
        return lambda: undone.append(change.device.source)

    changes = diff(make_domain(), wanted(disks=default_disks([{"name": "data", "size": 64}])), live=make_domain())
    applied, generated = upd.apply(None, dom, changes, build_disk=build)
    assert generated is None and built == [f"{VM_DIR}/data.qcow2"] and undone == []
    assert applied[0].when == upd.NEXT_BOOT
    ((kind, xml, flags),) = dom.calls
    assert kind == "attach" and flags == CONFIG and "<target dev=\"vdc\" bus=\"virtio\"" in xml


def test_apply_removes_a_new_disk_whose_attachment_fails():
    class Broken(FakeDom):
        def attachDeviceFlags(self, xml, flags):
            raise libvirt.libvirtError("refused")

    undone = []
    changes = diff(make_domain(), wanted(vcpus=2, disks=default_disks([{"name": "data", "size": 64}])))
    with pytest.raises(VirtError, match=r"data failed: .*applied before it: cpu \(next_boot\)"):
        upd.apply(None, Broken(active=False), changes, build_disk=lambda c: lambda: undone.append(1))
    assert undone == [1]


def test_apply_generates_a_password_once_for_any_password():
    dom = FakeDom()
    changes = diff(make_domain(graphics=[vnc()]), wanted(graphics=[vnc(password=upd.ANY_PASSWORD)]),
                   live=make_domain(graphics=[vnc()]))
    applied, generated = upd.apply(None, dom, changes)
    assert generated and len(generated) == 8
    ((kind, xml, flags),) = dom.calls
    assert kind == "update" and flags == CONFIG | LIVE and f"passwd=\"{generated}\"" in xml


def test_describe_graphics():
    (change,) = diff(make_domain(graphics=[vnc(password="a")]), wanted(graphics=[vnc(password="b")]))
    assert upd.describe([change]) == ["graphics password changed (on next boot)"]
    (change,) = diff(make_domain(), wanted(graphics=[vnc()]))
    assert upd.describe([change]) == ["graphics none -> vnc on 127.0.0.1:auto (on next boot)"]
