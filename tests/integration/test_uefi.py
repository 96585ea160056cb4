"""UEFI on the lab: a guest boots under OVMF (libvirt's firmware autoselection), with its own
variable store that virt.purge removes; virt.update switches it back to BIOS; the boot and
platform arguments through the virt.running state, idempotent; paths outside the roots refused.

The lab guest's init prints ``SALTVIRT-FIRMWARE efi`` when ``/sys/firmware/efi`` exists (the
kernel was started by UEFI firmware), ``bios`` otherwise. It boots the lab kernel and initrd
directly (``boot: {kernel, initrd, cmdline}``), which OVMF starts through the kernel's EFI stub.
"""

import json
import re

HV = "hypervisor1"
IMAGES = "/var/lib/libvirt/images"
KERNEL_BOOT = {"kernel": f"{IMAGES}/centos.vmlinuz", "initrd": f"{IMAGES}/centos.initrd", "cmdline": "console=ttyS0"}
BOOT_TIMEOUT = 240  # OVMF under TCG: ~10 s here, generous for a busy machine


def salt(lab, *args, timeout=300):
    return lab.salt_json(HV, *args, timeout=timeout)[HV]


def firmware_lines(lab, vm):
    return re.findall(r"SALTVIRT-FIRMWARE (\w+)", lab.serial_log(HV, vm))


def test_a_uefi_guest_boots_keeps_its_store_goes_back_to_bios_and_is_purged(lab, vm):
    boot = json.dumps(dict(KERNEL_BOOT, efi=True))
    info = salt(lab, "virt.init", vm, 1, 256, f"image={IMAGES}/centos.qcow2", "enable_qcow=True", "seed=False",
                f"boot={boot}")
    nvram = f"/srv/salt-images/{vm}/nvram.fd"
    assert info["os"]["efi"] is True and info["os"]["nvram"] == nvram
    lab.wait_serial(HV, vm, r"SALTVIRT-FIRMWARE efi", timeout=BOOT_TIMEOUT)
    lab.wait_serial(HV, vm, r"SALTVIRT-HEARTBEAT 2", timeout=60)
    live = lab.run("virsh", HV, "dumpxml", vm).stdout
    assert re.search(r"<loader [^>]*type='pflash'[^>]*>/usr/share/OVMF/OVMF_CODE[^<]*</loader>", live), live
    assert lab.hv(HV, "test", "-s", nvram, check=False).returncode == 0  # made from the template
    # Asked again: nothing to do, nothing pending.
    again = salt(lab, "virt.update", vm, f"boot={boot}", "boot_dev=hd", "stop_on_reboot=False")
    assert again["changes"] == {} and salt(lab, "virt.pending_changes", vm) == []

    back = salt(lab, "virt.update", vm, "boot={efi: False}")
    assert back["changes"] == {"boot:efi": {"old": True, "new": False, "when": "next_boot"}}
    assert salt(lab, "virt.pending_changes", vm) == ["uefi True -> False"]
    # Wait for the power-off: a start while the guest is still shutting down would be refused.
    assert salt(lab, "virt.stop", vm, "timeout=120")["stopped"] is True
    salt(lab, "virt.start", vm)
    lab.wait_serial(HV, vm, r"SALTVIRT-FIRMWARE bios", timeout=BOOT_TIMEOUT)
    assert firmware_lines(lab, vm) == ["efi", "bios"]
    assert salt(lab, "virt.pending_changes", vm) == []

    purged = salt(lab, "virt.purge", vm)
    assert nvram in purged["removed"]
    assert lab.hv(HV, "test", "-e", nvram, check=False).returncode == 1
    assert vm not in lab.domains(HV)


def test_the_state_takes_the_platform_arguments_and_converges(lab, vm):
    args = [f"name={vm}", "cpu=1", "mem=192", f"image={IMAGES}/centos.qcow2", "enable_qcow=True", "seed=False",
            f"boot={json.dumps(KERNEL_BOOT)}", "boot_dev=hd", "stop_on_reboot=True",
            'clock={"utc": false, "timers": {"rtc": {"tickpolicy": "catchup"}, "hpet": {"present": false}}}',
            'hypervisor_features={"kvm-hidden": true}']

    def apply(*extra):
        out = salt(lab, "state.single", "virt.running", *args, *extra)
        (ret,) = out.values()
        assert ret["result"] is True, ret
        return ret

    assert apply()["changes"].get("definition") is True
    lab.wait_serial(HV, vm, r"SALTVIRT-FIRMWARE bios", timeout=BOOT_TIMEOUT)
    assert apply()["changes"] == {}  # idempotent
    xml = lab.run("virsh", HV, "dumpxml", "--inactive", vm).stdout
    assert "<on_reboot>destroy</on_reboot>" in xml and "<hidden state='on'/>" in xml
    assert re.search(r"<clock offset='localtime'>\s*<timer name='hpet' present='no'/>\s*"
                     r"<timer name='rtc' tickpolicy='catchup'/>", xml), xml
    changed = apply("stop_on_reboot=False", 'clock={"timezone": "Europe/Paris"}')
    assert set(changed["changes"]) == {"stop_on_reboot", "clock"}
    assert changed["changes"]["clock"]["new"]["offset"] == "timezone"
    assert apply("stop_on_reboot=False", 'clock={"timezone": "Europe/Paris"}')["changes"] == {}


def test_boot_files_outside_the_roots_are_refused_and_leave_nothing(lab, vm):
    kernel = lab.hv(HV, "sh", "-c", "ls /boot/vmlinuz-* | tail -n 1").stdout.strip()
    for boot, message in (
        ({"kernel": kernel}, f"boot:kernel {kernel} is outside the allowed directories"),
        ({"loader": "/etc/passwd"}, "boot:loader /etc/passwd is outside the allowed directories"),
        ({"efi": "yes"}, "boot:efi must be True or False"),
    ):
        proc = lab.run("salt", HV, "virt.init", vm, 1, 128, f"image={IMAGES}/centos.qcow2", "seed=False",
                       f"boot={json.dumps(boot)}", "--out=json", check=False)
        assert message in proc.stdout, proc.stdout
        assert vm not in lab.domains(HV)
        assert lab.hv(HV, "test", "-e", f"/srv/salt-images/{vm}", check=False).returncode == 1
    # The other side: the distribution's OVMF, named explicitly, is accepted.
    boot = {"loader": "/usr/share/OVMF/OVMF_CODE_4M.fd", "nvram": "/usr/share/OVMF/OVMF_VARS_4M.fd"}
    salt(lab, "virt.init", vm, 1, 128, f"image={IMAGES}/centos.qcow2", "enable_qcow=True", "seed=False",
         "start=False", f"boot={json.dumps(boot)}")
    xml = lab.run("virsh", HV, "dumpxml", "--inactive", vm).stdout
    assert "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>" in xml
    assert (f"<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/srv/salt-images/{vm}/nvram.fd</nvram>"
            in xml)


def test_a_uefi_guest_migrates_with_its_variable_store(lab, vm):
    """libvirt 9.0 moves the firmware, never the VM's variable store: on storage the target does
    not share, the target fetches it from the source first; the source's copy goes afterwards."""
    salt(lab, "virt.init", vm, 1, 256, f"image={IMAGES}/centos.qcow2", "enable_qcow=True", "seed=False",
         f"boot={json.dumps(dict(KERNEL_BOOT, efi=True))}")
    nvram = f"/srv/salt-images/{vm}/nvram.fd"
    lab.wait_serial(HV, vm, r"SALTVIRT-FIRMWARE efi", timeout=BOOT_TIMEOUT)
    lab.wait_serial(HV, vm, r"SALTVIRT-HEARTBEAT 2", timeout=60)
    digest = lab.hv(HV, "sha256sum", nvram).stdout.split()[0]

    _p, report = lab.run_json("virt.migrate", vm, "hypervisor2", "test=True")
    assert report["ok"] is True, report
    assert {d["target"]: d["action"] for d in report["storage"]["disks"]} == {"vda": "copy", "nvram": "fetch"}

    # A migration that fails once the store is fetched (the target's QEMU cannot listen on an
    # address it does not have) leaves no store on the target; the source's stays as it was.
    proc, failed = lab.run_json("virt.migrate", vm, "hypervisor2", "migration_uri=tcp://192.0.2.1:49160",
                                check=False)
    assert proc.returncode != 0 and failed["result"] is False, failed
    assert nvram in json.dumps(failed["recovery"]), failed  # fetched, then removed by the journal
    assert lab.hv("hypervisor2", "test", "-e", nvram, check=False).returncode == 1
    assert vm not in lab.domains("hypervisor2") and lab.hv(HV, "sha256sum", nvram).stdout.split()[0] == digest

    _p, moved = lab.run_json("virt.migrate", vm, "hypervisor2")
    assert moved["result"] is True, moved
    assert moved["storage"] == {"vda": "copy", "nvram": "fetch"}
    assert lab.hv("hypervisor2", "sha256sum", nvram).stdout.split()[0] == digest
    lab.wait_serial("hypervisor2", vm, r"SALTVIRT-HEARTBEAT \d+", timeout=60)
    assert lab.run("virsh", "hypervisor2", "domstate", vm).stdout.strip() == "running"
    assert nvram in moved["source_cleanup"]["stale"]["removed"]
    assert lab.hv(HV, "test", "-e", nvram, check=False).returncode == 1
