"""saltvirt.operations: cordon records and the drain's plan and report (pure logic).

The drain itself (real migrations of guests with a heartbeat) is proven on the lab by
tests/integration/test_operations.py.
"""

import json
import os
import stat

import pytest

from saltvirt.errors import InvalidArgument
from saltvirt.operations import cordons, definitions, drain, evacuate
from saltvirt.placement import Policy


def vm(name, cpu=1, memory=256, state="running"):
    return {"name": name, "cpu": cpu, "memory": memory, "state": state}


def host(hid, vms=(), cpus=2, memory_total=4096, **extra):
    return dict({"id": hid, "cpus": cpus, "memory_total": memory_total, "disk_free": 10_000,
                 "vms": list(vms), "bridges": ["br0"], "up": True}, **extra)


POLICY = Policy(reserve_memory_mib=0)


# ------------------------------------------------------------------------------ cordons


def test_cordon_records_survive_and_are_private(tmp_path):
    store = cordons.Cordons(tmp_path / "cordons", clock=lambda: 1764547244.0)
    assert store.get("hv1") is None and store.all() == {}
    store.cordon("hv1", "disk replacement")
    path = tmp_path / "cordons" / "hv1.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "cordons").st_mode) == 0o700
    # another process (a later salt-run) reads the same record
    again = cordons.Cordons(tmp_path / "cordons")
    assert again.get("hv1")["reason"] == "disk replacement"
    assert cordons.describe(again.get("hv1")) == "disk replacement (since 2025-12-01 00:00:44 UTC)"
    assert set(again.all()) == {"hv1"}
    assert again.uncordon("hv1")["reason"] == "disk replacement"
    assert again.uncordon("hv1") is None and not path.exists()


def test_drain_progress_is_kept_across_runs(tmp_path):
    store = cordons.Cordons(tmp_path, clock=lambda: 1.0)
    store.begin_drain("hv1", ["a", "b"])
    store.note("hv1", "stayed", "b", "no room")
    store.begin_drain("hv1", ["b"])  # the second run sees only b left
    store.note("hv1", "moved", "b", "hv3")
    record = store.get("hv1")
    assert record["since"] == 1.0 and record["reason"] == "drain"
    assert record["drain"] == {"vms": ["a", "b"], "moved": {"b": "hv3"}, "stayed": {}}


def test_cordon_refuses_odd_host_names_and_keeps_a_damaged_record_cordoned(tmp_path):
    store = cordons.Cordons(tmp_path)
    for bad in ("../etc/passwd", "", ".hidden", "a/b", None):
        with pytest.raises(InvalidArgument, match="not a hypervisor minion id"):
            store.cordon(bad)
    assert os.listdir(tmp_path) == []  # nothing written for a refused name
    (tmp_path / "hv2.json").write_text("{not json")
    assert store.get("hv2")["reason"] == "unreadable cordon record"
    assert set(store.all()) == {"hv2"}


# ------------------------------------------------------------------------------ drain plan


def test_plan_places_each_vm_counting_the_ones_placed_before():
    records = [
        host("hv1", [vm("small", memory=256), vm("big", cpu=2, memory=3000), vm("off", state="shutoff")]),
        host("hv2", memory_total=3500),
        host("hv3", memory_total=3600, cordoned="maintenance"),
        {"id": "hv4", "up": False},
    ]
    steps = drain.plan("hv1", records, POLICY)
    assert [(s["vm"], s["action"], s["target"]) for s in steps] == [
        ("big", "migrate", "hv2"),     # largest first; hv3 is cordoned, hv4 down
        ("off", "leave", None),        # shut off, left by default
        ("small", "migrate", "hv2"),   # 500 MiB left on hv2 after big
    ]
    assert "shutoff=move" in steps[1]["reason"]
    moved = drain.plan("hv1", records, POLICY, shutoff="move")
    assert [(s["vm"], s["action"], s["target"]) for s in moved][1:] == [
        ("off", "move_offline", "hv2"), ("small", "stay", None)]  # off took the room small had


def test_plan_says_why_a_vm_stays():
    records = [host("hv1", [vm("a", memory=2000), vm("b", memory=2000)]), host("hv2", memory_total=2500)]
    steps = drain.plan("hv1", records, POLICY)
    assert [(s["vm"], s["action"], s["target"]) for s in steps] == [("a", "migrate", "hv2"), ("b", "stay", None)]
    assert "no hypervisor can take b" in steps[1]["reason"] and "hv2: needs 2000 MiB memory" in steps[1]["reason"]
    assert drain.plan("hv1", [host("hv1")], POLICY) == []  # an empty host: nothing to do
    with pytest.raises(InvalidArgument, match="hv1 did not answer"):
        drain.plan("hv1", [{"id": "hv1", "up": False}, host("hv2")], POLICY)


def test_in_flight_and_locations():
    records = [host("hv1", [vm("a"), vm("b")]), host("hv2", [vm("b", state="paused")]), host("hv3", [vm("c")])]
    assert drain.in_flight("hv1", records) == ["b"]
    assert drain.in_flight("hv3", records) == []
    where = drain.locations([host("hv1", [vm("a", state="shutoff")]), host("hv2", [vm("a")])])
    assert where == {"a": "hv2"}


@pytest.mark.parametrize("shutoff, parallel, message", [
    ("stop", 2, "shutoff must be leave or move, got 'stop'"),
    ("leave", 0, "parallel must be a whole number of migrations >= 1, got 0"),
    ("leave", "many", "parallel must be a whole number of migrations >= 1, got 'many'"),
])
def test_options_are_checked(shutoff, parallel, message):
    with pytest.raises(InvalidArgument, match=message):
        drain.check_options(shutoff, parallel)
    assert drain.check_options("move", "3") == ("move", 3)


# ------------------------------------------------------------------------------ drain report


def test_outcome_of_a_migrate_return():
    assert drain.outcome({"result": True, "host": "hv2", "duration_s": 3.1}) == \
        ("moved", "hv2", {"target": "hv2", "duration_s": 3.1})
    assert drain.outcome({"result": False, "error": "cannot migrate a: no room"}) == \
        ("stayed", None, "cannot migrate a: no room")


def test_report_of_a_run_that_finishes_an_interrupted_drain():
    steps = [{"vm": "b", "action": "migrate", "target": "hv2", "reason": None},
             {"vm": "c", "action": "stay", "target": None, "reason": "no hypervisor can take c"},
             {"vm": "d", "action": "leave", "target": None, "reason": "shut off"}]
    results = {"b": drain.outcome({"result": True, "host": "hv2", "duration_s": 2})}
    cordon = {"host": "hv1", "drain": {"vms": ["a", "b", "c", "d"]}}
    out = drain.report("hv1", steps, cordon=cordon, results=results, where={"a": "hv3", "b": "hv1"})
    assert out["moved"] == {"b": {"target": "hv2", "duration_s": 2}}
    assert out["moved_earlier"] == {"a": "hv3"}
    assert out["stayed"] == {"c": "no hypervisor can take c"} and out["left"] == {"d": "shut off"}
    assert out["result"] is False and "still run there (c)" in out["message"]
    json.dumps(out)  # a Salt return: plain data


def test_report_of_a_plan_and_of_an_empty_host():
    steps = [{"vm": "b", "action": "migrate", "target": "hv2", "reason": None}]
    out = drain.report("hv1", steps, test=True)
    assert out["plan"] == {"b": {"target": "hv2", "action": "migrate"}} and out["moved"] == {}
    assert out["cordoned"] is False and out["result"] is True
    empty = drain.report("hv1", [], cordon={"host": "hv1", "drain": {"vms": ["b"]}}, where={"b": "hv2"})
    assert empty["result"] is True and empty["message"] == "hv1 has no VM: nothing to move"
    assert empty["moved_earlier"] == {"b": "hv2"}


# ------------------------------------------------------------------------------ evacuate

XML = """<domain type='qemu'>
  <name>web1</name>
  <memory unit='KiB'>262144</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/shared/web1/system.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/srv/salt-images/web1/cidata.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <serial type='file'><source path='/var/log/libvirt/qemu/web1-serial.log' append='on'/></serial>
    <graphics type='vnc' port='-1' autoport='yes' listen='10.0.0.1'>
      <listen type='address' address='10.0.0.1'/>
    </graphics>
  </devices>
</domain>"""


def test_adapt_drops_what_the_new_host_lacks_read_only_and_keeps_the_rest():
    seen = {"/shared/web1/system.qcow2", "/shared/base.qcow2"}
    xml, dropped, missing = evacuate.adapt(XML, seen.__contains__, listen="10.0.0.2",
                                           backing=lambda path: ["/shared/base.qcow2"])
    assert missing == [] and [d["path"] for d in dropped] == ["/srv/salt-images/web1/cidata.iso"]
    assert "cidata.iso" not in xml and "/shared/web1/system.qcow2" in xml
    assert "append=\"on\"" in xml  # what the model does not know survives
    assert "10.0.0.1" not in xml and xml.count("10.0.0.2") == 2


def test_adapt_refuses_writable_disks_or_backing_files_out_of_reach():
    _xml, _dropped, missing = evacuate.adapt(XML, lambda path: False)
    assert missing == ["vda: /shared/web1/system.qcow2"]
    _xml, _dropped, missing = evacuate.adapt(XML, lambda path: path != "/srv/base/b.qcow2",
                                             backing=lambda path: ["/srv/base/b.qcow2"])
    assert missing == ["vda: backing file /srv/base/b.qcow2"]
    with pytest.raises(InvalidArgument, match="not valid domain XML"):
        evacuate.adapt("<domain", lambda path: True)


def test_evacuation_order_and_request():
    records = {"a": {"xml": XML, "state": "shutoff"}, "b": {"xml": XML.replace("262144", "524288"),
                                                              "state": "running"},
               "c": {"xml": XML, "state": "running"}}
    assert evacuate.order(records) == ["b", "c", "a"]  # running first, largest first
    assert evacuate.request_of("web1", XML) == (2, 256)


def test_evacuation_report():
    out = evacuate.report("hv1", {"a": {"action": "started", "target": "hv2"},
                                  "b": {"action": "failed", "reason": "disk"}}, fenced=True)
    assert out["result"] is False and "1 VM(s) restarted elsewhere, 1 not" in out["message"]
    assert "undefine them there" in out["message"]
    assert evacuate.report("hv1", {}, fenced=True)["result"] is True


def test_definitions_follow_the_hosts_answers(tmp_path):
    store = definitions.Definitions(tmp_path / "defs", clock=lambda: 5.0)
    saved, forgotten = store.refresh("hv1", {"a": {"xml": "<domain/>", "state": "running"},
                                             "b": {"xml": "<domain/>", "state": "shutoff"}})
    assert saved == ["a", "b"] and forgotten == []
    assert stat.S_IMODE(os.stat(tmp_path / "defs" / "hv1" / "a.json").st_mode) == 0o600
    # b moved to hv2 (hv2's refresh records it there; hv1 still had its copy for a moment)
    store.refresh("hv2", {"b": {"xml": "<domain/>", "state": "running"}}, only="b")
    assert store.locations() == {"a": ["hv1"], "b": ["hv2", "hv1"]}
    # then hv1 undefined b, and later a
    assert store.refresh("hv1", {"a": {"xml": "<domain/>", "state": "running"}}, only="b") == ([], ["b"])
    assert store.refresh("hv1", {}, only="a") == ([], ["a"])
    assert store.locations() == {"b": ["hv2"]}
    # a same-named VM defined and undefined on hv3 leaves hv2's copy alone
    store.refresh("hv3", {"b": {"xml": "<domain/>", "state": "shutoff"}}, only="b")
    store.refresh("hv3", {}, only="b")
    assert list(store.on_host("hv2")) == ["b"] and store.on_host("hv3") == {}
    with pytest.raises(InvalidArgument, match="not a VM name"):
        store.save("hv1", "../x", "<domain/>")
    with pytest.raises(InvalidArgument, match="not a hypervisor minion id"):
        store.save("../hv", "x", "<domain/>")


def test_definitions_from_engine_events_ignore_older_events(tmp_path):
    store = definitions.Definitions(tmp_path / "defs", clock=lambda: 5.0)
    record = {"xml": "<domain/>", "state": "running", "autostart": True, "seen": 10.0}
    assert store.apply_event("hv1", "a", record) == "saved"
    assert store.get("hv1", "a")["state"] == "running" and store.get("hv1", "a")["seen"] == 10.0
    # an older "stopped" handled late changes nothing; a newer one does
    assert store.apply_event("hv1", "a", dict(record, state="shutoff", seen=9.0)) == "unchanged"
    assert store.get("hv1", "a")["state"] == "running"
    assert store.apply_event("hv1", "a", dict(record, state="shutoff", seen=11.0)) == "saved"
    assert store.get("hv1", "a")["state"] == "shutoff"
    # undefined: only the time; an older one is ignored, a newer one forgets
    assert store.apply_event("hv1", "a", {"seen": 10.5}) == "unchanged"
    assert store.apply_event("hv1", "a", {"seen": 12.0}) == "forgotten"
    assert store.get("hv1", "a") is None and store.locations() == {}
    for bad in (None, {"xml": "<domain/>"}, {"seen": "soon"}, {"xml": 5, "seen": 20.0}):
        with pytest.raises(InvalidArgument, match="definition of a"):
            store.apply_event("hv1", "a", bad)
    with pytest.raises(InvalidArgument, match="not a hypervisor minion id"):
        store.apply_event("../hv", "a", record)
