"""``virt.update`` as one library call: bring an existing VM in line with an
:class:`~saltvirt.provision.spec.UpdateSpec` (see :mod:`saltvirt.domain.update` for the comparison)."""

import contextlib

from saltvirt import provision
from saltvirt.domain import memlive, vmops
from saltvirt.domain import model as dommod
from saltvirt.domain import update as vupdate
from saltvirt.domain.xmlview import DomainXml
from saltvirt.errors import InvalidArgument
from saltvirt.provision import hardware, profiles, sources
from saltvirt.provision.spec import platform_settings
from saltvirt.provision.vm import check_resources, graphics_devices


def _int_arg(value, what):
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{what} must be an integer, not {value!r}") from None


def wanted(settings, spec, hw=None):
    """A :class:`~saltvirt.domain.update.Wanted` from ``spec`` (None: unmanaged); ``hw``: its
    :class:`~saltvirt.provision.hardware.Hardware` (cpu/mem dicts and the other XML sections)."""
    hw = hw or hardware.Hardware()
    cpu = _int_arg(spec.cpu, "cpu") if hw.plain_cpu else None
    mem = (hw.mem_mib if hw.mem_mib is not None else _int_arg(spec.mem, "mem")) if hw.plain_mem else None
    want = vupdate.Wanted(vcpus=cpu, memory_mib=mem, autostart=spec.autostart, live=bool(spec.live),
                          sections=hw.sections)
    if spec.disk is not None or spec.disks is not None:
        disks = profiles.merge_disks(profiles.disk_profile(spec.disk or "default", settings.get("disk")), spec.disks)
        if disks and spec.enable_qcow:
            disks[0].setdefault("overlay_image", True)
        want.disks = disks
    if spec.nic is not None or spec.interfaces is not None:
        want.nics = profiles.merge_nics(profiles.nic_profile(spec.nic or "default", settings.get("nic")),
                                        spec.interfaces)
    if spec.graphics is not None or spec.enable_vnc:
        devices, generated = graphics_devices(settings, spec.enable_vnc, spec.graphics)
        if generated:
            devices[0].password = vupdate.ANY_PASSWORD  # any password will do; made if missing
        want.graphics = devices
    return want


def complete_new_disks(settings, roots, changes, vm_dir, spec, formats):
    """Resolve the images of new disks; return ``{disk name: local image}``."""
    local = {}
    for change in changes:
        if change.kind != "disk":
            continue
        disk = change.spec
        if disk.get("source_file"):
            if not disk.get("format") and disk["source_file"] in formats:
                vupdate.complete_disk(change, vm_dir, formats[disk["source_file"]])
            continue
        if not disk.get("image") or (spec.test and sources.is_remote(disk["image"])):
            continue  # nothing is fetched for a dry run
        path = local[change.key] = sources.disk_image(settings, roots, disk, spec.saltenv, formats)
        vupdate.complete_disk(change, vm_dir, formats[path])
    return local


def _disk_builder(settings, local, formats):
    def build(change):
        disk, undo = change.spec, provision.Undo()
        plan = provision.DiskPlan(
            name=disk["name"], target=change.device.target, path=change.device.source,
            format=change.device.format, size=disk.get("size"), source=local.get(change.key),
            source_format=formats.get(local.get(change.key)),
            overlay=bool(disk.get("overlay_image")) and change.key in local,
            device=change.device.device, bus=change.device.bus, readonly=change.device.readonly,
        )
        provision.check_space([plan], **settings.space_policy)
        provision.build_disks([plan], undo)
        return undo.run

    return build


def update_vm(conn, spec, settings):
    """Apply ``spec`` to the VM (or only report, with ``spec.test``); ``(changes, generated)``."""
    vm_dir = settings.vm_dir(spec.name)
    dom = vmops.lookup(conn, spec.name)
    roots, formats = settings.roots(vmops.pool_targets(conn)), {}
    hw = hardware.hardware(spec, settings, roots, conn, update=True)
    if spec.cpu is not None or spec.mem is not None:
        check_resources(conn, hw.vcpus or 1, hw.mem_mib or 1)
    want = wanted(settings, spec, hw)
    want.platform = platform_settings(spec, roots, settings.vm_file(spec.name, "nvram"))
    with contextlib.ExitStack() as stack:
        if want.disks:
            want.disks = sources.check_disk_files(settings, conn, want.disks, roots, formats)
            for disk in want.disks:
                if disk.get("volume_pool"):
                    raise InvalidArgument(f"disk {disk['name']!r}: virt.update does not manage disks in pool "
                                          f"{disk['volume_pool']} of block volumes yet (virt.init does): use "
                                          "a directory pool")
            stack.enter_context(sources.image_locks(settings, [d.get("image") for d in want.disks]))
        config_xml, running = vmops.secure_xml(dom, inactive=True), None
        config = dommod.Domain.from_xml(config_xml)
        if dom.isActive():
            running = dommod.Domain.from_xml(vmops.secure_xml(dom))
        changes = vupdate.diff(config, want, vm_dir, live=running, autostart=bool(dom.autostart()),
                               config_view=DomainXml.parse(config_xml),
                               memory_limits=running is not None and memlive.limits_settable(dom))
        local = complete_new_disks(settings, roots, changes, vm_dir, spec, formats)
        if changes and not spec.test:
            return vupdate.apply(conn, dom, changes, build_disk=_disk_builder(settings, local, formats))
    return changes, None


def report(spec, changes, generated):
    """The structured return of ``virt.update``."""
    result = {
        "name": spec.name,
        "test": bool(spec.test),
        "changes": vupdate.report(changes),
        # A mem dict may be applied in parts, some live (saltvirt.domain.memlive): its key once.
        "live": list(dict.fromkeys(c.key for c in changes if c.when == vupdate.LIVE)),
        "next_boot": list(dict.fromkeys(c.key for c in changes if c.when == vupdate.NEXT_BOOT)),
        "comment": "; ".join(vupdate.describe(changes)) or f"{spec.name} is up to date",
    }
    if generated:
        # Never the password itself: returns reach the job cache and the event bus.
        result["vnc_password_generated"] = True
    return result
