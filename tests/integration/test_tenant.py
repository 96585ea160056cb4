"""A hostile tenant on the lab: a Debian guest running a real salt-minion of the lab's master,
commanded as root (through its own minion, which is what root in the guest controls).

(a) its pillar, asked normally and on demand, holds no key material;
(b) nothing it holds or can make opens any hypervisor's libvirtd, while the operator's
    certificate does;
(c) another VM's ``salt-run virt.init`` puts no private key on the master's event bus or in its
    job cache;
(d) ``virt.init`` with its minion id, or with a name the hypervisor target would match, is
    refused and changes nothing.

The guest is test_seeding_e2e's cidata case too: its first test makes that test's assertions on
how the guest booted (recorded while it booted, whatever the tests after it do).
"""

import datetime
import json
import os
import re
import subprocess
import time
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from tests.integration.conftest import BIN, LAB_DIR
from tests.integration.test_isolation import HYPERVISORS, MASTER_PKI, virsh_list
from tests.integration.test_seeding_e2e import boot_minion_vm, check_minion_vm

JOBS_DIR = os.path.join(LAB_DIR, "master/var/cache/salt/master/jobs")


@pytest.fixture(scope="module")
def tenant_boot(lab, minion_image):
    """The tenant's guest, booted as test_seeding_e2e boots its guests (``boot_minion_vm``, with
    cidata: what it saw is this record); purged (and its key deleted) afterwards."""
    name = f"tenant-{uuid.uuid4().hex[:6]}"
    try:
        boot = boot_minion_vm(lab, name, minion_image, "cidata")
        # The tests command the guest through its minion: it started and answered (with what,
        # test_vm_minion_answers_with_preaccepted_key_cidata checks).
        assert boot.ret["seeded"]["key_accepted"] is True
        if boot.t_start is None:
            pytest.fail(f"{name} sent no start event; console:\n{boot.console[-3000:]}")
        assert re.fullmatch(r"[0-9.]+", str(boot.answer.get(name))), boot.answer
        yield boot
    finally:
        lab.run("salt-run", "virt.purge", name, check=False)
        lab.run("salt-key", "-y", "-d", name, check=False)


@pytest.fixture(scope="module")
def tenant(tenant_boot):
    """The guest's minion id (its name)."""
    return tenant_boot.name


def in_guest(lab, name, command, timeout=240):
    """Run ``command`` as root in the guest (through its own minion)."""
    out = lab.salt_json(name, "cmd.run", command, "python_shell=True", "-t", str(timeout),
                        timeout=timeout + 60)
    return out[name]


def test_vm_minion_answers_with_preaccepted_key_cidata(tenant_boot):
    """test_seeding_e2e's test_vm_minion_answers_with_preaccepted_key[cidata] on this guest (one
    TCG boot fewer): its assertions on what booting it recorded, before any test here ran."""
    assert "minion_pub" not in tenant_boot.ret["seeded"]
    check_minion_vm(tenant_boot)


def test_guest_pillar_holds_no_key_material(lab, tenant):
    items = lab.salt_json(tenant, "pillar.items", "unmask=True", "-t", "120", timeout=200)[tenant]
    asked = lab.salt_json(tenant, "pillar.ext", '{"libvirt": {}}', "unmask=True", "-t", "120",
                          timeout=200)[tenant]
    assert "libvirt" not in items and "libvirt" not in asked
    assert "PRIVATE KEY" not in json.dumps(items) + json.dumps(asked)
    # The same request from a shell in the guest, as its root would type it.
    out = in_guest(lab, tenant, "salt-call --out=json pillar.ext '{\"libvirt\": {}}' unmask=True 2>&1")
    assert "PRIVATE KEY" not in out and '"local"' in out, out
    # The legitimate path: a hypervisor still gets its certificates.
    own = lab.salt_json("hypervisor1", "pillar.item", "libvirt", "unmask=True")["hypervisor1"]
    assert "PRIVATE KEY" in own["libvirt"]["clientkey.pem"]


def _self_signed(key_pem):
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "salt-virt-libvirt-client"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "hypervisor1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_nothing_the_guest_holds_opens_libvirtd(lab, tenant, tmp_path):
    with open(os.path.join(MASTER_PKI, "libvirt", "cacert.pem")) as fh:
        cacert = fh.read()
    ca_line = cacert.splitlines()[3]
    # Nothing on the guest's disks comes from the hypervisors' CA...
    # (the line is split in the command so that the job's own record does not match it)
    half = len(ca_line) // 2
    found = in_guest(lab, tenant, f"grep -rlF \"$(printf %s '{ca_line[:half]}' '{ca_line[half:]}')\" "
                                  "/etc /root /var /opt /srv /home 2>/dev/null || true")
    assert found.strip() == "", found
    keys = in_guest(lab, tenant, "grep -rl 'PRIVATE KEY' /etc /root /var/lib /opt/salt/etc 2>/dev/null || true")
    assert "/etc/salt/pki/minion/minion.pem" in keys.split(), keys  # the search does find keys
    assert all(path.startswith("/etc/salt/pki/minion/") for path in keys.split()), keys
    # ...and what it can make of its own key (a certificate claiming the allowed unit) is refused.
    key_pem = in_guest(lab, tenant, "cat /etc/salt/pki/minion/minion.pem")
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "cacert.pem").write_text(cacert)
    (forged / "clientcert.pem").write_text(_self_signed(key_pem))
    (forged / "clientkey.pem").write_text(key_pem)
    os.chmod(forged / "clientkey.pem", 0o600)
    _proc, operator = lab.run_json("virt.operator_pki")
    for hyper, address in HYPERVISORS.items():
        refused = virsh_list(address, str(forged))
        assert refused.returncode != 0, (hyper, refused.stdout)
        accepted = virsh_list(address, operator["pkipath"])
        assert accepted.returncode == 0, (hyper, accepted.stderr)
    # The guest does not even reach libvirtd's TLS port: it listens on the lab's loopback.
    probe = in_guest(lab, tenant, "timeout 5 bash -c 'echo > /dev/tcp/127.0.0.2/16514' && echo open || echo closed")
    assert probe.strip().endswith("closed"), probe


def test_no_private_key_on_the_bus_or_in_the_job_cache(lab, tenant, vm):
    started = time.time()
    events = subprocess.Popen([os.path.join(BIN, "salt-run"), "state.event", "pretty=False"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(3)
        proc, ret = lab.run_json("virt.init", vm, 1, 128, "salt://centos.qcow2", "enable_qcow=True",
                                 "start=False")
        assert ret["seeded"]["key_accepted"] is True
        time.sleep(2)
    finally:
        events.terminate()
        bus = events.communicate(timeout=30)[0]
    assert "salt/job/" in bus and vm in bus  # the listener saw this init's jobs
    assert "PRIVATE KEY" not in bus and "PRIVATE KEY" not in proc.stdout
    jids = sorted({line.split("/")[2] for line in bus.splitlines()
                   if line.startswith("salt/job/") and "virt.init" in line})
    assert jids, bus[-2000:]
    for jid in jids:
        found = lab.run("salt-run", "jobs.lookup_jid", jid, "--out=json").stdout
        listed = lab.run("salt-run", "jobs.list_job", jid, "--out=json").stdout
        assert vm in listed and "PRIVATE KEY" not in found + listed
    recent = []
    for root, _dirs, files in os.walk(JOBS_DIR):
        for name in files:
            path = os.path.join(root, name)
            if os.path.getmtime(path) >= started:
                with open(path, "rb") as fh:
                    recent.append((path, fh.read()))
    assert recent and not [p for p, data in recent if b"PRIVATE KEY" in data]
    # The key the master accepted is the public half the hypervisor returned.
    with open(os.path.join(MASTER_PKI, "minions", vm)) as fh:
        assert "PUBLIC KEY" in fh.read()


def test_guest_cannot_be_made_a_hypervisor_or_another_vm(lab, tenant):
    keys_before = sorted(os.listdir(os.path.join(MASTER_PKI, "minions")))
    for name, message in ((tenant, "the master already has a minion key with that id"),
                          ("hypervisor9", "it matches the hypervisor target virt:hypervisors")):
        proc = lab.run("salt-run", "virt.init", name, 1, 128, "salt://centos.qcow2", check=False)
        assert proc.returncode != 0 and message in proc.stdout, proc.stdout
    assert sorted(os.listdir(os.path.join(MASTER_PKI, "minions"))) == keys_before
    for hyper in HYPERVISORS:
        assert "hypervisor9" not in lab.domains(hyper)
        assert lab.domains(hyper).count(tenant) <= 1


def test_guest_cannot_open_another_vms_console(lab, tenant, vm):
    from tests.integration.test_console import rfb_security_types

    _proc, ret = lab.run_json("virt.init", vm, 1, 128, "salt://centos.qcow2", "enable_qcow=True",
                              "enable_vnc=True", "seed=False")
    gfx = ret["graphics"][0]
    assert gfx["password_set"] is True and "vnc_password" not in json.dumps(ret)
    # From the tenant's network the console's port is not even reachable...
    probe = in_guest(lab, tenant, f"timeout 5 bash -c 'echo > /dev/tcp/{gfx['host']}/{gfx['port']}' "
                                  "&& echo open || echo closed")
    assert probe.strip().endswith("closed"), probe
    # ...and where it is (the lab's own network), RFB asks for the password the tenant lacks.
    assert rfb_security_types(gfx["host"], gfx["port"]) == [2]


def test_seed_iso_is_gone_once_the_minion_authenticated(lab, tenant):
    """The ISO held the tenant's private key for its first boot; the master's reactor
    (salt://virt/reactor/unseed.sls on salt/minion/*/start) detached and deleted it."""
    host = next(h for h in HYPERVISORS if tenant in lab.domains(h))
    iso = os.path.join(LAB_DIR, f"hv{host[-1]}", "salt-images", tenant, "cidata.iso")
    deadline = time.monotonic() + 120
    while os.path.exists(iso) and time.monotonic() < deadline:
        time.sleep(2)
    assert not os.path.exists(iso), "the reactor did not unseed the VM"
    definition = lab.run("virsh", host, "dumpxml", "--inactive", tenant).stdout
    assert "cidata.iso" not in definition and f"<name>{tenant}</name>" in definition
