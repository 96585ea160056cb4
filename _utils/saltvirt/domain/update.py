"""Bring an existing domain in line with what is asked for: vCPUs, memory, disks, NICs,
graphics, autostart.

:func:`diff` is pure: it compares the domain's persistent definition (and, when it runs, its
live definition) with a :class:`Wanted` and returns :class:`Change` objects, each saying
whether it can be applied to the running guest (``live``) or only to the persistent
definition, effective when the domain next starts (``next_boot``; a reboot inside the guest
is not enough, the QEMU process must be restarted). :func:`apply` carries the changes out
with libvirt; :mod:`saltvirt.domain.pending` tells whether a running domain's definition has
changes its guest does not run with yet.

What is compared:

* ``vcpus``: the definition's vCPU count. Domains are defined with a static vCPU count, so a
  change is always ``next_boot`` for a running domain.
* ``memory_mib``: the definition's current memory (and its maximum must hold it). A running
  domain gets it live (balloon) when it fits under its maximum, else on next boot with a new
  maximum. A stopped domain gets maximum = current = the new value.
* ``disks``: normalised disk specs (:mod:`saltvirt.provision.profiles`). A spec matches the disk whose
  file is ``<pool or vm dir>/<name>.qcow2|.img`` (``source_file`` specs: that file); the first
  spec is the system disk and otherwise matches the domain's first writable disk. Unmatched
  specs are new disks: created and attached (live when the bus allows hot-plug). Disks are
  never removed or resized here.
* ``nics``: normalised NIC dicts. A NIC with a ``mac`` matches the interface with that MAC,
  the others match the domain's interfaces in order. A matched one whose type, source or
  model differs is updated (live when only the source changes), unmatched ones are added.
  Interfaces are never removed here.
* ``graphics``: the whole list of VNC/SPICE consoles (``[]``: none). Compared on type, listen
  address, port (unless automatic) and password (``ANY_PASSWORD``: any password will do).
  Only a password change can be applied live; the rest is written to the definition.
* ``autostart``: applied at once.
* ``platform``: boot and platform settings (:mod:`saltvirt.domain.platform`: firmware, direct
  kernel boot, boot order, reboot action, clock, hypervisor features), each compared on its
  own and written to the definition (``next_boot``).

``None`` for any of these leaves it unmanaged.
"""

import copy
import dataclasses
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from saltvirt.domain import memlive
from saltvirt.domain import model as dommod
from saltvirt.domain import platform as domplatform
from saltvirt.domain.memlive import LIVE, NEXT_BOOT, PARTLY_LIVE  # noqa: F401 (PARTLY_LIVE: re-exported)
from saltvirt.domain.xmlview import DomainXml
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.errors import libvirt_message as _err
from saltvirt.storage import paths

try:
    import libvirt
except ImportError:  # the pure part (diff, pending) works without it
    libvirt = None

#: Buses whose disks QEMU can hot-plug into a running guest.
HOTPLUG_BUSES = ("virtio", "scsi", "usb")
_DISK_EXTENSIONS = {"qcow2": ".qcow2", "raw": ".img"}


class _AnyPassword:
    """Graphics password sentinel: 'some password', whatever it is (``password: True``)."""

    def __repr__(self):
        return "ANY_PASSWORD"


ANY_PASSWORD = _AnyPassword()


@dataclass
class Wanted:
    """What a domain should look like; ``None`` leaves an item unmanaged."""

    vcpus: int | None = None
    memory_mib: int | None = None
    disks: list[dict] | None = None  # normalised disk specs, profile merged
    nics: list[dict] | None = None  # normalised NIC dicts, profile merged
    graphics: list[dommod.Graphics] | None = None  # [] means: no console
    autostart: bool | None = None
    platform: dict | None = None  # saltvirt.domain.platform settings; keys not there: unmanaged
    live: bool = True  # False: never touch the running guest, only the definition
    # XML sections (cpu/mem dicts, numatune, serials, consoles, host devices: see
    # saltvirt.provision.hardware), each compared on what it asks for and written on next boot
    # (a running guest's balloon target and memory limits at once: saltvirt.domain.memlive).
    sections: list | None = None


@dataclass
class Change:
    """One difference between a domain and :class:`Wanted`, and how it will be applied."""

    kind: str  # cpu | mem | disk | nic | graphics | autostart | section | platform
    key: str  # 'cpu', 'mem', a disk or NIC name, 'graphics', 'autostart'
    old: Any
    new: Any
    when: str  # LIVE | NEXT_BOOT
    action: str = "set"  # set | add | update
    device: Any = None  # dommod.Disk / Interface for add/update; list of Graphics
    spec: dict | None = None  # the disk spec of a new disk (to create its file)

    def summary(self):
        return {"old": self.old, "new": self.new, "when": self.when}


# --------------------------------------------------------------------------- reporting helpers


def _gfx_info(gfx):
    return {"type": gfx.type, "listen": gfx.listen, "port": gfx.port if not gfx.autoport else "auto",
            "password_set": gfx.password is not None}


def _nic_info(nic):
    return {"type": nic.type, "source": nic.source, "model": nic.model, "mac": nic.mac}


def _disk_info(disk, size=None):
    info = {"file": disk.source or disk.source_dev, "target": disk.target, "format": disk.format,
            "bus": disk.bus}
    if size:
        info["size_mib"] = size // (1024 * 1024)
    return info


# --------------------------------------------------------------------------- diff


def diff(config, wanted, vm_dir, live=None, autostart=None, config_view=None, memory_limits=True):
    """The :class:`Change` list that turns domain ``config`` into ``wanted``.

    config
        :class:`dommod.Domain` of the persistent definition (secure XML, so that graphics
        passwords can be compared).
    live
        :class:`dommod.Domain` of the running domain, ``None`` when it is not running.
    autostart
        The domain's current autostart flag.
    config_view
        :class:`DomainXml` of the persistent definition: what ``wanted.sections`` compare.
    memory_limits
        Whether the running domain's memory limits can change live
        (:func:`~saltvirt.domain.memlive.limits_settable`).
    vm_dir
        The domain's own image directory (``virt:images/<name>``): where its disks are.
    """
    running = live is not None
    can_live = running and wanted.live
    changes = []
    changes += _diff_cpu(config, wanted, running)
    changes += _diff_mem(config, live, wanted, can_live)
    if wanted.disks is not None:
        changes += _diff_disks(config, wanted.disks, vm_dir, can_live)
    if wanted.nics is not None:
        changes += _diff_nics(config, wanted.nics, can_live)
    if wanted.graphics is not None:
        changes += _diff_graphics(config, wanted.graphics, can_live)
    if wanted.platform:
        changes += _diff_platform(config, wanted.platform)
    if wanted.autostart is not None and autostart is not None and bool(wanted.autostart) != bool(autostart):
        changes.append(Change("autostart", "autostart", bool(autostart), bool(wanted.autostart), LIVE))
    if wanted.sections and config_view is not None:
        changes += diff_sections(config_view, wanted.sections, live.memory if can_live else None, memory_limits)
    return changes


def diff_sections(view, sections, live_max_kib=None, memory_limits=True):
    """One ``section`` change (``next_boot``: the definition is rewritten) per section that
    ``view`` does not have as asked for; old and new hold the differing keys only.
    ``live_max_kib``: the memory a running guest was started with (None: not running, or not
    to be touched); then the part of a ``mem`` section libvirt changes live comes first, as
    ``live`` changes of their own (:mod:`saltvirt.domain.memlive`)."""
    changes = []
    for section in sections:
        memlive.check(section, view)
        found = section.differences(view)
        if list(found) == [section.name]:  # serials, consoles, host_devices: one list
            changes.append(Change("section", section.name, *found[section.name], NEXT_BOOT, device=section))
            continue
        parts = [(list(found), False)] if found else []
        if found and section.name == "mem" and live_max_kib:
            parts = memlive.split(found, live_max_kib, memory_limits)
        for keys, live in parts:
            whole = parts == [(list(found), False)]
            changes.append(Change("section", section.name, {k: found[k][0] for k in keys},
                                  {k: found[k][1] for k in keys}, LIVE if live else NEXT_BOOT,
                                  device=section if whole else memlive.subsection(section, keys)))
    return changes


def _diff_cpu(config, wanted, running):
    if wanted.vcpus is None:
        return []
    vcpus = int(wanted.vcpus)
    if vcpus < 1:
        raise InvalidArgument(f"cpu must be at least 1, not {vcpus}")
    if vcpus == config.vcpus:
        return []
    # Static vCPUs: no hot-plug; a stopped domain takes it on its next start as well.
    return [Change("cpu", "cpu", config.vcpus, vcpus, NEXT_BOOT)]


def _diff_mem(config, live, wanted, can_live):
    if wanted.memory_mib is None:
        return []
    kib = int(wanted.memory_mib) * 1024
    if kib < 1024:
        raise InvalidArgument(f"mem must be a positive number of MiB, not {wanted.memory_mib}")
    if config.current_memory == kib and config.memory >= kib:
        return []
    when = LIVE if can_live and kib <= live.memory else NEXT_BOOT
    return [Change("mem", "mem", config.current_memory // 1024, kib // 1024, when)]


def _same_dir(a, b):
    return os.path.normpath(a) == os.path.normpath(b)


def disk_file(disk):
    """The file or block device behind ``disk``."""
    return disk.source or disk.source_dev


def _matches_spec(disk, spec, vm_dir):
    path = disk_file(disk)
    if not path:
        return False
    if spec.get("source_file"):
        return os.path.normpath(path) == os.path.normpath(spec["source_file"])
    directory, base = os.path.split(path)
    stem, ext = os.path.splitext(base)
    wanted = paths.disk_stem(os.path.basename(vm_dir), spec["name"], bool(spec.get("pool")))
    return (_same_dir(directory, spec.get("pool") or vm_dir) and stem == wanted
            and ext in _DISK_EXTENSIONS.values())


def disk_path(spec, vm_dir, fmt):
    """Where a new disk of ``spec`` goes (the layout :func:`provision.plan_disks` uses)."""
    if spec.get("source_file"):
        return spec["source_file"]
    stem = paths.disk_stem(os.path.basename(vm_dir), spec["name"], bool(spec.get("pool")))
    return os.path.join(spec.get("pool") or vm_dir, stem + _DISK_EXTENSIONS.get(fmt, ".qcow2"))


def _diff_disks(config, specs, vm_dir, can_live):
    changes, matched = [], set()
    targets = [d.target for d in config.disks]
    for index, spec in enumerate(specs):
        found = next((i for i, d in enumerate(config.disks)
                      if i not in matched and _matches_spec(d, spec, vm_dir)), None)
        if found is None and index == 0:
            # The first spec is the system disk, whatever its file is called.
            found = next((i for i, d in enumerate(config.disks)
                          if i not in matched and d.device == "disk" and not d.readonly), None)
        if found is not None:
            matched.add(found)
            continue
        device = spec.get("device", "disk")
        bus = spec.get("bus") or ("sata" if device == "cdrom" else "virtio")
        if device == "cdrom" and bus == "virtio":
            bus = "sata"
        target = dommod.next_disk_target(targets, bus)
        targets.append(target)
        fmt = spec.get("format")
        if spec.get("image") and spec.get("overlay_image") and not spec.get("source_file"):
            fmt = "qcow2"  # an overlay is always qcow2
        elif fmt is None and not (spec.get("image") or spec.get("source_file")):
            fmt = "qcow2"
        if not spec.get("source_file") and not spec.get("image") and not spec.get("size"):
            raise InvalidArgument(f"disk {spec['name']!r} has neither an image nor a size")
        # fmt stays None for a disk cloned from an image, or an existing file, of a format
        # not given: see complete_disk.
        disk = dommod.Disk(
            target=target, source=disk_path(spec, vm_dir, fmt) if fmt else None,
            format=fmt or "raw", device=device, bus=bus,
            readonly=bool(spec.get("readonly", device == "cdrom")),
        )
        hotplug = device == "disk" and bus in HOTPLUG_BUSES
        change = Change("disk", spec["name"], None, _disk_info(disk, spec.get("size")),
                        LIVE if can_live and hotplug else NEXT_BOOT, action="add", device=disk,
                        spec=dict(spec, format=fmt))
        if fmt is None:
            change.new["format"] = "(from the image)"
            change.new["file"] = spec["source_file"] if spec.get("source_file") else change.new["format"]
        changes.append(change)
    return changes


def complete_disk(change, vm_dir, image_format):
    """Fill in the format and file of a new disk whose format was not given: the format of
    the image it is cloned from, or of its ``source_file``."""
    if change.spec.get("format"):
        return change
    fmt = image_format
    if fmt not in _DISK_EXTENSIONS and not change.spec.get("source_file"):
        raise InvalidArgument(f"disk {change.key!r}: format must be qcow2 or raw, not {fmt!r}")
    change.spec["format"] = fmt
    change.device.format = fmt
    change.device.source = disk_path(change.spec, vm_dir, fmt)
    change.new.update(format=fmt, file=change.device.source)
    return change


def _diff_nics(config, nics, can_live):
    changes, matched = [], set()
    current = config.interfaces
    by_mac = {n.mac: i for i, n in enumerate(current)}
    # First the NICs pinned by MAC, so that positional matching skips their interfaces.
    pinned = {}
    for index, nic in enumerate(nics):
        mac = str(nic.get("mac") or "").lower()
        if mac and mac in by_mac:
            pinned[index] = by_mac[mac]
            matched.add(by_mac[mac])
    position = 0
    for index, nic in enumerate(nics):
        if index in pinned:
            found = pinned[index]
        elif nic.get("mac"):
            found = None  # a new MAC: a new interface
        else:
            while position < len(current) and position in matched:
                position += 1
            found = position if position < len(current) else None
            if found is not None:
                matched.add(found)
        name = str(nic.get("name") or f"nic{index}")
        wanted = dommod.Interface(type=nic["type"], source=nic.get("source"),
                                  model=nic.get("model") or "virtio",
                                  **({"mac": nic["mac"]} if nic.get("mac") else {}))
        if found is None:
            changes.append(Change("nic", name, None, _nic_info(wanted), LIVE if can_live else NEXT_BOOT,
                                  action="add", device=wanted))
            continue
        have = current[found]
        if (have.type, have.source, have.model) == (wanted.type, wanted.source, wanted.model):
            continue
        updated = copy.deepcopy(have)
        updated.type, updated.source, updated.model = wanted.type, wanted.source, wanted.model
        updated.mode = wanted.mode
        updated.target = None
        # QEMU can move a NIC to another bridge/network, never change its model.
        when = LIVE if can_live and have.model == wanted.model else NEXT_BOOT
        changes.append(Change("nic", name, _nic_info(have), _nic_info(updated), when, action="update",
                              device=updated))
    return changes


def _diff_platform(config, settings):
    # Firmware, kernel, clock...: QEMU takes them when it starts, never while it runs.
    related = {domplatform.NVRAM_PATH: settings.get(domplatform.NVRAM_PATH)}
    return [Change("platform", key, old, new, NEXT_BOOT, device={key: new, **related})
            for key, old, new in domplatform.differences(config.platform_settings(), settings)]


def _same_graphics(have, want):
    if (have.type, have.listen, bool(have.autoport)) != (want.type, want.listen, bool(want.autoport)):
        return False
    if not want.autoport and have.port != want.port:
        return False
    if want.websocket is not None and have.websocket != want.websocket:
        return False
    if want.password is ANY_PASSWORD:
        return have.password is not None
    return have.password == want.password


def _diff_graphics(config, graphics, can_live):
    have = list(config.graphics)
    want = list(graphics)
    if len(have) == len(want) and all(_same_graphics(h, w) for h, w in zip(have, want, strict=True)):
        return []
    # Only a new password of an otherwise unchanged console reaches a running guest.
    password_only = len(have) == len(want) == 1 and _same_graphics(
        have[0], dataclasses.replace(want[0], password=have[0].password))
    when = LIVE if can_live and password_only else NEXT_BOOT
    return [Change("graphics", "graphics", [_gfx_info(g) for g in have], [_gfx_info(g) for g in want],
                   when, device=want)]


# --------------------------------------------------------------------------- apply


def _flags(when):
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if when == LIVE:
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    return flags


def _device_xml(device):
    holder = ET.Element("devices")
    device.to_element(holder)
    return ET.tostring(holder[0], encoding="unicode")


def _live_or_config(change, func, xml):
    """Apply to the live guest and the definition; if the guest refuses, the definition only."""
    if change.when == LIVE:
        try:
            func(xml, _flags(LIVE))
            return
        except libvirt.libvirtError:
            change.when = NEXT_BOOT
    func(xml, _flags(NEXT_BOOT))


def _apply_cpu(dom, change):
    config = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    maximum = config | libvirt.VIR_DOMAIN_VCPU_MAXIMUM
    # The count may never exceed the maximum: raise the maximum first, lower it last.
    order = [(maximum, change.new), (config, change.new)]
    if change.new < change.old:
        order.reverse()
    for flags, value in order:
        dom.setVcpusFlags(value, flags)


def _apply_mem(dom, change, running):
    kib = change.new * 1024
    config = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    maximum = libvirt.VIR_DOMAIN_MEM_MAXIMUM
    if change.when == LIVE:
        dom.setMemoryFlags(kib, config | libvirt.VIR_DOMAIN_AFFECT_LIVE)
        return
    if running:
        # Only grows past the live maximum come here: raise the definition's maximum first.
        dom.setMemoryFlags(kib, config | maximum)
        dom.setMemoryFlags(kib, config)
        return
    # Stopped: maximum = current = the new value (placement counts the maximum).
    if change.new > change.old:
        dom.setMemoryFlags(kib, config | maximum)
        dom.setMemoryFlags(kib, config)
    else:
        dom.setMemoryFlags(kib, config)
        dom.setMemoryFlags(kib, config | maximum)


def _apply_graphics(conn, dom, change):
    if change.when == LIVE:
        try:
            dom.updateDeviceFlags(_device_xml(change.device[0]), _flags(LIVE))
            return
        except libvirt.libvirtError:
            change.when = NEXT_BOOT
    # libvirt cannot attach or detach graphics, not even in the definition: redefine it.
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    view = DomainXml.parse(dom.XMLDesc(flags))
    for old in view.graphics:
        if old.type in ("vnc", "spice"):
            view.remove_device(old)
    for gfx in change.device:
        gfx.check()
        gfx.to_element(view.make("devices"))
    conn.defineXML(view.to_xml())


def _apply_section(conn, dom, change):
    # No libvirt call sets CPU topology, memory tuning or character devices: rewrite the
    # definition, keeping everything the section does not manage.
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    view = DomainXml.parse(dom.XMLDesc(flags))
    change.device.write(view)
    conn.defineXML(view.to_xml())


def _apply_live_section(conn, dom, change):
    # A mem part libvirt changes on a running guest; refused there (no memory cgroup, a hard
    # limit under locked memory...): the definition only, for the next boot.
    try:
        memlive.apply(dom, change.device)
    except libvirt.libvirtError:
        change.when = NEXT_BOOT
        _apply_section(conn, dom, change)


def _apply_platform(conn, dom, change):
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    view = DomainXml.parse(dom.XMLDesc(flags))
    domplatform.write(view, change.device)
    nvram = change.device.get(domplatform.NVRAM_PATH)
    if nvram and view.find("os/nvram") is not None:  # libvirt makes the file on start, not its directory
        os.makedirs(os.path.dirname(nvram), mode=0o755, exist_ok=True)
    conn.defineXML(view.to_xml())


def apply(conn, dom, changes, build_disk=None):
    """Carry out ``changes`` (from :func:`diff`) on libvirt domain ``dom``.

    ``build_disk(change)`` creates the file of a new disk and returns an undo callable (or
    None); a disk whose attachment then fails is removed again. A change the running guest
    refuses is applied to the definition only and its ``when`` becomes ``next_boot``.
    Returns ``(applied, generated_password)``: the changes applied, and the VNC password
    generated for ``password: True`` (or None). Stops at the first failure with a
    :class:`VirtError` that lists what was applied before it.
    """
    from saltvirt import console  # pylint: disable=import-outside-toplevel

    running = bool(dom.isActive())
    applied, generated = [], None
    for change in changes:
        try:
            if change.kind == "cpu":
                _apply_cpu(dom, change)
            elif change.kind == "mem":
                _apply_mem(dom, change, running)
            elif change.kind == "disk":
                undo = build_disk(change) if build_disk and not change.spec.get("source_file") else None
                try:
                    change.device.check()
                    _live_or_config(change, dom.attachDeviceFlags, _device_xml(change.device))
                except BaseException:
                    if undo:
                        undo()
                    raise
            elif change.kind == "nic":
                change.device.check()
                func = dom.attachDeviceFlags if change.action == "add" else dom.updateDeviceFlags
                _live_or_config(change, func, _device_xml(change.device))
            elif change.kind == "graphics":
                for gfx in change.device:
                    if gfx.password is ANY_PASSWORD:
                        generated = generated or console.gen_password()
                        gfx.password = generated
                _apply_graphics(conn, dom, change)
            elif change.kind == "platform":
                _apply_platform(conn, dom, change)
            elif change.kind == "autostart":
                dom.setAutostart(1 if change.new else 0)
            elif change.kind == "section" and change.when == LIVE:
                _apply_live_section(conn, dom, change)
            elif change.kind == "section":
                _apply_section(conn, dom, change)
        except (libvirt.libvirtError, VirtError) as exc:
            done = ", ".join(f"{c.key} ({c.when})" for c in applied) or "nothing"
            raise VirtError(f"updating {dom.name()}: {change.key} failed: {_err(exc)} "
                            f"(applied before it: {done})") from exc
        applied.append(change)
    return applied, generated


def report(changes):
    """``({key: {old, new, when}}, comment)`` for Salt returns; disks and NICs are grouped."""
    out = {}
    for change in changes:
        if change.kind in ("disk", "nic"):
            out.setdefault(change.kind + "s", {})[change.key] = dict(change.summary(), action=change.action)
        elif change.key in out:  # a mem section in parts (memlive): one entry saying which part is when
            out[change.key] = memlive.merged(out[change.key], change.old, change.new, change.when)
        else:
            out[change.key] = change.summary()
    return out


def _gfx_text(infos):
    if not infos:
        return "none"
    return ", ".join(f"{g['type']} on {g['listen']}:{g['port']}" for g in infos)


def describe(changes):
    """One line per change, e.g. ``mem 256 -> 192 MiB (live)``."""
    words = {LIVE: "live", NEXT_BOOT: "on next boot"}
    lines = []
    for change in changes:
        if change.kind == "mem":
            text = f"mem {change.old} -> {change.new} MiB"
        elif change.kind == "platform":
            text = (f"{change.key} {domplatform.text(change.key, change.old)} -> "
                    f"{domplatform.text(change.key, change.new)}")
        elif change.kind in ("cpu", "autostart"):
            text = f"{change.key} {change.old} -> {change.new}"
        elif change.kind == "section" and isinstance(change.new, list):
            text = f"{change.key} {len(change.old)} -> {len(change.new)} device(s), replaced"
        elif change.kind == "section":
            text = f"{change.key} " + ", ".join(f"{k} {change.old[k]} -> {v}" for k, v in change.new.items())
        elif change.kind == "disk":
            text = f"disk {change.key} added as {change.new['target']} ({change.new['file']})"
        elif change.kind == "nic" and change.action == "add":
            text = f"nic {change.key} added ({change.new['type']} {change.new['source']})"
        elif change.kind == "nic":
            text = (f"nic {change.key} {change.old['type']} {change.old['source']} {change.old['model']}"
                    f" -> {change.new['type']} {change.new['source']} {change.new['model']}")
        elif change.old and change.new and [dict(g, password_set=None) for g in change.old] == [
                dict(g, password_set=None) for g in change.new]:
            text = "graphics password changed"
        else:
            text = f"graphics {_gfx_text(change.old)} -> {_gfx_text(change.new)}"
        lines.append(f"{text} ({words[change.when]})")
    return lines
