"""Evacuating a dead hypervisor: restart its VMs elsewhere from the master's definitions.

Split-brain is prevented by libvirt, not by hope: the formula's ``virt.lockd`` makes every
hypervisor take a lease (virtlockd: a lock on the disk file on the shared storage) on each
disk before QEMU may use it, so a VM whose disk is still open on a host that only *looks* dead cannot start a
second time. On top of that the runner refuses to evacuate a host that still answers, and
without the operator's ``fenced=True`` (the host is powered off or cut off from the storage).

Pure parts here: what a definition needs from its new host (:func:`disks`), how it is adapted
there (:func:`adapt`: read-only disks the new host lacks -- a seed ISO in the dead host's own
directory -- are dropped; a writable disk it lacks makes the VM not evacuable; consoles listen
on the new host's address), and the report.
"""

import os
import xml.etree.ElementTree as ET  # noqa: N817

from saltvirt.domain import vmops
from saltvirt.domain.model import Domain
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.storage import images


def disks(xml):
    """``[{target, path, readonly, device}]`` of the definition's file and block disks."""
    out = []
    for disk in Domain.from_xml(xml).disks:
        path = disk.source if disk.type == "file" else disk.source_dev
        if path:
            out.append({"target": disk.target, "path": path, "readonly": disk.readonly, "device": disk.device})
    return out


def adapt(xml, exists, listen=None, backing=None):
    """The definition as the new host can start it: ``(xml, dropped, missing)``.

    ``exists(path)``: whether the new host sees ``path``. ``backing(path)``: the backing chain
    of a disk image there (every file must exist too). ``dropped``: read-only disks left out
    (not on this host); ``missing``: writable disks (or their backing files) this host cannot
    see -- when not empty the VM cannot be evacuated here. Graphics consoles get ``listen``.
    """
    try:
        root = ET.fromstring(xml)  # noqa: S314 (the master's copy of libvirt's own XML)
    except ET.ParseError as exc:
        raise InvalidArgument(f"not valid domain XML: {exc}") from None
    devices = root.find("devices")
    dropped, missing = [], []
    for info in disks(xml):
        path = info["path"]
        if not exists(path):
            if info["readonly"]:
                dropped.append(info)
                for elem in list(devices.findall("disk")):
                    target = elem.find("target")
                    if target is not None and target.get("dev") == info["target"]:
                        devices.remove(elem)
            else:
                missing.append(f"{info['target']}: {path}")
            continue
        if not info["readonly"] and backing is not None:
            missing.extend(f"{info['target']}: backing file {b}" for b in backing(path) if not exists(b))
    if listen:
        for graphics in devices.findall("graphics") if devices is not None else ():
            graphics.set("listen", listen)
            for elem in graphics.findall("listen"):
                if elem.get("type") == "address":
                    elem.set("address", listen)
    return ET.tostring(root, encoding="unicode"), dropped, missing


def order(records):
    """VMs to restart first: those that were running, largest memory first, then the rest."""
    def key(item):
        name, record = item
        try:
            memory = Domain.from_xml(record["xml"]).memory
        except InvalidArgument:
            memory = 0
        return (record.get("state") != "running", -memory, name)

    return [name for name, _record in sorted(records.items(), key=key)]


def request_of(name, xml):
    """``(cpu, memory MiB)`` the definition claims, for placement."""
    dom = Domain.from_xml(xml)
    return max(1, int(dom.vcpus or 1)), max(1, int(dom.memory or 1024) // 1024)


def report(host, results, fenced, test=False):
    """The return: per VM where it went (or why not), and what the operator must do next."""
    started = {n: r for n, r in results.items() if r.get("action") in ("started", "defined", "would_start",
                                                                         "would_define")}
    failed = {n: r for n, r in results.items() if n not in started}
    out = {
        "host": host,
        "fenced": bool(fenced),
        "test": bool(test),
        "vms": results,
        "result": not failed,
    }
    if not results:
        out["message"] = f"the master knows no VM on {host} (salt-run virt.remember keeps its copy current)"
    elif test:
        out["message"] = f"{host}: {len(started)} VM(s) would be restarted elsewhere, {len(failed)} cannot"
    else:
        out["message"] = (f"{host}: {len(started)} VM(s) restarted elsewhere, {len(failed)} not; "
                          f"when {host} comes back its copies are stale: undefine them there "
                          f"(salt {host} virt.undefine <vm>), never start them")
    return out


def restart_here(conn, name, xml, listen=None, start=True, exists=os.path.exists, backing=images.backing_files):
    """Define (and start) ``name`` from the master's ``xml`` on this hypervisor.

    Refused, leaving nothing, when a VM of that name is already defined here or a writable
    disk is not reachable. If libvirt refuses the start (the lock manager: the disk is in use
    on another host) the definition made here is removed again and the error says so.
    """
    if Domain.from_xml(xml).name != name:
        raise InvalidArgument(f"the definition given is not {name}'s")
    if vmops.exists(conn, name):
        raise VirtError(f"{name} is already defined on this hypervisor: nothing evacuated")
    adapted, dropped, missing = adapt(xml, exists, listen, backing)
    if missing:
        raise VirtError(f"{name} cannot run here, these disks are not on storage this hypervisor sees: "
                        f"{', '.join(missing)}")
    dom = vmops.define(conn, adapted)
    if start:
        try:
            vmops.start(dom)
        except VirtError as exc:
            vmops.undefine_quietly(dom)
            raise VirtError(f"{name} was not started here (its definition was removed again): {exc}") from exc
    return {"name": name, "state": vmops.state(dom), "dropped": [d["path"] for d in dropped]}
