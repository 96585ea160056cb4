"""Retiring a base image on the lab: two overlays with data their guests wrote are rebased onto
a copy (salt-run virt.rebase), the old base is removed, and both still boot with their data."""

import json
import time
import uuid

HOST = "hypervisor2"
PATTERN_OFFSET = "100M"  # beyond the guest's 64 MiB boot partition: only qemu-io writes there


def salt_ret(lab, *args):
    return json.loads(lab.run("salt", HOST, *args, "--out=json", "--static").stdout)[HOST]


def salt_fails(lab, *args):
    """Run a salt command that must fail (exit status != 0); return its output."""
    proc = lab.run("salt", HOST, *args, check=False)
    assert proc.returncode != 0, proc.stdout
    return proc.stdout


def boots_and_writes(lab, name, boots, timeout=150):
    """Wait for the ``boots``-th boot of ``name`` and its first write to its disk (beat 1 is
    appended to /heartbeat.log and synced)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = lab.serial_log(HOST, name)
        if text.count("SALTVIRT-BOOT") >= boots:
            tail = text.rsplit("SALTVIRT-BOOT", 1)[1]
            if "SALTVIRT-DISK-WRITE ok" in tail:
                return tail
        time.sleep(0.5)
    raise AssertionError(f"{name}: boot {boots} and its disk write not seen in {timeout}s:\n{text[-1500:]}")


def heartbeat_log(lab, overlay):
    """The guest's /heartbeat.log, read from its (qcow2) disk: FAT partition at 1 MiB."""
    raw = overlay.replace("system.qcow2", ".heartbeat-check.raw")
    lab.hv(HOST, "qemu-img", "convert", "-U", "-O", "raw", overlay, raw)
    try:
        return lab.hv(HOST, "mtype", "-i", f"{raw}@@1M", "::/heartbeat.log").stdout.split()
    finally:
        lab.hv(HOST, "rm", "-f", raw)


def test_rebase_keeps_overlays_and_their_data(lab):
    tag = uuid.uuid4().hex[:5]
    base = f"/var/lib/libvirt/images/rebase-{tag}.qcow2"
    vms = [f"rb-{tag}-a", f"rb-{tag}-b"]
    overlays = [f"/srv/salt-images/{vm}/system.qcow2" for vm in vms]
    new_base = None
    lab.hv(HOST, "cp", "/var/lib/libvirt/images/centos.qcow2", base)
    try:
        for vm in vms:
            salt_ret(lab, "virt.init", vm, "1", "128", f"image={base}", "enable_qcow=True")
        for vm in vms:
            boots_and_writes(lab, vm, 1)  # /heartbeat.log on its disk: "1"

        # While they run: the base cannot be removed, nor the overlays rebased under QEMU.
        out = salt_fails(lab, "virt.remove_image", base)
        assert "is the base of 2 image(s)" in out and all(o in out for o in overlays)
        proc = lab.run("salt-run", "virt.rebase", base, f"host={HOST}", check=False)
        assert proc.returncode != 0
        assert "belong to running VMs" in proc.stdout and all(f"{vm} running" in proc.stdout for vm in vms)
        assert lab.hv(HOST, "sh", "-c", f"ls {base}.* 2>/dev/null", check=False).stdout == ""

        lab.run("salt", HOST, "state.single", "virt.stopped", f"rb-{tag}-*", "timeout=90")
        for overlay in overlays:  # data written from outside the guest too
            lab.hv(HOST, "qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {PATTERN_OFFSET} 64k", overlay)

        _proc, result = lab.run_json("virt.rebase", base, f"host={HOST}")
        assert result["result"] is True and result["rebased"] == 2
        done = result["hosts"][HOST]
        new_base = done["new_base"]
        assert new_base.startswith(f"{base}.") and lab.hv(HOST, "stat", "-c", "%a", new_base).stdout.strip() == "444"
        assert sorted(r["overlay"] for r in done["rebased"]) == sorted(overlays)
        assert all(r["how"] == "rebase" and r["backing"] == new_base for r in done["rebased"])

        # The old base has no user left: removing it works now.
        removed = salt_ret(lab, "virt.remove_image", base)
        assert removed == {"path": base, "removed": True}
        for overlay in overlays:
            chain = lab.hv(HOST, "qemu-img", "info", "-U", "--backing-chain", overlay).stdout
            assert f"backing file: {new_base}" in chain
            read = lab.hv(HOST, "qemu-io", "-r", "-f", "qcow2", "-c", f"read -P 0x5a {PATTERN_OFFSET} 64k",
                          overlay).stdout
            assert "read 65536/65536 bytes" in read and "Pattern verification failed" not in read

        # Both boot again from the copy and keep what their guests wrote before.
        for vm in vms:
            salt_ret(lab, "virt.start", vm)
        for vm, overlay in zip(vms, overlays, strict=True):
            boots_and_writes(lab, vm, 2)
            beats = heartbeat_log(lab, overlay)
            assert beats[:1] == ["1"] and beats.count("1") >= 2, beats  # written by both boots

        # The copy is a base in use now: it is protected the same way.
        assert "is the base of 2 image(s)" in salt_fails(lab, "virt.remove_image", new_base)
    finally:
        for vm in vms:
            lab.run("salt", HOST, "virt.purge", vm, check=False)
        lab.hv(HOST, "sh", "-c", f"rm -f {base} {base}.*", check=False)
