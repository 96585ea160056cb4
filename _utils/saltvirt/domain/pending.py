"""What a running domain's persistent definition has that its guest does not run with yet
(``virt.pending_changes``, the ``virt.rebooted`` state): a change made for the next boot.

Pure comparisons of two definitions (:func:`pending`, :func:`pending_hardware`), and
:func:`pending_of` reading both from a libvirt domain.
"""

from saltvirt.domain import chardev, hostdev, tuning
from saltvirt.domain import model as dommod
from saltvirt.domain import platform as domplatform
from saltvirt.domain.update import disk_file
from saltvirt.domain.xmlview import DomainXml

try:
    import libvirt
except ImportError:  # the comparisons work without it
    libvirt = None


def pending(live, config):
    """What the persistent definition has that the running domain does not run with yet.

    Returns a list of short descriptions (empty: nothing pending). Current memory is left
    out: a balloon change is live, and a guest may not have a balloon driver to honour it.
    """
    found = []
    if live.vcpus != config.vcpus:
        found.append(f"cpu {live.vcpus} -> {config.vcpus}")
    if live.memory != config.memory:
        found.append(f"max memory {live.memory // 1024} -> {config.memory // 1024} MiB")
    live_disks = {d.target: disk_file(d) for d in live.disks}
    conf_disks = {d.target: disk_file(d) for d in config.disks}
    for target in sorted(set(live_disks) | set(conf_disks)):
        if live_disks.get(target) != conf_disks.get(target):
            found.append(f"disk {target}: {live_disks.get(target)} -> {conf_disks.get(target)}")
    live_nics = {n.mac: (n.type, n.source, n.model) for n in live.interfaces}
    conf_nics = {n.mac: (n.type, n.source, n.model) for n in config.interfaces}
    for mac in sorted(set(live_nics) | set(conf_nics)):
        if live_nics.get(mac) != conf_nics.get(mac):
            found.append(f"nic {mac}: {live_nics.get(mac)} -> {conf_nics.get(mac)}")

    def _gfx(g):
        return (g.type, g.listen, bool(g.autoport), None if g.autoport else g.port)

    if [_gfx(g) for g in live.graphics] != [_gfx(g) for g in config.graphics]:
        found.append("graphics")
    running = domplatform.comparable(live.platform_settings())
    defined = domplatform.comparable(config.platform_settings())
    found += [f"{key} {domplatform.text(key, old)} -> {domplatform.text(key, new)}"
              for key, old, new in domplatform.differences(running, defined)]
    return found


#: What a running guest's hardware is compared on with its definition (stable in live XML).
_PENDING_KEYS = {"cpu": ("sockets", "cores", "threads"),
                 "mem": ("hard_limit", "soft_limit", "swap_hard_limit", "min_guarantee", "nosharepages",
                         "locked", "source", "access"),
                 "numatune": ("memory_mode", "memory_nodeset")}


def pending_hardware(live_view, config_view):
    """:func:`pending` for the hardware sections (:mod:`saltvirt.domain.tuning`, chardev,
    hostdev): CPU topology and model, memory tuning and backing, numatune, serial ports,
    consoles and host devices the running guest does not have as defined."""
    found = []
    for name, fields in (("cpu", tuning.CPU_FIELDS), ("mem", tuning.MEM_FIELDS),
                         ("numatune", tuning.NUMATUNE_FIELDS)):
        section = tuning.Section(name, fields, dict.fromkeys(_PENDING_KEYS[name]))
        live, conf = section.read(live_view), section.read(config_view)
        found += [f"{name} {key}: {live[key]} -> {conf[key]}" for key in _PENDING_KEYS[name] if live[key] != conf[key]]
    # A host-model CPU is expanded into a model in the live XML: compare custom models only.
    if config_view.cpu_mode == "custom" and live_view.cpu_model != config_view.cpu_model:
        found.append(f"cpu model: {live_view.cpu_model} -> {config_view.cpu_model}")

    def _chardevs(view):
        return ([(e["type"], e["target_port"]) for e in chardev.Serials([]).read(view)],
                [(e["type"], e.get("target_type")) for e in chardev.Consoles([]).read(view)])

    if _chardevs(live_view) != _chardevs(config_view):
        found.append("serials/consoles")
    if set(hostdev.HostDevices([]).read(live_view)) != set(hostdev.HostDevices([]).read(config_view)):
        found.append("host_devices")
    return found


def pending_of(dom):
    """:func:`pending` and :func:`pending_hardware` of libvirt domain ``dom`` ([] when it is off)."""
    if not dom.isActive():
        return []
    live_xml, config_xml = dom.XMLDesc(0), dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return (pending(dommod.Domain.from_xml(live_xml), dommod.Domain.from_xml(config_xml))
            + pending_hardware(DomainXml.parse(live_xml), DomainXml.parse(config_xml)))
