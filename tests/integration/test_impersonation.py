"""A tenant's minion cannot speak for a hypervisor.

Any minion with an accepted key -- every seeded VM has one -- can send the master a batch of
events (the form salt-syndic uses), which the master puts on its bus with tag and data as sent:
an engine event "of" hypervisor1, or a job return "from" hypervisor1. What the master would act
on from such an event carries the hypervisor's signature (saltvirt.pki.attest); here a minion
that is not a hypervisor (tenant_minion.py, Salt's own request channel) tries both, and the
legitimate events and answers of the same kind go through.
"""

import json
import os
import signal
import subprocess
import sys
import time

from tests.integration.conftest import BIN, LAB_DIR, LAB_NETNS, PYTHON, REPO, TENANT_KEY, TENANT_SCRIPT
from tests.integration.test_events import EventTail

sys.path.insert(0, os.path.join(REPO, "_utils"))
from saltvirt.pki import attest  # noqa: E402

MASTER_PKI = os.path.join(LAB_DIR, "master/etc/salt/pki/master")
DEFINITIONS = os.path.join(LAB_DIR, "master/var/cache/salt/master/saltvirt/definitions/hypervisor1")
ENGINE = "salt/engines/libvirt_events/qemu/system/domain"
HV1_KEY = os.path.join(LAB_DIR, "hv1/minion/etc/salt/pki/minion/minion.pem")
HOSTILE_XML = ("<domain type='qemu'><name>{name}</name><memory unit='KiB'>131072</memory><vcpu>1</vcpu>"
               "<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>"
               "<source file='/etc/shadow'/><target dev='vda' bus='virtio'/></disk></devices></domain>")


def _remember_answer(name):
    """Matches the reactor's ``virt.remember`` run for VM ``name`` once it returned."""
    def matches(tag, data):
        args = data.get("fun_args") or [{}]
        return (tag.endswith("/ret") and data.get("fun") == "runner.virt.remember"
                and isinstance(args[0], dict) and args[0].get("name") == name)
    return matches


def test_a_tenant_cannot_plant_a_definition_in_a_hypervisors_name(lab, tenant):
    bus = EventTail("salt/run/*/ret", marker="salt/run/marker{}/ret")
    real = "impersonated"
    try:
        # A VM hypervisor1 never had, whose disk is a host file: were it kept, virt.evacuate
        # would define and start it on another hypervisor.
        tenant([{"tag": f"{ENGINE}/ghost/defined",
                 "data": {"id": "hypervisor1", "data": {"domain": {"name": "ghost"}, "event": "defined",
                                                       "definition": {"xml": HOSTILE_XML.format(name="ghost"),
                                                                      "state": "running", "seen": time.time()}}}}])
        refused = bus.first(_remember_answer("ghost"))
        assert "does not carry hypervisor1's signature" in json.dumps(refused["return"]) \
            or "is not signed" in json.dumps(refused["return"]), refused
        assert not os.path.exists(os.path.join(DEFINITIONS, "ghost.json"))

        # The legitimate path: a VM defined on hypervisor1; the engine's signed event is kept.
        lab.run("salt", "hypervisor1", "virt.init", real, "1", "128", "image=/var/lib/libvirt/images/centos.qcow2",
                "enable_qcow=True", "start=False", "seed=False")
        kept = bus.first(_remember_answer(real))
        assert kept["return"]["saved"] == {"hypervisor1": [real]}, kept
        with open(os.path.join(DEFINITIONS, f"{real}.json")) as fh:
            stored = json.load(fh)
        assert f"<name>{real}</name>" in stored["xml"] and "/etc/shadow" not in stored["xml"]
        # The refresh that asks the hypervisor itself (virt.definitions: each record signed).
        _p, refreshed = lab.run_json("virt.remember", "host=hypervisor1")
        assert real in refreshed["saved"]["hypervisor1"] and "retcode" not in refreshed, refreshed
        with open(os.path.join(DEFINITIONS, f"{real}.json")) as fh:
            stored = json.load(fh)
        assert f"<name>{real}</name>" in stored["xml"]

        # A newer "definition" of that real VM in hypervisor1's name changes nothing.
        tenant([{"tag": f"{ENGINE}/{real}/defined",
                 "data": {"id": "hypervisor1", "data": {"domain": {"name": real}, "event": "defined",
                                                       "definition": {"xml": HOSTILE_XML.format(name=real),
                                                                      "state": "running",
                                                                      "seen": time.time() + 3600}}}}])
        refused = bus.first(_remember_answer(real))
        assert "hypervisor1's definition of" in json.dumps(refused["return"]), refused
        with open(os.path.join(DEFINITIONS, f"{real}.json")) as fh:
            assert json.load(fh) == stored
    finally:
        bus.close()
        lab.run("salt", "hypervisor1", "virt.purge", real, check=False)
        if os.path.exists(os.path.join(DEFINITIONS, "ghost.json")):  # a failed run must not leave it
            os.unlink(os.path.join(DEFINITIONS, "ghost.json"))      # for test_evacuate to restart


def test_a_forged_virt_init_answer_does_not_get_the_tenants_key_accepted(lab, tenant):
    """The tenant answers the runner's virt.init job in hypervisor1's name with its own public
    key, before hypervisor1 does; the runner ignores that answer and accepts the VM's real key.
    (The forger must win the race against hypervisor1's ~0.5 s job: tried up to three times.)"""
    jobs = EventTail("salt/job/*/new", marker="salt/job/marker{}/new")
    forger = subprocess.Popen(["nsenter", f"--net=/run/netns/{LAB_NETNS}", PYTHON, TENANT_SCRIPT, tenant.conf, "serve"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ignored = []
    try:
        assert forger.stdout.readline().strip() == "ready", forger.stderr.read()
        for attempt in range(3):
            victim = f"victim{attempt}"
            try:
                ignored.append(_race(lab, jobs, forger, victim, {"method": "cidata", "minion_pub": tenant.pub}))
            finally:
                lab.run("salt-run", "virt.purge", victim, check=False)
            if ignored[-1]:
                break
        assert any(ignored), "the forged answer never reached the runner before hypervisor1's own"
    finally:
        forger.kill()
        jobs.close()


def test_a_key_hypervisor1_signed_for_an_earlier_vm_of_the_name_is_not_accepted_again(lab, tenant):
    """hypervisor1's signed word on an earlier VM's key, replayed: a tenant who owned a VM
    ``replayed`` holds its private key and saw hypervisor1 sign its public key (virt.init_status);
    once that VM is gone and the name made again, the tenant answers the new creation first with
    the old signed key. The signature covers the job that reported the key, so the runner ignores
    it and accepts the new VM's own key."""
    jobs = None
    forger = subprocess.Popen(["nsenter", f"--net=/run/netns/{LAB_NETNS}", PYTHON, TENANT_SCRIPT, tenant.conf, "serve"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = "replayed"
    try:
        assert forger.stdout.readline().strip() == "ready", forger.stderr.read()
        lab.run_json("virt.init", victim, "1", "128", "salt://centos.qcow2", "enable_qcow=True", "start=False",
                     "host=hypervisor1")
        earlier = lab.salt_json("hypervisor1", "virt.init_status", victim)["hypervisor1"]
        assert earlier["minion_pub"] and earlier["minion_pub_signature"], earlier
        lab.run("salt-run", "virt.purge", victim)
        assert not os.path.exists(os.path.join(MASTER_PKI, "minions", victim))
        jobs = EventTail("salt/job/*/new", marker="salt/job/marker{}/new")  # the new creation's, not the first's
        replay = {"method": "cidata", "minion_pub": earlier["minion_pub"],
                  "minion_pub_signature": earlier["minion_pub_signature"]}
        assert _race(lab, jobs, forger, victim, replay, hold=True), "the runner did not see the replayed answer"
    finally:
        forger.kill()
        if jobs is not None:
            jobs.close()
        lab.run("salt-run", "virt.purge", victim, check=False)


def _race(lab, jobs, forger, victim, seeded, hold=False):
    """One salt-run virt.init of ``victim`` that the tenant answers first, if it can, with
    ``seeded`` as the answer's seed report: whether the runner saw (and ignored) the forged
    answer. Either way the VM's own key is the one accepted. ``hold``: hypervisor1's minion is
    stopped (SIGSTOP) until the forged answer is out, as a slow job would be, so the tenant
    answers first (the master's capacity copy, fresh from a creation just before, spares the
    runner a survey of the stopped minion)."""
    with open(os.path.join(LAB_DIR, "hv1", "minion", "var", "run", "salt-minion.pid")) as fh:
        minion = int(fh.read())
    if hold:
        os.kill(minion, signal.SIGSTOP)
    try:
        return _race_on(lab, jobs, forger, victim, seeded, release=lambda: os.kill(minion, signal.SIGCONT))
    finally:
        if hold:
            os.kill(minion, signal.SIGCONT)


def _race_on(lab, jobs, forger, victim, seeded, release):
    init = subprocess.Popen([os.path.join(BIN, "salt-run"), "virt.init", victim, "1", "128", "salt://centos.qcow2",
                             "enable_qcow=True", "start=False", "host=hypervisor1", "--out=json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job = jobs.first(lambda tag, d: d.get("fun") == "virt.init" and (d.get("arg") or [None])[0] == victim)
    forged = {"id": "hypervisor1", "jid": job["jid"], "fun": "virt.init", "retcode": 0, "success": True,
              "return": {"name": victim, "state": "shutoff", "host": "hypervisor1",
                         "seeded": seeded}}
    forger.stdin.write(json.dumps([{"tag": f"salt/job/{job['jid']}/ret/hypervisor1", "data": forged}]) + "\n")
    forger.stdin.flush()
    assert forger.stdout.readline().strip() == "sent"
    release()
    out, err = init.communicate(timeout=300)
    assert init.returncode == 0, out + err
    status = lab.salt_json("hypervisor1", "virt.init_status", victim)["hypervisor1"]
    with open(os.path.join(MASTER_PKI, "minions", victim)) as fh:
        key = fh.read().strip()
    assert key != seeded["minion_pub"].strip(), f"the forged answer's key was accepted for {victim}"
    assert key == status["minion_pub"].strip(), f"{victim}'s key on the master is not the one its seed holds"
    return "virt.init: a return in hypervisor1's name for job" in err and "did not sign for it: ignored" in err


def test_a_crash_restarts_a_vm_only_when_its_hypervisor_says_so(lab, tenant, vm):
    """The lab's reactor restarts a VM whose guest crashed (restart_crashed.sls): on hypervisor1's
    own signed event it does; on the same event sent by the tenant in hypervisor1's name it does not."""
    lab.run_json("virt.init", vm, "1", "128", "/var/lib/libvirt/images/centos.qcow2", "enable_qcow=True",
                 "host=hypervisor1", "seed=False", "start=False")
    bus = EventTail("salt/run/*/ret", marker="salt/run/marker{}/ret")
    xml = lab.salt_json("hypervisor1", "virt.definitions", f"name={vm}")["hypervisor1"][vm]["xml"]
    crashed = {"xml": xml, "state": "shutoff", "autostart": False, "seen": time.time(), "event": "stopped",
               "detail": "crashed"}
    event = {"domain": {"name": vm}, "event": "stopped", "detail": "crashed"}

    def restarted(tag, data):
        args = data.get("fun_args") or [{}]
        return data.get("fun") == "runner.virt.restart_crashed" and isinstance(args[0], dict) \
            and args[0].get("name") == vm

    try:
        for definition in (crashed, attest.signed(TENANT_KEY.format(conf=tenant.conf), attest.DEFINITION,
                                                  "hypervisor1", vm, crashed)):
            tenant([{"tag": f"{ENGINE}/{vm}/stopped",
                     "data": {"id": "hypervisor1", "data": dict(event, definition=definition)}}])
            refused = bus.first(restarted)
            assert refused["return"]["result"] is False and "hypervisor1" in refused["return"]["error"], refused
            assert lab.run("virsh", "hypervisor1", "domstate", vm).stdout.strip() == "shut off"
        # hypervisor1's own event, signed with its minion key, as its engine sends one.
        signed = attest.signed(HV1_KEY, attest.DEFINITION, "hypervisor1", vm, crashed)
        lab.run("salt", "hypervisor1", "event.send", f"{ENGINE}/{vm}/stopped",
                json.dumps(dict(event, definition=signed)))
        done = bus.first(restarted)
        assert done["return"]["host"] == "hypervisor1" and done["success"], json.dumps(done)[:3000]
        assert lab.run("virsh", "hypervisor1", "domstate", vm).stdout.strip() == "running"
    finally:
        bus.close()
