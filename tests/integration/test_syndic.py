"""The runner behind a syndic (docs/scale.rst): a top master (``order_masters``), one syndic, and
the lab's real hypervisors as minions of the syndic's master.

The operator's commands go to the top master (``lab/bin/salt``, ``salt-run``); ``virt.init``
places and seeds a Debian guest with a real salt-minion whose seeded master is the syndic's (on
br0) and whose key the runner has the syndic's master accept; the guest's minion answers through
the top master, is live-migrated between the two hypervisors and still answers; ``virt.purge``
deletes its key on the syndic's master again.

One flow on one lab, run once per suite: if the session's lab already runs the syndic topology
(``LAB_SYNDIC=1 make lab-up``) it is used; otherwise a throw-away syndic lab is started next to
it (``$LAB_DIR-syndic``, netns ``${LAB_NETNS}y``) and taken down afterwards. Deselect with
``-m 'not syndic'``.
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
    LAB_NETNS,
    START_TIMEOUT,
    Lab,
    _last_json,
    mac_for,
    publish_minion_image,
)

pytestmark = [pytest.mark.integration, pytest.mark.syndic]


def _syndic_env():
    if os.path.exists(os.path.join(LAB_DIR, "syndic")):
        return dict(os.environ), False
    env = dict(os.environ, LAB_DIR=f"{LAB_DIR}-syndic", LAB_NETNS=f"{LAB_NETNS}y", LAB_SYNDIC="1",
               LAB_HYPERVISORS="2", LAB_FAKE_HYPERVISORS="0")
    return env, True


@pytest.fixture(scope="module")
def slab():
    env, own = _syndic_env()
    lab = Lab(env)
    if own:
        lab.labctl("up", timeout=900)
    try:
        lab.run("salt", "hypervisor*", "saltutil.sync_all", timeout=300)
        lab.run("salt-run", "saltutil.sync_all", timeout=300)  # the top master's runner
        syndic = Lab(dict(env, LAB_MASTER="syndic"))
        syndic.run("salt-run", "saltutil.sync_all", timeout=300)  # the syndic master's runner (sync_key)
        lab.syndic = syndic
        lab.lab_dir = env["LAB_DIR"]
        yield lab
    finally:
        if own:
            lab.labctl("down", timeout=900)


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
