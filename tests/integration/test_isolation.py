"""Tenant isolation on the lab, without a guest: who libvirtd lets in, which names and hosts the
runner refuses, and what the libvirt pillar gives to whom. The hostile guest itself is in
test_tenant.py."""

import json
import os
import subprocess
import sys

import pytest

from tests.integration.conftest import LAB_NETNS, REPO

sys.path.insert(0, os.path.join(REPO, "_utils"))
from saltvirt import pki  # noqa: E402

LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
MASTER_PKI = os.path.join(LAB_DIR, "master/etc/salt/pki/master")
CA_DIR = os.path.join(MASTER_PKI, "libvirt")
HYPERVISORS = {"hypervisor1": "127.0.0.2", "hypervisor2": "127.0.0.3"}


def virsh_list(address, pkipath):
    """``virsh list`` against a hypervisor's libvirtd over TLS, from the lab's network."""
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{LAB_NETNS}", "virsh", "-c",
         f"qemu+tls://{address}/system?pkipath={pkipath}", "list", "--all"],
        capture_output=True, text=True, timeout=60,
    )


def pkipath(directory, cacert, cert, key):
    os.makedirs(directory, exist_ok=True)
    for name, text in (("cacert.pem", cacert), ("clientcert.pem", cert), ("clientkey.pem", key)):
        with open(os.path.join(directory, name), "w") as fh:
            fh.write(text)
    os.chmod(os.path.join(directory, "clientkey.pem"), 0o600)
    return directory


def read(path):
    with open(path) as fh:
        return fh.read()


def test_libvirtd_accepts_hypervisors_and_the_operator_only(lab, tmp_path):
    _proc, operator = lab.run_json("virt.operator_pki")
    assert operator["subject"].startswith("CN=salt-virt-operator,OU=salt-virt-libvirt-client")
    assert "PRIVATE" not in json.dumps(operator)
    assert oct(os.stat(os.path.join(operator["pkipath"], "clientkey.pem")).st_mode & 0o777) == "0o600"
    cacert = read(os.path.join(CA_DIR, "cacert.pem"))
    # What a QEMU process (group libvirt-qemu) can read on hypervisor1: QEMU's own client pair.
    qemu_cert = lab.hv("hypervisor1", "cat", "/etc/pki/qemu/client-cert.pem").stdout
    qemu_key = lab.hv("hypervisor1", "cat", "/etc/pki/qemu/client-key.pem").stdout
    qemu_dir = pkipath(str(tmp_path / "qemu"), cacert, qemu_cert, qemu_key)
    # A certificate of the same CA for a tenant (as if the CA had been talked into issuing one).
    ca = pki.CertificateAuthority(CA_DIR).ensure()
    key, cert = ca.issue("tenant-vm", "qemu-client", directory=str(tmp_path / "issued"))
    tenant_dir = pkipath(str(tmp_path / "tenant"), cacert, cert, key)
    for hyper, address in HYPERVISORS.items():
        accepted = virsh_list(address, operator["pkipath"])
        assert accepted.returncode == 0 and "Name" in accepted.stdout, (hyper, accepted.stderr)
        for refused_dir in (qemu_dir, tenant_dir):
            refused = virsh_list(address, refused_dir)
            assert refused.returncode != 0, (hyper, refused_dir, refused.stdout)
            assert "TLS confirmation" in refused.stderr or "failed to connect" in refused.stderr
        log = lab.hv(hyper, "tail", "-n", "200", "/var/log/libvirt/libvirtd.log").stdout
        assert "not on the list of allowed clients" in log
        # The hypervisors' own client certificates still work (migration, peer checks).
        peer = [h for h in HYPERVISORS if h != hyper][0]
        hop = lab.hv(peer, "virsh", "-c", f"qemu+tls://{address}/system", "hostname", check=False)
        assert hop.returncode == 0 and hop.stdout.strip() == hyper, hop.stderr


def test_key_files_libvirtd_accepts_are_roots_alone(lab):
    for hyper in HYPERVISORS:
        modes = lab.hv(hyper, "stat", "-c", "%n %a %U %G", "/etc/pki/libvirt/private/clientkey.pem",
                       "/etc/pki/libvirt/private/serverkey.pem", "/etc/pki/qemu/client-key.pem",
                       "/etc/pki/qemu/server-key.pem").stdout.split("\n")
        modes = {line.split()[0]: line.split()[1:] for line in modes if line}
        assert modes["/etc/pki/libvirt/private/clientkey.pem"] == ["600", "root", "root"]
        assert modes["/etc/pki/libvirt/private/serverkey.pem"] == ["600", "root", "root"]
        # QEMU's keys are group-readable, and they are not libvirt's keys.
        assert modes["/etc/pki/qemu/client-key.pem"][0] == "640"
        libvirt_key = lab.hv(hyper, "cat", "/etc/pki/libvirt/private/clientkey.pem").stdout
        assert libvirt_key != lab.hv(hyper, "cat", "/etc/pki/qemu/client-key.pem").stdout
        conf = lab.hv(hyper, "cat", "/etc/libvirt/libvirtd.conf").stdout
        assert f'tls_allowed_dn_list = ["{pki.ALLOWED_CLIENT_DN}"]' in conf
        # libvirt's own checker still runs through (it would have 0644 client keys: not here).
        check = lab.hv(hyper, "virt-pki-validate")
        assert f"Found client certificate /etc/pki/libvirt/clientcert.pem for {hyper}" in check.stdout


def test_on_demand_libvirt_pillar_is_refused(lab):
    for target in ("hypervisor1",):
        asked = lab.salt_json(target, "pillar.ext", '{"libvirt": {}}', "unmask=True")[target]
        assert "libvirt" not in asked and "PRIVATE KEY" not in json.dumps(asked)
        # the configured ext_pillar entry still serves the hypervisor
        own = lab.salt_json(target, "pillar.item", "libvirt", "unmask=True")[target]
        assert "PRIVATE KEY" in own["libvirt"]["clientkey.pem"]


def _lab_state():
    domains = {h: sorted(os.listdir(os.path.join(LAB_DIR, f"hv{h[-1]}", "salt-images"))) for h in HYPERVISORS}
    keys = {sub: sorted(os.listdir(os.path.join(MASTER_PKI, sub)))
            for sub in ("minions", "minions_pre") if os.path.isdir(os.path.join(MASTER_PKI, sub))}
    res = os.path.join(LAB_DIR, "master/var/cache/salt/master/saltvirt/reservations")
    reservations = sorted(os.listdir(res)) if os.path.isdir(res) else []
    return domains, keys, reservations


@pytest.mark.parametrize("args, message", [
    (("hypervisor9",), "refusing VM name 'hypervisor9': it matches the hypervisor target virt:hypervisors"),
    (("hypervisor1",), "refusing VM name 'hypervisor1': it matches the hypervisor target"),
    (("web-ok", "host=hypervisor*"), "host='hypervisor*' must be exactly one hypervisor's minion id"),
    (("web-ok", "host=hypervisor1,hypervisor2"), "must be exactly one hypervisor's minion id"),
    (("web-ok", "priv_key=/etc/shadow"), "pub_key/priv_key are not accepted by the runner"),
])
def test_runner_refuses_names_and_hosts_and_leaves_nothing(lab, args, message):
    before = _lab_state()
    proc = lab.run("salt-run", "virt.init", args[0], 1, 128, "salt://centos.qcow2", "enable_qcow=True",
                   *args[1:], check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert message in out and out.count("\n    ") < 6, out  # one clear line, no traceback
    assert _lab_state() == before
    for hyper in HYPERVISORS:
        assert args[0] not in lab.domains(hyper)


def test_per_vm_commands_take_exactly_one_host(lab):
    proc = lab.run("salt-run", "virt.purge", "web1", "host=hyper*", check=False)
    assert proc.returncode != 0 and "must be exactly one hypervisor's minion id" in proc.stdout
    proc = lab.run("salt-run", "virt.start", "web1", "host=web1", check=False)
    assert proc.returncode != 0 and "host='web1' is not a hypervisor" in proc.stdout
    # the legitimate path: an exact host answers (here: no such VM, said clearly)
    proc = lab.run("salt-run", "virt.stop", "no-such-vm", "host=hypervisor1", check=False)
    assert "hypervisor1" in proc.stdout and "must be exactly one" not in proc.stdout


def test_disk_space_is_part_of_placement_and_of_the_hypervisors_check(lab):
    before = _lab_state()
    proc = lab.run("salt-run", "virt.init", "web-big", 1, 128, "salt://centos.qcow2",
                   'disks=[{"name": "system", "size": "100T"}]', check=False)
    assert proc.returncode != 0 and "not enough disk on hypervisor1, hypervisor2" in proc.stdout, proc.stdout
    # sizes placement cannot see (the image's own): the hypervisor refuses before writing anything
    out = lab.salt_json("hypervisor1", "virt.init", "web-big", 1, 128, "image=salt://centos.qcow2",
                        'disks=[{"name": "system", "size": "60T"}]', "start=False")["hypervisor1"]
    assert "not enough space in /srv/salt-images/web-big" in out and "virt:disk_headroom_mib" in out, out
    assert _lab_state() == before and "web-big" not in lab.domains("hypervisor1")
