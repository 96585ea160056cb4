"""The lab itself: two hypervisors with their own libvirtd, TLS between them, a bootable guest."""

import re


def test_both_hypervisors_answer(lab):
    pings = lab.salt_json("hypervisor*", "test.ping")
    assert {h: pings.get(h) for h in ("hypervisor1", "hypervisor2")} == {"hypervisor1": True, "hypervisor2": True}
    assert all(answer is True for answer in pings.values()), pings


def test_each_hypervisor_has_its_own_libvirtd(lab):
    uuids = {}
    for hyper in ("hypervisor1", "hypervisor2"):
        caps = lab.run("virsh", hyper, "capabilities").stdout
        uuids[hyper] = re.search(r"<uuid>([0-9a-f-]+)</uuid>", caps).group(1)
    assert uuids["hypervisor1"] != uuids["hypervisor2"]
    # A domain defined on one is invisible on the other.
    pids = {h: lab.hv(h, "cat", "/run/libvirt/libvirtd.pid").stdout.strip() for h in uuids}
    assert pids["hypervisor1"] != pids["hypervisor2"]


def test_tls_between_hypervisors(lab):
    # From hypervisor1's namespace, with its own client certificate, to hypervisor2's libvirtd.
    out = lab.hv("hypervisor1", "virsh", "-c", "qemu+tls://127.0.0.3/system", "uri").stdout
    assert out.strip() == "qemu+tls://127.0.0.3/system"
    caps = lab.hv("hypervisor1", "virsh", "-c", "qemu+tls://127.0.0.3/system", "capabilities").stdout
    own = lab.run("virsh", "hypervisor2", "capabilities").stdout
    assert re.search(r"<uuid>(.*)</uuid>", caps).group(1) == re.search(r"<uuid>(.*)</uuid>", own).group(1)


def test_seed_images_are_published(lab):
    for hyper in ("hypervisor1", "hypervisor2"):
        out = lab.hv(hyper, "qemu-img", "info", "--output=json", "/var/lib/libvirt/images/centos.qcow2").stdout
        assert '"format": "qcow2"' in out
        mode = lab.hv(hyper, "stat", "-c", "%a", "/var/lib/libvirt/images/centos.img").stdout.strip()
        assert mode == "444"  # base images are read-only
    listing = lab.run("salt-run", "fileserver.file_list").stdout
    assert "centos.img" in listing and "centos.qcow2" in listing


def test_guest_boots_under_tcg_and_prints_heartbeat(lab, vm):
    # The seed's direct module call, verbatim apart from the name.
    lab.run("salt", "hypervisor1", "virt.init", vm, "1", "256", "image=/var/lib/libvirt/images/centos.img")
    xml = lab.run("virsh", "hypervisor1", "dumpxml", vm).stdout
    assert "type='qemu'" in xml  # KVM does not work here: TCG
    lab.wait_serial("hypervisor1", vm, r"SALTVIRT-HEARTBEAT 3\b", timeout=120)
    lab.run("salt", "hypervisor1", "virt.force_off", vm)
    assert vm in lab.domains("hypervisor1")
    state = lab.salt_json("hypervisor1", "virt.vm_state", vm)["hypervisor1"][vm]
    assert state == "shutoff"
