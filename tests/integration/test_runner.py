"""The seed's runner commands on the lab: host_info, list, init, query, per-VM commands."""

import os
import re
import shutil
import subprocess
import uuid

from salt.utils.crypt import pem_finger

LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")


def test_host_info_lists_every_hypervisor(lab):
    _proc, data = lab.run_json("virt.host_info")
    assert set(data) == {"hypervisor1", "hypervisor2"}
    for info in data.values():
        assert info["node_info"]["cpus"] >= 1
        assert info["node_info"]["phymemory"] > 0
        assert "vm_info" not in info


def test_init_via_runner_seeds_and_boots(lab, vm):
    proc, result = lab.run_json("virt.init", vm, "1", "256", "salt://centos.img")
    assert result["name"] == vm and result["state"] == "running"
    host = result["host"]
    assert host in ("hypervisor1", "hypervisor2")
    assert result["seeded"]["method"] == "cidata" and result["seeded"]["key_accepted"] is True
    assert "Creating VM" in proc.stdout  # progress is shown while it works
    # The minion key was accepted on the master before the VM booted.
    keys = lab.run("salt-key", "-l", "acc", "--out=json").stdout
    assert vm in keys
    # The guest saw its seeded id and the key the master accepted (fingerprinted the way
    # a minion's key.finger does: sha256 of the PEM body).
    fingerprint = pem_finger(os.path.join(LAB_DIR, "master/etc/salt/pki/master/minions", vm))
    assert fingerprint
    match = lab.wait_serial(host, vm, r"SALTVIRT-MINION-KEY: (\S+)", timeout=120)
    assert match.group(1) == fingerprint
    assert lab.wait_serial(host, vm, r"SALTVIRT-MINION-ID: (\S+)").group(1) == vm

    # virt.list groups by state; virt.query prints the seed's format.
    _p, listing = lab.run_json("virt.list")
    assert vm in listing[host]["running"]
    text = lab.run("salt-run", "virt.query").stdout
    block = text[text.index(f"    {vm}"):]
    for line in ("CPU: 1", "Memory: 262144", "State: running", "Disk - vda:",
                 f"File: /srv/salt-images/{vm}/system.qcow2", "File Format: qcow2",
                 "Source: br0", "Type: bridge"):
        assert line in block, line
    assert re.search(r"Nic - 52:54:00(:[0-9a-f]{2}){3}:", block)

    # Per-VM commands find the host themselves.
    _p, off = lab.run_json("virt.force_off", vm)
    assert off["destroyed"] is True and off["host"] == host
    _p, on = lab.run_json("virt.start", vm)
    assert on["started"] is True
    _p, purged = lab.run_json("virt.purge", vm)
    assert purged["purged"] is True and purged["key_deleted"] is True
    assert f"/srv/salt-images/{vm}/system.qcow2" in purged["removed"]
    assert vm not in lab.domains(host)
    assert vm not in lab.run("salt-key", "-l", "acc", "--out=json").stdout


def test_init_failure_rolls_back_key_and_disk(lab, vm):
    # A text file is not a disk image: refused on the hypervisor after the key was accepted.
    proc, _ = lab.run("salt-run", "virt.init", vm, "1", "128", "salt://setup.cfg", check=False), None
    assert proc.returncode != 0
    assert "not recognised as a disk image" in proc.stdout + proc.stderr
    assert vm not in lab.run("salt-key", "-l", "all", "--out=json").stdout
    for hyper in ("hypervisor1", "hypervisor2"):
        assert vm not in lab.domains(hyper)
        assert lab.hv(hyper, "test", "-e", f"/srv/salt-images/{vm}", check=False).returncode != 0


def test_unknown_vm_is_a_clear_error(lab):
    proc = lab.run("salt-run", "virt.start", "no-such-vm", check=False)
    assert proc.returncode != 0
    assert "no VM named no-such-vm" in proc.stdout + proc.stderr


def test_qcow_overlay_from_the_file_server_keeps_its_base(lab, vm):
    _p, result = lab.run_json("virt.init", vm, "1", "192", "salt://centos.qcow2", "enable_qcow=True")
    host = result["host"]
    (base,) = result["disks"]["vda"]["backing"]
    assert base.startswith("/srv/salt-images/base/centos-") and base.endswith(".qcow2")
    before = lab.hv(host, "sha256sum", base).stdout.split()[0]
    chain = lab.hv(host, "qemu-img", "info", "-U", "--backing-chain",
                   f"/srv/salt-images/{vm}/system.qcow2").stdout
    assert f"backing file: {base}" in chain and "backing file format: qcow2" in chain
    lab.wait_serial(host, vm, r"SALTVIRT-DISK-WRITE ok")
    lab.wait_serial(host, vm, r"SALTVIRT-HEARTBEAT 11\b")  # heartbeat.log written twice by now
    assert lab.hv(host, "sha256sum", base).stdout.split()[0] == before
    assert lab.hv(host, "stat", "-c", "%a", base).stdout.strip() == "444"


def test_a_hypervisor_that_does_not_answer_fails_the_fanout(lab):
    """A hypervisor with an accepted key that does not answer: the answers are still shown,
    the missing one is named, and salt-run exits non-zero (scripts and orchestration notice)."""
    import shutil

    accepted = os.path.join(LAB_DIR, "master/etc/salt/pki/master/minions")
    ghost = os.path.join(accepted, "hypervisor-ghost")
    shutil.copyfile(os.path.join(accepted, "hypervisor1"), ghost)
    try:
        proc, data = lab.run_json("virt.list", "timeout=5", check=False)
    finally:
        os.unlink(ghost)
    assert proc.returncode != 0 and data["retcode"] == 1
    assert {"hypervisor1", "hypervisor2"} <= set(data)
    assert "did not answer" in data["hypervisor-ghost"]["error"]
    # and with every hypervisor answering, it exits 0
    proc, data = lab.run_json("virt.list")
    assert proc.returncode == 0 and "hypervisor-ghost" not in data and "retcode" not in data


def test_a_base_the_hypervisor_holds_is_used_without_a_fetch_until_the_image_changes(lab):
    """salt-run virt.init tells the hypervisor the master's hash of a salt:// image: the base of
    that version is used as it is; once the master's file changes, it is fetched again."""
    tag = uuid.uuid4().hex[:6]
    source = os.path.join(LAB_DIR, "images", "tests", f"kb-{tag}.qcow2")
    os.makedirs(os.path.dirname(source), exist_ok=True)
    shutil.copyfile(os.path.join(LAB_DIR, "images", "centos.qcow2"), source)
    names = [f"it-{tag}{n}" for n in range(3)]
    args = [f"salt://tests/kb-{tag}.qcow2", "enable_qcow=True", "start=False", "seed=False", "host=hypervisor1"]
    try:
        made = []
        for n, name in enumerate(names):
            if n == 2:  # the operator replaces the image on the master
                subprocess.run(["qemu-img", "resize", "-q", "-f", "qcow2", source, "+16M"], check=True)
            proc, result = lab.run_json("virt.init", name, "1", "128", *args)
            made.append((f"Fetching salt://tests/kb-{tag}.qcow2" in proc.stdout, result["disks"]["vda"]["backing"][0]))
        (fetched1, base1), (fetched2, base2), (fetched3, base3) = made
        assert fetched1 and not fetched2 and base2 == base1, made
        assert fetched3 and base3 != base1, made
    finally:
        for name in names:
            lab.run("salt-run", "virt.purge", name, check=False)
        os.unlink(source)


COPY = os.path.join(LAB_DIR, "master", "var", "cache", "salt", "master", "saltvirt", "capacities.json")


def _capacity_jobs(lab):
    """The jids of every ``virt.capacity`` job in the master's job cache (a survey each)."""
    _p, jobs = lab.run_json("jobs.list_jobs")  # (its search_function fails in Salt 3008)
    return {jid for jid, job in jobs.items() if job.get("Function") == "virt.capacity"}


def _in_copy(host, name):
    import json

    try:
        with open(COPY) as fh:
            usage = json.load(fh)["hosts"][host]["usage"]
    except (OSError, ValueError, KeyError):
        return False
    return any(vm["name"] == name for vm in usage)


def test_init_places_from_the_masters_copy_which_events_keep_true(lab):
    import time

    made, behind = f"copy-{uuid.uuid4().hex[:5]}", f"behind-{uuid.uuid4().hex[:5]}"
    base = "image=/var/lib/libvirt/images/centos.qcow2"
    try:
        lab.run_json("virt.host_info")  # a survey of every hypervisor: the copy serves virt.init for 60 s
        surveys = _capacity_jobs(lab)
        assert surveys  # host_info's own survey is there: the count can see one
        _p, result = lab.run_json("virt.init", made, "1", "64", "salt://centos.qcow2", "enable_qcow=True",
                                  "start=False", "seed=False")
        assert _capacity_jobs(lab) == surveys  # placed without asking the hypervisors again
        assert _in_copy(result["host"], made)  # and counted at once for the next placement
        # A VM made behind the runner's back, with the module on hypervisor2: the libvirt_events
        # engine's event (through the remember reactor) puts it in the copy.
        lab.run("salt", "hypervisor2", "virt.init", behind, "1", "64", base, "enable_qcow=True",
                "start=False", "seed=False")
        deadline = time.monotonic() + 60
        while not _in_copy("hypervisor2", behind) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _in_copy("hypervisor2", behind)
        proc, refused = lab.run_json("virt.init", behind, "1", "64", "salt://centos.qcow2", "enable_qcow=True",
                                     "start=False", "seed=False", check=False)
        assert proc.returncode != 0 and f"a VM named {behind} already exists on hypervisor2" in refused["error"]
        assert behind not in lab.domains("hypervisor1") and _capacity_jobs(lab) == surveys
        # Its removal reaches the copy the same way; the runner's purge of the other VM too.
        lab.run("salt", "hypervisor2", "virt.purge", behind)
        deadline = time.monotonic() + 60
        while _in_copy("hypervisor2", behind) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _in_copy("hypervisor2", behind)
        lab.run_json("virt.purge", made)
        assert not _in_copy(result["host"], made)
    finally:
        lab.run("salt", "hypervisor*", "virt.purge", made, check=False)
        lab.run("salt", "hypervisor*", "virt.purge", behind, check=False)
