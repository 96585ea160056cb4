"""The runner behind a syndic (docs/scale.rst): a top master (``order_masters``), one syndic, and
the lab's real hypervisors as minions of the syndic's master.

The operator's commands go to the top master (``lab/bin/salt``, ``salt-run``); ``virt.init``
places and seeds a Debian guest with a real salt-minion whose seeded master is the syndic's (on
br0) and whose key the runner has the syndic's master accept; the guest's minion answers through
the top master, is live-migrated between the two hypervisors and still answers; ``virt.purge``
deletes its key on the syndic's master again.

One flow on the session's lab, run once per suite: if it runs the syndic topology already
(``LAB_SYNDIC=1 make lab-up``) it is used as it is; otherwise ``labctl.py syndic-attach`` puts a
top master, salt-syndic and the minion ``syndic1`` above its running master (which keeps serving
its hypervisors, no restart) for this module, and ``syndic-detach`` removes them afterwards
(syndic1's key included): the lab is the one-master lab it was for the tests that follow.
Deselect with ``-m 'not syndic'``.
"""

import json
import os
import subprocess
import time
import uuid

import pytest

from tests.integration.conftest import (
    BIN,
    LAB_DIR,
    START_TIMEOUT,
    Lab,
    _last_json,
    mac_for,
    publish_minion_image,
)

pytestmark = [pytest.mark.integration, pytest.mark.syndic]


# The top master attached to a one-master lab runs the runner over the two real hypervisors only:
# the session's lab may have grown a third (three_hypervisors) or have test:/// ones.
ATTACH_HYPERVISORS = "hypervisor[12]"


@pytest.fixture(scope="module")
def slab(lab):
    """The session's lab behind a top master: ``.run``/``.salt_json`` go to the top master,
    ``.syndic`` to the syndic's master (the session's), ``.lab_dir`` is its state directory.
    (The session fixture ``lab`` synced the hypervisors and the lab master's runner, or on a
    syndic lab the top master's.)"""
    syndic = Lab(dict(os.environ, LAB_MASTER="syndic"))
    attach = not os.path.exists(os.path.join(LAB_DIR, "syndic"))
    top = Lab(dict(os.environ, LAB_MASTER="top"))
    try:
        if attach:
            # A fresh top master (nothing synced into its cache: it runs the tree's runner).
            top.labctl("syndic-attach", ATTACH_HYPERVISORS, timeout=300)
        else:
            syndic.run("salt-run", "saltutil.sync_all", timeout=300)  # the syndic master's runner (sync_key)
        top.syndic = syndic
        top.lab_dir = LAB_DIR
        yield top
    finally:
        if attach:
            top.labctl("syndic-detach", timeout=300)


def _keys(lab, conf_dir):
    path = os.path.join(lab.lab_dir, conf_dir, "etc", "salt", "pki", "master", "minions")
    return set(os.listdir(path))


def _domains(lab, host):
    out = lab.run("virsh", host, "list", "--all", "--name").stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def _wait_unseeded(lab, host, vm, timeout=120):
    """The syndic master's reactor detaches the seed ISO once the VM's minion has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        disks = lab.run("virsh", host, "domblklist", vm).stdout
        if "cidata" not in disks:
            return disks
        time.sleep(2)
    raise AssertionError(f"the seed ISO of {vm} is still attached after {timeout}s:\n{disks}")


def test_init_query_migrate_purge_through_the_syndic(slab):
    lab = slab
    vm = f"it-{uuid.uuid4().hex[:6]}"
    image = publish_minion_image(lab.lab_dir)
    # The topology: the top master holds the syndic's key only; hypervisors' keys are the syndic's.
    assert _keys(lab, "top") == {"syndic1"}
    assert {"hypervisor1", "hypervisor2"} <= _keys(lab, "master")
    listener = subprocess.Popen(
        [os.path.join(BIN, "salt-run"), "state.event", f"salt/minion/{vm}/start", "count=1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=lab.syndic.env,
    )
    try:
        time.sleep(3)
        # Placement over both hypervisors answering through the syndic, then seeding. The guest
        # reaches the syndic's master on br0 (the lab's hypervisors know it as 127.0.0.1).
        _p, created = lab.run_json(
            "virt.init", vm, 1, 1024, image, "enable_qcow=True",
            "config=" + json.dumps({"master": "10.231.0.1"}),
            "interfaces=" + json.dumps([{"name": "eth0", "type": "bridge", "source": "br0", "mac": mac_for(vm)}]),
            timeout=900,
        )
        src = created["host"]
        assert src in ("hypervisor1", "hypervisor2") and created["state"] == "running"
        assert created["seeded"]["key_accepted"] is True
        # Accepted where the VM authenticates: the syndic's master, not the top master.
        assert vm in _keys(lab, "master") and vm not in _keys(lab, "top")
        assert vm in _domains(lab, src)

        _p, query = lab.run_json("virt.query")
        assert set(query) == {"hypervisor1", "hypervisor2"}
        assert query[src]["vm_info"][vm]["state"] == "running"
        assert all("node_info" in info for info in query.values())

        try:
            listener.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{vm} sent no minion start event within {START_TIMEOUT}s; console:\n"
                        + lab.hv(src, "cat", f"/var/log/libvirt/qemu/{vm}-serial.log", check=False).stdout[-3000:])
        # The guest's minion answers the top master by way of the syndic: its key was accepted.
        assert lab.salt_json(vm, "test.version", "-t", "60", timeout=120) == {vm: "3008.4"}
        _wait_unseeded(lab, src, vm)

        dst = "hypervisor2" if src == "hypervisor1" else "hypervisor1"
        proc = lab.run("salt-run", "virt.migrate", vm, dst, "--out=json", timeout=900)
        moved = _last_json(proc.stdout)
        assert moved["result"] is True and moved["target"] == dst and moved["state"] == "running", moved
        assert vm in _domains(lab, dst) and vm not in _domains(lab, src)
        _p, listed = lab.run_json("virt.list")
        assert vm in listed[dst].get("running", []) and vm not in json.dumps(listed[src])
        # Same minion, same key, still answering after the live migration.
        assert lab.salt_json(vm, "test.version", "-t", "60", timeout=120) == {vm: "3008.4"}

        _p, purged = lab.run_json("virt.purge", vm)
        assert purged["host"] == dst and purged["key_deleted"] is True
        assert vm not in _keys(lab, "master") and vm not in _domains(lab, dst)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
        lab.run("salt-run", "virt.purge", vm, check=False)
        for host in ("hypervisor1", "hypervisor2"):
            if vm in _domains(lab, host):
                lab.run("salt", host, "virt.purge", vm, check=False)
        lab.run("salt-key", "-y", "-d", vm, check=False)


def test_sync_key_takes_the_key_from_the_hypervisor_only(slab):
    """``virt.sync_key`` (the syndic side of key handling, open to virt.* callers) accepts no key of
    its caller's choosing: a name no hypervisor has seeded gets nothing; a hypervisor's id is refused."""
    lab = slab.syndic
    ghost = f"it-{uuid.uuid4().hex[:6]}"
    proc, ret = lab.run_json("virt.sync_key", ghost, "hypervisor1", check=False)
    assert ret == {"name": ghost, "host": "hypervisor1", "key": "unchanged"}
    assert ghost not in _keys(slab, "master")
    proc, ret = lab.run_json("virt.sync_key", "hypervisor2", "hypervisor1", check=False)
    assert proc.returncode != 0 and ret["result"] is False
    assert "refusing VM name 'hypervisor2': it matches the hypervisor target" in ret["error"]
    proc, ret = lab.run_json("virt.sync_key", ghost, "hypervisor*", check=False)
    assert proc.returncode != 0 and "must be exactly one hypervisor's minion id" in ret["error"]
