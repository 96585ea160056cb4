"""Snapshots reverted on a running guest, the classic snapshot/power states applied through the
master, and domains defined from caller XML on a real hypervisor of the lab (issue 16)."""

import json
import re
import time

HOST = "hypervisor1"


def salt(lab, *args, check=True):
    proc = lab.run("salt", HOST, *args, "--out=json", "--static", check=check)
    return proc, json.loads(proc.stdout)[HOST]


def state(lab, *args):
    """One state.single's return (the only state of the run)."""
    _proc, ret = salt(lab, "state.single", *args)
    (only,) = ret.values()
    return only


def heartbeats(lab, vm):
    return [int(n) for n in re.findall(r"SALTVIRT-HEARTBEAT (\d+)", lab.serial_log(HOST, vm))]


def counts_again(beats, at_snapshot):
    """The console's last beat comes after a restart of the count near ``at_snapshot``."""
    return bool(beats) and beats[-1] <= at_snapshot + 10 and beats[-1] < max(beats)


def wait_beat(lab, vm, beat, timeout=180):
    lab.wait_serial(HOST, vm, rf"SALTVIRT-HEARTBEAT {beat}\b", timeout=timeout)


def disk_log(lab, vm, disk):
    """The heartbeat numbers the guest has written to its disk (the FAT partition's
    heartbeat.log), read from the qcow2 file by the host: what is on the disk, not in memory."""
    raw = f"/tmp/{vm}-disk.raw"
    lab.hv(HOST, "qemu-img", "convert", "-U", "-O", "raw", disk, raw)
    try:
        text = lab.hv(HOST, "mtype", "-i", f"{raw}@@1M", "::/heartbeat.log").stdout
    finally:
        lab.hv(HOST, "rm", "-f", raw)
    return [int(line) for line in text.split() if line.strip().isdigit()]


def test_a_running_guests_disk_is_reverted_and_the_classic_states_apply_twice(lab, vm):
    lab.run("salt", HOST, "virt.init", vm, "1", "128", "image=/var/lib/libvirt/images/centos.qcow2",
            "enable_qcow=True", "seed=False", timeout=300)
    _proc, disks = salt(lab, "virt.get_disks", vm)
    disk = disks["vda"]["file"]
    wait_beat(lab, vm, 2)  # beat 1 is on its disk (it writes beat 1, then every tenth)

    # snapshot (disk + memory of the running guest) -> the guest writes on -> revert
    assert salt(lab, "virt.snapshot", vm, "name=before")[1] == {"name": vm, "snapshot": "before"}
    at_snapshot = max(heartbeats(lab, vm))
    first_flush, second_flush = (at_snapshot // 10 + 1) * 10, (at_snapshot // 10 + 2) * 10
    wait_beat(lab, vm, second_flush + 2)  # two more flushes to its disk since
    lab.run("salt", HOST, "virt.force_off", vm)
    written = disk_log(lab, vm, disk)
    assert max(written) >= second_flush, written

    _proc, ret = salt(lab, "virt.revert_snapshot", vm, "before")
    assert ret == {"reverted": "before", "deleted": "N/A"}
    # Its memory is the snapshot's: the console counts again from where the snapshot was taken
    # (a TCG guest on a busy machine may take a few seconds to print its first beat).
    deadline = time.monotonic() + 60
    while not counts_again(beats := heartbeats(lab, vm), at_snapshot):
        assert time.monotonic() < deadline, beats[-5:]
        time.sleep(0.5)
    lab.run("salt", HOST, "virt.force_off", vm)  # the reverted guest runs on: stop it writing
    reverted = disk_log(lab, vm, disk)
    # The disk is the snapshot's again: the lines written after it are gone (the resumed guest
    # may have flushed once more before it was stopped, never up to what it had written).
    assert max(reverted) < max(written), (reverted, written)
    assert max(reverted) <= first_flush and reverted == list(range(1, max(reverted) + 1))

    # virt.saved (classic name of virt.snapshot): taken once, then nothing to do
    ret = state(lab, "virt.saved", vm, "suffix=v1", "test=True")
    assert ret["result"] is None and ret["changes"] == {"saved": [{"domain": vm}]}
    ret = state(lab, "virt.saved", vm, "suffix=v1")
    assert ret["result"] is True and ret["changes"] == {"saved": [{"domain": vm, "snapshot": f"{vm}-v1"}]}
    assert state(lab, "virt.saved", vm, "suffix=v1")["changes"] == {}
    assert salt(lab, "virt.list_snapshots", vm)[1] == {vm: ["before", f"{vm}-v1"]}

    # virt.reverted: predicted, then an action each run (as the classic state), cleanup applied
    ret = state(lab, "virt.reverted", vm, "snapshot=before", "cleanup=True", "test=True")
    assert ret["result"] is None and ret["changes"] == {"domain": vm, "current": "before", "deleted": [f"{vm}-v1"]}
    assert salt(lab, "virt.list_snapshots", vm)[1] == {vm: ["before", f"{vm}-v1"]}
    ret = state(lab, "virt.reverted", vm, "snapshot=before", "cleanup=True")
    assert ret["result"] is True and ret["changes"] == {"domain": vm, "current": "before", "deleted": [f"{vm}-v1"]}
    ret = state(lab, "virt.reverted", vm, "snapshot=before", "cleanup=True")
    assert ret["result"] is True and ret["changes"] == {"domain": vm, "current": "before", "deleted": []}
    assert salt(lab, "virt.list_snapshots", vm)[1] == {vm: ["before"]}
    assert salt(lab, "virt.vm_state", vm)[1] == {vm: "running"}  # a snapshot of a running guest

    # virt.unpowered (classic name of virt.powered_off): plug pulled once, then nothing to do
    ret = state(lab, "virt.unpowered", vm, "test=True")
    assert ret["result"] is None and ret["changes"] == {"unpowered": [{"domain": vm}]}
    ret = state(lab, "virt.unpowered", vm)
    assert ret["result"] is True and ret["changes"] == {"unpowered": [{"domain": vm, "stop": True}]}
    assert state(lab, "virt.unpowered", vm)["changes"] == {}
    assert salt(lab, "virt.vm_state", vm)[1] == {vm: "shutoff"}

    _proc, ret = salt(lab, "virt.delete_snapshots", vm, "all=True")
    assert list(ret["deleted"]) == ["before"] and ret["available"] == {vm: "N/A"}


def domain_xml(name, disk, devices=""):
    return (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64'>hvm</type><boot dev='hd'/></os><features><acpi/></features><devices>"
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{disk}'/>"
            "<target dev='vda' bus='virtio'/></disk>"
            f"<serial type='file'><source path='/var/log/libvirt/qemu/{name}-serial.log' append='on'/></serial>"
            f"{devices}</devices></domain>")


def test_define_xml_on_a_hypervisor_legitimate_and_attacking(lab, vm):
    disk = f"/srv/salt-images/{vm}/system.qcow2"
    lab.hv(HOST, "mkdir", "-p", f"/srv/salt-images/{vm}")
    lab.hv(HOST, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
           "/var/lib/libvirt/images/centos.qcow2", disk)

    # Attacks: a host file as a disk, a qcow2 naming a host file as its backing file, a host
    # device, QEMU arguments: refused by name, nothing defined.
    attacks = {
        "shadow-disk": (domain_xml(vm, "/etc/shadow"), "/etc/shadow"),
        "hostdev": (domain_xml(vm, disk, "<hostdev mode='subsystem' type='pci'><source><address domain='0' "
                                         "bus='0' slot='1' function='0'/></source></hostdev>"), "hostdev"),
        "log": (domain_xml(vm, disk, "<console type='pty'><log file='/etc/salt/minion.d/evil.conf'/></console>"),
                "/etc/salt/minion.d/evil.conf"),
    }
    for what, (xml, shown) in attacks.items():
        proc = lab.run("salt", HOST, "virt.define_xml_str", xml, "--out=json", check=False)
        assert proc.returncode != 0, what
        assert "nothing defined" in proc.stdout and shown in proc.stdout, (what, proc.stdout)
        assert vm not in lab.domains(HOST), what
    evil = f"/srv/salt-images/{vm}/evil.qcow2"
    lab.hv(HOST, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/shadow", "-u", evil, "64M")
    proc = lab.run("salt", HOST, "virt.define_xml_str", domain_xml(vm, evil), "--out=json", check=False)
    assert proc.returncode != 0 and "/etc/shadow: outside" in proc.stdout, proc.stdout
    assert vm not in lab.domains(HOST)

    # The same attack from a file: refused without quoting the file.
    path = f"/var/lib/libvirt/images/{vm}.xml"
    lab.hv(HOST, "python3", "-c", f"open({path!r}, 'w').write({domain_xml(vm, '/etc/shadow')!r})")
    proc = lab.run("salt", HOST, "virt.define_xml_path", path, "--out=json", check=False)
    assert proc.returncode != 0 and "nothing defined" in proc.stdout
    assert "/etc/shadow" not in proc.stdout and vm not in proc.stdout.replace(path, ""), proc.stdout
    assert vm not in lab.domains(HOST)

    # The legitimate definition: defined, and it boots.
    _proc, ret = salt(lab, "virt.define_xml_str", domain_xml(vm, disk))
    assert ret is True
    assert vm in lab.domains(HOST)
    lab.run("salt", HOST, "virt.start", vm)
    lab.wait_serial(HOST, vm, r"SALTVIRT-HEARTBEAT 2\b", timeout=180)
    lab.hv(HOST, "rm", "-f", path)
