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
    LAB_NETNS,
    PYTHON,
    START_TIMEOUT,
    TENANT_KEY,
    Lab,
    _last_json,
    mac_for,
    publish_minion_image,
)
from tests.integration.test_events import EventTail
from tests.integration.test_impersonation import attest

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


def _key_jobs(lab, vm):
    """The creation job each ``virt.sync_key`` job the top master ran for ``vm`` waited for (None
    for one run after the creation), from the syndic master's job cache (the top master keeps none)."""
    _p, jobs = lab.syndic.run_json("jobs.list_jobs")
    kwargs = [job["Arguments"][-1].get("kwarg") or {} for job in jobs.values()
              if job.get("Arguments") and isinstance(job["Arguments"][-1], dict)]
    return [kw.get("jid") for kw in kwargs if kw.get("name") == vm]


def _init_jid(lab, vm):
    _p, jobs = lab.syndic.run_json("jobs.list_jobs")
    found = [jid for jid, job in jobs.items()
             if job.get("Function") == "virt.init" and (job.get("Arguments") or [None])[0] == vm]
    assert len(found) == 1, jobs
    return found[0]


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
        # By the one key job started with the creation, waiting there for the creation's answer
        # (none run after it).
        assert _key_jobs(lab, vm) == [_init_jid(lab, vm)]
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
        # Its survey named the hypervisors (those of the top master's capacity copy), so the top
        # master did not wait syndic_wait after their answers.
        _p, jobs = lab.syndic.run_json("jobs.list_jobs")
        surveys = [job for job in jobs.values()
                   if job.get("Function") == "virt.migrate_survey" and (job.get("Arguments") or [None])[0] == vm]
        assert surveys and all(job.get("Target-type") == "list" for job in surveys), surveys
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


def _fresh_jid():
    """A job id no master made yet (Salt's form: the time to the microsecond, 20 digits)."""
    now = time.time()
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1e6):06d}"


def _sync_key_waiting(slab, name, jid, timeout):
    """``salt-run virt.sync_key`` on the syndic's master, waiting for ``jid``: the process, once
    its listener is up (its runner job is on the bus, then a second for the set-up)."""
    bus = EventTail("salt/run/*/new", marker="salt/run/marker{}/new", env=slab.syndic.env)
    try:
        proc = subprocess.Popen([os.path.join(BIN, "salt-run"), "virt.sync_key", name, "hypervisor1", f"jid={jid}",
                                 f"timeout={timeout}", "--out=json", "-l", "warning"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slab.syndic.env)
        bus.first(lambda tag, data: data.get("fun") == "runner.virt.sync_key")
    finally:
        bus.close()
    time.sleep(1)
    return proc


def _create_as_job(slab, name, jid):
    """``virt.init`` of a seeded ``name`` on hypervisor1, published by the top master as job ``jid``,
    as the runner does."""
    code = ("import json, sys, salt.client\n"
            "client = salt.client.LocalClient(c_path=sys.argv[1])\n"
            "print(json.dumps(client.run_job(['hypervisor1'], 'virt.init', arg=sys.argv[2:5], "
            "kwarg={'image': '/var/lib/libvirt/images/centos.qcow2', 'enable_qcow': True, 'start': False}, "
            "tgt_type='list', jid=sys.argv[5])))")
    out = subprocess.run(["nsenter", f"--net=/run/netns/{LAB_NETNS}", PYTHON, "-c", code,
                          os.path.join(slab.lab_dir, "top", "etc", "salt", "master"), name, "1", "128", jid],
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1])["jid"] == jid, out.stdout + out.stderr


def test_the_key_job_started_with_the_creation_takes_no_answer_in_the_hypervisors_name(slab, tenant):
    """``virt.sync_key jid=...`` (what the top master starts on the syndic's master together with
    the creation) waits for hypervisor1's answer to that job. A tenant's answers in hypervisor1's
    name -- its own key unsigned, signed with its own minion key, or signed by hypervisor1 in an
    answer to an earlier job (a key of an earlier VM of the name, whose private half the tenant
    holds, replayed) -- are ignored; hypervisor1's own answer then gets the VM's real key accepted."""
    victim, jid = f"it-{uuid.uuid4().hex[:6]}", _fresh_jid()
    proc = _sync_key_waiting(slab, victim, jid, timeout=120)
    try:
        seeded = {"method": "cidata", "minion_pub": tenant.pub}
        forged = {"id": "hypervisor1", "jid": jid, "fun": "virt.init", "retcode": 0, "success": True,
                  "return": {"name": victim, "state": "shutoff", "host": "hypervisor1", "seeded": seeded}}
        signatures = [
            attest.sign(TENANT_KEY.format(conf=tenant.conf), attest.KEY, "hypervisor1", victim,
                        attest.key_statement(tenant.pub, jid)),
            attest.sign(os.path.join(slab.lab_dir, "hv1", "minion", "etc", "salt", "pki", "minion", "minion.pem"),
                        attest.KEY, "hypervisor1", victim, attest.key_statement(tenant.pub, _fresh_jid())),
        ]
        answers = [forged]
        for signature in signatures:
            answers.append(json.loads(json.dumps(forged)))
            answers[-1]["return"]["seeded"]["minion_pub_signature"] = signature
        tenant([{"tag": f"salt/job/{jid}/ret/hypervisor1", "data": answer} for answer in answers])
        time.sleep(2)
        assert proc.poll() is None, proc.communicate()  # still waiting for hypervisor1's own answer
        assert victim not in _keys(slab, "master")

        _create_as_job(slab, victim, jid)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        assert json.loads(out) == {"name": victim, "host": "hypervisor1", "key": "accepted"}
        ignored = f"an answer in hypervisor1's name to job {jid} that hypervisor1 did not sign for it: ignored"
        assert err.count(ignored) == 3
        status = slab.syndic.salt_json("hypervisor1", "virt.init_status", victim)["hypervisor1"]
        with open(os.path.join(slab.lab_dir, "master", "etc", "salt", "pki", "master", "minions", victim)) as fh:
            key = fh.read().strip()
        assert key == status["minion_pub"].strip() and key != tenant.pub.strip()
    finally:
        if proc.poll() is None:
            proc.kill()
        slab.syndic.run("salt", "hypervisor1", "virt.purge", victim, check=False)
        slab.syndic.run("salt-key", "-y", "-d", victim, check=False)


def test_the_key_job_accepts_nothing_after_a_failed_creation_or_without_an_answer(slab, tenant):
    """The error sides: an answer saying the creation failed (real or forged: either way nothing
    is accepted, and the top master then runs the key step afterwards), no answer within the
    timeout, and a job id that is not one."""
    ghost, jid = f"it-{uuid.uuid4().hex[:6]}", _fresh_jid()
    proc = _sync_key_waiting(slab, ghost, jid, timeout=60)
    try:
        tenant([{"tag": f"salt/job/{jid}/ret/hypervisor1",
                 "data": {"id": "hypervisor1", "jid": jid, "fun": "virt.init", "retcode": 1, "success": False,
                          "return": "ERROR: no room"}}])
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert json.loads(out) == {"name": ghost, "host": "hypervisor1", "key": "unchanged",
                               "reason": f"virt.init job {jid} on hypervisor1 failed"}
    _p, ret = slab.syndic.run_json("virt.sync_key", ghost, "hypervisor1", f"jid={_fresh_jid()}", "timeout=1")
    assert ret["key"] == "unchanged" and "no answer of hypervisor1 to virt.init job" in ret["reason"], ret
    proc, ret = slab.syndic.run_json("virt.sync_key", ghost, "hypervisor1", "jid=salt/job/x", check=False)
    assert proc.returncode != 0 and "jid 'salt/job/x': a Salt job id is 20 digits" in ret["error"], ret
    assert ghost not in _keys(slab, "master")


def test_answers_a_tenant_makes_up_do_not_stop_the_syndic(slab, tenant):
    """Any minion of the syndic's master can put job returns for a job no master published on its
    bus, and salt-syndic forwards them. Salt 3008's top master with a local job cache refuses the
    second one, after which salt-syndic forwards nothing more (no job through the top master
    answers until it restarts): the lab's top master keeps no job cache (docs/scale.rst).
    The tenant's made-up returns change nothing; the hypervisors' real ones still come through."""
    jid = _fresh_jid()
    made_up = [{"tag": f"salt/job/{jid}/ret/hypervisor1",
                "data": {"id": "hypervisor1", "jid": jid, "fun": "test.ping", "retcode": 0, "success": True,
                         "return": True}}]
    for _ in range(3):  # separate batches: separate returns for the syndic to forward
        tenant(made_up)
        time.sleep(0.5)
    time.sleep(1)
    assert slab.salt_json("hypervisor*", "test.ping", "-t", "20", timeout=120) == {
        "hypervisor1": True, "hypervisor2": True}


def test_a_failed_creation_through_the_syndic_leaves_no_key(slab):
    """The creation fails on the hypervisor (an image the syndic's master does not have): the key
    job started with it sees the failure and accepts nothing, the runner exits non-zero, and
    nothing of the VM is left."""
    vm = f"it-{uuid.uuid4().hex[:6]}"
    proc, ret = slab.run_json("virt.init", vm, "1", "128", "salt://no-such-image.qcow2", "enable_qcow=True",
                              "start=False", "host=hypervisor1", check=False)
    assert proc.returncode != 0 and f"virt.init of {vm} on hypervisor1 failed" in ret["error"], ret
    assert "no-such-image.qcow2" in ret["error"]
    [key_job] = [jid for jid, job in slab.syndic.run_json("jobs.list_jobs")[1].items()
                 if job.get("Function") == "saltutil.runner" and job.get("Arguments")
                 and isinstance(job["Arguments"][-1], dict)
                 and (job["Arguments"][-1].get("kwarg") or {}).get("name") == vm]
    _p, answer = slab.syndic.run_json("jobs.lookup_jid", key_job)
    assert answer["syndic1"]["key"] == "unchanged" and answer["syndic1"]["reason"].endswith(" failed"), answer
    assert vm not in _keys(slab, "master") and vm not in _domains(slab, "hypervisor1")
    _p, status = slab.run_json("virt.reconcile", "test=True")  # no intent or reservation left
    assert vm not in json.dumps(status)
