"""The classic SLS examples of Salt 3001-3007's ``virt`` state docs, applied on the lab.

The examples are tests/data/classic_sls/*.sls (each adapted only in names and paths, as its
header says; the lab serves them from the repository, its file_roots). The ones that need
hardware or servers the lab does not have are in not_on_lab/ (tests/unit/test_classic_sls.py
checks them, docs/upgrading.rst lists them).

The whole proof is a handful of ``state.apply`` runs on one hypervisor: one that makes what the
examples presume exists (VMs, snapshots, pools: "domain_name", "pool_name"...), then all the
examples together with ``test=True`` (each state predicts a change, result None, and changes
nothing), then for real (each changes, result True, as predicted), then again (nothing left to
change). ``virt.reverted`` reverts on every run, as the classic state did: its second run
reverts again, one snapshot further back.
"""

import json
import os

import pytest
import yaml

LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
HOST = "hypervisor1"
IMAGES = "/var/lib/libvirt/images"  # the lab's virt:pools:allowed_targets
EXAMPLES = ("keys", "network_defined", "network_running", "pool_defined", "pool_running", "pool_deleted",
            "defined", "running", "stopped", "powered_off", "unpowered", "snapshot", "saved", "reverted")
SLS = ",".join(f"tests.data.classic_sls.{name}" for name in EXAMPLES)
#: The disk and NIC profiles "prod" the virt.defined/virt.running examples name (the operator's
#: virt:disk / virt:nic configuration; given as pillar here).
PILLAR = {"virt": {"disk": {"prod": [{"system": {"size": 8192, "format": "qcow2"}}]},
                   "nic": {"prod": [{"eth0": {"bridge": "br0"}}]}}}
#: States that act on every run, as in the classic.
EVERY_RUN = ("cls-rev", "cls-rev1")
#: Their changes, run by run: cls-rev goes one snapshot further back and deletes the newer ones.
REVERTS = [
    {"cls-rev": {"domain": "cls-rev", "current": "cls-rev-b", "deleted": ["cls-rev-c"]},
     "cls-rev1": {"domain": "cls-rev1", "current": "cls-rev1-snapshot_name", "deleted": "N/A"}},
    {"cls-rev": {"domain": "cls-rev", "current": "cls-rev-a", "deleted": ["cls-rev-b"]},
     "cls-rev1": {"domain": "cls-rev1", "current": "cls-rev1-snapshot_name", "deleted": "N/A"}},
]

# What the examples presume exists ("domain_name", "pool_name"...), made in one run.
SMALL = "    - cpu: 1\n    - mem: 64\n"
FIXTURE = (
    f"""\
cls-default:
  virt.pool_defined:
    - ptype: dir
    - target: {IMAGES}/cls-default
    - autostart: False

cls-gone:
  virt.pool_running:
    - ptype: dir
    - target: {IMAGES}/cls-gone
    - autostart: False

cls-gone-volume:
  virt.volume_defined:
    - pool: cls-gone
    - name: data.qcow2
    - size: 16
    - format: qcow2

cls-stop:
  virt.running:
    - cpu: 1
    - mem: 192
    - image: salt://centos.qcow2
    - enable_qcow: True

cls-memtune:
  virt.defined:
    - cpu: 1
    - mem:
        boot: 64
        hard_limit: 1g
        soft_limit: 512m
"""
    + "".join(f"\n{vm}:\n  virt.running:\n{SMALL}" for vm in ("cls-off", "cls-unpw"))
    + "".join(f"\n{vm}:\n  virt.defined:\n{SMALL}" for vm in (
        "cls-started", "cls-snap", "cls-snapw1", "cls-snapw2", "cls-saved", "cls-savedw1", "cls-savedw2",
        "cls-rev", "cls-rev1"))
    + "".join(f"\ncls-rev-{s}:\n  virt.snapshot:\n    - name: cls-rev\n    - suffix: {s}\n" for s in "abc")
    + "\ncls-rev1-s:\n  virt.snapshot:\n    - name: cls-rev1\n    - suffix: snapshot_name\n"
)
NETWORKS = ("cls-netdef", "cls-netdef-ovs", "cls-netdef-nat", "cls-netdef-vlan", "cls-netdef-dns", "cls-netdef-pt",
            "cls-netdef-pf", "cls-netrun", "admin", "cls-netrun-dns")
POOLS = ("cls-default", "cls-gone", "cls-cifs")
CLIENT_CERT = "/etc/pki/libvirt/clientcert.pem"


def _cleanup(lab):
    vms = [name for name in lab.domains(HOST) if name.startswith("cls-")]
    lab.calls(HOST, [("virt.purge", n) for n in vms]
              + [(f, n) for n in NETWORKS for f in ("virt.network_stop", "virt.network_undefine")]
              + [(f, n) for n in POOLS for f in ("virt.pool_stop", "virt.pool_undefine")])
    lab.hv(HOST, "rm", "-rf", *(f"{IMAGES}/{pool}" for pool in POOLS), check=False)
    lab.run("salt-key", "-y", "-d", "cls-*", check=False)
    if lab.hv(HOST, "test", "-e", CLIENT_CERT, check=False).returncode != 0:
        lab.run("salt", HOST, "state.apply", "tests.data.classic_sls.keys", check=False)


@pytest.fixture
def presumed(lab):
    """Make what the examples act on; remove everything the examples and this made afterwards."""
    directory = os.path.join(LAB_DIR, "images", "tests")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "classic_fixture.sls")
    with open(path, "w") as fh:
        fh.write(FIXTURE)
    _cleanup(lab)  # a run killed before its finalizer
    try:
        made = _apply(lab, "tests.classic_fixture")
        assert all(ret["result"] is True for ret in made.values()), _failed(made)
        # virt.keys has a file to write back: the lab applied it when it came up.
        lab.hv(HOST, "rm", CLIENT_CERT)
        yield
    finally:
        os.unlink(path)
        _cleanup(lab)
        assert not [name for name in lab.domains(HOST) if name.startswith("cls-")]
        assert lab.hv(HOST, "test", "-e", CLIENT_CERT, check=False).returncode == 0


def _apply(lab, sls, test=False):
    """``{state id: state return}`` of ``state.apply sls`` on HOST (with the profiles' pillar)."""
    args = [HOST, "state.apply", sls, f"pillar={json.dumps(PILLAR)}", "--out=json", "--static"]
    if test:
        args.append("test=True")
    out = json.loads(lab.run("salt", *args, check=False, timeout=600).stdout)[HOST]
    assert isinstance(out, dict), out  # a list: the SLS did not render
    return {ret["__id__"]: ret for ret in out.values()}


def _failed(rets):
    return {sid: (ret["result"], ret["comment"]) for sid, ret in rets.items() if ret["result"] is not True}


def _example_ids():
    """Every state ID of the applied example files."""
    ids = []
    for name in EXAMPLES:
        with open(os.path.join(os.path.dirname(__file__), "..", "data", "classic_sls", f"{name}.sls")) as fh:
            ids += list(yaml.safe_load(fh))
    return ids


def test_classic_examples_predict_change_then_settle(lab, presumed):
    ids = _example_ids()

    predicted = _apply(lab, SLS, test=True)
    assert sorted(predicted) == sorted(ids)
    wrong = {sid: ret for sid, ret in predicted.items() if ret["result"] is not None or not ret["changes"]}
    assert not wrong, wrong
    # Nothing was done.
    assert "cls-running" not in lab.domains(HOST)
    assert lab.run("virsh", HOST, "domstate", "cls-stop").stdout.strip() == "running"

    first = _apply(lab, SLS)
    assert not _failed(first), _failed(first)
    unchanged = [sid for sid, ret in first.items() if not ret["changes"]]
    assert not unchanged, unchanged
    # test=True predicted exactly these changes where the real run's changes are known ahead.
    for sid in ids:
        fun = first[sid]["__sls__"].rsplit(".", 1)[1]
        if fun in ("network_defined", "network_running", "pool_defined", "pool_running", "defined", "running"):
            assert predicted[sid]["changes"] == first[sid]["changes"], (sid, predicted[sid], first[sid])
        elif fun in ("stopped", "powered_off", "unpowered", "snapshot", "saved"):
            ((section, entries),) = first[sid]["changes"].items()
            assert [e["domain"] for e in entries] == [e["domain"] for e in predicted[sid]["changes"][section]]
    assert {sid: first[sid]["changes"] for sid in EVERY_RUN} == REVERTS[0]
    assert first["cls-gone"]["changes"] == {"stopped": True, "deleted": True, "undefined": True,
                                           "deleted_volumes": ["data.qcow2"]}
    taken = [{"domain": f"cls-snapw{n}", "snapshot": f"cls-snapw{n}-periodic"} for n in (1, 2)]
    assert first["cls-snapw*"]["changes"] == {"saved": taken}
    # The examples' effects, as libvirt sees them.
    states = {vm: lab.run("virsh", HOST, "domstate", vm).stdout.strip()
              for vm in ("cls-running", "cls-started", "cls-memtune", "cls-defined", "cls-stop", "cls-off")}
    assert states == {"cls-running": "running", "cls-started": "running", "cls-memtune": "running",
                      "cls-defined": "shut off", "cls-stop": "shut off", "cls-off": "shut off"}
    active = lab.run("virsh", HOST, "net-list", "--name").stdout.split()
    assert {"admin", "cls-netrun", "cls-netrun-dns"} <= set(active) and "cls-netdef-nat" not in active
    assert "cls-gone" not in lab.run("virsh", HOST, "pool-list", "--all", "--name").stdout.split()
    assert lab.hv(HOST, "stat", "-c", "%a %u %g", f"{IMAGES}/cls-cifs").stdout.split() == ["770", "1000", "100"]
    assert "<memtune" not in lab.run("virsh", HOST, "dumpxml", "--inactive", "cls-memtune").stdout

    second = _apply(lab, SLS)
    assert not _failed(second), _failed(second)
    changed = {sid: ret["changes"] for sid, ret in second.items() if ret["changes"] and sid not in EVERY_RUN}
    assert not changed, changed
    assert {sid: second[sid]["changes"] for sid in EVERY_RUN} == REVERTS[1]
